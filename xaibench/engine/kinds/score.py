"""Unit kind `score`: one metric on one method's explanations (or on the reference ordering of a truth unit); the
metric sees forward_fn and tensors only. Its rows are the per-image scores and the mean curves."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from xaibench.cache import derive_seed, unit_key
from xaibench.engine.context import Context
from xaibench.engine.scope import Scope, key_options
from xaibench.engine.truth import N_SLOTS
from xaibench.engine.units import Outcome, Unit, UnitKind, register_kind
from xaibench.faults import event
from xaibench.metrics import GameTruth, create_metric
from xaibench.metrics.catalog import needs_explainer
from xaibench.training import DataSpec


@dataclass(frozen=True)
class ScoreParams:
    dataset: str
    spec: DataSpec
    seed: int
    method: str
    metric: str
    options: dict[str, Any]
    n_test: int
    needs_truth: bool
    needs_object_truth: bool
    batch_size: int


def score_unit(scope: Scope, explained: Unit, metric: str, truth: Unit | None = None) -> Unit:
    """A metric on one explanation (or on the reference ordering of a truth unit); a metric that reads the
    model's object truth (`truth`) depends on the truth unit as well."""
    setup, model, p = scope.setup, scope.units["model"], explained.params
    inputs = {"explanation": explained.key, "model": model.key, "metric": metric,
              "options": key_options(setup.metric_options[metric]), "code": setup.metric_code[metric],
              "seed": p.seed, "batch_size": scope.options.batch_size, "device": scope.device.type}
    needs_objects = setup.needs_object_truth.get(metric, False)
    deps = {"model": model.key, "explanation": explained.key}
    if needs_objects:
        inputs["truth"] = truth.key
        deps["truth"] = truth.key
    return Unit("score", f"score {p.dataset}/seed{p.seed}/{p.method}/{metric}", unit_key("score", inputs), deps,
                params=ScoreParams(p.dataset, p.spec, p.seed, p.method, metric, setup.metric_options[metric],
                                   p.n_test, setup.needs_truth[metric], needs_objects, scope.options.batch_size))


def score_rows(p: ScoreParams, indices: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor,
               scores: dict[str, torch.Tensor]) -> list[pd.DataFrame]:
    return [pd.DataFrame({"dataset": p.dataset, "seed": p.seed, "method": p.method,
                          "image": indices.numpy(), "label": labels.numpy(), "target": targets.numpy(),
                          "metric": name, "value": values.double().numpy()}) for name, values in scores.items()]


def curve_rows(p: ScoreParams, scored: dict[str, Any]) -> list[dict[str, Any]]:
    if scored.get("x") is None:
        return []
    x_axis = scored["x"].tolist()
    return [{"dataset": p.dataset, "method": p.method, "seed": p.seed, "curve": name, "x": x_value, "y": y_value}
            for name, curves in scored["curves"].items()
            for x_value, y_value in zip(x_axis, curves.double().mean(dim=0).tolist())]


def _ground_truth(p: ScoreParams, batch, model, deps: dict[str, Any]):
    """The annotated patches, or the model's object truth, where the metric reads one."""
    if p.needs_object_truth:
        truth = deps["truth"]
        return GameTruth(truth["players"], truth["game_shapley"], N_SLOTS, truth["patches"], truth["shapley"])
    return batch.dataset.patch_masks(model.patch_size, batch.indices) if p.needs_truth else None


@register_kind
class ScoreKind(UnitKind):
    """Score one method's explanations with one metric, batch by batch through the metric's `update`."""

    name = "score"
    planning_order = 70

    def plan(self, scope: Scope):
        if scope.level not in ("method", "network_end"):
            return
        metrics = [m for m in scope.setup.metrics_for(scope.options, scope.dataset) if not needs_explainer(m)]
        truth = scope.units.get("truth")
        if scope.level == "method":
            for metric in metrics:
                scope.add(None, score_unit(scope, scope.units["explanation"], metric, truth))
        elif truth is not None:
            for metric in metrics:  # the reference ordering, scored like a method (its own truth score is moot)
                if not scope.setup.needs_object_truth.get(metric, False):
                    scope.add(None, score_unit(scope, truth, metric))

    def compute(self, unit: Unit, ctx: Context, deps: dict[str, Any]) -> dict[str, Any]:
        p, start_time = unit.params, time.perf_counter()
        model, explained = deps["model"].model, deps["explanation"]
        batch = ctx.test_batch(p.spec, p.n_test)
        truth = _ground_truth(p, batch, model, deps)
        forward_fn, forward_batch = ctx.forward(model, batch.x)
        options = dict(p.options)
        if options.get("batch_size") == "auto":
            options["batch_size"] = forward_batch
        metric = create_metric(p.metric, **options)
        generator = torch.Generator(device=ctx.device).manual_seed(
            derive_seed(p.seed, p.dataset, p.method, p.metric))
        curves: dict[str, list[torch.Tensor]] = {}
        x_axis, n_forward = None, 0
        for start in ctx.progress_range(len(batch.x), p.batch_size, unit.label):
            chunk = slice(start, start + p.batch_size)
            event("score")
            output = metric.update(forward_fn, batch.x[chunk], explained["attributions"][chunk].to(ctx.device),
                                   explained["targets"][chunk].to(ctx.device),
                                   truth[chunk].to(ctx.device) if truth is not None else None, generator)
            for name, values in output.curves.items():
                curves.setdefault(name, []).append(values.detach().float().cpu())
            x_axis = output.x.detach().float().cpu() if output.x is not None else x_axis
            n_forward += int(output.n_forward)
        means = {name: float(mean) for name, mean in metric.compute().items()}
        return {"scores": {name: values.float().cpu() for name, values in metric.per_image().items()}, "means": means,
                "curves": {name: torch.cat(values) for name, values in curves.items()},
                "x": x_axis, "n_forward": n_forward, "seconds": time.perf_counter() - start_time}

    def detail(self, payload: Any) -> str:
        means = payload.get("means", {})
        return f" ({', '.join(f'{name} {mean:.4g}' for name, mean in means.items())})" if means else ""

    def manifest_entry(self, payload: Any) -> dict[str, Any]:
        return {"n_forward": int(payload.get("n_forward", 0))}  # masked inputs, for inputs/s (gpu_check.sh)

    def rows(self, unit: Unit, outcome: Outcome, collector) -> None:
        p, scored = unit.params, outcome.payload
        batch = collector.ctx.test_batch(p.spec, p.n_test)
        emitted = collector.emitted.setdefault((p.dataset, p.seed, p.method), set())
        fresh = {name: values for name, values in scored["scores"].items() if name not in emitted}
        emitted.update(fresh)
        targets = collector.payload(unit, "explanation")["targets"]
        collector.add("scores", score_rows(p, batch.indices, batch.labels.cpu(), targets, fresh))
        collector.add("curves", curve_rows(p, scored))
        collector.add("metric_costs", [metric_cost_row(p, scored, len(batch.indices))])


def metric_cost_row(p: ScoreParams, scored: dict[str, Any], n_images: int) -> dict[str, Any]:
    """What one metric cost on one method's images: ms, forward inputs and re-explained images per image."""
    n = max(n_images, 1)
    return {"dataset": p.dataset, "seed": p.seed, "method": p.method, "metric": p.metric,
            "ms_per_image": 1000 * scored.get("seconds", 0.0) / n, "forward_per_image": scored.get("n_forward", 0) / n,
            "explained_per_image": scored.get("n_explained", 0) / n}
