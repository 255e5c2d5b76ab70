"""Adaptability to a new class: pre-train on every class but one, then fine-tune on all classes
with k labelled training images per class; test accuracy against k (`new_class_acc_k<k>`),
and on the new class's test images alone (`new_class_heldout_acc_k<k>`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig
from ..data.splits import Split
from . import protocol


def _keep(split: Split, mask: torch.Tensor, relabel: torch.Tensor | None = None) -> Split:
    labels = split.labels[mask]
    if relabel is not None:
        labels = relabel[labels]
    return Split(split.images[mask], labels, split.targets[mask])


def without_class(bundle: Any, held: int) -> Any:
    """The bundle with class `held` removed from every split, labels renumbered."""
    n = len(bundle.classes)
    relabel = torch.tensor([i - (i > held) for i in range(n)], dtype=torch.int64)
    relabel[held] = -1

    def cut(s: Split) -> Split:
        return _keep(s, s.labels != held, relabel)

    classes = tuple(c for i, c in enumerate(bundle.classes) if i != held)
    return dataclasses.replace(bundle, classes=classes, train=cut(bundle.train),
                               val=cut(bundle.val), test=cut(bundle.test), stream=None)


def k_per_class(split: Split, k: int, n_classes: int) -> Split:
    """The first k images of each class (fewer where a class has fewer)."""
    idx = torch.cat([torch.nonzero(split.labels == c).flatten()[:k] for c in range(n_classes)])
    idx = idx.sort().values
    return Split(split.images[idx], split.labels[idx], split.targets[idx])


def transfer_checkpoint(src: Path, cfg: RunConfig, bundle: Any, dst: Path) -> Path:
    """A weights-only checkpoint of the `bundle`-shaped model: every tensor whose shape
    matches is taken from `src`, the rest (the new output layer) keeps its fresh init."""
    model = protocol.build_model(cfg, bundle)
    model.train()  # escnn's state-dict keys in train mode, as checkpoints store them
    target = model.state_dict()
    source = protocol.load_weights(src)
    merged = {k: (source[k] if k in source and source[k].shape == v.shape else v)
              for k, v in target.items()}
    return protocol.write_weights(dst, cfg, bundle, merged)


def new_class_study(cfg: RunConfig, bundle: Any, spec: Mapping[str, Any], work: Path
                    ) -> dict[str, float]:
    classes = tuple(bundle.classes)
    if len(classes) < 3:
        raise ValueError(f"new-class fine-tuning needs >= 3 classes, the data has {classes}")
    held_name = spec.get("hold_out") or classes[-1]
    if held_name not in classes:
        raise ValueError(f"new_class.hold_out {held_name!r} is not one of {classes}")
    held = classes.index(held_name)
    if bundle.train is None:  # on-the-fly: a fixed draw of n_train images from the stream
        bundle = dataclasses.replace(bundle, train=Split(*bundle.stream(0, cfg.data.n_train)))
    pre = protocol.train(cfg, without_class(bundle, held), work / "pretrain")
    epochs = int(spec.get("epochs") or cfg.train.epochs)
    ft_cfg = cfg.with_updates({"train.epochs": epochs})
    out: dict[str, float] = {}
    for k in spec["k"]:
        few = dataclasses.replace(bundle, train=k_per_class(bundle.train, int(k), len(classes)),
                                  stream=None)
        init = transfer_checkpoint(protocol.best_checkpoint(pre), ft_cfg, few,
                                   work / f"init_k{k}")
        res = protocol.train(ft_cfg, few, work / f"k{k}", init_from=init)
        model = protocol.best_model(res)
        m = protocol.evaluate_split(model, bundle.test, bundle.task, classes, "test")
        out[f"new_class_acc_k{k}"] = m["test_acc"]
        held_test = _keep(bundle.test, bundle.test.labels == held)
        if len(held_test):
            h = protocol.evaluate_split(model, held_test, bundle.task, classes, "test")
            out[f"new_class_heldout_acc_k{k}"] = h["test_acc"]
    return out
