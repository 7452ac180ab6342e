"""The in-memory image dataset every loader returns: uint8 images, labels, optional ground truth."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

# Images are scaled to [-1, 1]: (x / 255 - MEAN) / STD.
PIXEL_MEAN = 0.5
PIXEL_STD = 0.5
SUM_CHUNK_ELEMENTS = 1 << 23  # uint8 values summed at a time by `channel_mean` (64 MB as int64)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    task: str  # "binary-class", "multi-class" or "ordinal-regression" (medmnist's names)
    n_classes: int
    in_chans: int
    size: int
    class_names: tuple[str, ...] = field(default=())


class ImageDataset(torch.utils.data.Dataset):
    """A split held in memory as a uint8 tensor [N, C, H, W] with int64 labels [N]; float only per batch.

    `pixel_masks` (bool [N, H, W]) is the ground truth where a dataset has one
    (the synthetic set); MedMNIST has none.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, info: DatasetInfo, split: str,
                 pixel_masks: torch.Tensor | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be [N={images.shape[0]}], got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()
        self.info = info
        self.split = split
        self.pixel_masks = pixel_masks

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_float(self.images[index]), self.labels[index]

    @property
    def has_ground_truth(self) -> bool:
        return self.pixel_masks is not None

    def batch(self, indices: torch.Tensor | slice | None = None, device: torch.device | str | None = None,
              as_rgb: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as float [B, C, H, W] in [-1, 1] and labels [B], on `device`."""
        images = self.images if indices is None else self.images[indices]
        labels = self.labels if indices is None else self.labels[indices]
        device = torch.device(device) if device is not None else images.device
        if device.type == "cuda" and images.device.type == "cpu":  # uint8 crosses, pinned, float on the device
            images, labels = images.contiguous().pin_memory(), labels.pin_memory()
        images = images.to(device, non_blocking=True)
        x = to_float(images)
        if as_rgb and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x, labels.to(device, non_blocking=True)

    def patch_masks(self, patch_size: int, indices: torch.Tensor | slice | None = None) -> torch.Tensor | None:
        """Ground truth per patch, bool [N, n_patches]: a patch is positive if it holds any lesion pixel."""
        if self.pixel_masks is None:
            return None
        masks = self.pixel_masks if indices is None else self.pixel_masks[indices]
        return pixel_to_patch_mask(masks, patch_size)

    def channel_mean(self) -> torch.Tensor:
        """Mean of the normalised training images per channel [C] (the default occlusion fill): exact sums of
        the uint8 values, a chunk of rows at a time, so no float copy of the split is made."""
        n, channels = self.images.shape[:2]
        rows = max(1, SUM_CHUNK_ELEMENTS // max(1, self.images[0].numel()))
        total = torch.zeros(channels, dtype=torch.int64, device=self.images.device)
        for start in range(0, n, rows):
            total += self.images[start:start + rows].sum(dim=(0, 2, 3), dtype=torch.int64)
        mean = total.double() / max(1, n * self.images.shape[2] * self.images.shape[3])
        return ((mean / 255.0 - PIXEL_MEAN) / PIXEL_STD).float()


def to_float(images: torch.Tensor) -> torch.Tensor:
    return (images.float() / 255.0 - PIXEL_MEAN) / PIXEL_STD


def pixel_to_patch_mask(pixel_masks: torch.Tensor, patch_size: int) -> torch.Tensor:
    """bool [N, H, W] -> bool [N, (H/P)*(W/P)] in the ViT's row-major patch order."""
    pooled = F.max_pool2d(pixel_masks[:, None].float(), kernel_size=patch_size, stride=patch_size)
    return pooled.flatten(1) > 0
