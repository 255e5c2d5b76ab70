"""The trainable: one trial runs `engine.fit`, the one training loop, reporting each epoch's
metrics with that epoch's checkpoint; a trial Tune restores (resume, retry, PBT exploit)
continues from `tune.get_checkpoint()`. Runs on the workers: no mlflow here."""

from __future__ import annotations

import atexit
import json
import logging
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from ..procs import owner_token, remove_orphans
from ..search import trial_config
from ..search.cost import config_cost
from .artifacts import BestEpochEvaluation
from .data import bundle_from_shared

ORIGIN_FILE = "origin.json"  # in every checkpoint: which trial wrote it, at which epoch


@dataclass(frozen=True)
class TrialOptions:
    pbt: bool = False
    threads: int = 1
    metric: str = "val_acc"  # the search's: which epochs get their artefacts evaluated
    mode: str = "max"


class _TuneReporter:
    """engine.fit callback: one `tune.report` per epoch, with that epoch's checkpoint."""

    def __init__(self, trial_id: str, info: dict[str, Any]) -> None:
        self.trial_id = trial_id
        self.info = info

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        (Path(checkpoint_dir) / ORIGIN_FILE).write_text(
            json.dumps({"trial_id": self.trial_id, "epoch": epoch})
        )
        result = {**metrics, **self.info}
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))


def train_trial(config: dict[str, Any], data: Any = None,
                options: TrialOptions = TrialOptions()) -> None:
    """One trial: flat (or HyperOpt-nested) config -> RunConfig -> engine.fit."""
    import torch

    from ..data.open import open_run_data
    from ..device import resolve_device
    from ..engine import fit

    t_start = time.time()
    for name in ("ray.train", "ray.tune"):  # "Checkpoint successfully created" per epoch
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg = trial_config(config)
    if cfg.train.num_threads == 0:
        torch.set_num_threads(max(1, options.threads))
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    info: dict[str, Any] = {
        "node_id": ray.get_runtime_context().get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "hostname": socket.gethostname(),
        "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
        "trial_start_time": t_start,
        "restored_from_trial": "",
        "restored_from_epoch": 0.0,
        "data_from_object_store": float(data is not None),
    }
    device = resolve_device(cfg.train.device)
    bundle = bundle_from_shared(data) if data is not None else open_run_data(cfg)
    # counted once, before training, on a CPU copy of the model: reported every epoch (a
    # search objective, and the FLOPs column of the leaderboard)
    info["flops"] = config_cost(cfg, bundle).flops
    resume_dir = None
    _sweep_stale_workdirs()
    work = Path(tempfile.mkdtemp(prefix=f"{_WORK_PREFIX}{owner_token()}-{trial_id}-"))
    atexit.register(shutil.rmtree, work, True)  # Tune stops trials mid-fit (ASHA, PBT)
    try:
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            resume_dir = work / "restored"
            ckpt.to_directory(str(resume_dir))
            origin = resume_dir / ORIGIN_FILE
            if origin.is_file():
                o = json.loads(origin.read_text())
                info.update(restored_from_trial=str(o["trial_id"]),
                            restored_from_epoch=float(o["epoch"]))
        info["setup_s"] = time.time() - t_start
        artefacts = BestEpochEvaluation(bundle, options.metric, options.mode, device,
                                        cfg.train.eval_batch_size)
        fit(
            cfg,
            bundle,
            [artefacts, _TuneReporter(trial_id, info)],
            resume_from=resume_dir,
            run_until_stopped=options.pbt,
            checkpoint_root=work / "ckpt",
            keep_checkpoints=1,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


_WORK_PREFIX = "eqcvt-trial-"


def _sweep_stale_workdirs() -> None:
    """Remove local work folders of trials whose process is gone (killed by Tune)."""
    remove_orphans(Path(tempfile.gettempdir()).glob(f"{_WORK_PREFIX}*"),
                   lambda d: d.name[len(_WORK_PREFIX):])


def trial_name(trial: Any) -> str:
    return str(trial.trial_id)


def trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"
