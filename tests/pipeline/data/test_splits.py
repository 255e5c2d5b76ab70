"""Seeded stratified split assignment, fraction parsing, per-split seed streams."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.splits import SPLITS, assign_splits, parse_fractions, stream_seed


def test_assign_splits_is_seeded_and_stratified():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    a = assign_splits(labels, (0.8, 0.1, 0.1), 7)
    assert np.array_equal(a, assign_splits(labels, (0.8, 0.1, 0.1), 7))
    assert not np.array_equal(a, assign_splits(labels, (0.8, 0.1, 0.1), 8))
    for c, n in enumerate([50, 30, 20]):
        counts = np.bincount(a[labels == c], minlength=3)
        assert counts.sum() == n and counts[1] == round(n * 0.1) and counts[2] == round(n * 0.1)
    tiny = assign_splits(np.zeros(3, int), (0.8, 0.1, 0.1), 0)
    assert sorted(tiny.tolist()) == [0, 1, 2]  # every split gets an image when it can
    assert assign_splits(np.zeros(1, int), (0.8, 0.1, 0.1), 0).tolist() == [0]
    assert set(assign_splits(labels, (1, 0, 0), 0).tolist()) == {0}


@pytest.mark.parametrize("bad", ["0.8,0.1", "a,b,c", "0.5,0.5,0.5", "1.2,-0.1,-0.1"])
def test_parse_fractions_errors(bad):
    with pytest.raises(ValueError, match="fractions"):
        parse_fractions(bad)


def test_stream_seeds_differ():
    seeds = {stream_seed(0, s) for s in SPLITS} | {stream_seed(1, s) for s in SPLITS}
    assert len(seeds) == 6 and all(0 <= s < 2**31 for s in seeds)
