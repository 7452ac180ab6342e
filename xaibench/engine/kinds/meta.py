"""Unit kind `meta`: MetaQuantus' two properties of a metric (Hedström et al. 2023, "The meta-evaluation problem in
explainable AI"), measured on one method: the images are perturbed (a minor Gaussian noise that leaves the model's
decision alone, and a disruptive one that destroys the image), the method explains the perturbed images again and
the metric scores them. A metric is noise-resilient when its ranking of the methods survives the minor noise and
reactive when the disruptive noise changes it (the report compares the methods: tables/validity.py)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from xaibench.cache import derive_seed, unit_key
from xaibench.engine.context import Context
from xaibench.engine.kinds.common import suited_model
from xaibench.engine.kinds.reexplain import Reexplainer
from xaibench.engine.kinds.score import ScoreParams
from xaibench.engine.scope import Scope, key_options
from xaibench.engine.units import Outcome, Unit, UnitKind, register_kind
from xaibench.metrics import create_metric
from xaibench.metrics.catalog import metric_group, needs_explainer

PERTURBATIONS = ("minor", "disruptive")


@dataclass(frozen=True)
class MetaParams(ScoreParams):
    method_options: dict[str, Any] = None
    fitted: bool = False
    n_perturbations: int = 0
    noise: tuple[float, float] = (0.02, 1.0)  # std of the minor and of the disruptive noise


def judged_metrics(scope: Scope) -> list[str]:
    """The metrics whose MetaQuantus properties are measured: those that score a given map (not the robustness
    and randomisation metrics, which perturb by themselves, nor the truth, which is the judge)."""
    return [m for m in scope.setup.metrics_for(scope.options, scope.dataset)
            if not needs_explainer(m) and metric_group(m) != "truth" and not scope.setup.needs_truth.get(m)]


def meta_unit(scope: Scope, metric: str) -> Unit:
    setup, options, model = scope.setup, scope.options, scope.units["model"]
    fitted, p = scope.units.get("fitted"), scope.units["explanation"].params
    n_images = min(options.meta_images, p.n_test)
    inputs = {"model": model.key, "data": p.spec.key(), "method": p.method, "method_options": p.options,
              "method_code": setup.method_code[p.method], "metric": metric,
              "options": key_options(setup.metric_options[metric]), "code": setup.metric_code[metric],
              "n_images": n_images, "n": options.meta_perturbations, "noise": list(options.meta_noise),
              "target": options.target, "seed": p.seed, "device": scope.device.type,
              **({"fit": fitted.key} if fitted is not None else {})}
    deps = {"model": model.key, "explanation": scope.units["explanation"].key,
            **({"fitted": fitted.key} if fitted is not None else {})}
    return Unit("meta", f"meta {p.dataset}/seed{p.seed}/{p.method}/{metric}", unit_key("meta", inputs), deps,
                params=MetaParams(p.dataset, p.spec, p.seed, p.method, metric, setup.metric_options[metric],
                                  n_images, False, False, options.batch_size, p.options, fitted is not None,
                                  options.meta_perturbations, tuple(options.meta_noise)))


@register_kind
class MetaKind(UnitKind):
    """A metric's scores of one method on perturbed images, re-explained, for MetaQuantus' properties."""

    name = "meta"
    planning_order = 78

    def plan(self, scope: Scope):
        if scope.level == "method" and scope.options.meta_perturbations > 0:
            for metric in judged_metrics(scope):
                scope.add(None, meta_unit(scope, metric))

    def compute(self, unit: Unit, ctx: Context, deps: dict[str, Any]) -> dict[str, Any]:
        p, start_time = unit.params, time.perf_counter()
        model, explained = suited_model(deps, p), deps["explanation"]
        batch = ctx.test_batch(p.spec, p.n_test)
        forward_fn, forward_batch = ctx.forward(model, batch.x)
        options = dict(p.options)
        if options.get("batch_size") == "auto":
            options["batch_size"] = forward_batch
        targets = explained["targets"][:p.n_test].to(ctx.device)
        explain_fn = Reexplainer(p, model, deps["fitted"]["state"] if p.fitted else None, ctx.device)
        noise = torch.Generator(device=ctx.device).manual_seed(derive_seed(p.seed, p.dataset, p.method, "meta"))
        rows = [self._score(p, options, forward_fn, batch.x, explained["attributions"][:p.n_test].to(ctx.device),
                            targets, "none", 0, ctx.device)]
        for perturbation, std in zip(PERTURBATIONS, p.noise):
            for k in range(1, p.n_perturbations + 1):
                x = batch.x + std * torch.randn(tuple(batch.x.shape), generator=noise, device=noise.device).to(ctx.device)
                rows.append(self._score(p, options, forward_fn, x, explain_fn(x, targets), targets, perturbation, k,
                                        ctx.device))
        return {"rows": [row for part in rows for row in part], "n_explained": explain_fn.n_explained,
                "seconds": time.perf_counter() - start_time}

    @staticmethod
    def _score(p: MetaParams, options: dict[str, Any], forward_fn, x, attributions, targets, perturbation: str,
               k: int, device) -> list[dict[str, Any]]:
        """The metric's mean scores of the perturbed images (k = 0: the images themselves)."""
        metric = create_metric(p.metric, **options)
        generator = torch.Generator(device=device).manual_seed(derive_seed(p.seed, p.dataset, p.method, p.metric))
        for start in range(0, len(x), p.batch_size):
            chunk = slice(start, start + p.batch_size)
            metric.update(forward_fn, x[chunk], attributions[chunk], targets[chunk], None, generator)
        return [{"dataset": p.dataset, "seed": p.seed, "method": p.method, "metric": name,
                 "perturbation": perturbation, "k": k, "value": float(mean)}
                for name, mean in metric.compute().items()]

    def rows(self, unit: Unit, outcome: Outcome, collector) -> None:
        collector.add("meta", outcome.payload["rows"])
