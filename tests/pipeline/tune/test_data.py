"""The driver's data in the object store: a zero-copy round trip, and when trials open their
own data instead."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ray")

from pipeline import tune as ptune  # noqa: E402
from pipeline.search import Choice, load_search_space  # noqa: E402

SPACES = Path(__file__).resolve().parents[3] / "search_spaces"


def test_shared_bundle_round_trip_without_copy():
    import torch

    from pipeline.data.bundle import DataBundle, Split

    def split(n):
        return Split(torch.rand(n, 1, 8, 8), torch.arange(n) % 2, torch.zeros(n, 0))

    bundle = DataBundle("binary", ("no_sub", "sub"), (1, 8, 8), split(6), split(4), split(4),
                        None, {"a": 1})
    shared = ptune.share_bundle(bundle)
    back = ptune.bundle_from_shared(shared)
    assert torch.equal(back.train.images, bundle.train.images)
    assert back.train.images.data_ptr() == shared["train"]["images"].ctypes.data  # a view
    assert len(back.test.labels) == 0 and back.classes == bundle.classes


def test_data_is_searched():
    spec = load_search_space(SPACES / "default.yaml")
    assert not ptune.data_is_searched(spec)
    assert ptune.data_is_searched(spec.replace(params={**spec.params,
                                                       "data.seed": Choice((0, 1))}))
