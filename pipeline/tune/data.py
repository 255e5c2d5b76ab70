"""Data once per node: the driver opens the data and puts it in Ray's object store once;
every trial on a node reads that one copy without copying."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ray

from ..search import Domain, SearchSpec, trial_config, walk_params


def share_bundle(bundle: Any) -> dict[str, Any]:
    """The DataBundle as numpy arrays: `ray.put` once, read zero-copy by every trial."""

    def arrays(split: Any) -> dict[str, Any] | None:
        if split is None:
            return None
        return {
            "images": split.images.detach().cpu().contiguous().numpy(),
            "labels": split.labels.detach().cpu().numpy(),
            "targets": split.targets.detach().cpu().numpy(),
        }

    return {
        "task": bundle.task,
        "classes": tuple(bundle.classes),
        "image_shape": tuple(bundle.image_shape),
        "manifest": bundle.manifest,
        "train": arrays(bundle.train),
        "val": arrays(bundle.val),
    }


def bundle_from_shared(shared: Mapping[str, Any]) -> Any:
    """A DataBundle whose tensors view the object store's read-only memory (no copy)."""
    import torch

    from ..data.bundle import DataBundle, Split

    def split(d: Mapping[str, Any] | None) -> Any:
        if d is None:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only arrays: we never write
            return Split(*(torch.from_numpy(d[k]) for k in ("images", "labels", "targets")))

    val = split(shared["val"])
    return DataBundle(
        task=shared["task"],
        classes=tuple(shared["classes"]),
        image_shape=tuple(shared["image_shape"]),
        train=split(shared["train"]),
        val=val,
        test=type(val)(val.images[:0], val.labels[:0], val.targets[:0]),
        stream=None,
        manifest=dict(shared["manifest"]),
    )


def data_is_searched(spec: SearchSpec) -> bool:
    """Trials open their own data when a data.* key is sampled (no single shared copy)."""
    return any(k.startswith("data.") and (isinstance(p, Domain) or k not in spec.params)
               for k, p in walk_params(spec.params))


@dataclass
class DriverData:
    """What the driver puts in the object store once per search."""

    trial_ref: Any  # the bundle trials read (None: trials open/stream their own data)
    manifest: dict[str, Any]


def open_driver_data(spec: SearchSpec) -> DriverData:
    from ..data.bundle import open_data

    cfg = trial_config(spec.fixed())
    if data_is_searched(spec):
        return DriverData(None, {"note": "data.* keys are sampled; each trial opens its own "
                                         "data"})
    bundle = open_data(cfg.data, device="cpu")
    if cfg.data.on_the_fly:  # trials simulate train and val on their own device
        return DriverData(None, bundle.manifest)
    return DriverData(ray.put(share_bundle(bundle)), bundle.manifest)
