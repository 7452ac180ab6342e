"""The engine under every perturbation curve: keep-masks built from ranks on the device, run in chunks.

A curve point is (image b, ordering g, kept count m): the keep-mask is `ranks[b, g] < m`. Masks and
masked inputs are made chunk by chunk, so memory is set by `batch_size`, not by the number of steps.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional, Sequence, Union

import torch

ForwardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Steps = Optional[Union[int, Sequence[int], torch.Tensor]]  # see resolve_steps


def resolve_steps(steps: Steps, n_patches: int,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Removed-patch counts k [K] (long, sorted, unique) for a curve over n patches.

    None: every k = 0..n. An int K: K evenly spaced k including 0 and n (rounded; K >= 2).
    A sequence: exactly those k (each in 0..n).
    """
    if steps is None:
        return torch.arange(n_patches + 1, device=device)
    if isinstance(steps, int) and not isinstance(steps, bool):
        if steps < 2:
            raise ValueError(f"steps={steps}: a curve needs at least 2 points (k = 0 and k = n)")
        return torch.linspace(0, n_patches, steps, dtype=torch.float64).round().long().unique().to(device)
    ks = torch.as_tensor(steps, dtype=torch.long).flatten().unique()
    if ks.numel() < 2:
        raise ValueError(f"steps={steps!r}: a curve needs at least 2 distinct points")
    if ks.min() < 0 or ks.max() > n_patches:
        raise ValueError(f"steps={steps!r}: every k must lie in 0..{n_patches}")
    return ks.to(device)


def ranks_of(order: torch.Tensor) -> torch.Tensor:
    """Inverse permutation along the last axis: rank[..., order[..., j]] = j."""
    positions = torch.arange(order.shape[-1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def _autocast(inputs: torch.Tensor, enabled: bool | None):
    if enabled is None:
        enabled = inputs.is_cuda
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=inputs.device.type, dtype=torch.bfloat16)


def drops_removed_patches(forward_fn: ForwardFn) -> bool:
    """Whether forward_fn belongs to a model with masking "drop" (also under torch.compile): its cost grows with
    the kept count, so the curve engine gives each call rows of one kept count."""
    for fn in (forward_fn, getattr(forward_fn, "_torchdynamo_orig_callable", None)):
        if getattr(getattr(fn, "__self__", None), "masking", None) == "drop":
            return True
    return False


def keep_curves(forward_fn: ForwardFn, inputs: torch.Tensor, keep_ranks: torch.Tensor, removed: torch.Tensor,
                targets: torch.Tensor, *, batch_size: int = 256, autocast: bool | None = None,
                group_by_kept: bool | None = None, pack: bool | None = None) -> torch.Tensor:
    """Target-class probability [B, G, K] of every image under every ordering and step.

    inputs [B, C, H, W]; keep_ranks long [B, G, n]: G orderings per image, rank 0 = kept longest;
    removed long [K]: removed-patch counts k (kept m = n - k); targets long [B].
    The points k = 0 and k = n do not depend on the ordering, so they are evaluated once per image
    and shared by all G curves: B * (2 + G * K_inner) forward inputs in all.
    autocast: None = bf16 autocast on CUDA only. group_by_kept: every forward_fn call gets rows of one kept count
    (equal-length token sequences for a "drop" model); None = when drops_removed_patches(forward_fn). Otherwise
    the rows go image by image, batch_size at a time. pack (with group_by_kept): the rows, ordered by kept count,
    go batch_size at a time, so a call may mix neighbouring counts and the model pads them (a GPU wants full
    calls more than it minds a few pad tokens); None = on CUDA. Each point's value is its own row's output.
    """
    b, g, n = keep_ranks.shape
    device = inputs.device
    removed = removed.to(device)
    kept = n - removed
    shared = (removed == 0) | (removed == n)
    inner = (~shared).nonzero().squeeze(1)
    # Jobs of one image: the shared end points (ordering 0), then every inner step of every ordering.
    job_order = torch.cat([torch.zeros(int(shared.sum()), dtype=torch.long, device=device),
                           torch.arange(g, device=device).repeat_interleave(inner.numel())])
    job_kept = torch.cat([kept[shared], kept[inner].repeat(g)])
    # Where curve point (g, k) finds its job.
    job_of = torch.empty(g, removed.numel(), dtype=torch.long, device=device)
    job_of[:, shared] = torch.arange(int(shared.sum()), device=device)
    job_of[:, inner] = int(shared.sum()) + torch.arange(g * inner.numel(), device=device).view(g, -1)

    n_jobs = job_kept.numel()
    out_dtype = torch.float64 if inputs.dtype == torch.float64 else torch.float32
    probabilities = torch.empty(b * n_jobs, dtype=out_dtype, device=device)
    targets = targets.to(device)
    if group_by_kept is None:
        group_by_kept = drops_removed_patches(forward_fn)
    if pack is None:
        pack = inputs.is_cuda
    with torch.inference_mode(), _autocast(inputs, autocast):
        for rows in (_rows_by_kept(job_kept, b, batch_size, pack) if group_by_kept else
                     (torch.arange(start, min(start + batch_size, b * n_jobs), device=device)
                      for start in range(0, b * n_jobs, batch_size))):
            image, job = rows // n_jobs, rows % n_jobs
            keep_mask = keep_ranks[image, job_order[job]] < job_kept[job, None]
            probs = forward_fn(inputs[image], keep_mask)
            probabilities[rows] = probs.gather(1, targets[image, None]).squeeze(1).to(out_dtype)
    return probabilities.view(b, n_jobs)[:, job_of]


def _rows_by_kept(job_kept: torch.Tensor, n_images: int, batch_size: int, pack: bool = False):
    """Rows (image * n_jobs + job) in chunks of at most batch_size, each chunk of one kept count; pack: the rows
    of every count in ascending count order, batch_size a chunk."""
    n_jobs = job_kept.numel()
    images = torch.arange(n_images, device=job_kept.device)
    counts = ((images[:, None] * n_jobs + (job_kept == m).nonzero().squeeze(1)[None, :]).flatten()
              for m in job_kept.unique().tolist())
    if pack:
        yield from torch.cat(list(counts)).split(batch_size)
        return
    for rows in counts:
        yield from rows.split(batch_size)


def trapezoid_auc(curves: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Area under curves [..., K] at positions x [K] by the trapezoid rule."""
    return torch.trapezoid(curves, x=x.to(curves.dtype), dim=-1)


def check_shapes(inputs: torch.Tensor, attributions: torch.Tensor, targets: torch.Tensor) -> None:
    if attributions.dim() != 2 or inputs.dim() != 4:
        raise ValueError(f"expected inputs [B, C, H, W] and attributions [B, n]; got {tuple(inputs.shape)} "
                         f"and {tuple(attributions.shape)}")
    if not (inputs.shape[0] == attributions.shape[0] == targets.shape[0]):
        raise ValueError(f"batch sizes differ: inputs {inputs.shape[0]}, attributions {attributions.shape[0]}, "
                         f"targets {targets.shape[0]}")
