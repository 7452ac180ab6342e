"""The engine of `xaibench run` and `xaibench train`: plan -> execute -> collect -> report.

- units.py     the Unit record and the UnitKind interface (plan, compute, rows); kinds/ one file per kind
- scope.py     what a kind sees when it plans (Scope, RunSetup); plan.py asks every kind at every level
- execute.py   runs the units in order, or in waves on a backend (backends.py), each inside a process by worker.py
- collect.py   outcomes -> Frames (long scores, costs, curves, Table 1 rows), each kind adding its own rows
- report.py    Frames -> tables, figures, attribution maps, manifest
"""
from xaibench.devices import resolve_device
from xaibench.engine.backends import BACKENDS, ExecutionConfig
from xaibench.engine.collect import Collector, Frames, collect
from xaibench.engine.context import Context
from xaibench.engine.execute import RunFailedError, execute, one_line
from xaibench.engine.kinds import explanation_targets, merge_explanations
from xaibench.engine.options import TARGETS, RunOptions, data_spec, default_config, run_config, train_config_for
from xaibench.engine.plan import BASELINE_MODELS, Plan, cached_units, plan_run, plan_train
from xaibench.engine.report import (
    environment,
    publish,
    save_attributions,
    staged,
    write_figures,
    write_manifest,
    write_run_outputs,
    write_table1,
)
from xaibench.engine.scope import REFERENCE, Scope
from xaibench.engine.units import LEVELS, UNIT_KINDS, NotApplicable, Outcome, Unit, UnitKind, register_kind

__all__ = ["BACKENDS", "BASELINE_MODELS", "Collector", "Context", "ExecutionConfig", "Frames", "LEVELS",
           "NotApplicable", "Outcome", "Plan", "REFERENCE", "RunFailedError", "RunOptions", "Scope", "TARGETS",
           "UNIT_KINDS", "Unit", "UnitKind", "cached_units", "collect", "data_spec", "default_config", "environment",
           "execute", "explanation_targets", "merge_explanations", "one_line", "plan_run", "plan_train", "publish",
           "register_kind", "resolve_device", "run_config", "save_attributions", "staged", "train_config_for",
           "write_figures", "write_manifest", "write_run_outputs", "write_table1"]
