"""Open a run's data once per process, outside the training loop.

The caller (a Tune trial, final training, a benchmark) opens the bundle and hands it to
`engine.fit(cfg, data, ...)`. Fixed splits live on the CPU; an on-the-fly stream simulates its
batches on the training device.
"""

from __future__ import annotations

from typing import Any

from pipeline.data.bundle import DataBundle, open_data


def open_run_data(cfg: Any) -> DataBundle:
    """The bundle a `pipeline.config.RunConfig` names (its data section, on its device)."""
    from pipeline.device import resolve_device

    device = resolve_device(cfg.train.device) if cfg.data.on_the_fly else "cpu"
    return open_data(cfg.data, device=str(device))
