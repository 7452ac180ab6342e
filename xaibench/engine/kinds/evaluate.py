"""Unit kind `evaluate`: test AUC and ACC of a trained classifier, a row of Table 1 (medmnist's Evaluator on the
MedMNIST+ sets, the in-tree scores elsewhere). Plans Table 1: per dataset, model and seed a training and its
evaluation (`xaibench train`, and `xaibench run --train-baselines`)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from xaibench.cache import unit_key
from xaibench.data import data_root, is_embedded
from xaibench.engine.context import Context
from xaibench.engine.kinds.train import train_unit
from xaibench.engine.options import data_spec, train_config_for
from xaibench.engine.scope import Scope
from xaibench.engine.units import Outcome, Unit, UnitKind, register_kind
from xaibench.training import DataSpec, classification_scores, medmnist_evaluate, predict_proba


@dataclass(frozen=True)
class EvaluateParams:
    spec: DataSpec
    model: str
    seed: int
    medmnist: bool
    data_root: str | None


def evaluate_unit(trained: Unit, spec: DataSpec, model: str, seed: int, root: str | None,
                  device: torch.device) -> Unit:
    """Test AUC/ACC of a trained model: a Table 1 row."""
    medmnist = not is_embedded(spec.name)
    key = unit_key("evaluate", {"model": trained.key, "data": spec.key(), "medmnist": medmnist,
                                "device": device.type})
    return Unit("evaluate", f"evaluate {spec.name}/seed{seed}/{model}", key, {"model": trained.key},
                params=EvaluateParams(spec, model, seed, medmnist, str(data_root(root)) if medmnist else None))


def table1_rows(p: EvaluateParams, evaluated: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"dataset": p.spec.name, "model": p.model, "seed": p.seed, "metric": metric.upper(),
             "value": evaluated[metric], "checkpoint": evaluated["checkpoint"],
             "train_seconds": evaluated["train_seconds"]} for metric in ("auc", "acc")]


@register_kind
class EvaluateKind(UnitKind):
    """Test AUC and ACC of a trained classifier (a Table 1 row)."""

    name = "evaluate"
    planning_order = 30

    def plan(self, scope: Scope):
        if scope.level != "run_end":
            return
        for dataset in scope.datasets:
            spec = data_spec(dataset, scope.size, scope.root, scope.config)
            for model in scope.table1_models:
                config = train_config_for(model, scope.config, scope.overrides, dataset)
                for seed in scope.seeds:
                    trained = scope.add(None, train_unit(model, spec, config, seed))
                    scope.add(None, evaluate_unit(trained, spec, model, seed, scope.root, scope.device))

    def compute(self, unit: Unit, ctx: Context, deps: dict[str, Any]) -> dict[str, Any]:
        start, p = time.perf_counter(), unit.params
        trained = deps["model"]
        test = ctx.test_split(p.spec)
        probabilities = predict_proba(trained.model, test, ctx.device)
        if p.medmnist:
            scores = medmnist_evaluate(probabilities, test, p.data_root)
        else:
            scores = classification_scores(probabilities, test)
        return {"auc": float(scores["auc"]), "acc": float(scores["acc"]), "seconds": time.perf_counter() - start,
                "checkpoint": trained.path.name, "train_seconds": trained.record.get("train_seconds")}

    def rows(self, unit: Unit, outcome: Outcome, collector) -> None:
        collector.add("table1", table1_rows(unit.params, outcome.payload))
