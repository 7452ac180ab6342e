"""The embedded default dataset: procedural 'lesion' images with ground truth, made from a seed.

The class is carried by the lesion's shape alone: shapes have about the same
area, lesion and distractor brightness come from one distribution, and the
lesion sits at a random position among distractor shapes on a textured
background, so global intensity statistics do not reveal the class.
"""
from __future__ import annotations

import numpy as np
import torch

from xaibench.data.base import DatasetInfo, ImageDataset
from xaibench.errors import XaibenchError
from xaibench.registry import register_dataset

SHAPES = ("disk", "ring", "cross", "frame", "saltire", "triangle")
SPLIT_SEED = {"train": 0, "val": 1, "test": 2}
DEFAULT_SAMPLES = {"train": 2000, "val": 300, "test": 300}


def _shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, scale: float) -> np.ndarray:
    """Pixel mask of a shape centred at the origin; each has about 30 px of area at scale 1 (28 px images)."""
    ay, ax = np.abs(dy) / scale, np.abs(dx) / scale
    r = np.sqrt(ay**2 + ax**2)
    if shape == "disk":
        return r <= 3.1
    if shape == "ring":
        return (r <= 4.3) & (r >= 2.9)
    if shape == "cross":
        return ((ay <= 0.9) & (ax <= 4.3)) | ((ax <= 0.9) & (ay <= 4.3))
    if shape == "frame":
        return (np.maximum(ay, ax) <= 3.9) & (np.maximum(ay, ax) >= 2.8)
    if shape == "saltire":
        return (ax <= 3.6) & (ay <= 3.6) & ((np.abs(ay - ax) <= 1.15) | (np.abs(ay + ax) <= 1.15))
    if shape == "triangle":  # apex up, base 8, height 7
        y = dy / scale
        return (y >= -3.5) & (y <= 3.5) & (ax <= (y + 3.5) * 4.0 / 7.0)
    raise ValueError(shape)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth background: a few random low-frequency waves."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    field = np.zeros((size, size))
    for _ in range(4):
        fy, fx = rng.uniform(0.5, 3.0, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        field += np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)
    return field / 4.0


def make_synthetic(n_samples: int, size: int = 28, channels: int = 1, n_classes: int = 3, seed: int = 0,
                   n_distractors: tuple[int, int] = (2, 4)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images uint8 [N, C, H, W], labels int64 [N], lesion pixel masks bool [N, H, W]."""
    if not 2 <= n_classes <= len(SHAPES):
        raise XaibenchError(f"synthetic n_classes must be in 2..{len(SHAPES)}, got {n_classes}")
    if size < 16:
        raise XaibenchError(f"synthetic size must be >= 16, got {size}")
    if channels not in (1, 3):
        raise XaibenchError(f"synthetic channels must be 1 or 3, got {channels}")
    rng = np.random.default_rng(seed)
    scale0 = size / 28.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    images = np.empty((n_samples, channels, size, size), dtype=np.uint8)
    labels = rng.integers(0, n_classes, size=n_samples)
    masks = np.zeros((n_samples, size, size), dtype=bool)
    margin = 5.5 * scale0
    for index in range(n_samples):
        background = rng.uniform(0.15, 0.35) + 0.08 * _texture(rng, size)
        image = np.repeat(background[None], channels, axis=0)
        scale = scale0 * rng.uniform(0.85, 1.15)
        cy, cx = rng.uniform(margin, size - 1 - margin, size=2)
        lesion = _shape_mask(SHAPES[labels[index]], yy - cy, xx - cx, scale)
        masks[index] = lesion
        occupied = lesion.copy()
        shapes = [(lesion, rng.uniform(0.25, 0.55))]
        for _ in range(rng.integers(n_distractors[0], n_distractors[1] + 1)):
            for _attempt in range(10):  # distractors: small blobs and bars that are no class shape
                dy0, dx0 = rng.uniform(2, size - 3, size=2)
                if rng.random() < 0.5:
                    half = scale0 * rng.uniform(1.0, 1.6)
                    blob = (np.abs(yy - dy0) <= half) & (np.abs(xx - dx0) <= half)
                else:
                    length, angle = scale0 * rng.uniform(3.0, 5.0), rng.uniform(0, np.pi)
                    along = (yy - dy0) * np.sin(angle) + (xx - dx0) * np.cos(angle)
                    across = (yy - dy0) * np.cos(angle) - (xx - dx0) * np.sin(angle)
                    blob = (np.abs(along) <= length) & (np.abs(across) <= 0.6 * scale0)
                grown = np.zeros_like(occupied)
                grown[1:-1, 1:-1] = occupied[:-2, 1:-1] | occupied[2:, 1:-1] | occupied[1:-1, :-2] | occupied[1:-1, 2:]
                if not (blob & (occupied | grown)).any():
                    occupied |= blob
                    shapes.append((blob, rng.uniform(0.25, 0.55)))
                    break
        for shape_mask, brightness in shapes:
            tint = rng.uniform(0.7, 1.0, size=channels) if channels == 3 else np.ones(1)
            image[:, shape_mask] += brightness * tint[:, None]
        image += rng.normal(0.0, 0.04, size=image.shape)
        images[index] = np.clip(image * 255.0, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64), masks


@register_dataset("synthetic")
def synthetic(split: str = "train", size: int = 28, root=None, download: bool = False, as_rgb: bool = False,
              channels: int = 1, n_classes: int = 3, n_samples: int | None = None, seed: int = 0) -> ImageDataset:
    """Embedded default: lesion-shape classes among distractors, with ground-truth masks (no files)."""
    if split not in SPLIT_SEED:
        raise XaibenchError(f"unknown split {split!r}; valid: {', '.join(SPLIT_SEED)}")
    count = DEFAULT_SAMPLES[split] if n_samples is None else n_samples
    images, labels, masks = make_synthetic(count, size, 3 if as_rgb else channels, n_classes,
                                           seed=seed * 1000 + SPLIT_SEED[split])
    info = DatasetInfo(name="synthetic", task="multi-class" if n_classes > 2 else "binary-class",
                       n_classes=n_classes, in_chans=images.shape[1], size=size,
                       class_names=SHAPES[:n_classes])
    return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), info, split,
                        pixel_masks=torch.from_numpy(masks))
