"""collect(plan, outcomes) -> Frames: the long tables (scores, costs, curves, Table 1 rows) and what the report
needs besides (figure inputs, n/a cells, per-unit times, failures). No model is run here."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from xaibench.engine.context import Context
from xaibench.engine.kinds import payload_explanation
from xaibench.methods import Explanation
from xaibench.engine.units import Outcome, Unit

SCORE_COLUMNS = ["dataset", "seed", "method", "image", "label", "target", "metric", "value"]


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


def patches_to_pixels(values: torch.Tensor, img_size: int) -> torch.Tensor:
    """[B, n] patch values -> [B, H, W] (nearest), for drawing a map over its image."""
    grid = int(round(values.shape[1] ** 0.5))
    patch = img_size // grid
    maps = values.view(-1, grid, grid)
    return maps.repeat_interleave(patch, 1).repeat_interleave(patch, 2)


def score_rows(p: dict[str, Any], indices: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor,
               scores: dict[str, torch.Tensor]) -> list[pd.DataFrame]:
    return [pd.DataFrame({"dataset": p["dataset"], "seed": p["seed"], "method": p["method"],
                          "image": indices.numpy(), "label": labels.numpy(), "target": targets.numpy(),
                          "metric": name, "value": values.double().numpy()}) for name, values in scores.items()]


def curve_rows(p: dict[str, Any], scored: dict[str, Any]) -> list[dict[str, Any]]:
    if scored.get("x") is None:
        return []
    x_axis = scored["x"].tolist()
    return [{"dataset": p["dataset"], "method": p["method"], "seed": p["seed"], "curve": name, "x": x_value,
             "y": y_value}
            for name, curves in scored["curves"].items()
            for x_value, y_value in zip(x_axis, curves.double().mean(dim=0).tolist())]


def cost_row(p: dict[str, Any], explanation: Explanation) -> dict[str, Any]:
    return {"dataset": p["dataset"], "method": p["method"], "seed": p["seed"],
            "ms_per_image": explanation.ms_per_image, "forward_per_image": explanation.n_forward,
            "backward_per_image": explanation.n_backward}


def table1_rows(p: dict[str, Any], evaluated: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"dataset": p["spec"].name, "model": p["model"], "seed": p["seed"], "metric": metric.upper(),
             "value": evaluated[metric], "checkpoint": evaluated["checkpoint"],
             "train_seconds": evaluated["train_seconds"]} for metric in ("auc", "acc")]


class _Collector:
    """Walks the outcomes in plan order and appends to the frames; one method per unit kind."""

    def __init__(self, ctx: Context, n_figure_images: int):
        self.ctx, self.n_figure_images = ctx, n_figure_images
        self.scores: list[pd.DataFrame] = []
        self.curves: list[dict[str, Any]] = []
        self.costs: list[dict[str, Any]] = []
        self.table1: list[dict[str, Any]] = []
        self.gate_rows: list[dict[str, Any]] = []
        self.sanity_rows: list[dict[str, Any]] = []
        self.emitted: dict[tuple[str, int, str], set[str]] = {}  # a score two metrics both give is kept once
        self.frames = Frames(*(pd.DataFrame() for _ in range(4)))

    def train(self, unit: Unit, outcome: Outcome) -> None:
        if unit.params.get("main"):
            record = outcome.payload.record
            self.frames.checkpoints[f"{unit.params['spec'].name}/seed{unit.params['seed']}"] = {
                "file": outcome.payload.path.name, "val_acc": record.get("val_acc"),
                "best_step": record.get("best_step")}

    load = train

    def fit(self, unit: Unit, outcome: Outcome) -> None:
        """An amortized explainer's training: its time is in the manifest's units (cost.csv counts explaining)."""

    def evaluate(self, unit: Unit, outcome: Outcome) -> None:
        self.table1.extend(table1_rows(unit.params, outcome.payload))

    def truth(self, unit: Unit, outcome: Outcome) -> None:
        """The gates, and the reference ordering's map for the figure (its cost is not a method's)."""
        from xaibench.engine.truth import gate_rows

        p = unit.params
        self.gate_rows.extend(gate_rows(p["dataset"], p["seed"], outcome.payload["gates"]))
        self._figure(p, outcome.payload["attributions"])

    def sanity(self, unit: Unit, outcome: Outcome) -> None:
        p, payload = unit.params, outcome.payload
        for stage, rho, rho_abs in zip(payload["stages"], payload["spearman"], payload["spearman_abs"]):
            self.sanity_rows.append({"dataset": p["dataset"], "seed": p["seed"], "method": p["method"],
                                     "test": p.get("test", "model"), "stage": stage,
                                     "spearman": float(rho.double().nanmean()),
                                     "spearman_abs": float(rho_abs.double().nanmean()), "n_images": len(rho)})

    def explain(self, unit: Unit, outcome: Outcome) -> None:
        p, explanation = unit.params, payload_explanation(outcome.payload)
        self.costs.append(cost_row(p, explanation))
        self.frames.explanations.append({"dataset": p["dataset"], "seed": p["seed"], "method": p["method"],
                                         "image": torch.arange(len(explanation.attributions)),
                                         "target": outcome.payload["targets"],
                                         "attributions": explanation.attributions})
        self._figure(p, explanation.attributions)

    def _figure(self, p: dict[str, Any], attributions: torch.Tensor) -> None:
        """The first images' maps of one method for the attribution figure (one seed per dataset)."""
        figures = self.frames.figure_data
        if not self.n_figure_images or figures.get(p["dataset"], {}).get("seed", p["seed"]) != p["seed"]:
            return
        shown = slice(0, self.n_figure_images)
        batch = self.ctx.test_batch(p["spec"], p["n_test"])
        entry = figures.setdefault(p["dataset"], {
            "seed": p["seed"], "images": batch.x[shown].cpu(), "labels": batch.labels[shown].cpu(),
            "masks": batch.dataset.pixel_masks[batch.indices[shown]] if batch.dataset.has_ground_truth else None,
            "maps": {}})
        entry["maps"][p["method"]] = patches_to_pixels(attributions[shown], batch.x.shape[-1])

    def score(self, unit: Unit, outcome: Outcome) -> None:
        p, scored = unit.params, outcome.payload
        batch = self.ctx.test_batch(p["spec"], p["n_test"])
        emitted = self.emitted.setdefault((p["dataset"], p["seed"], p["method"]), set())
        fresh = {name: values for name, values in scored["scores"].items() if name not in emitted}
        emitted.update(fresh)
        explained = self.outcomes[unit.deps[1]].payload
        self.scores.extend(score_rows(p, batch.indices, batch.labels.cpu(), explained["targets"], fresh))
        self.curves.extend(curve_rows(p, scored))

    def note(self, unit: Unit, outcome: Outcome) -> None:
        """Per-unit time and cache state, failures, and the n/a cells of methods that do not suit the model."""
        if outcome.ok:
            entry = {"seconds": round(outcome.seconds, 3), "cached": outcome.status == "cached",
                     "computed_by": outcome.computed_by}
            if unit.kind == "score":  # masked inputs, for inputs/s (benchmarks/gpu_check.sh)
                entry["n_forward"] = int(outcome.payload.get("n_forward", 0))
            self.frames.units[unit.label] = entry
        elif outcome.status == "failed":
            self.frames.failures.append({"unit": unit.label, "error": outcome.error or "",
                                         "traceback": outcome.traceback or ""})
        elif outcome.status == "n/a" and unit.kind in ("explain", "truth"):
            self.frames.unavailable[(unit.params["dataset"], unit.params["method"])] = outcome.error or "n/a"


def collect(plan: list[Unit], outcomes: dict[str, Outcome], ctx: Context, n_figure_images: int = 0) -> Frames:
    """The frames of a finished (or partly failed) execution; units that did not finish add no rows."""
    collector = _Collector(ctx, n_figure_images)
    collector.outcomes = outcomes
    for unit in plan:
        outcome = outcomes.get(unit.key)
        if outcome is None:
            continue
        collector.note(unit, outcome)
        if outcome.ok:
            getattr(collector, unit.kind)(unit, outcome)
    frames = collector.frames
    frames.scores = pd.concat(collector.scores, ignore_index=True) if collector.scores else \
        pd.DataFrame(columns=SCORE_COLUMNS)
    frames.costs, frames.curves = pd.DataFrame(collector.costs), pd.DataFrame(collector.curves)
    frames.table1 = pd.DataFrame(collector.table1)
    frames.gates, frames.sanity = pd.DataFrame(collector.gate_rows), pd.DataFrame(collector.sanity_rows)
    return frames
