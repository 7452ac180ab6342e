"""The one interface every evaluated model offers: a patch grid and a masked forward.

`forward(x, keep_mask)` gives logits; `forward_fn(x, keep_mask)` gives the class
probabilities that metrics are written against (SPEC §1).
"""
from __future__ import annotations

import torch
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.geometry import default_patch_size


class MaskedClassifier(nn.Module):
    """Base for models evaluated by xaibench: an image of side `img_size` split into n square patches.

    `family` tells explainers what kind of network this is: "vit" (token-based, with attention
    blocks the ViT methods read), "cnn" (a convolutional net occluded by a pixel fill) or "other".
    """

    family: str = "other"

    def __init__(self, img_size: int, patch_size: int | None, in_chans: int, num_classes: int):
        super().__init__()
        patch_size = patch_size or default_patch_size(img_size)
        if img_size % patch_size:
            raise XaibenchError(f"image size {img_size} is not a multiple of patch size {patch_size}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.grid_size = img_size // patch_size
        self.n_patches = self.grid_size**2
        self.in_chans = in_chans
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C, H, W], keep_mask bool [B, n] (None = all kept) -> logits [B, num_classes]."""
        raise NotImplementedError

    def forward_fn(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Class probabilities [B, num_classes] of x with the patches outside keep_mask removed."""
        return self.forward(x, keep_mask).float().softmax(dim=-1)

    def keep_to_pixels(self, keep_mask: torch.Tensor) -> torch.Tensor:
        """bool [B, n] -> bool [B, 1, H, W]: each patch's flag spread over its pixels."""
        grid = keep_mask.view(-1, 1, self.grid_size, self.grid_size)
        return grid.repeat_interleave(self.patch_size, 2).repeat_interleave(self.patch_size, 3)

    def patches_to_pixels(self, values: torch.Tensor) -> torch.Tensor:
        """float [B, n] -> [B, H, W] (nearest), for drawing patch attributions as images."""
        grid = values.view(-1, self.grid_size, self.grid_size)
        return grid.repeat_interleave(self.patch_size, 1).repeat_interleave(self.patch_size, 2)

    def pixels_to_patches(self, values: torch.Tensor) -> torch.Tensor:
        """float [B, H, W] -> [B, n]: sum over each patch (how pixel maps become patch attributions)."""
        b = values.shape[0]
        g, p = self.grid_size, self.patch_size
        return values.reshape(b, g, p, g, p).sum(dim=(2, 4)).reshape(b, g * g)
