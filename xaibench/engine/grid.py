"""Where units run: in this process one after another (`serial`), or spread over worker processes through
joblib (`loky`, `dask`, `ray`). The plan, the unit kinds and the cache are the same for every backend.

A parallel execution runs the plan in waves: a unit's wave is one more than its latest dependency's, so every
unit of a wave has its dependencies finished (and cached) when the wave starts. A worker gets a `Task`: the
unit, the units it depends on (which it loads from the shared cache, never recomputes) and the `Grid`; a
worker process keeps its context (device, test splits) and the last models it loaded between tasks.

On the CPU, PyTorch's results depend on the number of intra-op threads (a 30-step OFA training gives other
weights with 1 and 2 threads), so `threads` is fixed per unit: tables are byte-identical across backends and
numbers of workers at equal `threads`. It is an execution detail and stays out of every cache key.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from xaibench.errors import XaibenchError

BACKENDS = ("serial", "loky", "dask", "ray")
EXTRAS = {"dask": ("distributed", "pip install 'xaibench[dask]'"), "ray": ("ray", "pip install 'xaibench[ray]'")}
MODELS_KEPT = 2  # trained models a worker keeps loaded between tasks


@dataclass(frozen=True)
class Grid:
    """How to execute a plan: backend, number of workers, dask scheduler address, intra-op threads per unit."""

    backend: str = "serial"
    jobs: int = 1
    scheduler: str | None = None
    threads: int | None = None  # None: torch's default in serial runs, cores // jobs in a worker
    plugins: tuple[str, ...] = field(default=())  # plugin files each worker loads before its first task
    compile: str | None = None  # torch.compile backend of the metrics' masked forward (Context.forward)
    unit_timeout: float | None = None  # seconds a unit may run (serial and loky; dask and ray: their own limits)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise XaibenchError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.unit_timeout is not None and not self.unit_timeout > 0:
            raise XaibenchError(f"--unit-timeout must be a number of seconds > 0, got {self.unit_timeout!r}")
        for name in ("jobs", "threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise XaibenchError(f"--{name} must be an integer >= 1, got {value!r}")
        if self.scheduler and self.backend != "dask":
            raise XaibenchError(f"--scheduler is an address of a dask scheduler: it needs --backend dask "
                                f"(got --backend {self.backend})")
        if self.backend == "serial" and self.jobs > 1:
            raise XaibenchError(f"--jobs {self.jobs} needs a parallel backend: --backend loky, dask or ray")

    @property
    def parallel(self) -> bool:
        return self.backend != "serial"

    def worker_threads(self) -> int:
        return self.threads or max(1, (os.cpu_count() or 1) // self.jobs)

    def check_installed(self) -> None:
        """A clear error (with the install line) when the backend's package is missing."""
        if self.backend in EXTRAS:
            import importlib.util

            module, install = EXTRAS[self.backend]
            if importlib.util.find_spec(module) is None:
                raise XaibenchError(f"--backend {self.backend} needs the {module!r} package: {install}")


def waves(units: list[Any]) -> list[list[Any]]:
    """The units grouped so that each group's dependencies all lie in earlier groups (plan order kept)."""
    depth: dict[str, int] = {}
    grouped: dict[int, list[Any]] = {}
    for unit in units:
        depth[unit.key] = 1 + max((depth.get(dep, -1) for dep in unit.deps), default=-1)
        grouped.setdefault(depth[unit.key], []).append(unit)
    return [grouped[level] for level in sorted(grouped)]


def closure(unit: Any, by_key: dict[str, Any]) -> list[Any]:
    """The units `unit` depends on, directly or not, dependencies first."""
    seen: dict[str, Any] = {}

    def visit(key: str) -> None:
        for dep in by_key[key].deps:
            if dep not in seen:
                visit(dep)
                seen[dep] = by_key[dep]

    visit(unit.key)
    return list(seen.values())


@dataclass
class Task:
    """One unit for a worker: the unit, its dependency closure, and where and how to run."""

    unit: Any
    deps: list[Any]
    grid: Grid
    device: str
    cache: str
    slot: int = 0  # the task's position in its wave: picks the GPU when several are visible


def task_device(device: str, slot: int) -> torch.device:
    """One GPU per task, round robin, when the run asked for `cuda` and several GPUs are visible."""
    chosen = torch.device(device)
    if chosen.type == "cuda" and chosen.index is None and torch.cuda.device_count() > 1:
        return torch.device("cuda", slot % torch.cuda.device_count())
    return chosen


class _WorkerState:
    """What a worker process keeps between tasks: contexts per device and cache, the last loaded payloads."""

    def __init__(self) -> None:
        self.contexts: dict[tuple[str, str], Any] = {}
        self.payloads: OrderedDict[str, Any] = OrderedDict()
        self.plugins: set[str] = set()
        self.threads: int | None = None

    def prepare(self, grid: Grid) -> None:
        import logging

        if grid.plugins and not set(grid.plugins) <= self.plugins:
            from xaibench.plugins import load_plugins

            load_plugins(grid.plugins)
            self.plugins |= set(grid.plugins)
        if self.threads != grid.worker_threads():
            self.threads = grid.worker_threads()
            torch.set_num_threads(self.threads)
        logging.getLogger("xaibench").setLevel(logging.WARNING)  # the main process logs each outcome

    def context(self, device: torch.device, cache: str, compile: str | None):
        from xaibench.engine.context import Context

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


_STATE = _WorkerState()


def run_task(task: Task):
    """In a worker: load the unit's dependencies from the cache (kept between tasks), run the unit, and return
    its outcome with a payload small enough to send back (a trained model travels as its record and path)."""
    from xaibench.engine.execute import run_unit
    from xaibench.engine.units import UNIT_KINDS, Outcome

    _STATE.prepare(task.grid)
    ctx = _STATE.context(task_device(task.device, task.slot), task.cache, task.grid.compile)
    outcomes: dict[str, Outcome] = {}
    for dep in task.deps:
        if dep.key not in _STATE.payloads:
            outcome = run_unit(dep, ctx, outcomes)
            if not outcome.ok:
                return Outcome(task.unit, "failed", error=f"dependency {dep.label}: {outcome.error}",
                               traceback=outcome.traceback)
            _STATE.remember(dep.key, outcome.payload)
        outcomes[dep.key] = Outcome(dep, "cached", payload=_STATE.payloads[dep.key])
    outcome = run_unit(task.unit, ctx, outcomes, task.grid.unit_timeout)
    if outcome.ok:
        _STATE.remember(task.unit.key, outcome.payload)
        outcome.payload = UNIT_KINDS[task.unit.kind].portable(outcome.payload)
    return outcome


class _Backend:
    """Context manager: the joblib configuration of a backend (and the dask client or ray runtime it needs)."""

    def __init__(self, grid: Grid):
        self.grid, self.client, self.cluster = grid, None, None

    def __enter__(self) -> "_Backend":
        import joblib

        self.grid.check_installed()
        name = self.grid.backend
        if name == "dask":
            self._start_dask()
        elif name == "ray":
            import ray
            from ray.util.joblib import register_ray

            register_ray()
            if not ray.is_initialized():  # $RAY_ADDRESS: join that cluster; else a local one of --jobs CPUs
                ray.init(**({} if os.environ.get("RAY_ADDRESS") else
                            {"num_cpus": self.grid.jobs, "include_dashboard": False}), log_to_driver=False)
        n_jobs = -1 if (name == "dask" and self.grid.scheduler) else self.grid.jobs
        self.config = joblib.parallel_config(backend=name, n_jobs=n_jobs)
        self.config.__enter__()
        return self

    def _start_dask(self) -> None:
        from dask.distributed import Client, LocalCluster

        if self.grid.scheduler:
            try:
                self.client = Client(self.grid.scheduler, timeout="20s")
            except (OSError, TimeoutError) as error:
                raise XaibenchError(f"cannot reach the dask scheduler {self.grid.scheduler!r}: {error}") from None
            return
        import dask

        with dask.config.set({"distributed.worker.profile.enabled": False}):  # its sampling slows small units
            self.cluster = LocalCluster(n_workers=self.grid.jobs, threads_per_worker=1, processes=True,
                                        host="127.0.0.1", dashboard_address=None)
        self.client = Client(self.cluster)

    def __exit__(self, *exc) -> None:
        self.config.__exit__(*exc)
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def map(self, tasks: list[Task]) -> Iterator[Any]:
        """The outcomes of `tasks` as they finish (any order)."""
        from joblib import Parallel, delayed

        calls = [delayed(run_task)(task) for task in tasks]
        for return_as in ("generator_unordered", "generator"):
            try:
                return Parallel(return_as=return_as, batch_size=1)(calls)  # coarse tasks: one per call
            except ValueError:  # a backend that cannot yield results as they come (ray's)
                continue
        return iter(Parallel(return_as="list", batch_size=1)(calls))
