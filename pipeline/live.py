"""Rich rendering of a running search: the live trial table and the final leaderboard.

Plain data in (rows of dicts), rich out; the Tune callback in `pipeline.tune` feeds it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

_STATE_STYLE = {
    "RUNNING": "cyan",
    "TERMINATED": "green",
    "ERROR": "red",
    "PENDING": "dim",
    "PAUSED": "yellow",
}


@dataclass
class TrialRow:
    trial_id: str
    state: str = "PENDING"
    epoch: int = 0
    value: float = math.nan  # the search metric at the latest epoch
    best: float = math.nan  # best value over the trial's epochs so far
    best_epoch: int = 0
    params: dict[str, Any] = field(default_factory=dict)  # the sampled values, short keys
    node: str = ""
    error: str = ""
    note: str = ""  # e.g. "exploited a3f1@4" under PBT
    num_params: float = math.nan  # trainable parameters, from the trial's results
    flops: float = math.nan  # per image; shown once trials report a `flops` result

    def take_cost(self, result: Mapping[str, Any]) -> None:
        """Copy the cost figures (COST_KEYS) a trial result carries."""
        for key in COST_KEYS:
            value = result.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                setattr(self, key, float(value))


COST_KEYS: tuple[str, ...] = ("num_params", "flops")


def fmt(value: Any, sci_from: float = 1e4) -> str:
    """A table cell: floats to 4 significant digits (scientific below 1e-3 and from
    `sci_from` up), ints as they are; NaN and None as '-'. Shared by the live table and the
    markdown report."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= sci_from):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def is_better(value: float, best: float, mode: str) -> bool:
    if value is None or math.isnan(value):
        return False
    return math.isnan(best) or (value > best if mode == "max" else value < best)


def short_key(key: str) -> str:
    """"model.group" -> "group"; the section is clear from context in a narrow table."""
    return key.split(".", 1)[-1]


def trial_table(rows: Sequence[TrialRow], metric: str, mode: str, title: str = "") -> Table:
    """The live table: one row per trial, best so far highlighted."""
    best_id = _best_id(rows, mode)
    table = Table(title=title or None, show_lines=False, header_style="bold", expand=False)
    table.add_column("trial", no_wrap=True)
    table.add_column("state", no_wrap=True, min_width=10)
    table.add_column("epoch", justify="right")
    table.add_column(metric, justify="right", no_wrap=True)
    table.add_column(f"best {metric}", justify="right", no_wrap=True)
    keys = _param_keys(rows)
    for k in keys:
        table.add_column(short_key(k), justify="right", overflow="fold")
    table.add_column("node / note", overflow="fold")
    for r in rows:
        style = "bold" if r.trial_id == best_id else ""
        state = f"[{_STATE_STYLE.get(r.state, '')}]{r.state}[/]"
        note = r.error[:60] if r.error else r.note or r.node[:8]
        table.add_row(
            r.trial_id, state, str(r.epoch), fmt(r.value), fmt(r.best),
            *[fmt(r.params.get(k, "")) for k in keys], note, style=style,
        )
    return table


def leaderboard(rows: Sequence[TrialRow], metric: str, mode: str, top: int = 10) -> Table:
    """Trials sorted by their best value of the metric (errors last)."""
    ranked = sorted(
        rows,
        key=lambda r: (math.isnan(r.best), -r.best if mode == "max" else r.best),
    )[:top]
    table = Table(title=f"leaderboard: best {metric} ({mode})", header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("trial", no_wrap=True)
    table.add_column(f"best {metric}", justify="right", no_wrap=True)
    table.add_column("at epoch", justify="right")
    table.add_column("epochs", justify="right")
    table.add_column("state", no_wrap=True, min_width=10)
    costs = cost_keys(ranked)
    for k in costs:
        table.add_column(COST_TITLES[k], justify="right", no_wrap=True)
    keys = _param_keys(ranked)
    for k in keys:
        table.add_column(short_key(k), justify="right", overflow="fold")
    for i, r in enumerate(ranked, 1):
        table.add_row(
            str(i), r.trial_id, fmt(r.best), str(r.best_epoch), str(r.epoch), r.state,
            *[fmt_count(getattr(r, k)) for k in costs],
            *[fmt(r.params.get(k, "")) for k in keys],
        )
    return table


COST_TITLES = {"num_params": "params", "flops": "FLOPs"}


def cost_keys(rows: Sequence[TrialRow]) -> list[str]:
    """The parameter count always; FLOPs once any trial reported them."""
    return ["num_params", *(["flops"] if any(math.isfinite(r.flops) for r in rows) else [])]


def fmt_count(value: float) -> str:
    """A count: an integer below a million, else 4 significant digits (1.235e+07)."""
    if not math.isfinite(value):
        return "-"
    return str(int(value)) if abs(value) < 1e6 else f"{value:.3e}"


def _best_id(rows: Sequence[TrialRow], mode: str) -> str | None:
    best, best_id = math.nan, None
    for r in rows:
        if is_better(r.best, best, mode):
            best, best_id = r.best, r.trial_id
    return best_id


def _param_keys(rows: Sequence[TrialRow]) -> list[str]:
    keys: list[str] = []
    for r in rows:
        for k in r.params:
            if k not in keys:
                keys.append(k)
    return keys[:8]


class LiveView:
    """A rich Live table on a terminal; on a pipe, a line per event and a table now and then."""

    def __init__(self, metric: str, mode: str, title: str, console: Console | None = None,
                 every_s: float = 30.0) -> None:
        self.metric, self.mode, self.title = metric, mode, title
        self.console = console or Console(stderr=True, width=None if sys.stderr.isatty() else 150)
        self.rows: dict[str, TrialRow] = {}
        self._live: Live | None = None
        self._last_print = 0.0
        self._every_s = every_s
        self._dirty = False

    @property
    def interactive(self) -> bool:
        return self.console.is_terminal

    def row(self, trial_id: str) -> TrialRow:
        if trial_id not in self.rows:
            self.rows[trial_id] = TrialRow(trial_id)
        return self.rows[trial_id]

    def event(self, message: str) -> None:
        """A one-line note (trial finished, errored, exploited)."""
        if self._live is not None:
            self._live.console.log(message)
        else:
            self.console.print(message, highlight=False)

    def refresh(self, force: bool = False) -> None:
        self._dirty = True
        table = trial_table(list(self.rows.values()), self.metric, self.mode, self.title)
        if self.interactive:
            if self._live is None:
                self._live = Live(table, console=self.console, refresh_per_second=2,
                                  transient=False)
                self._live.start()
            else:
                self._live.update(table)
            return
        now = time.monotonic()
        if force or now - self._last_print >= self._every_s:
            self.console.print(table)
            self._last_print = now
            self._dirty = False

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        elif self._dirty:
            self.refresh(force=True)

    def print_leaderboard(self, out: Console | None = None, top: int = 10) -> None:
        (out or Console(file=sys.stdout)).print(
            leaderboard(list(self.rows.values()), self.metric, self.mode, top)
        )


def rows_from_mapping(data: Mapping[str, Mapping[str, Any]]) -> list[TrialRow]:
    """Rebuild rows from a saved summary (e.g. leaderboard.json)."""
    return [TrialRow(**dict(v)) for v in data.values()]
