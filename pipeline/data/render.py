"""Noiseless ray tracing: SIE + shear + substructure -> Sersic source -> pixels -> PSF.

Images are rendered per substructure kind, so a batch never pays for subhalos it does not
have. Per-image constants (rotation angles, axis ratios, point positions) are computed once,
in float64, before the per-pixel work. In eager mode the batch is cut into cache-sized chunks;
with `compile=True` each (preset, kind, device, dtype) gets one torch.compile'd function, with
a dynamic batch dimension, that fuses the per-pixel chain including the sum over subhalos: on
CPU that is 5-50x faster than eager, after a one-off compilation of 5-30 s (cached on disk
by inductor afterwards). Each image is computed by the same per-image loops whatever the
batch, so compiled results do not depend on the batch split either.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import torch

from pipeline.data import imaging, lensing
from pipeline.data.presets import SimPreset
from pipeline.data.priors import SimParams

Tensor = torch.Tensor

_EAGER_PIXELS = 1 << 17  # (sub-)pixels per eager chunk: keeps temporaries in cache
_COMPILE_BATCH = 256  # images per compiled call (the batch dimension is dynamic)


def _coefficients(preset: SimPreset, kind: int, p: SimParams) -> dict[str, Tensor]:
    """Per-image constants of the images in p (all of one kind), float64 on the CPU."""
    c: dict[str, Tensor] = {}
    for k, v in lensing.sie_coefficients(p.theta_e, p.lens_e1, p.lens_e2).items():
        c["sie_" + k] = v
    for k, v in imaging.sersic_coefficients(p.source_e1, p.source_e2).items():
        c["src_" + k] = v
    c.update(g1=p.shear_gamma1, g2=p.shear_gamma2, cen_x=p.source_x, cen_y=p.source_y,
             amp=p.source_amp)
    if kind == 1 and preset.n_subhalos:
        if preset.sub_profile == "tnfw":
            c.update(rs=p.sub_rs, alpha_rs=p.sub_alpha_rs, r_trunc=p.sub_r_trunc)
        else:
            c.update(te=p.sub_theta_e)
        c.update(sx=p.sub_x, sy=p.sub_y)
    elif kind == 2 and preset.vortex_profile == "line":
        for k, v in lensing.line_coefficients(
            p.vortex_theta_e2, p.vortex_half_length, p.vortex_angle
        ).items():
            c["line_" + k] = v
    elif kind == 2:
        m = preset.vortex_n_points
        t = torch.linspace(-1.0, 1.0, m, dtype=torch.float64)[None, :]
        t = t * p.vortex_half_length[:, None]
        c.update(
            te=torch.sqrt(p.vortex_theta_e2 / m)[:, None].expand(-1, m).contiguous(),
            sx=t * torch.cos(p.vortex_angle)[:, None],
            sy=t * torch.sin(p.vortex_angle)[:, None],
        )
    return c


def _mirror(half: Tensor, n: int) -> Tensor:
    """(B, ceil(n/2), n) odd field on the top rows -> (B, n, n) on the full grid."""
    rest = -torch.flip(half[:, : n - half.shape[1]], dims=(1, 2))
    return torch.cat([half, rest], dim=1)


def _render(
    c: dict[str, Tensor], gx: Tensor, gy: Tensor, *, preset: SimPreset, kind: int, k_chunk: int
) -> Tensor:
    """(B, H, W) noiseless flux per pixel for one kind; c holds (B,) and (B, K) constants."""

    def col(d: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
        return {k[len(prefix):]: v[:, None, None] for k, v in d.items() if k.startswith(prefix)}

    def one(name: str) -> Tensor:
        return c[name][:, None, None]

    # SIE + shear centred on the (symmetric) grid: alpha(-x) = -alpha(x). Trace the first
    # ceil(n/2) rows and mirror the rest.
    n = gx.shape[-2]
    top = (n + 1) // 2
    hx, hy = gx[:, :top], gy[:, :top]
    ax, ay = lensing.sie_deflection(hx, hy, col(c, "sie_"), 0.0, 0.0)
    sx, sy = lensing.shear(hx, hy, one("g1"), one("g2"))
    ax, ay = _mirror(ax + sx, n), _mirror(ay + sy, n)
    if kind == 1 and preset.n_subhalos and preset.sub_profile == "tnfw":
        dx, dy = lensing.tnfw_sum(
            gx, gy, c["rs"], c["alpha_rs"], c["r_trunc"], c["sx"], c["sy"], chunk=k_chunk
        )
        ax, ay = ax + dx, ay + dy
    elif (kind == 1 and preset.n_subhalos) or (kind == 2 and preset.vortex_profile != "line"):
        dx, dy = lensing.point_mass_sum(gx, gy, c["te"], c["sx"], c["sy"], chunk=k_chunk)
        ax, ay = ax + dx, ay + dy
    elif kind == 2:
        dx, dy = lensing.line_deflection(gx, gy, col(c, "line_"), 0.0, 0.0)
        ax, ay = ax + dx, ay + dy
    src = imaging.sersic_from_coefficients(
        gx - ax, gy - ay, one("amp"), preset.source_r_sersic, preset.source_n_sersic,
        col(c, "src_"), one("cen_x"), one("cen_y"),
    )
    img = imaging.bin_pixels(src, preset.supersampling)  # (B, n + 2r, n + 2r), edge-padded
    return imaging.gaussian_blur_padded(img, _kernel(preset)) * preset.pixel_scale**2


def _kernel(preset: SimPreset) -> list[float]:
    return imaging.gaussian_kernel1d(preset.psf_fwhm, preset.pixel_scale, preset.psf_truncation)


@functools.lru_cache(maxsize=64)
def _grid(preset: SimPreset, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    pad = len(_kernel(preset)) // 2
    gx, gy = imaging.pixel_grid(
        preset.num_pix, preset.pixel_scale, preset.supersampling, device, dtype, pad=pad
    )
    return gx.contiguous(), gy.contiguous()


@functools.lru_cache(maxsize=64)
def _compiled(preset: SimPreset, kind: int, device: torch.device, dtype: torch.dtype) -> Callable:
    fn = torch.compile(functools.partial(_render, preset=preset, kind=kind, k_chunk=0))

    def call(c: dict[str, Tensor], gx: Tensor, gy: Tensor) -> Tensor:
        m = next(iter(c.values())).shape[0]
        if m < 2:  # dynamo specialises sizes 0 and 1: pad to keep one graph
            c = {k: torch.cat([v, v[:1].expand(2 - m, *v.shape[1:])]) for k, v in c.items()}
        for v in c.values():  # one graph for every batch size: no padding to a fixed batch
            torch._dynamo.mark_dynamic(v, 0)
        with recompile_headroom():
            return fn(c, gx, gy)[:m]

    return call


def recompile_headroom() -> contextlib.AbstractContextManager:
    """Dynamo settings for our compiled functions.

    Every (preset, kind, device, dtype) is one specialisation of the same traced code:
    raise dynamo's limit of 8 per code object (past it, dynamo silently runs eager), and keep
    the preset's numbers constants rather than letting automatic dynamic shapes turn them
    into symbols after a recompile (only the batch dimension, marked, is dynamic).
    """
    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    changes: dict[str, object] = {name: max(256, getattr(cfg, name))}
    for key, value in (("automatic_dynamic_shapes", False), ("specialize_float", True),
                       ("specialize_int", True)):
        if hasattr(cfg, key):
            changes[key] = value
    return cfg.patch(**changes)


def _eager_chunks(preset: SimPreset, kind: int, device: torch.device) -> tuple[int, int]:
    """(images per chunk, subhalos per pass) for eager mode: cache-sized chunks on the CPU,
    large ones on accelerators (few kernel launches); one (B, H, W) pass per subhalo
    (measured 2.5-3x faster on CPU than slices on a trailing subhalo axis)."""
    scale = 1 if device.type == "cpu" else 256
    pixels = ((preset.num_pix + len(_kernel(preset)) - 1) * preset.supersampling) ** 2
    return max(1, scale * _EAGER_PIXELS // pixels), 1


def render_noiseless(
    preset: SimPreset,
    params: SimParams,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    compile: bool = False,
) -> Tensor:
    """Noiseless images (N, H, W) in flux per pixel (counts/s for magnitude presets)."""
    device = torch.device(device)
    n, h = len(params), preset.num_pix
    out = torch.empty((n, h, h), device=device, dtype=dtype)
    gx, gy = _grid(preset, device, dtype)
    kinds = params.kind.unique().tolist()
    for kind in kinds:
        rows = torch.nonzero(params.kind == kind).flatten()
        coef = _coefficients(preset, kind, params.select(rows))
        coef = {k: v.to(device=device, dtype=dtype) for k, v in coef.items()}
        if compile:
            fn, step = _compiled(preset, kind, device, dtype), _COMPILE_BATCH
        else:
            step, k_chunk = _eager_chunks(preset, kind, device)
            fn = functools.partial(_render, preset=preset, kind=kind, k_chunk=k_chunk)
        dev_rows = rows.to(device)
        for s in range(0, rows.numel(), step):
            part = {k: v[s : s + step] for k, v in coef.items()}
            m = next(iter(part.values())).shape[0]
            res = fn(part, gx, gy)
            if len(kinds) == 1 and m == n:
                return res
            out[dev_rows[s : s + m]] = res
    return out
