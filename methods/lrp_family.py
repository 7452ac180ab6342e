"""Relevance propagation: conservative LRP for the ViT family (in-tree) and zennit's LRP for ResNets.

`clrp` follows Ali et al. (ICML 2022, "XAI for Transformers: better explanations through conservative
propagation"): the attention weights (AH-rule) and the LayerNorm scale (LN-rule) are treated as constants, GELU
passes relevance by the identity rule (as AttnLRP and lxt's ViT rules do), and the rest is LRP-0, computed as
gradient x input on the network so changed. lxt itself drives only torchvision's and Hugging Face's
transformers, not timm's ViT, hence the in-tree version. `zennit.lrp` runs a zennit composite (LGPL-3.0+,
optional: `pip install 'xaibench[lrp]'`) on a timm ResNet, with its batch norms merged into the convolutions
and its residual sums made explicit (`_timm_resnet_canonizer`).
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.registry import register_method

from .attention_family import VIT_REQUIREMENT, VIT_REQUIRES, attention_weights, is_attention
from .base import Explainer
from .captum_family import _no_inplace
from .optional import require, summary

# -- conservative LRP for the ViT family -------------------------------------------------------------------------


def _layer_norm_rule(module: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LN-rule: LayerNorm with its standard deviation held constant (linear in x)."""
    centred = x - x.mean(dim=-1, keepdim=True)
    scale = (centred.pow(2).mean(dim=-1, keepdim=True) + module.eps).sqrt().detach()
    out = centred / scale
    if module.weight is not None:
        out = out * module.weight
    return out + module.bias if module.bias is not None else out


def _identity_rule(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Identity rule: act(x) = x * (act(x) / x) with the ratio held constant, so relevance passes unchanged."""
    out = type(module).forward(module, x)
    ratio = torch.where(x.abs() > 1e-6, out / torch.where(x.abs() > 1e-6, x, torch.ones_like(x)),
                        torch.full_like(x, 0.5))
    return x * ratio.detach()


def _normalize_rule(input: torch.Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12,
                    out: Any = None) -> torch.Tensor:
    """F.normalize with the norm held constant (a normalised vector would otherwise carry no relevance)."""
    return input / input.norm(p, dim=dim, keepdim=True).clamp_min(eps).detach()


@contextlib.contextmanager
def conservative_rules(model: nn.Module) -> Iterator[None]:
    """While open, `model`'s forward is the network Ali et al.'s rules explain, so gradient x input = LRP relevance.

    Attention weights, LayerNorm scales and F.normalize's norms are constants, GELU is linear with its ratio held;
    OFA's class-side vectors (`proj_class`) are constants too, as attention weights are (one relevance path).
    F.normalize is swapped in torch.nn.functional for the call.
    """
    patched = []
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.forward = functools.partial(_layer_norm_rule, module)
            patched.append(module)
        elif isinstance(module, nn.GELU):
            module.forward = functools.partial(_identity_rule, module)
            patched.append(module)
    attention = [module for module in model.modules() if is_attention(module)]
    class_side = getattr(model, "proj_class", None)
    hook = class_side.register_forward_hook(lambda m, args, out: out.detach()) if class_side is not None else None
    normalize = F.normalize
    F.normalize = _normalize_rule
    try:
        with attention_weights(attention, lambda index, weights: weights.detach()):
            yield
    finally:
        F.normalize = normalize
        if hook is not None:
            hook.remove()
        for module in patched:
            module.__dict__.pop("forward", None)


@register_method("clrp")
class ConservativeLRPExplainer(Explainer):
    """Conservative LRP for ViTs (Ali et al. 2022): AH- and LN-rules, identity on GELU; signed pixel sums per patch."""

    families = ("vit",)
    requires = VIT_REQUIRES
    requirement = VIT_REQUIREMENT

    def attribute(self, inputs, target, generator=None):
        x = inputs.detach().clone().requires_grad_(True)
        with conservative_rules(self.model):
            logit = self.model(x).gather(1, target[:, None]).sum()
            (grad,) = torch.autograd.grad(logit, x)
        return self.to_patches((x.detach() * grad).sum(dim=1))  # the relevance map [B, H, W] summed per patch


# -- zennit's LRP for ResNets ------------------------------------------------------------------------------------


def _residual_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's BasicBlock / Bottleneck forward with the residual sum through a zennit `Sum` module."""
    shortcut = x
    if hasattr(self, "conv3"):  # Bottleneck
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(x)))))
        x, last = self.bn3(self.conv3(x)), self.act3
    else:  # BasicBlock
        x = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
        x, last = self.bn2(self.conv2(x)), self.act2
    if self.se is not None:
        x = self.se(x)
    if self.drop_path is not None:
        x = self.drop_path(x)
    if self.downsample is not None:
        shortcut = self.downsample(shortcut)
    return last(self.canonizer_sum(torch.stack([shortcut, x], dim=-1)))


def _timm_resnet_canonizer(zennit: Any) -> Any:
    """A zennit canonizer for timm's ResNet blocks (zennit's own ResNetCanonizer knows torchvision's)."""
    from timm.models.resnet import BasicBlock, Bottleneck

    def attribute_map(name: str, module: nn.Module) -> dict[str, Any] | None:
        if isinstance(module, (BasicBlock, Bottleneck)):
            return {"forward": _residual_forward.__get__(module), "canonizer_sum": zennit.layer.Sum()}
        return None

    return zennit.canonizers.AttributeCanonizer(attribute_map)


COMPOSITES = ("epsilon_plus_flat", "epsilon_plus", "epsilon_alpha2_beta1_flat", "epsilon_alpha2_beta1")


class ZennitLRPExplainer(Explainer):
    """zennit LRP for ResNets (composite `epsilon_plus_flat`: epsilon on dense, z+ on conv, flat on the first layer)."""

    families = ("cnn",)
    requires = ("net", "prepare")
    requirement = "a CNN-family classifier with a `net` and a `prepare` (resnet18, resnet50, a wrapped CNN)"

    def __init__(self, model: nn.Module, composite: str = "epsilon_plus_flat", epsilon: float = 1e-6):
        super().__init__(model)
        require("zennit.lrp", "zennit")
        if composite not in COMPOSITES:
            raise XaibenchError(f"method 'zennit.lrp': composite must be one of {', '.join(COMPOSITES)}, "
                                f"got {composite!r}")
        self.composite, self.epsilon = composite, epsilon

    def attribute(self, inputs, target, generator=None):
        import zennit.canonizers
        import zennit.composites
        import zennit.layer

        net = self.model.net
        canonizers = [zennit.canonizers.SequentialMergeBatchNorm(), _timm_resnet_canonizer(zennit)]
        composite = zennit.composites.COMPOSITES[self.composite](epsilon=self.epsilon, canonizers=canonizers)
        x = self.model.prepare(inputs.detach()).detach().requires_grad_(True)
        with _no_inplace(net), composite.context(net) as modified:
            logit = modified(x).gather(1, target[:, None])
            # The relevance entering the output layer is the target logit itself (zennit's hooks read a gradient
            # as relevance), so the input relevance adds up to the logit, less what biases and epsilon absorb.
            (relevance,) = torch.autograd.grad(logit, x, grad_outputs=logit.detach())
        return self.to_patches(relevance.sum(dim=1))  # relevance map [B, H, W] (an RGB stem's channels summed)


ZennitLRPExplainer.__doc__ = summary(ZennitLRPExplainer.__doc__, "zennit")
register_method("zennit.lrp", ZennitLRPExplainer)
