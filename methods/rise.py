"""RISE (Petsiuk et al. 2018) on the patch grid: random keep-masks weighted by the model's output.

Each image gets `n_masks` masks that keep every patch independently with probability `p_keep`, drawn from the
generator `attribute` receives. The masked images go through the model's own masked forward, `forward_fn(x,
keep_mask)`, as the metrics remove patches (the mask token for the ViT family, the fill for a CNN), `batch_size`
rows per call. A patch's score is the mean target probability over its masks, E[p(x masked) | patch kept]:
sum_i p_i * m_i / (n_masks * p_keep).
"""
from __future__ import annotations

import torch
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.registry import register_method
from xaibench.sampling import uniform

from .base import Explainer


@register_method("rise")
class RISEExplainer(Explainer):
    """RISE: target probability under n_masks random patch keep-masks (p_keep), averaged where each patch was kept."""

    needs_gradients = False

    def __init__(self, model: nn.Module, n_masks: int = 256, p_keep: float = 0.5, batch_size: int = 256):
        super().__init__(model)
        if not isinstance(n_masks, int) or n_masks < 1:
            raise XaibenchError(f"method 'rise': n_masks must be a positive integer, got {n_masks!r}")
        if not 0.0 < p_keep < 1.0:
            raise XaibenchError(f"method 'rise': p_keep must lie in (0, 1), got {p_keep!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise XaibenchError(f"method 'rise': batch_size must be a positive integer, got {batch_size!r}")
        self.n_masks, self.p_keep, self.batch_size = n_masks, p_keep, batch_size

    def attribute(self, inputs, target, generator=None):
        b, n = inputs.shape[0], self.model.n_patches
        masks = uniform((b, self.n_masks, n), generator, inputs.device) < self.p_keep  # [B, N, n] keep-masks
        rows = masks.reshape(b * self.n_masks, n)
        image = torch.arange(b, device=inputs.device).repeat_interleave(self.n_masks)
        scores = torch.empty(b * self.n_masks, device=inputs.device)
        for start in range(0, rows.shape[0], self.batch_size):
            chunk = slice(start, start + self.batch_size)
            probabilities = self.model.forward_fn(inputs[image[chunk]], rows[chunk])
            scores[chunk] = probabilities.gather(1, target[image[chunk], None])[:, 0].float()
        weighted = scores.reshape(b, self.n_masks, 1) * masks.float()
        return weighted.sum(dim=1) / (self.n_masks * self.p_keep)
