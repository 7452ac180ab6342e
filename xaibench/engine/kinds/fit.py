"""Unit kind `fit`: an amortized explainer (a FittedExplainer: ViT-Shapley, FastSHAP) trained on the explained
network and the training split; its state is cached and loaded by the method's explain and sanity units."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from xaibench.cache import derive_seed, unit_key
from xaibench.engine.context import Context
from xaibench.engine.kinds.common import suited_model
from xaibench.engine.scope import Scope
from xaibench.engine.units import Unit, UnitKind, register_kind
from xaibench.methods import create_method, is_fitted
from xaibench.training import DataSpec


@dataclass(frozen=True)
class FitParams:
    dataset: str
    spec: DataSpec
    seed: int
    method: str
    options: dict[str, Any]


def fit_unit(scope: Scope) -> Unit:
    model, spec = scope.units["model"], scope.spec
    key = unit_key("fit", {"model": model.key, "data": spec.key(), "method": scope.method,
                           "options": scope.method_options, "code": scope.setup.method_code[scope.method],
                           "seed": scope.seed, "device": scope.device.type})
    return Unit("fit", f"fit {spec.name}/seed{scope.seed}/{scope.method}", key, {"model": model.key},
                params=FitParams(spec.name, spec, scope.seed, scope.method, scope.method_options))


@register_kind
class FitKind(UnitKind):
    """Train an amortized explainer on the model and the training split. Its time is in the manifest's units
    (cost.csv counts explaining only), so it adds no rows."""

    name = "fit"
    planning_order = 50

    def plan(self, scope: Scope):
        if scope.level == "method" and is_fitted(scope.method):
            scope.add("fitted", fit_unit(scope))

    def compute(self, unit: Unit, ctx: Context, deps: dict[str, Any]) -> dict[str, Any]:
        start, p = time.perf_counter(), unit.params
        model = suited_model(deps, p)
        explainer = create_method(p.method, model, **p.options)
        generator = torch.Generator(device=ctx.device).manual_seed(derive_seed(p.seed, p.dataset, p.method, "fit"))
        state = explainer.fit(ctx.split(p.spec, "train"), generator, progress=ctx.progress)
        return {"state": {name: tensor.detach().cpu() for name, tensor in state.items()},
                "seconds": time.perf_counter() - start}
