"""Scores of the MoRF (deletion) curve: AOPC (Samek et al. 2017) and IROF with patches as segments (Rieger & Hansen
2020), as pure functions of forward_fn and as registered classes; any removal of metrics/removal.py.
"""
from __future__ import annotations

import torch

from xaibench.registry import register_metric

from .curves import ForwardFn, Steps, check_shapes, resolve_steps
from .pixel_flipping import deletion
from .result import MetricResult
from .stateful import _CurveMetric


def aopc_from_curve(curve: torch.Tensor) -> torch.Tensor:
    """AOPC [B] of MoRF curves [B, K] whose first point is k = 0: mean_k (curve[:, 0] - curve[:, k])."""
    return (curve[:, :1] - curve).mean(dim=1)


def irof_from_curve(curve: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(irof [B], normalised curves [B, K]) of MoRF curves [B, K] at x [K] (x[0] = 0): the trapezoid area between 1
    and y_k = curve[:, k] / curve[:, 0]; NaN where curve[:, 0] is not > 0 (no score to normalise by)."""
    unperturbed = curve[:, :1]
    defined = unperturbed > 0
    ratio = torch.where(defined, curve / torch.where(defined, unperturbed, 1.0), torch.nan)
    area = torch.trapezoid(1.0 - ratio, x=x.to(ratio.dtype), dim=-1)
    return area, ratio


def _morf_curve(forward_fn, inputs, attributions, targets, steps, batch_size, generator, autocast,
                removal) -> MetricResult:
    """deletion(...) at the given steps with k = 0 added where missing (both scores start from f(x))."""
    check_shapes(inputs, attributions, targets)
    removed = resolve_steps(steps, attributions.shape[1])
    if int(removed[0]) != 0:
        removed = torch.cat([torch.zeros(1, dtype=removed.dtype), removed])
    return deletion(forward_fn, inputs, attributions, targets, steps=removed, batch_size=batch_size,
                    generator=generator, autocast=autocast, removal=removal)


def aopc(forward_fn: ForwardFn, inputs: torch.Tensor, attributions: torch.Tensor, targets: torch.Tensor, *,
         steps: Steps = None, batch_size: int = 256, generator: torch.Generator | None = None,
         autocast: bool | None = None, removal: str = "token") -> MetricResult:
    """AOPC, the area over the MoRF perturbation curve (Samek, Binder, Montavon, Lapuschkin & Müller 2017,
    "Evaluating the visualization of what a deep neural network has learned", IEEE TNNLS), per image:

        AOPC = 1 / (L + 1) * sum_{k=0..L} (f(x) - f(x_MoRF^(k)))

    f the target probability, x_MoRF^(k) the image with its k most relevant patches removed (ties at random by
    `generator`), the mean over the curve's L + 1 points. Higher is better (relevant patches first make it drop
    fast). steps: None (default) = every k = 0..n, the deletion curve itself (so AOPC is free where that curve is
    computed: aopc_from_curve); int K / a list as in `deletion`, k = 0 added where missing. removal: "token"
    (default, the model's mask token, as every xaibench curve) | "mean" | "zero" | "blur" | "road" (removal.py);
    Samek et al. fill with uniform noise, which xaibench's removals do not include. Cost: K forward inputs per image.
    Score: aopc [B]; curve: aopc = f(x) - f(x^(k)) [B, K].
    """
    curve = _morf_curve(forward_fn, inputs, attributions, targets, steps, batch_size, generator, autocast,
                        removal)
    drops = curve.curve[:, :1] - curve.curve
    return MetricResult({"aopc": drops.mean(dim=1)}, {"aopc": drops}, curve.x, curve.n_forward)


def irof(forward_fn: ForwardFn, inputs: torch.Tensor, attributions: torch.Tensor, targets: torch.Tensor, *,
         steps: Steps = None, batch_size: int = 256, generator: torch.Generator | None = None,
         autocast: bool | None = None, removal: str = "token") -> MetricResult:
    """IROF, iterative removal of features (Rieger & Hansen 2020, "IROF: a low resource evaluation metric for
    explanation methods", ICLR 2020 workshop AI for Affordable Healthcare), with xaibench's patches as the segments, per image:

        IROF = integral_0^1 (1 - f(x^(k)) / f(x)) d(k/n)   (trapezoid over the steps)

    Segments are ranked by their mean attribution, i.e. by the patch's attribution (ties at random by
    `generator`), and removed most relevant first; f the target probability. The curve is normalised by the
    unperturbed score, so images with a low f(x) weigh as much as confident ones; x runs over [0, 1], so the value
    does not grow with the number of steps or segments (Quantus' IROF = #segments - trapz(y, dx=1) does, and leaves
    out k = 0: on the same curve it equals n * IROF + (1 + y_1) / 2). Higher is better. NaN where f(x) = 0.
    steps and removal as in `aopc` (the paper fills a segment with a mean value, removal="mean" the image's mean per
    channel; the default "token" is the model's own removal, as in every xaibench curve). Cost: K forward inputs
    per image.
    Score: irof [B]; curve: irof = f(x^(k)) / f(x) [B, K].
    """
    curve = _morf_curve(forward_fn, inputs, attributions, targets, steps, batch_size, generator, autocast,
                        removal)
    area, ratio = irof_from_curve(curve.curve, curve.x)
    return MetricResult({"irof": area}, {"irof": ratio}, curve.x, curve.n_forward)


@register_metric("aopc")
class AOPC(_CurveMetric):
    """AOPC (Samek et al. 2017): the mean drop f(x) - f(x^(k)) of the target probability over the MoRF curve."""

    main_score = "aopc"

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        return aopc(forward_fn, inputs, attributions, targets, generator=generator, **self._options())


@register_metric("irof")
class IROF(_CurveMetric):
    """IROF (Rieger & Hansen 2020), patches as segments: the area over the MoRF curve normalised by f(x)."""

    main_score = "irof"

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        return irof(forward_fn, inputs, attributions, targets, generator=generator, **self._options())
