"""engine.fit: the one training loop (tiny data, tiny models, a few seconds in all)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import eqcvt
from pipeline import checkpoints, engine
from pipeline.config import RunConfig
from pipeline.data.bundle import DataBundle, Split
from pipeline.evaluation import predict


@pytest.fixture(autouse=True)
def _fit_tempdir(tmp_path, monkeypatch):
    """fit() without checkpoint_root writes under tempfile's folder: keep it in tmp_path."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


TINY = "_engine_test_net"  # a throwaway model registered for these tests only
SIZE = 16


class _TinyNet(nn.Module):
    """Conv + BatchNorm + dropout: exercises norms (no weight decay) and the global RNG."""

    def __init__(self, in_channels=1, img_size=SIZE, classes=2, targets=0, head_hidden=8,
                 dropout=0.2, **_):
        super().__init__()
        out = targets or classes
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64, head_hidden), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(head_hidden, out),
        )
        self.scale = nn.Parameter(torch.ones(()))  # lets a test blow the loss up

    def forward(self, x):
        return self.body(x) * self.scale


def _engine_test_net(**overrides):
    return _TinyNet(**overrides)


if TINY not in eqcvt.list_models():
    eqcvt.register_model(_engine_test_net)


def make_split(n, *, size=SIZE, classes=2, regression=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = torch.rand(n, 1, size, size, generator=g) * 0.5
    images[:, :, : size // 2] += labels.view(-1, 1, 1, 1).float()  # learnable signal
    if regression:
        targets = images.mean(dim=(1, 2, 3)).unsqueeze(1)
        return Split(images, torch.zeros(n, dtype=torch.int64), targets)
    return Split(images, labels, torch.zeros(n, 0))


def make_bundle(task="binary", n_train=32, n_val=16, size=SIZE, stream=None):
    regression = task == "regression"
    classes = {"binary": ("no_sub", "sub"), "multiclass": ("axion", "cdm", "no_sub"),
               "regression": ("axion",)}[task]
    k = 1 if regression else len(classes)
    train = None if stream else make_split(n_train, size=size, classes=k, regression=regression)
    return DataBundle(
        task=task, classes=classes, image_shape=(1, size, size), train=train,
        val=make_split(n_val, size=size, classes=k, regression=regression, seed=1),
        test=make_split(n_val, size=size, classes=k, regression=regression, seed=2),
        stream=stream, manifest={},
    )


def cfg_of(**flat):
    base = {"model.name": TINY, "train.epochs": 2, "train.batch_size": 8, "train.lr": 1e-2,
            "train.device": "cpu", "train.eval_batch_size": 16, "train.num_threads": 1}
    return RunConfig.from_flat({**base, **flat})


class Recorder:
    def __init__(self, stop_at=None, attr=False):
        self.calls, self.stop_at, self.attr, self.should_stop = [], stop_at, attr, False

    def on_epoch_end(self, epoch, metrics, checkpoint_dir):
        assert (Path(checkpoint_dir) / checkpoints.STATE_FILE).is_file()
        self.calls.append((epoch, metrics, Path(checkpoint_dir)))
        if self.stop_at is not None and epoch >= self.stop_at:
            if self.attr:
                self.should_stop = True
            else:
                raise engine.StopTraining


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_fit_two_epochs_metrics_and_checkpoint_layout(tmp_path):
    rec = Recorder()
    res = engine.fit(cfg_of(), make_bundle(), [rec], checkpoint_root=tmp_path)
    assert res.epoch == 2 and len(res.history) == 2 and not res.stopped
    assert [c[0] for c in rec.calls] == [1, 2]
    m = res.metrics
    for key in ("epoch", "train_loss", "val_loss", "val_acc", "val_auc_micro", "val_auc_macro",
                "val_auc_no_sub", "val_auc_sub", "images_per_s", "epoch_time_s", "lr"):
        assert isinstance(m[key], float) and math.isfinite(m[key]), key
    assert m["epoch"] == 2.0 and 0 <= m["val_acc"] <= 1
    assert m["lr"] < 1e-2  # cosine decays within the run
    ckpt = res.checkpoint_dir
    assert ckpt == tmp_path / "epoch_0002" and rec.calls[-1][2] == ckpt
    assert {p.name for p in ckpt.iterdir()} == {
        checkpoints.STATE_FILE, checkpoints.CONFIG_FILE, checkpoints.MODEL_FILE,
        checkpoints.METRICS_FILE}
    assert json.loads((ckpt / checkpoints.CONFIG_FILE).read_text()) == cfg_of().to_flat()
    spec = json.loads((ckpt / checkpoints.MODEL_FILE).read_text())
    assert spec == {"name": TINY, "kwargs": {"in_channels": 1, "img_size": SIZE, "classes": 2,
                                             "targets": 0}}
    assert json.loads((ckpt / checkpoints.METRICS_FILE).read_text()) == pytest.approx(m)
    state = checkpoints.load_checkpoint(ckpt)
    assert state["epoch"] == 2 and state["global_step"] == 8
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert not (tmp_path / "epoch_0001").exists()  # keep_checkpoints=1
    assert not res.model.training
    # load_model rebuilds the network from model.json alone
    loaded = checkpoints.load_model(ckpt)
    x = make_split(4).images
    assert torch.equal(predict(loaded, x), predict(res.model, x))


def test_learns_something():
    res = engine.fit(cfg_of(**{"train.epochs": 4}), data=make_bundle(n_train=64))
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]


@pytest.mark.parametrize("model", [TINY, "eqcvt_stem"])
def test_resume_continues_identically(tmp_path, model):
    over = {"model.name": model, "train.epochs": 4, "train.augment": "rot90_flips",
            "train.warmup_epochs": 1}
    if model == "eqcvt_stem":
        if model not in eqcvt.list_models():
            pytest.skip("eqcvt_stem not registered yet")
        over.update({"model.group": "C4", "model.fields": 2, "model.stem_blocks": 1,
                     "model.kernel_size": 3, "model.embed_dim": 8, "model.depth": 1,
                     "model.heads": 1, "model.head_dim": 0, "model.head_hidden": 8,
                     "model.dropout": 0.2})
    cfg, data = cfg_of(**over), make_bundle()
    full = engine.fit(cfg, data=data, checkpoint_root=tmp_path / "a", keep_checkpoints=None)
    # scramble every global RNG: resume must restore them
    torch.manual_seed(123)
    resumed = engine.fit(cfg, data=data, resume_from=tmp_path / "a" / "epoch_0002",
                         checkpoint_root=tmp_path / "b")
    assert resumed.epoch == 4 and len(resumed.history) == 4
    assert resumed.history[:2] == full.history[:2]
    for a, b in zip(full.history[2:], resumed.history[2:], strict=True):
        for key in ("train_loss", "val_loss", "val_acc", "lr"):
            assert a[key] == b[key], key
    wa, wb = weights(full.model), weights(resumed.model)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_nan_loss_raises_naming_epoch_and_step():
    def stream(step, batch_size):
        images = torch.rand(batch_size, 1, SIZE, SIZE)
        if step >= 18:
            images[:] = float("nan")
        return images, torch.arange(batch_size) % 2, torch.zeros(batch_size, 0)

    cfg = cfg_of(**{"train.steps_per_epoch": 20, "train.epochs": 1})
    with pytest.raises(engine.NonFiniteLossError, match="epoch 1, step 19") as info:
        engine.fit(cfg, data=make_bundle(stream=stream))
    assert info.value.epoch == 1 and info.value.step == 19 and math.isnan(info.value.value)


def test_diverging_lr_raises():
    cfg = cfg_of(**{"train.lr": 1e30, "train.optimizer": "sgd", "train.epochs": 3})
    with pytest.raises(engine.NonFiniteLossError, match="non-finite training loss"):
        engine.fit(cfg, data=make_bundle())


def test_regression_path():
    res = engine.fit(cfg_of(), data=make_bundle("regression"))
    m = res.metrics
    assert res.task == "regression"
    assert {"val_mse", "val_mae", "val_loss"} <= set(m) and "val_acc" not in m
    assert m["val_loss"] == m["val_mse"] and math.isfinite(m["val_mae"])
    assert res.model.body[-1].out_features == 1


def test_multiclass_per_class_auc():
    res = engine.fit(cfg_of(**{"train.epochs": 1}), data=make_bundle("multiclass"))
    assert {"val_auc_axion", "val_auc_cdm", "val_auc_no_sub"} <= set(res.metrics)


def test_on_the_fly_stream_steps():
    calls = []

    def stream(step, batch_size):
        calls.append((step, batch_size))
        g = torch.Generator().manual_seed(step)
        labels = torch.arange(batch_size) % 2
        return torch.rand(batch_size, 1, SIZE, SIZE, generator=g), labels, torch.zeros(
            batch_size, 0)

    cfg = cfg_of(**{"train.steps_per_epoch": 3})
    res = engine.fit(cfg, data=make_bundle(stream=stream))
    assert calls == [(s, 8) for s in range(6)]
    assert res.metrics["images_per_s"] > 0
    # without steps_per_epoch: n_train // batch_size
    calls.clear()
    engine.fit(cfg_of(**{"train.epochs": 1, "data.n_train": 16}), data=make_bundle(stream=stream))
    assert calls == [(0, 8), (1, 8)]


@pytest.mark.parametrize("attr", [False, True])
def test_callbacks_stop_training(attr):
    rec = Recorder(stop_at=1, attr=attr)
    other = Recorder()
    res = engine.fit(cfg_of(**{"train.epochs": 5}), make_bundle(), [rec, other])
    assert res.stopped and res.epoch == 1
    assert len(other.calls) == 1  # every callback sees the last epoch


def test_run_until_stopped_ignores_the_checkpoint_epoch_count(tmp_path):
    cfg, data = cfg_of(**{"train.scheduler": "constant"}), make_bundle()
    first = engine.fit(cfg, data=data, checkpoint_root=tmp_path / "a")
    assert first.epoch == 2 == cfg.train.epochs
    # a normal run is done: nothing more to train
    again = engine.fit(cfg, data=data, resume_from=first.checkpoint_dir)
    assert again.epoch == 2 and len(again.history) == 2
    # a PBT trial keeps going until a callback (Tune) stops it
    rec = Recorder(stop_at=5)
    pbt = engine.fit(cfg, data, [rec], resume_from=first.checkpoint_dir,
                     run_until_stopped=True)
    assert [c[0] for c in rec.calls] == [3, 4, 5] and pbt.epoch == 5 and pbt.stopped


def test_resume_applies_mutated_optimizer_values(tmp_path):
    cfg = cfg_of(**{"train.scheduler": "constant", "train.momentum": 0.9})
    first = engine.fit(cfg, data=make_bundle(), checkpoint_root=tmp_path / "a")
    mutated = cfg.with_updates({"train.lr": 2e-3, "train.weight_decay": 0.3,
                                "train.momentum": 0.8})
    seen = []

    class Spy:
        def on_epoch_end(self, epoch, metrics, checkpoint_dir):
            seen.append(metrics["lr"])
            state = checkpoints.load_checkpoint(checkpoint_dir)
            groups = state["optimizer"]["param_groups"]
            assert {g["weight_decay"] for g in groups if g["apply_decay"]} == {0.3}
            assert {g["weight_decay"] for g in groups if not g["apply_decay"]} == {0.0}
            assert {g["betas"][0] for g in groups} == {0.8}
            raise engine.StopTraining

    engine.fit(mutated, make_bundle(), [Spy()], resume_from=first.checkpoint_dir,
               run_until_stopped=True)
    assert seen == [pytest.approx(2e-3)]


def test_resume_refuses_another_architecture(tmp_path):
    first = engine.fit(cfg_of(**{"train.epochs": 1}), data=make_bundle(),
                       checkpoint_root=tmp_path)
    with pytest.raises(ValueError, match="same architecture"):
        engine.fit(cfg_of(**{"model.head_hidden": 16}), data=make_bundle(),
                   resume_from=first.checkpoint_dir)
    with pytest.raises(ValueError, match="optimizer"):
        engine.fit(cfg_of(**{"train.optimizer": "sgd"}), data=make_bundle(),
                   resume_from=first.checkpoint_dir)


def test_keep_best_and_keep_all(tmp_path):
    res = engine.fit(cfg_of(**{"train.epochs": 3}), data=make_bundle(),
                     checkpoint_root=tmp_path / "best", keep_best=("val_loss", "min"))
    best = min(res.history, key=lambda m: m["val_loss"])
    assert res.best_epoch == int(best["epoch"])
    kept = sorted(p.name for p in (tmp_path / "best").iterdir())
    assert kept == sorted({f"epoch_{res.best_epoch:04d}", "epoch_0003"})
    engine.fit(cfg_of(**{"train.epochs": 3}), data=make_bundle(),
               checkpoint_root=tmp_path / "all", keep_checkpoints=None)
    assert len(list((tmp_path / "all").iterdir())) == 3


def test_fit_needs_its_data():
    with pytest.raises(TypeError, match="open_run_data"):
        engine.fit(cfg_of(), None)


def test_fit_result_carries_benchmark_figures():
    """Timing, throughput, device, best epoch and final validation metrics of one fit."""
    res = engine.fit(cfg_of(**{"train.epochs": 3}), make_bundle(n_train=32))
    assert res.device == "cpu"
    assert res.images_seen == 3 * 32
    assert 0 < res.train_time_s < sum(h["epoch_time_s"] for h in res.history)  # no eval time
    assert res.images_per_s == pytest.approx(res.images_seen / res.train_time_s)
    assert res.best_metric == "val_acc"
    best = max(res.history, key=lambda h: h["val_acc"])  # first maximum wins ties
    assert res.best_epoch == int(best["epoch"]) and res.best_value == best["val_acc"]
    assert res.final_val == {k: v for k, v in res.history[-1].items() if k.startswith("val_")}
    assert {"val_loss", "val_acc", "val_auc_micro"} <= set(res.final_val)
    assert res.num_params == eqcvt.count_params(res.model) > 0
    reg = engine.fit(cfg_of(**{"train.epochs": 2}), make_bundle("regression"))
    assert reg.best_metric == "val_loss"
    assert reg.best_value == min(h["val_loss"] for h in reg.history)


def test_adam_with_continuous_rotations_trains():
    """The published recipe's settings: Adam (L2 weight decay), constant lr, rotations."""
    cfg = cfg_of(**{"train.optimizer": "adam", "train.lr": 1e-3, "train.weight_decay": 1e-7,
                    "train.scheduler": "constant", "train.augment": "rotate",
                    "train.epochs": 1, "train.steps_per_epoch": 2})
    res = engine.fit(cfg, make_bundle())
    assert res.epoch == 1 and math.isfinite(res.metrics["train_loss"])
    assert res.metrics["lr"] == pytest.approx(1e-3)
    again = engine.fit(cfg, make_bundle())  # rotations come from the engine's generator
    assert again.history[0]["train_loss"] == res.history[0]["train_loss"]


class _PrecisionProbe(_TinyNet):
    """Records, per forward, (training?, dtype of the last layer's output, TF32 allowed?)."""

    calls: list[tuple[bool, torch.dtype, bool]] = []

    def forward(self, x):
        out = self.body(x)
        _PrecisionProbe.calls.append(
            (self.training, out.dtype, torch.backends.cuda.matmul.allow_tf32))
        return out * self.scale


def _engine_precision_probe(**overrides):
    return _PrecisionProbe(**overrides)


PROBE = "_engine_precision_probe"
if PROBE not in eqcvt.list_models():
    eqcvt.register_model(_engine_precision_probe)


def test_bf16_training_on_cpu_evaluates_in_fp32():
    _PrecisionProbe.calls = []
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True  # as fit sets it on a GPU
    try:
        res = engine.fit(cfg_of(**{"model.name": PROBE, "train.precision": "bf16"}),
                         make_bundle())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    assert res.precision == "bf16"
    assert all(math.isfinite(h["train_loss"]) for h in res.history)
    train = {dtype for training, dtype, _ in _PrecisionProbe.calls if training}
    evals = [(dtype, allow) for training, dtype, allow in _PrecisionProbe.calls if not training]
    assert train == {torch.bfloat16}
    assert evals and set(evals) == {(torch.float32, False)}  # fp32, TF32 off, inside evaluate


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["auto", "bf16", "fp16"])
def test_cuda_precisions_train_in_their_dtype_and_evaluate_in_fp32(precision):
    """fp16 goes through the gradient scaler; auto is bf16 where the GPU has it; evaluation is
    exact fp32 (TF32 off) whatever the training precision. Run by scripts/gpu_check.sh."""
    _PrecisionProbe.calls = []
    res = engine.fit(cfg_of(**{"model.name": PROBE, "train.precision": precision,
                               "train.device": "cuda"}), make_bundle())
    want = {"fp16": torch.float16}.get(
        precision, torch.bfloat16 if torch.cuda.is_bf16_supported() else None)
    assert res.precision == {torch.float16: "fp16", torch.bfloat16: "bf16", None: "fp32"}[want]
    assert all(math.isfinite(h["train_loss"]) for h in res.history)
    train = {dtype for training, dtype, _ in _PrecisionProbe.calls if training}
    evals = {(dtype, allow) for training, dtype, allow in _PrecisionProbe.calls if not training}
    assert train == {want or torch.float32} and evals == {(torch.float32, False)}


def test_default_precision_is_fp32_on_cpu():
    assert cfg_of().train.precision == "auto"
    assert engine.fit(cfg_of(**{"train.epochs": 1}), make_bundle()).precision == "fp32"


def test_precision_is_validated_and_settable_from_text():
    from pipeline.config import parse_value

    assert parse_value("train.precision", "bf16") == "bf16"
    assert parse_value("train.compile", "true") is True
    with pytest.raises(ValueError, match="train.precision must be one of"):
        cfg_of(**{"train.precision": "fp8"})
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        engine.fit(cfg_of(**{"train.precision": "fp16"}), make_bundle())


@pytest.mark.slow  # torch.compile of a CvT takes ~50 s on the 2-core CI machine
def test_compile_trains_a_plain_cvt():
    cfg = RunConfig.from_flat({
        "model.name": "cvt_baseline", "model.embed_dim": 8, "model.depth": 1, "model.heads": 1,
        "model.head_hidden": 8, "train.epochs": 1, "train.batch_size": 8,
        "train.steps_per_epoch": 2, "train.device": "cpu", "train.num_threads": 1,
        "train.compile": True,
    })
    res = engine.fit(cfg, make_bundle(size=32))
    assert math.isfinite(res.history[-1]["train_loss"])
    assert not hasattr(res.model, "_orig_mod")  # the plain module is kept and checkpointed
    assert "_orig_mod" not in "".join(checkpoints.load_checkpoint(res.checkpoint_dir)["model"])


def test_precision_is_searchable():
    import random

    from pipeline.search.parse import parse_search_text
    from pipeline.search.spec import sample

    spec = parse_search_text(
        "name: t\nscheduler: asha\nsearcher: random\nmetric: val_acc\nmode: max\n"
        "num_samples: 2\nmax_epochs: 1\nparams:\n"
        "  train.precision: {choice: [fp32, bf16]}\n  train.compile: false\n")
    trials = [sample(spec, random.Random(s)) for s in range(8)]
    assert {t["train.precision"] for t in trials} == {"fp32", "bf16"}
    assert all(RunConfig.from_flat(t).train.compile is False for t in trials)


def test_resume_continues_the_fp16_loss_scale(tmp_path, monkeypatch):
    """fp16's gradient-scaler state travels in the checkpoint (a CPU GradScaler stands in for
    the CUDA one, which fp16 needs)."""
    from pipeline.device import StepSettings

    made = []

    def settings(model, train, device):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
        made.append(scaler)
        return StepSettings(forward=model, dtype=None, scaler=scaler)

    monkeypatch.setattr(engine, "step_settings", settings)
    first = engine.fit(cfg_of(**{"train.epochs": 1}), make_bundle(),
                       checkpoint_root=tmp_path / "a")
    saved = checkpoints.load_checkpoint(first.checkpoint_dir)["scaler"]
    assert saved["scale"] == made[0].get_scale() == 2.0**14  # doubled on each of 4 steps
    engine.fit(cfg_of(**{"train.epochs": 2}), make_bundle(), resume_from=first.checkpoint_dir,
               checkpoint_root=tmp_path / "b")
    assert made[1].get_scale() == 2.0**18  # continued from the saved scale, not init_scale
