"""SRG (Blücher et al., TMLR 2024; SPEC §5) with its MIF/LIF curves, insertion and deletion, as pure tensor functions.

x_k = k/n is the fraction of patches removed; y_k = target probability of the masked input; AUC by trapezoid.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from xaibench.sampling import descending_order, uniform

from .curves import ForwardFn, Steps, check_shapes, keep_curves, ranks_of, resolve_steps, trapezoid_auc


@dataclass(frozen=True)
class SRGResult:
    """Per-image SRG scores [B] and curves [B, K] at x [K] (fraction removed), probability units.

    srg = AUC(LIF) - AUC(MIF); insertion = AUC(LIF) (keeping the most important patches is inserting
    them first, read right to left); deletion = AUC(MIF). With a random ordering (random_baseline=True):
    mrg = AUC(random) - AUC(MIF), lrg = AUC(LIF) - AUC(random), so srg = mrg + lrg.
    """

    x: torch.Tensor
    mif: torch.Tensor
    lif: torch.Tensor
    srg: torch.Tensor
    insertion: torch.Tensor
    deletion: torch.Tensor
    random: torch.Tensor | None = None
    mrg: torch.Tensor | None = None
    lrg: torch.Tensor | None = None
    n_forward: int = 0  # masked inputs evaluated

    def scores(self) -> dict[str, torch.Tensor]:
        names = ("srg", "mrg", "lrg", "insertion", "deletion")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def curves(self) -> dict[str, torch.Tensor]:
        names = ("mif", "lif", "random")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclass(frozen=True)
class CurveResult:
    """One perturbation curve per image [B, K] at x [K] (fraction removed) and its area [B]."""

    x: torch.Tensor
    curve: torch.Tensor
    auc: torch.Tensor
    n_forward: int = 0


def importance_ranks(attributions: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """rank [B, n]: 0 = most important patch; ties broken at random by `generator`."""
    return ranks_of(descending_order(attributions, generator))


def srg(forward_fn: ForwardFn, inputs: torch.Tensor, attributions: torch.Tensor, targets: torch.Tensor, *,
        steps: Steps = None, batch_size: int = 256, generator: torch.Generator | None = None,
        random_baseline: bool = False, autocast: bool | None = None) -> SRGResult:
    """Symmetric relevance gain: AUC(LIF) - AUC(MIF) per image.

    forward_fn(x [b, C, H, W], keep_mask bool [b, n]) -> probabilities [b, n_classes];
    inputs [B, C, H, W]; attributions [B, n]; targets long [B].
    steps: None = every k = 0..n removed; int K = K evenly spaced k including 0 and n; a list = those k.
    MIF removes the k most important patches, LIF the k least important; both share k = 0 and k = n,
    so 2K - 2 masked inputs per image (K - 2 more with random_baseline, which adds mrg and lrg).
    batch_size: masked inputs per forward_fn call. autocast: None = bf16 on CUDA only.
    """
    check_shapes(inputs, attributions, targets)
    n = attributions.shape[1]
    removed = resolve_steps(steps, n, inputs.device)
    # LIF keeps the most important patches longest; MIF the least important.
    lif_rank = importance_ranks(attributions, generator).to(inputs.device)
    orderings = [lif_rank, n - 1 - lif_rank]
    if random_baseline:
        orderings.append(ranks_of(uniform(tuple(attributions.shape), generator, inputs.device).argsort(dim=-1)))
    curves = keep_curves(forward_fn, inputs, torch.stack(orderings, dim=1), removed, targets,
                         batch_size=batch_size, autocast=autocast)
    x = removed.to(curves.dtype) / n
    areas = trapezoid_auc(curves, x)
    lif_auc, mif_auc = areas[:, 0], areas[:, 1]
    inner = int(((removed > 0) & (removed < n)).sum())
    n_forward = inputs.shape[0] * (removed.numel() - inner + len(orderings) * inner)
    extra = {}
    if random_baseline:
        extra = dict(random=curves[:, 2], mrg=areas[:, 2] - mif_auc, lrg=lif_auc - areas[:, 2])
    return SRGResult(x=x, mif=curves[:, 1], lif=curves[:, 0], srg=lif_auc - mif_auc, insertion=lif_auc,
                     deletion=mif_auc, n_forward=n_forward, **extra)


def _single_curve(forward_fn: ForwardFn, inputs: torch.Tensor, attributions: torch.Tensor, targets: torch.Tensor,
                  most_important_first: bool, steps: Steps, batch_size: int, generator: torch.Generator | None,
                  autocast: bool | None) -> CurveResult:
    check_shapes(inputs, attributions, targets)
    n = attributions.shape[1]
    removed = resolve_steps(steps, n, inputs.device)
    rank = importance_ranks(attributions, generator).to(inputs.device)
    if most_important_first:
        rank = n - 1 - rank
    curve = keep_curves(forward_fn, inputs, rank[:, None], removed, targets, batch_size=batch_size,
                        autocast=autocast)[:, 0]
    x = removed.to(curve.dtype) / n
    return CurveResult(x=x, curve=curve, auc=trapezoid_auc(curve, x), n_forward=inputs.shape[0] * removed.numel())


def insertion(forward_fn: ForwardFn, inputs: torch.Tensor, attributions: torch.Tensor, targets: torch.Tensor, *,
              steps: Steps = None, batch_size: int = 256, generator: torch.Generator | None = None,
              autocast: bool | None = None) -> CurveResult:
    """Insertion AUC: patches kept most important first; the same curve as SRG's LIF (x = fraction removed)."""
    return _single_curve(forward_fn, inputs, attributions, targets, False, steps, batch_size, generator, autocast)


def deletion(forward_fn: ForwardFn, inputs: torch.Tensor, attributions: torch.Tensor, targets: torch.Tensor, *,
             steps: Steps = None, batch_size: int = 256, generator: torch.Generator | None = None,
             autocast: bool | None = None) -> CurveResult:
    """Deletion AUC: patches removed most important first; SRG's MIF curve (lower is better)."""
    return _single_curve(forward_fn, inputs, attributions, targets, True, steps, batch_size, generator, autocast)
