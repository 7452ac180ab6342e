"""Model parameter randomization test (Adebayo et al. 2018): do a method's maps change when the model does?

The model's stages are re-initialised one after the other from the output down (the caller builds the copies
with xaibench/models/randomize.py); after each, the same images are explained again and compared with the original
maps by Spearman rank correlation per image, on the signed maps and on their absolute values. A method that explains
the model must lose that correlation once the whole network is random; one whose maps stay (an edge detector, the
random baseline) fails.
Pure functions of tensors and one callable; no model code, no files.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
from torch import nn

from xaibench.errors import XaibenchError

SANITY_THRESHOLD = 0.5


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks [B, n] (float64) along the last axis of values [B, n]; tied values share their mean rank."""
    scores = values.to(torch.float64)
    ordered = scores.sort(dim=-1).values
    below = torch.searchsorted(ordered, scores, right=False)
    up_to = torch.searchsorted(ordered, scores, right=True)
    return (below + up_to + 1).to(torch.float64) / 2


def spearman_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation [B] of each row of a and b (both [B, n]), ties given their average rank (as
    scipy.stats.spearmanr); NaN where either row is constant. On the inputs' device; float32 out."""
    if a.shape != b.shape or a.dim() != 2:
        raise XaibenchError(f"spearman_rows needs two tensors of one shape [B, n]; got {tuple(a.shape)} and "
                            f"{tuple(b.shape)}")
    ra, rb = average_ranks(a), average_ranks(b.to(a.device))
    ra = ra - ra.mean(dim=-1, keepdim=True)
    rb = rb - rb.mean(dim=-1, keepdim=True)
    denominator = (ra.square().sum(dim=-1) * rb.square().sum(dim=-1)).sqrt()
    rho = (ra * rb).sum(dim=-1) / denominator
    rho = torch.where(denominator > 0, rho.clamp(-1.0, 1.0), torch.full_like(rho, float("nan")))
    return rho.float()


def map_correlations(original: torch.Tensor, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spearman [B] of each image's map against its original, on the signed maps and on their absolute values."""
    return spearman_rows(original, maps), spearman_rows(original.abs(), maps.abs())


def cascading_randomization(explain: Callable[[nn.Module], torch.Tensor], copies: Iterable[tuple[str, nn.Module]],
                            original: torch.Tensor) -> dict[str, Any]:
    """Spearman correlation of the original maps [B, n] with explain(copy) for each (stage name, copy) of `copies`.

    explain(network) -> attributions [B, n] of the same images and targets for any network; the caller makes the
    explainer, loads fitted state and gives it a fresh generator each time, so a seeded method draws the same
    numbers for every network (`original` is explain(model) made the same way). `copies` is read one pair at a
    time and each copy is dropped before the next is asked for: with xaibench.models.randomize.randomized_copies
    (model, generator), which draws the new weights lazily, one copy is in memory at a time. Returns {"stages":
    [stage names, in the order given], "spearman": [n_stages, B] Spearman(original map, copy's map) per image,
    "spearman_abs": the same on absolute values}, on the maps' device.
    """
    stages, rho, rho_abs = [], [], []
    for stage, randomized in copies:
        maps = explain(randomized)
        stages.append(stage)
        signed, absolute = map_correlations(original, maps)
        rho.append(signed)
        rho_abs.append(absolute)
        del randomized, maps
    if not stages:
        raise XaibenchError("cascading randomization needs at least one (stage, network) copy; got none")
    return {"stages": stages, "spearman": torch.stack(rho), "spearman_abs": torch.stack(rho_abs)}


def passes_sanity(spearman: torch.Tensor, threshold: float = SANITY_THRESHOLD) -> bool:
    """Whether a method passes the randomization test: the mean Spearman over images after the full cascade (the
    last row of spearman [n_stages, B], or spearman [B] itself) is below `threshold`, i.e. the maps changed once
    the whole network was random. NaN images (a constant map) are left out of the mean; with none left, nothing
    shows that the maps changed and the method fails."""
    last = spearman[-1] if spearman.dim() == 2 else spearman
    mean = float(torch.nanmean(last.double()))
    return not math.isnan(mean) and mean < threshold
