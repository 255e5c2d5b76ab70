"""pipeline.feed: how training batches of a fixed split reach the device."""

from __future__ import annotations

import tempfile

import pytest
import torch

from pipeline import engine, feed
from pipeline.config import RunConfig
from tests.pipeline.test_engine import cfg_of, make_bundle, make_split

CUDA = torch.device("cuda")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _fit_tempdir(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def test_auto_keeps_splits_on_the_gpu_only_when_they_fit():
    gib = 1 << 30
    share = int(140 * gib * feed.RESIDENT_SHARE)
    assert feed.resolve_feed("auto", CUDA, share, device_memory=140 * gib) == "device"
    assert feed.resolve_feed("auto", CUDA, share + 1, device_memory=140 * gib) == "pinned"
    for name in ("device", "pinned", "pageable"):  # an explicit choice is kept on a GPU
        assert feed.resolve_feed(name, CUDA, 10**15, device_memory=gib) == name


def test_on_a_cpu_every_feed_but_pinned_is_the_plain_one():
    cpu = torch.device("cpu")
    for name in ("auto", "device", "pageable"):
        assert feed.resolve_feed(name, cpu, 10**15) == "pageable"
    with pytest.raises(ValueError, match="pinned needs a CUDA device"):
        feed.resolve_feed("pinned", cpu, 1)
    with pytest.raises(ValueError, match="train.feed must be one of"):
        feed.resolve_feed("gpu", cpu, 1)


def test_split_bytes_counts_every_tensor():
    s = make_split(10, size=4)  # float32 images 10x1x4x4, int64 labels, (10, 0) targets
    assert feed.split_bytes(s, None, s) == 2 * (10 * 16 * 4 + 10 * 8)


@pytest.mark.parametrize("mode", ["device", "pageable"])
def test_batches_are_the_indexed_rows_whatever_the_feed(mode):
    train, val = make_split(37), make_split(5, seed=1)
    f = feed.TrainFeed(train, val, torch.device("cpu"), mode)
    order = torch.randperm(37, generator=torch.Generator().manual_seed(0))
    for lo in range(0, 37, 8):  # the last batch is shorter
        idx = order[lo : lo + 8]
        got = f.batch(idx)
        want = (train.images[idx], train.labels[idx], train.targets[idx])
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    assert torch.equal(f.val.images, val.images)
    with pytest.raises(ValueError, match="mode must be one of"):
        feed.TrainFeed(train, val, torch.device("cpu"), "auto")


def test_fit_reports_its_feed_and_trains_the_same_with_each():
    bundle = make_bundle(n_train=32)
    runs = {name: engine.fit(cfg_of(**{"train.feed": name}), bundle)
            for name in ("auto", "device", "pageable")}
    assert {r.feed for r in runs.values()} == {"pageable"}  # on a CPU all three are one
    losses = {name: [h["train_loss"] for h in r.history] for name, r in runs.items()}
    assert losses["auto"] == losses["device"] == losses["pageable"]
    with pytest.raises(ValueError, match="pinned needs a CUDA device"):
        engine.fit(cfg_of(**{"train.feed": "pinned"}), bundle)
    streamed = engine.fit(
        cfg_of(**{"train.steps_per_epoch": 2, "train.epochs": 1}),
        make_bundle(stream=lambda step, bs: tuple(
            t[:bs] for t in (bundle.train.images, bundle.train.labels, bundle.train.targets))),
    )
    assert streamed.feed == "stream"


def test_feed_is_validated_and_settable_from_text():
    assert RunConfig.from_flat({"train.feed": "pinned"}).train.feed == "pinned"
    with pytest.raises(ValueError, match="train.feed"):
        RunConfig.from_flat({"train.feed": "gpu"})


@needs_cuda
def test_cuda_pinned_staging_gives_the_indexed_rows():
    train, val = make_split(300), make_split(5, seed=1)
    f = feed.TrainFeed(train, val, CUDA, "pinned")
    assert f.train.images.is_pinned() and f.val.images.is_pinned()
    gen = torch.Generator().manual_seed(0)
    got, want = [], []
    for bs in (64, 64, 17, 64, 3, 64, 64):  # staging buffers reused and regrown
        idx = torch.randperm(300, generator=gen)[:bs]
        got.append(f.batch(idx))
        want.append((train.images[idx], train.labels[idx], train.targets[idx]))
    torch.cuda.synchronize()
    for g, w in zip(got, want, strict=True):  # earlier batches are not overwritten later
        assert g[0].is_cuda
        assert all(torch.equal(a.cpu(), b) for a, b in zip(g, w, strict=True))


@needs_cuda
def test_cuda_fit_trains_the_same_from_every_feed():
    bundle = make_bundle(n_train=64)
    runs = {name: engine.fit(cfg_of(**{"train.feed": name, "train.device": "cuda",
                                       "train.precision": "fp32"}), bundle)
            for name in ("auto", "device", "pinned", "pageable")}
    assert runs["auto"].feed == "device"
    assert {n: r.feed for n, r in runs.items() if n != "auto"} == {
        "device": "device", "pinned": "pinned", "pageable": "pageable"}
    losses = [[h["train_loss"] for h in r.history] for r in runs.values()]
    for other in losses[1:]:
        assert other == pytest.approx(losses[0], rel=1e-5)
