"""The engine of `xaibench run` and `xaibench train`: plan -> execute -> collect -> report.

- plan.py     options -> [Unit], each with its cache key, before any work (pure)
- units.py    the Unit record and the UnitKind interface; kinds.py the kinds (train, load, evaluate, explain, score)
- execute.py  runs the units in order against the cache; failures skip their dependents
- collect.py  outcomes -> Frames (long scores, costs, curves, Table 1 rows)
- report.py   Frames -> tables, figures, attribution maps, manifest
"""
from xaibench.engine.collect import Frames, collect
from xaibench.engine.context import Context
from xaibench.engine.execute import RunFailedError, execute, one_line
from xaibench.engine.kinds import explanation_targets, merge_explanations
from xaibench.engine.options import TARGETS, RunOptions, data_spec, resolve_device, run_config, train_config_for
from xaibench.engine.plan import BASELINE_MODELS, Plan, cached_units, plan_run, plan_train
from xaibench.engine.report import (environment, publish, save_attributions, staged, write_figures, write_manifest,
                                    write_run_outputs, write_table1)
from xaibench.engine.units import UNIT_KINDS, NotApplicable, Outcome, Unit, UnitKind, register_kind

__all__ = ["BASELINE_MODELS", "Context", "Frames", "NotApplicable", "Outcome", "Plan", "RunFailedError",
           "RunOptions", "TARGETS", "UNIT_KINDS", "Unit", "UnitKind", "cached_units", "collect", "data_spec",
           "environment", "execute", "explanation_targets", "merge_explanations", "one_line", "plan_run",
           "plan_train", "register_kind", "resolve_device", "run_config", "save_attributions", "train_config_for",
           "write_figures", "write_manifest", "write_run_outputs", "write_table1", "publish", "staged"]
