"""Attention-based explainers of the ViT family: attention rollout, Chefer et al.'s GAE and LeGrad.

All three read the softmax attention of every encoder block through `attention_weights`, which runs each timm
`Attention` through an explicit softmax for the call (timm's fused kernel returns no weights). The patch score
is read from the rows of the tokens the model's head reads (`head_rows`): the class token for a ViT classifier
(`vit`), the patch tokens for OFA and Segm, whose decoder reads the encoder's patch tokens.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.registry import register_method

from .base import Explainer
from .optional import not_suited

VIT_REQUIRES = ("encoder.blocks", "encoder.num_prefix_tokens")
VIT_REQUIREMENT = "a ViT-based model (ofa, segm, vit) with encoder.blocks"
_ATTENTION_PARTS = ("qkv", "num_heads", "head_dim", "scale", "q_norm", "k_norm", "proj")

# -- reading the attention weights ------------------------------------------------------------------------------


def is_attention(module: nn.Module) -> bool:
    """A timm multi-head self-attention module (qkv projection, per-head scaled dot product, output projection)."""
    return all(hasattr(module, part) for part in _ATTENTION_PARTS)


def _explicit_attention(module: nn.Module, on_weights: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                        attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
    """timm's Attention.forward with the softmax written out; its weights [B, heads, T, T] pass through on_weights."""
    if attn_mask is not None or is_causal:
        raise XaibenchError("the attention methods read unmasked self-attention; this model passes an attention mask")
    b, t, _ = x.shape
    qkv = module.qkv(x).reshape(b, t, 3, module.num_heads, module.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = module.q_norm(q), module.k_norm(k)
    weights = on_weights(module.attn_drop(((q * module.scale) @ k.transpose(-2, -1)).softmax(dim=-1)))
    out = (weights @ v).transpose(1, 2).reshape(b, t, module.num_heads * module.head_dim)
    out = getattr(module, "norm", nn.Identity())(out)
    gate = getattr(module, "gate", None)
    if gate is not None:
        out = out * gate(x).sigmoid()
    return module.proj_drop(module.proj(out)) if hasattr(module, "proj_drop") else module.proj(out)


@contextlib.contextmanager
def attention_weights(modules: Sequence[nn.Module],
                      on_weights: Callable[[int, torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """While open, module i of `modules` (timm Attention) computes its weights explicitly and replaces them by
    on_weights(i, weights): a hook to record them (return them unchanged) or to treat them as constants."""
    for index, module in enumerate(modules):
        if not is_attention(module):
            raise XaibenchError(f"{type(module).__name__} is not a timm self-attention module (needs "
                                f"{', '.join(_ATTENTION_PARTS)})")
        module.forward = functools.partial(_explicit_attention, module, functools.partial(on_weights, index))
    try:
        yield
    finally:
        for module in modules:
            module.__dict__.pop("forward", None)


def encoder_attention(model: nn.Module) -> list[nn.Module]:
    """The attention module of every encoder block, in order."""
    return [block.attn for block in model.encoder.blocks]


def record_attention(model: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The model's logits [B, classes] and every encoder block's attention weights [B, heads, T, T]."""
    maps: list[torch.Tensor] = []

    def keep(index: int, weights: torch.Tensor) -> torch.Tensor:
        maps.append(weights)
        return weights

    with attention_weights(encoder_attention(model), keep):
        logits = model(inputs)
    return logits, maps


def reads_class_token(model: nn.Module) -> bool:
    """Whether the model's output is read from the class token (a ViT classifier with a token-pool head)."""
    encoder = model.encoder
    return getattr(encoder, "num_classes", 0) > 0 and getattr(encoder, "global_pool", "") == "token"


def head_rows(model: nn.Module, relevance: torch.Tensor) -> torch.Tensor:
    """Patch scores [B, n] from a token-to-token matrix [B, T, T]: the class token's row, or (OFA, Segm: the
    decoder reads the patch tokens) the mean of the patch tokens' rows; patch columns only."""
    prefix = model.encoder.num_prefix_tokens
    if reads_class_token(model):
        return relevance[:, 0, prefix:]
    return relevance[:, prefix:, prefix:].mean(dim=1)


# -- the methods ------------------------------------------------------------------------------------------------


def attention_rollout(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Abnar & Zuidema's rollout [B, T, T] of attention maps [B, heads, T, T] (first block first): per block the
    head mean plus the identity for the residual, halved and row-normalised, multiplied from the first block on.
    Every row sums to one."""
    rollout = None
    for weights in maps:
        mean = weights.float().mean(dim=1)
        eye = torch.eye(mean.shape[-1], device=mean.device, dtype=mean.dtype)
        step = 0.5 * mean + 0.5 * eye
        step = step / step.sum(dim=-1, keepdim=True)
        rollout = step if rollout is None else step @ rollout
    if rollout is None:
        raise XaibenchError("attention rollout needs at least one attention block")
    return rollout


class _ViTAttentionExplainer(Explainer):
    families = ("vit",)
    requires = VIT_REQUIRES
    requirement = VIT_REQUIREMENT

    def __init__(self, model: nn.Module):
        super().__init__(model)
        # A gradient w.r.t. the attention maps stops inside the network: it is counted at the attention modules.
        self.probes = tuple(encoder_attention(model))


@register_method("rollout")
class RolloutExplainer(_ViTAttentionExplainer):
    """Attention rollout (Abnar & Zuidema 2020): head-averaged attention plus identity, multiplied over blocks."""

    needs_gradients = False

    def attribute(self, inputs, target, generator=None):
        _, maps = record_attention(self.model, inputs)
        return head_rows(self.model, attention_rollout(maps))


def gae_relevance(maps: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """Chefer et al.'s (ICCV 2021) relevance [B, T, T]: R = I, then per block R += mean_heads((grad * A)^+) @ R."""
    relevance = None
    for weights, grad in zip(maps, grads):
        cam = (grad * weights).clamp(min=0).float().mean(dim=1)
        if relevance is None:
            relevance = torch.eye(cam.shape[-1], device=cam.device, dtype=cam.dtype).expand_as(cam)
        relevance = relevance + cam @ relevance
    if relevance is None:
        raise XaibenchError("GAE needs at least one attention block")
    return relevance


@register_method("chefer_gae")
class CheferGAEExplainer(_ViTAttentionExplainer):
    """Chefer et al.'s gradient-weighted attention relevance (GAE): R += mean_h((dlogit/dA * A)^+) R over blocks."""

    def attribute(self, inputs, target, generator=None):
        logits, maps = record_attention(self.model, inputs)
        score = logits.gather(1, target[:, None]).sum()
        grads = torch.autograd.grad(score, maps)
        return head_rows(self.model, gae_relevance(maps, grads))


@register_method("legrad")
class LeGradExplainer(_ViTAttentionExplainer):
    """LeGrad (Bousselham et al. 2024): per block, the gradient of the head on its class token w.r.t. its attention."""

    def __init__(self, model: nn.Module, layers: int | None = None):
        super().__init__(model)  # type: ignore[call-arg]
        if not reads_class_token(model):
            raise not_suited(f"legrad needs a ViT whose head reads the class token (vit); "
                             f"{type(model).__name__}'s head reads the patch tokens")
        depth = len(model.encoder.blocks)
        if layers is not None and not 1 <= layers <= depth:
            raise XaibenchError(f"method 'legrad': layers must be 1..{depth} (the last blocks used), got {layers}")
        self.layers = layers or depth

    def attribute(self, inputs, target, generator=None):
        encoder, prefix = self.model.encoder, self.model.encoder.num_prefix_tokens
        outputs: list[torch.Tensor] = []
        hooks = [block.register_forward_hook(lambda module, args, out: outputs.append(out))
                 for block in encoder.blocks]
        try:
            _, maps = record_attention(self.model, inputs)
        finally:
            for hook in hooks:
                hook.remove()
        total = 0.0
        for tokens, weights in list(zip(outputs, maps))[-self.layers:]:
            score = encoder.forward_head(encoder.norm(tokens)).gather(1, target[:, None]).sum()
            (grad,) = torch.autograd.grad(score, weights, retain_graph=True)
            total = total + grad.clamp(min=0).float().mean(dim=(1, 2))[:, prefix:]  # heads and queries
        return total / self.layers
