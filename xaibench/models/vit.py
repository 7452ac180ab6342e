"""The maskable ViT encoder (timm, class + register tokens, DINOv2-style mask token) and the ViT classifier.

Two maskings of a removed patch: "token" swaps its embedding for the learned mask token (every block still
computes it); "drop" leaves it out, so the encoder runs the kept patch tokens only (MAE's design).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.models.base import MaskedClassifier, default_patch_size
from xaibench.models.pretrained import build_pretrained
from xaibench.registry import register_model

# Encoder sizes: "tiny"/"small" are the CPU configurations; "vit-s"/"vit-b" the usual ones.
VIT_ARCHS = {
    "tiny": dict(embed_dim=128, depth=4, num_heads=4),
    "small": dict(embed_dim=192, depth=6, num_heads=3),
    "vit-s": dict(embed_dim=384, depth=12, num_heads=6),
    "vit-b": dict(embed_dim=768, depth=12, num_heads=12),
}


MASKINGS = ("token", "drop")


def check_masking(masking: str) -> str:
    if masking not in MASKINGS:
        raise XaibenchError(f"unknown masking {masking!r}; valid: {', '.join(MASKINGS)}")
    return masking


def padded_lengths(counts: torch.Tensor, n: int, bucket: int = 1, call_share: float | None = None,
                   prefix: int = 0) -> torch.Tensor:
    """The token length each row of kept counts `counts` [B] (of n patches) runs at; rows of one length share a call.

    call_share None: fixed buckets, ceil(m / bucket) * bucket (bucket 1: every count its own call; the CPU's rule).
    call_share a: the sorted counts are cut into the contiguous groups that minimise the padded work plus a
    per call, each group padded to its largest count; a is a share of one full-token pass over every row (B
    rows of prefix + n tokens), so another call is made only where it saves more than a of such a pass. Few,
    large calls: the GPU's rule (a launch costs there what a few thousand tokens cost)."""
    if call_share is None:
        return counts if bucket == 1 else torch.minimum((counts + bucket - 1) // bucket * bucket,
                                                        counts.new_tensor(n))
    values, sizes = counts.unique(return_counts=True)  # ascending
    u = values.double().cpu().numpy() + prefix
    cum = np.concatenate([[0.0], np.cumsum(sizes.double().cpu().numpy())])
    per_call = call_share * cum[-1] * (n + prefix)
    best, cut = np.zeros(len(u) + 1), np.zeros(len(u) + 1, dtype=np.int64)
    for j in range(1, len(u) + 1):  # best[j]: the first j distinct counts; the last group is i..j-1
        costs = best[:j] + (cum[j] - cum[:j]) * u[j - 1] + per_call
        cut[j] = int(costs.argmin())
        best[j] = costs[cut[j]]
    table = values.clone()
    j = len(u)
    while j > 0:
        table[cut[j]:j] = values[j - 1]
        j = int(cut[j])
    return table[torch.searchsorted(values, counts)]


def by_kept_count(keep_mask: torch.Tensor, fn: Callable[[torch.Tensor | None, torch.Tensor, bool], object],
                 bucket: int = 1, call_share: float | None = None, prefix: int = 0):
    """fn(rows, index, padded) on groups of rows of keep_mask [B, n]; index long [b, L] holds each row's kept patches
    in ascending order, then n (a pad) up to the group's length L. The groups are `padded_lengths`' (bucket 1: the
    rows of one kept count each, padded False). rows is None when every row keeps as many patches (then never
    padded). The groups' outputs (a tensor or a tuple of tensors, each [b, ...]) come back as one per row, in
    keep_mask's row order."""
    counts = keep_mask.sum(dim=1)
    n = keep_mask.shape[1]
    if bool(counts.min() == counts.max()):
        return fn(None, keep_mask.nonzero()[:, 1].view(keep_mask.shape[0], -1), False)
    lengths = padded_lengths(counts, n, bucket, call_share, prefix)
    positions = torch.arange(n, device=keep_mask.device)
    parts, order = [], []
    for length in lengths.unique().tolist():
        rows = (lengths == length).nonzero().squeeze(1)
        index = torch.where(keep_mask[rows], positions, n).sort(dim=1).values[:, :length]
        parts.append(fn(rows, index, bool((counts[rows] < length).any())))
        order.append(rows)
    inverse = torch.empty_like(counts).scatter_(0, torch.cat(order), torch.arange(counts.numel(),
                                                                                  device=counts.device))
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(group)[inverse] for group in zip(*parts))
    return torch.cat(parts)[inverse]


def arch_config(arch: str) -> dict:
    if arch not in VIT_ARCHS:
        raise XaibenchError(f"unknown ViT arch {arch!r}; valid: {', '.join(VIT_ARCHS)}")
    return dict(VIT_ARCHS[arch])


class MaskableViT(VisionTransformer):
    """timm ViT whose removed patches are replaced by a learned mask token before the position embedding
    (masking "token") or left out of the encoder (masking "drop")."""

    family = "vit"

    def __init__(self, img_size: int = 28, patch_size: int | None = None, in_chans: int = 1, num_classes: int = 0,
                 embed_dim: int = 128, depth: int = 4, num_heads: int = 4, reg_tokens: int = 4,
                 masking: str = "token", **kwargs):
        check_masking(masking)
        super().__init__(img_size=img_size, patch_size=patch_size or default_patch_size(img_size),
                         in_chans=in_chans, num_classes=num_classes, embed_dim=embed_dim, depth=depth,
                         num_heads=num_heads, class_token=True, reg_tokens=reg_tokens, global_pool="token",
                         **kwargs)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.masking = masking
        # masking "drop", rows of mixed kept counts (`padded_lengths`): rule "bucket" pads counts within
        # `drop_bucket` tokens to one call; rule "cost" makes a further call only where it saves `drop_call_share`
        # of a full-token pass; "auto": "cost" on CUDA, "bucket" elsewhere
        self.drop_rule = "auto"
        self.drop_bucket = 8  # measured on the CPU: docs/metrics.md, "Token dropping"
        self.drop_call_share = 0.02  # measured on an H200 (0.02, 0.05, 0.1): docs/metrics.md, "Token dropping"

    def drop_groups(self, x: torch.Tensor) -> dict:
        """by_kept_count's grouping options for an input on x's device."""
        if self.drop_rule not in ("auto", "bucket", "cost"):
            raise XaibenchError(f"unknown drop_rule {self.drop_rule!r}; valid: auto, bucket, cost")
        cost = self.drop_rule == "cost" or (self.drop_rule == "auto" and x.is_cuda)
        return dict(bucket=self.drop_bucket, call_share=self.drop_call_share if cost else None,
                    prefix=self.num_prefix_tokens)

    @property
    def n_patches(self) -> int:
        return self.patch_embed.num_patches

    def embed(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Patch embedding with removed patches swapped for the mask token, then prefix tokens and positions."""
        tokens = self.patch_embed(x)
        if keep_mask is not None:
            if keep_mask.shape != tokens.shape[:2]:
                raise ValueError(f"keep_mask must be [B, n]={tuple(tokens.shape[:2])}, got {tuple(keep_mask.shape)}")
            tokens = torch.where(keep_mask[..., None], tokens, self.mask_token.to(tokens.dtype))
        return self.norm_pre(self.patch_drop(self._pos_embed(tokens)))

    def patch_positions(self) -> torch.Tensor:
        """The patches' position embeddings [n, D] (without the prefix tokens' entries)."""
        return self.pos_embed[0, 0 if self.no_embed_class else self.num_prefix_tokens:]

    def embed_kept(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Prefix tokens and the patches `index` long [B, m] only, each with its own position: [B, prefix + m, D]."""
        tokens = self.patch_embed(x)
        d = tokens.shape[-1]
        kept = tokens.gather(1, index[..., None].expand(-1, -1, d)) + self.patch_positions()[index]
        prefix = [token.expand(x.shape[0], -1, -1) for token in (self.cls_token, self.reg_token) if token is not None]
        prefix = torch.cat(prefix, dim=1)
        if not self.no_embed_class:
            prefix = prefix + self.pos_embed[:, :self.num_prefix_tokens]
        return self.norm_pre(self.patch_drop(self.pos_drop(torch.cat([prefix, kept], dim=1))))

    def kept_tokens(self, x: torch.Tensor, index: torch.Tensor, padded: bool = False) -> torch.Tensor:
        """Output tokens [B, prefix + m, D] of the input reduced to the patches `index` [B, m] (masking "drop").
        padded: index holds pads (n), tokens no other token attends to (their outputs mean nothing)."""
        n = self.n_patches
        h = self.embed_kept(x, index.clamp(max=n - 1) if padded else index)
        if not padded:
            return self.norm(self.blocks(h))
        bias = torch.zeros(index.shape[0], 1, 1, h.shape[1], dtype=h.dtype, device=h.device)
        bias[:, 0, 0, self.num_prefix_tokens:].masked_fill_(index >= n, float("-inf"))
        for block in self.blocks:
            h = block(h, attn_mask=bias)
        return self.norm(h)

    def tokens(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        """All output tokens [B, prefix + n, D] after the final norm, removed patches as mask tokens."""
        return self.norm(self.blocks(self.embed(x, keep_mask)))

    def forward(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        if keep_mask is None or self.masking == "token":
            return self.forward_head(self.tokens(x, keep_mask))
        self._check_keep(x, keep_mask)
        return by_kept_count(keep_mask, lambda rows, index, padded: self.forward_head(
            self.kept_tokens(x if rows is None else x[rows], index, padded)), **self.drop_groups(x))

    def _check_keep(self, x: torch.Tensor, keep_mask: torch.Tensor) -> None:
        if keep_mask.shape != (x.shape[0], self.n_patches):
            raise ValueError(f"keep_mask must be [B, n]={(x.shape[0], self.n_patches)}, got {tuple(keep_mask.shape)}")

    def last_block_attention(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention weights of the last block [B, heads, T, T] (T = prefix tokens + n patches)."""
        if keep_mask is not None and self.masking == "drop":
            raise XaibenchError("last_block_attention of a masked input needs masking 'token' (this encoder: 'drop')")
        h = self.embed(x, keep_mask)
        for block in self.blocks[:-1]:
            h = block(h)
        last = self.blocks[-1]
        attn = last.attn
        b, t, _ = h.shape
        qkv = attn.qkv(last.norm1(h)).reshape(b, t, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
        return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


def build_encoder(img_size: int, patch_size: int | None, in_chans: int, arch: str = "tiny", num_classes: int = 0,
                  pretrained: str | None = None, **overrides) -> MaskableViT:
    """The maskable encoder; `pretrained` ('timm:<name>' or a file) is loaded by timm's `build_model_with_cfg`.

    For DINOv2 weights (e.g. 'timm:vit_base_patch14_reg4_dinov2.lvd142m' with arch 'vit-b') pass
    `init_values=1e-5` too, so the blocks have the LayerScale the weights were trained with.
    """
    config = arch_config(arch)
    config.update(overrides)
    if pretrained:
        return build_pretrained(MaskableViT, pretrained, in_chans, img_size=img_size, patch_size=patch_size,
                                num_classes=num_classes, **config)
    return MaskableViT(img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
                       **config)


class ViTClassifier(MaskedClassifier):
    """Baseline: the maskable encoder with a linear head on the class token."""

    family = "vit"

    def __init__(self, num_classes: int, in_chans: int = 1, img_size: int = 28, patch_size: int | None = None,
                 arch: str = "tiny", pretrained: str | None = None, masking: str = "token", **overrides):
        super().__init__(img_size, patch_size, in_chans, num_classes)
        self.encoder = build_encoder(img_size, self.patch_size, in_chans, arch, num_classes=num_classes,
                                     pretrained=pretrained, masking=masking, **overrides)

    @property
    def masking(self) -> str:
        """How a removed patch is masked: "token" (mask token) or "drop" (left out of the encoder)."""
        return self.encoder.masking

    def forward(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(x, keep_mask)

    def last_block_attention(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder.last_block_attention(x, keep_mask)


@register_model("vit")
def vit(num_classes: int, in_chans: int = 1, img_size: int = 28, **kwargs) -> ViTClassifier:
    """ViT classifier: maskable timm ViT (class + 4 register tokens), linear head on the class token."""
    return ViTClassifier(num_classes, in_chans, img_size, **kwargs)
