"""Detector noise, one seeded generator per image.

Each image's noise comes from its own torch.Generator seeded with a Philox word of
(seed, index), so it does not depend on the batch split. Measured on the 2-core CI machine,
256 per-image generators cost about as much as one batched draw (tens of ms for 150x150), and
the same code runs on CUDA with CUDA generators; noise realisations therefore differ between
CPU and GPU while the image parameters do not.
"""

from __future__ import annotations

import torch

from pipeline.data.presets import SimPreset

Tensor = torch.Tensor


def _generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def add_noise(model: Tensor, preset: SimPreset, exposure: Tensor, seeds: list[int]) -> Tensor:
    """Noisy images (B, H, W) from noiseless `model` (B, H, W) in counts per second.

    poisson:  Poisson(t * model) / t + N(0, background_rms), t the image's exposure time.
    gaussian: model + N(0, sigma_bkg) + N(0, sqrt(model * t) / t), lenstronomy SimAPI's
              noise_for_model (Gaussian approximation of the shot noise).
    """
    if preset.noise == "none":
        return model
    b, h, w = model.shape
    device = model.device
    bkg = preset.background_noise()
    t = exposure.to(device=device, dtype=model.dtype)[:, None, None]
    positive = torch.clamp(model, min=0.0)
    if preset.noise == "poisson":
        counts = torch.empty_like(model)
        normal = torch.empty_like(model)
        rate = positive * t
        for i, s in enumerate(seeds):
            g = _generator(s, device)
            counts[i] = torch.poisson(rate[i], generator=g)
            normal[i] = torch.randn((h, w), generator=g, device=device, dtype=model.dtype)
        return counts / t + bkg * normal
    z = torch.empty((b, 2, h, w), device=device, dtype=model.dtype)
    for i, s in enumerate(seeds):
        z[i] = torch.randn((2, h, w), generator=_generator(s, device), device=device,
                           dtype=model.dtype)
    return model + bkg * z[:, 0] + torch.sqrt(positive * t) / t * z[:, 1]


def normalize(img: Tensor) -> Tensor:
    """Clip at zero and divide each image (B, H, W) by its maximum (max = 1)."""
    img = torch.clamp(img, min=0.0)
    peak = img.amax(dim=(-2, -1), keepdim=True)
    return img / torch.where(peak > 0, peak, torch.ones_like(peak))
