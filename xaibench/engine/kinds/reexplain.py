"""Unit kind `reexplain`: a metric that runs the method again (robustness on perturbed inputs, random logit on
another class, eMPRT on the randomized network) on one method's explanations. The method is rebuilt here, as the
explain kind builds it, and its cost (time, images explained) is counted apart from the explanation's own."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from xaibench.cache import derive_seed, unit_key
from xaibench.engine.context import Context
from xaibench.engine.kinds.common import suited_model
from xaibench.engine.kinds.score import ScoreParams, curve_rows, metric_cost_row, score_rows
from xaibench.engine.scope import Scope, key_options
from xaibench.engine.units import Outcome, Unit, UnitKind, register_kind
from xaibench.faults import event
from xaibench.methods import create_method, run_explainer
from xaibench.metrics import create_metric
from xaibench.metrics.catalog import needs_explainer


@dataclass(frozen=True)
class ReexplainParams(ScoreParams):
    method_options: dict[str, Any] = None
    fitted: bool = False


def reexplain_unit(scope: Scope, metric: str) -> Unit:
    """A metric that re-runs scope.method, on its explanation (and its fitted state, for an amortized method)."""
    setup, model, explained = scope.setup, scope.units["model"], scope.units["explanation"]
    fitted, p = scope.units.get("fitted"), explained.params
    inputs = {"explanation": explained.key, "model": model.key, "metric": metric,
              "options": key_options(setup.metric_options[metric]), "code": setup.metric_code[metric],
              "method_code": setup.method_code[p.method], "seed": p.seed, "batch_size": scope.options.batch_size,
              "device": scope.device.type, **({"fit": fitted.key} if fitted is not None else {})}
    deps = {"model": model.key, "explanation": explained.key, **({"fitted": fitted.key} if fitted is not None else {})}
    return Unit("reexplain", f"reexplain {p.dataset}/seed{p.seed}/{p.method}/{metric}", unit_key("reexplain", inputs),
                deps, params=ReexplainParams(p.dataset, p.spec, p.seed, p.method, metric, setup.metric_options[metric],
                                             p.n_test, False, False, scope.options.batch_size, p.options,
                                             fitted is not None))


class Reexplainer:
    """explain_fn(inputs, targets, randomized=False) of a metric: the method on the model (or on its fully
    randomized copy, made once, lazily), from one seeded generator; counts the images explained and the time."""

    def __init__(self, p: ReexplainParams, model, state: Any, device: torch.device):
        self.p, self.model, self.state = p, model, state
        self.generator = torch.Generator(device=device).manual_seed(
            derive_seed(p.seed, p.dataset, p.method, p.metric, "reexplain"))
        self.weights = torch.Generator(device=device).manual_seed(derive_seed(p.seed, "sanity-weights"))
        self.explainers: dict[bool, Any] = {}
        self.n_explained, self.seconds = 0, 0.0

    def _explainer(self, randomized: bool):
        if randomized not in self.explainers:
            network = self.model
            if randomized:  # every stage re-initialised: the last copy of the MPRT cascade
                from xaibench.models.randomize import randomized_copies

                for _, network in randomized_copies(self.model, self.weights):
                    pass
            explainer = create_method(self.p.method, network, **self.p.method_options)
            if self.state is not None:  # an amortized explainer keeps the state fitted on the original model
                explainer.load_fitted(self.state)
            self.explainers[randomized] = explainer
        return self.explainers[randomized]

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor, randomized: bool = False) -> torch.Tensor:
        start = time.perf_counter()
        attributions = run_explainer(self._explainer(randomized), inputs, targets, generator=self.generator)
        self.n_explained += len(inputs)
        self.seconds += time.perf_counter() - start
        return attributions.attributions.to(inputs.device)


@register_kind
class ReexplainKind(UnitKind):
    """Score one method with a metric that runs the method again, batch by batch through the metric's `update`."""

    name = "reexplain"
    planning_order = 75

    def plan(self, scope: Scope):
        if scope.level == "method":
            for metric in scope.setup.metrics_for(scope.options, scope.dataset):
                if needs_explainer(metric):
                    scope.add(None, reexplain_unit(scope, metric))

    def compute(self, unit: Unit, ctx: Context, deps: dict[str, Any]) -> dict[str, Any]:
        p, start_time = unit.params, time.perf_counter()
        model, explained = suited_model(deps, p), deps["explanation"]
        batch = ctx.test_batch(p.spec, p.n_test)
        forward_fn, forward_batch = ctx.forward(model, batch.x)
        options = dict(p.options)
        if options.get("batch_size") == "auto":
            options["batch_size"] = forward_batch
        metric = create_metric(p.metric, **options)
        generator = torch.Generator(device=ctx.device).manual_seed(
            derive_seed(p.seed, p.dataset, p.method, p.metric))
        explain_fn = Reexplainer(p, model, deps["fitted"]["state"] if p.fitted else None, ctx.device)
        curves, x_axis, n_forward = {}, None, 0
        for start in ctx.progress_range(len(batch.x), p.batch_size, unit.label):
            chunk = slice(start, start + p.batch_size)
            event("score")
            output = metric.update(forward_fn, batch.x[chunk], explained["attributions"][chunk].to(ctx.device),
                                   explained["targets"][chunk].to(ctx.device), None, generator, explain_fn)
            for name, values in output.curves.items():
                curves.setdefault(name, []).append(values.detach().float().cpu())
            x_axis = output.x.detach().float().cpu() if output.x is not None else x_axis
            n_forward += int(output.n_forward)
        return {"scores": {name: values.float().cpu() for name, values in metric.per_image().items()},
                "means": {name: float(mean) for name, mean in metric.compute().items()},
                "curves": {name: torch.cat(values) for name, values in curves.items()}, "x": x_axis,
                "n_forward": n_forward, "n_explained": explain_fn.n_explained, "explain_seconds": explain_fn.seconds,
                "seconds": time.perf_counter() - start_time}

    def detail(self, payload: Any) -> str:
        means = payload.get("means", {})
        return f" ({', '.join(f'{name} {mean:.4g}' for name, mean in means.items())})" if means else ""

    def manifest_entry(self, payload: Any) -> dict[str, Any]:
        return {"n_forward": int(payload.get("n_forward", 0)), "n_explained": int(payload.get("n_explained", 0))}

    def rows(self, unit: Unit, outcome: Outcome, collector) -> None:
        p, scored = unit.params, outcome.payload
        batch = collector.ctx.test_batch(p.spec, p.n_test)
        targets = collector.payload(unit, "explanation")["targets"]
        collector.add("scores", score_rows(p, batch.indices, batch.labels.cpu(), targets, scored["scores"]))
        collector.add("curves", curve_rows(p, scored))
        collector.add("metric_costs", [metric_cost_row(p, scored, len(batch.indices))])

