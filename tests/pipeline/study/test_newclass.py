"""New-class fine-tuning: class removal, k per class, weight transfer, the metrics it logs."""

from __future__ import annotations

import torch

from pipeline.config import RunConfig
from pipeline.data.bundle import DataBundle, Split
from pipeline.study import protocol
from pipeline.study.newclass import k_per_class, new_class_study, transfer_checkpoint, without_class

TINY = {"model.name": "eqcvt_stem", "model.fields": 2, "model.embed_dim": 8, "model.heads": 1,
        "model.depth": 1, "model.stem_blocks": 1, "model.kernel_size": 3,
        "model.head_hidden": 8, "train.epochs": 1, "train.batch_size": 8, "train.device": "cpu",
        "data.task": "multiclass", "data.n_train": 36, "data.n_val": 12, "data.n_test": 12,
        "data.img_size": 24}


def _split(labels):
    y = torch.tensor(labels)
    return Split(torch.arange(len(y), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2),
                 y, torch.zeros(len(y), 0))


def test_without_class_and_k_per_class():
    s = _split([0, 1, 2, 2, 1, 0, 2])
    b = DataBundle("multiclass", ("a", "b", "c"), (1, 2, 2), s, s, s, None, {})
    cut = without_class(b, 1)
    assert cut.classes == ("a", "c") and cut.train.labels.tolist() == [0, 1, 1, 0, 1]
    assert cut.train.images[:, 0, 0, 0].tolist() == [0, 2, 3, 5, 6]
    few = k_per_class(s, 2, 3)
    assert few.labels.tolist() == [0, 1, 2, 2, 1, 0]
    assert k_per_class(s, 1, 3).images[:, 0, 0, 0].tolist() == [0, 1, 2]


def test_transfer_keeps_the_trunk_and_resizes_the_head(tmp_path):
    cfg = RunConfig.from_flat(TINY)
    full = protocol.open_for_seed(cfg.data, 0)
    pre = protocol.train(cfg, without_class(full, 2), tmp_path / "pre")
    init = transfer_checkpoint(protocol.best_checkpoint(pre), cfg, full, tmp_path / "init")
    src = protocol.load_weights(protocol.best_checkpoint(pre))
    dst = protocol.load_weights(init)
    assert set(dst) == set(protocol.build_model(cfg, full).state_dict())
    same = [k for k in dst if dst[k].shape == src[k].shape]
    changed = [k for k in dst if dst[k].shape != src[k].shape]
    assert changed and all(torch.equal(dst[k], src[k]) for k in same)
    assert all(dst[k].shape[0] == 3 for k in changed)  # the 3-class output layer


def test_new_class_study_reports_accuracy_per_k(tmp_path):
    cfg = RunConfig.from_flat(TINY)
    bundle = protocol.open_for_seed(cfg.data, 0)
    out = new_class_study(cfg, bundle, {"k": [2, 8], "hold_out": "axion"}, tmp_path)
    assert set(out) == {"new_class_acc_k2", "new_class_acc_k8", "new_class_heldout_acc_k2",
                        "new_class_heldout_acc_k8"}
    assert all(0.0 <= v <= 1.0 for v in out.values())
