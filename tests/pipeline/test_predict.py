"""`eqcvt-search predict`: every image of a shard folder unless --split names one."""

from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pytest
import torch

from pipeline.data.bundle import DataBundle, Split
from pipeline.predict import predict_bundle, splits_to_predict


def _bundle() -> DataBundle:
    def split(n: int, value: float) -> Split:
        return Split(torch.full((n, 1, 4, 4), value), torch.arange(n) % 2, torch.zeros(n, 0))

    return DataBundle("binary", ("no_sub", "sub"), (1, 4, 4), split(5, 0.0), split(2, 1.0),
                      split(3, 2.0), None, {})


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _mean_logits(x: np.ndarray) -> np.ndarray:
    m = x.reshape(len(x), -1).mean(1)
    return np.stack([-m, m], axis=1)


def test_splits_to_predict():
    assert splits_to_predict(None, "DIR") == ("train", "val", "test")
    assert splits_to_predict(None, None) == ("test",)  # the simulator: fresh test images
    assert splits_to_predict("val", "DIR") == ("val",)
    with pytest.raises(ValueError, match="--split"):
        splits_to_predict("holdout", "DIR")


def test_predict_bundle_every_split_in_order(tmp_path):
    b = _bundle()
    res = predict_bundle(_mean_logits, b, ("train", "val", "test"), out=str(tmp_path / "p.csv"))
    assert res.n == 10 and res.splits == {"train": 5, "val": 2, "test": 3}
    assert set(res.metrics_by_split) == {"train", "val", "test"}
    rows = _rows(tmp_path / "p.csv")
    assert [r["split"] for r in rows] == ["train"] * 5 + ["val"] * 2 + ["test"] * 3
    assert [int(r["index"]) for r in rows] == [*range(5), *range(2), *range(3)]
    assert {r["predicted"] for r in rows if r["split"] != "train"} == {"sub"}
    assert {r["predicted"] for r in rows if r["split"] == "train"} == {"no_sub"}  # tie -> 0
    capped = predict_bundle(_mean_logits, b, ("train", "val", "test"), n=6)
    assert capped.splits == {"train": 5, "val": 1, "test": 0} and capped.n == 6
    json.loads(capped.to_json())


def test_predict_cli_predicts_every_image_of_a_generated_dataset(tmp_path, capsys):
    """Registered model (real MLflow store) + `eqcvt-data generate` folder -> 64 of 64 images."""
    from pipeline import tracking
    from pipeline.cli import main as search_main
    from pipeline.config import RunConfig
    from pipeline.data.bundle import open_data
    from pipeline.data.cli import main as data_main
    from pipeline.data.shards import read_manifest
    from pipeline.engine import fit

    data = tmp_path / "ds"
    data_main(["generate", "--preset", "model_ii", "--task", "binary", "--n-per-class", "32",
               "--seed", "0", "--out", str(data)])
    counts = {s: c["total"] for s, c in read_manifest(data)["counts"].items()}
    assert sum(counts.values()) == 64 and counts["test"] < 64
    cfg = RunConfig.from_flat({
        "model.name": "eqcvt_stem", "model.group": "C4", "model.fields": 1,
        "model.embed_dim": 8, "model.depth": 1, "model.heads": 1, "model.head_hidden": 8,
        "model.kernel_size": 3, "model.stem_blocks": 1, "train.epochs": 1,
        "train.batch_size": 16, "train.num_threads": 1, "data.source": "shards",
        "data.path": str(data), "data.img_size": 16,
    })
    bundle = open_data(cfg.data)
    res = fit(cfg, data=bundle, checkpoint_root=tmp_path / "ckpt")
    tr = tracking.Tracker(f"sqlite:///{tmp_path / 'm.db'}", "exp")
    run = tr.start_run("final", kind="final")
    tr.register_model(run, res.checkpoint_dir, "eqcvt-predict", config=cfg.to_flat())
    tr.end_run(run)
    capsys.readouterr()

    def predict(*args: str) -> dict:
        code = search_main(["predict", "--model", "eqcvt-predict", "--data", str(data),
                            "--tracking-uri", tr.uri, *args])
        assert code == 0
        return json.loads(capsys.readouterr().out)

    every = predict("--out", str(tmp_path / "all.csv"))
    assert every["n"] == 64 and every["splits"] == counts
    rows = _rows(tmp_path / "all.csv")
    assert len(rows) == 64 and Counter(r["split"] for r in rows) == counts
    only = predict("--split", "test", "--out", str(tmp_path / "test.csv"))
    assert only["n"] == counts["test"] and only["splits"] == {"test": counts["test"]}
    test_rows = _rows(tmp_path / "test.csv")
    assert test_rows == [r for r in rows if r["split"] == "test"]
    model, _, _ = tracking.load_registered(tr.uri, "eqcvt-predict")
    direct = torch.softmax(torch.as_tensor(model.predict(bundle.test.images.numpy())), 1)
    got = np.array([[float(r["p_no_sub"]), float(r["p_sub"])] for r in test_rows])
    np.testing.assert_allclose(got, direct.numpy(), atol=2e-6)
