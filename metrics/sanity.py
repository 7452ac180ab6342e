"""Model parameter randomization test (Adebayo et al. 2018): do a method's maps change when the model does?

The model's stages are re-initialised one after the other from the output down (xaibench/models/randomize.py);
after each, the same images are explained again and compared with the original maps by Spearman rank correlation
per image, on the signed maps and on their absolute values. A method that explains the model must lose that
correlation once the whole network is random; one whose maps stay (an edge detector, the random baseline) fails.
Pure functions: tensors in, tensors out, no files.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.models.randomize import randomized_copies

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


def cascading_randomization(model: nn.Module, make_explainer: Callable[[nn.Module], Any], x: torch.Tensor,
                            targets: torch.Tensor, generator_factory: Callable[[], torch.Generator | None],
                            weight_generator: torch.Generator | None = None) -> dict[str, Any]:
    """Explain x [B, C, H, W] for targets [B] with `model`, then with each cascading randomized copy of it.

    make_explainer(model) -> an explainer (`explain(x, targets, generator=...)`); each explanation gets a fresh
    generator_factory() so a seeded method draws the same numbers for every model. The new weights come from
    weight_generator (None: one more generator_factory(), which must then give a generator). Returns
    {"stages": [stage names, top first], "spearman": [n_stages, B] Spearman(original map, randomized map) per image,
    "spearman_abs": the same on absolute values}, on x's device. `model` itself is left as it was.
    """
    if weight_generator is None:
        weight_generator = generator_factory()
    if weight_generator is None:
        raise XaibenchError("cascading randomization needs a seeded generator for the new weights "
                            "(generator_factory returned None and no weight_generator was given)")
    original = make_explainer(model).explain(x, targets, generator=generator_factory()).attributions
    stages, rho, rho_abs = [], [], []
    for stage, randomized in randomized_copies(model, weight_generator):
        maps = make_explainer(randomized).explain(x, targets, generator=generator_factory()).attributions
        stages.append(stage)
        signed, absolute = map_correlations(original, maps)
        rho.append(signed)
        rho_abs.append(absolute)
        del randomized, maps
    return {"stages": stages, "spearman": torch.stack(rho), "spearman_abs": torch.stack(rho_abs)}


def passes_sanity(spearman: torch.Tensor, threshold: float = SANITY_THRESHOLD) -> bool:
    """Whether a method passes the randomization test: the mean Spearman over images after the full cascade (the
    last row of spearman [n_stages, B], or spearman [B] itself) is below `threshold`, i.e. the maps changed once
    the whole network was random. NaN images (a constant map) are left out of the mean; with none left, nothing
    shows that the maps changed and the method fails."""
    last = spearman[-1] if spearman.dim() == 2 else spearman
    mean = float(torch.nanmean(last.double()))
    return not math.isnan(mean) and mean < threshold
