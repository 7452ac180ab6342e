"""A user's own images as a dataset: `path:DIR` (class sub-folders of images) or `path:FILE.npz` (MedMNIST keys).

Folder layout and splits:
- DIR/train/<class>/*, DIR/val/<class>/*, DIR/test/<class>/*: the splits as given (a split folder
  that is absent is empty); the classes are the sorted sub-folder names of DIR/train.
- DIR/<class>/*: one pool, split per class by a seeded shuffle (`seed`, default 0) into 70 % train,
  10 % val and 20 % test (MedMNIST's 7:1:2), so every split holds every class where it can.
Images are 8-bit PNG, JPEG, BMP or TIFF files read by PIL; each is centre-cropped to a square and
resized to `size` (bicubic) where it differs. A folder whose images are all grey (a grey mode, or
three equal channels) gives 1 channel, else 3 (`channels=1|3` forces one). Files are taken in sorted
order, so a folder gives the same arrays on every machine.

An .npz file holds train_images, train_labels, val_..., test_... as MedMNIST's files do: images
uint8 [N, H, W] or [N, H, W, C] with H = W = `size` (checked, not resized), labels [N] or [N, 1].
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from xaibench.data.base import DatasetInfo, ImageDataset
from xaibench.errors import DataFileError, XaibenchError

PREFIX = "path:"
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SPLIT_FRACTIONS = (0.7, 0.1)  # train, val; the rest is test
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def is_path_name(name: str) -> bool:
    return name.startswith(PREFIX)


def check_path_name(name: str) -> str:
    """The dataset name unchanged if its folder or .npz file exists; one clear line otherwise."""
    path = Path(name[len(PREFIX):]).expanduser()
    if not name[len(PREFIX):]:
        raise XaibenchError(f"dataset {name!r} names no path; write path:DIR (class sub-folders) or path:FILE.npz")
    if path.is_dir() or (path.is_file() and path.suffix == ".npz"):
        return name
    what = "is not an .npz file" if path.is_file() else "does not exist"
    raise DataFileError(f"dataset {name!r}: {path} {what}; write path:DIR (a folder of class sub-folders of "
                        f"images) or path:FILE.npz (MedMNIST keys)")


def load_path_dataset(name: str, split: str = "train", size: int = 28, channels: int | None = None,
                      seed: int = 0, as_rgb: bool = False) -> ImageDataset:
    """The `split` of the folder or .npz file that `name` ('path:...') points to."""
    if split not in SPLITS:
        raise XaibenchError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if channels not in (None, 1, 3):
        raise XaibenchError(f"channels must be 1 or 3, got {channels!r}")
    path = Path(check_path_name(name)[len(PREFIX):]).expanduser()
    if path.suffix == ".npz" and path.is_file():
        images, labels, n_classes, class_names = _read_npz(path, split, size)
    else:
        images, labels, class_names = _read_folder(path, split, size, channels, seed)
        n_classes = len(class_names)
    if channels == 3 or as_rgb:
        images = images.expand(-1, 3, -1, -1).contiguous() if images.shape[1] == 1 else images
    info = DatasetInfo(name=name, task="binary-class" if n_classes == 2 else "multi-class", n_classes=n_classes,
                       in_chans=images.shape[1], size=size, class_names=class_names)
    return ImageDataset(images, labels, info, split)


def _read_npz(path: Path, split: str, size: int) -> tuple[torch.Tensor, torch.Tensor, int, tuple[str, ...]]:
    try:
        with np.load(path) as archive:
            missing = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels") if f"{s}_{kind}" not in archive]
            if missing:
                raise DataFileError(f"{path}: missing the MedMNIST keys {', '.join(missing)}")
            images = archive[f"{split}_images"]
            labels = archive[f"{split}_labels"]
            n_classes = 1 + max(int(archive[f"{s}_labels"].max(initial=0)) for s in SPLITS)
    except (OSError, ValueError) as error:
        raise DataFileError(f"{path}: not a readable npz file ({error})") from None
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[1:3] != (size, size):
        raise DataFileError(f"{path}: {split}_images must be uint8 [N, {size}, {size}] or [N, {size}, {size}, C] "
                            f"for --size {size}, got {images.dtype} {list(images.shape)}")
    labels = labels.reshape(len(labels), -1)[:, 0].astype(np.int64)
    if len(labels) != len(images) or (labels < 0).any():
        raise DataFileError(f"{path}: {split}_labels must be {len(images)} class indices >= 0")
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    tensor = tensor[:, None] if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2).contiguous()
    return tensor, torch.from_numpy(labels), max(n_classes, 2), tuple(str(i) for i in range(max(n_classes, 2)))


def _class_files(folder: Path) -> dict[str, list[Path]]:
    if not folder.is_dir():
        return {}
    return {sub.name: sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            for sub in sorted(folder.iterdir()) if sub.is_dir()}


def _split_files(root: Path, split: str, seed: int) -> tuple[list[tuple[Path, int]], tuple[str, ...]]:
    """(file, label) pairs of `split` and the class names, by the layout described in the module docstring."""
    if (root / "train").is_dir():
        classes = tuple(_class_files(root / "train"))
        by_class = _class_files(root / split)
        unknown = sorted(set(by_class) - set(classes))
        if unknown:
            raise DataFileError(f"{root / split}: classes {', '.join(unknown)} are not in {root / 'train'} "
                                f"(valid: {', '.join(classes)})")
        return [(f, classes.index(c)) for c, files in by_class.items() for f in files], classes
    by_class = _class_files(root)
    classes = tuple(by_class)
    rng = np.random.default_rng(seed)
    picked = []
    for label, files in enumerate(by_class.values()):
        order = rng.permutation(len(files))
        n_train, n_val = int(round(SPLIT_FRACTIONS[0] * len(files))), int(round(SPLIT_FRACTIONS[1] * len(files)))
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(files))}
        start, stop = bounds[split]
        picked += [(files[i], label) for i in sorted(order[start:stop])]
    return picked, classes


def _read_folder(root: Path, split: str, size: int, channels: int | None,
                 seed: int) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    from PIL import Image

    files, classes = _split_files(root, split, seed)
    if len(classes) < 2:
        raise DataFileError(f"{root}: needs at least 2 class sub-folders of images "
                            f"({PREFIX}DIR with DIR/<class>/*.png, or DIR/train/<class>/...), found {len(classes)}")
    images = []
    for path, _ in files:
        try:
            with Image.open(path) as image:
                images.append(_square(image, size))
        except OSError as error:
            raise DataFileError(f"{path}: not a readable image ({error})") from None
    if channels is None:
        channels = 1 if all(_is_grey(image) for image in images) else 3
    mode = "L" if channels == 1 else "RGB"
    arrays = [np.asarray(image.convert(mode), dtype=np.uint8).reshape(size, size, channels) for image in images]
    stacked = np.stack(arrays) if arrays else np.zeros((0, size, size, channels), dtype=np.uint8)
    tensor = torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()
    return tensor, torch.tensor([label for _, label in files], dtype=torch.int64), classes


def _square(image, size: int):
    """Centre-cropped to a square and resized to `size` (bicubic) where it differs; loaded into memory."""
    from PIL import Image

    width, height = image.size
    side = min(width, height)
    if width != height:
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if side != size:
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    image.load()
    return image


def _is_grey(image) -> bool:
    if image.mode in GREY_MODES:
        return True
    rgb = np.asarray(image.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
