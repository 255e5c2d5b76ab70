"""Per-image simulation parameters drawn from a preset's priors.

Every value is a pure function of (seed, global image index, stream) through the Philox
counter RNG, computed in float64 on the CPU: the same image gets the same lens, source and
substructure whatever the batch split, device or task (the class only decides which parts
are used). Masses in M_sun, angles in arcsec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from pipeline.data import rng
from pipeline.data.cosmology import duffy_concentration
from pipeline.data.imaging import magnitude_to_cps, sersic_total_flux
from pipeline.data.presets import SimPreset

Tensor = torch.Tensor

KINDS = ("no_sub", "cdm", "axion")  # substructure kinds; class names map onto these
KIND_OF_CLASS = {"no_sub": 0, "sub": 1, "cdm": 1, "axion": 2}

# Philox streams: one per group of draws, so that adding a draw never shifts another.
STREAM_MACRO = 1  # 8 uniforms: lens/shear/source angles, main mass, source x/y, exposure
STREAM_SUB_MASS = 2
STREAM_SUB_RADIUS = 3
STREAM_SUB_ANGLE = 4
STREAM_AXION = 5  # log10 m_a, vortex angle
STREAM_NOISE = 6


@dataclass
class SimParams:
    """Everything needed to render N images (CPU tensors, float64 unless noted)."""

    index: Tensor  # (N,) int64 global image index
    kind: Tensor  # (N,) int64 index into KINDS
    main_lens_mass: Tensor
    theta_e: Tensor
    lens_e1: Tensor
    lens_e2: Tensor
    shear_gamma1: Tensor
    shear_gamma2: Tensor
    source_x: Tensor
    source_y: Tensor
    source_e1: Tensor
    source_e2: Tensor
    source_amp: Tensor
    exposure_time: Tensor  # total exposure [s] used by the noise model
    sub_mass: Tensor  # (N, K); zero rows for images without cdm subhalos
    sub_x: Tensor  # (N, K)
    sub_y: Tensor  # (N, K)
    sub_theta_e: Tensor  # (N, K) point-mass Einstein radii
    sub_rs: Tensor  # (N, K) TNFW scale radius (1 where unused)
    sub_alpha_rs: Tensor  # (N, K) TNFW deflection at Rs (0 where unused)
    sub_r_trunc: Tensor  # (N, K) TNFW truncation radius
    log10_m_a: Tensor  # NaN for non-axion images
    vortex_angle: Tensor
    vortex_half_length: Tensor  # 0 for non-axion images
    vortex_theta_e2: Tensor  # theta_E(M_vortex)^2, 0 for non-axion images
    sub_mass_total: Tensor
    noise_seed: Tensor  # (N,) int64, the Philox key of the image's noise (noise.py)

    def __len__(self) -> int:
        return int(self.index.numel())

    def select(self, rows: Tensor) -> SimParams:
        """The images at `rows` (a CPU index tensor)."""
        return SimParams(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    @property
    def sub_mass_fraction(self) -> Tensor:
        return self.sub_mass_total / self.main_lens_mass


def _span(u: Tensor, lo: float, hi: float) -> Tensor:
    return lo + (hi - lo) * u


def _rotated(e1: float, e2: float, u: Tensor | None) -> tuple[Tensor, Tensor]:
    """Fixed (e1, e2), or the same modulus at position angle pi * u (spin-2 quantity)."""
    if u is None:
        return torch.full((1,), e1, dtype=torch.float64), torch.full((1,), e2, dtype=torch.float64)
    mod = math.hypot(e1, e2)
    return mod * torch.cos(2.0 * math.pi * u), mod * torch.sin(2.0 * math.pi * u)


def _sub_masses(preset: SimPreset, u: Tensor) -> Tensor:
    """Inverse CDF of p(m) ~ m^slope on [lo, hi]."""
    lo, hi = preset.sub_mass_range
    a = preset.sub_mass_slope + 1.0
    return (lo**a + (hi**a - lo**a) * u) ** (1.0 / a)


def draw_params(preset: SimPreset, kinds: Tensor, index: Tensor, seed: int) -> SimParams:
    """Parameters of the images `index` (N,) whose substructure kinds are `kinds` (N,)."""
    index = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
    kinds = torch.as_tensor(kinds, dtype=torch.int64).reshape(-1)
    n, k = index.numel(), preset.n_subhalos
    geo = preset.geometry
    f64 = torch.float64
    ones = torch.ones(n, dtype=f64)

    words = rng.random_words(
        seed,
        index,
        {STREAM_MACRO: 16, STREAM_SUB_MASS: 2 * k, STREAM_SUB_RADIUS: 2 * k,
         STREAM_SUB_ANGLE: 2 * k, STREAM_AXION: 4, STREAM_NOISE: 2},
    )
    uni = {s: rng.words_to_uniform(w) for s, w in words.items() if s != STREAM_NOISE}
    u = uni[STREAM_MACRO]
    rand = preset.randomize_orientation
    lens_e1, lens_e2 = _rotated(preset.lens_e1, preset.lens_e2, u[:, 0] if rand else None)
    g1, g2 = _rotated(preset.shear_gamma1, preset.shear_gamma2, u[:, 1] if rand else None)
    src_e1, src_e2 = _rotated(preset.source_e1, preset.source_e2, u[:, 2] if rand else None)
    if preset.randomize_einstein_radius:
        lens_mass = 10.0 ** _span(u[:, 3], *preset.log10_main_lens_mass_range)
    else:
        lens_mass = preset.main_lens_mass * ones
    src_x = _span(u[:, 4], *preset.source_center_range)
    src_y = _span(u[:, 5], *preset.source_center_range)
    if preset.log10_exposure_range is not None:
        exposure = 10.0 ** _span(u[:, 6], *preset.log10_exposure_range)
    else:
        exposure = preset.total_exposure * ones
    if preset.source_amp is not None:
        amp = preset.source_amp * ones
    else:
        cps = magnitude_to_cps(preset.source_magnitude, preset.magnitude_zero_point)
        amp = cps / sersic_total_flux(preset.source_r_sersic, preset.source_n_sersic) * ones

    is_cdm = (kinds == 1).to(f64)[:, None]
    masses = _sub_masses(preset, uni[STREAM_SUB_MASS]) * is_cdm
    radius = _span(uni[STREAM_SUB_RADIUS], *preset.sub_radius_range)
    phi = 2.0 * math.pi * uni[STREAM_SUB_ANGLE]
    sub_x, sub_y = radius * torch.cos(phi), radius * torch.sin(phi)
    sub_theta_e = geo.einstein_radius(masses)
    if preset.sub_profile == "tnfw" and k:
        safe_m = torch.where(masses > 0, masses, torch.ones_like(masses))
        if preset.tnfw_concentration is None:
            conc = duffy_concentration(safe_m, preset.z_lens, preset.h0 / 100.0)
        else:
            conc = torch.full_like(safe_m, preset.tnfw_concentration)
        rs, alpha_rs = geo.nfw_angles(safe_m, conc)
        alpha_rs = alpha_rs * is_cdm
        r_trunc = preset.tnfw_truncation * conc * rs
    else:
        rs, alpha_rs, r_trunc = torch.ones_like(masses), torch.zeros_like(masses), masses * 0 + 1

    is_axion = kinds == 2
    ua = uni[STREAM_AXION]
    log10_m_a = _span(ua[:, 0], *preset.log10_axion_mass_range)
    half_length = preset.vortex_length_scale / 10.0**log10_m_a
    nan = torch.full_like(log10_m_a, float("nan"))
    sub_total = torch.where(is_axion, preset.vortex_mass * ones, masses.sum(1))
    # mass-conserving: the substructure is part of the lens mass, not added on top of it
    main_mass = lens_mass - sub_total if preset.mass_conserving else lens_mass
    if not bool((main_mass > 0).all()):
        raise ValueError(
            f"preset {preset.name!r}: substructure mass exceeds the lens mass; "
            "raise main_lens_mass or lower the substructure masses"
        )

    return SimParams(
        index=index,
        kind=kinds,
        main_lens_mass=main_mass,
        theta_e=geo.einstein_radius(main_mass),
        lens_e1=lens_e1.expand(n).clone(),
        lens_e2=lens_e2.expand(n).clone(),
        shear_gamma1=g1.expand(n).clone(),
        shear_gamma2=g2.expand(n).clone(),
        source_x=src_x,
        source_y=src_y,
        source_e1=src_e1.expand(n).clone(),
        source_e2=src_e2.expand(n).clone(),
        source_amp=amp,
        exposure_time=exposure,
        sub_mass=masses,
        sub_x=sub_x,
        sub_y=sub_y,
        sub_theta_e=sub_theta_e,
        sub_rs=rs,
        sub_alpha_rs=alpha_rs,
        sub_r_trunc=r_trunc,
        log10_m_a=torch.where(is_axion, log10_m_a, nan),
        vortex_angle=2.0 * math.pi * ua[:, 1],
        vortex_half_length=torch.where(is_axion, half_length, torch.zeros_like(half_length)),
        vortex_theta_e2=geo.einstein_radius(preset.vortex_mass) ** 2 * is_axion.to(f64),
        sub_mass_total=sub_total,
        noise_seed=torch.tensor(rng.words_to_seed(words[STREAM_NOISE]), dtype=torch.int64),
    )
