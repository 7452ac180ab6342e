"""R-SRG (Salvage, ICLR 2025; SPEC §6): SRG with kept sets drawn ∝ the attribution instead of cut by its order.

One Gumbel-top-k order per draw gives nested kept sets for every step at once; curves are averaged over draws.
"""
from __future__ import annotations

import torch

from xaibench.sampling import minmax, weighted_order

from .curves import ForwardFn, Steps, check_shapes, keep_curves, ranks_of, resolve_steps, trapezoid_auc
from .removal import with_removal
from .result import MetricResult


def rsrg(forward_fn: ForwardFn, inputs: torch.Tensor, attributions: torch.Tensor, targets: torch.Tensor, *,
         n_draws: int = 4, steps: Steps = None, batch_size: int = 256, generator: torch.Generator | None = None,
         eps: float = 1e-6, autocast: bool | None = None, removal: str = "token") -> MetricResult:
    """Randomised SRG: AUC(R-LIF) - AUC(R-MIF) per image.

    w = minmax(attributions) + eps. R-LIF at k removed keeps n - k patches drawn without replacement
    ∝ w (so the least important tend to go first); R-MIF the same ∝ 1 - w + eps. Each of the n_draws
    draws is one Gumbel-top-k order per image and curve. Cost: 2 + 2 * n_draws * (K - 2) masked inputs
    per image. Arguments as in `srg`; random or constant attributions give R-SRG ≈ 0.
    removal: as in `srg` (metrics/removal.py; default "token", the model's mask token).
    Score: rsrg [B]; curves: rmif, rlif [B, K] (draw means).
    """
    if n_draws < 1:
        raise ValueError(f"n_draws={n_draws}: need at least one draw")
    forward_fn = with_removal(forward_fn, removal, generator=generator)
    check_shapes(inputs, attributions, targets)
    b, n = attributions.shape
    removed = resolve_steps(steps, n, inputs.device)
    unit = minmax(attributions.to(inputs.device).float(), eps=0.0)
    weights = torch.stack([unit + eps, 1.0 - unit + eps], dim=1)  # [B, 2, n]: R-LIF, R-MIF
    order = weighted_order(weights[:, :, None, :].expand(b, 2, n_draws, n), generator)  # [B, 2, D, n]
    keep_ranks = ranks_of(order).view(b, 2 * n_draws, n)
    curves = keep_curves(forward_fn, inputs, keep_ranks, removed, targets, batch_size=batch_size, autocast=autocast)
    curves = curves.view(b, 2, n_draws, -1).mean(dim=2)
    x = removed.to(curves.dtype) / n
    areas = trapezoid_auc(curves, x)
    inner = int(((removed > 0) & (removed < n)).sum())
    n_forward = b * (removed.numel() - inner + 2 * n_draws * inner)
    return MetricResult({"rsrg": areas[:, 0] - areas[:, 1]}, {"rmif": curves[:, 1], "rlif": curves[:, 0]}, x, n_forward)
