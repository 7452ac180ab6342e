"""The built-in explainers of SPEC §4: ofa, grad, attn and random.

Each explains the model it is given (the network under evaluation) for the given target classes.
"""
from __future__ import annotations

import torch

from xaibench.registry import register_method
from xaibench.sampling import uniform

from .base import Explainer


@register_method("ofa")
class OFAExplainer(Explainer):
    """OFA: phi_plus - phi_minus of the target class from one forward pass (exact Shapley values of z)."""

    needs_gradients = False
    families = ("vit",)
    requires = ("attributions", "shapley")
    requirement = "an OFA network (ofa or segm)"

    def attribute(self, inputs, target, generator=None):
        return self.model.attributions(inputs, target)


@register_method("grad")
class GradientExplainer(Explainer):
    """Vanilla gradient of the target-class probability w.r.t. the pixels; |grad| summed over channels, then per patch."""

    def attribute(self, inputs, target, generator=None):
        x = inputs.detach().requires_grad_(True)
        probability = self.model.forward_fn(x).gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(probability, x)
        return self.to_patches(grad.abs().sum(dim=1))  # the pixel map [B, H, W] summed over each patch


@register_method("attn")
class AttentionExplainer(Explainer):
    """Last-block attention from the class token to the patch tokens, averaged over heads (class-agnostic)."""

    needs_gradients = False
    families = ("vit",)
    requires = ("last_block_attention", "encoder.num_prefix_tokens")
    requirement = "a ViT-based model (ofa, segm, vit) with last_block_attention"

    def attribute(self, inputs, target, generator=None):
        attention = self.model.last_block_attention(inputs)  # [B, heads, T, T], T = prefix + n
        prefix = self.model.encoder.num_prefix_tokens
        return attention[:, :, 0, prefix:].mean(dim=1)  # row of the class token (index 0), patch columns


@register_method("random")
class RandomExplainer(Explainer):
    """i.i.d. U(0, 1) scores per patch from the generator, independent of the input (the floor: SRG ~ 0)."""

    needs_gradients = False

    def attribute(self, inputs, target, generator=None):
        return uniform((inputs.shape[0], self.model.n_patches), generator, inputs.device)
