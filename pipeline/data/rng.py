"""Counter-based random numbers: Philox4x32-10 (Salmon et al. 2011), in numpy and in torch.

Each simulated image draws its parameters from `uniforms(seed, index, streams)`, a pure
function of (seed, global image index, stream, draw number). That is what makes the simulator
deterministic per image whatever the batch split, and identical on every device: it always
runs on the CPU, in numpy uint64 arithmetic where the 32 x 32 -> 64-bit Philox products are
exact (about 10x faster than the same rounds in torch int64 ops for a batch's few thousand
counters). Outputs are torch tensors.

The per-pixel noise needs millions of words per batch on the simulation device:
`philox_words` takes counters and per-image keys as tensors on any device. On an accelerator
it runs the rounds in torch int64 ops (`philox_torch`, exact because each 32 x 32-bit product
is split into two 32 x 16-bit ones, < 2^48, no int64 overflow); on the CPU in numpy uint64, in
cache-sized chunks (measured ~7x faster than torch int64 ops there). The words are the same
bit for bit on every device.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

_MASK32 = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # Philox multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments


def philox4x32(counter: torch.Tensor, key: tuple[int, int], rounds: int = 10) -> torch.Tensor:
    """Philox4x32 block function: counter (N, 4) words < 2^32 -> (N, 4) int64 words."""
    c = np.asarray(torch.as_tensor(counter).cpu().numpy(), dtype=np.uint64)
    return torch.from_numpy(_philox_np(c, key, rounds).astype(np.int64))


def _philox_np(c: np.ndarray, key: tuple[int, int], rounds: int) -> np.ndarray:
    mask, s32 = np.uint64(_MASK32), np.uint64(32)
    m0, m1 = np.uint64(_M0), np.uint64(_M1)
    k0, k1 = key[0] & _MASK32, key[1] & _MASK32
    c0, c1, c2, c3 = c[:, 0], c[:, 1], c[:, 2], c[:, 3]
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        p0, p1 = c0 * m0, c2 * m1  # < 2^64: exact in uint64
        c0, c1, c2, c3 = (p1 >> s32) ^ c1 ^ np.uint64(k0), p1 & mask, (
            p0 >> s32
        ) ^ c3 ^ np.uint64(k1), p0 & mask
    return np.stack((c0, c1, c2, c3), axis=1)


def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit words of a * m, a int64 words < 2^32, m a 32-bit constant."""
    lo_part = a * (m & 0xFFFF)  # < 2^48
    hi_part = a * (m >> 16)  # < 2^48; a * m = hi_part * 2^16 + lo_part
    lo_sum = lo_part + ((hi_part & 0xFFFF) << 16)  # < 2^49
    return (hi_part >> 16) + (lo_sum >> 32), lo_sum & _MASK32


def philox_torch(
    c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor,
    k0: torch.Tensor, k1: torch.Tensor, rounds: int = 10,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32 on int64 tensors of 32-bit words (counters c*, keys k*, broadcast together)
    -> four int64 word tensors; equal to `philox4x32` bit for bit, on any device."""
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        hi0, lo0 = _mulhilo(c0, _M0)
        hi1, lo1 = _mulhilo(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


_CHUNK = 1 << 12  # counters per numpy chunk: keeps the round temporaries in L1/L2


def philox_words(
    c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor,
    k0: torch.Tensor, k1: torch.Tensor, *, compile: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32-10 words of broadcast int64 counters/keys, on the tensors' device.

    compile=True runs `philox_torch` through torch.compile (one fused loop: ~25x faster than
    the numpy rounds on a CPU, after a one-off ~10 s compilation); the words are the same.
    """
    if compile:
        from pipeline.data.render import recompile_headroom

        with recompile_headroom():
            return _compiled_philox()(c0, c1, c2, c3, k0, k1)
    if c0.device.type != "cpu":
        return philox_torch(c0, c1, c2, c3, k0, k1)
    parts = torch.broadcast_tensors(c0, c1, c2, c3, k0, k1)
    shape = parts[0].shape
    cols = shape[-1] if len(shape) >= 1 and shape[-1] else 1
    arrays = [p.reshape(-1, cols).numpy().view(np.uint64) for p in parts]  # words >= 0
    rows = arrays[0].shape[0]
    out = np.empty((4, rows, cols), dtype=np.uint64)
    step = max(1, _CHUNK // cols)
    for r in range(0, rows, step):
        chunk = [a[r : r + step] for a in arrays]
        out[:, r : r + step] = _philox_keyed(*chunk)
    words = torch.from_numpy(out.view(np.int64))
    return tuple(w.reshape(shape) for w in words)  # type: ignore[return-value]


@functools.lru_cache(maxsize=1)
def _compiled_philox():
    return torch.compile(philox_torch, dynamic=True)


def _philox_keyed(c0, c1, c2, c3, k0, k1, rounds: int = 10):  # numpy uint64 arrays
    mask, s32 = np.uint64(_MASK32), np.uint64(32)
    m0, m1 = np.uint64(_M0), np.uint64(_M1)
    w0, w1 = np.uint64(_W0), np.uint64(_W1)
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + w0) & mask, (k1 + w1) & mask
        p0, p1 = c0 * m0, c2 * m1  # < 2^64: exact in uint64
        c0, c1, c2, c3 = (p1 >> s32) ^ c1 ^ k0, p1 & mask, (p0 >> s32) ^ c3 ^ k1, p0 & mask
    return np.stack((c0, c1, c2, c3))


def _key(seed: int) -> tuple[int, int]:
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return seed & _MASK32, (seed >> 32) & _MASK32


def random_words(
    seed: int, index: torch.Tensor, streams: dict[int, int]
) -> dict[int, torch.Tensor]:
    """{stream: (N, n_words) int64 32-bit words}, pure functions of (seed, index, stream, j).

    All streams come out of one vectorised Philox call (counter = (j, index lo, index hi,
    stream), key = seed).
    """
    index = torch.as_tensor(index, dtype=torch.int64, device="cpu").reshape(-1).numpy()
    if index.size and int(index.min()) < 0:
        raise ValueError("image indices must be >= 0")
    blocks = {s: (n + 3) // 4 for s, n in streams.items()}
    j = np.concatenate([np.arange(b, dtype=np.uint64) for b in blocks.values()])
    sid = np.concatenate([np.full(b, s & _MASK32, dtype=np.uint64) for s, b in blocks.items()])
    idx = index.astype(np.uint64)
    counter = np.empty((idx.size, j.size, 4), dtype=np.uint64)
    counter[..., 0] = j[None, :]
    counter[..., 1] = (idx & np.uint64(_MASK32))[:, None]
    counter[..., 2] = (idx >> np.uint64(32))[:, None]
    counter[..., 3] = sid[None, :]
    words = _philox_np(counter.reshape(-1, 4), _key(seed), 10).reshape(idx.size, 4 * j.size)
    words = torch.from_numpy(words.astype(np.int64))
    out, col = {}, 0
    for s, b in blocks.items():
        out[s] = words[:, col : col + 4 * b][:, : streams[s]]
        col += 4 * b
    return out


def words_to_uniform(w: torch.Tensor) -> torch.Tensor:
    """(N, 2n) 32-bit words -> (N, n) float64 uniforms in (0, 1), 53 random bits each."""
    w = w.to(torch.float64)
    hi, lo = w[:, 0::2], w[:, 1::2]
    # 27 + 26 bits, offset by half a step: never exactly 0 or 1.
    return (torch.floor(hi / 32.0) * 67108864.0 + torch.floor(lo / 64.0) + 0.5) / 2.0**53


def words_to_seed(w: torch.Tensor) -> list[int]:
    """(N, 2) words -> one 63-bit integer per row (to seed a torch.Generator)."""
    return [((int(a) & 0x7FFFFFFF) << 32) | int(b) for a, b in w.tolist()]


def uniforms(seed: int, index: torch.Tensor, streams: dict[int, int]) -> dict[int, torch.Tensor]:
    """{stream: (N, n) float64 uniforms in (0, 1)} from one Philox call."""
    words = random_words(seed, index, {s: 2 * n for s, n in streams.items()})
    return {s: words_to_uniform(w) for s, w in words.items()}


def uniform(seed: int, index: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """(N, n) float64 uniforms in (0, 1) of one stream."""
    return uniforms(seed, index, {stream: n})[stream]
