"""The torch simulator against lenstronomy 1.14 (test dependency), parameters from the priors.

Deflections: SIE (drawn and near-round), SHEAR, POINT_MASS, NFW, TNFW and the vortex line
(against point masses at Gauss-Legendre nodes, away from the line). Images: every preset and
class, noiseless, float32 against lenstronomy's float64 ImageModel, within 1e-5 of the peak.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("lenstronomy")

from lenstronomy.LensModel.lens_model import LensModel  # noqa: E402

from pipeline.data import lensing  # noqa: E402
from pipeline.data.lenstronomy_ref import LenstronomyReference  # noqa: E402
from pipeline.data.priors import draw_params  # noqa: E402
from pipeline.data.simulate import PRESETS, get_preset, make_params, render_noiseless  # noqa: E402

SEEDS = (0, 1, 2)
F32_TOL, F64_TOL = 2e-6, 1e-10  # max |alpha error| / max |alpha|


def _points(n: int, half: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random points, rounded to float32 so that both codes see the same coordinates."""
    r = np.random.default_rng(seed)
    return (r.uniform(-half, half, (2, n)).astype(np.float32).astype(np.float64))


def _compare(names, kwargs, ours, x, y, tol):
    ax, ay = LensModel(names).alpha(x, y, kwargs)
    bx, by = (v.double().numpy() for v in ours)
    scale = max(np.abs(ax).max(), np.abs(ay).max())
    err = max(np.abs(ax - bx).max(), np.abs(ay - by).max()) / scale
    assert err < tol, f"{names[0]}: relative deflection error {err:.2e} > {tol:.0e}"


def _t(v, dtype):
    return torch.as_tensor(np.asarray(v, dtype=np.float64)).to(dtype)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, F32_TOL), (torch.float64, F64_TOL)])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_macro_and_point_mass_deflections(name, dtype, tol):
    pre = PRESETS[name]
    half = pre.num_pix * pre.pixel_scale / 2
    for seed in SEEDS:
        p, _ = make_params(pre, "binary", 0, 4, seed)
        x, y = _points(3000, half, seed)
        X, Y = _t(x, dtype), _t(y, dtype)
        for i in range(2):  # no_sub, cdm
            te, e1, e2 = (float(v[i]) for v in (p.theta_e, p.lens_e1, p.lens_e2))
            kw = {"theta_E": te, "e1": e1, "e2": e2, "center_x": 0.0, "center_y": 0.0}
            ours = lensing.sie(X, Y, _t(te, dtype), _t(e1, dtype), _t(e2, dtype), 0.0, 0.0)
            _compare(["SIE"], [kw], ours, x, y, tol)
            g1, g2 = float(p.shear_gamma1[i]), float(p.shear_gamma2[i])
            ours = lensing.shear(X, Y, _t(g1, dtype), _t(g2, dtype))
            _compare(["SHEAR"], [{"gamma1": g1, "gamma2": g2}], ours, x, y, tol)
        te = p.sub_theta_e[1].numpy().astype(np.float32).astype(np.float64)
        cx, cy = (v[1].numpy().astype(np.float32).astype(np.float64) for v in (p.sub_x, p.sub_y))
        kws = [
            {"theta_E": a, "center_x": b, "center_y": c}
            for a, b, c in zip(te, cx, cy, strict=True)
        ]
        ours = lensing.point_mass_sum(X[None], Y[None], _t(te, dtype)[None], _t(cx, dtype)[None],
                                      _t(cy, dtype)[None], chunk=7)
        _compare(["POINT_MASS"] * len(kws), kws, (ours[0][0], ours[1][0]), x, y, tol)


@pytest.mark.parametrize("modulus", [0.0, 1e-9, 1e-6, 1e-4, 1e-2, 0.4])
def test_sie_near_round_lenses(modulus):
    x, y = _points(2000, 3.0, 7)
    for dtype, tol in ((torch.float32, F32_TOL), (torch.float64, F64_TOL)):
        for ang in (0.3, 2.0):
            e1, e2 = modulus * np.cos(ang), modulus * np.sin(ang)
            kw = {"theta_E": 1.3, "e1": e1, "e2": e2, "center_x": 0.02, "center_y": -0.05}
            cx, cy = (_t(v, dtype) for v in (0.02, -0.05))
            ours = lensing.sie(_t(x, dtype), _t(y, dtype), _t(1.3, dtype), _t(e1, dtype),
                               _t(e2, dtype), cx, cy)
            # q = 1 exactly: lenstronomy clips q to 1 - 1e-8, a 3e-9 relative difference
            _compare(["SIE"], [kw], ours, x, y, max(tol, 1e-8))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, F32_TOL), (torch.float64, 1e-9)])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_nfw_and_tnfw_deflections(name, dtype, tol):
    """float32 in and out, float64 inside: no cancellation near the centres (x >= 1e-3)."""
    pre = get_preset(name, sub_profile="tnfw")
    for seed in SEEDS:
        p = draw_params(pre, torch.ones(2, dtype=torch.int64), torch.arange(2), seed)
        x, y = _points(1500, 2.5, seed)
        i, k = 0, slice(0, 6)
        rs, ars, rt = (v[i, k].numpy() for v in (p.sub_rs, p.sub_alpha_rs, p.sub_r_trunc))
        cx, cy = (v[i, k].numpy().astype(np.float32).astype(np.float64) for v in (p.sub_x, p.sub_y))
        # points close to the centres too (closer, lenstronomy's own float64 form cancels:
        # see test_tnfw_near_the_centre)
        near = np.concatenate([cx[j] + rs[j] * np.logspace(-2, -0.1, 40) for j in range(6)])
        xs = np.concatenate([x, near.astype(np.float32).astype(np.float64)])
        ys = np.concatenate([y, np.repeat(cy, 40)])
        X, Y = _t(xs, dtype), _t(ys, dtype)
        for j in range(6):
            pos = {"center_x": cx[j], "center_y": cy[j]}
            c = (_t(cx[j], dtype), _t(cy[j], dtype))
            ours = lensing.tnfw(X, Y, _t(rs[j], dtype), _t(ars[j], dtype), _t(rt[j], dtype), *c)
            kw = {"Rs": rs[j], "alpha_Rs": ars[j], "r_trunc": rt[j], **pos}
            _compare(["TNFW"], [kw], ours, xs, ys, tol)
            ours = lensing.nfw(X, Y, _t(rs[j], dtype), _t(ars[j], dtype), *c)
            _compare(["NFW"], [{"Rs": rs[j], "alpha_Rs": ars[j], **pos}], ours, xs, ys, tol)


def _tnfw_g_mp(x: float, tau: float) -> float:
    """lenstronomy's TNFW g(x, tau) in 50-digit arithmetic."""
    import mpmath as mp

    with mp.workdps(50):
        x, tau = mp.mpf(x), mp.mpf(tau)
        f = mp.acosh(1 / x) / mp.sqrt(1 - x * x)
        big_l = mp.log(x / (tau + mp.sqrt(tau * tau + x * x)))
        t2 = tau * tau
        return float(t2 / (t2 + 1) ** 2 * (
            (t2 + 1 + 2 * (x * x - 1)) * f + tau * mp.pi + (t2 - 1) * mp.log(tau)
            + mp.sqrt(t2 + x * x) * (-mp.pi + big_l * (t2 - 1) / tau)))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-8)])
def test_tnfw_near_the_centre(dtype, tol):
    """The TNFW closed form cancels as x -> 0: O(log x) terms leave O(x^2 log x). Ours is
    evaluated in float64 with acosh(1/x) and stays accurate down to lenstronomy's floor
    x = 1e-3, where a float32 evaluation would lose everything and lenstronomy's own float64
    atanh form is off by ~1e-5."""
    tau, rs = 8.0, 0.7
    x = np.logspace(-3, -0.5, 30)
    pts = _t(x * rs, dtype)  # rounded to dtype: compare at the rounded radius
    ax, _ = lensing.tnfw(pts, torch.zeros_like(pts), _t(rs, dtype), _t(1.0, dtype),
                         _t(tau * rs, dtype), 0.0, 0.0)
    rho0 = 1.0 / (4 * rs * rs * (1 + np.log(0.5)))
    xr = pts.double().numpy() / rs
    want = np.array([4 * rho0 * rs * rs * _tnfw_g_mp(v, tau) / v for v in xr])  # alpha(R)
    err = np.abs(ax.double().numpy() / want - 1).max()
    assert err < tol, f"relative error {err:.1e}"


def test_nfw_normalisation_matches_lenstronomy_lens_cosmo():
    from astropy.cosmology import FlatLambdaCDM
    from lenstronomy.Cosmo.cosmo_interp import CosmoInterp
    from lenstronomy.Cosmo.lens_cosmo import LensCosmo

    astro = FlatLambdaCDM(H0=70, Om0=0.3)

    class Cosmo(CosmoInterp):  # CosmoInterp: astropy 7 API; H/efunc for the NFW helpers
        H, efunc = astro.H, astro.efunc

    lc = LensCosmo(0.5, 1.0, cosmo=Cosmo(astro, z_stop=3.0, num_interp=3000))
    geo = PRESETS["model_i"].geometry
    m = torch.tensor([1e7, 1e9, 1e10], dtype=torch.float64)
    c = torch.tensor([20.0, 12.0, 8.0], dtype=torch.float64)
    rs, alpha = geo.nfw_angles(m, c)
    for j in range(3):
        ref_rs, ref_alpha = lc.nfw_physical2angle(float(m[j]), float(c[j]))
        # lenstronomy's G, M_sun and rho_crit constants differ from CODATA at 1e-4
        assert float(rs[j]) == pytest.approx(ref_rs, rel=5e-4)
        assert float(alpha[j]) == pytest.approx(ref_alpha, rel=5e-4)
    assert geo.einstein_radius(1e12) == pytest.approx(
        np.sqrt(lc.mass_in_theta_E(1.0) ** -1 * 1e12), rel=5e-4
    )


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.float64, 1e-12)])
def test_vortex_line_against_many_point_masses(dtype, tol):
    pre = PRESETS["model_i"]
    p = draw_params(pre, torch.full((3,), 2), torch.arange(3), 5)
    nodes, weights = np.polynomial.legendre.leggauss(400)
    x, y = _points(4000, 4.0, 1)
    for i in range(3):
        length, ang = float(p.vortex_half_length[i]), float(p.vortex_angle[i])
        te2 = float(p.vortex_theta_e2[i])
        a = x * np.cos(ang) + y * np.sin(ang)
        b = -x * np.sin(ang) + y * np.cos(ang)
        dist = np.where(np.abs(a) <= length, np.abs(b), np.hypot(np.abs(a) - length, b))
        far = dist > 0.1  # Gauss-Legendre with 400 nodes converges there
        kws = [{"theta_E": np.sqrt(te2 * w / 2), "center_x": s * length * np.cos(ang),
                "center_y": s * length * np.sin(ang)} for s, w in zip(nodes, weights, strict=True)]
        ours = lensing.line_segment(_t(x[far], dtype), _t(y[far], dtype), _t(te2, dtype),
                                    _t(length, dtype), _t(ang, dtype), 0.0, 0.0)
        _compare(["POINT_MASS"] * 400, kws, ours, x[far], y[far], tol)


def _image_error(pre, params, kind_rows, ref_kwargs=None):
    ours = render_noiseless(pre, params).double().numpy()
    worst = 0.0
    for kind, rows in kind_rows.items():
        ref = LenstronomyReference(pre, kind, **(ref_kwargs or {}))
        for i in rows:
            want = ref.image(params, i)
            worst = max(worst, np.abs(ours[i] - want).max() / want.max())
    return worst


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_full_images_match_lenstronomy(name):
    """Every class, noiseless, float32, incl. TNFW subhalos and the point-mass vortex."""
    for over in ({"vortex_profile": "point_masses"}, {"sub_profile": "tnfw"}):
        pre = get_preset(name, **over)
        for seed in (0, 1):
            params, labels = make_params(pre, "multiclass", 0, 6, seed)
            rows = {int(k): torch.nonzero(params.kind == k).flatten().tolist() for k in (0, 1, 2)}
            if "sub_profile" in over:
                rows = {1: rows[1]}
            err = _image_error(pre, params, rows)
            assert err < 1e-5, f"{name} {over} seed {seed}: {err:.2e} of the peak"


def test_full_images_with_supersampling_and_odd_grid():
    pre = get_preset("model_ii", num_pix=33, supersampling=3)
    params, _ = make_params(pre, "multiclass", 0, 3, 4)
    rows = {int(params.kind[i]): [i] for i in range(3) if int(params.kind[i]) != 2}
    assert _image_error(pre, params, rows) < 1e-5


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_vortex_line_images_away_from_the_line(name):
    """Exact segment vs 600 Gauss-Legendre point masses, no PSF, pixels > 0.15" off it."""
    pre = get_preset(name, psf_fwhm=0.0)
    p = draw_params(pre, torch.full((2,), 2), torch.arange(2), 9)
    ours = render_noiseless(pre, p).double().numpy()
    ref = LenstronomyReference(pre, 2, line_nodes=600)
    n, d = pre.num_pix, pre.pixel_scale
    c = (np.arange(n) - (n - 1) / 2) * d
    x, y = np.meshgrid(c, c)
    for i in range(2):
        length, ang = float(p.vortex_half_length[i]), float(p.vortex_angle[i])
        a = x * np.cos(ang) + y * np.sin(ang)
        b = -x * np.sin(ang) + y * np.cos(ang)
        dist = np.where(np.abs(a) <= length, np.abs(b), np.hypot(np.abs(a) - length, b))
        want = ref.image(p, i)
        far = dist > 0.15
        err = np.abs(ours[i] - want)[far].max() / want.max()
        assert err < 1e-5, f"{name} image {i}: {err:.2e}"
