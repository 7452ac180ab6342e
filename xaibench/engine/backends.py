"""Where units run: in this process one after another (`serial`), or spread over worker processes through
joblib (`loky`, `dask`, `ray`). The plan, the unit kinds and the cache are the same for every backend.

A parallel execution runs the plan in waves: a unit's wave is one more than its latest dependency's, so every
unit of a wave has its dependencies finished (and cached) when the wave starts. A worker gets a `Task`
(engine/worker.py): the unit, the units it depends on (which it loads from the shared cache, never recomputes) and
the `ExecutionConfig`; a worker process keeps its context (device, test splits) and the last models it loaded.

On the CPU, PyTorch's results depend on the number of intra-op threads (a 30-step OFA training gives other
weights with 1 and 2 threads), so `threads` is fixed per unit: tables are byte-identical across backends and
numbers of workers at equal `threads`. It is an execution detail and stays out of every cache key.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterator

from xaibench.engine.worker import Task, run_task
from xaibench.errors import XaibenchError

BACKENDS = ("serial", "loky", "dask", "ray")
EXTRAS = {"dask": ("distributed", "pip install 'xaibench[dask]'"), "ray": ("ray", "pip install 'xaibench[ray]'")}


@dataclass(frozen=True)
class ExecutionConfig:
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
        depth[unit.key] = 1 + max((depth.get(dep, -1) for dep in unit.dep_keys), default=-1)
        grouped.setdefault(depth[unit.key], []).append(unit)
    return [grouped[level] for level in sorted(grouped)]


def closure(unit: Any, by_key: dict[str, Any]) -> list[Any]:
    """The units `unit` depends on, directly or not, dependencies first."""
    seen: dict[str, Any] = {}

    def visit(key: str) -> None:
        for dep in by_key[key].dep_keys:
            if dep not in seen:
                visit(dep)
                seen[dep] = by_key[dep]

    visit(unit.key)
    return list(seen.values())


class Backend:
    """Context manager: the joblib configuration of a backend (and the dask client or ray runtime it needs)."""

    def __init__(self, execution: ExecutionConfig):
        self.execution, self.client, self.cluster = execution, None, None

    def __enter__(self) -> "Backend":
        import joblib

        self.execution.check_installed()
        name = self.execution.backend
        if name == "dask":
            self._start_dask()
        elif name == "ray":
            import ray
            from ray.util.joblib import register_ray

            register_ray()
            if not ray.is_initialized():  # $RAY_ADDRESS: join that cluster; else a local one of --jobs CPUs
                ray.init(**({} if os.environ.get("RAY_ADDRESS") else
                            {"num_cpus": self.execution.jobs, "include_dashboard": False}), log_to_driver=False)
        n_jobs = -1 if (name == "dask" and self.execution.scheduler) else self.execution.jobs
        self.config = joblib.parallel_config(backend=name, n_jobs=n_jobs)
        self.config.__enter__()
        return self

    def _start_dask(self) -> None:
        from dask.distributed import Client, LocalCluster

        if self.execution.scheduler:
            try:
                self.client = Client(self.execution.scheduler, timeout="20s")
            except (OSError, TimeoutError) as error:
                raise XaibenchError(f"cannot reach the dask scheduler {self.execution.scheduler!r}: {error}") \
                    from None
            return
        import dask

        with dask.config.set({"distributed.worker.profile.enabled": False}):  # its sampling slows small units
            self.cluster = LocalCluster(n_workers=self.execution.jobs, threads_per_worker=1, processes=True,
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
