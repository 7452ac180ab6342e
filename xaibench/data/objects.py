"""The model-truth dataset: a few objects on a flat background, labelled by a rule with signed, graded,
redundant and synergistic evidence, and re-renderable with any subset of its objects removed.

Each image holds K = 3..6 objects. An object is one of eight shapes drawn in a block of 2 x 2 patches of the
model's patch grid (`patch` px per patch), no patch shared by two objects; the background is one flat grey
everywhere. The label is 1 when the evidence score is positive, else 0 (only scenes scoring at least 2 away from
0 are drawn, so no label hangs on a single point of evidence):

    score = sum of WEIGHTS[shape] over the distinct shapes present      (a second copy adds nothing: redundancy)
          + SYNERGY_WEIGHT if both SYNERGY shapes are present            (either alone counts 0: synergy)

plus +2, disk +1, ring -1, saltire -2 (counter-evidence exists, and the weights are graded, so a binary mask
is not the best explanation); triangle and ell count +2 only together; bar and dots never count (distractors).
Objects are drawn at random brightness, so the class is carried by shapes alone.

Because the objects never overlap and the background is flat, `render(indices, keep)` re-draws an image with
any subset of its objects exactly as the generator would have drawn it without them: this is what lets the
engine compute the trained model's exact object Shapley values (xaibench/engine/truth.py).
"""
from __future__ import annotations

import numpy as np
import torch

from xaibench.data.base import DatasetInfo, ImageDataset
from xaibench.errors import XaibenchError
from xaibench.geometry import default_patch_size
from xaibench.registry import register_dataset

SHAPES = ("plus", "disk", "ring", "saltire", "triangle", "ell", "bar", "dots")
WEIGHTS = {"plus": 2, "disk": 1, "ring": -1, "saltire": -2}
SYNERGY = ("triangle", "ell")
SYNERGY_WEIGHT = 2
DISTRACTORS = ("bar", "dots")
MAX_OBJECTS = 6
BLOCK = 2  # an object covers BLOCK x BLOCK patches
BACKGROUND = 0.15  # the flat background, in [0, 1]
BRIGHTNESS = (0.55, 1.0)  # an object's brightness is drawn from this range
SPLIT_SEED = {"train": 0, "val": 1, "test": 2}
MARGIN = 2  # scenes scoring -1, 0 or +1 are not drawn: every label is decided by at least 2 points of evidence
DATA_VERSION = 2  # bump when a change to this file changes the images: it is part of every checkpoint key
DEFAULT_SAMPLES = {"train": 6000, "val": 300, "test": 300}


def shape_stamp(shape: str, side: int) -> np.ndarray:
    """float [side, side] in {0, 1}: the shape drawn in a square of `side` px (pixel centres in [-1, 1])."""
    centres = (np.arange(side) + 0.5) / side * 2 - 1
    v, u = np.meshgrid(centres, centres, indexing="ij")  # v down, u right
    au, av = np.abs(u), np.abs(v)
    r = np.sqrt(u**2 + v**2)
    inside = (au <= 0.8) & (av <= 0.8)
    if shape == "plus":
        mask = ((au <= 0.26) | (av <= 0.26)) & inside
    elif shape == "disk":
        mask = r <= 0.72
    elif shape == "ring":
        mask = (r <= 0.86) & (r >= 0.48)
    elif shape == "saltire":
        mask = ((np.abs(u - v) <= 0.36) | (np.abs(u + v) <= 0.36)) & inside
    elif shape == "triangle":  # apex up
        mask = (v >= -0.8) & (v <= 0.8) & (au <= (v + 0.8) / 1.6 * 0.85)
    elif shape == "ell":
        mask = ((u <= -0.3) | (v >= 0.3)) & inside
    elif shape == "bar":
        mask = (av <= 0.3) & (au <= 0.8)
    elif shape == "dots":
        mask = (np.maximum(np.abs(u + 0.45), np.abs(v + 0.45)) <= 0.3) | \
               (np.maximum(np.abs(u - 0.45), np.abs(v - 0.45)) <= 0.3)
    else:
        raise ValueError(shape)
    return mask.astype(np.float64)


def evidence_score(shapes: list[str] | tuple[str, ...]) -> int:
    """The rule's score of a set of present shapes (duplicates count once)."""
    present = set(shapes)
    score = sum(WEIGHTS.get(shape, 0) for shape in present)
    return score + (SYNERGY_WEIGHT if all(shape in present for shape in SYNERGY) else 0)


def _place(rng: np.random.Generator, grid: int, k: int) -> list[tuple[int, int]] | None:
    """k non-overlapping BLOCK x BLOCK cells (top-left patch) on a grid x grid patch grid, kept a patch apart
    where room allows; None if they do not fit."""
    candidates = [(r, c) for r in range(grid - BLOCK + 1) for c in range(grid - BLOCK + 1)]
    for spacing in (1, 0):
        for _attempt in range(10):  # greedy over a random order of all cells
            cells: list[tuple[int, int]] = []
            for index in rng.permutation(len(candidates)):
                r, c = candidates[index]
                if all(abs(r - r2) >= BLOCK + spacing or abs(c - c2) >= BLOCK + spacing for r2, c2 in cells):
                    cells.append((r, c))
                    if len(cells) == k:
                        return cells
    return None


def make_objects(n_samples: int, size: int = 28, patch: int = 4, seed: int = 0,
                 n_objects: tuple[int, int] = (3, MAX_OBJECTS), margin: int = MARGIN) -> dict[str, np.ndarray]:
    """Scene parameters of n images: shapes int64 [N, 6] (index into SHAPES, -1 = no object), cells int64
    [N, 6, 2] (top-left patch row, column), brightness float64 [N, 6], labels int64 [N] (balanced). Only scenes
    whose evidence score is at least `margin` away from 0 are drawn."""
    grid = size // patch
    if size % patch or grid < 2 * BLOCK:
        raise XaibenchError(f"objects: size {size} must be a multiple of patch {patch} with at least "
                            f"{2 * BLOCK} patches a side")
    low, high = n_objects
    if not 1 <= low <= high <= MAX_OBJECTS:
        raise XaibenchError(f"objects: n_objects must satisfy 1 <= low <= high <= {MAX_OBJECTS}, got {n_objects}")
    rng = np.random.default_rng(seed)
    shapes = np.full((n_samples, MAX_OBJECTS), -1, dtype=np.int64)
    cells = np.zeros((n_samples, MAX_OBJECTS, 2), dtype=np.int64)
    brightness = np.zeros((n_samples, MAX_OBJECTS))
    labels = rng.integers(0, 2, size=n_samples)
    for index in range(n_samples):
        while True:  # draw scenes until one scores non-zero with the wanted sign and fits the grid
            k = int(rng.integers(low, high + 1))
            drawn = rng.integers(0, len(SHAPES), size=k)
            score = evidence_score([SHAPES[s] for s in drawn])
            if abs(score) < max(margin, 1) or (score > 0) != bool(labels[index]):
                continue
            placed = _place(rng, grid, k)
            if placed is not None:
                break
        shapes[index, :k] = drawn
        cells[index, :k] = placed
        brightness[index, :k] = rng.uniform(*BRIGHTNESS, size=k)
    return {"shapes": shapes, "cells": cells, "brightness": brightness, "labels": labels.astype(np.int64)}


class ObjectDataset(ImageDataset):
    """An ImageDataset that knows its objects: which patches each covers, what the rule says of it, and how the
    image looks without any subset of them."""

    has_object_truth = True

    def __init__(self, scenes: dict[str, np.ndarray], info: DatasetInfo, split: str, patch: int, channels: int = 1):
        self.patch = patch
        self.channels = channels
        self.size = info.size
        self.shapes = torch.from_numpy(scenes["shapes"])
        self.cells = torch.from_numpy(scenes["cells"])
        self.brightness = torch.from_numpy(scenes["brightness"])
        self._stamps = torch.from_numpy(np.stack([shape_stamp(s, BLOCK * patch) for s in SHAPES]))
        every = torch.arange(len(self.shapes))
        layers = self.layers(every)
        images = self.render(every, torch.ones(1, 1, MAX_OBJECTS, dtype=torch.bool), layers)[:, 0]
        annotated = self.object_pixels(every, relevant_only=True, layers=layers)
        super().__init__(images, torch.from_numpy(scenes["labels"]), info, split, pixel_masks=annotated)

    @property
    def grid(self) -> int:
        return self.size // self.patch

    def present(self, indices: torch.Tensor) -> torch.Tensor:
        """bool [B, 6]: which object slots hold an object."""
        return self.shapes[indices] >= 0

    def layers(self, indices: torch.Tensor) -> torch.Tensor:
        """float64 [B, 6, H, W]: what each object adds to the flat background (0 for empty slots)."""
        size, side = self.size, BLOCK * self.patch
        shapes, cells, brightness = self.shapes[indices], self.cells[indices], self.brightness[indices]
        out = torch.zeros(len(shapes), MAX_OBJECTS, size, size, dtype=torch.float64)
        b, k = self.present(indices).nonzero(as_tuple=True)
        offsets = torch.arange(side)
        rows = (cells[b, k, 0] * self.patch)[:, None, None] + offsets[None, :, None]  # [M, side, 1]
        cols = (cells[b, k, 1] * self.patch)[:, None, None] + offsets[None, None, :]  # [M, 1, side]
        values = self._stamps[shapes[b, k]] * (brightness[b, k] - BACKGROUND)[:, None, None]
        out[b[:, None, None], k[:, None, None], rows, cols] = values
        return out

    def render(self, indices: torch.Tensor, keep: torch.Tensor, layers: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 [B, S, C, H, W]: image indices[b] drawn with the object slots keep[b, s] (bool [B, S, 6]; a
        [1, S, 6] or [B, 1, 6] mask broadcasts) only; the background stays where an object is left out."""
        layers = self.layers(indices) if layers is None else layers  # [B, 6, H, W]
        keep = keep.to(torch.float64).expand(len(layers), -1, -1)
        drawn = BACKGROUND + torch.einsum("bsk,bkhw->bshw", keep, layers)
        pixels = (drawn.clamp(0, 1) * 255).round().to(torch.uint8)
        return pixels[:, :, None].expand(-1, -1, self.channels, -1, -1).contiguous()

    def object_patches(self, indices: torch.Tensor) -> torch.Tensor:
        """long [B, n_patches]: the object slot covering each patch (row-major patch order), -1 = background."""
        grid = self.grid
        out = torch.full((len(indices), grid, grid), -1, dtype=torch.long)
        cells = self.cells[indices]
        for b, k in self.present(indices).nonzero().tolist():
            r, c = (int(v) for v in cells[b, k])
            out[b, r:r + BLOCK, c:c + BLOCK] = k
        return out.flatten(1)

    def object_kinds(self, indices: torch.Tensor) -> torch.Tensor:
        """long [B, 6]: per slot 1 = evidence (a weighted or synergy shape), 0 = distractor, -1 = empty."""
        shapes = self.shapes[indices]
        relevant = torch.tensor([name in WEIGHTS or name in SYNERGY for name in SHAPES])
        kinds = relevant[shapes.clamp(min=0)].long()
        return torch.where(shapes >= 0, kinds, torch.full_like(kinds, -1))

    def object_pixels(self, indices: torch.Tensor, relevant_only: bool = False,
                      layers: torch.Tensor | None = None) -> torch.Tensor:
        """bool [B, H, W]: the pixels of the objects (only those the rule can count, with relevant_only): the
        annotated region that plausibility compares a map with."""
        layers = (self.layers(indices) if layers is None else layers) != 0
        if relevant_only:
            layers = layers & (self.object_kinds(indices) == 1)[..., None, None]
        return layers.any(dim=1)


@register_dataset("objects")
def objects(split: str = "train", size: int = 28, root=None, download: bool = False, as_rgb: bool = False,
            patch: int | None = None, n_samples: int | None = None, seed: int = 0, margin: int = MARGIN) -> ObjectDataset:
    """Embedded default: objects with signed, graded, redundant and synergistic evidence; the trained model's
    exact object Shapley values are computable (no files)."""
    if split not in SPLIT_SEED:
        raise XaibenchError(f"unknown split {split!r}; valid: {', '.join(SPLIT_SEED)}")
    patch = patch or default_patch_size(size)
    count = DEFAULT_SAMPLES[split] if n_samples is None else n_samples
    scenes = make_objects(count, size, patch, seed=seed * 1000 + SPLIT_SEED[split], margin=margin)
    info = DatasetInfo(name="objects", task="binary-class", n_classes=2, in_chans=3 if as_rgb else 1, size=size,
                       class_names=("negative", "positive"))
    return ObjectDataset(scenes, info, split, patch, channels=3 if as_rgb else 1)


objects.data_version = DATA_VERSION
