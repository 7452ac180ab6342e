"""The maskable ViT encoder (timm, class + register tokens, DINOv2-style mask token) and the ViT classifier."""
from __future__ import annotations

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


def arch_config(arch: str) -> dict:
    if arch not in VIT_ARCHS:
        raise XaibenchError(f"unknown ViT arch {arch!r}; valid: {', '.join(VIT_ARCHS)}")
    return dict(VIT_ARCHS[arch])


class MaskableViT(VisionTransformer):
    """timm ViT whose removed patches are replaced by a learned mask token before the position embedding."""

    family = "vit"

    def __init__(self, img_size: int = 28, patch_size: int | None = None, in_chans: int = 1, num_classes: int = 0,
                 embed_dim: int = 128, depth: int = 4, num_heads: int = 4, reg_tokens: int = 4, **kwargs):
        super().__init__(img_size=img_size, patch_size=patch_size or default_patch_size(img_size),
                         in_chans=in_chans, num_classes=num_classes, embed_dim=embed_dim, depth=depth,
                         num_heads=num_heads, class_token=True, reg_tokens=reg_tokens, global_pool="token",
                         **kwargs)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)

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

    def tokens(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        """All output tokens [B, prefix + n, D] after the final norm."""
        return self.norm(self.blocks(self.embed(x, keep_mask)))

    def forward(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.tokens(x, keep_mask))

    def last_block_attention(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention weights of the last block [B, heads, T, T] (T = prefix tokens + n patches)."""
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
                 arch: str = "tiny", pretrained: str | None = None, **overrides):
        super().__init__(img_size, patch_size, in_chans, num_classes)
        self.encoder = build_encoder(img_size, self.patch_size, in_chans, arch, num_classes=num_classes,
                                     pretrained=pretrained, **overrides)

    def forward(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(x, keep_mask)

    def last_block_attention(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder.last_block_attention(x, keep_mask)


@register_model("vit")
def vit(num_classes: int, in_chans: int = 1, img_size: int = 28, **kwargs) -> ViTClassifier:
    """ViT classifier: maskable timm ViT (class + 4 register tokens), linear head on the class token."""
    return ViTClassifier(num_classes, in_chans, img_size, **kwargs)
