"""The model's own truth on a dataset that can re-render its images without any subset of its objects
(xaibench/data/objects.py): exact object Shapley values of the trained network, the reference ordering they
give, and the gates that say whether patch masking (what SRG and R-SRG do) and object removal (what the truth
is made of) speak of the same thing.

The game of an image: its K <= 6 objects are the players, v(S) the target class's log-odds,
log p_t - log(1 - p_t), of the image re-rendered with the objects S only. Every one of the 2^6 subsets is
rendered and forwarded (empty slots are null players, which leave the others' values unchanged), so the values
are exact: phi_i = sum over S not holding i of |S|! (6 - |S| - 1)! / 6! (v(S + i) - v(S)).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from xaibench.data.base import to_float
from xaibench.data.objects import MAX_OBJECTS

N_SLOTS = MAX_OBJECTS  # the players of an image's game: its object slots
RENDER_BYTES = 1 << 28  # re-rendered float64 pixels held at a time
GATES = {  # name -> (threshold, True if the value must be at least the threshold, what it measures)
    "accuracy": (0.95, True, "test accuracy of the explained network (whole test split)"),
    "removal_agreement": (0.9, True, "Pearson correlation, over images x objects, of the target log-odds with "
                                     "the object removed by re-rendering and by masking its patches"),
}
#: what the game measures besides (no threshold: the whole game judges the background, engine/game.py)
MEASURES = {
    "background_share": "share of the whole game's |phi| held by the background regions (mean over images)",
    "background_shift": "mean absolute change of the target log-odds when every background patch is masked, over "
                        "the mean absolute v(all) - v(none)",
    "distractor_share": "mean absolute Shapley value of distractor objects over that of evidence objects",
}


def subset_masks(n: int = N_SLOTS) -> torch.Tensor:
    """bool [2^n, n]: row s holds the players of subset s (bit i of s = player i)."""
    codes = torch.arange(2**n)
    return (codes[:, None] >> torch.arange(n)[None, :]) & 1 == 1


def shapley_matrix(n: int = N_SLOTS) -> torch.Tensor:
    """float64 [2^n, n]: phi = v @ M for a game v [.., 2^n] given on every subset (subset_masks' order)."""
    members = subset_masks(n)
    sizes = members.sum(dim=1)
    matrix = torch.zeros(2**n, n, dtype=torch.float64)
    for player in range(n):
        for code in range(2**n):
            if members[code, player]:
                s = int(sizes[code]) - 1  # |S| of the coalition the player joins
                matrix[code, player] += math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)
            else:
                s = int(sizes[code])
                matrix[code, player] -= math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)
    return matrix


def target_log_odds(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p_t - log(1 - p_t) [B] from logits [B, C], computed as l_t - logsumexp of the other classes."""
    logits = logits.double()
    picked = logits.gather(1, targets[:, None])[:, 0]
    others = logits.scatter(1, targets[:, None], float("-inf"))
    return picked - others.logsumexp(dim=1)


@torch.no_grad()
def _log_odds(model, x: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor | None, batch: int) -> torch.Tensor:
    """Target log-odds [N] of inputs x [N, C, H, W] (float, on the model's device), keep-masks optional."""
    out = []
    for start in range(0, len(x), batch):
        rows = slice(start, start + batch)
        logits = model(x[rows], None if keep is None else keep[rows])
        out.append(target_log_odds(logits, targets[rows]))
    return torch.cat(out)


def object_truth(model, dataset, indices: torch.Tensor, targets: torch.Tensor, device: torch.device,
                 batch: int = 256) -> dict[str, torch.Tensor]:
    """The exact object game of each image indices[b] for class targets[b]:
    values [B, 2^6] (target log-odds of every re-rendered subset), shapley [B, 6] (NaN for empty slots),
    patches long [B, n] (the slot covering each patch, -1 = background), kinds [B, 6] (1 evidence,
    0 distractor, -1 empty), masked_without [B, 6] (log-odds with the object's patches masked instead),
    background_masked [B] (log-odds with every background patch masked), reference [B, n] (each object's
    Shapley value spread evenly over its patches, 0 on the background)."""
    n_images = len(indices)
    subsets = subset_masks()
    targets = targets.to(device)
    chunk = max(1, RENDER_BYTES // (len(subsets) * dataset.size**2 * 8))  # images re-rendered at a time
    values = []
    for first in range(0, n_images, chunk):
        rendered = dataset.render(indices[first:first + chunk], subsets[None]).flatten(0, 1)  # [b * 64, C, H, W]
        repeated = targets[first:first + chunk].repeat_interleave(len(subsets))
        values.append(torch.cat([_log_odds(model, to_float(rendered[start:start + batch].to(device)),
                                           repeated[start:start + batch], None, batch)
                                 for start in range(0, len(rendered), batch)]).view(-1, len(subsets)).cpu())
    values = torch.cat(values)
    present = dataset.present(indices)
    shapley = values @ shapley_matrix()
    shapley = torch.where(present, shapley, torch.full_like(shapley, float("nan")))
    patches = dataset.object_patches(indices)
    x = to_float(dataset.images[indices].to(device))  # every object kept: the test images themselves
    slots = torch.arange(N_SLOTS)
    keep_without = (patches[:, None, :] != slots[None, :, None]).flatten(0, 1)  # [B * 6, n]
    masked_without = _log_odds(model, x.repeat_interleave(N_SLOTS, dim=0), targets.repeat_interleave(N_SLOTS),
                               keep_without.to(device), batch).view(n_images, N_SLOTS).cpu()
    background_masked = _log_odds(model, x, targets, (patches >= 0).to(device), batch).cpu()
    sizes = torch.zeros(n_images, N_SLOTS).scatter_add_(1, patches.clamp(min=0), (patches >= 0).float())
    per_patch = torch.nan_to_num(shapley).float() / sizes.clamp(min=1)
    reference = torch.where(patches >= 0, per_patch.gather(1, patches.clamp(min=0)), torch.zeros(()))
    return {"values": values, "shapley": shapley, "patches": patches, "kinds": dataset.object_kinds(indices),
            "masked_without": masked_without, "background_masked": background_masked, "reference": reference}


def gate_values(truth: dict[str, torch.Tensor], accuracy: float) -> dict[str, float]:
    """The gates' measured values (GATES says what each is and its threshold) and the measures (MEASURES) of
    the object game; background_share needs the whole game (game_measures)."""
    full = (1 << N_SLOTS) - 1
    values, present = truth["values"], truth["kinds"] >= 0
    rendered_without = torch.stack([values[:, full ^ (1 << slot)] for slot in range(N_SLOTS)], dim=1)
    a, b = rendered_without[present], truth["masked_without"][present].double()
    agreement = float(torch.corrcoef(torch.stack([a, b]))[0, 1]) if len(a) > 1 else float("nan")
    spread = (values[:, full] - values[:, 0]).abs().mean()
    shift = (truth["background_masked"].double() - values[:, full]).abs().mean()
    magnitude = truth["shapley"].abs()
    evidence, distractor = magnitude[truth["kinds"] == 1], magnitude[truth["kinds"] == 0]
    return {"accuracy": float(accuracy), "removal_agreement": agreement,
            "background_shift": float(shift / spread) if spread > 0 else float("nan"),
            "distractor_share": float(distractor.mean() / evidence.mean()) if len(distractor) and len(evidence)
            else float("nan")}


def gate_holds(name: str, value: float) -> bool:
    """Whether a gate's measured value meets its threshold (GATES); a NaN, which could not be measured, fails."""
    threshold, at_least, _ = GATES[name]
    return bool(value >= threshold if at_least else value <= threshold)


def gate_rows(dataset: str, seed: int, gates: dict[str, Any]) -> list[dict[str, Any]]:
    """Long rows of gates.csv (tables.gate_warnings turns the failing ones into the run's warnings)."""
    rows = []
    for name, value in gates.items():
        if name not in GATES:
            continue
        threshold, at_least, what = GATES[name]
        rows.append({"dataset": dataset, "seed": seed, "gate": name, "value": value,
                     "threshold": f"{'>=' if at_least else '<='} {threshold}", "holds": gate_holds(name, value),
                     "measures": what})
    return rows


def measure_rows(dataset: str, seed: int, gates: dict[str, Any]) -> list[dict[str, Any]]:
    """Long rows of game.csv: the measured shares (MEASURES), no threshold."""
    return [{"dataset": dataset, "seed": seed, "measure": name, "value": gates[name], "measures": what}
            for name, what in MEASURES.items() if name in gates]
