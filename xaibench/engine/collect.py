"""collect(plan, outcomes) -> Frames: the long tables (scores, costs, curves, Table 1 rows, gates, sanity) and what
the report needs besides (figure inputs, n/a cells, per-unit times, failures). Each unit kind turns its own outcome
into rows (`UnitKind.rows`); no model is run here."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from xaibench.engine.context import Context
from xaibench.engine.units import UNIT_KINDS, Outcome, Unit

SCORE_COLUMNS = ["dataset", "seed", "method", "image", "label", "target", "metric", "value"]
#: the tables the report knows; rows a kind adds under any other name land in Frames.extra
TABLES = ("scores", "costs", "curves", "table1", "gates", "game", "sanity", "metric_costs")


@dataclass
class Frames:
    scores: pd.DataFrame
    costs: pd.DataFrame
    curves: pd.DataFrame
    table1: pd.DataFrame
    figure_data: dict[str, dict[str, Any]] = field(default_factory=dict)
    unavailable: dict[tuple[str, str], str] = field(default_factory=dict)  # (dataset, method) -> reason
    checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    units: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    explanations: list[dict[str, Any]] = field(default_factory=list)  # for --save-attributions
    gates: pd.DataFrame = field(default_factory=pd.DataFrame)  # per dataset and seed, engine/truth.py's gates
    sanity: pd.DataFrame = field(default_factory=pd.DataFrame)  # per dataset, seed, method and stage
    game: pd.DataFrame = field(default_factory=pd.DataFrame)  # per dataset and seed: the game's measured shares
    # per dataset, seed, method and metric: what scoring cost (ms, forward inputs, re-explained images per image)
    metric_costs: pd.DataFrame = field(default_factory=pd.DataFrame)
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)  # rows of kinds the report does not know


def patches_to_pixels(values: torch.Tensor, img_size: int) -> torch.Tensor:
    """[B, n] patch values -> [B, H, W] (nearest), for drawing a map over its image."""
    grid = int(round(values.shape[1] ** 0.5))
    patch = img_size // grid
    maps = values.view(-1, grid, grid)
    return maps.repeat_interleave(patch, 1).repeat_interleave(patch, 2)


class Collector:
    """Walks the outcomes in plan order; each finished unit's kind adds its rows through `add`."""

    def __init__(self, ctx: Context, outcomes: dict[str, Outcome], n_figure_images: int):
        self.ctx, self.outcomes, self.n_figure_images = ctx, outcomes, n_figure_images
        self.rows: dict[str, list[Any]] = {}
        self.emitted: dict[tuple[str, int, str], set[str]] = {}  # a score two metrics both give is kept once
        self.frames = Frames(*(pd.DataFrame() for _ in range(4)))

    def add(self, table: str, rows: list[Any]) -> None:
        """Append rows (dicts, or data frames for the scores) to one long table."""
        self.rows.setdefault(table, []).extend(rows)

    def payload(self, unit: Unit, role: str) -> Any:
        """The result of the unit that plays `role` for `unit`."""
        return self.outcomes[unit.deps[role]].payload

    def figure(self, p: Any, attributions: torch.Tensor) -> None:
        """The first images' maps of one method for the attribution figure (one seed per dataset)."""
        figures = self.frames.figure_data
        if not self.n_figure_images or figures.get(p.dataset, {}).get("seed", p.seed) != p.seed:
            return
        shown = slice(0, self.n_figure_images)
        batch = self.ctx.test_batch(p.spec, p.n_test)
        entry = figures.setdefault(p.dataset, {
            "seed": p.seed, "images": batch.x[shown].cpu(), "labels": batch.labels[shown].cpu(),
            "masks": batch.dataset.pixel_masks[batch.indices[shown]] if batch.dataset.has_ground_truth else None,
            "maps": {}})
        entry["maps"][p.method] = patches_to_pixels(attributions[shown], batch.x.shape[-1])

    def note(self, unit: Unit, outcome: Outcome) -> None:
        """Per-unit time and cache state, failures, and the n/a cells of methods that do not suit the model."""
        kind = UNIT_KINDS[unit.kind]
        if outcome.ok:
            entry = {"seconds": round(outcome.seconds, 3), "cached": outcome.status == "cached",
                     "computed_by": outcome.computed_by}
            self.frames.units[unit.label] = {**entry, **kind.manifest_entry(outcome.payload)}
        elif outcome.status == "failed":
            self.frames.failures.append({"unit": unit.label, "error": outcome.error or "",
                                         "traceback": outcome.traceback or ""})
        elif outcome.status == "n/a" and kind.marks_unavailable:
            self.frames.unavailable[(unit.params.dataset, unit.params.method)] = outcome.error or "n/a"

    def finish(self) -> Frames:
        frames, rows = self.frames, self.rows
        frames.scores = pd.concat(rows["scores"], ignore_index=True) if rows.get("scores") else \
            pd.DataFrame(columns=SCORE_COLUMNS)
        frames.costs, frames.curves = pd.DataFrame(rows.get("costs", [])), pd.DataFrame(rows.get("curves", []))
        frames.table1 = pd.DataFrame(rows.get("table1", []))
        frames.gates, frames.sanity = pd.DataFrame(rows.get("gates", [])), pd.DataFrame(rows.get("sanity", []))
        frames.game, frames.metric_costs = pd.DataFrame(rows.get("game", [])), pd.DataFrame(rows.get("metric_costs", []))
        frames.extra = {name: pd.DataFrame(table) for name, table in rows.items() if name not in TABLES}
        return frames


def collect(plan: list[Unit], outcomes: dict[str, Outcome], ctx: Context, n_figure_images: int = 0) -> Frames:
    """The frames of a finished (or partly failed) execution; units that did not finish add no rows."""
    collector = Collector(ctx, outcomes, n_figure_images)
    for unit in plan:
        outcome = outcomes.get(unit.key)
        if outcome is None:
            continue
        collector.note(unit, outcome)
        if outcome.ok:
            UNIT_KINDS[unit.kind].rows(unit, outcome, collector)
    return collector.finish()
