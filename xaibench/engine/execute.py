"""execute(units, ctx, on_error, grid) -> {key: Outcome}: run a plan's units, each loaded or computed.

Serially (the default) the units run in plan order in this process; with a parallel `Grid` (grid.py) they
run in waves on joblib's workers, each wave's units at once. A unit whose dependency failed (or does not
apply) is not attempted: it is reported as skipped (or n/a). With on_error="stop" the first failure raises
RunFailedError (finished units stay cached, so a rerun resumes); with on_error="continue" the others finish.
The progress bar counts the plan's units.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import traceback
from typing import Any

from tqdm.auto import tqdm

from xaibench.engine.context import Context
from xaibench.engine.grid import Grid, Task, closure, waves
from xaibench.engine.units import UNIT_KINDS, NotApplicable, Outcome, Unit
from xaibench.errors import XaibenchError
from xaibench.io import worker_id

logger = logging.getLogger("xaibench.run")
ON_ERROR = ("stop", "continue")


class RunFailedError(XaibenchError):
    """A unit failed (without --keep-going). exit_code: 2 for a XaibenchError cause, else 1."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _blocked(unit: Unit, outcomes: dict[str, Outcome]) -> Outcome | None:
    """The outcome of a unit one of whose dependencies did not finish: n/a after n/a, else skipped."""
    for dep in unit.deps:
        before = outcomes.get(dep)
        if before is None or before.ok:
            continue
        if before.status == "n/a":
            return Outcome(unit, "n/a", error=before.error)
        return Outcome(unit, "skipped", error=f"{before.unit.label} {before.status}")
    return None


class UnitTimeout(Exception):
    """A unit ran past --unit-timeout: a failed unit (exit 1), not a usage error."""


@contextlib.contextmanager
def deadline(seconds: float | None, label: str):
    """Raise UnitTimeout in this (main) thread after `seconds`; a no-op without a limit or off the main thread
    (dask runs tasks in threads: there the scheduler's own limits apply)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise UnitTimeout(f"{label} ran past --unit-timeout {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_unit(unit: Unit, ctx: Context, outcomes: dict[str, Outcome], timeout: float | None = None) -> Outcome:
    """Load or compute one unit whose dependencies are done; a failure is returned, not raised."""
    blocked = _blocked(unit, outcomes)
    if blocked is not None:
        return blocked
    kind = UNIT_KINDS[unit.kind]
    deps: dict[str, Any] = {dep: outcomes[dep].payload for dep in unit.deps}
    try:
        with deadline(timeout, unit.label):
            payload, cached, seconds = kind.run(unit, ctx, deps)
    except KeyboardInterrupt:
        raise
    except NotApplicable as reason:
        return Outcome(unit, "n/a", error=str(reason))
    except Exception as error:  # a unit's failure must not lose the finished ones
        return Outcome(unit, "failed", error=one_line(error), traceback=traceback.format_exc(),
                       usage=isinstance(error, XaibenchError))
    computed_by = kind.computed_by(unit, ctx, payload) if cached else worker_id()
    return Outcome(unit, "cached" if cached else "done", seconds, payload, computed_by=computed_by)


def _log(outcome: Outcome) -> None:
    label, status = outcome.unit.label, outcome.status
    if status == "failed":
        logger.info(f"{label}: FAILED: {outcome.error}")
    elif status in ("skipped", "n/a"):
        logger.info(f"{label}: {status} ({outcome.error})")
    else:
        detail = UNIT_KINDS[outcome.unit.kind].detail(outcome.payload)
        logger.info(f"{label}: {'cached' if status == 'cached' else f'done in {outcome.seconds:.2f} s'}{detail}")


def execute(units: list[Unit], ctx: Context, on_error: str = "stop", grid: Grid | None = None) -> dict[str, Outcome]:
    """Run every unit (serially in plan order, or in parallel waves); the outcome of each by key, in plan order."""
    if on_error not in ON_ERROR:
        raise XaibenchError(f"unknown on_error {on_error!r}; valid: {', '.join(ON_ERROR)}")
    grid = grid or Grid()
    outcomes: dict[str, Outcome] = {}
    bar = tqdm(total=len(units), desc="xaibench", unit="unit", disable=not ctx.progress, dynamic_ncols=True,
               file=sys.stderr)
    try:
        if grid.parallel and not _all_cached(units, ctx):
            _parallel(units, ctx, grid, outcomes, bar, on_error)
        else:
            with _threads(grid.threads):
                for unit in units:
                    _finished(run_unit(unit, ctx, outcomes, grid.unit_timeout), outcomes, bar, on_error)
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


def _parallel(units: list[Unit], ctx: Context, grid: Grid, outcomes: dict[str, Outcome], bar, on_error: str) -> None:
    """Each wave's units at once on the grid's workers; a worker loads the dependencies from the shared cache."""
    from xaibench.engine.grid import _Backend

    by_key = {unit.key: unit for unit in units}
    with _Backend(grid) as backend:
        for wave in waves(units):
            tasks = []
            for unit in wave:
                blocked = _blocked(unit, outcomes)
                if blocked is not None:
                    _finished(blocked, outcomes, bar, on_error)
                else:
                    tasks.append(Task(unit, closure(unit, by_key), grid, str(ctx.device), str(ctx.cache_root),
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

