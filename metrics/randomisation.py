"""Randomisation beyond the MPRT cascade: random logit (is the map for another class different?) and eMPRT (does the
map lose its structure when the network is random?), running the method again through explain_fn, per image.

Both explain each image once more (for another class, or on the fully randomized copy of the network), in chunks
of batch_size rows; the runner that owns explain_fn counts those explanations (`explained_per_image`).
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F

from xaibench.errors import XaibenchError
from xaibench.registry import register_metric
from xaibench.sampling import uniform

from .curves import ForwardFn, check_shapes
from .faithfulness import check_count, output_dtype, spearman_rows_64
from .result import MetricResult
from .robustness import explained
from .stateful import ExplainFn, Metric

SIMILARITIES = ("spearman", "ssim")


def ssim_grid(a: torch.Tensor, b: torch.Tensor, window: int = 3) -> torch.Tensor:
    """Mean structural similarity [B] (Wang, Bovik, Sheikh & Simoncelli 2004) of maps a, b [B, n] laid out on their
    sqrt(n) x sqrt(n) patch grid, as skimage's structural_similarity(a, b, win_size=window, data_range=R) with its
    defaults (uniform window, sample covariance, K1 = 0.01, K2 = 0.03) and R = max - min over both maps (Quantus's
    choice): the local statistics of every window that lies inside the grid, averaged. NaN where R = 0 (two equal
    constant maps) or a map is not finite."""
    n_images, n = a.shape
    side = math.isqrt(n)
    if side * side != n or window > side:
        raise XaibenchError(f"ssim needs a square grid of patches at least ssim_window={window} wide; got {n} patches")
    x, y = a.to(torch.float64).view(n_images, 1, side, side), b.to(torch.float64).view(n_images, 1, side, side)
    both = torch.cat([a, b], dim=-1).to(torch.float64)
    span = (both.amax(dim=-1) - both.amin(dim=-1)).view(n_images, 1, 1, 1)
    pool = lambda z: F.avg_pool2d(z, window, stride=1)  # noqa: E731
    mean_x, mean_y = pool(x), pool(y)
    unbiased = window * window / (window * window - 1)
    var_x = unbiased * (pool(x * x) - mean_x * mean_x)
    var_y = unbiased * (pool(y * y) - mean_y * mean_y)
    cov = unbiased * (pool(x * y) - mean_x * mean_y)
    c1, c2 = (0.01 * span) ** 2, (0.03 * span) ** 2
    local = ((2 * mean_x * mean_y + c1) * (2 * cov + c2)) / ((mean_x ** 2 + mean_y ** 2 + c1) * (var_x + var_y + c2))
    value = local.mean(dim=(1, 2, 3))
    defined = (span.view(-1) > 0) & torch.isfinite(both).all(dim=-1)
    return torch.where(defined, value, math.nan)


def _explained_in_chunks(explain_fn, inputs, targets, n_patches, batch_size, randomized=False) -> torch.Tensor:
    return torch.cat([explained(explain_fn, inputs[start:start + batch_size], targets[start:start + batch_size],
                                n_patches, randomized) for start in range(0, len(inputs), batch_size)])


def _check_similarity(similarity: object, ssim_window: object) -> None:
    if similarity not in SIMILARITIES:
        raise XaibenchError(f"metric option similarity={similarity!r}: expected one of {', '.join(SIMILARITIES)}")
    if isinstance(ssim_window, bool) or not isinstance(ssim_window, int) or ssim_window < 3 or ssim_window % 2 == 0:
        raise XaibenchError(f"metric option ssim_window={ssim_window!r}: expected an odd int >= 3")


def random_logit(forward_fn: ForwardFn | None, inputs: torch.Tensor, attributions: torch.Tensor,
                 targets: torch.Tensor, explain_fn: ExplainFn, *, similarity: str = "spearman", ssim_window: int = 3,
                 n_classes: int | None = None, batch_size: int = 256,
                 generator: torch.Generator | None = None) -> MetricResult:
    """Random logit test (Sixt, Granz & Landgraf 2020, "When explanations lie: why many modified BP attributions
    fail", ICML): the similarity between the map for the target t and the map for a class c drawn uniformly from
    the n_classes - 1 other classes (from the generator),

        RL(x) = sim(phi(x, t), phi(x, c)),   c = (t + 1 + floor(u (K - 1))) mod K,  u ~ U(0, 1)

    phi(x, t) = attributions, phi(x, c) = explain_fn(x, c). Lower is better: a map that does not change with the
    class does not explain the class.
    similarity: "spearman" (default): Spearman's rank correlation over the n patches, ties at their average rank.
    It is unit- and scale-free (the two maps may differ in scale and still point at the same patches, which the
    test must catch), needs no window or data-range constant, and is what xaibench's MPRT reports. "ssim": the
    mean SSIM on the sqrt(n) x sqrt(n) patch grid (Sixt et al.'s measure; Quantus runs it on the flattened map
    with a 7-wide window) with a ssim_window x ssim_window uniform window; default 3, the smallest, so a 7 x 7 grid
    still has 25 windows (a 7-wide one would be a single global window); R = the range over both maps.
    n_classes: the number of classes K; None (default) = read from forward_fn on the first image (one forward).
    NaN where K < 2 (no other class), or a map is constant (Spearman; for SSIM: both constant and equal) or not
    finite. Cost: 1 explained input per image (the other class), plus 1 forward per call when n_classes is None.
    """
    check_shapes(inputs, attributions, targets)
    _check_similarity(similarity, ssim_window)
    n_images, n = attributions.shape
    device, n_forward = inputs.device, 0
    if n_classes is None:
        with torch.inference_mode():
            n_classes = forward_fn(inputs[:1], torch.ones(1, n, dtype=torch.bool, device=device)).shape[1]
        n_forward = 1
    check_count("n_classes", n_classes, 1)
    draws = uniform((n_images,), generator, device, torch.float64)
    if n_classes < 2:
        return MetricResult({"random_logit": torch.full((n_images,), math.nan, dtype=output_dtype(inputs),
                                                        device=device)}, n_forward=n_forward)
    offset = (draws * (n_classes - 1)).floor().long().clamp(max=n_classes - 2)
    others = (targets.to(device) + 1 + offset) % n_classes
    phi_other = _explained_in_chunks(explain_fn, inputs, others, n, check_count("batch_size", batch_size, 1))
    phi = attributions.to(device=device, dtype=torch.float64)
    if similarity == "spearman":
        finite = torch.isfinite(phi).all(dim=-1) & torch.isfinite(phi_other).all(dim=-1)
        score = torch.where(finite, spearman_rows_64(phi, phi_other), math.nan)
    else:
        score = ssim_grid(phi, phi_other, ssim_window)
    return MetricResult({"random_logit": score.to(output_dtype(inputs))}, n_forward=n_forward)


def histogram_entropy(maps: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Discrete entropy [B] (nats) of each map's histogram, as scipy.stats.entropy(np.histogram(map, n_bins)[0]):
    n_bins equal bins from the map's min to its max (the last one closed), so the map's min-max normalisation is
    built in; a constant map fills one bin (entropy 0)."""
    values = maps.to(torch.float64)
    low, high = values.amin(dim=-1, keepdim=True), values.amax(dim=-1, keepdim=True)
    span = high - low
    constant = span == 0
    scale = n_bins / torch.where(constant, torch.ones_like(span), span)
    index = ((values - low) * scale).floor().long().clamp(0, n_bins - 1)
    edges = torch.arange(n_bins + 1, dtype=torch.float64, device=values.device) * (span / n_bins) + low
    edges[:, -1:] = high  # np.linspace's last edge is the max itself
    index = index - (values < edges.gather(1, index)).long()  # np.histogram's correction of rounding at an edge
    index = index + ((values >= edges.gather(1, index + 1)) & (index != n_bins - 1)).long()
    index = torch.where(constant, torch.zeros_like(index), index)
    counts = torch.zeros(len(values), n_bins, dtype=torch.float64, device=values.device)
    counts.scatter_add_(1, index, torch.ones_like(values))
    share = counts / values.shape[-1]
    return -torch.special.xlogy(share, share).sum(dim=-1)


def emprt(forward_fn: ForwardFn | None, inputs: torch.Tensor, attributions: torch.Tensor, targets: torch.Tensor,
          explain_fn: ExplainFn, *, n_bins: int | None = None, batch_size: int = 256,
          generator: torch.Generator | None = None) -> MetricResult:
    """Efficient MPRT (Hedström, Weber, Krakowczyk, Bareeva, Motzkus, Samek, Lapuschkin & Höhne 2023, "Sanity
    checks revisited: an exploration to repair the model parameter randomisation test", XAI in Action workshop,
    NeurIPS): the relative rise in the map's complexity from the model to its fully randomized copy,

        eMPRT(x) = (H(phi_rand) - H(phi)) / H(phi)

    H the discrete entropy (nats) of the histogram of the map's n patch values in n_bins equal bins between the
    map's min and max (histogram_entropy), phi = attributions, phi_rand = explain_fn(x, t, randomized=True): the
    same method and target on the network with every stage re-initialised (the last copy of the MPRT cascade).
    The authors' implementation (Quantus EfficientMPRT, skip_layers=True) computes this rise; H(phi_rand) / H(phi)
    is the same ranking plus 1. Higher is better: a map that explains the model becomes noise (more complex) when
    the model is noise. Signed maps, no normalisation beyond the histogram's own min-max (Quantus's defaults).
    n_bins: None (default) = round(sqrt(n)), the square-root rule on the n values (7 bins for 49 patches, 14 for
    196); Quantus's default of 100 bins would put almost every one of 49 patches in a bin of its own, so every map
    would have entropy near ln 49 and no rise could show (its rules use the array's ndim, not its size, and end at
    their minimum of 10 bins). NaN where phi is constant (H(phi) = 0) or either map is not finite. Cost: 1
    explained input per image (on the randomized network), no forward; batch_size: rows per explain_fn call.
    """
    check_shapes(inputs, attributions, targets)
    n_images, n = attributions.shape
    bins = _check_bins(n_bins) if n_bins is not None else max(2, round(math.sqrt(n)))
    randomized = _explained_in_chunks(explain_fn, inputs, targets.to(inputs.device), n,
                                      check_count("batch_size", batch_size, 1), randomized=True)
    phi = attributions.to(device=inputs.device, dtype=torch.float64)
    before, after = histogram_entropy(phi, bins), histogram_entropy(randomized, bins)
    defined = (before > 0) & torch.isfinite(phi).all(dim=-1) & torch.isfinite(randomized).all(dim=-1)
    rise = (after - before) / torch.where(defined, before, torch.ones_like(before))
    return MetricResult({"emprt": torch.where(defined, rise, math.nan).to(output_dtype(inputs))})


def _check_bins(n_bins: object) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 2:
        raise XaibenchError(f"metric option n_bins={n_bins!r}: expected an int >= 2, or null for round(sqrt(n))")
    return n_bins


@register_metric("random_logit")
class RandomLogit(Metric):
    """Random logit (Sixt et al. 2020): similarity of the map for the target and for a random other class (lower is
    better)."""

    main_score = "random_logit"
    group = "randomisation"
    higher_is_better = False
    needs_explainer = True
    nan_reason: ClassVar[str] = ("the model has one class, or a map is constant (no rank correlation) or not "
                                 "finite")

    def __init__(self, similarity: str = "spearman", ssim_window: int = 3, n_classes: int | None = None,
                 batch_size: int = 256) -> None:
        super().__init__()
        _check_similarity(similarity, ssim_window)
        if n_classes is not None:
            check_count("n_classes", n_classes, 1)
        self.similarity, self.ssim_window, self.n_classes = similarity, ssim_window, n_classes
        self.batch_size = check_count("batch_size", batch_size, 1)

    def explained_per_image(self) -> int:
        """Inputs given to explain_fn per scored image (the runner counts them as cost.n_explained)."""
        return 1

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None,
                 explain_fn=None) -> MetricResult:
        if explain_fn is None:
            raise ValueError(f"metric {self.main_score!r} re-runs the explainer: give explain_fn")
        return random_logit(forward_fn, inputs, attributions, targets, explain_fn, similarity=self.similarity,
                            ssim_window=self.ssim_window, n_classes=self.n_classes, batch_size=self.batch_size,
                            generator=generator)


@register_metric("emprt")
class EMPRT(Metric):
    """eMPRT (Hedström et al. 2023): the relative rise of the map's histogram entropy from the model to its fully
    randomized copy (higher is better)."""

    main_score = "emprt"
    group = "randomisation"
    higher_is_better = True
    needs_explainer = True
    nan_reason: ClassVar[str] = "the map is constant (zero entropy to rise from) or a map is not finite"

    def __init__(self, n_bins: int | None = None, batch_size: int = 256) -> None:
        super().__init__()
        self.n_bins = _check_bins(n_bins) if n_bins is not None else None
        self.batch_size = check_count("batch_size", batch_size, 1)

    def explained_per_image(self) -> int:
        """Inputs given to explain_fn per scored image (the runner counts them as cost.n_explained)."""
        return 1

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None,
                 explain_fn=None) -> MetricResult:
        if explain_fn is None:
            raise ValueError(f"metric {self.main_score!r} re-runs the explainer: give explain_fn")
        return emprt(forward_fn, inputs, attributions, targets, explain_fn, n_bins=self.n_bins,
                     batch_size=self.batch_size, generator=generator)
