"""A small multiclass dataset written through write_shards, shared by the shard tests."""

from __future__ import annotations

import numpy as np

from pipeline.data.shard_writer import write_shards
from pipeline.data.splits import assign_splits

CLASSES = ("axion", "cdm", "no_sub")


def sample_data(n: int = 60, size: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, 1, size, size), dtype=np.float32)
    labels = np.arange(n) % 3
    mass = np.where(labels == 0, rng.uniform(-24, -22, n), np.nan).astype(np.float32)
    params = {
        "shear": rng.random(n).astype(np.float32),
        "mass": rng.uniform(1e11, 1e13, n),  # float64 stays float64
        "noise_seed": rng.integers(2**62, 2**63 - 1, n, dtype=np.int64),  # exact, not float
    }
    return images, labels, {"log10_m_a": mass}, params


def write_sample(path, seed: int = 0, fractions=(0.8, 0.1, 0.1), **kw):
    images, labels, targets, params = sample_data()
    split = assign_splits(labels, fractions, seed)
    return write_shards(
        path,
        images=images,
        labels=labels,
        classes=CLASSES,
        split=split,
        task="multiclass",
        seed=seed,
        source={"kind": "test"},
        targets=targets,
        params=params,
        preset="model_ii",
        fractions=fractions,
        **kw,
    )
