"""Strong-lensing image simulator (public entry): presets, tasks, `simulate`.

    batch = simulate("model_ii", "multiclass", start=0, count=256, seed=0)
    batch.images  # (256, 1, 64, 64) float32, each image clipped at 0 and divided by its max

Image i of a (seed, task) stream has class i % n_classes, parameters that depend on (seed, i)
only and noise drawn, for the whole batch at once on the simulation device, from Philox
counters keyed by the image's noise seed (itself a function of (seed, i)): the random words
are identical on every device and for any split of [start, start + count) into calls.
Eager CPU rendering may round a few pixels at the end of a batch differently (1 ulp), which
moves only those pixels' noise (see noise.py for the device differences and their size).
Physics and conventions follow lenstronomy; see
the modules lensing, imaging, priors, noise and render.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.data import noise as noise_mod
from pipeline.data.presets import PRESETS, SimPreset, get_preset
from pipeline.data.priors import KIND_OF_CLASS, SimParams, draw_params
from pipeline.data.render import render_noiseless

__all__ = [
    "PRESETS",
    "TASK_CLASSES",
    "SimBatch",
    "SimParams",
    "SimPreset",
    "get_preset",
    "images_from_params",
    "make_params",
    "render_noiseless",
    "simulate",
]

TASK_CLASSES: dict[str, tuple[str, ...]] = {
    "binary": ("no_sub", "sub"),
    "multiclass": ("axion", "cdm", "no_sub"),
    "regression": ("axion",),
}

_PARAM_COLUMNS = (
    "main_lens_mass", "lens_e1", "lens_e2", "shear_gamma1", "shear_gamma2", "source_x",
    "source_y", "source_e1", "source_e2", "source_amp", "exposure_time", "sub_mass_total",
    "vortex_angle", "vortex_half_length",
)


@dataclass
class SimBatch:
    """One simulated batch; every tensor is on the simulation device."""

    images: torch.Tensor  # (N, 1, H, W), [0, 1] with max 1 per image (unless normalize=False)
    labels: torch.Tensor  # (N,) int64 index into class_names
    class_names: tuple[str, ...]
    # (N,) in the image dtype: log10_m_a (log10 m_a/eV, NaN off axion), einstein_radius
    # [arcsec], sub_mass_fraction (substructure mass / main-lens mass)
    targets: dict[str, torch.Tensor]
    # (N,) shard columns, float64 (index, n_subhalos, noise_seed: int64): see _PARAM_COLUMNS
    params: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return int(self.labels.numel())


def _resolve(preset: SimPreset | str) -> SimPreset:
    if isinstance(preset, SimPreset):
        return preset
    if isinstance(preset, str):
        return get_preset(preset)
    raise TypeError(f"preset must be a SimPreset or a preset name, got {type(preset).__name__}")


def make_params(
    preset: SimPreset | str, task: str, start: int, count: int, seed: int
) -> tuple[SimParams, torch.Tensor]:
    """(parameters, labels) of images [start, start + count) of the (seed, task) stream."""
    preset = _resolve(preset)
    if task not in TASK_CLASSES:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASK_CLASSES)}")
    if start < 0 or count < 0:
        raise ValueError(f"start and count must be >= 0, got {start}, {count}")
    classes = TASK_CLASSES[task]
    index = torch.arange(start, start + count, dtype=torch.int64)
    labels = index % len(classes)
    kind_of_label = torch.tensor([KIND_OF_CLASS[c] for c in classes], dtype=torch.int64)
    return draw_params(preset, kind_of_label[labels], index, seed), labels


def images_from_params(
    preset: SimPreset,
    params: SimParams,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    noise: bool = True,
    normalize: bool = True,
    compile: bool = False,
) -> torch.Tensor:
    """(N, H, W) images of drawn parameters: render, add noise, normalise."""
    img = render_noiseless(preset, params, device=device, dtype=dtype, compile=compile)
    if noise and len(params):
        return noise_mod.add_noise(
            img, preset, params.exposure_time, params.noise_seed,
            normalize_after=normalize, compile=compile,
        )
    return noise_mod.normalize(img) if normalize else img


def simulate(
    preset: SimPreset | str,
    task: str,
    start: int,
    count: int,
    seed: int,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    noise: bool = True,
    normalize: bool = True,
    compile: bool = False,
) -> SimBatch:
    """Images [start, start + count) of the (preset, task, seed) stream.

    noise=False gives noiseless images; normalize=False keeps physical units (flux per pixel,
    counts/s for the magnitude-based presets). compile=True renders through torch.compile
    (a one-off compilation of tens of seconds per preset and class, then far faster on CPU).
    """
    preset = _resolve(preset)
    device = torch.device(device)
    params, labels = make_params(preset, task, start, count, seed)
    img = images_from_params(
        preset, params, device=device, dtype=dtype, noise=noise, normalize=normalize,
        compile=compile,
    )

    def dev(t: torch.Tensor, dt: torch.dtype = dtype) -> torch.Tensor:
        return t.to(device=device, dtype=dt)

    cols = {name: dev(getattr(params, name), torch.float64) for name in _PARAM_COLUMNS}
    cols["index"] = dev(params.index, torch.int64)
    cols["theta_e"] = dev(params.theta_e, torch.float64)
    cols["n_subhalos"] = dev((params.sub_mass > 0).sum(1), torch.int64)
    cols["noise_seed"] = dev(params.noise_seed, torch.int64)
    return SimBatch(
        images=img[:, None],
        labels=dev(labels, torch.int64),
        class_names=TASK_CLASSES[task],
        targets={
            "log10_m_a": dev(params.log10_m_a),
            "einstein_radius": dev(params.theta_e),
            "sub_mass_fraction": dev(params.sub_mass_fraction),
        },
        params=cols,
    )
