"""SRG (Blücher et al., TMLR 2024; SPEC §5) with its MIF/LIF curves, insertion and deletion, as pure tensor functions.

x_k = k/n is the fraction of patches removed; y_k = target probability of the masked input; AUC by trapezoid.
"""
from __future__ import annotations

import torch

from xaibench.sampling import descending_order, uniform

from .curves import ForwardFn, Steps, check_shapes, keep_curves, ranks_of, resolve_steps, trapezoid_auc
from .removal import with_removal
from .result import MetricResult


def importance_ranks(attributions: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """rank [B, n]: 0 = most important patch; ties broken at random by `generator`."""
    return ranks_of(descending_order(attributions, generator))


def srg(forward_fn: ForwardFn, inputs: torch.Tensor, attributions: torch.Tensor, targets: torch.Tensor, *,
        steps: Steps = None, batch_size: int = 256, generator: torch.Generator | None = None,
        random_baseline: bool = True, autocast: bool | None = None, removal: str = "token") -> MetricResult:
    """Symmetric relevance gain: AUC(LIF) - AUC(MIF) per image.

    forward_fn(x [b, C, H, W], keep_mask bool [b, n]) -> probabilities [b, n_classes];
    inputs [B, C, H, W]; attributions [B, n]; targets long [B].
    steps: None = every k = 0..n removed; int K = K evenly spaced k including 0 and n; a list = those k.
    MIF removes the k most important patches, LIF the k least important; both share k = 0 and k = n,
    so 2K - 2 masked inputs per image; random_baseline (the default, as the registered class) adds one random
    ordering per image, K - 2 more inputs, its curve `random` and the scores mrg, lrg (srg = mrg + lrg).
    Scores: srg, mrg, lrg, insertion = AUC(LIF), deletion = AUC(MIF) [B]; curves: mif, lif, random [B, K].
    batch_size: masked inputs per forward_fn call. autocast: None = bf16 on CUDA only.
    removal: how a patch is removed (metrics/removal.py): "token" (default) = the model's mask token, the removal
    it was trained with (Blücher et al.'s question of the occlusion strategy is then answered by the others);
    "mean" | "zero" | "blur" | "road" fill the pixels and show the network the filled image (only "road" draws:
    its noise key comes first from `generator`).
    """
    forward_fn = with_removal(forward_fn, removal, generator=generator)
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
    scores = {"srg": lif_auc - mif_auc}
    named_curves = {"mif": curves[:, 1], "lif": curves[:, 0]}
    if random_baseline:
        scores.update(mrg=areas[:, 2] - mif_auc, lrg=lif_auc - areas[:, 2])
        named_curves["random"] = curves[:, 2]
    scores.update(insertion=lif_auc, deletion=mif_auc)
    return MetricResult(scores, named_curves, x, n_forward)


def _single_curve(forward_fn: ForwardFn, inputs: torch.Tensor, attributions: torch.Tensor, targets: torch.Tensor,
                  most_important_first: bool, steps: Steps, batch_size: int, generator: torch.Generator | None,
                  autocast: bool | None, name: str, removal: str = "token") -> MetricResult:
    forward_fn = with_removal(forward_fn, removal, generator=generator)
    check_shapes(inputs, attributions, targets)
    n = attributions.shape[1]
    removed = resolve_steps(steps, n, inputs.device)
    rank = importance_ranks(attributions, generator).to(inputs.device)
    if most_important_first:
        rank = n - 1 - rank
    curve = keep_curves(forward_fn, inputs, rank[:, None], removed, targets, batch_size=batch_size,
                        autocast=autocast)[:, 0]
    x = removed.to(curve.dtype) / n
    return MetricResult({name: trapezoid_auc(curve, x)}, {name: curve}, x, inputs.shape[0] * removed.numel())


def insertion(forward_fn: ForwardFn, inputs: torch.Tensor, attributions: torch.Tensor, targets: torch.Tensor, *,
              steps: Steps = None, batch_size: int = 256, generator: torch.Generator | None = None,
              autocast: bool | None = None, removal: str = "token") -> MetricResult:
    """Insertion AUC: patches kept most important first; the same curve as SRG's LIF (x = fraction removed).
    removal: as in `srg`."""
    return _single_curve(forward_fn, inputs, attributions, targets, False, steps, batch_size, generator, autocast,
                         "insertion", removal)


def deletion(forward_fn: ForwardFn, inputs: torch.Tensor, attributions: torch.Tensor, targets: torch.Tensor, *,
             steps: Steps = None, batch_size: int = 256, generator: torch.Generator | None = None,
             autocast: bool | None = None, removal: str = "token") -> MetricResult:
    """Deletion AUC: patches removed most important first; SRG's MIF curve (lower is better). removal: as in `srg`."""
    return _single_curve(forward_fn, inputs, attributions, targets, True, steps, batch_size, generator, autocast,
                         "deletion", removal)
