"""Robustness: how far a method's map moves when the input moves a little. Max- and avg-sensitivity, the local
Lipschitz estimate and relative input stability run the method again (explain_fn) on inputs perturbed by uniform
noise in an L-inf ball, per image, batch_size perturbed rows a call, as pure tensor functions with their classes.

Every perturbation comes from an int64 key drawn from the generator (one per image and sample) through splitmix64,
so a draw is made chunk by chunk on the inputs' device and does not depend on batch_size or the other images.
The explanations of the perturbed inputs are counted by the explain_fn's owner (the runner's Reexplainer):
each metric explains n_samples perturbed inputs per image (`explained_per_image`); n_forward counts only the
forward inputs the metric itself evaluates (relative input stability's prediction check).
"""
from __future__ import annotations

import math
from typing import Callable, ClassVar

import torch

from xaibench.errors import XaibenchError
from xaibench.registry import register_metric
from xaibench.sampling import splitmix64

from .curves import ForwardFn, check_shapes
from .faithfulness import check_count, output_dtype
from .result import MetricResult
from .stateful import ExplainFn, Metric

DEFAULT_SAMPLES = 10  # Captum's sensitivity_max and LATEC use 10 (the max over samples grows with their number)
DEFAULT_RADIUS = 0.05  # on xaibench's [-1, 1] pixel scale: 2.5% of the range, about 6 of 255 grey levels
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)  # splitmix64's increment as signed int64
NO_SAMPLE_KEPT = "every perturbed input changed the model's prediction (no sample was kept)"
ZERO_MAP = "the map of the unperturbed input is all zeros or not finite (no relative change is defined)"

# term(x, x_perturbed, phi, phi_perturbed) -> [r]: one sample's value from float64 rows [r, C, H, W] and [r, n]
Term = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def uniform_ball(keys: torch.Tensor, shape: tuple[int, ...], radius: float,
                 dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """[len(keys), *shape] of U(-radius, radius): value j of row r from the top 53 bits of splitmix64(keys[r] +
    (j + 1) * golden) as u = (k + 0.5) / 2^53, i.e. radius * (2u - 1) (never exactly +-radius)."""
    n_values = math.prod(shape)
    index = torch.arange(1, n_values + 1, dtype=torch.int64, device=keys.device)
    bits = splitmix64(keys[:, None] + index[None, :] * _GOLDEN)
    unit = (((bits >> 11) & ((1 << 53) - 1)).to(torch.float64) + 0.5) * 2.0 ** -53
    return (radius * (2.0 * unit - 1.0)).to(dtype).view(len(keys), *shape)


def draw_keys(n_images: int, n_samples: int, generator: torch.Generator | None,
              device: torch.device) -> torch.Tensor:
    """One int64 key [B, S] per image and sample, from the generator (image-major: image b's keys come first for
    b = 0, whatever the batch holds after it)."""
    source = generator.device if generator is not None else device
    keys = torch.randint(0, 2 ** 62, (n_images * n_samples,), generator=generator, device=source)
    return keys.to(device).view(n_images, n_samples)


def check_radius(radius: object) -> float:
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not 0.0 < radius < math.inf:
        raise XaibenchError(f"metric option radius={radius!r}: expected a number > 0 (the L-inf radius of the "
                            f"uniform noise, on the pixel scale of the inputs)")
    return float(radius)


def explained(explain_fn: ExplainFn, inputs: torch.Tensor, targets: torch.Tensor, n_patches: int,
              randomized: bool = False) -> torch.Tensor:
    """explain_fn(inputs, targets) as detached float64 [b, n] on the inputs' device, its shape checked."""
    maps = explain_fn(inputs, targets, randomized=True) if randomized else explain_fn(inputs, targets)
    if not isinstance(maps, torch.Tensor) or maps.shape != (len(inputs), n_patches):
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise XaibenchError(f"explain_fn must return attributions [{len(inputs)}, {n_patches}]; got {shape}")
    return maps.detach().to(device=inputs.device, dtype=torch.float64)


def _predictions(forward_fn: ForwardFn, x: torch.Tensor, n_patches: int) -> torch.Tensor:
    with torch.inference_mode():
        return forward_fn(x, torch.ones(len(x), n_patches, dtype=torch.bool, device=x.device)).argmax(dim=-1)


def perturbed_terms(explain_fn: ExplainFn, inputs: torch.Tensor, attributions: torch.Tensor, targets: torch.Tensor,
                    term: Term, *, radius: float, n_samples: int, batch_size: int, generator: torch.Generator | None,
                    forward_fn: ForwardFn | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(values [B, S] float64, kept bool [B, S], forward inputs evaluated) of term on S perturbed copies
    x' = x + U(-radius, radius)^(C x H x W) of each image, explained by explain_fn(x', t) in chunks of batch_size
    rows (image-major). With forward_fn, kept says whether argmax f(x') == argmax f(x) (every patch kept), at
    B + B * S forward inputs; without, every sample is kept and nothing is evaluated."""
    check_shapes(inputs, attributions, targets)
    n_images, n = attributions.shape
    device, shape = inputs.device, tuple(inputs.shape[1:])
    keys = draw_keys(n_images, n_samples, generator, device).flatten()
    phi, targets = attributions.to(device=device, dtype=torch.float64), targets.to(device)
    values = torch.empty(n_images * n_samples, dtype=torch.float64, device=device)
    kept = torch.ones(n_images * n_samples, dtype=torch.bool, device=device)
    clean = None
    if forward_fn is not None:
        clean = torch.cat([_predictions(forward_fn, inputs[start:start + batch_size], n)
                           for start in range(0, n_images, batch_size)])
    for start in range(0, n_images * n_samples, batch_size):
        rows = torch.arange(start, min(start + batch_size, n_images * n_samples), device=device)
        image = rows // n_samples
        perturbed = inputs[image] + uniform_ball(keys[rows], shape, radius, inputs.dtype)
        phi_perturbed = explained(explain_fn, perturbed, targets[image], n)
        values[rows] = term(inputs[image].to(torch.float64), perturbed.to(torch.float64), phi[image], phi_perturbed)
        if clean is not None:
            kept[rows] = _predictions(forward_fn, perturbed, n) == clean[image]
    n_forward = n_images * (1 + n_samples) if forward_fn is not None else 0
    return values.view(n_images, n_samples), kept.view(n_images, n_samples), n_forward


def nanmax_rows(values: torch.Tensor) -> torch.Tensor:
    """Max [B] over the last axis of values [B, S], NaN entries skipped; NaN where a row has no number."""
    defined = ~torch.isnan(values)
    top = torch.where(defined, values, torch.full_like(values, -math.inf)).amax(dim=-1)
    return torch.where(defined.any(dim=-1), top, torch.full_like(top, math.nan))


def _norm(rows: torch.Tensor, ord: float = 2.0) -> torch.Tensor:
    return torch.linalg.vector_norm(rows.flatten(1), ord=ord, dim=1)


def _relative_change(x, x_perturbed, phi, phi_perturbed) -> torch.Tensor:
    """||phi(x') - phi(x)||_2 / ||phi(x)||_2; NaN where phi(x) is all zeros."""
    size = _norm(phi)
    return _norm(phi_perturbed - phi) / torch.where(size > 0, size, torch.full_like(size, math.nan))


def _sensitivity(reduce, explain_fn, inputs, attributions, targets, n_samples, radius, batch_size, generator):
    check_count("n_samples", n_samples, 1)
    values, _, _ = perturbed_terms(explain_fn, inputs, attributions, targets, _relative_change,
                                   radius=check_radius(radius), n_samples=n_samples,
                                   batch_size=check_count("batch_size", batch_size, 1), generator=generator)
    values = torch.where(torch.isfinite(attributions.to(values.device)).all(dim=-1, keepdim=True), values, math.nan)
    return reduce(values).to(output_dtype(inputs))


def max_sensitivity(forward_fn: ForwardFn | None, inputs: torch.Tensor, attributions: torch.Tensor,
                    targets: torch.Tensor, explain_fn: ExplainFn, *, n_samples: int = DEFAULT_SAMPLES,
                    radius: float = DEFAULT_RADIUS, batch_size: int = 256,
                    generator: torch.Generator | None = None) -> MetricResult:
    """Max-sensitivity (Yeh, Hsieh, Suggala, Inouye & Ravikumar 2019, "On the (in)fidelity and sensitivity of
    explanations", NeurIPS), relative, as Captum's sensitivity_max and Quantus's MaxSensitivity compute it:

        SENS_MAX = max_{s <= S} ||phi(x_s) - phi(x)||_2 / ||phi(x)||_2,   x_s = x + U(-r, r)^(C x H x W)

    phi(x) = attributions (the map under test), phi(x_s) = explain_fn(x_s, t): the method run again for the same
    target; ||.||_2 over the n patch values (= Captum's 'fro'). Lower is better. Yeh et al. define the change
    unnormalised; dividing by ||phi(x)|| (as Captum and Quantus do) makes maps in unrelated units comparable.
    n_samples: S perturbed inputs per image; default 10, Captum's and LATEC's (the max grows with S, so their
    numbers compare). radius: r, the L-inf radius of the uniform noise on every pixel and channel; default 0.05 on
    xaibench's [-1, 1] pixel scale (2.5% of the range, about 6 grey levels of 255: the image looks the same, the
    prediction rarely moves, the map's response is far above float32 rounding). x_s is not clipped to [-1, 1]
    (as in Captum and Quantus). NaN where phi(x) is all zeros or not finite (Captum divides by 1 there).
    Cost: S explained inputs per image, no forward (forward_fn unused); batch_size: perturbed rows per call.
    """
    scores = _sensitivity(lambda values: values.amax(dim=-1), explain_fn, inputs, attributions, targets, n_samples,
                          radius, batch_size, generator)
    return MetricResult({"max_sensitivity": scores})


def avg_sensitivity(forward_fn: ForwardFn | None, inputs: torch.Tensor, attributions: torch.Tensor,
                    targets: torch.Tensor, explain_fn: ExplainFn, *, n_samples: int = DEFAULT_SAMPLES,
                    radius: float = DEFAULT_RADIUS, batch_size: int = 256,
                    generator: torch.Generator | None = None) -> MetricResult:
    """Avg-sensitivity (Yeh et al. 2019, as max_sensitivity): the mean over the S samples instead of the max,

        SENS_AVG = (1/S) sum_s ||phi(x_s) - phi(x)||_2 / ||phi(x)||_2   (Quantus's AvgSensitivity).

    Lower is better. Options, defaults, NaN and cost as max_sensitivity (its own draws: the two metrics are two
    units, each explaining S perturbed inputs per image).
    """
    scores = _sensitivity(lambda values: values.mean(dim=-1), explain_fn, inputs, attributions, targets, n_samples,
                          radius, batch_size, generator)
    return MetricResult({"avg_sensitivity": scores})


def local_lipschitz(forward_fn: ForwardFn | None, inputs: torch.Tensor, attributions: torch.Tensor,
                    targets: torch.Tensor, explain_fn: ExplainFn, *, n_samples: int = DEFAULT_SAMPLES,
                    radius: float = DEFAULT_RADIUS, normalize: bool = True, batch_size: int = 256,
                    generator: torch.Generator | None = None) -> MetricResult:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018, "On the robustness of interpretability methods",
    ICML WHI workshop), estimated over S random neighbours:

        L(x) = max_{s <= S} ||phi(x) - phi(x_s)||_2 / ||x - x_s||_2,   x_s = x + U(-r, r)^(C x H x W)

    ||phi||_2 over the n patch values, ||x - x_s||_2 over every pixel and channel. Lower is better.
    normalize: divide phi(x) and phi(x_s) by one factor, max_p |phi(x)_p| (Quantus's normalise_by_max, but per
    image and the same factor for both maps, so a change of the map's scale under the perturbation still counts);
    default True, because xaibench's methods give maps in unrelated units and the raw estimate would rank their
    units. False: the raw estimate (Quantus with normalise=False). n_samples, radius: as max_sensitivity (the same
    uniform ball; Quantus draws N(0, 0.1) here, with 200 samples). NaN where phi(x) is not finite, or all zeros
    with normalize. Cost: S explained inputs per image, no forward; batch_size: perturbed rows per call.
    """
    check_count("n_samples", n_samples, 1)
    _check_flag("normalize", normalize)
    phi = attributions.to(device=inputs.device, dtype=torch.float64)
    scale = phi.abs().amax(dim=-1, keepdim=True) if normalize else torch.ones_like(phi[:, :1])
    scale = torch.where((scale > 0) & torch.isfinite(phi).all(dim=-1, keepdim=True), scale, math.nan)

    def ratio(x, x_perturbed, phi_rows, phi_perturbed):
        image_scale = phi_rows.abs().amax(dim=-1) if normalize else torch.ones_like(phi_rows[:, 0])
        step = _norm(x_perturbed - x)
        return _norm(phi_rows - phi_perturbed) / image_scale / torch.where(step > 0, step, math.nan)

    values, _, _ = perturbed_terms(explain_fn, inputs, phi, targets, ratio, radius=check_radius(radius),
                                   n_samples=n_samples, batch_size=check_count("batch_size", batch_size, 1),
                                   generator=generator)
    scores = torch.where(torch.isnan(scale[:, 0]), math.nan, nanmax_rows(values))
    return MetricResult({"local_lipschitz": scores.to(output_dtype(inputs))})


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise XaibenchError(f"metric option {name}={value!r}: expected true or false")
    return value


def _check_order(p: object) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 1.0 <= p <= math.inf:
        raise XaibenchError(f"metric option p={p!r}: expected a norm order >= 1 (inf for the max norm)")
    return float(p)


def _check_eps(eps_min: object) -> float:
    if isinstance(eps_min, bool) or not isinstance(eps_min, (int, float)) or not 0.0 < eps_min < 1.0:
        raise XaibenchError(f"metric option eps_min={eps_min!r}: expected a number in (0, 1)")
    return float(eps_min)


def relative_input_stability(forward_fn: ForwardFn, inputs: torch.Tensor, attributions: torch.Tensor,
                             targets: torch.Tensor, explain_fn: ExplainFn, *, n_samples: int = DEFAULT_SAMPLES,
                             radius: float = DEFAULT_RADIUS, p: float = 2.0, eps_min: float = 1e-6,
                             batch_size: int = 256, generator: torch.Generator | None = None) -> MetricResult:
    """Relative input stability (Agarwal, Johnson, Pawelczyk, Krishna, Saxena, Zitnik & Lakkaraju 2022,
    "Rethinking stability for attribution-based explanations", ICLR PAIR2Struct workshop):

        RIS(x) = max_{s kept} ||(phi(x) - phi(x_s)) / phi(x)||_p / max(||(x - x_s) / x||_p, eps_min)

    the divisions element-wise (per patch, per pixel and channel), x_s = x + U(-r, r)^(C x H x W), and a sample
    kept only when the model's prediction does not change, argmax f(x_s) == argmax f(x) with every patch kept
    (the paper's neighbourhood). An element of phi(x) or x that is exactly 0 is divided by eps_min instead (the
    convention of OpenXAI and Quantus; such a patch then dominates the score, as the definition implies).
    Lower is better. p: the norm's order; default 2, the paper's experiments. eps_min: default 1e-6, the paper's
    and Quantus's. n_samples, radius: as max_sensitivity. NaN where no sample is kept (every perturbation changed
    the prediction), or phi(x) is not finite; unlike Quantus 0.6 (return_nan_when_prediction_changes=True with
    np.max) one changed sample does not make the whole image NaN. Cost: S explained inputs per image and
    1 + S forward inputs (n_forward, the prediction check); batch_size: rows per call.
    """
    check_count("n_samples", n_samples, 1)
    order, eps = _check_order(p), _check_eps(eps_min)

    def ratio(x, x_perturbed, phi, phi_perturbed):
        change = (phi - phi_perturbed) / torch.where(phi == 0, eps, phi)
        moved = _norm((x - x_perturbed) / torch.where(x == 0, eps, x), order).clamp_min(eps)
        return _norm(change, order) / moved

    values, kept, n_forward = perturbed_terms(explain_fn, inputs, attributions, targets, ratio,
                                              radius=check_radius(radius), n_samples=n_samples,
                                              batch_size=check_count("batch_size", batch_size, 1),
                                              generator=generator, forward_fn=forward_fn)
    values = torch.where(kept & torch.isfinite(attributions.to(values.device)).all(dim=-1, keepdim=True), values,
                         math.nan)
    return MetricResult({"relative_input_stability": nanmax_rows(values).to(output_dtype(inputs))},
                        n_forward=n_forward)


class _PerturbationMetric(Metric):
    """A robustness metric: S perturbed inputs per image, each explained once."""

    group = "robustness"
    higher_is_better = False
    needs_explainer = True
    nan_reason: ClassVar[str] = ZERO_MAP
    function: ClassVar[Callable[..., MetricResult]]

    def __init__(self, n_samples: int = DEFAULT_SAMPLES, radius: float = DEFAULT_RADIUS,
                 batch_size: int = 256) -> None:
        super().__init__()
        self.n_samples = check_count("n_samples", n_samples, 1)
        self.radius = check_radius(radius)
        self.batch_size = check_count("batch_size", batch_size, 1)

    def explained_per_image(self) -> int:
        """Inputs given to explain_fn per scored image (the runner counts them as cost.n_explained)."""
        return self.n_samples

    def _options(self) -> dict:
        return {name: value for name, value in vars(self).items() if not name.startswith("_")}

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None,
                 explain_fn=None) -> MetricResult:
        if explain_fn is None:
            raise ValueError(f"metric {self.main_score!r} re-runs the explainer: give explain_fn")
        return type(self).function(forward_fn, inputs, attributions, targets, explain_fn, generator=generator,
                                   **self._options())


@register_metric("max_sensitivity")
class MaxSensitivity(_PerturbationMetric):
    """Max-sensitivity (Yeh et al. 2019): the largest relative change of the map over S inputs in an L-inf ball."""

    main_score = "max_sensitivity"
    function = staticmethod(max_sensitivity)


@register_metric("avg_sensitivity")
class AvgSensitivity(_PerturbationMetric):
    """Avg-sensitivity (Yeh et al. 2019): the mean relative change of the map over S inputs in an L-inf ball."""

    main_score = "avg_sensitivity"
    function = staticmethod(avg_sensitivity)


@register_metric("local_lipschitz")
class LocalLipschitz(_PerturbationMetric):
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018): max ||phi(x) - phi(x')|| / ||x - x'||."""

    main_score = "local_lipschitz"
    nan_reason = "the map of the unperturbed input is not finite, or all zeros (normalize divides by its max)"
    function = staticmethod(local_lipschitz)

    def __init__(self, n_samples: int = DEFAULT_SAMPLES, radius: float = DEFAULT_RADIUS, normalize: bool = True,
                 batch_size: int = 256) -> None:
        super().__init__(n_samples, radius, batch_size)
        self.normalize = _check_flag("normalize", normalize)


@register_metric("relative_input_stability")
class RelativeInputStability(_PerturbationMetric):
    """Relative input stability (Agarwal et al. 2022): max relative map change over relative input change,
    over the perturbations that keep the prediction."""

    main_score = "relative_input_stability"
    nan_reason = NO_SAMPLE_KEPT + ", or the map of the unperturbed input is not finite"
    function = staticmethod(relative_input_stability)

    def __init__(self, n_samples: int = DEFAULT_SAMPLES, radius: float = DEFAULT_RADIUS, p: float = 2.0,
                 eps_min: float = 1e-6, batch_size: int = 256) -> None:
        super().__init__(n_samples, radius, batch_size)
        self.p = _check_order(p)
        self.eps_min = _check_eps(eps_min)
