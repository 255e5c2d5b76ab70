"""The Ray side of the study, without a cluster: what Tune pickles must pickle."""

from __future__ import annotations

import pickle

from rich.console import Console

from pipeline.tune.study import _Progress, cell_key


def test_progress_callback_pickles_without_its_console():
    cells = [{"model": "m", "dataset": "d", "seed": 1}]
    cb = pickle.loads(pickle.dumps(_Progress(cells, Console(stderr=True).print)))
    assert cb.cells == cells and cb.say is print and cell_key(cells[0]) == "m|d|1"
