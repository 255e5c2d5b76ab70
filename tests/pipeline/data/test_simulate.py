"""Simulator API, determinism, priors, cosmology and RNG (no lenstronomy here)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from pipeline.data import noise, rng
from pipeline.data.cosmology import FlatLCDM, LensingGeometry
from pipeline.data.priors import draw_params
from pipeline.data.simulate import (
    PRESETS,
    TASK_CLASSES,
    SimPreset,
    get_preset,
    make_params,
    render_noiseless,
    simulate,
)

SMALL = {"model_i": {"num_pix": 40}, "model_ii": {"num_pix": 24}, "model_iii": {"num_pix": 24}}


def small(name: str, **kw) -> SimPreset:
    return get_preset(name, **{**SMALL[name], **kw})


# -- presets and tasks --------------------------------------------------------------------
def test_presets_and_tasks_follow_the_contract():
    assert set(PRESETS) == {"model_i", "model_ii", "model_iii"}
    assert TASK_CLASSES == {
        "binary": ("no_sub", "sub"),
        "multiclass": ("axion", "cdm", "no_sub"),
        "regression": ("axion",),
    }
    shapes = {k: (p.num_pix, p.pixel_scale) for k, p in PRESETS.items()}
    assert shapes == {"model_i": (150, 0.05), "model_ii": (64, 0.101), "model_iii": (64, 0.08)}
    assert PRESETS["model_i"].noise == "poisson" and PRESETS["model_ii"].noise == "gaussian"
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["model_i"].num_pix = 3  # type: ignore[misc]


def test_get_preset_overrides_and_errors():
    p = get_preset("model_ii", randomize_orientation=False, sub_mass_range=[1e7, 1e9])
    assert p.sub_mass_range == (1e7, 1e9) and not p.randomize_orientation
    assert hash(p)  # lists became tuples: presets stay hashable (render caches)
    with pytest.raises(KeyError, match="model_iv"):
        get_preset("model_iv")
    with pytest.raises(TypeError, match="pixel_scal"):
        get_preset("model_i", pixel_scal=0.1)
    with pytest.raises(ValueError, match="sub_profile"):
        get_preset("model_i", sub_profile="sis")
    with pytest.raises(ValueError, match="source_amp"):
        get_preset("model_ii", source_amp=3.0)


def test_background_noise_matches_lenstronomy_formula():
    p = PRESETS["model_ii"]
    t = 565.0 * 4
    sky = 10 ** (-(22.35 - 24.0) / 2.5) * 0.101**2 * t
    assert p.background_noise() == pytest.approx(math.sqrt(4 * 4.2**2 + sky) / t, rel=1e-12)
    assert PRESETS["model_i"].background_noise() == 0.01


# -- simulate -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_simulate_multiclass_batch(name):
    pre = small(name)
    b = simulate(pre, "multiclass", 3, 6, seed=5)
    n = pre.num_pix
    assert b.images.shape == (6, 1, n, n) and b.images.dtype == torch.float32
    assert b.class_names == ("axion", "cdm", "no_sub")
    assert b.labels.tolist() == [0, 1, 2, 0, 1, 2]  # global index % 3
    assert torch.all(b.images >= 0)
    assert torch.allclose(b.images.amax(dim=(1, 2, 3)), torch.ones(6))
    m_a = b.targets["log10_m_a"]
    assert torch.isnan(m_a[b.labels != 0]).all()
    assert ((m_a[b.labels == 0] >= -24) & (m_a[b.labels == 0] <= -22)).all()
    theta_e = b.targets["einstein_radius"]  # lens mass 10^U(11.8, 12.2) minus substructure
    assert ((theta_e > 1.30) & (theta_e < 2.10)).all() and theta_e.std() > 0.01
    frac = b.targets["sub_mass_fraction"]
    assert ((frac[b.labels == 0] > 0.018) & (frac[b.labels == 0] < 0.05)).all()  # 3e10 / M
    assert (frac[b.labels == 2] == 0).all() and (frac[b.labels == 1] > 0).all()
    faithful = simulate(get_preset(name + "_deeplense", **SMALL[name]), "multiclass", 3, 6, 5)
    theta_e = faithful.targets["einstein_radius"]
    assert torch.allclose(theta_e, torch.full((6,), 1.6645), atol=1e-3)
    frac = faithful.targets["sub_mass_fraction"]
    assert torch.allclose(frac[faithful.labels == 0], torch.full((2,), 0.03))  # 3e10 / 1e12
    assert b.params["index"].tolist() == list(range(3, 9))
    assert b.params["n_subhalos"].tolist() == [0, 25, 0, 0, 25, 0]
    assert all(v.shape == (6,) for v in b.params.values())
    assert len(b) == 6


def test_binary_and_regression_tasks():
    b = simulate(small("model_iii"), "binary", 0, 4, seed=0)
    assert b.class_names == ("no_sub", "sub") and b.labels.tolist() == [0, 1, 0, 1]
    assert b.params["n_subhalos"].tolist() == [0, 25, 0, 25]  # "sub" = cdm subhalos
    r = simulate(small("model_iii"), "regression", 0, 3, seed=0)
    assert r.labels.tolist() == [0, 0, 0] and torch.isfinite(r.targets["log10_m_a"]).all()
    with pytest.raises(ValueError, match="task"):
        simulate("model_ii", "segmentation", 0, 2, seed=0)
    empty = simulate(small("model_ii"), "binary", 0, 0, seed=0)
    assert empty.images.shape == (0, 1, 24, 24) and empty.labels.numel() == 0


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_deterministic_whatever_the_batch_split(name):
    pre = small(name)
    whole = simulate(pre, "multiclass", 0, 7, seed=11)
    again = simulate(pre, "multiclass", 0, 7, seed=11)
    assert torch.equal(whole.images, again.images)
    parts = [simulate(pre, "multiclass", s, c, seed=11) for s, c in ((0, 2), (2, 1), (3, 4))]
    imgs = torch.cat([p.images for p in parts])
    assert torch.allclose(imgs, whole.images, atol=1e-6, rtol=0)
    for key in whole.params:
        assert torch.equal(torch.cat([p.params[key] for p in parts]), whole.params[key]), key
    other = simulate(pre, "multiclass", 0, 7, seed=12)
    assert not torch.allclose(other.images, whole.images)


def test_parameters_do_not_depend_on_device_or_dtype_and_float64_renders():
    pre = small("model_ii")
    a = simulate(pre, "multiclass", 0, 3, seed=2, dtype=torch.float64, noise=False)
    b = simulate(pre, "multiclass", 0, 3, seed=2, noise=False)
    assert a.images.dtype == torch.float64
    assert torch.allclose(a.images.float(), b.images, atol=1e-5)
    assert torch.equal(a.params["source_x"], b.params["source_x"])


def test_noiseless_unnormalised_path_and_noise_level():
    pre = get_preset("model_ii", num_pix=32)
    clean = simulate(pre, "binary", 0, 4, seed=3, noise=False, normalize=False)
    params, _ = make_params(pre, "binary", 0, 4, 3)
    assert torch.equal(clean.images[:, 0], render_noiseless(pre, params))
    noisy = simulate(pre, "binary", 0, 4, seed=3, normalize=False)
    resid = (noisy.images - clean.images)[:, 0]
    dark = clean.images[:, 0] < 1e-3 * clean.images.amax()
    bkg = pre.background_noise()
    assert resid[dark].std().item() == pytest.approx(bkg, rel=0.1)


def test_poisson_noise_has_poisson_variance():
    pre = get_preset("model_i", num_pix=48, background_rms=1e-9)
    clean = simulate(pre, "binary", 0, 2, seed=1, noise=False, normalize=False).images[:, 0]
    noisy = simulate(pre, "binary", 0, 2, seed=1, normalize=False).images[:, 0]
    params, _ = make_params(pre, "binary", 0, 2, 1)
    t = params.exposure_time.float()[:, None, None]
    counts, lam = noisy * t, clean * t
    assert torch.allclose(counts, counts.round(), atol=1e-2)  # integer counts
    bright = lam > 50
    z = (counts - lam)[bright] / lam[bright].sqrt()
    assert abs(z.mean().item()) < 0.1 and z.std().item() == pytest.approx(1.0, abs=0.1)


def test_randomize_orientation_flag():
    fixed = get_preset("model_ii", randomize_orientation=False)
    p, _ = make_params(fixed, "binary", 0, 6, 0)
    assert torch.all(p.lens_e1 == 0.1) and torch.all(p.lens_e2 == 0.0)
    assert torch.all(p.shear_gamma1 == 0.05) and torch.all(p.source_e2 == 0.1)
    rand = get_preset("model_ii")
    q, _ = make_params(rand, "binary", 0, 64, 0)
    mod = torch.hypot(q.lens_e1, q.lens_e2)
    assert torch.allclose(mod, torch.full_like(mod, 0.1))
    assert q.lens_e2.abs().max() > 0.05 and q.shear_gamma2.abs().max() > 0.025
    src = torch.hypot(q.source_e1, q.source_e2)
    assert torch.allclose(src, torch.full_like(src, math.hypot(-0.1, 0.1)))


def test_randomize_einstein_radius():
    pre = get_preset("model_ii", mass_conserving=False)
    assert pre.randomize_einstein_radius  # the default lens
    p, _ = make_params(pre, "binary", 0, 200, 0)
    lo, hi = (pre.geometry.einstein_radius(10.0**m) for m in pre.log10_main_lens_mass_range)
    assert lo <= p.theta_e.min() and p.theta_e.max() <= hi and p.theta_e.std() > 0.05
    fixed, _ = make_params(get_preset("model_ii_deeplense"), "binary", 0, 20, 0)
    assert torch.all(fixed.theta_e == fixed.theta_e[0])


@pytest.mark.parametrize("randomize", [True, False])
def test_mass_conserving_lens_mass_does_not_depend_on_the_class(randomize):
    """The same image index drawn as no_sub, cdm and axion has the same total lens mass."""
    n, idx = 64, torch.arange(64)
    for conserving in (True, False):
        pre = get_preset("model_ii", randomize_einstein_radius=randomize,
                         mass_conserving=conserving)
        p = [draw_params(pre, torch.full((n,), k), idx, 3) for k in range(3)]
        total = [q.main_lens_mass + q.sub_mass_total for q in p]
        assert (p[1].sub_mass_total > 0).all() and (p[2].sub_mass_total == 3e10).all()
        if conserving:
            for t in total[1:]:
                torch.testing.assert_close(t, total[0], rtol=1e-12, atol=0)
            assert (p[1].main_lens_mass < p[0].main_lens_mass).all()
        else:  # DeepLense: the substructure comes on top of one main lens
            torch.testing.assert_close(p[1].main_lens_mass, p[0].main_lens_mass)
            assert (total[1] > total[0]).all() and (total[2] > total[0]).all()
    assert get_preset("model_ii_deeplense").mass_conserving is False


def test_deeplense_variants_and_names():
    from pipeline.data.presets import DEEPLENSE_LENS, preset_names

    assert preset_names() == sorted([*PRESETS, *(f"{k}_deeplense" for k in PRESETS)])
    for name, base in PRESETS.items():
        faithful = get_preset(f"{name}_deeplense")
        assert all(getattr(faithful, k) == v for k, v in DEEPLENSE_LENS.items())
        assert dataclasses.replace(faithful, name=name, **{k: getattr(base, k)
                                                           for k in DEEPLENSE_LENS}) == base
    with pytest.raises(KeyError, match="model_ii_deeplense"):
        get_preset("model_iv")


def test_subhalo_priors_follow_the_recipe():
    pre = PRESETS["model_ii"]
    n = 2000
    p = draw_params(pre, torch.ones(n, dtype=torch.int64), torch.arange(n), 4)
    m = p.sub_mass.flatten().numpy()
    lo, hi = pre.sub_mass_range
    assert m.min() >= lo and m.max() <= hi
    # p(m) ~ m^-0.9: CDF(m) = (m^0.1 - lo^0.1) / (hi^0.1 - lo^0.1); check the median
    med = (0.5 * (hi**0.1 - lo**0.1) + lo**0.1) ** 10
    assert np.median(m) == pytest.approx(med, rel=0.05)
    r = torch.hypot(p.sub_x, p.sub_y)
    assert r.min() >= 0.25 and r.max() <= 2.0 and abs(r.mean().item() - 1.125) < 0.02
    assert torch.allclose(p.sub_theta_e, pre.geometry.einstein_radius(p.sub_mass))
    frac = p.sub_mass_fraction
    assert torch.allclose(frac, p.sub_mass.sum(1) / p.main_lens_mass)


def test_axion_length_and_mass_relation():
    pre = PRESETS["model_ii"]
    p = draw_params(pre, torch.full((50,), 2), torch.arange(50), 0)
    assert torch.allclose(p.vortex_half_length, 0.03e-22 / 10.0**p.log10_m_a)
    theta2 = pre.geometry.einstein_radius(3e10) ** 2
    assert torch.allclose(p.vortex_theta_e2, torch.full((50,), theta2, dtype=torch.float64))
    q = draw_params(pre, torch.zeros(5, dtype=torch.int64), torch.arange(5), 0)
    assert torch.isnan(q.log10_m_a).all() and (q.vortex_theta_e2 == 0).all()


@pytest.mark.slow
def test_compiled_render_matches_eager():
    pre = get_preset("model_iii", num_pix=16, n_subhalos=3)
    params, _ = make_params(pre, "multiclass", 1, 10, 0)
    params = params.select(torch.arange(0, 10, 3))  # four cdm images: one compiled graph
    eager = render_noiseless(pre, params)
    compiled = render_noiseless(pre, params, compile=True)
    assert torch.allclose(eager, compiled, atol=1e-5 * eager.max().item(), rtol=0)  # float32
    # dynamic batch dimension: one graph, the same per-image loops for any split
    parts = [render_noiseless(pre, params.select(torch.tensor(r)), compile=True)
             for r in ([0], [1, 2], [3])]
    assert torch.equal(torch.cat(parts), compiled)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_cuda_matches_cpu(name):
    pre = PRESETS[name]
    params, _ = make_params(pre, "multiclass", 0, 6, 0)
    want = render_noiseless(pre, params, dtype=torch.float64)
    for compile in (False, True) if name == "model_ii" else (False,):
        got = render_noiseless(pre, params, device="cuda", compile=compile).double().cpu()
        err = ((got - want).abs().amax(dim=(1, 2)) / want.amax(dim=(1, 2))).max().item()
        assert err < 1e-5, f"{name} compile={compile}: {err:.1e} of the peak"
    whole = simulate(pre, "multiclass", 0, 6, seed=3, device="cuda")
    parts = [simulate(pre, "multiclass", s, 3, seed=3, device="cuda") for s in (0, 3)]
    assert whole.images.is_cuda and whole.params["source_x"].is_cuda
    imgs = torch.cat([p.images for p in parts])
    assert torch.allclose(imgs, whole.images, atol=1e-5, rtol=0)
    cpu = simulate(pre, "multiclass", 0, 6, seed=3)
    assert torch.equal(cpu.params["source_x"], whole.params["source_x"].cpu())
    # counter-based noise: the same realisation on both devices, up to float rounding (a
    # Poisson pixel may move by one count where rounding crosses a sampler threshold)
    diff = (cpu.images - whole.images.cpu()).abs()
    flipped = (diff > 1e-3).float().mean().item()  # with device generators: nearly all
    assert flipped < 1e-3, f"{name}: {flipped:.1e} of the pixels, max {diff.max().item():.1e}"
    k0, k1 = noise.image_keys(torch.arange(4), torch.device("cuda"))
    on_gpu = [w.cpu() for w in rng.philox_words(torch.arange(9)[None].cuda(), k0 * 0, k0 * 0,
                                                k0 * 0, k0, k1)]
    k0, k1 = noise.image_keys(torch.arange(4), torch.device("cpu"))
    on_cpu = rng.philox_words(torch.arange(9)[None], k0 * 0, k0 * 0, k0 * 0, k0, k1)
    assert all(torch.equal(a, b) for a, b in zip(on_gpu, on_cpu, strict=True))


# -- RNG ------------------------------------------------------------------------------------
def test_philox_matches_random123_known_answers():
    c = torch.tensor(
        [[0, 0, 0, 0], [0xFFFFFFFF] * 4, [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344]]
    )
    keys = [(0, 0), (0xFFFFFFFF, 0xFFFFFFFF), (0xA4093822, 0x299F31D0)]
    want = [
        (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8),
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ]
    for row, key, w in zip(c, keys, want, strict=True):
        assert tuple(rng.philox4x32(row[None], key)[0].tolist()) == w


def test_uniforms_are_counter_based_and_uniform():
    idx = torch.arange(5000)
    u = rng.uniform(3, idx, 7, 4)
    assert torch.equal(u[1234:1240], rng.uniform(3, idx[1234:1240], 7, 4))
    assert (u > 0).all() and (u < 1).all()
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.003
    assert not torch.equal(u, rng.uniform(3, idx, 8, 4))
    assert not torch.equal(u, rng.uniform(4, idx, 7, 4))
    big = rng.uniform(0, torch.tensor([2**40 + 5]), 1, 2)
    assert big.shape == (1, 2)


# -- cosmology ------------------------------------------------------------------------------
def test_distances_match_astropy():
    from astropy import constants as const
    from astropy import units as u
    from astropy.cosmology import FlatLambdaCDM

    ref = FlatLambdaCDM(H0=70, Om0=0.3)
    ours = FlatLCDM(70.0, 0.3)
    for z in (0.1, 0.5, 1.0, 2.5):
        assert ours.angular_diameter_distance(z) == pytest.approx(
            ref.angular_diameter_distance(z).value, rel=1e-10
        )
    assert ours.angular_diameter_distance_z1z2(0.5, 1.0) == pytest.approx(
        ref.angular_diameter_distance_z1z2(0.5, 1.0).value, rel=1e-10
    )
    rho = ref.critical_density(0.5).to(u.Msun / u.Mpc**3).value
    assert ours.critical_density(0.5) == pytest.approx(rho, rel=1e-10)
    geo = LensingGeometry(ours, 0.5, 1.0)
    dl, ds = ref.angular_diameter_distance(0.5), ref.angular_diameter_distance(1.0)
    dls = ref.angular_diameter_distance_z1z2(0.5, 1.0)
    theta = np.sqrt(4 * const.G * 1e12 * u.Msun / const.c**2 * dls / (dl * ds)).decompose()
    assert geo.einstein_radius(1e12) == pytest.approx((theta * u.rad).to(u.arcsec).value, rel=1e-9)
    assert geo.einstein_radius(1e12) == pytest.approx(1.66, abs=0.01)  # SCIENCE.md
