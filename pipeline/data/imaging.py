"""Pixel grid, Sersic source, Gaussian PSF and photometry, in lenstronomy's conventions.

Grid: pixel (row i, column j) is centred on x = (j - (n-1)/2) * d, y = (i - (n-1)/2) * d
(lenstronomy's make_grid_with_coordtransform with inverse=False); with supersampling s the
s x s sub-pixel centres are averaged into one pixel, then the image is convolved at pixel
resolution and multiplied by the pixel area (ImageModel with supersampling_convolution=False).
PSF: scipy.ndimage.gaussian_filter(mode='nearest', truncate=t), which is what lenstronomy's
'GAUSSIAN' PSF convolution calls, rebuilt as two separable 1-D passes over an image rendered
on a grid whose border repeats the edge coordinates (so the padding costs no gather).
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor

SERSIC_R_MIN = 1e-4  # lenstronomy SersicUtil smoothing
SERSIC_MAX_R_FRAC = 1000.0


def pixel_grid(
    num_pix: int,
    pixel_scale: float,
    supersampling: int,
    device: torch.device,
    dtype: torch.dtype,
    pad: int = 0,
) -> tuple[Tensor, Tensor]:
    """(x, y) of every (sub-)pixel centre, each (1, (n+2p)*s, (n+2p)*s).

    pad > 0 adds p pixels on each side that repeat the edge pixels' coordinates: rendered
    there they equal the edge pixels, which is scipy's mode='nearest' padding for the PSF.
    """
    s = supersampling
    pix = torch.clamp(torch.arange(-pad, num_pix + pad, dtype=torch.float64), 0, num_pix - 1)
    sub = (torch.arange(s, dtype=torch.float64) + 0.5) / s - 0.5  # sub-pixel offsets
    a = ((pix[:, None] + sub[None, :]).reshape(-1) - (num_pix - 1) / 2.0) * pixel_scale
    a = a.to(device=device, dtype=dtype)
    m = a.numel()
    return a.view(1, 1, m).expand(1, m, m), a.view(1, m, 1).expand(1, m, m)


def bin_pixels(img: Tensor, supersampling: int) -> Tensor:
    """Mean over s x s blocks: (B, n*s, n*s) -> (B, n, n)."""
    if supersampling == 1:
        return img
    b, h, w = img.shape
    s = supersampling
    return img.view(b, h // s, s, w // s, s).mean(dim=(2, 4))


def sersic_bn(n: float) -> float:
    """lenstronomy's b(n) approximation (SersicUtil.b_n)."""
    return max(1.9992 * n - 0.3271, 1e-5)


def sersic_coefficients(e1: Tensor, e2: Tensor) -> dict[str, Tensor]:
    """Per-source matrix of transform_e1e2_product_average, computed once per image."""
    norm = torch.sqrt(torch.clamp((1.0 - e1 * e1 - e2 * e2).abs(), min=1e-6))
    return {"a11": (1.0 - e1) / norm, "a12": -e2 / norm, "a22": (1.0 + e1) / norm}


def sersic_from_coefficients(
    x: Tensor,
    y: Tensor,
    amp: Tensor,
    r_sersic: float,
    n_sersic: float,
    c: dict[str, Tensor],
    cx: Tensor,
    cy: Tensor,
) -> Tensor:
    """lenstronomy 'SERSIC_ELLIPSE' from `sersic_coefficients` (see sersic_ellipse)."""
    dx, dy = x - cx, y - cy
    xe = c["a11"] * dx + c["a12"] * dy
    ye = c["a12"] * dx + c["a22"] * dy
    r = torch.clamp(torch.sqrt(xe * xe + ye * ye), min=SERSIC_R_MIN)
    frac = r / max(r_sersic, SERSIC_R_MIN)
    bn = sersic_bn(n_sersic)
    scaled = frac if n_sersic == 1.0 else frac ** (1.0 / n_sersic)
    out = amp * torch.exp(-bn * (scaled - 1.0))
    return torch.where(frac <= SERSIC_MAX_R_FRAC, out, torch.zeros_like(out))


def sersic_ellipse(
    x: Tensor,
    y: Tensor,
    amp: Tensor,
    r_sersic: float,
    n_sersic: float,
    e1: Tensor,
    e2: Tensor,
    cx: Tensor,
    cy: Tensor,
) -> Tensor:
    """lenstronomy 'SERSIC_ELLIPSE' surface brightness, product-average radius convention.

    I = amp * exp(-b_n ((R / R_sersic)^(1/n) - 1)), R from transform_e1e2_product_average;
    amp is the surface brightness at R_sersic.
    """
    c = sersic_coefficients(e1, e2)
    return sersic_from_coefficients(x, y, amp, r_sersic, n_sersic, c, cx, cy)


def sersic_total_flux(r_sersic: float, n_sersic: float) -> float:
    """Total flux of a unit-amplitude Sersic (lenstronomy total_flux, ellipticity-free)."""
    bn = sersic_bn(n_sersic)
    return (
        r_sersic**2
        * 2.0
        * math.pi
        * n_sersic
        * math.exp(bn)
        / bn ** (2.0 * n_sersic)
        * math.gamma(2.0 * n_sersic)
    )


def magnitude_to_cps(magnitude: float, zero_point: float) -> float:
    """Counts per second of a source of this apparent magnitude (lenstronomy data_util)."""
    return 10.0 ** (-(magnitude - zero_point) / 2.5)


def gaussian_kernel1d(fwhm: float, pixel_scale: float, truncation: float) -> list[float]:
    """scipy.ndimage's Gaussian weights: sigma in pixels, radius int(truncate * sigma + 0.5).

    fwhm = 0 means no PSF (the identity kernel).
    """
    if fwhm == 0:
        return [1.0]
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0))) / pixel_scale
    radius = int(truncation * sigma + 0.5)
    w = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-radius, radius + 1)]
    total = math.fsum(w)
    return [v / total for v in w]


def gaussian_blur_padded(img: Tensor, kernel: list[float]) -> Tensor:
    """Separable 'valid' blur: (B, H + 2r, W + 2r) edge-padded -> (B, H, W), r = len // 2."""
    r = len(kernel) // 2
    if r == 0:
        return img
    h, w = img.shape[-2] - 2 * r, img.shape[-1] - 2 * r
    rows = sum(kernel[i] * img[:, i : i + h, :] for i in range(2 * r + 1))  # (B, H, W + 2r)
    return sum(kernel[i] * rows[:, :, i : i + w] for i in range(2 * r + 1))
