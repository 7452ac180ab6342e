"""Plausibility: how well an attribution ranks the annotated patches first (per-image
AUROC, on the device). It measures agreement with the data's annotation, not faithfulness to the model.

Needs a ground-truth patch mask (e.g. the synthetic dataset's lesion); no forward passes.
"""
from __future__ import annotations

import torch


def plausibility_auroc(attributions: torch.Tensor, ground_truth: torch.Tensor) -> torch.Tensor:
    """AUROC [B] of attributions [B, n] as scores for the bool patch mask ground_truth [B, n].

    Rank-based (Mann-Whitney U): ties get their mid-rank, i.e. count one half, as in
    sklearn.metrics.roc_auc_score. An image whose mask is all True or all False has no AUROC: NaN.
    """
    if attributions.shape != ground_truth.shape or attributions.dim() != 2:
        raise ValueError(f"expected attributions and ground_truth of one shape [B, n]; got "
                         f"{tuple(attributions.shape)} and {tuple(ground_truth.shape)}")
    scores = attributions.to(torch.float64)
    positive = ground_truth.to(device=scores.device, dtype=torch.bool)
    ordered = scores.sort(dim=-1).values
    below = torch.searchsorted(ordered, scores, right=False)
    up_to = torch.searchsorted(ordered, scores, right=True)
    mid_rank = (below + up_to + 1).to(torch.float64) / 2  # 1-based, ties averaged
    n_pos = positive.sum(dim=-1).to(torch.float64)
    n_neg = positive.shape[-1] - n_pos
    rank_sum = (mid_rank * positive).sum(dim=-1)
    auroc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auroc = torch.where((n_pos > 0) & (n_neg > 0), auroc, torch.full_like(auroc, float("nan")))
    return auroc if attributions.dtype == torch.float64 else auroc.float()

