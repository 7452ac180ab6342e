"""execute(units, ctx, on_error, execution) -> {key: Outcome}: run a plan's units, each loaded or computed.

Serially (the default) the units run in plan order in this process (engine/worker.py: run_unit); with a parallel
ExecutionConfig (engine/backends.py) they run in waves on joblib's workers, each wave's units at once. A unit whose
dependency failed (or does not apply) is not attempted: it is reported as skipped (or n/a). With on_error="stop"
the first failure raises RunFailedError (finished units stay cached, so a rerun resumes); with
on_error="continue" the others finish. The progress bar counts the plan's units.
"""
from __future__ import annotations

import logging
import sys

from tqdm.auto import tqdm

from xaibench.engine.backends import Backend, ExecutionConfig, closure, waves
from xaibench.engine.context import Context
from xaibench.engine.units import UNIT_KINDS, Outcome, Unit
from xaibench.engine.worker import Task, blocked, one_line, run_unit
from xaibench.errors import XaibenchError

__all__ = ["ON_ERROR", "RunFailedError", "execute", "one_line"]

logger = logging.getLogger("xaibench.run")
ON_ERROR = ("stop", "continue")


class RunFailedError(XaibenchError):
    """A unit failed (without --keep-going). exit_code: 2 for a XaibenchError cause, else 1."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def _log(outcome: Outcome) -> None:
    label, status = outcome.unit.label, outcome.status
    if status == "failed":
        logger.info(f"{label}: FAILED: {outcome.error}")
    elif status in ("skipped", "n/a"):
        logger.info(f"{label}: {status} ({outcome.error})")
    else:
        detail = UNIT_KINDS[outcome.unit.kind].detail(outcome.payload)
        logger.info(f"{label}: {'cached' if status == 'cached' else f'done in {outcome.seconds:.2f} s'}{detail}")


def execute(units: list[Unit], ctx: Context, on_error: str = "stop",
            execution: ExecutionConfig | None = None) -> dict[str, Outcome]:
    """Run every unit (serially in plan order, or in parallel waves); the outcome of each by key, in plan order."""
    if on_error not in ON_ERROR:
        raise XaibenchError(f"unknown on_error {on_error!r}; valid: {', '.join(ON_ERROR)}")
    execution = execution or ExecutionConfig()
    outcomes: dict[str, Outcome] = {}
    bar = tqdm(total=len(units), desc="xaibench", unit="unit", disable=not ctx.progress, dynamic_ncols=True,
               file=sys.stderr)
    try:
        if execution.parallel and not _all_cached(units, ctx):
            _parallel(units, ctx, execution, outcomes, bar, on_error)
        else:
            with _threads(execution.threads):
                for unit in units:
                    _finished(run_unit(unit, ctx, outcomes, execution.unit_timeout), outcomes, bar, on_error)
    finally:
        bar.close()
        _say_ignored(ctx)
    return {unit.key: outcomes[unit.key] for unit in units if unit.key in outcomes}


def _finished(outcome: Outcome, outcomes: dict[str, Outcome], bar, on_error: str) -> None:
    """Record, log and count one outcome; a failure stops the run unless on_error is 'continue'."""
    unit = outcome.unit
    outcomes[unit.key] = outcome
    _log(outcome)
    bar.update(1)
    if outcome.status == "failed" and on_error == "stop":
        raise RunFailedError(f"{unit.label} failed: {outcome.error or ''} (finished units are cached: rerunning "
                             f"resumes; --keep-going runs the other units)", 2 if outcome.usage else 1)


def _parallel(units: list[Unit], ctx: Context, execution: ExecutionConfig, outcomes: dict[str, Outcome], bar,
              on_error: str) -> None:
    """Each wave's units at once on the workers; a worker loads the dependencies from the shared cache."""
    by_key = {unit.key: unit for unit in units}
    with Backend(execution) as backend:
        for wave in waves(units):
            tasks = []
            for unit in wave:
                stopped = blocked(unit, outcomes)
                if stopped is not None:
                    _finished(stopped, outcomes, bar, on_error)
                else:
                    tasks.append(Task(unit, closure(unit, by_key), execution, str(ctx.device), str(ctx.cache_root),
                                      slot=len(tasks)))
            if tasks:
                for outcome in backend.map(tasks):
                    _finished(outcome, outcomes, bar, on_error)


def _all_cached(units: list[Unit], ctx: Context) -> bool:
    """Nothing to compute (a run that assembles tables from a shared cache): no workers are started."""
    return all(UNIT_KINDS[unit.kind].cached(unit, ctx) for unit in units)


class _threads:
    """torch's intra-op thread count set for a block (None: left as it is)."""

    def __init__(self, threads: int | None):
        self.threads, self.before = threads, None

    def __enter__(self) -> None:
        if self.threads:
            import torch

            self.before = torch.get_num_threads()
            torch.set_num_threads(self.threads)

    def __exit__(self, *exc) -> None:
        if self.before:
            import torch

            torch.set_num_threads(self.before)


def _say_ignored(ctx: Context) -> None:
    if ctx.store.ignored:
        logger.warning(f"deleted {len(ctx.store.ignored)} cached unit file(s) that failed their checksum or are "
                       f"of another format (e.g. {ctx.store.ignored[0]}); they were recomputed")
        ctx.store.ignored.clear()
