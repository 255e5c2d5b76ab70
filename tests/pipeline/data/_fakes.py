"""Small fake DeepLense trees written with np.save / PIL, shared by the data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("axion", "cdm", "no_sub")


def lens_image(rng: np.random.Generator, size: int = 12) -> np.ndarray:
    """A positive blob plus noise: something with a positive maximum, like a lens image."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    return 3.0 * np.exp(-(x**2 + y**2) / 8.0) + 0.01 * rng.random((size, size))


def save_axion(path: Path, img: np.ndarray, m_a: object) -> None:
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = img, m_a
    np.save(path, arr, allow_pickle=True)


def make_model_tree(
    root: Path, per_class: int = 5, size: int = 12, seed: int = 0, masses: list | None = None
) -> Path:
    """<root>/{axion,cdm,no_sub}/*.npy; axion files are object arrays [image, m_a]."""
    rng = np.random.default_rng(seed)
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            img = lens_image(rng, size)
            if c == "axion":
                m_a = masses[i] if masses else 10.0 ** rng.uniform(-24, -22)
                save_axion(root / c / f"{c}_sim_{i}.npy", img, m_a)
            elif i % 2:
                np.save(root / c / f"{c}_sim_{i}.npy", img[None])  # (1, H, W) like some dumps
            else:
                np.save(root / c / f"{c}_sim_{i}.npy", img)
    return root


def make_image_tree(root: Path, per_class: int = 4, size: int = 13, suffix: str = ".png") -> Path:
    """<root>/{no_sub,sub}/*.png: 8-bit grayscale image files like the binary lens set."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for c in ("no_sub", "sub"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            img = (lens_image(rng, size) / 3.1 * 255).astype(np.uint8)
            Image.fromarray(img).save(root / c / f"img_{i}{suffix}")
    return root
