"""The ring-size shortcut, measured: a classifier that sees only the radial profile.

If the lens mass depends on the class (DeepLense adds the substructure on top of a fixed main
lens), the azimuthally averaged radial profile alone separates the classes, although it knows
nothing of morphology. `profile_accuracy` fits a logistic regression on that profile and
returns its held-out accuracy for one pair of classes: about 0.5 means the data have no such
shortcut. Plain numpy (Newton steps on an L2-penalised log-likelihood), deterministic.
"""

from __future__ import annotations

import numpy as np
import torch

N_BINS = 16


def radial_profiles(images: torch.Tensor | np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """(N, n_bins) mean pixel value in equal-width rings around the image centre.

    images: (N, H, W) or (N, 1, H, W); the rings span radius 0 to half the image width.
    """
    x = np.asarray(images.cpu() if isinstance(images, torch.Tensor) else images, np.float64)
    x = x.reshape(x.shape[0], x.shape[-2], x.shape[-1])
    h, w = x.shape[1:]
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
    ring = np.minimum((r / (min(h, w) / 2) * n_bins).astype(int), n_bins)  # n_bins = outside
    onehot = np.eye(n_bins + 1)[ring.ravel()][:, :n_bins]  # (H*W, n_bins)
    return x.reshape(len(x), -1) @ onehot / onehot.sum(0)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 50) -> np.ndarray:
    """Weights (features + 1,) of an L2-penalised logistic regression, by Newton's method."""
    a = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(a.shape[1])
    reg = l2 * len(x) * np.eye(a.shape[1])
    reg[-1, -1] = 0.0  # no penalty on the intercept
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(a @ w)))
        grad = a.T @ (p - y) + reg @ w
        hess = (a * (p * (1 - p))[:, None]).T @ a + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def holdout_accuracy(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """Accuracy on a random half after fitting on the other half (features standardised)."""
    labels = np.asarray(labels, np.float64)
    order = np.random.default_rng(seed).permutation(len(labels))
    train, test = order[: len(order) // 2], order[len(order) // 2 :]
    mu, sd = features[train].mean(0), features[train].std(0) + 1e-12
    z = (features - mu) / sd
    w = fit_logistic(z[train], labels[train])
    pred = (np.hstack([z[test], np.ones((len(test), 1))]) @ w) > 0
    return float((pred == (labels[test] > 0.5)).mean())


PAIRS: tuple[tuple[str, str], ...] = (("no_sub", "cdm"), ("no_sub", "axion"), ("cdm", "axion"))


def profile_accuracy(
    preset, n_per_class: int = 200, seed: int = 0, pairs: tuple[tuple[str, str], ...] = PAIRS
) -> dict[tuple[str, str], float]:
    """Held-out accuracy of the radial-profile-only classifier for each pair of classes.

    preset: a SimPreset or preset name; pairs of ("axion", "cdm", "no_sub"). One multiclass
    simulation of n_per_class images per class (seed stream `seed`), half of each pair to fit.
    """
    from pipeline.data.simulate import TASK_CLASSES, simulate

    classes = TASK_CLASSES["multiclass"]
    b = simulate(preset, "multiclass", 0, n_per_class * len(classes), seed)
    profiles, labels = radial_profiles(b.images), b.labels.numpy()
    out = {}
    for pair in pairs:
        a, c = (classes.index(name) for name in pair)
        keep = (labels == a) | (labels == c)
        out[pair] = holdout_accuracy(profiles[keep], labels[keep] == c, seed)
    return out
