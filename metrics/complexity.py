"""Complexity: how concise a map is, read from |attribution| alone (no model, no ground truth). Sparseness (Gini),
complexity (entropy) and effective complexity: per image, batched on the attributions' device, no forwards.

"Better" here means more concise (fewer patches carry the attribution), not more faithful. A map of zeros (or one
with a non-finite value) gets NaN: it has no distribution of importance to measure.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from xaibench.errors import XaibenchError
from xaibench.registry import register_metric

from .curves import ForwardFn
from .result import MetricResult
from .stateful import Metric

NO_MASS = "the map is all zeros or not finite (no importance to measure)"


def check_eps(eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps < 1.0:
        raise XaibenchError(f"metric option eps={eps!r}: expected a number in [0, 1) (a fraction of the image's "
                            f"largest |attribution|)")
    return float(eps)


def _magnitudes(attributions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 |a| [B, n] and which images are defined [B] (finite, not all zero)."""
    if attributions.dim() != 2:
        raise ValueError(f"expected attributions [B, n]; got {tuple(attributions.shape)}")
    magnitude = attributions.to(torch.float64).abs()
    defined = torch.isfinite(magnitude).all(dim=-1) & (magnitude.sum(dim=-1) > 0)
    return torch.where(torch.isfinite(magnitude), magnitude, torch.zeros_like(magnitude)), defined


def _out(values: torch.Tensor, defined: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    values = torch.where(defined, values, torch.full_like(values, float("nan")))
    return values if like.dtype == torch.float64 else values.float()


def sparseness(forward_fn: ForwardFn | None, inputs: torch.Tensor, attributions: torch.Tensor, targets: torch.Tensor,
               *, batch_size: int = 256, generator: torch.Generator | None = None) -> MetricResult:
    """Sparseness (Chalasani, Chen, Chowdhury, Wu & Jha 2020, "Concise explanations of neural networks using
    adversarial training", ICML): the Gini index of |a| over the n patches.

    With |a| sorted ascending, |a|_(1) <= ... <= |a|_(n):  G = Σ_i (2i - n - 1) |a|_(i) / (n Σ_i |a|_(i))
    (= Σ_i Σ_j | |a_i| - |a_j| | / (2 n Σ|a|); Quantus's formula). 0 for a uniform map, (n - 1) / n when one patch
    holds everything. Higher is better, i.e. sparser, more concise. Scale-free; unlike Quantus 0.6, no 1e-7 is
    added to |a| (there, a map with small values, or one normalised by a batch neighbour's larger maximum, is
    pulled toward 0). NaN for a map of zeros (Quantus returns 0) or a non-finite map. Unused: forward_fn, inputs,
    targets, batch_size, generator (no forwards, no draws; the one call of every metric).
    """
    magnitude, defined = _magnitudes(attributions)
    n = magnitude.shape[-1]
    ordered = magnitude.sort(dim=-1).values
    index = torch.arange(1, n + 1, dtype=torch.float64, device=magnitude.device)
    total = magnitude.sum(dim=-1)
    gini = ((2 * index - n - 1) * ordered).sum(dim=-1) / (n * torch.where(defined, total, torch.ones_like(total)))
    return MetricResult({"sparseness": _out(gini, defined, attributions)})


def complexity(forward_fn: ForwardFn | None, inputs: torch.Tensor, attributions: torch.Tensor, targets: torch.Tensor,
               *, batch_size: int = 256, generator: torch.Generator | None = None) -> MetricResult:
    """Complexity (Bhatt, Weller & Moura 2020, "Evaluating and aggregating feature-based model explanations",
    IJCAI): the entropy of the fractional contribution of each patch.

    P_p = |a_p| / Σ_q |a_q|,  complexity = -Σ_p P_p ln P_p (nats; 0 ln 0 = 0). 0 when one patch holds everything,
    ln n for a uniform map (the ceiling grows with the patch count: compare maps on one grid). Lower is better,
    i.e. more concise. Scale-free, so Quantus's batch-wide normalisation does not move it. NaN for a map of zeros
    or a non-finite map. Unused: forward_fn, inputs, targets, batch_size, generator.
    """
    magnitude, defined = _magnitudes(attributions)
    total = magnitude.sum(dim=-1, keepdim=True)
    share = magnitude / torch.where(total > 0, total, torch.ones_like(total))
    entropy = -torch.special.xlogy(share, share).sum(dim=-1)
    return MetricResult({"complexity": _out(entropy, defined, attributions)})


def effective_complexity(forward_fn: ForwardFn | None, inputs: torch.Tensor, attributions: torch.Tensor,
                         targets: torch.Tensor, *, eps: float = 0.01, batch_size: int = 256,
                         generator: torch.Generator | None = None) -> MetricResult:
    """Effective complexity (Nguyen & Rodríguez Martínez 2020, "On quantitative aspects of model interpretability",
    arXiv 2007.07584): how many features an explanation asks the reader to look at, those whose attribution
    exceeds a tolerance eps.

    effective_complexity = #{p : |a_p| > eps · max_q |a_q|} / n, a fraction of the n patches (grids of 49 and 196
    patches compare), per image. eps is relative to the image's own largest |a|, so the score is scale-free and
    never depends on the other images of the batch (Quantus 0.6 divides the whole batch by one maximum, so a map
    batched with a 10x larger one loses its patches). Default eps = 0.01, LATEC's setting (Klein et al. 2024): a
    patch under 1% of the image's top counts as negligible. Quantus's default 1e-5 keeps every patch that is not
    (nearly) exactly zero, so a dense map (gradients, occlusion, Shapley estimates) scores 1 whatever its shape.
    Lower is better, in (0, 1]. NaN for a map of zeros or a non-finite map. Unused: forward_fn, inputs, targets,
    batch_size, generator.
    """
    check_eps(eps)
    magnitude, defined = _magnitudes(attributions)
    top = magnitude.amax(dim=-1, keepdim=True)
    fraction = (magnitude > eps * top).sum(dim=-1).to(torch.float64) / magnitude.shape[-1]
    return MetricResult({"effective_complexity": _out(fraction, defined, attributions)})


class _ComplexityMetric(Metric):
    group = "complexity"
    nan_reason: ClassVar[str] = NO_MASS


@register_metric("sparseness")
class Sparseness(_ComplexityMetric):
    """Sparseness (Chalasani et al. 2020): the Gini index of |attribution|; higher = more concise."""

    main_score = "sparseness"

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        return sparseness(forward_fn, inputs, attributions, targets)


@register_metric("complexity")
class Complexity(_ComplexityMetric):
    """Complexity (Bhatt et al. 2020): the entropy of |attribution| / Σ|attribution|; lower = more concise."""

    main_score = "complexity"
    higher_is_better = False

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        return complexity(forward_fn, inputs, attributions, targets)


@register_metric("effective_complexity")
class EffectiveComplexity(_ComplexityMetric):
    """Effective complexity (Nguyen & Rodríguez Martínez 2020): the fraction of patches whose |attribution| exceeds
    eps times the image's largest; lower = more concise."""

    main_score = "effective_complexity"
    higher_is_better = False

    def __init__(self, eps: float = 0.01) -> None:
        super().__init__()
        self.eps = check_eps(eps)

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        return effective_complexity(forward_fn, inputs, attributions, targets, eps=self.eps)
