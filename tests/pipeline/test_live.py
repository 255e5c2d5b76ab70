"""The live table and leaderboard: cost columns and number formatting."""

from __future__ import annotations

import math

from rich.console import Console

from pipeline.live import TrialRow, fmt, fmt_count, leaderboard, rows_from_mapping


def render(table) -> str:
    console = Console(record=True, width=220, color_system=None)
    console.print(table)
    return console.export_text()


def test_fmt_keeps_four_significant_digits():
    assert fmt(0.0022272466466948426) == "0.002227"
    assert fmt(0.00022272466466948426) == "2.227e-04"
    assert fmt(123456.0) == "1.235e+05"
    assert fmt(0.9123456) == "0.9123"
    assert fmt(32) == "32" and fmt(None) == "-" and fmt(math.nan) == "-"


def test_fmt_count():
    assert fmt_count(64810.0) == "64810"
    assert fmt_count(12345678.0) == "1.235e+07"
    assert fmt_count(math.nan) == "-"


def test_take_cost_reads_the_trial_result():
    row = TrialRow("t1")
    row.take_cost({"num_params": 64810.0, "val_acc": 0.5, "flops": True})
    assert row.num_params == 64810.0 and math.isnan(row.flops)  # a bool is not a count
    row.take_cost({"flops": 2.5e6})
    assert row.flops == 2.5e6 and row.num_params == 64810.0


def test_leaderboard_shows_params_and_flops_once_reported():
    rows = [TrialRow("t1", best=0.9, num_params=64810.0, params={"train.lr": 0.0022272466}),
            TrialRow("t2", best=0.7, num_params=1200.0)]
    text = render(leaderboard(rows, "val_acc", "max"))
    assert "params" in text and "64810" in text and "1200" in text
    assert "FLOPs" not in text
    assert "0.002227" in text and "0.0022272466" not in text
    rows[0].flops = 1.23456e7
    text = render(leaderboard(rows, "val_acc", "max"))
    assert "FLOPs" in text and "1.235e+07" in text


def test_rows_saved_before_cost_columns_still_load():
    rows = rows_from_mapping({"t1": {"trial_id": "t1", "best": 0.5}})
    assert math.isnan(rows[0].num_params) and "-" in render(leaderboard(rows, "val_acc", "max"))
