"""Simulator presets: every physical value of a dataset in one frozen dataclass.

model_i, model_ii and model_iii follow the public DeepLense recipes (see SCIENCE.md) without
their defects: Einstein radii from angular-diameter distances, Model II noise actually added,
Model III with lenstronomy's HST (WFC3 F160W) settings, and without the ring-size shortcut
(lens mass drawn per image, substructure mass taken out of the main lens, random axes).
model_i_deeplense, model_ii_deeplense and model_iii_deeplense keep the original lens
(`DEEPLENSE_LENS`). Angles in arcsec, masses in M_sun.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

from pipeline.data.cosmology import FlatLCDM, LensingGeometry

SUB_PROFILES = ("point_mass", "tnfw")
VORTEX_PROFILES = ("line", "point_masses")
NOISE_MODELS = ("poisson", "gaussian", "none")


@dataclass(frozen=True)
class SimPreset:
    """All values of one simulated dataset; `get_preset(name, **overrides)` makes variants."""

    name: str
    # -- detector grid and optics
    num_pix: int
    pixel_scale: float  # arcsec per pixel
    psf_fwhm: float  # arcsec, Gaussian PSF
    psf_truncation: float  # in PSF sigmas (scipy gaussian_filter `truncate`)
    supersampling: int = 1  # sub-pixels per axis (lenstronomy supersampling_factor)
    # -- cosmology (flat LCDM) and redshifts
    h0: float = 70.0
    om0: float = 0.3
    z_lens: float = 0.5
    z_source: float = 1.0
    # -- main lens: SIE with the Einstein radius of a point mass of main_lens_mass.
    # The DeepLense recipe fixes that mass and adds the substructure on top, so the ring of
    # an image with substructure is larger and its size alone gives the class away (see
    # README, "Data"). Here by default the lens mass is drawn per image and the substructure
    # mass is taken out of the main lens; the *_deeplense presets keep the original lens.
    main_lens_mass: float = 1e12  # total lens mass when not randomised
    randomize_einstein_radius: bool = True  # total lens mass 10^U(log10 range) per image
    log10_main_lens_mass_range: tuple[float, float] = (11.8, 12.2)  # when randomised
    # True: main lens mass = total - substructure mass (the class does not change the total);
    # False: substructure added on top of the main lens (DeepLense).
    mass_conserving: bool = True
    lens_e1: float = 0.1
    lens_e2: float = 0.0
    shear_gamma1: float = 0.05
    shear_gamma2: float = 0.0
    # True: lens, shear and source position angles uniform in [0, pi), moduli as above.
    # False: the fixed axes of the original data (a preferred direction in every image).
    randomize_orientation: bool = True
    # -- source: elliptical Sersic
    source_r_sersic: float = 0.25
    source_n_sersic: float = 1.0
    source_e1: float = -0.1
    source_e2: float = 0.1
    source_center_range: tuple[float, float] = (-0.35, 0.35)  # uniform in x and y
    source_amp: float | None = None  # lenstronomy amp (surface brightness at R_sersic) ...
    source_magnitude: float | None = None  # ... or an apparent magnitude (SimAPI style)
    # -- cdm substructure: n_subhalos with p(m) ~ m^sub_mass_slope
    n_subhalos: int = 25
    sub_mass_range: tuple[float, float] = (1e6, 1e10)
    sub_mass_slope: float = -0.9
    sub_radius_range: tuple[float, float] = (0.25, 2.0)  # uniform in radius, angle U(0, 2pi)
    sub_profile: str = "point_mass"  # or "tnfw"
    tnfw_concentration: float | None = None  # None: Duffy et al. 2008 c(M200, z_lens)
    tnfw_truncation: float = 1.0  # r_trunc in units of r200
    # -- axion vortex: a line through the lens centre, random angle
    vortex_mass: float = 3e10
    log10_axion_mass_range: tuple[float, float] = (-24.0, -22.0)  # log10(m_a / eV)
    vortex_length_scale: float = 0.03e-22  # half-length L = scale / m_a [arcsec eV]
    vortex_profile: str = "line"  # exact uniform segment, or "point_masses" (original recipe)
    vortex_n_points: int = 100
    # -- noise. "poisson": Poisson(t * model) / t + N(0, background_rms) with t = 10^U(range);
    # "gaussian": lenstronomy SimAPI noise_for_model (Gaussian shot noise + background from
    # read noise and sky); "none": noiseless.
    noise: str = "gaussian"
    background_rms: float | None = None  # flux units; None: from read noise and sky
    log10_exposure_range: tuple[float, float] | None = None  # random exposure time [s]
    exposure_time: float = 1.0  # per exposure [s]
    num_exposures: int = 1
    magnitude_zero_point: float = 25.0
    sky_brightness: float | None = None  # mag / arcsec^2
    read_noise: float | None = None  # e- per exposure
    ccd_gain: float = 1.0  # e-/ADU; data are in e-, kept for the record

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"preset {self.name!r}: {msg}")

        need(self.num_pix > 0 and self.supersampling >= 1, "num_pix > 0 and supersampling >= 1")
        need(self.pixel_scale > 0 and self.psf_fwhm >= 0, "pixel_scale > 0 and psf_fwhm >= 0")
        need(self.sub_profile in SUB_PROFILES, f"sub_profile must be one of {SUB_PROFILES}")
        need(
            self.vortex_profile in VORTEX_PROFILES,
            f"vortex_profile must be one of {VORTEX_PROFILES}",
        )
        need(self.noise in NOISE_MODELS, f"noise must be one of {NOISE_MODELS}")
        need(
            (self.source_amp is None) != (self.source_magnitude is None),
            "set exactly one of source_amp and source_magnitude",
        )
        need(self.n_subhalos >= 0 and self.vortex_n_points >= 1, "counts must be positive")
        lo, hi = self.sub_mass_range
        need(0 < lo < hi, "sub_mass_range must be 0 < lo < hi")
        need(self.sub_mass_slope != -1.0, "sub_mass_slope -1 is not supported")
        need(self.source_r_sersic > 0 and self.source_n_sersic > 0, "Sersic R, n must be > 0")
        need(0 < self.z_lens < self.z_source, "need 0 < z_lens < z_source")
        if self.noise == "poisson":
            need(self.background_rms is not None, "poisson noise needs background_rms")
        if self.noise == "gaussian" and self.background_rms is None:
            need(
                self.read_noise is not None and self.sky_brightness is not None,
                "gaussian noise needs background_rms or read_noise and sky_brightness",
            )

    # -- derived values -------------------------------------------------------------------
    @property
    def geometry(self) -> LensingGeometry:
        return _geometry(self.h0, self.om0, self.z_lens, self.z_source)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, self.num_pix, self.num_pix)

    @property
    def total_exposure(self) -> float:
        """Fixed total exposure time (SimAPI exposure_time * num_exposures) [s]."""
        return self.exposure_time * self.num_exposures

    def background_noise(self) -> float:
        """Gaussian background sigma per pixel [counts/s] (lenstronomy data_util.bkg_noise)."""
        if self.background_rms is not None:
            return self.background_rms
        t_tot = self.total_exposure
        sky_cps = 10.0 ** (-(self.sky_brightness - self.magnitude_zero_point) / 2.5)
        var = self.num_exposures * self.read_noise**2 + t_tot * sky_cps * self.pixel_scale**2
        return math.sqrt(var) / t_tot


def _model_i() -> SimPreset:
    return SimPreset(
        name="model_i",
        num_pix=150,
        pixel_scale=0.05,
        psf_fwhm=0.087,
        psf_truncation=3.0,
        source_amp=20.0,
        noise="poisson",
        background_rms=0.01,
        log10_exposure_range=(3.0, 3.5),
    )


def _model_ii() -> SimPreset:
    # Euclid VIS as in the original Model II (lenstronomy's Euclid config of that time).
    return SimPreset(
        name="model_ii",
        num_pix=64,
        pixel_scale=0.101,
        psf_fwhm=0.16,
        psf_truncation=5.0,
        source_magnitude=20.0,
        noise="gaussian",
        exposure_time=565.0,
        num_exposures=4,
        sky_brightness=22.35,
        magnitude_zero_point=24.0,
        read_noise=4.2,
        ccd_gain=3.1,
    )


def _model_iii() -> SimPreset:
    # lenstronomy's HST WFC3 F160W defaults (SimulationAPI.ObservationConfig.HST).
    return SimPreset(
        name="model_iii",
        num_pix=64,
        pixel_scale=0.08,
        psf_fwhm=0.08,
        psf_truncation=5.0,
        source_magnitude=20.0,
        noise="gaussian",
        exposure_time=5400.0,
        num_exposures=1,
        sky_brightness=22.3,
        magnitude_zero_point=25.96,
        read_noise=4.0,
        ccd_gain=2.5,
    )


@functools.lru_cache(maxsize=32)
def _geometry(h0: float, om0: float, z_lens: float, z_source: float) -> LensingGeometry:
    return LensingGeometry(FlatLCDM(h0, om0), z_lens, z_source)


PRESETS: dict[str, SimPreset] = {p.name: p for p in (_model_i(), _model_ii(), _model_iii())}

# The DeepLense-faithful lens: one fixed Einstein radius, substructure mass added on top of
# the main lens, fixed lens/shear/source axes. It keeps the ring-size shortcut of the original
# data (README, "Data"); use it to reproduce or to test on the original setting.
DEEPLENSE_LENS: dict[str, Any] = {
    "randomize_einstein_radius": False,
    "mass_conserving": False,
    "randomize_orientation": False,
}
DEEPLENSE_SUFFIX = "_deeplense"
VARIANTS: dict[str, SimPreset] = {
    name + DEEPLENSE_SUFFIX: dataclasses.replace(p, name=name + DEEPLENSE_SUFFIX, **DEEPLENSE_LENS)
    for name, p in PRESETS.items()
}


def preset_names() -> list[str]:
    """Every name `get_preset` accepts: the presets and their DeepLense-faithful variants."""
    return sorted({**PRESETS, **VARIANTS})


def _coerce(field: dataclasses.Field, value: Any) -> Any:
    """Lists (from YAML/CLI) become tuples, so that presets stay hashable."""
    if isinstance(value, list):
        return tuple(value)
    return value


def get_preset(name: str, **overrides: Any) -> SimPreset:
    """A preset by name, with fields replaced by `overrides` (unknown names are errors)."""
    base = PRESETS.get(name) or VARIANTS.get(name)
    if base is None:
        raise KeyError(f"unknown simulator preset {name!r}; choose one of {preset_names()}")
    fields = {f.name: f for f in dataclasses.fields(SimPreset)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise TypeError(
            f"unknown SimPreset field(s) {unknown} for preset {name!r}; valid: {sorted(fields)}"
        )
    values = {k: _coerce(fields[k], v) for k, v in overrides.items()}
    return dataclasses.replace(base, **values)
