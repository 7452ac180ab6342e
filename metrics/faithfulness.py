"""Forward-only faithfulness metrics that are not curves: faithfulness correlation, sensitivity-n (per image, as
Ancona et al. define it) and monotonicity correlation, as pure tensor functions with their registered classes.

Each removes random subsets or single patches with the model's mask token (forward_fn(x, keep)), batch_size rows a
call, and compares, within one image, the removed patches' attribution with the drop of the target probability.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from xaibench.errors import XaibenchError
from xaibench.registry import register_metric
from xaibench.sampling import uniform

from .curves import ForwardFn, check_shapes, ranks_of
from .result import MetricResult
from .sanity import average_ranks
from .stateful import Metric

# -- Shared pieces (infidelity.py uses them too) -----------------------------------------------------------------


def check_count(name: str, value: object, low: int, high: int | None = None) -> int:
    """An int option in [low, high]; anything else raises XaibenchError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f"in {low}..{high}" if high is not None else f">= {low}"
        raise XaibenchError(f"metric option {name}={value!r}: expected an int {span}")
    return value


def output_dtype(inputs: torch.Tensor) -> torch.dtype:
    return torch.float64 if inputs.dtype == torch.float64 else torch.float32


def target_probabilities(forward_fn: ForwardFn, inputs: torch.Tensor, keep: torch.Tensor, targets: torch.Tensor,
                         batch_size: int) -> torch.Tensor:
    """Target probability [B, R] of each image under each of its R keep-masks keep bool [B, R, n].

    Rows (image b, mask r) go image by image in chunks of batch_size rows per forward_fn call; only a chunk's
    inputs exist at a time.
    """
    check_count("batch_size", batch_size, 1)
    n_images, n_masks, n = keep.shape
    device = inputs.device
    flat = keep.reshape(n_images * n_masks, n).to(device)
    values = torch.empty(n_images * n_masks, dtype=output_dtype(inputs), device=device)
    targets = targets.to(device)
    with torch.inference_mode():
        for start in range(0, n_images * n_masks, batch_size):
            rows = torch.arange(start, min(start + batch_size, n_images * n_masks), device=device)
            image = rows // n_masks
            probs = forward_fn(inputs[image], flat[rows])
            values[rows] = probs.gather(1, targets[image, None]).squeeze(1).to(values.dtype)
    return values.view(n_images, n_masks)


def with_unmasked(removed: torch.Tensor) -> torch.Tensor:
    """Keep-masks [B, 1 + R, n]: the unmasked input first, then each removal of removed bool [B, R, n]."""
    full = torch.ones_like(removed[:, :1])
    return torch.cat([full, ~removed], dim=1)


def random_subsets(shape: tuple[int, ...], sizes: torch.Tensor, generator: torch.Generator | None,
                   device: torch.device) -> torch.Tensor:
    """removed bool [*shape]: along the last axis (the n patches) a uniformly random subset of `sizes` patches
    (sizes broadcast against shape[1:-1]), drawn without replacement from one uniform draw of `shape`.

    The draw is made block of images by block (image_blocks), so its float values, sort indices and ranks exist
    for one block at a time and only the bool result grows with the number of subsets; on the CPU the blocks'
    consecutive draws are the one draw of `shape` (the same subsets as drawing it at once)."""
    sizes = sizes.to(device)
    return blocked_draw(shape, generator, device, torch.float32, lambda u: ranks_of(u.argsort(dim=-1)) < sizes)


def blocked_draw(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str,
                 dtype: torch.dtype, to_bool) -> torch.Tensor:
    """bool [*shape]: to_bool(U) of a uniform draw U of `shape`, made block of images by block (image_blocks) so
    only one block's floats exist at a time; on the CPU the blocks' consecutive draws are the one draw of shape."""
    out = torch.empty(shape, dtype=torch.bool, device=device)
    for low, high in image_blocks(shape[0], math.prod(shape[1:])):
        out[low:high] = to_bool(uniform((high - low, *shape[1:]), generator, device, dtype))
    return out


BLOCK_ENTRIES = 1 << 16  # draws per block of images (their float64 values and int64 indices: about 1 MiB each)


def image_blocks(n_images: int, per_image: int) -> list[tuple[int, int]]:
    """[low, high) ranges of images of about BLOCK_ENTRIES entries each (at least one image a block): the unit in
    which the random-subset metrics hold their transient per-draw tensors, so memory stays flat in their count."""
    step = max(1, BLOCK_ENTRIES // max(1, per_image))
    return [(low, min(low + step, n_images)) for low in range(0, n_images, step)]


def subset_sums(phi: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """float64 [B, ...]: the attribution sum of each removed subset, removed bool [B, ..., n], phi [B, n] float64;
    block of images by block (no float64 copy of all of removed)."""
    shape = removed.shape
    sums = torch.empty(shape[:-1], dtype=torch.float64, device=removed.device)
    for low, high in image_blocks(shape[0], math.prod(shape[1:])):
        sums[low:high] = (phi[low:high].view(high - low, *([1] * (len(shape) - 2)), shape[-1])
                          * removed[low:high]).sum(dim=-1)
    return sums


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation (float64) along the last axis; NaN where either side is constant (no correlation is
    defined) or not finite."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    a_centred = a - a.mean(dim=-1, keepdim=True)
    b_centred = b - b.mean(dim=-1, keepdim=True)
    constant = ((a_centred.abs().amax(dim=-1) <= 1e-12 * a.abs().amax(dim=-1))
                | (b_centred.abs().amax(dim=-1) <= 1e-12 * b.abs().amax(dim=-1)))
    rho = (a_centred * b_centred).sum(dim=-1) / (a_centred.square().sum(dim=-1) * b_centred.square().sum(dim=-1)).sqrt()
    return torch.where(constant, torch.full_like(rho, float("nan")), rho.clamp(-1.0, 1.0))


def spearman_rows_64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman correlation [B] (float64) of rows of a and b [B, n]: Pearson of the average ranks (ties share
    their mean rank, as scipy.stats.spearmanr); NaN where either row is constant."""
    return pearson_rows(average_ranks(a), average_ranks(b))


def _removal_correlation(forward_fn, inputs, attributions, targets, removed, batch_size):
    """Pearson [B, *] over the last draw axis between each removed subset's attribution sum and the drop
    f(x)_t - f(x without the subset)_t; removed bool [B, ..., S, n]."""
    shape = removed.shape
    flat = removed.reshape(shape[0], -1, shape[-1])
    probs = target_probabilities(forward_fn, inputs, with_unmasked(flat), targets, batch_size)
    drops = (probs[:, :1] - probs[:, 1:]).to(torch.float64).view(shape[:-1])
    phi = attributions.to(device=inputs.device, dtype=torch.float64)
    return pearson_rows(subset_sums(phi, removed), drops)


# -- Faithfulness correlation --------------------------------------------------------------------------------------


def default_subset_size(n_patches: int) -> int:
    """A quarter of the patches, rounded (12 of 49, 49 of 196), at least 1 and below n."""
    return min(max(1, math.floor(n_patches / 4 + 0.5)), max(n_patches - 1, 1))


def faithfulness_correlation(forward_fn: ForwardFn, inputs: torch.Tensor, attributions: torch.Tensor,
                             targets: torch.Tensor, *, n_subsets: int = 100, subset_size: int | None = None,
                             batch_size: int = 256, generator: torch.Generator | None = None) -> MetricResult:
    """Faithfulness correlation (Bhatt, Weller & Moura 2020, "Evaluating and aggregating feature-based model
    explanations", IJCAI), per image:

        mu_F = corr_S( sum_{p in S} a_p ,  f(x)_t - f(x without S)_t )

    Pearson over n_subsets subsets S of subset_size patches, each drawn uniformly without replacement (the subsets
    are independent of each other), S removed with the model's mask token, f the target probability. Higher is
    better (the attribution of a subset predicts what removing it costs).
    n_subsets: the subsets per image (default 100, Quantus's nr_runs: the correlation's standard error is about
    (1 - rho^2)/sqrt(100)). subset_size: patches per subset; None = a quarter of the n patches (12 of 49, 49 of 196):
    enough patches that removing a subset moves the output clearly, few enough that the image stays close to x,
    and random sums at n/4 spread 75% as much as at n/2 (variance ∝ k(n - k)). Must be in 1..n-1.
    NaN where the subsets' attribution sums or drops are all equal (e.g. a constant map; Pearson undefined).
    Cost: 1 + n_subsets forward inputs per image (n_forward). batch_size: rows per forward_fn call.
    """
    check_shapes(inputs, attributions, targets)
    n = attributions.shape[1]
    check_count("n_subsets", n_subsets, 2)
    size = default_subset_size(n) if subset_size is None else check_count("subset_size", subset_size, 1, n - 1)
    removed = random_subsets((inputs.shape[0], n_subsets, n), torch.tensor(size), generator, inputs.device)
    rho = _removal_correlation(forward_fn, inputs, attributions, targets, removed, batch_size)
    return MetricResult({"faithfulness_correlation": rho.to(output_dtype(inputs))},
                        n_forward=inputs.shape[0] * (1 + n_subsets))


# -- Sensitivity-n -------------------------------------------------------------------------------------------------


def default_sizes(n_patches: int) -> list[int]:
    """Five subset sizes spread geometrically from 1 to 80% of the patches, rounded, unique, in 1..n-1:
    1, 3, 6, 16, 39 of 49; 1, 4, 13, 44, 157 of 196."""
    top = 0.8 * n_patches
    sizes = {min(n_patches - 1, max(1, math.floor(top ** (i / 4) + 0.5))) for i in range(5)}
    return sorted(sizes)


def check_sizes(sizes: Sequence[int], n_patches: int | None = None) -> list[int]:
    """The distinct subset sizes, ascending; each an int in 1..n_patches-1 (>= 1 while n is not known)."""
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or not sizes:
        raise XaibenchError(f"metric option sizes={sizes!r}: expected a non-empty list of patch counts")
    high = None if n_patches is None else n_patches - 1
    return sorted({check_count("sizes", size, 1, high) for size in sizes})


def resolve_sizes(sizes: Sequence[int] | None, n_patches: int) -> list[int]:
    if n_patches < 2:
        raise XaibenchError(f"sensitivity_n needs at least 2 patches; got {n_patches}")
    return default_sizes(n_patches) if sizes is None else check_sizes(sizes, n_patches)


def sensitivity_n(forward_fn: ForwardFn, inputs: torch.Tensor, attributions: torch.Tensor, targets: torch.Tensor, *,
                  sizes: Sequence[int] | None = None, n_subsets: int = 50, batch_size: int = 256,
                  generator: torch.Generator | None = None) -> MetricResult:
    """Sensitivity-n (Ancona, Ceolini, Öztireli & Gross 2018, "Towards better understanding of gradient-based
    attribution methods for deep neural networks", ICLR), per image as the paper defines it:

        rho_n = corr_{S, |S| = n}( sum_{p in S} a_p ,  f(x)_t - f(x without S)_t )

    Pearson over n_subsets random subsets of n patches of ONE image (Quantus 0.6 instead correlates across the
    images of its first batch, so its value depends on the batch), for each n in sizes; removal by the mask
    token, f the target probability. Score sensitivity_n = the mean of rho_n over the sizes (higher is better);
    curve sensitivity_n [B, K] = rho_n at x = sizes / n_patches.
    sizes: patch counts in 1..n-1; None = five sizes spread geometrically from 1 to 80% of the patches (the paper
    plots n on a log axis up to about 80% of the features): 1, 3, 6, 16, 39 of 49. n_subsets: subsets per size and
    image (default 50, so the default costs 1 + 5 * 50 = 251 forward inputs per image at 49 patches).
    rho_n is NaN where the subsets' sums or drops are all equal (a constant map; a model blind to n removed
    patches), and the score is NaN if any size is (the curve shows which): a mean over another set of sizes would
    not compare across images.
    Cost: 1 + len(sizes) * n_subsets forward inputs per image. batch_size: rows per forward_fn call.
    """
    check_shapes(inputs, attributions, targets)
    n = attributions.shape[1]
    counts = resolve_sizes(sizes, n)
    check_count("n_subsets", n_subsets, 2)
    size_tensor = torch.tensor(counts).view(-1, 1, 1)
    removed = random_subsets((inputs.shape[0], len(counts), n_subsets, n), size_tensor, generator, inputs.device)
    rho = _removal_correlation(forward_fn, inputs, attributions, targets, removed, batch_size)
    dtype = output_dtype(inputs)
    x = torch.tensor(counts, dtype=dtype, device=inputs.device) / n
    return MetricResult({"sensitivity_n": rho.mean(dim=1).to(dtype)}, {"sensitivity_n": rho.to(dtype)}, x,
                        inputs.shape[0] * (1 + len(counts) * n_subsets))


# -- Monotonicity correlation --------------------------------------------------------------------------------------


def monotonicity_correlation(forward_fn: ForwardFn, inputs: torch.Tensor, attributions: torch.Tensor,
                             targets: torch.Tensor, *, absolute: bool = True, batch_size: int = 256,
                             generator: torch.Generator | None = None) -> MetricResult:
    """Monotonicity correlation (Nguyen & Rodríguez Martínez 2020, "On quantitative aspects of model
    interpretability", arXiv:2007.07584), per image:

        rho = Spearman_p( |a_p| ,  E[(f(x)_t - f(x without p)_t)^2] )

    over the n patches, each removed alone with the model's mask token; f the target probability. Higher is better
    (a larger attribution, a larger effect). The paper's expectation is over random fills of the removed feature
    (Quantus: nr_samples=100 uniform draws); the mask token is deterministic, so one forward per patch is the
    expectation exactly. Quantus's division by f(x)^2 is a positive constant per image and leaves Spearman
    unchanged, so it is left out. absolute: rank |a| (default, as Quantus's abs=True): the effect is a squared
    change, blind to its sign, so a patch that lowers the output strongly counts as important, as |a| does;
    False ranks the signed a. Ties share their average rank (scipy's spearmanr). NaN where the ranked attributions
    or the effects are all equal. Cost: 1 + n forward inputs per image. generator: unused (no draws).
    """
    check_shapes(inputs, attributions, targets)
    if not isinstance(absolute, bool):
        raise XaibenchError(f"metric option absolute={absolute!r}: expected true or false")
    n_images, n = attributions.shape
    single = torch.eye(n, dtype=torch.bool, device=inputs.device).expand(n_images, n, n)
    probs = target_probabilities(forward_fn, inputs, with_unmasked(single), targets, batch_size)
    effects = (probs[:, :1] - probs[:, 1:]).to(torch.float64).square()
    phi = attributions.to(device=inputs.device, dtype=torch.float64)
    rho = spearman_rows_64(phi.abs() if absolute else phi, effects)
    return MetricResult({"monotonicity_correlation": rho.to(output_dtype(inputs))}, n_forward=n_images * (1 + n))


# -- Registered classes --------------------------------------------------------------------------------------------


@register_metric("faithfulness_correlation")
class FaithfulnessCorrelation(Metric):
    """Faithfulness correlation (Bhatt et al. 2020): Pearson, per image, between random subsets' attribution sums
    and the output drops their removal causes."""

    main_score = "faithfulness_correlation"

    def __init__(self, n_subsets: int = 100, subset_size: int | None = None, batch_size: int = 256) -> None:
        super().__init__()
        self.n_subsets = check_count("n_subsets", n_subsets, 2)
        self.subset_size = subset_size if subset_size is None else check_count("subset_size", subset_size, 1)
        self.batch_size = check_count("batch_size", batch_size, 1)

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        return faithfulness_correlation(forward_fn, inputs, attributions, targets, n_subsets=self.n_subsets,
                                        subset_size=self.subset_size, batch_size=self.batch_size, generator=generator)


@register_metric("sensitivity_n")
class SensitivityN(Metric):
    """Sensitivity-n (Ancona et al. 2018), per image: Pearson over random subsets of n patches, averaged over the
    sizes n; the per-size correlations as the curve sensitivity_n."""

    main_score = "sensitivity_n"

    def __init__(self, sizes: Sequence[int] | None = None, n_subsets: int = 50, batch_size: int = 256) -> None:
        super().__init__()
        self.sizes = None if sizes is None else tuple(check_sizes(sizes))
        self.n_subsets = check_count("n_subsets", n_subsets, 2)
        self.batch_size = check_count("batch_size", batch_size, 1)

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        return sensitivity_n(forward_fn, inputs, attributions, targets, sizes=self.sizes, n_subsets=self.n_subsets,
                             batch_size=self.batch_size, generator=generator)


@register_metric("monotonicity_correlation")
class MonotonicityCorrelation(Metric):
    """Monotonicity correlation (Nguyen & Rodríguez Martínez 2020): Spearman, per image, between |a_p| and the
    squared output change of removing patch p alone."""

    main_score = "monotonicity_correlation"

    def __init__(self, absolute: bool = True, batch_size: int = 256) -> None:
        super().__init__()
        if not isinstance(absolute, bool):
            raise XaibenchError(f"metric option absolute={absolute!r}: expected true or false")
        self.absolute = absolute
        self.batch_size = check_count("batch_size", batch_size, 1)

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        return monotonicity_correlation(forward_fn, inputs, attributions, targets, absolute=self.absolute,
                                        batch_size=self.batch_size, generator=generator)
