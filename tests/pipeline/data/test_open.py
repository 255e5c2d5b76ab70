"""open_run_data: a run's data, opened once by the caller of engine.fit."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import RunConfig
from pipeline.data.open import open_run_data


def _cfg(**flat):
    base = {"data.n_train": 4, "data.n_val": 2, "data.n_test": 2, "data.seed": 3,
            "data.img_size": 32, "train.device": "cpu"}
    return RunConfig.from_flat({**base, **flat})


def test_fixed_splits_on_the_cpu_whatever_the_training_device():
    b = open_run_data(_cfg(**{"train.device": "cuda"}))  # nothing touches the device
    assert b.train.images.device == torch.device("cpu") and len(b.train) == 4
    assert b.image_shape == (1, 32, 32)


def test_on_the_fly_streams_on_the_training_device():
    b = open_run_data(_cfg(**{"data.on_the_fly": True}))
    assert b.train is None
    x, _, _ = b.stream(0, 2)
    assert x.device == torch.device("cpu") and x.shape == (2, 1, 32, 32)
    on_cuda = _cfg(**{"data.on_the_fly": True, "train.device": "cuda"})
    if torch.cuda.is_available():
        assert open_run_data(on_cuda).stream(0, 2)[0].device.type == "cuda"
    else:
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            open_run_data(on_cuda)
