"""Unit kind `truth`: the explained network's exact Shapley values on a dataset that re-renders its objects: the
whole game of objects and background regions by masking (engine/game.py), the object game by re-rendering
(engine/truth.py, for the removal-agreement gate and the object-only figures), the reference ordering of the
whole game (stored as an explanation of the method "reference", so the metrics score it like any method), the
gates and the background's share."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from xaibench.cache import code_fingerprint, unit_key
from xaibench.engine.context import Context
from xaibench.engine.kinds.common import explanation_targets
from xaibench.engine.scope import REFERENCE, Scope
from xaibench.engine.units import NotApplicable, Outcome, Unit, UnitKind, register_kind
from xaibench.training import DataSpec, classification_scores, predict_proba

STORED = ("values", "shapley", "patches", "kinds", "masked_without", "background_masked")  # the object game


@dataclass(frozen=True)
class TruthParams:
    dataset: str
    spec: DataSpec
    seed: int
    method: str  # REFERENCE: the name its ordering is scored under
    n_test: int
    target: str
    batch_size: int
    regions: int = 2  # the background's players in the whole game


def truth_unit(scope: Scope) -> Unit:
    """The model's exact object Shapley values on the first n_test test images."""
    from xaibench.engine import truth

    options, model, spec = scope.options, scope.units["model"], scope.spec
    key = unit_key("truth", {"model": model.key, "data": spec.key(), "n_test": scope.n_test, "target": options.target,
                             "code": code_fingerprint(truth.object_truth), "seed": scope.seed,
                             "batch_size": options.batch_size, "device": scope.device.type,
                             "regions": options.background_regions})
    return Unit("truth", f"truth {spec.name}/seed{scope.seed}", key, {"model": model.key},
                params=TruthParams(spec.name, spec, scope.seed, REFERENCE, scope.n_test, options.target,
                                   options.batch_size, options.background_regions))


@register_kind
class TruthKind(UnitKind):
    """The model's exact object Shapley values, the reference ordering and the gates."""

    name = "truth"
    planning_order = 40
    marks_unavailable = True

    def plan(self, scope: Scope):
        if scope.level == "network" and scope.setup.has_object_truth(scope.dataset):
            scope.add("truth", truth_unit(scope))

    def compute(self, unit: Unit, ctx: Context, deps: dict[str, Any]) -> dict[str, Any]:
        from xaibench.engine.game import background_share, game_players, spread_over_patches, whole_game
        from xaibench.engine.truth import N_SLOTS, gate_values, object_truth

        start, p = time.perf_counter(), unit.params
        model = deps["model"].model
        test = ctx.test_split(p.spec)
        grid = getattr(test, "patch", None)
        if grid != model.patch_size:
            raise NotApplicable(f"the model's patches ({model.patch_size} px) are not the dataset's object grid "
                                f"({grid} px): set [data.{p.dataset}] patch to match")
        batch = ctx.test_batch(p.spec, p.n_test)
        targets = explanation_targets(model, batch.x, batch.labels, p.target, p.batch_size)
        truth = object_truth(model, test, batch.indices, targets, ctx.device)
        players = game_players(truth["patches"], p.regions)
        forward_batch = ctx.forward(model, batch.x)[1]
        game, subsets = whole_game(model, batch.x, players, targets, N_SLOTS + p.regions, forward_batch)
        accuracy = classification_scores(predict_proba(model, test, ctx.device), test)["acc"]
        gates = {**gate_values(truth, float(accuracy)), "background_share": float(background_share(game).nanmean())}
        seconds = time.perf_counter() - start
        n_forward = truth["values"].shape[1] + float(subsets.double().mean())  # per image: both games
        return {"method": p.method, "attributions": spread_over_patches(game, players), "targets": targets.cpu(),
                "seconds": seconds, "n_forward": n_forward, "n_backward": 0.0, "players": players.cpu(),
                "game_shapley": game, "game_subsets": subsets, **{name: truth[name] for name in STORED},
                "gates": gates}

    def rows(self, unit: Unit, outcome: Outcome, collector) -> None:
        """The gates, and the reference ordering's map for the figure (its cost is not a method's)."""
        from xaibench.engine.truth import gate_rows, measure_rows

        p = unit.params
        collector.add("gates", gate_rows(p.dataset, p.seed, outcome.payload["gates"]))
        collector.add("game", measure_rows(p.dataset, p.seed, outcome.payload["gates"]))
        collector.figure(p, outcome.payload["attributions"])
