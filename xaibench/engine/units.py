"""Units of work: what a plan is made of, and the interface every kind of unit implements.

A `Unit` is a record (kind, label, key, deps, params); its key hashes its own inputs and the keys of the units it
depends on, so a whole plan's keys, and what is already cached, are known before any work. `deps` maps a role
("model", "explanation", "truth", "fitted", "permuted", ...) to the key of the unit that plays it. Everything about
one kind lives in one `UnitKind` subclass in one file of `engine/kinds/`: how the plan creates its units (`plan`),
how a unit is computed (`compute`, with `cached`/`load`/`save` where its result is not in the unit store) and how
its outcome becomes rows of the result frames (`rows`). `@register_kind` makes it known to the planner, the
executor and the collector; none of them changes for a new kind.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Mapping

from xaibench.errors import NotApplicable

if TYPE_CHECKING:  # pragma: no cover
    from xaibench.engine.collect import Collector
    from xaibench.engine.context import Context
    from xaibench.engine.scope import Scope

__all__ = ["LEVELS", "NotApplicable", "Outcome", "UNIT_KINDS", "Unit", "UnitKind", "register_kind"]

#: Where the planner asks the kinds for units, in this order: "network" once per dataset and seed before the
#: methods (the explained network, its truth), "method" per method of that network, "network_end" after its
#: methods (scores of the reference ordering), "run_end" once after every dataset (Table 1's trainings).
LEVELS = ("network", "method", "network_end", "run_end")


@dataclass(frozen=True)
class Unit:
    """One piece of work. `params` is the kind's frozen dataclass of what `compute` needs (names, seeds, options),
    never results; `deps` maps each role to the key of the unit whose result plays it."""

    kind: str
    label: str
    key: str
    deps: Mapping[str, str] = field(default_factory=dict)
    params: Any = None

    @property
    def dep_keys(self) -> tuple[str, ...]:
        return tuple(self.deps.values())


@dataclass
class Outcome:
    """What happened to a unit: status is 'cached', 'done', 'failed', 'skipped' (a dependency failed) or 'n/a'."""

    unit: Unit
    status: str
    seconds: float = 0.0
    payload: Any = None
    error: str | None = None
    traceback: str | None = None
    usage: bool = False  # failed on a XaibenchError (bad option, broken plugin output): exit code 2
    computed_by: str | None = None  # 'host:pid' of the process that computed the result (cached ones too)

    @property
    def ok(self) -> bool:
        return self.status in ("cached", "done")


class UnitKind:
    """One kind of unit: its planning, its computation and caching, its rows. Subclasses set `name` and override
    `plan`, `compute` and `rows` (and `cached`/`load`/`save` when their result does not live in the unit store,
    as a training's checkpoint does not)."""

    #: the kind's name: Unit.kind, and the store folder of its results
    name: ClassVar[str] = ""
    #: an n/a outcome of this kind marks its (dataset, method) cell as not applicable in the tables
    marks_unavailable: ClassVar[bool] = False
    #: when the planner asks this kind at each level: lower first, ties in registration order (the built-in
    #: kinds take 10..80, so a kind that reads their units, as a plugin's does, keeps the default)
    planning_order: ClassVar[int] = 100

    # -- planning ------------------------------------------------------------------------------------------------
    def plan(self, scope: "Scope") -> Iterable[Unit]:
        """The units of this kind at `scope.level` (add them with `scope.add(role, unit)`); default none."""
        return ()

    # -- computing -----------------------------------------------------------------------------------------------
    def cached(self, unit: Unit, ctx: "Context") -> bool:
        return ctx.store.path(self.name, unit.key).exists()

    def load(self, unit: Unit, ctx: "Context") -> Any:
        """The stored result, or None when there is none (or it cannot be read: it is then recomputed)."""
        return ctx.store.load(self.name, unit.key)

    def save(self, unit: Unit, ctx: "Context", payload: Any) -> None:
        ctx.store.save(self.name, unit.key, payload)

    def compute(self, unit: Unit, ctx: "Context", deps: dict[str, Any]) -> Any:
        """The unit's result from its params and `deps` (role -> the dependency's payload)."""
        raise NotImplementedError

    def seconds(self, payload: Any, elapsed: float) -> float:
        """The time reported for a cached result: the time it took when it was computed."""
        return payload.get("seconds", elapsed) if isinstance(payload, dict) else elapsed

    def detail(self, payload: Any) -> str:
        """Extra text after the unit's log line."""
        return ""

    def portable(self, payload: Any) -> Any:
        """The payload as a worker process sends it back to the main process (default: as it is)."""
        return payload

    def computed_by(self, unit: Unit, ctx: "Context", payload: Any) -> str | None:
        """Which process computed a cached result, as its file records it."""
        return ctx.store.writers.get(unit.key)

    def run(self, unit: Unit, ctx: "Context", deps: dict[str, Any]) -> tuple[Any, bool, float]:
        """(payload, was cached, seconds): loads a finished result, else computes and stores it. The unit's
        lock makes a process that finds another one computing the same unit wait, then load its result."""
        start = time.perf_counter()
        payload = self.load(unit, ctx)
        if payload is None:
            with ctx.store.lock(self.name, unit.key):
                payload = self.load(unit, ctx)
                if payload is None:
                    payload = self.compute(unit, ctx, deps)
                    self.save(unit, ctx, payload)
                    return payload, False, time.perf_counter() - start
        return payload, True, self.seconds(payload, time.perf_counter() - start)

    # -- collecting ----------------------------------------------------------------------------------------------
    def rows(self, unit: Unit, outcome: Outcome, collector: "Collector") -> None:
        """Append what a finished unit adds to the result frames (`collector.add(table, rows)`); default none."""

    def manifest_entry(self, payload: Any) -> dict[str, Any]:
        """Extra fields of this unit's entry in the manifest's `units`."""
        return {}


UNIT_KINDS: dict[str, UnitKind] = {}


def register_kind(kind: type[UnitKind]) -> type[UnitKind]:
    """Class decorator: make a unit kind known to the planner, the executor and the collector under its `name`.
    At each planning level the kinds are asked by `planning_order`, then in registration order."""
    if not kind.name:
        raise ValueError(f"unit kind {kind.__qualname__} has no name")
    UNIT_KINDS[kind.name] = kind()
    return kind
