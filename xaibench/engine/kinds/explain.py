"""Unit kind `explain`: one method's attributions of the first n_test test images, in batches, with a seeded
generator, timed and pass-counted by `run_explainer`. Also the helpers every kind that calls a method shares."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from xaibench.cache import derive_seed, unit_key
from xaibench.engine.context import Context
from xaibench.engine.scope import Scope
from xaibench.engine.units import NotApplicable, Outcome, Unit, UnitKind, register_kind
from xaibench.faults import event
from xaibench.methods import Explanation, create_method, run_explainer, unsuited_reason
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


def explanation_targets(model, x: torch.Tensor, labels: torch.Tensor, target: str, batch_size: int) -> torch.Tensor:
    """The class each image is explained for: its label, or the model's prediction."""
    if target == "label":
        return labels
    with torch.no_grad():  # not inference_mode: the targets take part in the explainers' autograd
        return torch.cat([model.forward_fn(x[start:start + batch_size]).argmax(dim=-1)
                          for start in range(0, len(x), batch_size)])


def merge_explanations(parts: list[Explanation]) -> Explanation:
    """One Explanation for all batches: attributions concatenated, time summed, passes per image averaged."""
    counts = [part.attributions.shape[0] for part in parts]
    total = max(sum(counts), 1)
    forward = sum(part.n_forward * count for part, count in zip(parts, counts))
    backward = sum(part.n_backward * count for part, count in zip(parts, counts))
    return Explanation(method=parts[0].method, attributions=torch.cat([p.attributions.float().cpu() for p in parts]),
                       seconds=sum(part.seconds for part in parts), n_forward=forward / total,
                       n_backward=backward / total)


def explanation_payload(explanation: Explanation, targets: torch.Tensor) -> dict[str, Any]:
    """What an explain unit stores: the Explanation's fields (no pixel map) and the explained classes."""
    return {"method": explanation.method, "attributions": explanation.attributions, "seconds": explanation.seconds,
            "n_forward": float(explanation.n_forward), "n_backward": float(explanation.n_backward),
            "targets": targets.cpu()}


def payload_explanation(payload: dict[str, Any]) -> Explanation:
    """The Explanation an explain unit stored."""
    return Explanation(method=payload["method"], attributions=payload["attributions"], seconds=payload["seconds"],
                       n_forward=payload["n_forward"], n_backward=payload["n_backward"])


def suited_model(deps: dict[str, Any], p: Any):
    """The unit's model, or NotApplicable when its method does not suit the model's family."""
    model = deps["model"].model
    reason = unsuited_reason(p.method, model, p.options)
    if reason:
        raise NotApplicable(reason)
    return model


def cost_row(p: ExplainParams, explanation: Explanation) -> dict[str, Any]:
    return {"dataset": p.dataset, "method": p.method, "seed": p.seed, "ms_per_image": explanation.ms_per_image,
            "forward_per_image": explanation.n_forward, "backward_per_image": explanation.n_backward}


@register_kind
class ExplainKind(UnitKind):
    """Explain the first n_test test images of a dataset with one method, in batches, with a seeded generator."""

    name = "explain"
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
