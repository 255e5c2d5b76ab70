"""Counter-based random numbers: Philox4x32-10 in torch integer ops.

Each simulated image draws its parameters from `uniform(seed, index, stream, n)`, a pure function
of (seed, global image index, stream, draw number). That is what makes the simulator deterministic
per image whatever the batch split, and identical on every device (it always runs on the CPU in
int64, where 32-bit products stay exact because one factor is split into 16-bit halves).
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # Philox multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments


def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi32, lo32) of the 64-bit product a * m, exact in int64 (a < 2^32, m < 2^32)."""
    p = a * (m >> 16)  # < 2^48
    q = a * (m & 0xFFFF)  # < 2^48
    hi = (p + (q >> 16)) >> 16
    lo = (((p & 0xFFFF) << 16) + (q & _MASK32)) & _MASK32
    return hi, lo


def philox4x32(counter: torch.Tensor, key: tuple[int, int], rounds: int = 10) -> torch.Tensor:
    """Philox4x32 block function: counter (N, 4) int64 words < 2^32 -> (N, 4) int64 words."""
    c0, c1, c2, c3 = (counter[:, i] for i in range(4))
    k0, k1 = key[0] & _MASK32, key[1] & _MASK32
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        hi0, lo0 = _mulhilo(c0, _M0)
        hi1, lo1 = _mulhilo(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return torch.stack((c0, c1, c2, c3), dim=1)


def _key(seed: int) -> tuple[int, int]:
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return seed & _MASK32, (seed >> 32) & _MASK32


def random_words(seed: int, index: torch.Tensor, stream: int, n_words: int) -> torch.Tensor:
    """(N, n_words) int64 uniform 32-bit words, a pure function of (seed, index, stream, j)."""
    index = torch.as_tensor(index, dtype=torch.int64, device="cpu").reshape(-1)
    if index.numel() and int(index.min()) < 0:
        raise ValueError("image indices must be >= 0")
    n_blocks = (n_words + 3) // 4
    j = torch.arange(n_blocks, dtype=torch.int64)
    counter = torch.stack(
        torch.broadcast_tensors(
            j[None, :],
            (index & _MASK32)[:, None],
            (index >> 32)[:, None],
            torch.full((1, 1), int(stream) & _MASK32, dtype=torch.int64),
        ),
        dim=-1,
    ).reshape(-1, 4)
    words = philox4x32(counter, _key(seed)).reshape(index.numel(), n_blocks * 4)
    return words[:, :n_words]


def uniform(seed: int, index: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """(N, n) float64 uniforms in the open interval (0, 1), 53 random bits each."""
    w = random_words(seed, index, stream, 2 * n).to(torch.float64)
    hi, lo = w[:, 0::2], w[:, 1::2]
    # 27 + 26 bits, offset by half a step: never exactly 0 or 1.
    return (torch.floor(hi / 32.0) * 67108864.0 + torch.floor(lo / 64.0) + 0.5) / 2.0**53


def seeds63(seed: int, index: torch.Tensor, stream: int) -> list[int]:
    """One 63-bit integer per index, for seeding a per-image torch.Generator (noise)."""
    w = random_words(seed, index, stream, 2)
    return [((int(a) & 0x7FFFFFFF) << 32) | int(b) for a, b in w.tolist()]
