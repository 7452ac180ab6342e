"""Infidelity (Yeh et al. 2019) as the expectation over random perturbations, by patch removal or Gaussian pixel
noise, as a pure tensor function with its registered class.

The noise is counter-based (splitmix64 of a per-draw key from the generator and the pixel's index), so it is made
chunk by chunk on the inputs' device and does not depend on batch_size, the device, or the other images.
"""
from __future__ import annotations

import math

import torch

from xaibench.errors import XaibenchError
from xaibench.registry import register_metric
from xaibench.sampling import GOLDEN as _GOLDEN  # noqa: F401 (re-exported)
from xaibench.sampling import gaussian_noise

from .curves import ForwardFn, check_shapes
from .faithfulness import (
    blocked_draw,
    check_count,
    output_dtype,
    subset_sums,
    target_probabilities,
    with_unmasked,
)
from .result import MetricResult
from .stateful import Metric

PERTURBATIONS = ("patch", "noise")
def patch_sums(pixels: torch.Tensor, grid: int) -> torch.Tensor:
    """[b, g*g]: the sum of pixels [b, C, H, W] over each patch of the g x g grid (and over the channels)."""
    b, c, h, w = pixels.shape
    return pixels.reshape(b, c, grid, h // grid, grid, w // grid).sum(dim=(1, 3, 5)).reshape(b, grid * grid)


def _noise_terms(forward_fn, inputs, phi, targets, noise_std, n_draws, batch_size, generator):
    """(projections, drops) [B, S] for I ~ N(0, noise_std^2) per pixel and channel: I^T phi with phi per patch
    broadcast to its pixels, and f(x)_t - f(x - I)_t; chunks of batch_size perturbed rows, image by image."""
    n_images, channels, height, width = inputs.shape
    n = phi.shape[1]
    grid = math.isqrt(n)
    if grid * grid != n or height % grid or width % grid:
        raise XaibenchError(f"infidelity with perturbation='noise' needs a square grid of patches that tiles the "
                            f"image; got {n} patches on {height}x{width}")
    device = inputs.device
    source = generator.device if generator is not None else device
    keys = torch.randint(0, 2 ** 62, (n_images * n_draws,), generator=generator, device=source).to(device)
    clean = target_probabilities(forward_fn, inputs, torch.ones(n_images, 1, n, dtype=torch.bool), targets,
                                 batch_size)[:, 0]
    projections = torch.empty(n_images * n_draws, dtype=torch.float64, device=device)
    perturbed = torch.empty(n_images * n_draws, dtype=clean.dtype, device=device)
    targets = targets.to(device)
    with torch.inference_mode():
        for start in range(0, n_images * n_draws, batch_size):
            rows = torch.arange(start, min(start + batch_size, n_images * n_draws), device=device)
            image = rows // n_draws
            noise = gaussian_noise(keys[rows], channels * height * width, output_dtype(inputs))
            noise = (noise_std * noise).view(-1, channels, height, width).to(inputs.dtype)
            keep = torch.ones(rows.numel(), n, dtype=torch.bool, device=device)
            probs = forward_fn(inputs[image] - noise, keep)
            perturbed[rows] = probs.gather(1, targets[image, None]).squeeze(1).to(perturbed.dtype)
            projections[rows] = (patch_sums(noise.to(torch.float64), grid) * phi[image]).sum(dim=-1)
    drops = clean[:, None].to(torch.float64) - perturbed.view(n_images, n_draws).to(torch.float64)
    return projections.view(n_images, n_draws), drops


def _check_options(n_perturbations, perturbation, removal_probability, noise_std, normalize) -> None:
    check_count("n_perturbations", n_perturbations, 1)
    if perturbation not in PERTURBATIONS:
        raise XaibenchError(f"metric option perturbation={perturbation!r}: expected one of {', '.join(PERTURBATIONS)}")
    for name, value, ok in (("removal_probability", removal_probability, lambda v: 0.0 < v <= 1.0),
                            ("noise_std", noise_std, lambda v: v > 0.0 and math.isfinite(v))):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            span = "in (0, 1]" if name == "removal_probability" else "> 0"
            raise XaibenchError(f"metric option {name}={value!r}: expected a number {span}")
    if not isinstance(normalize, bool):
        raise XaibenchError(f"metric option normalize={normalize!r}: expected true or false")


def infidelity(forward_fn: ForwardFn, inputs: torch.Tensor, attributions: torch.Tensor, targets: torch.Tensor, *,
               n_perturbations: int = 100, perturbation: str = "patch", removal_probability: float = 0.5,
               noise_std: float = 0.1, normalize: bool = True, batch_size: int = 256,
               generator: torch.Generator | None = None) -> MetricResult:
    """Infidelity (Yeh, Hsieh, Suggala, Inouye & Ravikumar 2019, "On the (in)fidelity and sensitivity of
    explanations", NeurIPS), per image, estimated over n_perturbations random perturbations I:

        INFD = E_I[(beta * I^T phi - (f(x)_t - f(x - I)_t))^2]

    f the target probability, phi the attribution per patch. Lower is better.
    perturbation: "patch" (default): I removes a random subset of patches, each independently with probability
    removal_probability; I^T phi = the removed patches' attribution sum, f(x - I) = f with them removed by the
    mask token (the removal the model was trained with, and the unit of xaibench's per-patch maps). "noise": I is
    Gaussian noise N(0, noise_std^2) on every pixel and channel, x - I is evaluated with every patch kept, and
    I^T phi = sum_p phi_p * (the sum of I over patch p's pixels and channels), i.e. phi_p broadcast to its pixels.
    removal_probability: default 0.5, every subset of patches equally likely (no removal size preferred; the
    widest spread of I^T phi). noise_std: default 0.1 on xaibench's [-1, 1] pixel scale (5% of the range): the
    output moves far above float rounding while x - I stays near x.
    normalize: scale phi by the optimal beta = E[I^T phi * Δf] / E[(I^T phi)^2] (beta = 0 where the denominator
    is 0), as Yeh et al. report it and Captum's normalize=True computes it; default True, because xaibench's
    methods give maps in unrelated units (probabilities, gradients, attention weights) and the unscaled value
    would rank their units, not their faithfulness. False: beta = 1 (Captum's default).
    Never NaN for finite maps. Cost: 1 + n_perturbations forward inputs per image (n_forward); draws from the
    generator (one uniform [B, S, n] for "patch", one int64 key per draw for "noise"). batch_size: rows per call.
    """
    check_shapes(inputs, attributions, targets)
    _check_options(n_perturbations, perturbation, removal_probability, noise_std, normalize)
    n_images, n = attributions.shape
    phi = attributions.to(device=inputs.device, dtype=torch.float64)
    if perturbation == "patch":
        removed = blocked_draw((n_images, n_perturbations, n), generator, inputs.device, torch.float64,
                               lambda u: u < removal_probability)
        probs = target_probabilities(forward_fn, inputs, with_unmasked(removed), targets, batch_size)
        drops = (probs[:, :1] - probs[:, 1:]).to(torch.float64)
        projections = subset_sums(phi, removed)
    else:
        projections, drops = _noise_terms(forward_fn, inputs, phi, targets, float(noise_std), n_perturbations,
                                          check_count("batch_size", batch_size, 1), generator)
    beta = torch.ones(n_images, dtype=torch.float64, device=inputs.device)
    if normalize:
        denominator = projections.square().sum(dim=-1)
        beta = (projections * drops).sum(dim=-1) / torch.where(denominator != 0, denominator, 1.0)
    value = (beta[:, None] * projections - drops).square().mean(dim=-1)
    return MetricResult({"infidelity": value.to(output_dtype(inputs))}, n_forward=n_images * (1 + n_perturbations))


@register_metric("infidelity")
class Infidelity(Metric):
    """Infidelity (Yeh et al. 2019): the expected squared error between I^T phi (optimally scaled) and the output
    drop f(x) - f(x - I), over random patch removals or Gaussian pixel noise I. Lower is better."""

    main_score = "infidelity"
    higher_is_better = False

    def __init__(self, n_perturbations: int = 100, perturbation: str = "patch", removal_probability: float = 0.5,
                 noise_std: float = 0.1, normalize: bool = True, batch_size: int = 256) -> None:
        super().__init__()
        _check_options(n_perturbations, perturbation, removal_probability, noise_std, normalize)
        self.n_perturbations = n_perturbations
        self.perturbation = perturbation
        self.removal_probability = removal_probability
        self.noise_std = noise_std
        self.normalize = normalize
        self.batch_size = check_count("batch_size", batch_size, 1)

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        return infidelity(forward_fn, inputs, attributions, targets, n_perturbations=self.n_perturbations,
                          perturbation=self.perturbation, removal_probability=self.removal_probability,
                          noise_std=self.noise_std, normalize=self.normalize, batch_size=self.batch_size,
                          generator=generator)
