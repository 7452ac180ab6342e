"""Unit kind `train`: a model trained by xaibench (or loaded from the checkpoint cache); its key is the checkpoint
key, its result the trainer's own checkpoint file. Plans the explained network of every dataset and seed."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from xaibench.engine.context import Context
from xaibench.engine.options import train_config_for
from xaibench.engine.scope import Scope
from xaibench.engine.units import Outcome, Unit, UnitKind, register_kind
from xaibench.training import (
    DataSpec,
    TrainConfig,
    TrainedModel,
    checkpoint_key,
    checkpoint_path,
    existing_checkpoint,
    train_model,
)


@dataclass(frozen=True)
class TrainParams:
    model: str
    spec: DataSpec
    config: TrainConfig
    seed: int
    main: bool = False  # the network of Table 2 (its checkpoint goes into the manifest)


def train_unit(model: str, spec: DataSpec, config: TrainConfig, seed: int, main: bool = False) -> Unit:
    return Unit("train", f"train {spec.name}/seed{seed}/{model}", checkpoint_key(spec, model, config, seed),
                params=TrainParams(model, spec, config, seed, main))


def main_train_config(scope: Scope, spec: DataSpec) -> TrainConfig:
    """The recipe of the explained network on `spec`'s dataset."""
    return train_config_for(scope.options.model, scope.config, scope.overrides, spec.name)


def checkpoint_record(unit: Unit, outcome: Outcome, collector) -> None:
    """The explained network's checkpoint in the manifest (train and load units)."""
    if unit.params.main:
        record = outcome.payload.record
        collector.frames.checkpoints[f"{unit.params.spec.name}/seed{unit.params.seed}"] = {
            "file": outcome.payload.path.name, "val_acc": record.get("val_acc"), "best_step": record.get("best_step")}


@register_kind
class TrainKind(UnitKind):
    """Train a model (or load it from the checkpoint cache). The unit's key is the checkpoint key."""

    name = "train"
    planning_order = 10

    def plan(self, scope: Scope):
        if scope.level == "network" and not scope.options.checkpoint:
            options = scope.options
            scope.add("model", train_unit(options.model, scope.spec, main_train_config(scope, scope.spec),
                                          scope.seed, main=True))

    def cached(self, unit: Unit, ctx: Context) -> bool:
        p = unit.params
        return existing_checkpoint(checkpoint_path(p.spec, p.model, p.config, p.seed, ctx.cache_root)) is not None

    def run(self, unit: Unit, ctx: Context, deps: dict[str, Any]) -> tuple[Any, bool, float]:
        start, p = time.perf_counter(), unit.params
        trained = train_model(p.model, p.spec, p.config, p.seed, ctx.device, ctx.cache_root, ctx.progress)
        trained.model.eval()
        return trained, not trained.trained_now, time.perf_counter() - start

    def detail(self, payload: Any) -> str:
        return f" (checkpoint {payload.path.name})"

    def portable(self, payload: Any) -> Any:
        return TrainedModel(None, payload.record, payload.path)  # the weights stay in the checkpoint

    def computed_by(self, unit: Unit, ctx: Context, payload: Any) -> str | None:
        return payload.record.get("computed_by")

    def manifest_entry(self, payload: Any) -> dict[str, Any]:
        """The training's own seconds (a cached unit's `seconds` are its load time): a sweep's cost table."""
        seconds = payload.record.get("train_seconds")
        return {"train_seconds": round(float(seconds), 3)} if seconds is not None else {}

    def rows(self, unit: Unit, outcome: Outcome, collector) -> None:
        checkpoint_record(unit, outcome, collector)
