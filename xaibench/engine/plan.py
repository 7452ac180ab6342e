"""plan(options) -> [Unit]: every unit of a run, with its key, before any work (pure: nothing trained or written).

The planner walks the levels of engine/units.py (per dataset and seed the network, per method its work, after the
methods, after every dataset) and asks every registered unit kind, in registration order, for its units there;
what each kind plans lives in its own file under engine/kinds/. The order of the list is the order a serial
execution runs them in, and the order the collector reads them in.
"""
from __future__ import annotations

from typing import Any

import torch

from xaibench.cache import code_fingerprint
from xaibench.engine import kinds  # noqa: F401  (registers the built-in kinds)
from xaibench.engine.context import Context
from xaibench.engine.options import RunOptions, data_spec
from xaibench.engine.scope import REFERENCE, Plan, RunSetup, Scope, key_options
from xaibench.engine.units import UNIT_KINDS, Unit
from xaibench.errors import XaibenchError
from xaibench.metrics import create_metric
from xaibench.registry import METHODS, METRICS
from xaibench.training import DataSpec

__all__ = ["BASELINE_MODELS", "Plan", "REFERENCE", "RunSetup", "cached_units", "key_options", "plan_run",
           "plan_train", "run_setup"]

BASELINE_MODELS = ["resnet18", "resnet50", "vit", "segm", "ofa"]


def _ask_kinds(scope: Scope) -> None:
    """Every registered kind plans its units at this scope, by planning_order (then registration order)."""
    for kind in sorted(UNIT_KINDS.values(), key=lambda kind: kind.planning_order):  # a stable sort
        kind.plan(scope)


def plan_train(models: list[str], datasets: list[str], seeds: list[int], *, size: int, root: str | None,
               config: dict[str, Any], overrides: dict[str, Any], device: torch.device,
               plan: Plan | None = None) -> Plan:
    """Table 1: per dataset, model and seed, a train unit and an evaluate unit."""
    plan = Plan() if plan is None else plan
    _ask_kinds(Scope("run_end", plan, config, overrides, root, device, datasets=tuple(datasets),
                     seeds=tuple(seeds), size=size, table1_models=tuple(models)))
    return plan


def run_setup(options: RunOptions, specs: dict[str, DataSpec]) -> RunSetup:
    """Everything checkable before any work: the data files open, every metric accepts its options."""
    tests = {dataset: spec.load("test") for dataset, spec in specs.items()}
    metric_options = {}
    for name in options.metrics:
        metric_options[name] = options.metric_options_for(name)
        try:
            create_metric(name, **{**metric_options[name], **_concrete_batch(metric_options[name])})
        except TypeError as error:
            raise XaibenchError(f"metric {name!r}: bad options {metric_options[name]}: {error}") from None
    return RunSetup(metric_options,
                    {name: bool(getattr(METRICS.get(name), "needs_ground_truth", False)) for name in options.metrics},
                    {m: code_fingerprint(METHODS.get(m)) for m in options.methods},
                    {m: code_fingerprint(METRICS.get(m)) for m in options.metrics}, tests,
                    {name: bool(getattr(METRICS.get(name), "needs_object_truth", False)) for name in options.metrics})


def _concrete_batch(options: dict[str, Any]) -> dict[str, Any]:
    """A stand-in for batch_size 'auto' (resolved per model and device when the unit runs)."""
    return {"batch_size": 256} if options.get("batch_size") == "auto" else {}


def plan_run(options: RunOptions, *, config: dict[str, Any], overrides: dict[str, Any], root: str | None,
             device: torch.device, train_baselines: bool = False) -> tuple[Plan, RunSetup]:
    """`xaibench run`: per dataset and seed the evaluated network, then per method an explanation and per
    metric a score; with train_baselines, Table 1's trainings and evaluations after them."""
    specs = {dataset: data_spec(dataset, options.size, root, config) for dataset in options.datasets}
    setup = run_setup(options, specs)
    plan = Plan()
    run = Scope("network", plan, config, overrides, root, device, options=options, setup=setup,
                datasets=tuple(options.datasets), seeds=tuple(options.seeds), size=options.size,
                table1_models=tuple(BASELINE_MODELS) if train_baselines else ())
    for dataset, spec in specs.items():
        for seed in options.seeds:
            network = run.child("network", dataset=dataset, spec=spec, seed=seed)
            _ask_kinds(network)
            for method in options.methods:
                _ask_kinds(network.child("method", method=method))
            _ask_kinds(network.child("network_end"))
    _ask_kinds(run.child("run_end"))
    return plan, setup


def cached_units(plan: list[Unit], ctx: Context) -> set[str]:
    """Keys of the units whose results are already on disk."""
    return {unit.key for unit in plan if UNIT_KINDS[unit.kind].cached(unit, ctx)}
