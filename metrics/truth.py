"""Agreement with the model's own truth: an explanation's attribution mass per player against the trained network's
exact Shapley values of the whole game (objects and background regions; xaibench/engine/truth.py computes them).

A player's mass is the sum of its patches' attributions. Per image, over the players present (those with a value):
rank (Spearman), wtau (weighted Kendall tau, top-weighted), top1 / bottom1 (the method's highest / lowest player is
the game's), sign (mass has the sign of the value); and the object-only rank and sign of the game without the
background, for comparison. Every measure needs at least two present players (NaN otherwise). No forward passes:
the values were computed once per model. Batched over images with the same player count, on the inputs' device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator, Sequence

import torch

from xaibench.registry import register_metric

from .result import MetricResult
from .sanity import spearman_rows
from .stateful import Metric

RowMeasure = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class GameTruth:
    """The ground truth a `truth` metric reads, for B images of n patches.

    players: long [B, n], the player of each patch: 0..n_objects-1 the object slots, n_objects.. the background
    regions, -1 none. shapley: float [B, P], the exact Shapley value of every player of the whole game (NaN for an
    absent player: an empty object slot or a region with no patch). n_objects: how many of the players are object
    slots (players < n_objects are objects). object_patches: long [B, n], the object slot of each patch (-1 =
    background); object_shapley: float [B, n_objects], the object-only game's values (NaN for an empty slot).
    """

    players: torch.Tensor
    shapley: torch.Tensor
    n_objects: int
    object_patches: torch.Tensor
    object_shapley: torch.Tensor

    def __getitem__(self, rows) -> "GameTruth":
        return GameTruth(self.players[rows], self.shapley[rows], self.n_objects, self.object_patches[rows],
                         self.object_shapley[rows])

    def to(self, device) -> "GameTruth":
        return GameTruth(self.players.to(device), self.shapley.to(device), self.n_objects,
                         self.object_patches.to(device), self.object_shapley.to(device))


def player_mass(attributions: torch.Tensor, players: torch.Tensor, n_players: int) -> torch.Tensor:
    """float64 [B, n_players]: the summed attribution of each player's patches (patches of player -1 left out)."""
    mass = torch.zeros(attributions.shape[0], n_players + 1, dtype=torch.float64, device=attributions.device)
    slot = torch.where(players >= 0, players, torch.full_like(players, n_players))
    return mass.scatter_add_(1, slot, attributions.double())[:, :n_players]


object_mass = player_mass  # the object-only game: players are the object slots, -1 the background


# -- The measures, on rows of present players: mass [b, k] against values [b, k], k >= 2 ---------------------------


def rank_rows(mass: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """truth_rank [b]: Spearman's rank correlation (Spearman 1904) of each row's mass with its values.

    Every rank weighs alike. Ties share their average rank (as scipy.stats.spearmanr); NaN where either row is
    constant. Goes through float32 as metrics.sanity.spearman_rows does (today's object figures unchanged).
    """
    return spearman_rows(mass, values).double()


def _hyperbolic_weights(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """float64 [b, k]: 1 / (1 + r), r the 0-based rank of each element in decreasing lexicographic order by
    (first, second); elements tied in both ranked by index, the later first (scipy's reversed lexsort)."""
    k = first.shape[1]
    a_i, a_j = first[:, :, None], first[:, None, :]
    b_i, b_j = second[:, :, None], second[:, None, :]
    index = torch.arange(k, device=first.device)
    later = index[None, :] > index[:, None]  # [i, j]: j comes after i
    ahead = (a_j > a_i) | ((a_j == a_i) & ((b_j > b_i) | ((b_j == b_i) & later)))
    return 1.0 / (1.0 + ahead.sum(dim=2).double())


def _weighted_tau_ranked(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The weighted tau-b of x and y [b, k] with element weights [b, k]; a pair weighs w_i + w_j (additive)."""
    sx = torch.sign(x[:, :, None] - x[:, None, :])
    sy = torch.sign(y[:, :, None] - y[:, None, :])
    pair = weights[:, :, None] + weights[:, None, :]  # the diagonal drops out: sx = sy = 0 there
    concordance = (pair * sx * sy).sum(dim=(1, 2))  # concordant minus discordant weight (each pair twice)
    untied_x = (pair * (sx != 0)).sum(dim=(1, 2))
    untied_y = (pair * (sy != 0)).sum(dim=(1, 2))
    tau = concordance / untied_x.sqrt() / untied_y.sqrt()
    defined = (untied_x > 0) & (untied_y > 0)
    return torch.where(defined, tau.clamp(-1.0, 1.0), torch.full_like(tau, float("nan")))


def weighted_tau_rows(mass: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """truth_wtau [b]: the additive hyperbolic weighted Kendall tau (Vigna 2015, "A weighted correlation index for
    rankings with ties"), equal to scipy.stats.weightedtau(mass, values) with its defaults.

    A pair of players weighs 1/(1 + r_i) + 1/(1 + r_j), r the 0-based rank from the top, so swaps near the top
    (the players the curves remove first) weigh most. tau = (concordant - discordant weight) /
    sqrt(weight of pairs untied in mass * weight of pairs untied in values): a pair tied in one of them counts in
    neither the numerator nor that factor (tau-b). Averaged over the two rankings (by mass then values, and by
    values then mass), as scipy's rank=True. NaN where either row is constant; clipped to [-1, 1]. O(k^2) per row.
    """
    x, y = mass.double(), values.double()
    return (_weighted_tau_ranked(x, y, _hyperbolic_weights(x, y))
            + _weighted_tau_ranked(x, y, _hyperbolic_weights(y, x))) / 2


def top_hit_rows(mass: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """truth_top1 [b]: whether the method's highest-mass player is the game's highest-value player.

    Ties: with M the players tied at the top mass and G those tied at the top value (exact equality), the hit is
    |M intersect G| / |M|, the chance that a uniform pick among the method's top players is one of the game's (a
    constant map scores |G| / k, as a random pick). NaN where a row holds a NaN mass.
    """
    method_top = mass == mass.max(dim=1, keepdim=True).values
    game_top = values == values.max(dim=1, keepdim=True).values
    return (method_top & game_top).sum(dim=1).double() / method_top.sum(dim=1).double()


def bottom_hit_rows(mass: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """truth_bottom1 [b]: whether the method's lowest-mass player is the game's lowest-value (most negative)
    player; ties and NaN as top_hit_rows (M, G the players tied at the lowest mass and value)."""
    return top_hit_rows(-mass, -values)


def sign_rows(mass: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """truth_sign [b]: the share of players whose mass has the sign of their value (torch.sign equal: a zero mass
    counts wrong for a non-zero value, right for a zero value)."""
    return (torch.sign(mass) == torch.sign(values)).double().mean(dim=1)


MEASURES: dict[str, RowMeasure] = {"rank": rank_rows, "wtau": weighted_tau_rows, "top1": top_hit_rows,
                                   "bottom1": bottom_hit_rows, "sign": sign_rows}


def _rows_by_player_count(present: torch.Tensor) -> Iterator[tuple[torch.Tensor, int]]:
    """(rows, k) for each player count k >= 2: the images with k present players, to be scored at once."""
    counts = present.sum(dim=1)
    for count in counts.unique().tolist():
        if count >= 2:
            yield (counts == count).nonzero()[:, 0], int(count)


def agreement(attributions: torch.Tensor, players: torch.Tensor, shapley: torch.Tensor,
              measures: Sequence[str] = tuple(MEASURES)) -> dict[str, torch.Tensor]:
    """name -> float64 [B]: each of `measures` (keys of MEASURES) of attributions [B, n] against the values
    shapley [B, P] (NaN = absent player) of the players that `players` [B, n] names (-1 = no player), over the
    present players of each image; NaN for an image with fewer than two. On the attributions' device."""
    shapley = shapley.to(device=attributions.device, dtype=torch.float64)
    present = ~shapley.isnan()
    mass = player_mass(attributions, players.to(attributions.device), shapley.shape[1])
    out = {name: torch.full((len(mass),), float("nan"), dtype=torch.float64, device=mass.device)
           for name in measures}
    for rows, count in _rows_by_player_count(present):
        kept = present[rows]
        a = mass[rows][kept].view(len(rows), count)
        b = shapley[rows][kept].view(len(rows), count)
        for name in measures:
            out[name][rows] = MEASURES[name](a, b).double()
    return out


def game_agreement(attributions: torch.Tensor, truth: GameTruth) -> dict[str, torch.Tensor]:
    """Every measure of the `truth` metric, score name -> float64 [B]: the whole game's (truth_rank, truth_wtau,
    truth_top1, truth_bottom1, truth_sign) and the object-only game's (truth_rank_objects, truth_sign_objects)."""
    whole = agreement(attributions, truth.players, truth.shapley)
    rank, sign = object_agreement(attributions, truth.object_patches, truth.object_shapley)
    return {**{f"truth_{name}": values for name, values in whole.items()},
            "truth_rank_objects": rank, "truth_sign_objects": sign}


def object_agreement(attributions: torch.Tensor, patches: torch.Tensor,
                     shapley: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rank [B], sign [B]) agreement of attributions [B, n] with the Shapley values [B, S] of the objects
    whose patches `patches` [B, n] names (the object-only game); NaN for an image with fewer than two objects."""
    out = agreement(attributions, patches, shapley, ("rank", "sign"))
    return out["rank"], out["sign"]


TRUTH_SCORES = ("truth_rank", "truth_wtau", "truth_top1", "truth_bottom1", "truth_sign", "truth_rank_objects",
                "truth_sign_objects")


@register_metric("truth")
class TruthAgreement(Metric):
    """Agreement of each player's attribution mass with the model's exact Shapley values of the whole game (objects
    and background regions): rank, weighted tau, top-1, bottom-1 and sign, and the object-only rank and sign
    (needs a dataset that re-renders its objects, e.g. `objects`)."""

    group = "truth"
    main_score = "truth_wtau"  # the measure the tables lead with (docs/truth.md)
    score_names = TRUTH_SCORES
    directions: ClassVar[dict[str, bool]] = {name: True for name in TRUTH_SCORES}
    needs_object_truth: ClassVar[bool] = True

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        if not isinstance(ground_truth, GameTruth):
            raise ValueError("metric 'truth' needs the model's game truth (a GameTruth): it applies to datasets "
                             "that re-render their objects, such as 'objects'")
        scores = game_agreement(attributions, ground_truth)
        return MetricResult({name: scores[name].float() for name in TRUTH_SCORES})
