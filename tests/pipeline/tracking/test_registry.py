"""The Model Registry: an engine checkpoint registered as a pyfunc model and loaded back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline import tracking
from pipeline.checkpoints import load_model
from pipeline.config import RunConfig
from pipeline.data.bundle import DataBundle, Split
from pipeline.engine import fit
from pipeline.evaluation import predict


def test_registered_model_loads_back_and_predicts(tmp_path):
    """engine checkpoint -> pyfunc in the Model Registry -> loaded back -> same outputs."""
    g = torch.Generator().manual_seed(0)

    def split(n):
        return Split(torch.rand(n, 1, 16, 16, generator=g), torch.arange(n) % 2,
                     torch.zeros(n, 0))

    bundle = DataBundle("binary", ("no_sub", "sub"), (1, 16, 16), split(8), split(4),
                        split(4), None, {})
    cfg = RunConfig.from_flat({
        "model.name": "eqcvt_stem", "model.group": "C4", "model.fields": 1,
        "model.embed_dim": 8, "model.depth": 1, "model.heads": 1, "model.head_hidden": 8,
        "model.kernel_size": 3, "model.stem_blocks": 1, "train.epochs": 1,
        "train.batch_size": 4, "train.num_threads": 1,
    })
    res = fit(cfg, data=bundle, checkpoint_root=tmp_path / "ckpt")
    tr = tracking.Tracker(f"sqlite:///{tmp_path / 'm.db'}", "exp")
    run = tr.start_run("final", kind="final")
    version = tr.register_model(run, res.checkpoint_dir, "eqcvt-test", config=cfg.to_flat())
    tr.end_run(run)
    assert version == "1"
    assert tr.resolve_model_version("eqcvt-test") == ("eqcvt-test", "1")
    model, name, ver = tracking.load_registered(tr.uri, "eqcvt-test")
    assert (name, ver) == ("eqcvt-test", "1")
    x = bundle.test.images.numpy()
    out = np.asarray(model.predict(x))
    assert out.shape == (4, 2)
    direct = predict(load_model(res.checkpoint_dir), bundle.test.images).numpy()
    np.testing.assert_allclose(out, direct, rtol=1e-5, atol=1e-6)
    inner = tracking.unwrap_pyfunc(model)
    assert inner.config["model.group"] == "C4"
    assert Path(tr.uri[len("sqlite:///"):]).is_file()
