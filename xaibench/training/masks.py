"""Keep-masks for OFA training (SPEC §3): uniform masks for l2, informed masks for l3.

Informed masks (our reading of Salvage, ICLR 2025): subset size k from the Shapley kernel
p(k) ∝ 1/(k(n-k)); the k kept patches drawn without replacement ∝ weights by Gumbel-top-k;
half of the guided masks weight by the current attributions, half by their complement, and
a share of masks is uniform so every patch is explored.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from xaibench.sampling import minmax, uniform, weighted_order


def uniform_keep_masks(batch: int, n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """bool [B, n]: per row a keep probability t ~ U(0, 1), then each patch kept with probability t."""
    t = uniform((batch, 1), generator, device)
    return uniform((batch, n), generator, device) < t


def shapley_kernel_sizes(shape: tuple[int, ...], n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """Subset sizes k in 1..n-1 with p(k) ∝ 1/(k(n-k)), long of `shape`."""
    k = torch.arange(1, n, dtype=torch.float64)
    cdf = (1.0 / (k * (n - k))).cumsum(0)
    cdf = (cdf / cdf[-1]).to(device=device, dtype=torch.float32)
    u = uniform(shape, generator, device)
    return torch.searchsorted(cdf, u.reshape(-1).contiguous(), right=True).clamp_(max=n - 2).reshape(shape) + 1


MASK_SIZES = ("shapley", "uniform")


@dataclass(frozen=True)
class BatchShard:
    """Rows start:stop of a global batch of `total` images: the part one process of a DDP training computes.

    Random draws are made for the whole global batch (the same generator on every process) and sliced, so a
    sharded step draws exactly what one process draws for the global batch."""

    start: int
    stop: int
    total: int

    def pad(self, rows: torch.Tensor) -> torch.Tensor:
        """This shard's rows placed in zeros of the global batch's length."""
        full = rows.new_zeros((self.total, *rows.shape[1:]))
        full[self.start:self.stop] = rows
        return full

    def take(self, full: torch.Tensor) -> torch.Tensor:
        return full[self.start:self.stop]


def ofa_keep_masks(attributions: torch.Tensor, n_masks: int, generator: torch.Generator | None,
                   uniform_share: float, sizes: str, paired: bool,
                   shard: BatchShard | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """OFA's masks of one step: uniform keep-masks bool [B, n] (l2) and informed ones bool [B, M, n] (l3).
    With a shard, both are drawn for the global batch (other rows' attributions zero) and this shard's kept."""
    if shard is not None:
        keep_uniform, keep_informed = ofa_keep_masks(shard.pad(attributions), n_masks, generator, uniform_share,
                                                     sizes, paired)
        return shard.take(keep_uniform), shard.take(keep_informed)
    batch, n = attributions.shape
    keep_uniform = uniform_keep_masks(batch, n, generator, attributions.device)
    keep_informed = informed_keep_masks(attributions, n_masks, generator, uniform_share, sizes=sizes, paired=paired)
    return keep_uniform, keep_informed


def informed_keep_masks(attributions: torch.Tensor, n_masks: int, generator: torch.Generator | None,
                        uniform_share: float = 0.25, eps: float = 1e-3, sizes: str = "shapley",
                        paired: bool = False) -> torch.Tensor:
    """bool [B, M, n] from detached attributions [B, n] of the target class.

    sizes="uniform" draws k uniformly from 1..n-1 instead of the Shapley kernel; paired=True makes every
    second mask the complement of the one before it (antithetic pairs, as in FastSHAP's paired sampling).
    """
    batch, n = attributions.shape
    device = attributions.device
    draws = (n_masks + 1) // 2 if paired else n_masks
    if paired:
        base = informed_keep_masks(attributions, draws, generator, uniform_share, eps, sizes, paired=False)
        return torch.stack([base, ~base], dim=2).flatten(1, 2)[:, :n_masks]
    if sizes == "uniform":
        sizes_k = (uniform((batch, n_masks), generator, device) * (n - 1)).long().clamp_(max=n - 2) + 1
    else:
        sizes_k = shapley_kernel_sizes((batch, n_masks), n, generator, device)  # [B, M]
    w = minmax(attributions.detach().float(), eps=0.0)
    n_uniform = int(round(n_masks * uniform_share))
    guided = torch.arange(n_masks, device=device) >= n_uniform
    flip = (torch.arange(n_masks, device=device) - n_uniform) % 2 == 1  # alternate w and 1 - w
    weights = torch.where(flip[None, :, None], 1.0 - w[:, None], w[:, None]) + eps  # [B, M, n]
    weights = torch.where(guided[None, :, None], weights, torch.ones_like(weights))
    order = weighted_order(weights, generator)  # [B, M, n]: most likely kept first
    rank = order.argsort(dim=-1)
    return rank < sizes_k[..., None]
