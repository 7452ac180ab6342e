"""Unit kind `sanity`: Adebayo et al. (2018)'s checks of one method: the cascading model-parameter randomization,
or with a network trained on permuted labels the data randomization test (metrics/sanity.py computes the
correlations; this kind builds the randomized networks and runs the method on them)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from xaibench.cache import derive_seed, unit_key
from xaibench.engine.context import Context
from xaibench.engine.kinds.common import explanation_targets, suited_model
from xaibench.engine.kinds.train import main_train_config, train_unit
from xaibench.engine.scope import Scope
from xaibench.engine.units import Outcome, Unit, UnitKind, register_kind
from xaibench.errors import XaibenchError
from xaibench.methods import create_method, run_explainer
from xaibench.training import DataSpec


@dataclass(frozen=True)
class SanityParams:
    dataset: str
    spec: DataSpec
    seed: int
    method: str
    options: dict[str, Any]
    n_images: int
    target: str
    test: str  # "model" (cascading randomization) or "data" (permuted labels)
    fitted: bool


def permuted_unit(scope: Scope) -> Unit:
    """The evaluated network trained the same way on permuted training labels (data randomization test)."""
    if scope.options.checkpoint:
        raise XaibenchError("sanity_data needs a network xaibench trains (with --checkpoint there is no recipe to "
                            "train it again on permuted labels); set run.sanity_data = false")
    return train_unit(scope.options.model, scope.spec.permuted(scope.seed), main_train_config(scope, scope.spec),
                      scope.seed)


def sanity_unit(scope: Scope, permuted: Unit | None = None) -> Unit:
    """The check of scope.method on sanity_images images; with `permuted`, the data randomization test."""
    options, model, explained = scope.options, scope.units["model"], scope.units["explanation"]
    fitted, p = scope.units.get("fitted"), explained.params
    test = "data" if permuted is not None else "model"
    n_images = min(options.sanity_images, p.n_test)
    key = unit_key("sanity", {"model": model.key, "data": p.spec.key(), "method": p.method,
                              "options": p.options, "code": scope.setup.method_code[p.method], "n": n_images,
                              "target": options.target, "seed": p.seed, "device": scope.device.type,
                              **({"fit": fitted.key} if fitted is not None else {}),
                              **({"permuted": permuted.key} if permuted is not None else {})})
    deps = {"model": model.key, **({"fitted": fitted.key} if fitted is not None else {}),
            **({"permuted": permuted.key} if permuted is not None else {})}
    return Unit("sanity", f"sanity {p.dataset}/seed{p.seed}/{p.method}/{test}", key, deps,
                params=SanityParams(p.dataset, p.spec, p.seed, p.method, p.options, n_images, options.target, test,
                                    fitted is not None))


def sanity_rows(p: SanityParams, payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"dataset": p.dataset, "seed": p.seed, "method": p.method, "test": p.test, "stage": stage,
             "spearman": float(rho.double().nanmean()), "spearman_abs": float(rho_abs.double().nanmean()),
             "n_images": len(rho)}
            for stage, rho, rho_abs in zip(payload["stages"], payload["spearman"], payload["spearman_abs"])]


@register_kind
class SanityKind(UnitKind):
    """Spearman correlation of a method's maps on the model and on its randomized copies."""

    name = "sanity"
    planning_order = 80

    def plan(self, scope: Scope):
        options = scope.options
        if scope.level == "network" and options.sanity_data and options.sanity_images > 0:
            scope.add("permuted", permuted_unit(scope))
        elif scope.level == "method":
            if options.sanity_images > 0:
                scope.add(None, sanity_unit(scope))
            if "permuted" in scope.units:
                scope.add(None, sanity_unit(scope, scope.units["permuted"]))

    def compute(self, unit: Unit, ctx: Context, deps: dict[str, Any]) -> dict[str, Any]:
        start, p = time.perf_counter(), unit.params
        model = suited_model(deps, p)
        batch = ctx.test_batch(p.spec, p.n_images)
        targets = explanation_targets(model, batch.x, batch.labels, p.target, len(batch.x))
        state = deps["fitted"]["state"] if p.fitted else None
        seed = derive_seed(p.seed, p.dataset, p.method, "sanity")

        def maps(network) -> torch.Tensor:
            """The method's maps of the batch on `network`, from a fresh generator (the same draws every time)."""
            explainer = create_method(p.method, network, **p.options)
            if state is not None:  # an amortized explainer keeps the state fitted on the original model
                explainer.load_fitted(state)
            generator = torch.Generator(device=ctx.device).manual_seed(seed)
            return run_explainer(explainer, batch.x, targets, generator=generator).attributions

        if p.test == "data":  # the same method on the network trained on permuted labels
            from xaibench.metrics.sanity import map_correlations

            rho, rho_abs = map_correlations(maps(model), maps(deps["permuted"].model))
            result = {"stages": ["data randomization"], "spearman": rho[None], "spearman_abs": rho_abs[None]}
        else:
            result = _cascade(model, maps, torch.Generator(device=ctx.device).manual_seed(
                derive_seed(p.seed, "sanity-weights")))
        return {"stages": list(result["stages"]), "spearman": result["spearman"].float().cpu(),
                "spearman_abs": result["spearman_abs"].float().cpu(), "seconds": time.perf_counter() - start}

    def rows(self, unit: Unit, outcome: Outcome, collector) -> None:
        collector.add("sanity", sanity_rows(unit.params, outcome.payload))


def _cascade(model, maps, weight_generator: torch.Generator) -> dict[str, Any]:
    """The cascading randomization: the maps on the model, then on each copy randomized from the top stage down."""
    from xaibench.metrics.sanity import cascading_randomization
    from xaibench.models.randomize import randomized_copies

    return cascading_randomization(maps, randomized_copies(model, weight_generator), maps(model))
