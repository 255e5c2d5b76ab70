"""Reader for the public DeepLense data layouts, and their import into Parquet shards.

Two layouts are understood, both "one folder per class" (classes sorted alphabetically):

- ``Model_X/{axion,cdm,no_sub}/*.npy`` with a ``Model_X_test`` sibling holding the test split.
  Axion files store an object array ``[image, m_a]`` (m_a in eV); the target kept is
  log10(m_a). Object arrays can only be loaded through pickle, and unpickling runs code chosen by
  whoever wrote the file: it is therefore opt-in (``allow_pickle=True`` / ``--allow-pickle``) and
  must only be used on files from a source you trust.
- ``lenses/{no_sub,sub}/*.png|jpg`` grayscale image files (129x129 in the public binary set).

A bad file (unreadable, not a 2-D image, NaN/inf, mixed sizes, axion mass not a positive finite
number) is an error naming the file; with ``skip_bad=True`` it is left out and recorded.
An empty class folder is always an error.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

NPY_SUFFIXES = frozenset({".npy"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
NORMALIZE = ("max", "none")
AXION = "axion"


class DeepLenseError(ValueError):
    """Input that cannot be imported as it is; the message names the file or folder."""


class BadFileError(DeepLenseError):
    """One input file is unusable; `skip_bad` may leave it out."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class ClassTree:
    """The files of one ``<root>/<class>/<file>`` tree, sorted by (class, file name)."""

    root: Path
    layout: str  # "npy" | "images"
    classes: tuple[str, ...]
    files: tuple[Path, ...]
    labels: tuple[int, ...]
    ignored: tuple[Path, ...] = ()


@dataclass
class DeepLenseData:
    """Images of one tree in memory: images (N, H, W) float32, labels (N,), log10_m_a (N,)."""

    classes: tuple[str, ...]
    layout: str
    images: np.ndarray
    labels: np.ndarray
    log10_m_a: np.ndarray
    files: list[str]
    skipped: list[dict[str, str]] = field(default_factory=list)


def infer_task(classes: Sequence[str]) -> str:
    """The task name a class set stands for (see simulate.TASK_CLASSES), else 'classification'."""
    known = {("no_sub", "sub"): "binary", ("axion", "cdm", "no_sub"): "multiclass"}
    return known.get(tuple(classes), "classification")


def find_test_sibling(root: str | Path) -> Path | None:
    """``Model_II`` -> ``Model_II_test`` when that folder exists."""
    root = Path(root).absolute()
    sib = root.parent / f"{root.name}_test"
    return sib if sib.is_dir() else None


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def scan_tree(root: str | Path, classes: Sequence[str] | None = None) -> ClassTree:
    """List class folders and their data files; `classes` (e.g. the training tree's) must match."""
    root = Path(root)
    if not root.is_dir():
        raise DeepLenseError(f"{root}: not a folder")
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and _visible(p))
    if not dirs:
        raise DeepLenseError(f"{root}: no class folders (expected e.g. axion/, cdm/, no_sub/)")
    found = tuple(d.name for d in dirs)
    if classes is not None and tuple(classes) != found:
        raise DeepLenseError(
            f"{root}: class folders {list(found)} differ from the training set's {list(classes)}"
        )
    per_class = {
        d.name: sorted(p for p in d.iterdir() if p.is_file() and _visible(p)) for d in dirs
    }
    all_files = [p for ps in per_class.values() for p in ps]
    if any(p.suffix.lower() in NPY_SUFFIXES for p in all_files):
        layout, suffixes = "npy", NPY_SUFFIXES
    elif any(p.suffix.lower() in IMAGE_SUFFIXES for p in all_files):
        layout, suffixes = "images", IMAGE_SUFFIXES
    else:
        raise DeepLenseError(f"{root}: no .npy or image files in the class folders {list(found)}")
    files: list[Path] = []
    labels: list[int] = []
    ignored: list[Path] = []
    for label, d in enumerate(dirs):
        keep = [p for p in per_class[d.name] if p.suffix.lower() in suffixes]
        ignored += [p for p in per_class[d.name] if p.suffix.lower() not in suffixes]
        if not keep:
            raise DeepLenseError(f"{d}: empty class folder (no {layout} files)")
        files += keep
        labels += [label] * len(keep)
    return ClassTree(root, layout, found, tuple(files), tuple(labels), tuple(ignored))


def _as_image(arr: Any, path: Path) -> np.ndarray:
    try:
        img = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise BadFileError(path, f"image is not numeric ({e})") from None
    squeezed = np.squeeze(img)
    if squeezed.ndim != 2 or min(squeezed.shape) < 2:
        raise BadFileError(path, f"wrong shape {img.shape}; expected a 2-D image (H, W)")
    if not np.isfinite(squeezed).all():
        raise BadFileError(path, "image contains NaN or inf")
    return squeezed


def _read_npy(path: Path, class_name: str, allow_pickle: bool) -> tuple[np.ndarray, float]:
    try:
        arr = np.load(path, allow_pickle=allow_pickle)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DeepLenseError(
                f"{path}: stores a pickled object array (e.g. [image, m_a] for axion files); "
                "loading it runs pickle, which can execute code. Pass --allow-pickle "
                "(allow_pickle=True) only for files from a source you trust."
            ) from None
        raise BadFileError(path, f"unreadable .npy ({e})") from None
    except (OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise BadFileError(path, f"unreadable .npy ({type(e).__name__}: {e})") from None
    except Exception as e:  # unpickling arbitrary bytes can raise nearly anything
        raise BadFileError(path, f"unreadable .npy ({type(e).__name__}: {e})") from None
    if isinstance(arr, np.lib.npyio.NpzFile):
        arr.close()
        raise BadFileError(path, "is an .npz archive, expected one array")
    log10_m_a = math.nan
    if arr.dtype == object:
        items = arr.ravel()
        if items.size != 2:
            raise BadFileError(path, f"object array of {items.size} items; expected [image, m_a]")
        img = _as_image(items[0], path)
        if class_name == AXION:
            try:
                m_a = float(items[1])
            except (TypeError, ValueError):
                raise BadFileError(path, f"axion mass {items[1]!r} is not a number") from None
            if not (math.isfinite(m_a) and m_a > 0):
                raise BadFileError(path, f"axion mass {m_a!r} is not a positive finite number")
            log10_m_a = math.log10(m_a)
        return img, log10_m_a
    return _as_image(arr, path), log10_m_a


def _read_image_file(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                scale = 65535.0 if im.mode.startswith("I;16") else 1.0
                arr = np.asarray(im, dtype=np.float64) / scale
            elif im.mode == "F":
                arr = np.asarray(im, dtype=np.float64)
            else:  # L, LA, P, RGB, RGBA ...: luminance in [0, 1]
                arr = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise BadFileError(path, f"unreadable image ({type(e).__name__}: {e})") from None
    return _as_image(arr, path)


def _normalize(img: np.ndarray, how: str, path: Path) -> np.ndarray:
    if how == "none":
        return img
    peak = float(img.max())
    if not peak > 0:
        raise BadFileError(path, f"image maximum is {peak:g}; cannot normalise to max 1")
    return img / peak


class _ShapeGuard:
    """Every image must share the first good image's (H, W): mixed sizes are bad files."""

    def __init__(self, shape: tuple[int, int] | None = None) -> None:
        self.shape, self.first = shape, None

    def check(self, img: np.ndarray, path: Path) -> None:
        if self.shape is None:
            self.shape, self.first = (int(img.shape[0]), int(img.shape[1])), path
        elif tuple(img.shape) != self.shape:
            ref = f" like {self.first}" if self.first is not None else ""
            raise BadFileError(
                path, f"image size {tuple(img.shape)}, expected {self.shape}{ref} (mixed sizes)"
            )


def read_file(
    path: Path, layout: str, class_name: str, *, allow_pickle: bool = False, normalize: str = "max"
) -> tuple[np.ndarray, float]:
    """One image (H, W) float32 and its log10_m_a (NaN unless an axion file carries a mass)."""
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
    if layout == "npy":
        img, log10_m_a = _read_npy(path, class_name, allow_pickle)
    else:
        img, log10_m_a = _read_image_file(path), math.nan
    return _normalize(img, normalize, path).astype(np.float32), log10_m_a


def iter_images(
    tree: ClassTree,
    order: Sequence[int],
    *,
    allow_pickle: bool = False,
    skip_bad: bool = False,
    normalize: str = "max",
    guard: _ShapeGuard | None = None,
    on_skip: Callable[[Path, str], None] | None = None,
) -> Iterator[tuple[int, np.ndarray, float]]:
    """Yield (file position, image, log10_m_a) for tree.files[order]; bad files raise or skip."""
    guard = guard or _ShapeGuard()
    for i in order:
        path = tree.files[i]
        try:
            img, m = read_file(
                path,
                tree.layout,
                tree.classes[tree.labels[i]],
                allow_pickle=allow_pickle,
                normalize=normalize,
            )
            guard.check(img, path)
        except BadFileError as e:
            if not skip_bad:
                raise
            if on_skip is not None:
                on_skip(path, e.reason)
            continue
        yield i, img, m


def read_deeplense(
    root: str | Path,
    *,
    allow_pickle: bool = False,
    skip_bad: bool = False,
    normalize: str = "max",
    classes: Sequence[str] | None = None,
) -> DeepLenseData:
    """Read a whole tree into memory (small sets, tests); `import_deeplense` streams instead."""
    tree = scan_tree(root, classes)
    skipped: list[dict[str, str]] = []
    images, labels, masses, files = [], [], [], []
    for i, img, m in iter_images(
        tree,
        range(len(tree.files)),
        allow_pickle=allow_pickle,
        skip_bad=skip_bad,
        normalize=normalize,
        on_skip=lambda p, r: skipped.append({"file": str(p), "reason": r}),
    ):
        images.append(img)
        labels.append(tree.labels[i])
        masses.append(m)
        files.append(str(tree.files[i].relative_to(tree.root)))
    for c, name in enumerate(tree.classes):
        if c not in labels:
            raise DeepLenseError(f"{tree.root / name}: every file in this class folder was bad")
    return DeepLenseData(
        classes=tree.classes,
        layout=tree.layout,
        images=np.stack(images),
        labels=np.asarray(labels, dtype=np.int64),
        log10_m_a=np.asarray(masses, dtype=np.float32),
        files=files,
        skipped=skipped,
    )


def _rel(path: Path, tree: ClassTree) -> str:
    """'Model_II/axion/x.npy': names files with their tree so train and test files differ."""
    return path.relative_to(tree.root.parent).as_posix()


def import_deeplense(
    src: str | Path,
    out_dir: str | Path,
    *,
    test_dir: str | Path | None | bool = True,
    allow_pickle: bool = False,
    skip_bad: bool = False,
    normalize: str = "max",
    seed: int = 0,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    chunk_size: int = 1024,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Stream a DeepLense tree into Parquet shards (constant memory); returns the manifest.

    test_dir=True looks for the ``<src>_test`` sibling, a path names the test tree, False/None
    uses none. With a test tree, `src` is split into train/val in the ratio of the first two
    fractions; without one, into train/val/test by `fractions`. Splits are stratified by class
    and fixed by `seed`; the shard column ``index`` is a file's position in its tree's sorted
    file list and ``source_file`` its path. `progress(done, total)` is called per chunk.
    """
    from pipeline.data.shard_writer import ShardWriter
    from pipeline.data.splits import SPLITS, assign_splits, parse_fractions

    fr = parse_fractions(fractions)
    src = Path(src).absolute()
    train_tree = scan_tree(src)
    test_path = (
        find_test_sibling(src) if test_dir is True else (Path(test_dir) if test_dir else None)
    )
    test_tree = scan_tree(test_path, train_tree.classes) if test_path is not None else None
    if test_tree is not None and test_tree.layout != train_tree.layout:
        raise DeepLenseError(
            f"{test_tree.root}: layout {test_tree.layout}, training set has {train_tree.layout}"
        )
    labels = np.asarray(train_tree.labels)
    if test_tree is None:
        codes = assign_splits(labels, fr, seed)
        used = fr
    else:
        tv = fr[0] + fr[1]
        if tv <= 0:
            raise ValueError(f"split fractions {fr} leave nothing for train/val")
        used = (fr[0] / tv, fr[1] / tv, 0.0)
        codes = assign_splits(labels, used, seed)
    plan: list[tuple[str, ClassTree, list[int]]] = [
        (name, train_tree, np.flatnonzero(codes == k).tolist()) for k, name in enumerate(SPLITS)
    ]
    if test_tree is not None:
        plan[2] = ("test", test_tree, list(range(len(test_tree.files))))
    total = sum(len(order) for _, _, order in plan)
    has_mass = train_tree.layout == "npy" and AXION in train_tree.classes
    source = {
        "kind": "deeplense",
        "path": str(src),
        "test_path": None if test_tree is None else str(test_tree.root),
        "layout": train_tree.layout,
        "normalize": normalize,
        "allow_pickle": allow_pickle,
        "ignored_files": len(train_tree.ignored) + (len(test_tree.ignored) if test_tree else 0),
    }
    guard = _ShapeGuard()
    done = 0
    with ShardWriter(
        out_dir,
        classes=train_tree.classes,
        task=infer_task(train_tree.classes),
        seed=seed,
        source=source,
        fractions=used,
        overwrite=overwrite,
    ) as writer:
        per_class_kept = {s: np.zeros(len(train_tree.classes), dtype=np.int64) for s in SPLITS}
        for split, tree, order in plan:
            for start in range(0, len(order), chunk_size):
                part = order[start : start + chunk_size]
                imgs, labs, masses, names, idxs = [], [], [], [], []
                for i, img, m in iter_images(
                    tree,
                    part,
                    allow_pickle=allow_pickle,
                    skip_bad=skip_bad,
                    normalize=normalize,
                    guard=guard,
                    on_skip=lambda p, r, t=tree: writer.skip(_rel(p, t), r),
                ):
                    imgs.append(img)
                    labs.append(tree.labels[i])
                    masses.append(m)
                    idxs.append(i)
                    names.append(_rel(tree.files[i], tree))
                done += len(part)
                if progress is not None:
                    progress(done, total)
                if not imgs:
                    continue
                lab = np.asarray(labs, dtype=np.int64)
                per_class_kept[split] += np.bincount(lab, minlength=len(tree.classes))
                writer.add(
                    split,
                    np.stack(imgs)[:, None],
                    lab,
                    index=np.asarray(idxs, dtype=np.int64),
                    targets={"log10_m_a": np.asarray(masses, np.float32)} if has_mass else None,
                    source_file=names,
                )
        for c, name in enumerate(train_tree.classes):
            if per_class_kept["train"][c] + per_class_kept["val"][c] == 0:
                raise DeepLenseError(f"{src / name}: every file in this class folder was bad")
            if test_tree is not None and per_class_kept["test"][c] == 0:
                raise DeepLenseError(
                    f"{test_tree.root / name}: every file in this class folder was bad"
                )
        return writer.commit()
