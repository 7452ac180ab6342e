"""Small format-true MedMNIST+ files for tests and benchmarks: the release's keys, dtypes, shapes and labels.

`write_fixture(name, size, folder)` writes `folder/<name>[_<size>].npz` as the release names it, with
`{train,val,test}_images` uint8 [N, H, W] (grey) or [N, H, W, 3] (RGB) and `{train,val,test}_labels`
uint8 [N, 1] in 0..K-1, every class in every split, compressed like the release. The images are
noise with a bright square whose position depends on the class, so a model can learn them.

These files are not the release: their MD5 differs from medmnist's, and loading them needs the folder
named in $XAIBENCH_UNVERIFIED_DATA (see `medmnist_sets.UNVERIFIED_ENV` and docs/data.md).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from xaibench.data.medmnist_sets import PAPER_DATASETS, SPLITS, UNVERIFIED_ENV, _check_name_size, _info, file_name
from xaibench.errors import XaibenchError

DEFAULT_PER_CLASS = {"train": 3, "val": 1, "test": 2}


def split_counts(name: str, per_class: dict[str, int] | None = None, n_samples=None) -> dict[str, int]:
    """Images per split: `n_samples` ({split: count}, or "release" for the release's counts), else
    `per_class[split]` (default DEFAULT_PER_CLASS) times the number of classes."""
    info = _info(name)
    n_classes = len(info["label"])
    if n_samples == "release":
        counts = dict(info["n_samples"])
    elif n_samples is not None:
        counts = {split: int(n_samples[split]) for split in SPLITS}
    else:
        counts = {split: int(count) * n_classes for split, count in {**DEFAULT_PER_CLASS, **(per_class or {})}.items()}
    if any(counts[split] < n_classes for split in SPLITS):
        raise XaibenchError(f"{name}: every split needs at least one image of each of its {n_classes} classes, "
                            f"got {counts}")
    return counts


def fixture_arrays(name: str, size: int, per_class: dict[str, int] | None = None, seed: int = 0,
                   n_samples=None) -> dict[str, np.ndarray]:
    """The six arrays of a release file; images per split as `split_counts` gives them, classes in turn."""
    _check_name_size(name, size)
    counts = split_counts(name, per_class, n_samples)
    info = _info(name)
    n_classes, channels = len(info["label"]), info["n_channels"]
    arrays = {}
    for index, split in enumerate(SPLITS):
        generator = torch.Generator().manual_seed(seed * 1000 + index * 100 + PAPER_DATASETS.index(name))
        labels = torch.arange(counts[split]) % n_classes
        labels = labels[torch.randperm(len(labels), generator=generator)]
        arrays[f"{split}_images"] = _images(labels, size, channels, n_classes, generator)
        arrays[f"{split}_labels"] = labels.to(torch.uint8).numpy()[:, None]
    return arrays


def _images(labels: torch.Tensor, size: int, channels: int, n_classes: int,
            generator: torch.Generator) -> np.ndarray:
    """uint8 [N, H, W] or [N, H, W, 3]: noise in 0..127, a square of side size/4 at 200..255 placed by class."""
    n, side = len(labels), max(2, size // 4)
    images = torch.randint(0, 128, (n, size, size, channels), dtype=torch.uint8, generator=generator)
    cells = size - side + 1
    for i, label in enumerate(labels.tolist()):
        position = label * (cells * cells - 1) // max(1, n_classes - 1)
        row, col = divmod(position, cells)
        images[i, row:row + side, col:col + side] = torch.randint(
            200, 256, (side, side, channels), dtype=torch.uint8, generator=generator)
    images = images.numpy()
    return images[..., 0].copy() if channels == 1 else images


def write_fixture(name: str, size: int, folder: str | os.PathLike, per_class: dict[str, int] | None = None,
                  seed: int = 0, n_samples=None) -> Path:
    """Write one format-true file under the release's file name; returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name(name, size)
    arrays = fixture_arrays(name, size, per_class, seed, n_samples)
    tmp = path.with_name(path.name + ".part.npz")  # np.savez adds .npz to names without it
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return path


def write_fixtures(folder: str | os.PathLike, sizes=(28,), names=PAPER_DATASETS,
                   per_class: dict[str, int] | None = None, seed: int = 0, n_samples=None) -> list[Path]:
    """`write_fixture` for every name and size."""
    return [write_fixture(name, size, folder, per_class, seed, n_samples) for size in sizes for name in names]


def main(argv=None) -> int:
    """`python -m xaibench.data.fixtures FOLDER [--sizes 28,64] [--names a,b] [--release-counts]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m xaibench.data.fixtures",
                                     description="Write format-true MedMNIST+ fixture files (not the release).")
    parser.add_argument("folder")
    parser.add_argument("--sizes", default="28", help="comma-separated image sides (default 28)")
    parser.add_argument("--names", default=",".join(PAPER_DATASETS), help="comma-separated sets (default all nine)")
    parser.add_argument("--release-counts", action="store_true", help="as many images per split as the release")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    paths = write_fixtures(args.folder, sizes, args.names.split(","), seed=args.seed,
                           n_samples="release" if args.release_counts else None)
    for path in paths:
        print(path)
    print(f"read them with {UNVERIFIED_ENV}={Path(args.folder).resolve()} (their MD5 is not the release's)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
