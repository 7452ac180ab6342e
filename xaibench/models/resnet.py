"""ResNet-18/50 (timm) made maskable by filling removed patches with a baseline (SPEC §1)."""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F

from xaibench.errors import XaibenchError
from xaibench.models.base import MaskedClassifier
from xaibench.models.pretrained import load_pretrained
from xaibench.registry import register_model

FILLS = ("mean", "zero", "blur")


class OccludedResNet(MaskedClassifier):
    """A timm ResNet; a removed patch's pixels are replaced by the fill (dataset mean, zero or a blur)."""

    def __init__(self, variant: str, num_classes: int, in_chans: int = 1, img_size: int = 28,
                 patch_size: int | None = None, fill: str = "mean", fill_value: torch.Tensor | None = None,
                 pretrained: str | None = None, **unused):
        super().__init__(img_size, patch_size, in_chans, num_classes)
        if fill not in FILLS:
            raise XaibenchError(f"unknown occlusion fill {fill!r}; valid: {', '.join(FILLS)}")
        self.fill = fill
        self.net = timm.create_model(variant, pretrained=False, num_classes=num_classes, in_chans=in_chans)
        if pretrained:
            load_pretrained(self.net, pretrained)
        # The per-channel value used by fill="mean"; set from the training images by the trainer.
        self.register_buffer("fill_value", torch.zeros(in_chans) if fill_value is None else fill_value.float())

    def occlude(self, x: torch.Tensor, keep_mask: torch.Tensor) -> torch.Tensor:
        if self.fill == "blur":
            k = self.patch_size * 2 + 1
            baseline = F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)
        elif self.fill == "zero":
            baseline = torch.zeros_like(x[:1])
        else:
            baseline = self.fill_value.to(x.dtype).view(1, -1, 1, 1)
        return torch.where(self.keep_to_pixels(keep_mask), x, baseline)

    def forward(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        if keep_mask is not None:
            x = self.occlude(x, keep_mask)
        return self.net(x)


@register_model("resnet18")
def resnet18(num_classes: int, in_chans: int = 1, img_size: int = 28, **kwargs) -> OccludedResNet:
    """ResNet-18 (timm) with patch occlusion by a baseline fill."""
    return OccludedResNet("resnet18", num_classes, in_chans, img_size, **kwargs)


@register_model("resnet50")
def resnet50(num_classes: int, in_chans: int = 1, img_size: int = 28, **kwargs) -> OccludedResNet:
    """ResNet-50 (timm) with patch occlusion by a baseline fill."""
    return OccludedResNet("resnet50", num_classes, in_chans, img_size, **kwargs)
