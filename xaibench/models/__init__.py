"""Where data becomes a model: the model registry, the maskable ViT, OFA, the baselines and any wrapped classifier."""
from __future__ import annotations

from xaibench.models.base import MaskedClassifier, default_patch_size
from xaibench.models.ofa import OFANet
from xaibench.models.resnet import OccludedResNet
from xaibench.models.vit import VIT_ARCHS, MaskableViT, ViTClassifier
from xaibench.models.wrap import (
    FILLS,
    WrappedClassifier,
    build_classifier,
    detect_family,
    load_checkpoint,
    wrap_classifier,
)
from xaibench.registry import MODELS, list_models


def create_model(name: str, num_classes: int, in_chans: int = 1, img_size: int = 28, **kwargs) -> MaskedClassifier:
    """Build a registered model; unknown names raise UnknownNameError listing the valid ones."""
    return MODELS.create(name, num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)


__all__ = ["FILLS", "MaskedClassifier", "MaskableViT", "OFANet", "OccludedResNet", "VIT_ARCHS", "ViTClassifier",
           "WrappedClassifier", "build_classifier", "create_model", "default_patch_size", "detect_family",
           "list_models", "load_checkpoint", "wrap_classifier"]
