"""Removal as a choice of the curve metrics (token | mean | zero | blur | road), ROAD, AOPC and IROF, against scipy's
sparse solver on the same linear system, Quantus 0.6.0 (its linear imputation, its IROF fed the patches as
segments), scipy.ndimage's Gaussian filter, and naive loops transcribing the papers' formulas."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import scipy.ndimage
import scipy.sparse
import scipy.sparse.linalg
import torch
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.metrics.curve_scores import AOPC, IROF, aopc, aopc_from_curve, irof
from xaibench.metrics.pixel_flipping import deletion, insertion, srg
from xaibench.metrics.removal import (
    REMOVALS,
    RemovalError,
    _row_keys,
    _TwoLevel,
    gaussian_blur,
    linear_imputation,
    pixel_keep,
    road_impute,
    road_noise,
    with_removal,
)
from xaibench.metrics.road import Road, road
from xaibench.metrics.rsrg import rsrg
from xaibench.metrics.stateful import RSRG, SRG, Deletion, Insertion, score_higher_is_better
from xaibench.registry import METRICS

if not hasattr(np, "trapz"):  # Quantus 0.6 on NumPy >= 2.4
    np.trapz = np.trapezoid
if not hasattr(np, "NaN"):
    np.NaN = np.nan

CHANNELS, SIDE, PATCH = 3, 8, 2
GRID = SIDE // PATCH
N = GRID * GRID  # 16 patches
TOKEN = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
OFFSETS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pixels_of(keep: torch.Tensor) -> torch.Tensor:
    return keep.view(-1, 1, GRID, GRID).repeat_interleave(PATCH, 2).repeat_interleave(PATCH, 3)


class TokenMLP(nn.Module):
    """A small random classifier (3 classes) of the image, removed patches set to a fixed token."""

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


def make_batch(n_images: int, seed: int):
    g = seeded(seed)
    inputs = torch.randn(n_images, CHANNELS, SIDE, SIDE, generator=g, dtype=torch.float64)
    attributions = torch.randn(n_images, N, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 3, (n_images,), generator=g)
    return inputs, attributions, targets


def trapezoid(xs, ys) -> float:
    return sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))


# -- the ROAD linear system, written from its definition, solved by scipy -----------------------------------------

def road_system(image: np.ndarray, removed: np.ndarray):
    """(unknowns {(r, c): i}, matrix, rhs [n, C]) of image [C, H, W] with removed bool [H, W]: each removed pixel
    = the weighted mean of its in-image neighbours (1/6 direct, 1/12 diagonal)."""
    height, width = removed.shape
    unknown = {pixel: i for i, pixel in enumerate(zip(*np.nonzero(removed)))}
    matrix = scipy.sparse.lil_matrix((len(unknown), len(unknown)))
    rhs = np.zeros((len(unknown), image.shape[0]))
    for (r, c), i in unknown.items():
        for dr, dc in OFFSETS:
            rr, cc = r + dr, c + dc
            if not (0 <= rr < height and 0 <= cc < width):
                continue
            weight = 1 / 6 if dr == 0 or dc == 0 else 1 / 12
            matrix[i, i] += weight
            if (rr, cc) in unknown:
                matrix[i, unknown[(rr, cc)]] -= weight
            else:
                rhs[i] += weight * image[:, rr, cc]
    return unknown, matrix, rhs


def spsolve_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The removed pixels of each channel of image [C, H, W] solved jointly by scipy's spsolve."""
    unknown, matrix, rhs = road_system(image, removed)
    solution = scipy.sparse.linalg.spsolve(scipy.sparse.csc_matrix(matrix), rhs).reshape(len(unknown), -1)
    out = image.astype(np.float64).copy()
    for (r, c), i in unknown.items():
        out[:, r, c] = solution[i]
    return out


def random_masks(height: int, width: int, seed: int) -> list[np.ndarray]:
    """Removed-pixel masks: random, a block on the border and in the corner, a ring, all but one pixel."""
    rng = np.random.default_rng(seed)
    masks = [rng.random((height, width)) < p for p in (0.2, 0.6, 0.95)]
    block = np.zeros((height, width), dtype=bool)
    block[: height // 2 + 1, :] = True  # touches three borders
    corner = np.zeros((height, width), dtype=bool)
    corner[-3:, -4:] = True
    ring = np.ones((height, width), dtype=bool)
    ring[2:-2, 2:-2] = False
    almost = np.ones((height, width), dtype=bool)
    almost[height // 3, width // 2] = False
    return masks + [block, corner, ring, almost]


@pytest.mark.parametrize("height, width", [(8, 8), (12, 7), (28, 28)])
def test_linear_imputation_solves_the_road_system_as_scipy_does(height, width):
    masks = random_masks(height, width, seed=height * width)
    x = torch.randn(len(masks), CHANNELS, height, width, generator=seeded(height), dtype=torch.float64) + 2.0
    removed = torch.from_numpy(np.stack(masks))[:, None]
    ours = linear_imputation(x, ~removed)  # every mask in one batched solve
    assert ours.dtype == torch.float64
    for i, mask in enumerate(masks):
        expected = spsolve_imputation(x[i].numpy(), mask)
        np.testing.assert_allclose(ours[i].numpy(), expected, rtol=0, atol=1e-7)
    assert torch.equal(ours[~removed.expand_as(x)], x[~removed.expand_as(x)])  # kept pixels untouched


def test_linear_imputation_matches_quantus_noisy_linear_imputation_without_noise():
    pytest.importorskip("quantus")
    from quantus.functions.perturb_func import noisy_linear_imputation

    masks = random_masks(10, 10, seed=3)
    x = torch.rand(len(masks), CHANNELS, 10, 10, generator=seeded(4), dtype=torch.float64)
    ours = linear_imputation(x, ~torch.from_numpy(np.stack(masks))[:, None])
    for i, mask in enumerate(masks):
        theirs = noisy_linear_imputation(x[i].numpy(), np.flatnonzero(mask.ravel()), noise=0.0)
        np.testing.assert_allclose(ours[i].numpy(), theirs, rtol=0, atol=1e-7)


@pytest.mark.parametrize("height, width", [(10, 9), (17, 17)])
def test_the_preconditioners_coarse_system_is_galerkins(height, width):
    """The two-level preconditioner's coarse matrix is P^T A P (P: 1 on a removed pixel's tile), built densely."""
    removed = np.random.default_rng(height).random((height, width)) < 0.7
    removed[:4, :4] = False  # a tile without removed pixels
    system = _TwoLevel(torch.from_numpy(removed)[None, None].double())
    unknown, matrix, _ = road_system(np.zeros((1, height, width)), removed)
    block, (gh, gw) = system.block, system.grid
    tiles = np.zeros((len(unknown), gh * gw))
    for (r, c), i in unknown.items():
        tiles[i, (r // block) * gw + c // block] = 1.0
    expected = tiles.T @ matrix.toarray() @ tiles
    diagonal = np.diag(expected).copy()
    expected += np.diag((diagonal <= 0) + 1e-12 * diagonal.max())
    factor = system.factor[0].numpy()
    np.testing.assert_allclose(factor @ factor.T, expected, rtol=0, atol=1e-12)


def test_road_imputation_of_a_whole_image_and_of_nothing():
    x = torch.randn(2, CHANNELS, 6, 6, generator=seeded(5), dtype=torch.float64)
    kept = torch.zeros(2, 1, 6, 6, dtype=torch.bool)
    kept[1] = True  # image 0: every pixel removed (no anchor), image 1: nothing removed
    assert torch.equal(linear_imputation(x, kept)[0], torch.zeros(CHANNELS, 6, 6, dtype=torch.float64))
    keys = torch.tensor([11, 12])
    noisy = road_impute(x, kept, keys, noise=0.01)
    torch.testing.assert_close(noisy[0], 0.01 * road_noise(keys, (CHANNELS, 6, 6))[0], rtol=0, atol=0)
    assert torch.equal(noisy[1], x[1])  # no removed pixel, no noise
    with pytest.raises(RemovalError, match="noise keys"):
        road_impute(x, kept, None, noise=0.01)


def test_road_noise_sits_on_the_removed_pixels_and_is_standard_normal():
    x = torch.randn(3, CHANNELS, 16, 16, generator=seeded(6), dtype=torch.float64)
    kept = torch.rand(3, 1, 16, 16, generator=seeded(7)) < 0.5
    keys = torch.tensor([1, 2, 3])
    difference = road_impute(x, kept, keys, noise=0.05) - linear_imputation(x, kept)
    assert torch.equal(difference[kept.expand_as(x)], torch.zeros(int(kept.sum()) * CHANNELS, dtype=torch.float64))
    torch.testing.assert_close(difference, (~kept) * (0.05 * road_noise(keys, (CHANNELS, 16, 16))), rtol=0,
                               atol=1e-15)
    z = road_noise(torch.arange(200), (CHANNELS, 16, 16)).flatten()
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01


def test_a_rows_noise_key_depends_on_its_image_and_mask_only():
    x = torch.randn(4, CHANNELS, SIDE, SIDE, generator=seeded(8), dtype=torch.float64)
    keep = torch.rand(4, N, generator=seeded(9)) < 0.5
    base = torch.tensor([123])
    keys = _row_keys(base, x, keep)
    assert torch.equal(_row_keys(base, x[2:3], keep[2:3]), keys[2:3])
    assert torch.equal(_row_keys(base, x[[3, 0]], keep[[3, 0]]), keys[[3, 0]])
    assert len(set(keys.tolist())) == 4
    flipped = keep.clone()
    flipped[0, 0] = ~flipped[0, 0]
    assert _row_keys(base, x, flipped)[0] != keys[0] and _row_keys(base + 1, x, keep)[0] != keys[0]


# -- the pixel fills and the wrapper -------------------------------------------------------------------------------

def test_pixel_keep_maps_the_patch_grid_and_refuses_what_does_not_tile():
    keep = torch.zeros(1, 4, dtype=torch.bool)
    keep[0, 1] = True  # the top right patch of a 2 x 2 grid
    expected = torch.zeros(1, 1, 6, 4, dtype=torch.bool)
    expected[0, 0, :3, 2:] = True
    assert torch.equal(pixel_keep(keep, 6, 4), expected)
    with pytest.raises(RemovalError, match="5 patches on 6x4"):
        pixel_keep(torch.ones(1, 5, dtype=torch.bool), 6, 4)
    with pytest.raises(RemovalError, match="4 patches on 5x4"):
        pixel_keep(keep, 5, 4)


@pytest.mark.parametrize("sigma, height, width", [(1.0, 8, 8), (2.5, 9, 12), (3.0, 5, 6)])
def test_gaussian_blur_matches_scipy(sigma, height, width):
    x = torch.randn(2, CHANNELS, height, width, generator=seeded(10), dtype=torch.float64)
    radius = [0, 0, min(math.ceil(3 * sigma), height - 1), min(math.ceil(3 * sigma), width - 1)]
    expected = scipy.ndimage.gaussian_filter(x.numpy(), sigma=[0, 0, sigma, sigma], mode="mirror", radius=radius)
    np.testing.assert_allclose(gaussian_blur(x, sigma).numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("removal", ["mean", "zero", "blur", "road"])
def test_the_network_sees_the_filled_image_with_every_patch_kept(removal):
    model = TokenMLP(seed=1)
    x, _, _ = make_batch(2, seed=11)
    keep = torch.rand(2, N, generator=seeded(12)) < 0.5
    forward = with_removal(model.forward_fn, removal, generator=seeded(13))
    forward(x, keep)
    seen, seen_keep = model.calls[-1]
    assert seen_keep.all()
    kept = pixels_of(keep).expand_as(x)
    assert torch.equal(seen[kept], x[kept])
    if removal == "mean":
        expected = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    elif removal == "zero":
        expected = torch.zeros_like(x)
    elif removal == "blur":  # default sigma: half the patch side
        expected = torch.from_numpy(scipy.ndimage.gaussian_filter(x.numpy(), sigma=[0, 0, 1.0, 1.0], mode="mirror",
                                                                  radius=[0, 0, 3, 3]))
    else:
        base = torch.randint(-(2 ** 62), 2 ** 62, (1,), generator=seeded(13))  # the one draw, replayed
        noise = 0.01 * road_noise(_row_keys(base, x, keep), (CHANNELS, SIDE, SIDE))
        expected = torch.stack([torch.from_numpy(spsolve_imputation(x[i].numpy(), ~pixels_of(keep)[i, 0].numpy()))
                                for i in range(2)]) + noise
    torch.testing.assert_close(seen[~kept], expected[~kept], rtol=0, atol=1e-9)


def test_token_is_todays_code_path():
    model = TokenMLP(seed=2)
    assert with_removal(model.forward_fn, "token", generator=seeded(0)) == model.forward_fn
    generator = seeded(3)
    state = generator.get_state()
    with_removal(model.forward_fn, "token", generator=generator)
    with_removal(model.forward_fn, "mean", generator=generator)
    assert torch.equal(generator.get_state(), state)  # only "road" draws
    inputs, attributions, targets = make_batch(3, seed=14)
    for function in (srg, rsrg, insertion, deletion):
        before = function(model.forward_fn, inputs, attributions, targets, generator=seeded(4), steps=5)
        after = function(model.forward_fn, inputs, attributions, targets, generator=seeded(4), steps=5,
                         removal="token")
        for name, values in before.scores.items():
            assert torch.equal(values, after.scores[name]), name


def test_unknown_removals_and_options_are_refused_by_name():
    model = TokenMLP()
    inputs, attributions, targets = make_batch(1, seed=15)
    for call in (lambda: with_removal(model.forward_fn, "gain"),
                 lambda: srg(model.forward_fn, inputs, attributions, targets, removal="Road"),
                 lambda: aopc(model.forward_fn, inputs, attributions, targets, removal=None),
                 lambda: SRG(removal="noise"), lambda: IROF(removal="inpaint")):
        with pytest.raises(ValueError, match="expected one of token, mean, zero, blur, road") as error:
            call()
        assert isinstance(error.value, XaibenchError)  # the CLI shows it as one line, exit 2
    with pytest.raises(RemovalError, match="takes no option noise; its options: sigma"):
        with_removal(model.forward_fn, "blur", noise=0.1)
    with pytest.raises(RemovalError, match="noise=-0.1"):
        with_removal(model.forward_fn, "road", noise=-0.1)
    with pytest.raises(RemovalError, match="sigma=0"):
        with_removal(model.forward_fn, "blur", sigma=0)
    with pytest.raises(RemovalError, match="noise=True"):
        Road(noise=True)


# -- ROAD -----------------------------------------------------------------------------------------------------------

def loop_road(forward_fn, image, attribution, target, ks, base, noise):
    """ROAD's MoRF and LeRF curves of one image by scipy's spsolve and the noise draws replayed, step by step."""
    n = attribution.numel()
    order = sorted(range(n), key=lambda i: -float(attribution[i]))

    def probability(kept_patches):
        keep = torch.zeros(1, n, dtype=torch.bool)
        keep[0, kept_patches] = True
        removed = ~pixels_of(keep)[0, 0].numpy()
        filled = image.clone()
        if removed.all():
            filled = torch.zeros_like(image)
        elif removed.any():
            filled = torch.from_numpy(spsolve_imputation(image.numpy(), removed))
        draws = road_noise(_row_keys(base, image[None], keep), tuple(image.shape))[0]
        filled = filled + noise * torch.from_numpy(removed) * draws
        with torch.no_grad():
            return float(forward_fn(filled[None], torch.ones(1, n, dtype=torch.bool))[0, target])

    morf = [probability(order[k:]) for k in ks]
    lerf = [probability(order[: n - k]) for k in ks]
    xs = [k / n for k in ks]
    return trapezoid(xs, morf), trapezoid(xs, lerf)


@pytest.mark.parametrize("noise, steps", [(0.0, None), (0.01, None), (0.2, [0, 3, 8, 16]), (0.01, [2, 7, 11])])
def test_road_on_3_channel_images_matches_a_loop_over_scipys_solutions(noise, steps):
    """Pins xaibench's ROAD on RGB images, where Quantus 0.6.0's ROAD raises (tests/test_quantus_faults.py)."""
    model = TokenMLP(seed=16)
    inputs, attributions, targets = make_batch(3, seed=17)
    result = road(model.forward_fn, inputs, attributions, targets, noise=noise, steps=steps, generator=seeded(18))
    base = torch.randint(-(2 ** 62), 2 ** 62, (1,), generator=seeded(18))
    ks = list(range(N + 1)) if steps is None else steps
    for i in range(3):
        morf, lerf = loop_road(model.forward_fn, inputs[i], attributions[i], int(targets[i]), ks, base, noise)
        assert abs(float(result.road_morf[i]) - morf) < 1e-7 and abs(float(result.road_lerf[i]) - lerf) < 1e-7
        assert abs(float(result.road[i]) - (lerf - morf)) < 1e-7
    assert result.curves["road_morf"].shape == (3, len(ks)) and set(result.scores) == {"road", "road_morf",
                                                                                        "road_lerf"}


def test_quantus_road_raises_on_the_3_channel_input_xaibench_scores():
    quantus = pytest.importorskip("quantus")
    model = TokenMLP(seed=16)
    inputs, attributions, targets = make_batch(1, seed=17)

    class Unmasked(nn.Module):
        def forward(self, x):
            return model.forward_fn(x.double(), torch.ones(len(x), N, dtype=torch.bool))

    pixel_map = attributions.view(1, 1, GRID, GRID).repeat_interleave(PATCH, 2).repeat_interleave(PATCH, 3)
    with pytest.raises(IndexError, match="out of bounds"):
        quantus.ROAD(percentages=[50], disable_warnings=True)(
            model=Unmasked().eval(), x_batch=inputs.float().numpy(), y_batch=targets.numpy(),
            a_batch=pixel_map.float().numpy(), device="cpu")
    assert torch.isfinite(road(model.forward_fn, inputs, attributions, targets, generator=seeded(0)).road).all()


def test_road_is_srg_with_the_road_removal():
    model = TokenMLP(seed=19)
    inputs, attributions, targets = make_batch(3, seed=20)
    ours = road(model.forward_fn, inputs, attributions, targets, steps=6, generator=seeded(21))
    same = srg(model.forward_fn, inputs, attributions, targets, steps=6, generator=seeded(21), removal="road",
               random_baseline=False)
    for mine, theirs in (("road", "srg"), ("road_morf", "deletion"), ("road_lerf", "insertion")):
        assert torch.equal(ours.scores[mine], same.scores[theirs])


# -- AOPC and IROF --------------------------------------------------------------------------------------------------

def loop_morf(forward_fn, image, attribution, target, ks, removal="token"):
    n = attribution.numel()
    order = sorted(range(n), key=lambda i: -float(attribution[i]))
    values = []
    for k in ks:
        keep = torch.ones(1, n, dtype=torch.bool)
        keep[0, order[:k]] = False
        if removal == "mean":
            filled = torch.where(pixels_of(keep)[0], image, image.mean(dim=(1, 2), keepdim=True))
            keep = torch.ones(1, n, dtype=torch.bool)
        else:
            filled = image
        with torch.no_grad():
            values.append(float(forward_fn(filled[None], keep)[0, target]))
    return values


@pytest.mark.parametrize("steps, removal", [(None, "token"), (5, "token"), ([3, 9, 16], "token"), (None, "mean")])
def test_aopc_is_samek_et_als_mean_drop(steps, removal):
    model = TokenMLP(seed=22)
    inputs, attributions, targets = make_batch(3, seed=23)
    result = aopc(model.forward_fn, inputs, attributions, targets, steps=steps, removal=removal,
                  generator=seeded(24))
    ks = {None: list(range(N + 1)), 5: [0, 4, 8, 12, 16]}.get(steps) if not isinstance(steps, list) else [0] + steps
    for i in range(3):
        curve = loop_morf(model.forward_fn, inputs[i], attributions[i], int(targets[i]), ks, removal)
        expected = sum(curve[0] - value for value in curve) / len(ks)  # 1/(L+1) sum_{k=0..L} f(x) - f(x^(k))
        assert abs(float(result.aopc[i]) - expected) < 1e-12
    torch.testing.assert_close(aopc_from_curve(deletion(model.forward_fn, inputs, attributions, targets,
                                                        removal=removal, generator=seeded(24)).curve),
                               aopc(model.forward_fn, inputs, attributions, targets, removal=removal,
                                    generator=seeded(24)).aopc, rtol=0, atol=0)


@pytest.mark.parametrize("steps, removal", [(None, "token"), (5, "token"), ([3, 9], "token"), (None, "mean")])
def test_irof_is_the_area_over_the_normalised_morf_curve(steps, removal):
    model = TokenMLP(seed=25)
    inputs, attributions, targets = make_batch(3, seed=26)
    result = irof(model.forward_fn, inputs, attributions, targets, steps=steps, removal=removal,
                  generator=seeded(27))
    ks = {None: list(range(N + 1)), 5: [0, 4, 8, 12, 16]}.get(steps) if not isinstance(steps, list) else [0] + steps
    for i in range(3):
        curve = loop_morf(model.forward_fn, inputs[i], attributions[i], int(targets[i]), ks, removal)
        ratio = [value / curve[0] for value in curve]
        expected = trapezoid([k / N for k in ks], [1 - y for y in ratio])
        assert abs(float(result.irof[i]) - expected) < 1e-12


def quantus_irof(model, inputs, attributions, targets, monkeypatch):
    """Quantus 0.6.0 IROF with one segment per patch: the image is the patch grid (a pixel per patch, 1 channel,
    so Quantus' 3-channel fault stays out), removed to 0.0; the model reads a pixel > 0.5 as a kept patch."""
    quantus = pytest.importorskip("quantus")
    from quantus.metrics.faithfulness import irof as irof_module

    grid = math.isqrt(attributions.shape[1])
    monkeypatch.setattr(irof_module.utils, "get_superpixel_segments",
                        lambda img, segmentation_method: np.arange(grid * grid).reshape(grid, grid))

    class Indicator(nn.Module):
        def forward(self, z):
            return model(inputs[: len(z)], z.reshape(len(z), -1) > 0.5)

    metric = quantus.IROF(perturb_baseline=0.0, normalise=False, abs=False, return_aggregate=False,
                          disable_warnings=True)
    return np.array(metric(model=Indicator().eval(), x_batch=np.ones((len(inputs), 1, grid, grid)),
                           y_batch=targets.numpy(), a_batch=attributions.view(-1, 1, grid, grid).numpy(),
                           softmax=False, channel_first=True, device="cpu"), dtype=float)


def test_irof_agrees_with_quantus_fed_the_patches_as_segments(monkeypatch):
    """On the same curve Quantus gives n * IROF + (1 + y_1) / 2: it integrates y_1..y_n with dx = 1 (k = 0 left
    out) and subtracts that from n."""
    model = TokenMLP(seed=28)
    inputs, attributions, targets = make_batch(4, seed=29)
    theirs = quantus_irof(model.forward_fn, inputs, attributions, targets, monkeypatch)
    ours = irof(model.forward_fn, inputs, attributions, targets, generator=seeded(30))
    np.testing.assert_allclose(theirs, N * ours.irof.numpy() + (1 + ours.curves["irof"][:, 1].numpy()) / 2,
                               rtol=0, atol=1e-5)


def test_quantus_irof_grows_with_the_number_of_segments_where_xaibenchs_does_not(monkeypatch):
    """A model whose probability falls linearly in the removed fraction, 0.95 -> 0.05: the area over the normalised
    curve is 1 - (0.95 - 0.45) / 0.95 = 0.4737 at any grid. Quantus: 8.5 at 16 segments, 31.3 at 64 (pinned)."""
    def linear(x, keep):
        kept = keep.to(torch.float64).mean(dim=1)
        q = 0.05 + 0.9 * kept
        return torch.stack([1 - q, q], dim=1)

    values = {}
    for n in (16, 64):
        inputs = torch.zeros(2, 1, math.isqrt(n), math.isqrt(n), dtype=torch.float64)
        attributions = torch.randn(2, n, generator=seeded(n), dtype=torch.float64)
        targets = torch.ones(2, dtype=torch.long)
        ours = irof(linear, inputs, attributions, targets, generator=seeded(0)).irof
        torch.testing.assert_close(ours, torch.full((2,), 1 - 0.5 / 0.95, dtype=torch.float64), rtol=0, atol=1e-12)
        values[n] = quantus_irof(linear, inputs, attributions, targets, monkeypatch)
    for n, expected in ((16, 16 * (1 - 0.5 / 0.95) + (1 + (0.95 - 0.9 / 16) / 0.95) / 2),
                        (64, 64 * (1 - 0.5 / 0.95) + (1 + (0.95 - 0.9 / 64) / 0.95) / 2)):
        np.testing.assert_allclose(values[n], expected, rtol=0, atol=1e-5)
    assert round(float(values[16][0]), 1) == 8.5 and round(float(values[64][0]), 1) == 31.3


def test_irof_is_nan_where_the_unperturbed_score_is_zero():
    def dead(x, keep):
        return torch.stack([torch.ones(len(x)), torch.zeros(len(x))], dim=1).to(x.dtype)

    inputs, attributions, _ = make_batch(2, seed=31)
    assert torch.isnan(irof(dead, inputs, attributions, torch.ones(2, dtype=torch.long)).irof).all()


# -- contract: per image, seeded, chunking-free, cost counted --------------------------------------------------------

CASES = [("road", road, {"steps": 6}), ("road", road, {"steps": [0, 5, 16], "noise": 0.0}),
         ("aopc", aopc, {}), ("irof", irof, {"steps": 5}), ("aopc", aopc, {"removal": "road", "steps": 4}),
         ("irof", irof, {"removal": "blur"})]
CASES += [(name, function, {"removal": removal, "steps": 5})
          for removal in ("mean", "zero", "blur", "road")
          for name, function in (("srg", srg), ("rsrg", rsrg), ("insertion", insertion), ("deletion", deletion))]


@pytest.mark.parametrize("name, function, options", CASES)
def test_per_image_seeded_and_chunking_free(name, function, options):
    model = TokenMLP(seed=32)
    inputs, attributions, targets = make_batch(4, seed=33)
    attributions[:, :4] = 0.0  # ties: the generator breaks them

    def run(x, a, t, seed=0, batch_size=256):
        return function(model.forward_fn, x, a, t, generator=seeded(seed), batch_size=batch_size, **options)

    together = run(inputs, attributions, targets).scores[name]
    assert together.shape == (4,) and torch.isfinite(together).all()
    torch.testing.assert_close(run(inputs[:1], attributions[:1], targets[:1]).scores[name], together[:1], rtol=0,
                               atol=1e-12)
    changed_inputs, changed_maps = inputs.clone(), attributions.clone()
    changed_inputs[1:] = torch.randn(3, CHANNELS, SIDE, SIDE, generator=seeded(34), dtype=torch.float64)
    changed_maps[1:] = -attributions[1:]
    torch.testing.assert_close(run(changed_inputs, changed_maps, targets.flip(0).roll(1)).scores[name][:1],
                               together[:1], rtol=0, atol=1e-12)  # image 0 ignores its neighbours
    assert torch.equal(run(inputs, attributions, targets).scores[name], together)
    model.calls.clear()
    torch.testing.assert_close(run(inputs, attributions, targets, batch_size=3).scores[name], together, rtol=0,
                               atol=1e-12)
    assert max(len(x) for x, _ in model.calls) <= 3
    assert not torch.equal(run(inputs, attributions, targets, seed=1).scores[name], together)
    model.calls.clear()
    result = run(inputs, attributions, targets)
    assert sum(len(x) for x, _ in model.calls) == result.n_forward


# -- registration and a test that could fail ------------------------------------------------------------------------

@pytest.mark.parametrize("cls, function", [(Road, road), (AOPC, aopc), (IROF, irof), (SRG, srg), (RSRG, rsrg),
                                           (Insertion, insertion), (Deletion, deletion)])
def test_class_and_function_share_options_and_results(cls, function):
    class_options = {name: p.default for name, p in inspect.signature(cls).parameters.items()}
    function_options = {name: p.default for name, p in inspect.signature(function).parameters.items()
                        if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "generator"}
    assert class_options == function_options
    if "removal" in class_options:
        assert class_options["removal"] == "token"
    model = TokenMLP(seed=35)
    inputs, attributions, targets = make_batch(2, seed=36)
    options = {"steps": 4}
    from_class = cls(**options)(model.forward_fn, inputs, attributions, targets, generator=seeded(37))
    from_function = function(model.forward_fn, inputs, attributions, targets, generator=seeded(37), **options)
    for key, values in from_function.scores.items():
        assert torch.equal(from_class.scores[key], values)


def test_registered_names_and_directions():
    for name, cls in (("road", Road), ("aopc", AOPC), ("irof", IROF)):
        assert METRICS.get(name) is cls and cls.group == "faithfulness"
    assert score_higher_is_better("road") and score_higher_is_better("road_lerf")
    assert not score_higher_is_better("road_morf")
    assert score_higher_is_better("aopc") and score_higher_is_better("irof")
    assert set(REMOVALS) == {"token", "mean", "zero", "blur", "road"}


@pytest.mark.parametrize("removal", ["token", "mean", "zero", "blur", "road"])
def test_the_true_contributions_beat_their_reverse(removal):
    """A model whose target logit sums the brightness of the pixels: removing the brightest patches first drops it
    fastest, under every removal (the fill of a bright patch is darker than the patch)."""
    def brightness(x, keep):
        masked = torch.where(pixels_of(keep), x, torch.zeros_like(x))
        logit = masked.sum(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(logit), logit / 8], dim=1).softmax(dim=1)

    g = seeded(38)
    inputs = torch.rand(4, CHANNELS, SIDE, SIDE, generator=g, dtype=torch.float64)
    inputs[:, :, :4, :4] += 2.0  # bright top left quarter
    truth = inputs.reshape(4, CHANNELS, GRID, PATCH, GRID, PATCH).sum(dim=(1, 3, 5)).reshape(4, N)
    targets = torch.ones(4, dtype=torch.long)
    for function, name in ((aopc, "aopc"), (irof, "irof"), (srg, "srg")):
        good = function(brightness, inputs, truth, targets, removal=removal, generator=seeded(0)).scores[name]
        bad = function(brightness, inputs, -truth, targets, removal=removal, generator=seeded(0)).scores[name]
        assert (good > bad).all(), (name, removal)
    good = road(brightness, inputs, truth, targets, generator=seeded(0))
    bad = road(brightness, inputs, -truth, targets, generator=seeded(0))
    assert (good.road > bad.road).all() and (good.road_morf < bad.road_morf).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_removals_on_cuda_match_the_cpu():
    model = TokenMLP(seed=39)
    inputs, attributions, targets = make_batch(3, seed=40)
    cpu = {"road": road(model.forward_fn, inputs, attributions, targets, steps=6, generator=seeded(41)).road}
    for removal in ("mean", "blur"):
        cpu[removal] = srg(model.forward_fn, inputs, attributions, targets, steps=6, removal=removal,
                           generator=seeded(41)).srg
    model.net.cuda()
    x, a, t = inputs.cuda(), attributions.cuda(), targets.cuda()
    gpu = {"road": road(model.forward_fn, x, a, t, steps=6, generator=seeded(41), autocast=False).road}
    for removal in ("mean", "blur"):
        gpu[removal] = srg(model.forward_fn, x, a, t, steps=6, removal=removal, generator=seeded(41),
                           autocast=False).srg
    for name, values in cpu.items():
        torch.testing.assert_close(gpu[name].cpu(), values, rtol=0, atol=1e-9)
