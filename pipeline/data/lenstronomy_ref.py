"""The same images made with lenstronomy, for validation tests and benchmarks only.

Needs the `dev` extra (lenstronomy 1.14); nothing in the simulator imports this module.
`LenstronomyReference(preset, kind)` builds lenstronomy's LensModel/LightModel/ImageModel once
and renders image i of a SimParams in the same units as `render_noiseless`.
"""

from __future__ import annotations

import numpy as np

from pipeline.data.presets import SimPreset
from pipeline.data.priors import SimParams


class LenstronomyReference:
    """lenstronomy ImageModel for one preset and substructure kind (0 no_sub, 1 cdm, 2 axion)."""

    def __init__(self, preset: SimPreset, kind: int, line_nodes: int | None = None) -> None:
        """line_nodes: represent the vortex by that many point masses at Gauss-Legendre
        nodes, weighted (converges to the exact segment away from it); default: the
        original recipe's vortex_n_points equal masses."""
        from lenstronomy.Data.imaging_data import ImageData
        from lenstronomy.Data.psf import PSF
        from lenstronomy.ImSim.image_model import ImageModel
        from lenstronomy.LensModel.lens_model import LensModel
        from lenstronomy.LightModel.light_model import LightModel
        from lenstronomy.Util import simulation_util

        self.preset, self.kind = preset, kind
        self.n_vortex = line_nodes or preset.vortex_n_points
        self.line_nodes = line_nodes
        models = ["SIE", "SHEAR"]
        if kind == 1:
            sub = "TNFW" if preset.sub_profile == "tnfw" else "POINT_MASS"
            models += [sub] * preset.n_subhalos
        elif kind == 2:
            # lenstronomy has no line segment: the original recipe's equal point masses.
            models += ["POINT_MASS"] * self.n_vortex
        self.lens_model = LensModel(models)
        kwargs_data = simulation_util.data_configure_simple(
            preset.num_pix, preset.pixel_scale, inverse=False
        )
        if preset.psf_fwhm > 0:
            psf = PSF(psf_type="GAUSSIAN", fwhm=preset.psf_fwhm, truncation=preset.psf_truncation)
        else:
            psf = PSF(psf_type="NONE")
        self.image_model = ImageModel(
            ImageData(**kwargs_data),
            psf,
            lens_model_class=self.lens_model,
            source_model_class=LightModel(["SERSIC_ELLIPSE"]),
            kwargs_numerics={"supersampling_factor": preset.supersampling},
        )

    def kwargs(self, p: SimParams, i: int) -> tuple[list[dict], list[dict]]:
        """(kwargs_lens, kwargs_source) of image i."""
        f = lambda t: float(t[i])  # noqa: E731
        kl = [
            {"theta_E": f(p.theta_e), "e1": f(p.lens_e1), "e2": f(p.lens_e2),
             "center_x": 0.0, "center_y": 0.0},
            {"gamma1": f(p.shear_gamma1), "gamma2": f(p.shear_gamma2)},
        ]
        if self.kind == 1:
            for k in range(self.preset.n_subhalos):
                pos = {"center_x": float(p.sub_x[i, k]), "center_y": float(p.sub_y[i, k])}
                if self.preset.sub_profile == "tnfw":
                    kl.append({"Rs": float(p.sub_rs[i, k]), "alpha_Rs": float(p.sub_alpha_rs[i, k]),
                               "r_trunc": float(p.sub_r_trunc[i, k]), **pos})
                else:
                    kl.append({"theta_E": float(p.sub_theta_e[i, k]), **pos})
        elif self.kind == 2:
            m = self.n_vortex
            if self.line_nodes:
                nodes, weights = np.polynomial.legendre.leggauss(m)
                weights = weights / 2.0
            else:
                nodes, weights = np.linspace(-1.0, 1.0, m), np.full(m, 1.0 / m)
            ang, length = f(p.vortex_angle), f(p.vortex_half_length)
            te = np.sqrt(f(p.vortex_theta_e2) * weights)
            for s, t in zip(nodes, te, strict=True):
                kl.append({"theta_E": float(t), "center_x": float(s * length * np.cos(ang)),
                           "center_y": float(s * length * np.sin(ang))})
        ks = [{"amp": f(p.source_amp), "R_sersic": self.preset.source_r_sersic,
               "n_sersic": self.preset.source_n_sersic, "e1": f(p.source_e1),
               "e2": f(p.source_e2), "center_x": f(p.source_x), "center_y": f(p.source_y)}]
        return kl, ks

    def image(self, p: SimParams, i: int) -> np.ndarray:
        """Noiseless image i (H, W), float64, flux per pixel."""
        kl, ks = self.kwargs(p, i)
        return self.image_model.image(kl, ks)

    def noisy_image(self, p: SimParams, i: int, rng: np.random.Generator) -> np.ndarray:
        """Image i with the preset's noise model drawn by numpy (for fair benchmarks)."""
        img = self.image(p, i)
        pre, t = self.preset, float(p.exposure_time[i])
        bkg = pre.background_noise()
        if pre.noise == "poisson":
            img = rng.poisson(np.clip(img, 0, None) * t) / t + bkg * rng.standard_normal(img.shape)
        elif pre.noise == "gaussian":  # SimAPI noise_for_model: background + shot noise
            img = img + bkg * rng.standard_normal(img.shape) + np.sqrt(
                np.clip(img, 0, None) * t
            ) / t * rng.standard_normal(img.shape)
        img = np.clip(img, 0, None)
        return img / max(float(img.max()), 1e-300)
