"""Faithfulness correlation, infidelity, sensitivity-n and monotonicity correlation against Quantus 0.6 and Captum fed
the draws xaibench made (read back from the forward calls), naive loops, and closed forms on an additive model."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.metrics.faithfulness import (
    FaithfulnessCorrelation,
    MonotonicityCorrelation,
    SensitivityN,
    default_sizes,
    default_subset_size,
    faithfulness_correlation,
    monotonicity_correlation,
    sensitivity_n,
)
from xaibench.metrics.infidelity import Infidelity, infidelity
from xaibench.metrics.result import MetricResult
from xaibench.registry import METRICS
from xaibench.sampling import gaussian_noise, splitmix64

if not hasattr(np, "trapz"):  # Quantus 0.6 on NumPy >= 2.4
    np.trapz = np.trapezoid
if not hasattr(np, "NaN"):
    np.NaN = np.nan

CHANNELS, SIDE, PATCH = 3, 8, 2
GRID = SIDE // PATCH
N = GRID * GRID  # 16 patches
TOKEN = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)  # the "mask token": a removed patch's pixel values


def pixels_of(keep: torch.Tensor) -> torch.Tensor:
    """bool [b, 1, H, W] from a patch mask [b, n]."""
    return keep.view(-1, 1, GRID, GRID).repeat_interleave(PATCH, 2).repeat_interleave(PATCH, 3)


class TokenMLP(nn.Module):
    """A small random classifier (3 classes) of the image whose removed patches are set to a fixed token."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(CHANNELS * SIDE * SIDE, 24), nn.Tanh(), nn.Linear(24, 3)).double()
        with torch.no_grad():
            self.net[0].weight.mul_(3.0)
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward_fn(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        assert keep.dtype == torch.bool and keep.shape == (x.shape[0], N)
        self.calls.append((x.clone(), keep.clone()))
        masked = torch.where(pixels_of(keep), x, TOKEN.view(1, -1, 1, 1).to(x))
        return self.net(masked.flatten(1).double()).softmax(-1).to(x.dtype)


def patch_pixel_sums(x: torch.Tensor) -> torch.Tensor:
    """[b, n]: the sum of each patch's pixels and channels."""
    return x.reshape(-1, CHANNELS, GRID, PATCH, GRID, PATCH).sum(dim=(1, 3, 5)).reshape(-1, N)


def additive_forward_fn(inputs: torch.Tensor, weights: torch.Tensor):
    """Two "classes"; class 1 is sum_p keep_p * w_p * (the sum of patch p's pixels + 1), w the weights [B, n] of
    the nearest of `inputs`: exactly additive in the kept patches and linear in the pixels."""
    def forward_fn(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        image = torch.cdist(x.flatten(1), inputs.flatten(1)).argmin(dim=1)
        value = (keep * weights[image] * (patch_pixel_sums(x) + 1.0)).sum(dim=1)
        return torch.stack([torch.zeros_like(value), value], dim=1)
    return forward_fn


def make_batch(n_images: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n_images, CHANNELS, SIDE, SIDE, generator=g, dtype=torch.float64)
    attributions = torch.randn(n_images, N, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 3, (n_images,), generator=g)
    return inputs, attributions, targets


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def recorded_masks(model: TokenMLP, inputs: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """From the forward calls: each image's one unmasked row, and its other keep-masks in the order evaluated."""
    masks: list[list[torch.Tensor]] = [[] for _ in range(len(inputs))]
    unmasked = [0] * len(inputs)
    for x, keep in model.calls:
        for row, mask in zip(x, keep):
            image = next(b for b in range(len(inputs)) if torch.equal(row, inputs[b]))
            if mask.all() and unmasked[image] == 0:
                unmasked[image] += 1
            else:
                masks[image].append(mask)
    assert unmasked == [1] * len(inputs)
    return unmasked, masks


def pearson(xs: list[float], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((a - mx) * (b - my) for a, b in zip(xs, ys))
    sxx, syy = sum((a - mx) ** 2 for a in xs), sum((b - my) ** 2 for b in ys)
    return float("nan") if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def target_probability(model: TokenMLP, image: torch.Tensor, keep: torch.Tensor, target: int) -> float:
    with torch.no_grad():
        return float(model.forward_fn(image[None], keep[None])[0, target])


# -- Faithfulness correlation --------------------------------------------------------------------------------------


def test_faithfulness_correlation_matches_a_naive_loop_over_the_same_subsets():
    model = TokenMLP(seed=1)
    inputs, attributions, targets = make_batch(3, seed=2)
    out = faithfulness_correlation(model.forward_fn, inputs, attributions, targets, n_subsets=20, subset_size=5,
                                   generator=seeded(3))
    _, masks = recorded_masks(model, inputs)
    fresh = TokenMLP(seed=1)
    for b in range(3):
        assert len(masks[b]) == 20 and all(int((~m).sum()) == 5 for m in masks[b])
        full = target_probability(fresh, inputs[b], torch.ones(N, dtype=torch.bool), int(targets[b]))
        sums = [sum(float(attributions[b, p]) for p in range(N) if not m[p]) for m in masks[b]]
        drops = [full - target_probability(fresh, inputs[b], m, int(targets[b])) for m in masks[b]]
        assert float(out.faithfulness_correlation[b]) == pytest.approx(pearson(sums, drops), abs=1e-10)
    assert out.n_forward == 3 * 21


def test_faithfulness_correlation_matches_quantus_with_the_subsets_replayed(monkeypatch):
    """Quantus 0.6.0 at pixel level: a removed pixel is set to a sentinel baseline; the model wrapper reads the
    patches whose pixels all hold it as removed (= the mask token); np.random.choice replays xaibench's subsets
    as the pixel indices (every channel) of their patches."""
    quantus = pytest.importorskip("quantus")
    model = TokenMLP(seed=4)
    inputs, attributions, targets = make_batch(4, seed=5)
    n_subsets, size = 15, 5  # Quantus asserts subset_size < H*W, though it draws from C*H*W features: 5*12 < 64
    ours = faithfulness_correlation(model.forward_fn, inputs, attributions, targets, n_subsets=n_subsets,
                                    subset_size=size, generator=seeded(6)).faithfulness_correlation
    _, masks = recorded_masks(model, inputs)
    sentinel = -9.0
    pixel_index = torch.arange(CHANNELS * SIDE * SIDE).view(CHANNELS, SIDE, SIDE)

    def pixels_removed(mask: torch.Tensor) -> np.ndarray:
        return pixel_index[pixels_of(mask[None])[0].expand(CHANNELS, -1, -1) == 0].numpy()

    calls = iter(range(10 ** 6))

    def replay(n_features, subset, replace=True):
        i = next(calls)  # Quantus draws run by run, image by image
        chosen = pixels_removed(masks[i % len(inputs)][i // len(inputs)])
        assert n_features == CHANNELS * SIDE * SIDE and subset == len(chosen) and not replace
        return chosen

    class Wrapper(nn.Module):
        def forward(self, z):
            z = z.double().view(-1, CHANNELS, GRID, PATCH, GRID, PATCH)
            removed = (z == sentinel).all(dim=(1, 3, 5)).reshape(-1, N)
            return TokenMLP(seed=4).forward_fn(inputs[: len(removed)], ~removed)

    monkeypatch.setattr(np.random, "choice", replay)
    metric = quantus.FaithfulnessCorrelation(nr_runs=n_subsets, subset_size=size * CHANNELS * PATCH * PATCH,
                                             perturb_baseline=sentinel, normalise=False, abs=False,
                                             return_aggregate=False, disable_warnings=True)
    theirs = metric(model=Wrapper().eval(), x_batch=inputs.numpy(), y_batch=targets.numpy(),
                    a_batch=pixels_of(torch.ones(4, N, dtype=torch.bool)).double().numpy()
                    * attributions.view(4, 1, GRID, 1, GRID, 1).repeat_interleave(PATCH, 3)
                    .repeat_interleave(PATCH, 5).reshape(4, 1, SIDE, SIDE).numpy(),
                    softmax=False, channel_first=True)
    np.testing.assert_allclose(ours.numpy(), np.array(theirs), rtol=0, atol=1e-5)


# -- Sensitivity-n -------------------------------------------------------------------------------------------------


def test_sensitivity_n_matches_a_naive_loop_per_image_and_size():
    model = TokenMLP(seed=7)
    inputs, attributions, targets = make_batch(2, seed=8)
    sizes = [1, 4, 11]
    out = sensitivity_n(model.forward_fn, inputs, attributions, targets, sizes=sizes, n_subsets=12,
                        generator=seeded(9))
    _, masks = recorded_masks(model, inputs)
    fresh = TokenMLP(seed=7)
    assert out.curves["sensitivity_n"].shape == (2, 3)
    torch.testing.assert_close(out.x, torch.tensor(sizes, dtype=torch.float64) / N)
    for b in range(2):
        full = target_probability(fresh, inputs[b], torch.ones(N, dtype=torch.bool), int(targets[b]))
        per_size = []
        for k, size in enumerate(sizes):
            subsets = [m for m in masks[b] if int((~m).sum()) == size]
            assert len(subsets) == 12
            sums = [sum(float(attributions[b, p]) for p in range(N) if not m[p]) for m in subsets]
            drops = [full - target_probability(fresh, inputs[b], m, int(targets[b])) for m in subsets]
            per_size.append(pearson(sums, drops))
            assert float(out.curves["sensitivity_n"][b, k]) == pytest.approx(per_size[-1], abs=1e-10)
        assert float(out.sensitivity_n[b]) == pytest.approx(sum(per_size) / 3, abs=1e-10)
    assert out.n_forward == 2 * (1 + 3 * 12)


def test_sensitivity_n_is_per_image_where_quantus_correlates_across_the_batch():
    """Quantus 0.6.0 SensitivityN (indicator input: one pixel per patch, baseline 0) gives one value per step for a
    whole batch, correlated over the batch's images: changing image 2's map changes it; at B=1 it raises.
    xaibench's image-0 score does not move, and on a single additive image it is exactly 1 (pinned)."""
    quantus = pytest.importorskip("quantus")
    model = TokenMLP(seed=10)
    inputs, attributions, targets = make_batch(3, seed=11)

    class Indicator(nn.Module):
        def forward(self, z):
            return model.forward_fn(inputs[: len(z)], z.reshape(len(z), N) > 0.5)

    def run_quantus(maps, n_images):
        metric = quantus.SensitivityN(perturb_baseline=0.0, normalise=False, abs=False, disable_warnings=True,
                                      return_aggregate=False)
        return np.array(metric(model=Indicator().eval(), x_batch=np.ones((n_images, 1, GRID, GRID)),
                               y_batch=targets[:n_images].numpy(), a_batch=maps[:n_images].view(-1, 1, GRID, GRID)
                               .numpy(), softmax=False, channel_first=True), dtype=float)

    other = attributions.clone()
    other[2] = torch.randn(N, generator=seeded(12), dtype=torch.float64)
    before, after = run_quantus(attributions, 3), run_quantus(other, 3)
    assert np.abs(before - after).max() > 1e-3  # image 2's map moved every value Quantus gives
    with pytest.raises(ValueError, match="length at least 2"):
        run_quantus(attributions, 1)  # one image: no correlation across images exists
    ours = [sensitivity_n(model.forward_fn, inputs, maps, targets, n_subsets=10, generator=seeded(13))
            .sensitivity_n[0] for maps in (attributions, other)]
    assert float(ours[0]) == float(ours[1])
    weights = torch.randn(1, N, generator=seeded(14), dtype=torch.float64)
    pinned = sensitivity_n(additive_forward_fn(inputs[:1], weights), inputs[:1],
                           weights * (patch_pixel_sums(inputs[:1]) + 1.0), torch.ones(1, dtype=torch.long),
                           generator=seeded(15))
    torch.testing.assert_close(pinned.curves["sensitivity_n"], torch.ones(1, 5, dtype=torch.float64))


# -- Monotonicity correlation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("absolute", [True, False])
def test_monotonicity_correlation_matches_quantus(absolute):
    """Quantus 0.6.0 MonotonicityCorrelation on the indicator input (one pixel per patch, baseline 0.0 = removed by
    the token), nr_samples=1 (the token is deterministic), features_in_step=1."""
    quantus = pytest.importorskip("quantus")
    model = TokenMLP(seed=16)
    inputs, attributions, targets = make_batch(4, seed=17)
    attributions[1, :4] = attributions[1, 4]  # ties: both sides share average ranks
    ours = monotonicity_correlation(model.forward_fn, inputs, attributions, targets, absolute=absolute)

    class Indicator(nn.Module):
        def forward(self, z):
            return model.forward_fn(inputs[: len(z)], z.reshape(len(z), N) > 0.5)

    metric = quantus.MonotonicityCorrelation(nr_samples=1, features_in_step=1, perturb_baseline=0.0,
                                             abs=absolute, normalise=False, disable_warnings=True)
    theirs = metric(model=Indicator().eval(), x_batch=np.ones((4, 1, GRID, GRID)), y_batch=targets.numpy(),
                    a_batch=attributions.view(4, 1, GRID, GRID).numpy(), softmax=False, channel_first=True)
    np.testing.assert_allclose(ours.monotonicity_correlation.numpy(), np.array(theirs), rtol=0, atol=1e-5)
    assert ours.n_forward == 4 * (1 + N)


# -- Infidelity ----------------------------------------------------------------------------------------------------


def _perturbations_drawn(model: TokenMLP, inputs: torch.Tensor, perturbation: str) -> list[list[torch.Tensor]]:
    """Per image, its perturbations I in the order drawn: the removed-patch indicator ("patch") or x - row
    ("noise", the row assigned to its nearest image)."""
    if perturbation == "patch":
        _, masks = recorded_masks(model, inputs)
        return [[(~m).double() for m in per_image] for per_image in masks]
    drawn: list[list[torch.Tensor]] = [[] for _ in range(len(inputs))]
    clean = [False] * len(inputs)
    for x, keep in model.calls:
        assert keep.all()
        for row in x:
            image = int((inputs - row).flatten(1).norm(dim=1).argmin())
            if torch.equal(row, inputs[image]) and not clean[image]:
                clean[image] = True
            else:
                drawn[image].append(inputs[image] - row)
    return drawn


@pytest.mark.parametrize("perturbation", ["patch", "noise"])
@pytest.mark.parametrize("normalize", [True, False])
def test_infidelity_matches_captum_fed_the_same_perturbations(perturbation, normalize):
    from captum.metrics import infidelity as captum_infidelity

    model = TokenMLP(seed=18)
    inputs, attributions, targets = make_batch(3, seed=19)
    n_draws = 9
    ours = infidelity(model.forward_fn, inputs, attributions, targets, n_perturbations=n_draws,
                      perturbation=perturbation, normalize=normalize, generator=seeded(20), batch_size=7).infidelity
    drawn = _perturbations_drawn(model, inputs, perturbation)
    assert [len(d) for d in drawn] == [n_draws] * 3
    stacked = torch.stack([i for per_image in drawn for i in per_image])  # image-major, as Captum repeats inputs
    fresh = TokenMLP(seed=18)
    if perturbation == "patch":  # Captum on the keep indicator z: z - I = the kept patches
        def forward_func(z):
            return fresh.forward_fn(inputs.repeat_interleave(len(z) // len(inputs), 0), z > 0.5)
        captum_inputs, maps = torch.ones(3, N, dtype=torch.float64), attributions
    else:  # Captum on the pixels; phi per patch broadcast to its pixels and channels
        def forward_func(x):
            return fresh.forward_fn(x, torch.ones(len(x), N, dtype=torch.bool))
        captum_inputs = inputs
        maps = attributions.view(3, 1, GRID, 1, GRID, 1).expand(3, CHANNELS, GRID, PATCH, GRID, PATCH)
        maps = maps.reshape(3, CHANNELS, SIDE, SIDE)

    def perturb_func(expanded):
        assert expanded.shape[0] == stacked.shape[0]
        return stacked, expanded - stacked

    theirs = captum_infidelity(forward_func, perturb_func, captum_inputs, maps, target=targets,
                               n_perturb_samples=n_draws, normalize=normalize)
    torch.testing.assert_close(ours, theirs.double(), rtol=0, atol=1e-5)


def test_infidelity_noise_is_drawn_per_draw_from_its_key():
    keys = torch.tensor([0, 1, 2 ** 61 + 12345], dtype=torch.int64)

    def python_splitmix(z: int) -> int:
        mask = (1 << 64) - 1
        z &= mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    golden = 0x9E3779B97F4A7C15
    for key in keys.tolist():
        for i in (1, 2, 1000):
            counter = (key + i * golden) % (1 << 64)
            signed = counter - (1 << 64) if counter >= 1 << 63 else counter
            got = int(splitmix64(torch.tensor([signed], dtype=torch.int64))) % (1 << 64)
            assert got == python_splitmix(counter)
    for i, value in enumerate(gaussian_noise(torch.tensor([keys[2]]), 5)[0].tolist()):  # Box-Muller, both branches
        bits = python_splitmix((int(keys[2]) + (i // 2 + 1) * golden) % (1 << 64))
        u1, u2 = ((bits >> 32) + 0.5) / 2 ** 32, ((bits & 0xFFFFFFFF) + 0.5) / 2 ** 32
        branch = math.cos if i % 2 == 0 else math.sin
        assert value == pytest.approx(math.sqrt(-2 * math.log(u1)) * branch(2 * math.pi * u2), abs=1e-12)
    narrow = gaussian_noise(torch.tensor([keys[2]]), 1001, torch.float32)
    assert narrow.dtype == torch.float32 and narrow.shape == (1, 1001)
    torch.testing.assert_close(narrow.double(), gaussian_noise(torch.tensor([keys[2]]), 1001), rtol=0, atol=1e-4)
    noise = gaussian_noise(torch.tensor([7, 8], dtype=torch.int64), 200_000)
    assert abs(float(noise.mean())) < 0.01 and abs(float(noise.std()) - 1) < 0.01
    assert abs(float(torch.corrcoef(noise)[0, 1])) < 0.01  # two keys, two independent streams
    assert abs(float(((noise[0] ** 4).mean())) - 3) < 0.05  # Gaussian kurtosis
    torch.testing.assert_close(gaussian_noise(torch.tensor([8]), 50)[0], noise[1, :50], rtol=0, atol=0)


def test_quantus_infidelity_is_deterministic_where_yeh_et_al_take_an_expectation():
    """Quantus 0.6.0 Infidelity (indicator input, patch size 1, baseline 0) deletes blocks cumulatively in raster
    order: n_perturb_samples=1 and 5 give the same value, so its repeats are no samples. xaibench's estimate is a
    random draw: another seed, another value (and on the additive model, see the closed forms, exactly 0)."""
    quantus = pytest.importorskip("quantus")
    model = TokenMLP(seed=31)
    inputs, attributions, targets = make_batch(3, seed=32)

    class Indicator(nn.Module):
        def forward(self, z):
            return model.forward_fn(inputs[: len(z)], z.reshape(len(z), N) > 0.5)

    values = [np.array(quantus.Infidelity(perturb_patch_sizes=[1], n_perturb_samples=repeats, perturb_baseline=0.0,
                                          disable_warnings=True)(
        model=Indicator().eval(), x_batch=np.ones((3, 1, GRID, GRID)), y_batch=targets.numpy(),
        a_batch=attributions.view(3, 1, GRID, GRID).numpy(), softmax=False, channel_first=True))
        for repeats in (1, 5)]
    np.testing.assert_array_equal(values[0], values[1])
    ours = [infidelity(model.forward_fn, inputs, attributions, targets, n_perturbations=5,
                       generator=seeded(seed)).infidelity for seed in (0, 1)]
    assert (ours[0] != ours[1]).all()


def test_float32_inputs_give_float32_scores_close_to_float64():
    model = TokenMLP(seed=33)
    inputs, attributions, targets = make_batch(2, seed=34)
    for function in (faithfulness_correlation, sensitivity_n, monotonicity_correlation, infidelity):
        wide = function(model.forward_fn, inputs, attributions, targets, generator=seeded(0))
        narrow = function(model.forward_fn, inputs.float(), attributions.float(), targets, generator=seeded(0))
        (name, value), = narrow.scores.items()
        assert value.dtype == torch.float32
        torch.testing.assert_close(value.double(), wide.scores[name], rtol=0, atol=1e-4)


# -- Closed forms, shared contract ---------------------------------------------------------------------------------


def _additive_case(n_images=3, seed=21):
    inputs, _, _ = make_batch(n_images, seed)
    weights = torch.randn(n_images, N, generator=seeded(seed + 1), dtype=torch.float64)
    contributions = weights * (patch_pixel_sums(inputs) + 1.0)
    return additive_forward_fn(inputs, weights), inputs, weights, contributions, torch.ones(n_images, dtype=torch.long)


def test_closed_forms_on_an_additive_model():
    """f = sum over kept patches of c_p: the true contributions c score 1 (correlations) and 0 (infidelity);
    shuffled contributions score less; for pixel noise the per-pixel weights w (Δf = sum_p w_p * sum of I over p)
    give infidelity 0."""
    forward_fn, inputs, weights, contributions, targets = _additive_case()
    truth, other = contributions, contributions[:, torch.randperm(N, generator=seeded(5))]
    fc = [faithfulness_correlation(forward_fn, inputs, a, targets, generator=seeded(1)).faithfulness_correlation
          for a in (truth, other)]
    torch.testing.assert_close(fc[0], torch.ones(3, dtype=torch.float64))
    assert (fc[1] < 0.99).all()
    sn = sensitivity_n(forward_fn, inputs, truth, targets, generator=seeded(2))
    torch.testing.assert_close(sn.sensitivity_n, torch.ones(3, dtype=torch.float64))
    mono = monotonicity_correlation(forward_fn, inputs, truth, targets).monotonicity_correlation
    torch.testing.assert_close(mono, torch.ones(3, dtype=torch.float64))
    for normalize in (True, False):
        infd = [infidelity(forward_fn, inputs, a, targets, normalize=normalize, generator=seeded(3)).infidelity
                for a in (truth, other)]
        torch.testing.assert_close(infd[0], torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-20)
        assert (infd[1] > 1e-3).all()
    noise = infidelity(forward_fn, inputs, weights, targets, perturbation="noise", normalize=False,
                       generator=seeded(4)).infidelity
    torch.testing.assert_close(noise, torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-20)
    # normalize=True makes infidelity blind to the map's scale; without it the scale is punished
    scaled = [infidelity(forward_fn, inputs, 10 * truth, targets, normalize=flag, generator=seeded(3)).infidelity
              for flag in (True, False)]
    torch.testing.assert_close(scaled[0], torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-18)
    assert (scaled[1] > 1.0).all()


CASES = [
    ("faithfulness_correlation", faithfulness_correlation, {"n_subsets": 8}),
    ("sensitivity_n", sensitivity_n, {"n_subsets": 6, "sizes": [2, 9]}),
    ("monotonicity_correlation", monotonicity_correlation, {}),
    ("infidelity", infidelity, {"n_perturbations": 7}),
    ("infidelity", infidelity, {"n_perturbations": 7, "perturbation": "noise"}),
]


@pytest.mark.parametrize("name, function, options", CASES)
def test_per_image_seeded_and_chunking_free(name, function, options):
    model = TokenMLP(seed=22)
    inputs, attributions, targets = make_batch(4, seed=23)
    run = lambda x, a, t, seed=0, batch_size=256: function(  # noqa: E731
        model.forward_fn, x, a, t, generator=seeded(seed), batch_size=batch_size, **options).scores[name]
    together = run(inputs, attributions, targets)
    assert together.shape == (4,) and together.dtype == torch.float64 and torch.isfinite(together).all()
    torch.testing.assert_close(run(inputs[:1], attributions[:1], targets[:1]), together[:1], rtol=0, atol=1e-12)
    changed_inputs, changed_maps = inputs.clone(), attributions.clone()
    changed_inputs[1:] = torch.randn(3, CHANNELS, SIDE, SIDE, generator=seeded(24), dtype=torch.float64)
    changed_maps[1:] = -attributions[1:]
    torch.testing.assert_close(run(changed_inputs, changed_maps, targets.flip(0).roll(1))[:1], together[:1], rtol=0,
                               atol=1e-12)  # image 0's score ignores its neighbours (and their targets)
    torch.testing.assert_close(run(inputs, attributions, targets), together, rtol=0, atol=0)
    model.calls.clear()
    torch.testing.assert_close(run(inputs, attributions, targets, batch_size=3), together, rtol=0, atol=1e-12)
    assert max(len(x) for x, _ in model.calls) <= 3
    if name != "monotonicity_correlation":  # it draws nothing
        assert not torch.equal(run(inputs, attributions, targets, seed=1), together)
    model.calls.clear()
    result = function(model.forward_fn, inputs, attributions, targets, generator=seeded(0), **options)
    assert sum(len(x) for x, _ in model.calls) == result.n_forward


def test_undefined_correlations_are_nan_and_infidelity_is_always_defined():
    model = TokenMLP(seed=25)
    inputs, attributions, targets = make_batch(3, seed=26)
    attributions[1] = 0.7  # a constant map: every subset of one size has the same sum
    fc = faithfulness_correlation(model.forward_fn, inputs, attributions, targets, generator=seeded(0))
    sn = sensitivity_n(model.forward_fn, inputs, attributions, targets, n_subsets=5, generator=seeded(0))
    mono = monotonicity_correlation(model.forward_fn, inputs, attributions, targets)
    for scores in (fc.faithfulness_correlation, sn.sensitivity_n, mono.monotonicity_correlation):
        assert torch.isnan(scores[1]) and torch.isfinite(scores[[0, 2]]).all()
    assert torch.isnan(sn.curves["sensitivity_n"][1]).all()
    blind = lambda x, keep: torch.stack([torch.ones(len(x)), torch.zeros(len(x))], 1).double()  # noqa: E731
    assert torch.isnan(faithfulness_correlation(blind, inputs, attributions, targets).scores[
        "faithfulness_correlation"]).all()  # no output drop varies
    attributions[1] = 0.0
    for perturbation in ("patch", "noise"):
        value = infidelity(model.forward_fn, inputs, attributions, targets, perturbation=perturbation,
                           n_perturbations=5, generator=seeded(0)).infidelity
        assert torch.isfinite(value).all()


def test_defaults_fit_the_patch_grids_and_cost_a_few_hundred_forwards_at_49_patches():
    assert default_subset_size(49) == 12 and default_subset_size(196) == 49 and default_subset_size(16) == 4
    assert default_sizes(49) == [1, 3, 6, 16, 39] and default_sizes(196) == [1, 4, 13, 44, 157]
    assert default_sizes(2) == [1]
    costs = {"faithfulness_correlation": 1 + 100, "sensitivity_n": 1 + 5 * 50, "monotonicity_correlation": 1 + 49,
             "infidelity": 1 + 100}
    assert max(costs.values()) <= 300
    side = 14  # 7 x 7 patches of 2 x 2 pixels
    x = torch.randn(1, 1, side, side, dtype=torch.float64)
    a = torch.randn(1, 49, dtype=torch.float64)

    def forward_fn(images, keep):
        value = (keep * a).sum(1) + images.flatten(1).mean(1)
        return torch.stack([value, -value], 1)
    for name, cost in costs.items():
        result = METRICS.create(name)(forward_fn, x, a, torch.zeros(1, dtype=torch.long), generator=seeded(0))
        assert result.n_forward == cost, name


@pytest.mark.parametrize("cls, function", [(FaithfulnessCorrelation, faithfulness_correlation),
                                           (SensitivityN, sensitivity_n),
                                           (MonotonicityCorrelation, monotonicity_correlation),
                                           (Infidelity, infidelity)])
def test_registered_class_shares_options_defaults_and_result(cls, function):
    class_options = {name: p.default for name, p in inspect.signature(cls).parameters.items()}
    function_options = {name: p.default for name, p in inspect.signature(function).parameters.items()
                        if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "generator"}
    assert class_options == function_options
    name = cls.main_score
    assert METRICS.get(name) is cls and cls.group == "faithfulness" and not cls.needs_ground_truth
    assert cls.higher_is_better is (name != "infidelity")
    model = TokenMLP(seed=27)
    inputs, attributions, targets = make_batch(2, seed=28)
    direct = function(model.forward_fn, inputs, attributions, targets, generator=seeded(1))
    registered = METRICS.create(name)(model.forward_fn, inputs, attributions, targets, generator=seeded(1))
    assert type(registered) is MetricResult and list(registered.scores) == [name]
    torch.testing.assert_close(direct.scores[name], registered.scores[name], rtol=0, atol=0)
    assert direct.n_forward == registered.n_forward


@pytest.mark.parametrize("name, options, named", [
    ("faithfulness_correlation", {"n_subsets": 1}, "n_subsets"),
    ("faithfulness_correlation", {"subset_size": 2.5}, "subset_size"),
    ("sensitivity_n", {"sizes": [0, 3]}, "sizes"),
    ("sensitivity_n", {"sizes": "3"}, "sizes"),
    ("sensitivity_n", {"n_subsets": True}, "n_subsets"),
    ("monotonicity_correlation", {"absolute": "yes"}, "absolute"),
    ("infidelity", {"perturbation": "blur"}, "perturbation"),
    ("infidelity", {"removal_probability": 0.0}, "removal_probability"),
    ("infidelity", {"noise_std": -1.0}, "noise_std"),
    ("infidelity", {"normalize": 1}, "normalize"),
    ("infidelity", {"batch_size": 0}, "batch_size"),
])
def test_bad_options_name_themselves(name, options, named):
    with pytest.raises(XaibenchError, match=f"metric option {named}="):
        METRICS.create(name, **options)


def test_sizes_beyond_the_grid_are_refused_at_the_call():
    model = TokenMLP(seed=29)
    inputs, attributions, targets = make_batch(1, seed=30)
    with pytest.raises(XaibenchError, match="sizes=16"):
        sensitivity_n(model.forward_fn, inputs, attributions, targets, sizes=[3, 16])
    with pytest.raises(XaibenchError, match="subset_size=16"):
        faithfulness_correlation(model.forward_fn, inputs, attributions, targets, subset_size=16)


def test_random_subsets_drawn_block_by_block_are_the_one_draw(monkeypatch):
    """The draws are made a block of images at a time (memory flat in the subset count); on the CPU the blocks'
    consecutive draws are the one uniform draw of the whole shape, so the subsets are those of drawing it at once:
    exactly `size` patches each, the ones with the smallest uniforms."""
    from xaibench.metrics import faithfulness

    monkeypatch.setattr(faithfulness, "BLOCK_ENTRIES", 110)  # 2 images (2 x 51 entries) a block
    shape, size = (7, 3, 17), 5
    assert faithfulness.image_blocks(7, 3 * 17) == [(0, 2), (2, 4), (4, 6), (6, 7)]
    removed = faithfulness.random_subsets(shape, torch.tensor(size), torch.Generator().manual_seed(4), "cpu")
    once = torch.rand(shape, generator=torch.Generator().manual_seed(4))
    expected = torch.zeros(shape, dtype=torch.bool).scatter_(-1, once.argsort(dim=-1)[..., :size], True)
    assert torch.equal(removed, expected)
    assert removed.sum(dim=-1).eq(size).all()
    phi = torch.randn(7, 17, dtype=torch.float64)
    assert torch.allclose(faithfulness.subset_sums(phi, removed), (phi[:, None, :] * removed).sum(dim=-1), atol=0,
                          rtol=0)
