"""Batched counter-based detector noise: exact Philox words on every path, per-image keys,
Poisson and normal draws with the right distributions, one vectorised call per batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from pipeline.data import noise, rng
from pipeline.data.simulate import get_preset

CPU = torch.device("cpu")


def test_philox_paths_agree_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    c = torch.randint(0, 2**32, (3000, 4), generator=g, dtype=torch.int64)
    key = (0xA4093822, 0x299F31D0)
    want = rng.philox4x32(c, key)
    k0, k1 = torch.tensor(key[0]), torch.tensor(key[1])
    for fn in (rng.philox_torch, rng.philox_words):  # torch int64 rounds; numpy on CPU
        assert torch.equal(torch.stack(fn(*c.T, k0, k1), dim=1), want), fn.__name__
    keys = torch.randint(0, 2**32, (2, 5, 1), generator=g, dtype=torch.int64)
    cols = torch.randint(0, 2**32, (4, 1, 40000), generator=g, dtype=torch.int64)
    a = rng.philox_words(*cols, *keys)  # (5, 40000) per-image keys, several numpy chunks
    b = rng.philox_torch(*cols, *keys)
    assert a[0].shape == (5, 40000) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _keys(seeds):
    return noise.image_keys(torch.tensor(seeds), CPU)


def test_noise_of_an_image_does_not_depend_on_its_batch():
    pre = get_preset("model_i", num_pix=20)
    model = torch.rand(6, 20, 20) * 0.05  # rates 0..150: both Poisson samplers
    seeds = torch.tensor([3, 2**62 + 1, 7, 11, 13, 17])
    t = torch.full((6,), 2000.0)
    whole = noise.add_noise(model, pre, t, seeds)
    parts = [noise.add_noise(model[s], pre, t[s], seeds[s]) for s in (slice(0, 1), slice(1, 6))]
    assert torch.equal(torch.cat(parts), whole)
    swapped = noise.add_noise(model.flip(0), pre, t, seeds.flip(0))
    assert torch.equal(swapped, whole.flip(0))  # a function of (key, pixel, rate) only


@pytest.mark.parametrize("lam", [0.05, 1.5, 6.0, 9.99, 10.0, 27.0, 900.0])
def test_poisson_counts_follow_the_poisson_law(lam):
    k0, k1 = _keys([5, 6, 7, 8])
    counts = noise.poisson(torch.full((4, 100, 100), lam, dtype=torch.float64), k0, k1)
    x = counts.flatten().numpy()
    assert np.array_equal(x, np.round(x)) and x.min() >= 0
    n = x.size
    assert abs(x.mean() - lam) < 5 * np.sqrt(lam / n)
    assert abs(x.var() / lam - 1) < 5 * np.sqrt(2 / n) + 5 / np.sqrt(n * lam)
    lo, hi = int(stats.poisson.ppf(0.01, lam)), int(stats.poisson.ppf(0.99, lam))
    ks = np.arange(lo, hi + 1)
    observed = np.array([(x == k).sum() for k in ks])
    expected = n * stats.poisson.pmf(ks, lam)
    chi2 = (((observed - expected) ** 2) / expected).sum()
    assert stats.chi2.sf(chi2, len(ks)) > 1e-4, (chi2, len(ks))


def test_normals_are_standard_and_keyed():
    k0, k1 = _keys([1, 2])
    z = noise.normals(k0, k1, 50001, torch.float32)
    assert z.shape == (2, 50001) and z.dtype == torch.float32
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01
    assert stats.kstest(z[0].double().numpy(), "norm").pvalue > 1e-4
    assert not torch.allclose(z[0], z[1])
    assert torch.equal(noise.normals(k0[1:], k1[1:], 50001, torch.float32)[0], z[1])


def test_one_vectorised_draw_per_batch(monkeypatch):
    """No per-image generator: a Gaussian-noise batch makes one Philox call, whatever its size."""
    calls = []
    real = noise.philox_words
    monkeypatch.setattr(noise, "philox_words", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    pre = get_preset("model_ii", num_pix=16)
    for b in (1, 64):
        calls.clear()
        noise.add_noise(torch.rand(b, 16, 16), pre, torch.ones(b), torch.arange(b))
        assert len(calls) == 1


@pytest.mark.slow  # two torch.compile graphs, ~30 s on the 2-core CI machine
def test_compiled_noise_is_the_same_noise():
    model = torch.rand(3, 20, 20) * 0.05
    seeds, t = torch.tensor([1, 2, 3]), torch.full((3,), 2000.0)
    for name in ("model_i", "model_ii"):  # Poisson (both samplers) and Gaussian
        pre = get_preset(name, num_pix=20)
        eager = noise.add_noise(model, pre, t, seeds)
        compiled = noise.add_noise(model, pre, t, seeds, compile=True)
        assert torch.allclose(compiled, eager, rtol=0, atol=1e-6), name
