"""Units of work: what a plan is made of, and the kinds of unit the executor knows how to run.

A `Unit` is a record (kind, label, key, deps, params); its key hashes its own inputs and the keys of the units it
depends on, so a whole plan's keys, and what is already cached, are known before any work. The work itself lives
in a `UnitKind` (one per kind, registered in `UNIT_KINDS`): `cached` says whether the result is on disk, `run`
loads or computes it. New kinds (an explainer that must be fitted first, a score that needs re-rendered images)
are one class and one `UNIT_KINDS` entry; the executor does not change.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xaibench.errors import NotApplicable

if TYPE_CHECKING:  # pragma: no cover
    from xaibench.engine.context import Context


@dataclass
class Unit:
    """One piece of work. `params` hold what the kind's `run` needs (names, seeds, options), not results."""

    kind: str
    label: str
    key: str
    deps: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What happened to a unit: status is 'cached', 'done', 'failed' or 'skipped' (a dependency failed)."""

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
    """How one kind of unit is cached and computed. Subclasses override `compute` (and `cached`/`load`/`save`
    when their result does not live in the unit store, as a training's checkpoint does not)."""

    #: the store folder of this kind's results
    name: str = ""

    def cached(self, unit: Unit, ctx: "Context") -> bool:
        return ctx.store.path(self.name, unit.key).exists()

    def load(self, unit: Unit, ctx: "Context") -> Any:
        """The stored result, or None when there is none (or it cannot be read: it is then recomputed)."""
        return ctx.store.load(self.name, unit.key)

    def save(self, unit: Unit, ctx: "Context", payload: Any) -> None:
        ctx.store.save(self.name, unit.key, payload)

    def compute(self, unit: Unit, ctx: "Context", deps: dict[str, Any]) -> Any:
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


UNIT_KINDS: dict[str, UnitKind] = {}


def register_kind(kind: type[UnitKind]) -> type[UnitKind]:
    """Class decorator: make a unit kind known to the executor under its `name`."""
    UNIT_KINDS[kind.name] = kind()
    return kind
