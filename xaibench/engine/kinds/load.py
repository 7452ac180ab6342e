"""Unit kind `load`: a user's classifier from its checkpoint file (`--model torchvision:NAME --checkpoint PATH`),
explained and scored as it is; nothing is trained or stored."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xaibench.cache import unit_key
from xaibench.engine.context import Context
from xaibench.engine.kinds.train import checkpoint_record
from xaibench.engine.scope import Scope
from xaibench.engine.units import Outcome, Unit, UnitKind, register_kind
from xaibench.io import file_digest
from xaibench.training import DataSpec, TrainedModel


@dataclass(frozen=True)
class LoadParams:
    model: str
    checkpoint: str
    options: dict[str, Any]
    spec: DataSpec
    seed: int
    main: bool = True


def load_unit(model: str, checkpoint: str, options: dict[str, Any], spec: DataSpec, seed: int) -> Unit:
    key = unit_key("load", {"model": model, "weights": file_digest(checkpoint), "options": options,
                            "data": spec.key()})
    return Unit("load", f"load {spec.name}/seed{seed}/{model}", key,
                params=LoadParams(model, checkpoint, options, spec, seed))


@register_kind
class LoadKind(UnitKind):
    """A user's classifier from its checkpoint file: no training."""

    name = "load"
    planning_order = 20

    def plan(self, scope: Scope):
        options = scope.options
        if scope.level == "network" and options.checkpoint:
            scope.add("model", load_unit(options.model, options.checkpoint, dict(scope.config.get("model", {})),
                                         scope.spec, scope.seed))

    def cached(self, unit: Unit, ctx: Context) -> bool:
        return True  # nothing to compute: the file is the result

    def run(self, unit: Unit, ctx: Context, deps: dict[str, Any]) -> tuple[Any, bool, float]:
        from xaibench.models import build_classifier

        start, p = time.perf_counter(), unit.params
        info = ctx.test_split(p.spec).info
        model = build_classifier(p.model, num_classes=info.n_classes, in_chans=info.in_chans,
                                 img_size=info.size, checkpoint=p.checkpoint, **p.options)
        if hasattr(model, "set_fill") and p.options.get("fill", "mean") == "mean":
            model.set_fill(p.spec.load("train").channel_mean())
        record = {"key": unit.key, "model_name": p.model, "checkpoint": str(p.checkpoint)}
        trained = TrainedModel(model.to(ctx.device).eval(), record, Path(p.checkpoint))
        return trained, True, time.perf_counter() - start

    def detail(self, payload: Any) -> str:
        return f" (from {payload.path})"

    def portable(self, payload: Any) -> Any:
        return TrainedModel(None, payload.record, payload.path)

    def computed_by(self, unit: Unit, ctx: Context, payload: Any) -> str | None:
        return None  # nothing is computed: the user's file is loaded

    def rows(self, unit: Unit, outcome: Outcome, collector) -> None:
        checkpoint_record(unit, outcome, collector)
