"""Seeded random draws on any device: uniform noise, Gumbel-top-k orderings, tie-broken ranks.

Shared by training (informed masks) and metrics (R-SRG, tie-breaks); imports nothing of the project.
"""
from __future__ import annotations

import math

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


# Counter-based draws: a value is a function of (key, index) alone, so it is the same on every device, batch split and
# chunk size (infidelity, robustness and ROAD's imputer noise use them)
GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)  # splitmix64's constants as signed int64 (torch wraps int64 products)
_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX2 = 0x94D049BB133111EB - (1 << 64)


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(counter: torch.Tensor) -> torch.Tensor:
    """splitmix64's output function (Steele, Lea & Flood 2014) of int64 counters, bit for bit (as signed int64)."""
    z = (counter ^ _shift_right(counter, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


def gaussian_noise(keys: torch.Tensor, n_values: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """[len(keys), n_values] standard normal of `dtype`: pair j of row r from h = splitmix64(keys[r] + (j + 1) *
    golden), its high and low 32 bits as uniforms u1, u2 = (k + 0.5) / 2^32 through Box-Muller: values 2j and 2j + 1
    are sqrt(-2 ln u1) * (cos, sin)(2 pi u2)."""
    n_pairs = (n_values + 1) // 2
    index = torch.arange(1, n_pairs + 1, dtype=torch.int64, device=keys.device)
    bits = splitmix64(keys[:, None] + index[None, :] * GOLDEN)
    scale = 2.0 ** -32
    u1 = (_shift_right(bits, 32).to(dtype) + 0.5) * scale
    angle = ((bits & 0xFFFFFFFF).to(dtype) + 0.5) * (scale * 2.0 * math.pi)
    radius = (-2.0 * u1.log()).sqrt()
    pairs = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=-1)
    return pairs.reshape(len(keys), 2 * n_pairs)[:, :n_values]
