"""The OFA network (SPEC §2): maskable ViT encoder + one-block Segmenter decoder giving phi_plus, phi_minus.

Logits of keep-mask S: z(S) = sum_{i in S} phi_plus_i + sum_{i not in S} phi_minus_i, with phi
computed from the masked input. Eq. 5 of the paper is read as z(N) (all patches kept). With masking "drop" the encoder runs the kept patches
only; the decoder gets their encodings and, at each removed position, the mask token plus that position's
embedding (through the encoder's final norm), so phi exists for every patch and Eq. 4 is unchanged.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from xaibench.models.base import MaskedClassifier
from xaibench.models.vit import build_encoder, by_kept_count
from xaibench.registry import register_model


class OFANet(MaskedClassifier):
    """Classifies and explains in one forward pass: per-patch, per-class Shapley values."""

    family = "vit"

    def __init__(self, num_classes: int, in_chans: int = 1, img_size: int = 28, patch_size: int | None = None,
                 arch: str = "tiny", pretrained: str | None = None, decoder_depth: int = 1,
                 logit_scale_init: float = 10.0, centre_classes: bool = True, masking: str = "token", **overrides):
        super().__init__(img_size, patch_size, in_chans, num_classes)
        self.centre_classes = centre_classes
        self.encoder = build_encoder(img_size, self.patch_size, in_chans, arch, num_classes=0,
                                     pretrained=pretrained, masking=masking, **overrides)
        dim = self.encoder.embed_dim
        heads = self.encoder.blocks[0].attn.num_heads
        self.class_embed = nn.Parameter(torch.zeros(1, 2 * num_classes, dim))
        nn.init.trunc_normal_(self.class_embed, std=0.02)
        self.decoder = nn.Sequential(*[Block(dim, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(dim)
        self.proj_patch = nn.Linear(dim, dim, bias=False)
        self.proj_class = nn.Linear(dim, dim, bias=False)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))

    @property
    def masking(self) -> str:
        """How a removed patch is masked: "token" (mask token) or "drop" (left out of the encoder)."""
        return self.encoder.masking

    def shapley(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """phi_plus, phi_minus, each [B, n, C], of the input with the patches outside keep_mask removed."""
        if keep_mask is None or self.masking == "token":
            return self.decode(self.encoder.tokens(x, keep_mask)[:, self.encoder.num_prefix_tokens:])
        self.encoder._check_keep(x, keep_mask)
        return by_kept_count(keep_mask, lambda rows, index, padded: self.decode(self.scatter_kept(
            self.encoder.kept_tokens(x if rows is None else x[rows], index, padded), index)),
            **self.encoder.drop_groups(x))

    def scatter_kept(self, kept: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Patch tokens [B, n, D]: the kept encodings (kept [B, prefix + m, D]) at `index` (pads n dropped), elsewhere
        the normed mask token plus the position's embedding."""
        encoder = self.encoder
        removed = encoder.norm(encoder.mask_token[0] + encoder.patch_positions()).to(kept.dtype)
        kept = kept[:, encoder.num_prefix_tokens:]
        n, d = removed.shape
        full = torch.cat([removed, removed[:1]]).expand(kept.shape[0], -1, -1)  # row n: where pads land
        return full.scatter(1, index[..., None].expand(-1, -1, d), kept)[:, :n]

    def decode(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """phi_plus, phi_minus [B, n, C] from the encoder's patch tokens [B, n, D]."""
        b, n, _ = tokens.shape
        h = torch.cat([tokens, self.class_embed.expand(b, -1, -1).to(tokens.dtype)], dim=1)
        h = self.decoder_norm(self.decoder(h))
        patches = F.normalize(self.proj_patch(h[:, :n]), dim=-1)
        classes = F.normalize(self.proj_class(h[:, n:]), dim=-1)
        phi = self.log_logit_scale.exp() * patches @ classes.transpose(1, 2)  # [B, n, 2C]
        phi_plus, phi_minus = phi[..., : self.num_classes], phi[..., self.num_classes:]
        if self.centre_classes:
            # A softmax ignores what a patch adds to every class alike, so no loss can pin that part of phi;
            # left in, it is noise in phi[:, :, c]. Centring over the classes keeps the one identified
            # representative (for two classes, half the log-odds contribution) and leaves every prediction,
            # loss value and Eq. 4 as they were.
            phi_plus = phi_plus - phi_plus.mean(dim=-1, keepdim=True)
            phi_minus = phi_minus - phi_minus.mean(dim=-1, keepdim=True)
        return phi_plus, phi_minus

    @staticmethod
    def logits(phi_plus: torch.Tensor, phi_minus: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        """z(S) [B, C] (Eq. 4) for keep_mask S [B, n]; None means S = N."""
        if keep_mask is None:
            return phi_plus.sum(dim=1)
        return torch.where(keep_mask[..., None], phi_plus, phi_minus).sum(dim=1)

    def forward(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        phi_plus, phi_minus = self.shapley(x, keep_mask)
        return self.logits(phi_plus, phi_minus, keep_mask)

    def attributions(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """phi = phi_plus - phi_minus of the target class [B, n], from one unmasked forward pass."""
        phi_plus, phi_minus = self.shapley(x)
        phi = phi_plus - phi_minus
        return phi.gather(2, target.view(-1, 1, 1).expand(-1, phi.shape[1], 1)).squeeze(2)

    def last_block_attention(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder.last_block_attention(x, keep_mask)


@register_model("ofa")
def ofa(num_classes: int, in_chans: int = 1, img_size: int = 28, **kwargs) -> OFANet:
    """OFA: Segmenter network whose logits are sums of per-patch Shapley values (trained with l1+l2+l3)."""
    return OFANet(num_classes, in_chans, img_size, **kwargs)


ofa.objective = "ofa"  # the training objective (xaibench/training/objectives.py) unless a config names another
ofa.revision = 2  # part of the checkpoint key; 2: phi centred over the classes, which the informed masks are drawn from


@register_model("segm")
def segm(num_classes: int, in_chans: int = 1, img_size: int = 28, **kwargs) -> OFANet:
    """Segm baseline: the same network as OFA, trained with the classification loss l1 only."""
    return OFANet(num_classes, in_chans, img_size, **kwargs)
