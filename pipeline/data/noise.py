"""Detector noise, batched on the simulation device from counter-based random numbers.

Every random number is a Philox4x32-10 word of (image key, pixel, attempt, stream), the image
key being the image's `noise_seed` (itself a Philox word of (seed, index)): one vectorised
call per batch, no per-image generator or loop, and each image's noise is the same whatever
the batch split. The integer words are identical on CPU and CUDA; what can differ between
devices is floating-point rounding after them: normals by a few float32 ulps (log, cos, sin
kernels), and a Poisson count by one where the rate's rounding difference (the float32
renderers agree to ~1e-7 relative, at worst 1e-5 of the peak) moves the pixel across one of
its sampler's thresholds: about pmf(k) x that difference, ~1e-6 of the bright pixels, and only
that pixel changes (before, CPU and CUDA generators gave unrelated realisations).

Normals: Box-Muller on 24-bit uniforms (float32-exact; |z| <= 5.9, a tail of 4e-9 cut).
Poisson: exact in distribution, batched over the pixels of the whole batch: inversion of the
CDF (one uniform per pixel) below a rate of 10, and Hormann's transformed rejection (PTRS,
numpy's algorithm, two uniforms per attempt, ~1.1 attempts) at and above it; both loops run
over the still-undecided pixels only, in float64.

CPU cost (2-core machine, batch 256, eager): 64 px Gaussian noise ~23 ms (per-image torch
generators took ~8 ms), 150 px Poisson ~0.8 s (torch.poisson took ~0.2 s); with compile=True
the Philox rounds fuse into one loop and the Gaussian noise takes ~7 ms. The GPU path is the
eager torch code (a few hundred elementwise kernels per batch, no per-image launches).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from pipeline.data.presets import SimPreset
from pipeline.data.rng import philox_words

Tensor = torch.Tensor

STREAM_NORMAL, STREAM_INVERSION, STREAM_PTRS = 1, 2, 3  # Philox counter word 2
SMALL_RATE = 10.0  # Poisson rates below: inversion; at and above: PTRS
_MAX_INVERSION_K = 200  # P(k > 200 | rate < 10) is far below float64 resolution
_MAX_PTRS_PAIRS = 32  # 64 attempts; P(all rejected) < 1e-50
_MASK32 = 0xFFFFFFFF


def image_keys(seeds: Tensor | list[int], device: torch.device) -> tuple[Tensor, Tensor]:
    """(B, 1) Philox key words of each image's 63-bit noise seed."""
    s = torch.as_tensor(seeds, dtype=torch.int64).to(device).reshape(-1, 1)
    return s & _MASK32, (s >> 32) & _MASK32


def _unit24(w: Tensor, dtype: torch.dtype) -> Tensor:
    return ((w >> 8).to(dtype) + 0.5) * 2.0**-24  # in (0, 1), exact in float32


def _unit32(w: Tensor) -> Tensor:
    return (w.to(torch.float64) + 0.5) * 2.0**-32  # in (0, 1)


def normals(k0: Tensor, k1: Tensor, n: int, dtype: torch.dtype, compile: bool = False
            ) -> Tensor:
    """(B, n) standard normals; pixel p of image i from block p // 4 of image i's key."""
    blocks = torch.arange((n + 3) // 4, device=k0.device)[None, :]
    zero = torch.zeros((), dtype=torch.int64, device=k0.device)
    w0, w1, w2, w3 = philox_words(blocks, zero, zero + STREAM_NORMAL, zero, k0, k1,
                                  compile=compile)
    out = []
    for wa, wb in ((w0, w1), (w2, w3)):
        r = torch.sqrt(-2.0 * torch.log(_unit24(wa, dtype)))
        theta = (2.0 * math.pi) * _unit24(wb, dtype)
        out += [r * torch.cos(theta), r * torch.sin(theta)]
    return torch.stack(out, dim=-1).reshape(k0.shape[0], -1)[:, :n]


def _inversion(lam: Tensor, u: Tensor) -> Tensor:
    """Poisson(lam) by CDF inversion of the uniforms u (lam < SMALL_RATE), float64: the count
    of CDF values below u, accumulated full-width for a few steps at a time, then the decided
    pixels are dropped (indexing is what costs on the CPU)."""
    out = torch.zeros_like(lam)
    p = torch.exp(-lam)
    cdf = p.clone()
    idx = torch.nonzero(u > cdf).flatten()  # the rest: k = 0 (most pixels of dark sky)
    lam, u, p, cdf = lam[idx], u[idx], p[idx], cdf[idx]
    count = torch.ones_like(lam)
    k, steps = 0, 1
    while idx.numel() and k < _MAX_INVERSION_K:
        for _ in range(steps):
            k += 1
            p = p * lam / k
            cdf = cdf + p  # F(k)
            count += u > cdf
        done = u <= cdf
        out[idx[done]] = count[done]
        keep = torch.nonzero(~done).flatten()
        idx, lam, u, p, cdf, count = (t[keep] for t in (idx, lam, u, p, cdf, count))
        steps = min(2 * steps, 8)  # compact often while many pixels decide, then rarely
    out[idx] = count  # beyond _MAX_INVERSION_K: unreachable for lam < 10
    return out


def _ptrs(lam: Tensor, pixel: Tensor, k0: Tensor, k1: Tensor, compile: bool = False
          ) -> Tensor:
    """Poisson(lam) by transformed rejection (Hormann 1993, as numpy), lam >= 10, float64;
    attempt a of a pixel uses block (pixel, a // 2, STREAM_PTRS) of its image's key. The
    per-pixel constants are compacted with the undecided pixels (~10% after one attempt)."""
    out = torch.empty_like(lam)
    b = 0.931 + 2.53 * torch.sqrt(lam)
    # (rate, a, b, log(1/alpha), v_r, log rate, pixel, key words) of the undecided pixels
    cols = [lam, -0.059 + 0.02483 * b, b, torch.log(1.1239 + 1.1328 / (b - 3.4)),
            0.9277 - 3.6224 / (b - 2.0), torch.log(lam), pixel, k0, k1]
    idx = torch.arange(lam.numel(), device=lam.device)
    zero = torch.zeros((), dtype=torch.int64, device=lam.device)
    for pair in range(_MAX_PTRS_PAIRS):
        if not idx.numel():
            break
        w = philox_words(cols[6], zero + pair, zero + STREAM_PTRS, zero, cols[7], cols[8],
                         compile=compile)
        for j in (0, 2):  # two attempts per block; w is compacted along with idx
            if not idx.numel():
                break
            la, aa, ba, lia, vr, loglam = cols[:6]
            uu, v = _unit32(w[j]) - 0.5, _unit32(w[j + 1])
            us = 0.5 - uu.abs()
            k = torch.floor((2.0 * aa / us + ba) * uu + la + 0.43)
            quick = (us >= 0.07) & (v <= vr)
            reject = (k < 0) | ((us < 0.013) & (v > us))
            lhs = torch.log(v) + lia - torch.log(aa / (us * us) + ba)
            rhs = -la + k * loglam - torch.lgamma(k + 1.0)
            accept = quick | (~reject & (lhs <= rhs))
            out[idx[accept]] = k[accept]
            keep = torch.nonzero(~accept).flatten()
            idx, w, cols = idx[keep], [x[keep] for x in w], [c[keep] for c in cols]
    out[idx] = torch.round(cols[0])  # unreachable in practice (see _MAX_PTRS_PAIRS)
    return out


def poisson(rate: Tensor, k0: Tensor, k1: Tensor, compile: bool = False) -> Tensor:
    """Poisson counts (B, H, W) float64 of rates (B, H, W), image i keyed by (k0[i], k1[i])."""
    b = rate.shape[0]
    lam = rate.reshape(b, -1).to(torch.float64)
    n = lam.shape[1]
    blocks = torch.arange((n + 3) // 4, device=rate.device)[None, :]
    zero = torch.zeros((), dtype=torch.int64, device=rate.device)
    words = philox_words(blocks, zero, zero + STREAM_INVERSION, zero, k0, k1,
                         compile=compile)
    u = _unit32(torch.stack(words, dim=-1).reshape(b, -1)[:, :n]).flatten()
    lam = lam.flatten()
    counts = torch.empty_like(lam)
    small = lam < SMALL_RATE
    si = torch.nonzero(small).flatten()
    counts[si] = _inversion(lam[si], u[si])
    bi = torch.nonzero(~small).flatten()
    if bi.numel():
        image = bi // n
        counts[bi] = _ptrs(lam[bi], bi % n, k0.flatten()[image], k1.flatten()[image],
                           compile)
    return counts.view(rate.shape)


def add_noise(
    model: Tensor,
    preset: SimPreset,
    exposure: Tensor,
    seeds: Tensor | list[int],
    *,
    normalize_after: bool = False,
    compile: bool = False,
) -> Tensor:
    """Noisy images (B, H, W) from noiseless `model` (B, H, W) in counts per second.

    poisson:  Poisson(t * model) / t + N(0, background_rms), t the image's exposure time.
    gaussian: model + N(0, sigma_bkg) + N(0, sqrt(model * t) / t), lenstronomy SimAPI's
              noise_for_model (Gaussian approximation of the shot noise); the two
              independent Gaussians are drawn as one, N(0, sqrt(sigma_bkg^2 + model / t)).
    seeds: each image's 63-bit noise seed (SimParams.noise_seed). normalize_after applies
    `normalize`; compile runs the Philox rounds and the final arithmetic through
    torch.compile (the same numbers, far faster on a CPU once compiled).
    """
    if preset.noise == "none":
        return normalize(model) if normalize_after else model
    b, h, w = model.shape
    device = model.device
    t = exposure.to(device=device, dtype=model.dtype)[:, None, None]
    k0, k1 = image_keys(seeds, device)
    combine = _compiled_combine() if compile else _combine
    z = normals(k0, k1, h * w, model.dtype, compile).view(b, h, w)
    if preset.noise == "poisson":
        t64 = exposure.to(device=device, dtype=torch.float64)[:, None, None]
        rate = torch.clamp(model.to(torch.float64), min=0.0) * t64
        model = poisson(rate, k0, k1, compile).to(model.dtype)
    return combine(model, z, t, preset.noise == "poisson", preset.background_noise(),
                   normalize_after)


def _combine(
    model: Tensor, z: Tensor, t: Tensor, counts: bool, bkg: float, norm: bool
) -> Tensor:
    """counts: model holds Poisson counts (-> counts / t + bkg z); else SimAPI's Gaussian."""
    if counts:
        img = model / t + bkg * z
    else:
        img = model + torch.sqrt(bkg * bkg + torch.clamp(model, min=0.0) / t) * z
    return normalize(img) if norm else img


@functools.lru_cache(maxsize=1)
def _compiled_combine() -> Callable:
    from pipeline.data.render import recompile_headroom

    fn = torch.compile(_combine, dynamic=True)

    def call(*args: Tensor | bool | float) -> Tensor:
        with recompile_headroom():
            return fn(*args)

    return call


def normalize(img: Tensor) -> Tensor:
    """Clip at zero and divide each image (B, H, W) by its maximum (max = 1)."""
    img = torch.clamp(img, min=0.0)
    peak = img.amax(dim=(-2, -1), keepdim=True)
    return img / torch.where(peak > 0, peak, torch.ones_like(peak))
