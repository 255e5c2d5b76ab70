"""A seed changes the training images; validation and test stay fixed."""

from __future__ import annotations

import torch

from pipeline.config import DataConfig
from pipeline.study.protocol import open_for_seed, selection_metric, training_description


def test_seed_changes_training_images_not_val_or_test():
    cfg = DataConfig(n_train=8, n_val=4, n_test=4, img_size=16)
    a, b = open_for_seed(cfg, 0), open_for_seed(cfg, 1)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.test.images, b.test.images)
    assert not torch.equal(a.train.images, b.train.images)
    assert torch.equal(open_for_seed(cfg, 1).train.images, b.train.images)  # deterministic
    assert len(b.train) == 8 and len(b.val) == 4 and len(b.test) == 4
    assert b.manifest["counts"] == a.manifest["counts"] == {
        s: {"total": n} for s, n in (("val", 4), ("train", 8), ("test", 4))}
    assert b.manifest["train_data_seed"] != cfg.seed


def test_on_the_fly_stream_follows_the_seed_and_is_named():
    cfg = DataConfig(n_train=8, n_val=4, n_test=4, img_size=16, on_the_fly=True)
    a, b = open_for_seed(cfg, 0, "auto"), open_for_seed(cfg, 2, "auto")
    assert a.train is None and torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.stream(0, 4)[0], b.stream(0, 4)[0])
    assert "train+val" not in training_description(cfg)
    assert "stream" in training_description(cfg)
    assert selection_metric("regression") == ("val_mse", "min")
