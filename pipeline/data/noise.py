"""Detector noise, drawn from one seeded generator per image.

Each image's noise comes from its own torch.Generator seeded with a Philox word of
(seed, index), so it does not depend on the batch split; the arithmetic is batched. On the
2-core CI machine 256 per-image generators cost about as much as one batched draw. The same
code runs on CUDA with CUDA generators, so noise realisations differ between CPU and GPU
while the image parameters do not.

Poisson counts are exact (torch.poisson, ~25-70 ns per pixel on CPU, like numpy's sampler; a
batched inversion + PTRS sampler in eager torch measured 5x slower). torch.poisson draws a
variable number of randoms per pixel, so in the rare event (~1e-7 per pixel) that a batch
split changes a rate by one ulp and flips one of its accept decisions, the rest of that
image's Poisson draws shift.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from pipeline.data.presets import SimPreset

Tensor = torch.Tensor


def _generators(seeds: list[int], device: torch.device) -> list[torch.Generator]:
    gens = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(s)
        gens.append(g)
    return gens


def _normals(gens: list[torch.Generator], n: int, dtype: torch.dtype, device: torch.device
             ) -> Tensor:
    """(B, n) standard normals, row i from gens[i]."""
    out = torch.empty((len(gens), n), dtype=dtype, device=device)
    for i, g in enumerate(gens):
        torch.randn(n, generator=g, out=out[i])
    return out


def add_noise(
    model: Tensor,
    preset: SimPreset,
    exposure: Tensor,
    seeds: list[int],
    *,
    normalize_after: bool = False,
    compile: bool = False,
) -> Tensor:
    """Noisy images (B, H, W) from noiseless `model` (B, H, W) in counts per second.

    poisson:  Poisson(t * model) / t + N(0, background_rms), t the image's exposure time.
    gaussian: model + N(0, sigma_bkg) + N(0, sqrt(model * t) / t), lenstronomy SimAPI's
              noise_for_model (Gaussian approximation of the shot noise); the two
              independent Gaussians are drawn as one, N(0, sqrt(sigma_bkg^2 + model / t)).
    normalize_after applies `normalize`; compile fuses the arithmetic with torch.compile.
    """
    if preset.noise == "none":
        return normalize(model) if normalize_after else model
    b, h, w = model.shape
    device = model.device
    t = exposure.to(device=device, dtype=model.dtype)[:, None, None]
    gens = _generators(seeds, device)
    combine = _compiled_combine() if compile else _combine
    z = _normals(gens, h * w, model.dtype, device).view(b, h, w)
    if preset.noise == "poisson":
        # the fixed-size draws (normals) come first, then the sampler's variable ones
        rate = torch.clamp(model, min=0.0) * t
        counts = torch.empty_like(model)
        for i, g in enumerate(gens):
            counts[i] = torch.poisson(rate[i], generator=g)
        model = counts
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
