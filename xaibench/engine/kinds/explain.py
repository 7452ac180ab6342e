"""Unit kind `explain`: one method's attributions of the first n_test test images, in batches, with a seeded
generator, timed and pass-counted by `run_explainer`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from xaibench.cache import derive_seed, unit_key
from xaibench.engine.context import Context
from xaibench.engine.kinds.common import (
    explanation_payload,
    explanation_targets,
    merge_explanations,
    payload_explanation,
    suited_model,
)
from xaibench.engine.scope import Scope
from xaibench.engine.units import Outcome, Unit, UnitKind, register_kind
from xaibench.faults import event
from xaibench.methods import Explanation, create_method, run_explainer
from xaibench.training import DataSpec


@dataclass(frozen=True)
class ExplainParams:
    dataset: str
    spec: DataSpec
    seed: int
    method: str
    options: dict[str, Any]
    n_test: int
    target: str
    batch_size: int


def explain_unit(scope: Scope, fitted: Unit | None = None) -> Unit:
    """The explanation of scope.method on the scope's network (after its fit, for an amortized explainer)."""
    options, model, spec = scope.options, scope.units["model"], scope.spec
    inputs = {"model": model.key, "data": spec.key(), "n_test": scope.n_test, "target": options.target,
              "method": scope.method, "options": scope.method_options, "code": scope.setup.method_code[scope.method],
              "seed": scope.seed, "batch_size": options.batch_size, "device": scope.device.type}
    deps = {"model": model.key}
    if fitted is not None:
        inputs["fit"] = fitted.key
        deps["fitted"] = fitted.key
    return Unit("explain", f"explain {spec.name}/seed{scope.seed}/{scope.method}", unit_key("explain", inputs), deps,
                params=ExplainParams(spec.name, spec, scope.seed, scope.method, scope.method_options, scope.n_test,
                                     options.target, options.batch_size))


def cost_row(p: ExplainParams, explanation: Explanation) -> dict[str, Any]:
    return {"dataset": p.dataset, "method": p.method, "seed": p.seed, "ms_per_image": explanation.ms_per_image,
            "forward_per_image": explanation.n_forward, "backward_per_image": explanation.n_backward}


@register_kind
class ExplainKind(UnitKind):
    """Explain the first n_test test images of a dataset with one method, in batches, with a seeded generator."""

    name = "explain"
    planning_order = 60
    marks_unavailable = True

    def plan(self, scope: Scope):
        if scope.level == "method":
            scope.add("explanation", explain_unit(scope, scope.units.get("fitted")))

    def load(self, unit: Unit, ctx: Context) -> Any:
        payload = super().load(unit, ctx)
        return payload if payload is not None and "method" in payload else None

    def compute(self, unit: Unit, ctx: Context, deps: dict[str, Any]) -> dict[str, Any]:
        p = unit.params
        model = suited_model(deps, p)
        batch = ctx.test_batch(p.spec, p.n_test)
        targets = explanation_targets(model, batch.x, batch.labels, p.target, p.batch_size)
        generator = torch.Generator(device=ctx.device).manual_seed(
            derive_seed(p.seed, p.dataset, p.method, "explain"))
        explainer = create_method(p.method, model, **p.options)
        if "fitted" in deps:  # an amortized explainer: its fitted state first
            explainer.load_fitted(deps["fitted"]["state"])
        parts = []
        for start in ctx.progress_range(len(batch.x), p.batch_size, unit.label):
            chunk = slice(start, start + p.batch_size)
            event("explain")
            parts.append(run_explainer(explainer, batch.x[chunk], targets[chunk], generator=generator))
        return explanation_payload(merge_explanations(parts), targets)

    def rows(self, unit: Unit, outcome: Outcome, collector) -> None:
        p, explanation = unit.params, payload_explanation(outcome.payload)
        collector.add("costs", [cost_row(p, explanation)])
        collector.frames.explanations.append({"dataset": p.dataset, "seed": p.seed, "method": p.method,
                                              "image": torch.arange(len(explanation.attributions)),
                                              "target": outcome.payload["targets"],
                                              "attributions": explanation.attributions})
        collector.figure(p, explanation.attributions)
