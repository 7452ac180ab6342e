"""What a unit kind sees when the planner asks it for units: the `Scope` (level, dataset, seed, method, the units
already planned by role) and the `RunSetup` checked once per run. Pure records: nothing is trained or written."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from xaibench.engine.units import Unit

if TYPE_CHECKING:  # pragma: no cover
    from xaibench.engine.options import RunOptions
    from xaibench.training import DataSpec

REFERENCE = "reference"  # the method name of the ordering by the model's exact object Shapley values


class Plan(list):
    """The units of a run in execution order; a unit asked for twice (same kind and key) is kept once."""

    def add(self, unit: Unit) -> Unit:
        index = self.__dict__.setdefault("_index", {})
        if (unit.kind, unit.key) not in index:
            index[(unit.kind, unit.key)] = unit
            self.append(unit)
        return index[(unit.kind, unit.key)]


@dataclass
class RunSetup:
    """What planning a run checks and derives once: per-metric options, code fingerprints, the test splits."""

    metric_options: dict[str, dict[str, Any]]
    needs_truth: dict[str, bool]
    method_code: dict[str, str]
    metric_code: dict[str, str]
    tests: dict[str, Any]
    needs_object_truth: dict[str, bool] = field(default_factory=dict)

    def has_object_truth(self, dataset: str) -> bool:
        """Whether the dataset re-renders its objects, so the model's exact object Shapley values exist."""
        return bool(getattr(self.tests[dataset], "has_object_truth", False))

    def metrics_for(self, options: "RunOptions", dataset: str) -> list[str]:
        has_truth, has_objects = self.tests[dataset].has_ground_truth, self.has_object_truth(dataset)
        return [m for m in options.metrics if (has_truth or not self.needs_truth[m])
                and (has_objects or not self.needs_object_truth.get(m, False))]


@dataclass
class Scope:
    """Where in the plan a kind is asked for units (`level`, one of units.LEVELS) and what it may build on.

    `units` maps a role ("model", "truth", "permuted", "fitted", "explanation", ...) to a unit planned earlier in
    this scope or its parent (a method scope sees its network's units); `add` puts a unit into the plan and, with a
    role, makes it visible to the kinds asked after this one. In `xaibench train` there are no run options:
    `options` and `setup` are None and only the "run_end" level is planned.
    """

    level: str
    plan: Plan
    config: dict[str, Any]
    overrides: dict[str, Any]
    root: str | None
    device: torch.device
    options: "RunOptions | None" = None
    setup: RunSetup | None = None
    dataset: str | None = None
    spec: "DataSpec | None" = None
    seed: int | None = None
    method: str | None = None
    units: dict[str, Unit] = field(default_factory=dict)
    datasets: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    size: int = 28
    table1_models: tuple[str, ...] = ()  # trained and evaluated at run_end (Table 1)

    def add(self, role: str | None, unit: Unit) -> Unit:
        """Plan `unit` (once per key) and, with a role, record it for the kinds asked after this one."""
        planned = self.plan.add(unit)
        if role:
            self.units[role] = planned
        return planned

    def child(self, level: str, **changes: Any) -> "Scope":
        """A nested scope: the same run, a new level, a copy of the units planned so far."""
        return dataclasses.replace(self, level=level, units=dict(self.units), **changes)

    @property
    def method_options(self) -> dict[str, Any]:
        return self.options.method_options.get(self.method, {})

    @property
    def n_test(self) -> int:
        return min(self.options.n_test, len(self.setup.tests[self.spec.name]))


def key_options(options: dict[str, Any]) -> dict[str, Any]:
    """A metric's options as its score key sees them: the forward batch size only sets how many masked inputs
    go through one call (it varies by device and free memory), so it stays out."""
    return {name: value for name, value in options.items() if name != "batch_size"}
