"""Seeded random draws on any device: uniform noise, Gumbel-top-k orderings, tie-broken ranks.

Shared by training (informed masks) and metrics (R-SRG, tie-breaks); imports nothing of the project.
"""
from __future__ import annotations

import torch


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """U(0, 1) of `shape` on `device`, drawn from `generator` (on the generator's own device, then moved)."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source, dtype=dtype).to(device)


def gumbel(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    u = uniform(shape, generator, device).clamp_(1e-12, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def weighted_order(weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Gumbel-top-k: a random order [..., n] of the last axis, drawn without replacement with probability ∝ weights.

    Its first k entries are a weighted sample of k items for every k at once (nested sets).
    """
    keys = torch.log(weights.float().clamp_min(1e-30)) + gumbel(tuple(weights.shape), generator, weights.device)
    return keys.argsort(dim=-1, descending=True)


def descending_order(scores: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Indices [..., n] sorting `scores` from high to low, ties broken uniformly at random by `generator`."""
    shuffle = uniform(tuple(scores.shape), generator, scores.device).argsort(dim=-1)
    shuffled = scores.gather(-1, shuffle)
    order = shuffled.argsort(dim=-1, descending=True, stable=True)
    return shuffle.gather(-1, order)


def minmax(values: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Min-max normalise the last axis to [0, 1] (+eps); a constant row becomes all eps."""
    low = values.amin(dim=-1, keepdim=True)
    high = values.amax(dim=-1, keepdim=True)
    return (values - low) / (high - low).clamp_min(1e-12) + eps
