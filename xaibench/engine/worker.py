"""Running one unit inside a process: `run_unit` (load or compute it, a failure returned as an Outcome, never
raised) and, in a worker process of a parallel backend, `run_task` (load the unit's dependencies from the shared
cache, kept between tasks, then run the unit and send back a payload small enough to travel)."""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from xaibench.engine import kinds  # noqa: F401  (a worker process runs every registered kind)
from xaibench.engine.context import Context
from xaibench.engine.units import UNIT_KINDS, NotApplicable, Outcome, Unit
from xaibench.errors import XaibenchError
from xaibench.io import worker_id

MODELS_KEPT = 2  # trained models a worker keeps loaded between tasks


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def blocked(unit: Unit, outcomes: dict[str, Outcome]) -> Outcome | None:
    """The outcome of a unit one of whose dependencies did not finish: n/a after n/a, else skipped."""
    for dep in unit.dep_keys:
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
    stopped = blocked(unit, outcomes)
    if stopped is not None:
        return stopped
    kind = UNIT_KINDS[unit.kind]
    deps: dict[str, Any] = {role: outcomes[key].payload for role, key in unit.deps.items()}
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


@dataclass
class Task:
    """One unit for a worker: the unit, its dependency closure, and where and how to run (`execution` is the
    run's ExecutionConfig)."""

    unit: Unit
    deps: list[Unit]
    execution: Any
    device: str
    cache: str
    slot: int = 0  # the task's position in its wave: picks the GPU when several are visible


def task_device(device: str, slot: int) -> torch.device:
    """One GPU per task, round robin, when the run asked for `cuda` and several GPUs are visible."""
    chosen = torch.device(device)
    if chosen.type == "cuda" and chosen.index is None and torch.cuda.device_count() > 1:
        return torch.device("cuda", slot % torch.cuda.device_count())
    return chosen


class WorkerState:
    """What a worker process keeps between tasks: contexts per device and cache, the last loaded payloads."""

    def __init__(self) -> None:
        self.contexts: dict[tuple[str, str, str | None], Context] = {}
        self.payloads: OrderedDict[str, Any] = OrderedDict()
        self.plugins: set[str] = set()
        self.threads: int | None = None

    def prepare(self, execution) -> None:
        if execution.plugins and not set(execution.plugins) <= self.plugins:
            from xaibench.plugins import load_plugins

            load_plugins(execution.plugins)
            self.plugins |= set(execution.plugins)
        if self.threads != execution.worker_threads():
            self.threads = execution.worker_threads()
            torch.set_num_threads(self.threads)
        logging.getLogger("xaibench").setLevel(logging.WARNING)  # the main process logs each outcome

    def context(self, device: torch.device, cache: str, compile: str | None) -> Context:
        key = (str(device), cache, compile)
        if key not in self.contexts:
            self.contexts[key] = Context(device, Path(cache), progress=False, compile=compile)
        return self.contexts[key]

    def remember(self, key: str, payload: Any) -> None:
        self.payloads[key] = payload
        self.payloads.move_to_end(key)
        models = [k for k, v in self.payloads.items() if hasattr(v, "model")]
        for old in models[:-MODELS_KEPT]:
            del self.payloads[old]
        while len(self.payloads) > 4 * MODELS_KEPT + 8:
            self.payloads.popitem(last=False)


_STATE = WorkerState()


def run_task(task: Task) -> Outcome:
    """In a worker: load the unit's dependencies from the cache (kept between tasks), run the unit, and return
    its outcome with a payload small enough to send back (a trained model travels as its record and path)."""
    _STATE.prepare(task.execution)
    ctx = _STATE.context(task_device(task.device, task.slot), task.cache, task.execution.compile)
    outcomes: dict[str, Outcome] = {}
    for dep in task.deps:
        if dep.key not in _STATE.payloads:
            outcome = run_unit(dep, ctx, outcomes)
            if not outcome.ok:
                return Outcome(task.unit, "failed", error=f"dependency {dep.label}: {outcome.error}",
                               traceback=outcome.traceback)
            _STATE.remember(dep.key, outcome.payload)
        outcomes[dep.key] = Outcome(dep, "cached", payload=_STATE.payloads[dep.key])
    outcome = run_unit(task.unit, ctx, outcomes, task.execution.unit_timeout)
    if outcome.ok:
        _STATE.remember(task.unit.key, outcome.payload)
        outcome.payload = UNIT_KINDS[task.unit.kind].portable(outcome.payload)
    return outcome
