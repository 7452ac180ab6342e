"""Agreement with the model's own truth: an explanation's attribution mass per object against the trained
network's exact object Shapley values (xaibench/engine/truth.py computes them on datasets that re-render).

Per image: rank = Spearman correlation between the mass of each present object (the sum of its patches'
attributions) and the object's Shapley value; sign = the share of objects whose mass has the sign of their
Shapley value (a zero mass counts as wrong for any non-zero value). Both need at least two objects. No forward
passes: the values were computed once per model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from xaibench.registry import register_metric

from .result import MetricResult
from .sanity import spearman_rows
from .stateful import Metric


@dataclass
class ObjectTruth:
    """The ground truth a `truth` metric reads, for B images: the object slot of each patch (long [B, n], -1 =
    background) and each slot's exact Shapley value (float [B, S], NaN for an empty slot)."""

    patches: torch.Tensor
    shapley: torch.Tensor

    def __getitem__(self, rows) -> "ObjectTruth":
        return ObjectTruth(self.patches[rows], self.shapley[rows])

    def to(self, device) -> "ObjectTruth":
        return ObjectTruth(self.patches.to(device), self.shapley.to(device))


def object_mass(attributions: torch.Tensor, patches: torch.Tensor, n_slots: int) -> torch.Tensor:
    """float64 [B, n_slots]: the summed attribution of each object's patches (background patches left out)."""
    mass = torch.zeros(attributions.shape[0], n_slots + 1, dtype=torch.float64, device=attributions.device)
    slot = torch.where(patches >= 0, patches, torch.full_like(patches, n_slots))
    return mass.scatter_add_(1, slot, attributions.double())[:, :n_slots]


def object_agreement(attributions: torch.Tensor, patches: torch.Tensor,
                     shapley: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rank [B], sign [B]) agreement of attributions [B, n] with the Shapley values [B, S] of the objects
    whose patches `patches` [B, n] names; NaN for an image with fewer than two objects."""
    shapley = shapley.to(device=attributions.device, dtype=torch.float64)
    present = ~shapley.isnan()
    mass = object_mass(attributions, patches.to(attributions.device), shapley.shape[1])
    rank = torch.full((len(mass),), float("nan"), dtype=torch.float64, device=mass.device)
    sign = rank.clone()
    for count in present.sum(dim=1).unique().tolist():  # images with the same number of objects at once
        if count < 2:
            continue
        rows = (present.sum(dim=1) == count).nonzero()[:, 0]
        kept = present[rows]
        a = mass[rows][kept].view(len(rows), count)
        b = shapley[rows][kept].view(len(rows), count)
        rank[rows] = spearman_rows(a, b).double()
        sign[rows] = (torch.sign(a) == torch.sign(b)).double().mean(dim=1)
    return rank, sign


@register_metric("truth")
class TruthAgreement(Metric):
    """Rank (Spearman) and sign agreement of each object's attribution mass with the model's exact object
    Shapley values (needs a dataset that re-renders its objects, e.g. `objects`)."""

    main_score = "truth_rank"
    score_names = ("truth_rank", "truth_sign")
    needs_object_truth: ClassVar[bool] = True

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        if not isinstance(ground_truth, ObjectTruth):
            raise ValueError("metric 'truth' needs the model's object truth (an ObjectTruth): it applies to datasets "
                             "that re-render their objects, such as 'objects'")
        rank, sign = object_agreement(attributions, ground_truth.patches, ground_truth.shapley)
        return MetricResult({"truth_rank": rank.float(), "truth_sign": sign.float()})
