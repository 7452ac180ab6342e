"""`xaibench run` and `xaibench train` as plan -> execute -> collect -> report (the steps live in xaibench/engine/).

`run_benchmark` is `xaibench run` (Table 2); `run_table1` is `xaibench train` (Table 1). Both plan every unit
up front (`--dry-run` prints that plan), execute it against the cache, collect the frames and write the files.
Only the runner and the CLI know about result folders on disk.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from xaibench.data import data_root, is_embedded
from xaibench.devices import resolve_device
from xaibench.engine import (
    BASELINE_MODELS,
    TARGETS,
    Context,
    ExecutionConfig,
    Frames,
    Plan,
    RunFailedError,
    RunOptions,
    Unit,
    cached_units,
    collect,
    environment,
    execute,
    one_line,
    plan_run,
    plan_train,
    publish,
    run_config,
    save_attributions,
    staged,
    train_config_for,
    write_figures,
    write_manifest,
    write_run_outputs,
    write_table1,
)
from xaibench.engine.report_metrics import wants_metric_outputs, write_metric_outputs
from xaibench.errors import XaibenchError
from xaibench.tables import gate_warnings
from xaibench.training import distributed, train_model

__all__ = ["BASELINE_MODELS", "TARGETS", "RunFailedError", "RunOptions", "RunRequest", "RunResult", "Table1Request",
           "describe_plan", "resolve_device", "run_benchmark", "run_config", "run_table1", "train_config_for"]

logger = logging.getLogger("xaibench.run")


@dataclass
class RunRequest:
    """Everything one `xaibench run` needs besides the cache's contents: what to run (`options`, the whole
    `config` it came from and the training `overrides` of --set), where to write (`out`), where to compute
    (`device`, `cache`, `execution`) and how to behave (`keep_going`, `dry_run`, ...). `RunRequest.build` makes one
    from the same layers as the command line (defaults, preset, config file, flags, --set)."""

    options: RunOptions
    out: Path
    device: torch.device
    config: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    root: str | None = None  # --data-root
    cache: Path | None = None
    keep_going: bool = False
    progress: bool = True
    train_baselines: bool = False
    command: list[str] | None = None  # recorded in the manifest
    dry_run: bool = False
    save_maps: bool = False  # --save-attributions
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)

    @classmethod
    def build(cls, file_config: dict[str, Any] | None = None, flags: dict[str, Any] | None = None,
              overrides: dict[str, Any] | None = None, preset: str | None = None, *, out: str | Path,
              device: str | torch.device | None = "auto", **rest: Any) -> "RunRequest":
        """The request of `xaibench run` with these layers; `rest` are the other fields (cache, keep_going, ...)."""
        config, train_overrides = run_config(file_config or {}, flags, overrides, preset)
        options = RunOptions.from_dict(config["run"])
        device = device if isinstance(device, torch.device) else resolve_device(device)
        return cls(options, Path(out), device, config, train_overrides, **rest)


@dataclass
class Table1Request:
    """Everything one `xaibench train` (Table 1) needs: models x datasets x seeds, and where and how to run."""

    models: list[str]
    datasets: list[str]
    out: Path
    device: torch.device
    size: int = 28
    seeds: list[int] = field(default_factory=lambda: [0])
    config: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    root: str | None = None
    cache: Path | None = None
    keep_going: bool = False
    progress: bool = True
    dry_run: bool = False
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)


@dataclass
class RunResult:
    """What a run produced: per-image scores, the written files, the failed units (empty = success)."""

    scores: pd.DataFrame
    out: Path
    files: list[Path] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    n_units: int = 0
    n_cached: int = 0
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)


def describe_plan(plan: list[Unit], ctx: Context) -> str:
    """One line per unit (cached or to do) and a count: what `--dry-run` prints."""
    cached = cached_units(plan, ctx)
    lines = [f"{'cached' if unit.key in cached else 'to do':>6}  {unit.label}  [{unit.kind} {unit.key}]"
             for unit in plan]
    kinds = {}
    for unit in plan:
        kinds[unit.kind] = kinds.get(unit.kind, 0) + 1
    counts = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    lines.append(f"{len(plan)} units ({counts}); {len(cached)} cached, {len(plan) - len(cached)} to compute")
    return "\n".join(lines)


def check_pretrained(plan: list[Unit], ctx: Context) -> None:
    """Before any work: the timm weights every training still to do starts from are at hand (in the local
    cache, or the hub reachable), else one clear error instead of a failure hours into the grid."""
    from xaibench.models.pretrained import pretrained_source

    todo = [unit for unit in plan if unit.kind == "train" and unit.key not in cached_units([unit], ctx)]
    for spec in sorted({str(unit.params.config.model.pretrained) for unit in todo
                        if str(unit.params.config.model.pretrained or "").startswith("timm:")}):
        pretrained_source(spec, in_chans=3)


def _executed(plan: Plan, ctx: Context, keep_going: bool, execution: ExecutionConfig | None) -> dict:
    check_pretrained(plan, ctx)
    return execute(plan, ctx, on_error="continue" if keep_going else "stop", execution=execution)


def run_table1(request: Table1Request) -> RunResult:
    """Train (or load) each model on each dataset and seed; test AUC/ACC; write Table 1 into `request.out`."""
    started, r, out = time.perf_counter(), request, Path(request.out)
    plan = plan_train(list(r.models), list(r.datasets), list(r.seeds), size=r.size, root=r.root, config=r.config,
                      overrides=r.overrides, device=r.device)
    ctx = context_of(r)
    if r.dry_run:
        print(describe_plan(plan, ctx))
        return RunResult(pd.DataFrame(), out, n_units=len(plan))
    alone, execution = contextlib.nullcontext(), r.execution
    if distributed.world_size() > 1:  # under torchrun: every rank trains, then rank 0 alone reports
        if not _trained_under_torchrun(plan, ctx, r.device, execution):
            return RunResult(pd.DataFrame(), out, n_units=len(plan))
        alone, execution = distributed.local_only(), None
    with claim_out(out), alone:
        outcomes = _executed(plan, ctx, r.keep_going, execution)
        frames = collect(plan, outcomes, ctx)
        with staged(out) as stage:
            files = publish(stage, out, write_table1(stage, frames, r.config, r.device) if len(frames.table1) else [])
    return _result(frames, out, files, outcomes, started)


@contextlib.contextmanager
def claim_out(out: Path):
    """Hold `out` for this run: a second run into a folder a live run is writing is refused (one line)."""
    from filelock import FileLock, Timeout

    lock_name = ".xaibench-run.lock"
    if out.exists() and not out.is_dir():
        raise XaibenchError(f"--out {out} is a file, not a folder")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(out / lock_name), timeout=0)
        lock.acquire()
    except Timeout:
        raise XaibenchError(f"--out {out} is being written by another xaibench run right now; wait for it to "
                            f"finish or give another --out") from None
    except OSError as error:
        raise XaibenchError(f"--out {out} cannot be written: {error.strerror or error}") from None
    try:
        yield out
    except BaseException:  # a failed run leaves no folder of its own behind
        lock.release()
        if created and [p.name for p in out.iterdir()] == [lock_name]:
            shutil.rmtree(out, ignore_errors=True)
        raise
    else:
        lock.release()


def _trained_under_torchrun(plan: Plan, ctx: Context, device: torch.device,
                            execution: ExecutionConfig | None) -> bool:
    """`torchrun ... -m xaibench.cli train`: the plan's trainings as DDP collectives, in plan order on every rank
    (each rank trains the same checkpoints). True on rank 0, which then runs the engine alone (cache hits)."""
    if execution is not None and execution.parallel:
        raise XaibenchError("under torchrun the ranks are the workers: use --backend serial")
    for unit in plan:
        if unit.kind == "train":
            p = unit.params
            train_model(p.model, p.spec, p.config, p.seed, device, ctx.cache_root,
                        ctx.progress and distributed.rank() == 0)
    distributed.shutdown()
    return distributed.rank() == 0


def _result(frames: Frames, out: Path, files: list[Path], outcomes: dict, started: float) -> RunResult:
    skipped = [o.unit.label for o in outcomes.values() if o.status == "skipped"]
    return RunResult(frames.scores, out, files, frames.failures, len(outcomes),
                     sum(u["cached"] for u in frames.units.values()), time.perf_counter() - started, skipped)


def run_benchmark(request: RunRequest) -> RunResult:
    """Train or load the evaluated network per dataset and seed, explain the first n_test test images with
    every method, score them with every metric, and write Table 2, side tables, figures and a manifest.

    Every unit (train, explain, score) is cached on disk by a hash of its inputs, so a killed run resumes.
    A failing unit raises RunFailedError, or with keep_going is recorded in the result and its dependents skipped.
    """
    started, r, out = time.perf_counter(), request, Path(request.out)
    ctx = context_of(r)
    plan, setup = planned(r, ctx)
    if r.dry_run:
        print(describe_plan(plan, ctx))
        return RunResult(pd.DataFrame(), out, n_units=len(plan))
    _probe(r, setup, ctx, plan)
    with claim_out(out), run_log() as log:
        outcomes = _executed(plan, ctx, r.keep_going, r.execution)
        with staged(out) as stage:  # every file, or none: a failure here leaves --out as it was
            result = _benchmark_outputs(r, plan, outcomes, ctx, stage, started, log, setup)
            result.files, result.out = publish(stage, out, result.files), out
        return result


def context_of(request: RunRequest | Table1Request) -> Context:
    """Where the request's units run and are cached."""
    return Context(request.device, request.cache, request.progress, compile=request.execution.compile)


def planned(request: RunRequest, ctx: Context) -> tuple[Plan, Any]:
    """The request's plan and RunSetup (pure: nothing trained or written); the test splits it read are kept in
    `ctx`, so they are not read again."""
    r = request
    plan, setup = plan_run(r.options, config=r.config, overrides=r.overrides, root=r.root, device=r.device,
                           train_baselines=r.train_baselines)
    for unit in plan:
        spec = getattr(unit.params, "spec", None)
        if spec is not None and spec.name in setup.tests:
            ctx.test_split(spec, setup.tests[spec.name])
    return plan, setup


@contextlib.contextmanager
def run_log():
    """The run's log lines, kept in a temporary file until the outputs are published as run.log."""
    import os
    import tempfile

    from xaibench.logs import captured_log

    handle, name = tempfile.mkstemp(prefix="xaibench-run-", suffix=".log")
    os.close(handle)
    try:
        with captured_log(Path(name)) as path:
            yield path
    finally:
        Path(name).unlink(missing_ok=True)


def _probe(request: RunRequest, setup, ctx: Context, plan: Plan) -> None:
    """Every method on an untrained network before any training (engine/probe.py), once per data shape; skipped
    when every explanation is cached already. With --keep-going a failure is a warning: its unit fails later."""
    from xaibench.engine.probe import probe_methods

    if not [unit for unit in plan if unit.kind == "explain" and unit.key not in cached_units([unit], ctx)]:
        return
    shapes = {(t.info.in_chans, t.info.n_classes, t.info.size): t.info for t in setup.tests.values()}
    for info in shapes.values():
        try:
            probe_methods(request.options, request.config, request.overrides, info, ctx.device)
        except XaibenchError as error:
            if not request.keep_going:
                raise
            logger.warning(f"{error} (--keep-going: its units run and fail on their own)")


def _benchmark_outputs(request: RunRequest, plan: Plan, outcomes: dict, ctx: Context, out: Path,
                       started: float, log: Path | None = None, setup=None) -> RunResult:
    """Collect the outcomes and write Table 2, the side tables, figures, maps and the manifest into `out`."""
    r, options = request, request.options
    frames = collect(plan, outcomes, ctx, options.n_figure_images if options.figures else 0)
    for warning in gate_warnings(frames.gates):  # the tables' captions and notes say it too
        logger.warning(warning)
    files = write_run_outputs(out, frames, options.methods, options.datasets)
    if setup is not None and wants_metric_outputs(options.metrics):
        files += write_metric_outputs(out, frames, options.methods, options.datasets, options.metrics, setup,
                                      figures=options.figures)
    files += _optional_outputs(out, frames, options, r.keep_going, r.save_maps)
    if len(frames.table1):
        files += write_table1(out, frames, r.config, r.device)
    result = _result(frames, out, files, outcomes, started)
    record = environment(r.config, r.device, {label: unit["seconds"] for label, unit in frames.units.items()})
    record.update({
        "command": r.command, "options": asdict(options), "train_overrides": r.overrides,
        "train_config": {dataset: asdict(train_config_for(options.model, r.config, r.overrides, dataset))
                         for dataset in options.datasets} if not options.checkpoint else None,
        "data_root": str(data_root(r.root)) if any(not is_embedded(d) for d in options.datasets) else None,
        "gates": frames.gates.to_dict(orient="records"),
        "cache": str(ctx.cache_root), "checkpoints": frames.checkpoints, "units": frames.units,
        "n_units": len(plan), "n_cached": result.n_cached, "failures": frames.failures,
        "skipped": result.skipped, "not_applicable": {f"{d}/{m}": why for (d, m), why in frames.unavailable.items()},
        "execution": asdict(r.execution), "wall_seconds": round(result.seconds, 1)})
    if log is not None:  # the log so far (what follows, the report's own lines, stays on the screen)
        shutil.copyfile(log, out / "run.log")
        files.append(out / "run.log")
    result.files = files + [write_manifest(out, record, files)]
    return result


def _optional_outputs(out: Path, frames: Frames, options: RunOptions, keep_going: bool,
                      save_maps: bool) -> list[Path]:
    """Figures (a failure there is a failed unit like any other) and, on request, the attribution maps."""
    files = save_attributions(out / "attributions", frames) if save_maps else []
    if not (options.figures and frames.figure_data):
        return files
    try:
        return files + write_figures(out / "figures", frames, options.target)
    except Exception as error:  # noqa: BLE001  (reported like a failed unit)
        if not keep_going:
            raise RunFailedError(f"figures failed: {one_line(error)}") from error
        frames.failures.append({"unit": "figures", "error": one_line(error), "traceback": ""})
        logger.info(f"figures: FAILED: {one_line(error)}")
        return files
