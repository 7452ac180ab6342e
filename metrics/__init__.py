"""Metric plugins: pure tensor functions of forward_fn(x, keep) and their registered classes (as xaibench.metrics).

Functional (device in, device out; see docs/metrics.md):
    srg(forward_fn, inputs, attributions, targets, *, steps=None, batch_size=256, generator=None,
        random_baseline=True, autocast=None) -> MetricResult
    rsrg(forward_fn, inputs, attributions, targets, *, n_draws=4, steps=None, batch_size=256, generator=None,
         eps=1e-6, autocast=None) -> MetricResult
    insertion(...) / deletion(...) -> MetricResult;  plausibility_auroc(attributions, ground_truth) -> [B];
    agreement(attributions, players, shapley, measures) -> {measure: [B]} (rank, wtau, top1, bottom1, sign);
    game_agreement(attributions, GameTruth) -> {score: [B]};  object_agreement(attributions, object_patches,
    shapley) -> (rank [B], sign [B]);  weighted_tau_rows(a, b) -> [b] (scipy's weightedtau, batched)
with forward_fn(x [b, C, H, W], keep_mask bool [b, n]) -> probabilities [b, n_classes], inputs [B, C, H, W],
attributions [B, n], targets long [B]; steps None = every k, int K = K evenly spaced k, list = those k.

Registered (`xaibench list metrics`): srg, rsrg, insertion, deletion, plausibility, truth (agreement with the
model's exact Shapley values of the whole game: objects and background regions). A runner does
    metric = create_metric("srg", steps=None, batch_size=256)      # = METRICS.create(name, **options)
    out = metric(forward_fn, inputs, attributions, targets, ground_truth=None, generator=g)
    out.scores  # name -> [B];  out.curves  # name -> [B, K] at out.x [K]; out.srg, out.mif as attributes
    metric.compute(), metric.per_image(), metric.reset()
Every call, functional or registered, returns one MetricResult. A class and its function share every option
and default.
score_higher_is_better(score) says which way a score is better (the tables bold by it).
"""
from __future__ import annotations

from typing import Any

from xaibench.registry import METRICS, list_metrics

# The families beyond the curves, registered on import (docs/metrics.md lists every metric with its defaults)
from . import complexity, curve_scores, faithfulness, infidelity, localisation, randomisation, road, robustness  # noqa: F401,E501
from .curves import keep_curves, resolve_steps, trapezoid_auc
from .pixel_flipping import deletion, insertion, srg
from .plausibility import plausibility_auroc
from .result import MetricResult
from .rsrg import rsrg
from .stateful import RSRG, SRG, Deletion, Insertion, Metric, Plausibility, score_higher_is_better
from .truth import GameTruth, TruthAgreement, agreement, game_agreement, object_agreement, weighted_tau_rows


def create_metric(name: str, **options: Any) -> Metric:
    """Build a registered metric; unknown names raise UnknownNameError listing the valid ones."""
    return METRICS.create(name, **options)


__all__ = ["Deletion", "GameTruth", "Insertion", "Metric", "MetricResult", "Plausibility", "RSRG", "SRG",
           "TruthAgreement", "agreement", "create_metric", "deletion", "game_agreement", "insertion", "keep_curves",
           "list_metrics", "object_agreement", "plausibility_auroc", "resolve_steps", "rsrg", "score_higher_is_better",
           "srg", "trapezoid_auc", "weighted_tau_rows"]
