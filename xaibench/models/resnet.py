"""ResNet-18/50 (timm) made maskable by filling removed patches with a baseline (SPEC §1)."""
from __future__ import annotations

import timm
import torch

from xaibench.errors import XaibenchError
from xaibench.models.pretrained import load_pretrained
from xaibench.models.wrap import WrappedClassifier
from xaibench.registry import register_model

PIXEL_FILLS = ("mean", "zero", "blur")


class OccludedResNet(WrappedClassifier):
    """A timm ResNet; a removed patch's pixels are replaced by the fill (dataset mean, zero or a blur)."""

    family = "cnn"

    def __init__(self, variant: str, num_classes: int, in_chans: int = 1, img_size: int = 28,
                 patch_size: int | None = None, fill: str = "mean", fill_value: torch.Tensor | None = None,
                 pretrained: str | None = None, **unused):
        if fill not in PIXEL_FILLS:
            raise XaibenchError(f"unknown occlusion fill {fill!r}; valid: {', '.join(PIXEL_FILLS)}")
        net = timm.create_model(variant, pretrained=False, num_classes=num_classes, in_chans=in_chans)
        if pretrained:
            load_pretrained(net, pretrained)
        super().__init__(net, img_size=img_size, in_chans=in_chans, num_classes=num_classes, patch_size=patch_size,
                         fill=fill, fill_value=fill_value, family="cnn")


@register_model("resnet18")
def resnet18(num_classes: int, in_chans: int = 1, img_size: int = 28, **kwargs) -> OccludedResNet:
    """ResNet-18 (timm) with patch occlusion by a baseline fill."""
    return OccludedResNet("resnet18", num_classes, in_chans, img_size, **kwargs)


@register_model("resnet50")
def resnet50(num_classes: int, in_chans: int = 1, img_size: int = 28, **kwargs) -> OccludedResNet:
    """ResNet-50 (timm) with patch occlusion by a baseline fill."""
    return OccludedResNet("resnet50", num_classes, in_chans, img_size, **kwargs)
