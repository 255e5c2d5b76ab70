"""Checkpoint directories: contents, RNG state, and a save that a crash cannot lose."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from pipeline import checkpoints, optim
from tests.pipeline.test_engine import TINY, _TinyNet, cfg_of


def _save(path, model, epoch):
    cfg = cfg_of()
    opt = optim.build_optimizer(model, cfg.train)
    sched = optim.build_scheduler(opt, cfg.train, steps_per_epoch=1)
    return checkpoints.save_checkpoint(
        path, cfg=cfg, model_name=TINY, kwargs={}, model=model, optimizer=opt,
        scheduler=sched, epoch=epoch, global_step=epoch, history=[{"epoch": float(epoch)}],
    )


def _fail_once_moving_into(monkeypatch, target):
    """Simulate a crash at the dangerous point: the rename that puts the new checkpoint at
    `target` raises (whatever the old one's fate was by then)."""
    calls = {"n": 0}
    real_rename, real_replace = os.rename, os.replace

    def guarded(real):
        def move(src, dst, *a, **k):
            if os.fspath(dst) == os.fspath(target) and calls["n"] == 0:
                calls["n"] += 1
                raise OSError("simulated crash while swapping the checkpoint in")
            return real(src, dst, *a, **k)
        return move

    monkeypatch.setattr(os, "rename", guarded(real_rename))
    monkeypatch.setattr(os, "replace", guarded(real_replace))
    return calls


def test_crash_during_the_swap_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    first = _TinyNet()
    _save(path, first, epoch=1)
    calls = _fail_once_moving_into(monkeypatch, path)
    with pytest.raises(OSError, match="simulated crash"):
        _save(path, _TinyNet(head_hidden=8, dropout=0.1), epoch=2)
    assert calls["n"] == 1
    monkeypatch.undo()
    state = checkpoints.load_checkpoint(path)  # the previous one, whole
    assert state["epoch"] == 1
    assert all(torch.equal(state["model"][k], v) for k, v in first.state_dict().items())
    # the next save repairs the pair and leaves nothing beside the checkpoint
    _save(path, _TinyNet(), epoch=3)
    assert checkpoints.load_checkpoint(path)["epoch"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_crash_before_the_cleanup_reads_the_new_checkpoint(tmp_path, monkeypatch):
    """A crash after the swap but before the moved-aside copy is removed: the new checkpoint
    is the one read, and the next save drops the stale copy."""
    path = tmp_path / "ckpt"
    _save(path, _TinyNet(), epoch=1)
    real_rmtree = checkpoints.shutil.rmtree

    def rmtree(p, *a, **k):
        if str(p).endswith(".old"):
            raise OSError("simulated crash before the cleanup")
        return real_rmtree(p, *a, **k)

    monkeypatch.setattr(checkpoints.shutil, "rmtree", rmtree)
    with pytest.raises(OSError, match="before the cleanup"):
        _save(path, _TinyNet(), epoch=2)
    monkeypatch.undo()
    assert (tmp_path / "ckpt.old").is_dir()
    assert checkpoints.load_checkpoint(path)["epoch"] == 2
    _save(path, _TinyNet(), epoch=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    _save(path, _TinyNet(), epoch=1)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        _save(path, _TinyNet(), epoch=2)
    monkeypatch.undo()
    assert checkpoints.load_checkpoint(path)["epoch"] == 1


def test_rng_state_round_trip():
    checkpoints.seed_everything(3)
    state = checkpoints.rng_state()
    expect = (random.random(), float(np.random.rand()), float(torch.rand(())))
    checkpoints.seed_everything(99)
    checkpoints.set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expect


def test_load_checkpoint_names_a_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="state.pt"):
        checkpoints.load_checkpoint(tmp_path / "nothing")
