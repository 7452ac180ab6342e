"""Localisation: does an attribution put its top, its mass or its ranks on the annotated region? Pointing game,
relevance mass and rank accuracy, top-k intersection: per image, batched on the attributions' device, no forwards.

Each needs a ground-truth patch mask bool [B, n] (the dataset's annotated region). An image whose mask is empty or
covers every patch gets NaN: with no patch inside (or none outside) every map scores the same, so the score says
nothing about the map. Ties between equal attributions count as a uniform random pick among them (the expected
score), so no patch order and no sort algorithm decides a score.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from xaibench.errors import XaibenchError
from xaibench.registry import register_metric

from .curves import ForwardFn
from .result import MetricResult
from .stateful import Metric

SIGNS = ("positive", "absolute", "raw")
UNDEFINED_MASK = "the annotated region is empty or covers every patch (any map would score the same)"


def check_sign(sign: str) -> str:
    if sign not in SIGNS:
        raise XaibenchError(f"metric option sign={sign!r}: expected one of {', '.join(SIGNS)}")
    return sign


def check_k(k: int | float) -> int | float:
    """k of top-k: an int >= 1 (patches) or a float in (0, 1] (a fraction of the patches)."""
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise XaibenchError(f"metric option k={k!r}: expected an int >= 1 (patches) or a float in (0, 1] "
                            f"(a fraction of the patches)")
    if (isinstance(k, int) and k < 1) or (isinstance(k, float) and not 0.0 < k <= 1.0):
        raise XaibenchError(f"metric option k={k!r}: expected an int >= 1 (patches) or a float in (0, 1] "
                            f"(a fraction of the patches)")
    return k


def resolve_k(k: int | float, n_patches: int) -> int:
    """The patch count of top-k: an int as given (at most n), a fraction rounded to the nearest count, at least 1."""
    check_k(k)
    if isinstance(k, int):
        if k > n_patches:
            raise XaibenchError(f"metric option k={k}: more than the {n_patches} patches of an image")
        return k
    return max(1, round(k * n_patches))


def _scores_and_mask(attributions: torch.Tensor, ground_truth: torch.Tensor | None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 scores [B, n], bool mask [B, n] on the attributions' device, and which images are defined [B]
    (a mask with at least one patch inside and one outside, finite attributions)."""
    if ground_truth is None:
        raise ValueError("a localisation metric needs a ground-truth patch mask [B, n] (the annotated region)")
    if not isinstance(ground_truth, torch.Tensor) or attributions.dim() != 2 or \
            tuple(ground_truth.shape) != tuple(attributions.shape):
        shape = tuple(ground_truth.shape) if isinstance(ground_truth, torch.Tensor) else type(ground_truth).__name__
        raise ValueError(f"expected attributions and ground_truth of one shape [B, n]; got "
                         f"{tuple(attributions.shape)} and {shape}")
    scores = attributions.to(torch.float64)
    mask = ground_truth.to(device=scores.device, dtype=torch.bool)
    inside = mask.sum(dim=-1)
    defined = (inside > 0) & (inside < mask.shape[-1]) & torch.isfinite(scores).all(dim=-1)
    return scores, mask, defined


def pooled(scores: torch.Tensor, sign: str) -> torch.Tensor:
    """The relevance a sign policy counts: positive part, absolute value or the raw signed value."""
    check_sign(sign)
    if sign == "positive":
        return scores.clamp(min=0.0)
    return scores.abs() if sign == "absolute" else scores


def expected_top_hits(scores: torch.Tensor, mask: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """float64 [B]: the expected number of mask patches among the k [B] highest scores [B, n] when the patches tied
    at the k-th highest value are picked uniformly at random (the patches above it all count, each tied one
    counts (k - #above) / #tied)."""
    ordered = scores.sort(dim=-1, descending=True).values
    threshold = ordered.gather(1, (k - 1).clamp(min=0)[:, None])
    above = scores > threshold
    tied = scores == threshold
    n_above = above.sum(dim=-1, keepdim=True).to(torch.float64)
    n_tied = tied.sum(dim=-1, keepdim=True).to(torch.float64).clamp(min=1.0)
    share = (k[:, None].to(torch.float64) - n_above) / n_tied
    weight = above.to(torch.float64) + tied.to(torch.float64) * share
    return (weight * mask).sum(dim=-1)


def _out(values: torch.Tensor, defined: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    values = torch.where(defined, values, torch.full_like(values, float("nan")))
    return values if like.dtype == torch.float64 else values.float()


def pointing_game(forward_fn: ForwardFn | None, inputs: torch.Tensor, attributions: torch.Tensor,
                  targets: torch.Tensor, *, ground_truth: torch.Tensor, batch_size: int = 256,
                  generator: torch.Generator | None = None) -> MetricResult:
    """Pointing game (Zhang, Bargal, Lin, Brandt, Shen & Sclaroff 2018, "Top-down neural attention by excitation
    backprop", IJCV): a hit when the highest-attributed patch lies in the annotated region.

    hit = |argmax_p a_p ∩ mask| / |argmax_p a_p|, i.e. when several patches share the maximum, the chance that a
    uniform pick among them is inside the mask (a constant map scores |mask| / n, the chance level; Quantus 0.6
    counts a hit when any tied patch is inside, so a constant map always hits). The raw signed attribution is
    ranked (the paper's "maximum point"; its 15-pixel tolerance has no patch-level counterpart). Higher is
    better, in [0, 1]. NaN for an empty mask (nothing to point at; Quantus 0.6 returns a hit there), a mask of
    every patch (every map hits) or a non-finite map.
    forward_fn, inputs, targets, batch_size and generator are not used (no forwards, no draws): the one call of
    every metric. ground_truth: bool [B, n], the annotated patches.
    """
    scores, mask, defined = _scores_and_mask(attributions, ground_truth)
    one = torch.ones(scores.shape[0], dtype=torch.long, device=scores.device)
    return MetricResult({"pointing_game": _out(expected_top_hits(scores, mask, one), defined, attributions)})


def relevance_mass_accuracy(forward_fn: ForwardFn | None, inputs: torch.Tensor, attributions: torch.Tensor,
                            targets: torch.Tensor, *, ground_truth: torch.Tensor, sign: str = "positive",
                            batch_size: int = 256, generator: torch.Generator | None = None) -> MetricResult:
    """Relevance mass accuracy (Arras, Osman & Samek 2022, "CLEVR-XAI: a benchmark dataset for the ground truth
    evaluation of neural network explanations", Information Fusion): the share of the relevance inside the mask.

    mass = Σ_{p ∈ mask} r_p / Σ_p r_p with r = the pooled relevance of `sign`: "positive" (default) r = max(a, 0),
    the authors' "sum,pos" pooling (their code pools every map to r >= 0 and asserts the score is in [0, 1];
    negative evidence against the class is not located anywhere); "absolute" r = |a| (their "sum,abs" /
    "max-norm", which coincide for one value per patch); "raw" r = a, Quantus 0.6's default (abs=False), which
    can leave [0, 1] or blow up when the signed total is near 0. Higher is better. NaN for an empty or full mask,
    a non-finite map, or a total of 0 (no positive relevance under "positive": nothing to locate).
    Scale-free, so Quantus's batch-wide normalisation does not move it. Unused: forward_fn, inputs, targets,
    batch_size, generator.
    """
    scores, mask, defined = _scores_and_mask(attributions, ground_truth)
    relevance = pooled(scores, sign)
    total = relevance.sum(dim=-1)
    inside = (relevance * mask).sum(dim=-1)
    mass = inside / torch.where(total == 0, torch.ones_like(total), total)
    return MetricResult({"relevance_mass_accuracy": _out(mass, defined & (total != 0), attributions)})


def relevance_rank_accuracy(forward_fn: ForwardFn | None, inputs: torch.Tensor, attributions: torch.Tensor,
                            targets: torch.Tensor, *, ground_truth: torch.Tensor, sign: str = "positive",
                            batch_size: int = 256, generator: torch.Generator | None = None) -> MetricResult:
    """Relevance rank accuracy (Arras, Osman & Samek 2022, "CLEVR-XAI", Information Fusion): the fraction of the
    K most relevant patches that lie in the mask, K = |mask|.

    rank = |top_K(r) ∩ mask| / K with r the pooled relevance of `sign` (as in relevance_mass_accuracy; default
    "positive", the authors' pooling to r >= 0, so every patch with a <= 0 ties at 0). Patches tied at the K-th
    value are a uniform random pick (the expected fraction; the authors' and Quantus's argsorts break ties by
    patch index, in opposite directions, so a tied block scores 1 or 0 by where the mask lies). A constant map
    scores K / n, chance. Higher is better, in [0, 1]. NaN for an empty or full mask or a non-finite map.
    Unused: forward_fn, inputs, targets, batch_size, generator.
    """
    scores, mask, defined = _scores_and_mask(attributions, ground_truth)
    size = mask.sum(dim=-1)
    hits = expected_top_hits(pooled(scores, sign), mask, size)
    rank = hits / size.clamp(min=1).to(torch.float64)
    return MetricResult({"relevance_rank_accuracy": _out(rank, defined, attributions)})


def topk_intersection(forward_fn: ForwardFn | None, inputs: torch.Tensor, attributions: torch.Tensor,
                      targets: torch.Tensor, *, ground_truth: torch.Tensor, k: int | float = 0.1,
                      batch_size: int = 256, generator: torch.Generator | None = None) -> MetricResult:
    """Top-k intersection (Theiner, Müller-Budack & Ewerth 2022, "Interpretable semantic photo geolocation", WACV;
    as Quantus's TopKIntersection): the fraction of the k highest-attributed patches that lie in the mask.

    tki = |top_k(a) ∩ mask| / k on the raw signed attribution, ties at the k-th value a uniform random pick.
    k: an int >= 1 is a count of patches; a float in (0, 1] a fraction of the n patches, rounded to the nearest
    count (at least 1). Default 0.1: patch counts vary (49 to 196), and the annotated region of the synthetic set
    covers about 12% of the patches (3 to 12 of 49), so the top 10% fit inside a typical region and a perfect map
    can reach 1 (Quantus's k=1000 pixels is 2% of a 224² image, one patch of 49: the pointing game again). When k >
    |mask| the best reachable score is |mask| / k. Higher is better, in [0, 1]. NaN for an empty or full mask or a
    non-finite map. Unused: forward_fn, inputs, targets, batch_size, generator.
    """
    scores, mask, defined = _scores_and_mask(attributions, ground_truth)
    count = resolve_k(k, scores.shape[-1])
    size = torch.full((scores.shape[0],), count, dtype=torch.long, device=scores.device)
    hits = expected_top_hits(scores, mask, size)
    return MetricResult({"topk_intersection": _out(hits / count, defined, attributions)})


class _LocalisationMetric(Metric):
    group = "localisation"
    needs_ground_truth = True
    nan_reason: ClassVar[str] = UNDEFINED_MASK + ", or the map is not finite"


@register_metric("pointing_game")
class PointingGame(_LocalisationMetric):
    """Pointing game (Zhang et al. 2018): the highest-attributed patch is in the annotated region (ties: the chance
    a uniform pick among the tied top patches hits)."""

    main_score = "pointing_game"

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        return pointing_game(forward_fn, inputs, attributions, targets, ground_truth=ground_truth)


@register_metric("relevance_mass_accuracy")
class RelevanceMassAccuracy(_LocalisationMetric):
    """Relevance mass accuracy (Arras et al. 2022): the share of the (positive, by default) relevance inside the
    annotated region."""

    main_score = "relevance_mass_accuracy"
    nan_reason = UNDEFINED_MASK + ", the map is not finite, or it has no relevance of the counted sign"

    def __init__(self, sign: str = "positive") -> None:
        super().__init__()
        self.sign = check_sign(sign)

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        return relevance_mass_accuracy(forward_fn, inputs, attributions, targets, ground_truth=ground_truth,
                                       sign=self.sign)


@register_metric("relevance_rank_accuracy")
class RelevanceRankAccuracy(_LocalisationMetric):
    """Relevance rank accuracy (Arras et al. 2022): the fraction of the |mask| most relevant patches inside the
    annotated region (ties: the expected fraction)."""

    main_score = "relevance_rank_accuracy"

    def __init__(self, sign: str = "positive") -> None:
        super().__init__()
        self.sign = check_sign(sign)

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        return relevance_rank_accuracy(forward_fn, inputs, attributions, targets, ground_truth=ground_truth,
                                       sign=self.sign)


@register_metric("topk_intersection")
class TopKIntersection(_LocalisationMetric):
    """Top-k intersection (Theiner et al. 2022): the fraction of the k highest-attributed patches inside the
    annotated region (k a count, or a fraction of the patches; default 10%)."""

    main_score = "topk_intersection"

    def __init__(self, k: int | float = 0.1) -> None:
        super().__init__()
        self.k = check_k(k)

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        return topk_intersection(forward_fn, inputs, attributions, targets, ground_truth=ground_truth, k=self.k)
