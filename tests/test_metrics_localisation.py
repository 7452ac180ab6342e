"""Localisation (pointing game, relevance mass / rank accuracy, top-k intersection) and complexity (sparseness,
complexity, effective complexity) against Quantus 0.6.0 on the same patch maps, naive loops of the papers'
formulas, and known answers; plus the places where Quantus deviates, pinned on their inputs."""
from __future__ import annotations

import inspect
import itertools
import math
import warnings

import numpy as np
import pytest
import torch

from xaibench.errors import XaibenchError
from xaibench.metrics.complexity import (
    Complexity,
    EffectiveComplexity,
    Sparseness,
    complexity,
    effective_complexity,
    sparseness,
)
from xaibench.metrics.localisation import (
    PointingGame,
    RelevanceMassAccuracy,
    RelevanceRankAccuracy,
    TopKIntersection,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    topk_intersection,
)
from xaibench.registry import METRICS

TOL = 1e-5
LOCALISATION = {"pointing_game": pointing_game, "relevance_mass_accuracy": relevance_mass_accuracy,
                "relevance_rank_accuracy": relevance_rank_accuracy, "topk_intersection": topk_intersection}
COMPLEXITY = {"sparseness": sparseness, "complexity": complexity, "effective_complexity": effective_complexity}
CLASSES = {"pointing_game": PointingGame, "relevance_mass_accuracy": RelevanceMassAccuracy,
           "relevance_rank_accuracy": RelevanceRankAccuracy, "topk_intersection": TopKIntersection,
           "sparseness": Sparseness, "complexity": Complexity, "effective_complexity": EffectiveComplexity}


@pytest.fixture(scope="module")
def quantus():
    # Quantus 0.6.0 calls np.trapz / np.NaN, both gone from NumPy >= 2.4 / 2.0
    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid
    if not hasattr(np, "NaN"):
        np.NaN = np.nan
    return pytest.importorskip("quantus")


def quantus_scores(quantus, name: str, attributions: torch.Tensor, mask: torch.Tensor | None = None,
                   **options) -> np.ndarray:
    """Quantus's metric `name` on patch maps [B, n] passed as [B, 1, g, g] images (no model: these never call it)."""
    b, n = attributions.shape
    side = math.isqrt(n)
    a = attributions.double().numpy().reshape(b, 1, side, side).copy()
    s = None if mask is None else mask.numpy().reshape(b, 1, side, side).copy()
    metric = getattr(quantus, name)(disable_warnings=True, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = metric(model=None, x_batch=np.zeros((b, 1, side, side)), y_batch=np.zeros(b, dtype=int), a_batch=a,
                     s_batch=s, channel_first=True)
    return np.asarray(out, dtype=np.float64)


def random_maps(n_images: int, n_patches: int, seed: int, ties: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 maps [B, n] (tie-free, or small integers full of ties) and masks [B, n] of 2..n-2 patches."""
    g = torch.Generator().manual_seed(seed)
    if ties:
        maps = torch.randint(-2, 3, (n_images, n_patches), generator=g).double()
    else:
        maps = torch.randn(n_images, n_patches, generator=g, dtype=torch.float64)
    sizes = torch.randint(2, n_patches - 1, (n_images,), generator=g)
    order = torch.rand(n_images, n_patches, generator=g).argsort(dim=1)
    masks = torch.zeros(n_images, n_patches, dtype=torch.bool)
    for row in range(n_images):
        masks[row, order[row, :sizes[row]]] = True
    return maps, masks


def localise(name: str, maps: torch.Tensor, masks: torch.Tensor, **options) -> torch.Tensor:
    return LOCALISATION[name](None, None, maps, None, ground_truth=masks, **options).scores[name]


def concise(name: str, maps: torch.Tensor, **options) -> torch.Tensor:
    return COMPLEXITY[name](None, None, maps, None, **options).scores[name]


# -- naive transcriptions (one image, one patch at a time) ---------------------------------------------------------


def loop_expected_top(values: list[float], mask: list[bool], k: int) -> float:
    """Fraction of the k highest values in the mask, averaged over every way of picking among the tied k-th."""
    threshold = sorted(values, reverse=True)[k - 1]
    above = [p for p, v in enumerate(values) if v > threshold]
    tied = [p for p, v in enumerate(values) if v == threshold]
    picks = list(itertools.combinations(tied, k - len(above)))
    hits = [sum(mask[p] for p in above + list(pick)) for pick in picks]
    return sum(hits) / len(hits) / k


def loop_pool(value: float, sign: str) -> float:
    return max(value, 0.0) if sign == "positive" else abs(value) if sign == "absolute" else value


def undefined(mask: list[bool]) -> bool:
    return sum(mask) in (0, len(mask))


def loop_localisation(name: str, maps: torch.Tensor, masks: torch.Tensor, sign: str = "positive", k: int = 1):
    out = []
    for values, mask in zip(maps.tolist(), masks.tolist()):
        pooled = [loop_pool(v, sign) for v in values]
        if undefined(mask):
            out.append(math.nan)
        elif name == "pointing_game":
            out.append(loop_expected_top(values, mask, 1))
        elif name == "topk_intersection":
            out.append(loop_expected_top(values, mask, k))
        elif name == "relevance_rank_accuracy":
            out.append(loop_expected_top(pooled, mask, sum(mask)))
        else:
            total = sum(pooled)
            out.append(sum(r for r, m in zip(pooled, mask) if m) / total if total != 0 else math.nan)
    return torch.tensor(out, dtype=torch.float64)


def loop_gini(values: list[float]) -> float:
    a = [abs(v) for v in values]
    n = len(a)
    return sum(abs(x - y) for x in a for y in a) / (2 * n * sum(a))


def loop_entropy(values: list[float]) -> float:
    total = sum(abs(v) for v in values)
    return -sum(abs(v) / total * math.log(abs(v) / total) for v in values if v != 0)


def loop_effective(values: list[float], eps: float) -> float:
    top = max(abs(v) for v in values)
    return sum(1 for v in values if abs(v) > eps * top) / len(values)


def assert_close(actual: torch.Tensor, expected, tol: float = TOL) -> None:
    actual = torch.as_tensor(np.asarray(actual, dtype=np.float64)) if isinstance(actual, np.ndarray) else actual
    expected = torch.as_tensor(np.asarray(expected, dtype=np.float64))
    torch.testing.assert_close(actual.double().cpu(), expected, atol=tol, rtol=0, equal_nan=True)


# -- pointing game ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_patches", [16, 49])
def test_pointing_game_matches_quantus_on_nonempty_masks(quantus, n_patches):
    maps, masks = random_maps(12, n_patches, seed=n_patches)
    masks[0, maps[0].argmax()] = True  # image 0 is a hit for sure
    ours = localise("pointing_game", maps, masks)
    assert ours[0] == 1 and 0 < ours.sum() < 12
    assert_close(ours, quantus_scores(quantus, "PointingGame", maps, masks))
    assert_close(ours, loop_localisation("pointing_game", maps, masks))


def test_pointing_game_empty_mask_is_nan_where_quantus_counts_a_hit(quantus):
    maps, masks = random_maps(4, 16, seed=1)
    masks[0] = False
    masks[0, maps[0].argmin()] = True  # a miss
    masks[1:3] = False  # empty: nothing to point at
    masks[3] = True  # full: every map hits
    ours = localise("pointing_game", maps, masks)
    assert ours[0] == 0 and ours[1:].isnan().all()
    # Quantus writes NaN into a bool array, which stores True: the empty masks become hits
    assert quantus_scores(quantus, "PointingGame", maps, masks).tolist() == [0.0, 1.0, 1.0, 1.0]


def test_pointing_game_ties_count_the_chance_of_a_hit(quantus):
    maps = torch.zeros(2, 16, dtype=torch.float64)
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[:, :3] = True
    maps[1, [0, 9]] = 1.0  # two tied maxima, one inside
    assert_close(localise("pointing_game", maps, masks), [3 / 16, 0.5])
    # Quantus counts a hit when any tied patch is inside: a constant map always hits
    assert quantus_scores(quantus, "PointingGame", maps, masks).tolist() == [1.0, 1.0]


def test_pointing_game_matches_the_loop_with_ties():
    maps, masks = random_maps(30, 16, seed=2, ties=True)
    assert_close(localise("pointing_game", maps, masks), loop_localisation("pointing_game", maps, masks))


# -- relevance mass accuracy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalise", [False, True])
def test_relevance_mass_accuracy_matches_quantus(quantus, normalise):
    maps, masks = random_maps(10, 49, seed=3)
    maps[:, :5] += 3.0  # keep the signed totals away from 0
    raw = quantus_scores(quantus, "RelevanceMassAccuracy", maps, masks, abs=False, normalise=normalise)
    absolute = quantus_scores(quantus, "RelevanceMassAccuracy", maps, masks, abs=True, normalise=normalise)
    positive = quantus_scores(quantus, "RelevanceMassAccuracy", maps.clamp(min=0), masks, normalise=normalise)
    assert_close(localise("relevance_mass_accuracy", maps, masks, sign="raw"), raw)
    assert_close(localise("relevance_mass_accuracy", maps, masks, sign="absolute"), absolute)
    assert_close(localise("relevance_mass_accuracy", maps, masks), positive)


@pytest.mark.parametrize("sign", ["positive", "absolute", "raw"])
def test_relevance_mass_accuracy_matches_the_loop(sign):
    maps, masks = random_maps(20, 16, seed=4, ties=True)
    maps[:, 0] = 3.0  # no zero totals
    assert_close(localise("relevance_mass_accuracy", maps, masks, sign=sign),
                 loop_localisation("relevance_mass_accuracy", maps, masks, sign=sign))


def test_relevance_mass_accuracy_sign_policy(quantus):
    maps = torch.zeros(2, 16, dtype=torch.float64)
    maps[0, :2] = torch.tensor([2.0, -1.0])
    maps[1, :2] = torch.tensor([-2.0, -1.0])  # no positive relevance
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[:, 0] = True
    assert_close(localise("relevance_mass_accuracy", maps, masks), [1.0, math.nan])
    assert_close(localise("relevance_mass_accuracy", maps, masks, sign="absolute"), [2 / 3, 2 / 3])
    assert_close(localise("relevance_mass_accuracy", maps, masks, sign="raw"), [2.0, 2 / 3])
    # Quantus's default (abs=False) is the raw ratio: 2.0, outside the [0, 1] that Arras et al.'s code asserts
    assert_close(quantus_scores(quantus, "RelevanceMassAccuracy", maps, masks), [2.0, 2 / 3])


# -- relevance rank accuracy ---------------------------------------------------------------------------------------


def test_relevance_rank_accuracy_matches_quantus(quantus):
    maps, masks = random_maps(10, 49, seed=5)
    raw = quantus_scores(quantus, "RelevanceRankAccuracy", maps, masks, abs=False, normalise=False)
    absolute = quantus_scores(quantus, "RelevanceRankAccuracy", maps, masks, abs=True)
    assert_close(localise("relevance_rank_accuracy", maps, masks, sign="raw"), raw)
    assert_close(localise("relevance_rank_accuracy", maps, masks, sign="absolute"), absolute)
    shifted = maps - maps.min() + 0.1  # all positive: the positive part is the map itself
    assert_close(localise("relevance_rank_accuracy", shifted, masks),
                 quantus_scores(quantus, "RelevanceRankAccuracy", shifted, masks))


@pytest.mark.parametrize("sign", ["positive", "absolute", "raw"])
def test_relevance_rank_accuracy_ties_match_the_enumeration(sign):
    maps, masks = random_maps(25, 16, seed=6, ties=True)
    assert_close(localise("relevance_rank_accuracy", maps, masks, sign=sign),
                 loop_localisation("relevance_rank_accuracy", maps, masks, sign=sign))


def test_relevance_rank_accuracy_ties_do_not_depend_on_patch_order(quantus):
    maps = torch.zeros(2, 16, dtype=torch.float64)
    maps[:, :8] = 1.0  # eight patches tie at the top (Quantus refuses a constant batch)
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[0, :4] = True
    masks[1, 4:8] = True  # the same region shape, four patches later
    assert_close(localise("relevance_rank_accuracy", maps, masks), [0.5, 0.5])
    # Quantus's argsort breaks the tie by patch index: the first four tied patches win
    assert_close(quantus_scores(quantus, "RelevanceRankAccuracy", maps, masks), [1.0, 0.0])
    assert_close(quantus_scores(quantus, "TopKIntersection", maps, masks, k=4), [1.0, 0.0])
    assert_close(localise("topk_intersection", maps, masks, k=4), [0.5, 0.5])


# -- top-k intersection --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 5, 12])
def test_topk_intersection_matches_quantus(quantus, k):
    maps, masks = random_maps(10, 49, seed=7 + k)
    ours = localise("topk_intersection", maps, masks, k=k)
    assert_close(ours, quantus_scores(quantus, "TopKIntersection", maps, masks, k=k, abs=False))
    assert_close(ours, loop_localisation("topk_intersection", maps, masks, k=k))


def test_topk_intersection_default_k_is_a_tenth_of_the_patches(quantus):
    maps, masks = random_maps(6, 49, seed=8)
    assert_close(localise("topk_intersection", maps, masks),
                 quantus_scores(quantus, "TopKIntersection", maps, masks, k=5))  # round(0.1 * 49) = 5
    maps16, masks16 = random_maps(6, 16, seed=8)
    assert_close(localise("topk_intersection", maps16, masks16), localise("topk_intersection", maps16, masks16, k=2))
    assert_close(localise("topk_intersection", maps16, masks16, k=1.0), masks16.double().mean(dim=1))


def test_topk_intersection_ties_match_the_enumeration():
    maps, masks = random_maps(25, 16, seed=9, ties=True)
    assert_close(localise("topk_intersection", maps, masks, k=4),
                 loop_localisation("topk_intersection", maps, masks, k=4))


@pytest.mark.parametrize("k", [0, -1, 17, 0.0, 1.5, True, "5", None])
def test_topk_intersection_rejects_a_bad_k(k):
    maps, masks = random_maps(2, 16, seed=0)
    with pytest.raises(XaibenchError, match="k="):
        localise("topk_intersection", maps, masks, k=k)
    if k != 17:  # a count above n is only known with the map
        with pytest.raises(XaibenchError, match="k="):
            TopKIntersection(k=k)


def test_full_masks_are_nan_where_quantus_scores_one(quantus):
    maps, masks = random_maps(2, 16, seed=10)
    masks[:] = True
    for name in LOCALISATION:
        assert localise(name, maps, masks).isnan().all(), name
    assert_close(quantus_scores(quantus, "TopKIntersection", maps, masks, k=3), [1.0, 1.0])
    assert_close(quantus_scores(quantus, "RelevanceRankAccuracy", maps, masks), [1.0, 1.0])


# -- complexity ----------------------------------------------------------------------------------------------------


def heavy_tailed_maps(n_images: int, n_patches: int, seed: int) -> torch.Tensor:
    """Signed maps whose magnitudes spread over decades (some patches under 1% of the image's top)."""
    g = torch.Generator().manual_seed(seed)
    signs = torch.randn(n_images, n_patches, generator=g, dtype=torch.float64).sign()
    return signs * torch.exp(2.0 * torch.randn(n_images, n_patches, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("normalise", [False, True])
def test_sparseness_matches_quantus(quantus, normalise):
    maps = heavy_tailed_maps(10, 49, seed=11)
    maps = maps / maps.abs().amax(dim=1, keepdim=True)  # O(1) maps: Quantus's +1e-7 moves Gini by < 1e-6
    assert_close(concise("sparseness", maps), quantus_scores(quantus, "Sparseness", maps, normalise=normalise))


def test_sparseness_matches_the_mean_difference_formula():
    maps = heavy_tailed_maps(12, 16, seed=12)
    maps[0, :8] = 0.0
    assert_close(concise("sparseness", maps), [loop_gini(row) for row in maps.tolist()], tol=1e-12)


def test_sparseness_known_values_and_a_zero_map(quantus):
    maps = torch.zeros(3, 16, dtype=torch.float64)
    maps[0, 5] = -2.0  # one patch holds everything
    maps[1] = 0.3  # uniform
    assert_close(concise("sparseness", maps), [15 / 16, 0.0, math.nan], tol=1e-12)
    # Quantus adds 1e-7 to |a|, so the zero map is "uniform": 0, not NaN
    assert_close(quantus_scores(quantus, "Sparseness", maps, normalise=False)[2:], [0.0])


def test_quantus_sparseness_depends_on_batch_neighbours(quantus):
    maps = heavy_tailed_maps(2, 16, seed=13)
    maps = maps / maps.abs().amax(dim=1, keepdim=True)
    maps[1] *= 1e6  # a neighbour a million times larger
    alone = quantus_scores(quantus, "Sparseness", maps[:1])
    batched = quantus_scores(quantus, "Sparseness", maps)
    # image 0 is divided by its neighbour's maximum, then 1e-7 is added: its Gini drops toward 0
    assert alone[0] - batched[0] > 0.05
    assert_close(concise("sparseness", maps)[:1], alone)
    assert_close(concise("sparseness", maps[:1]), concise("sparseness", maps)[:1], tol=0)


@pytest.mark.parametrize("normalise", [False, True])
def test_complexity_matches_quantus(quantus, normalise):
    maps = heavy_tailed_maps(10, 49, seed=14)
    assert_close(concise("complexity", maps), quantus_scores(quantus, "Complexity", maps, normalise=normalise))


def test_complexity_matches_the_loop_and_known_values():
    maps = heavy_tailed_maps(12, 16, seed=15)
    maps[0, :8] = 0.0
    assert_close(concise("complexity", maps), [loop_entropy(row) for row in maps.tolist()], tol=1e-12)
    known = torch.zeros(3, 16, dtype=torch.float64)
    known[0, 3] = 5.0
    known[1] = -1.0
    assert_close(concise("complexity", known), [0.0, math.log(16), math.nan], tol=1e-12)


def test_effective_complexity_matches_quantus_per_image(quantus):
    maps = heavy_tailed_maps(8, 49, seed=16)
    ours = concise("effective_complexity", maps)
    # Quantus normalises by one maximum per call, so it is called once per image
    per_image = [quantus_scores(quantus, "EffectiveComplexity", maps[i:i + 1], eps=0.01)[0] / 49 for i in range(8)]
    assert_close(ours, per_image)
    assert 0 < ours.min() and ours.max() < 1  # the threshold bites
    assert_close(ours, [loop_effective(row, 0.01) for row in maps.tolist()], tol=0)


@pytest.mark.parametrize("eps", [0.0, 0.001, 0.2])
def test_effective_complexity_matches_the_loop(eps):
    maps = heavy_tailed_maps(10, 16, seed=17)
    maps[0, :4] = 0.0
    assert_close(concise("effective_complexity", maps, eps=eps), [loop_effective(r, eps) for r in maps.tolist()],
                 tol=0)


def test_quantus_effective_complexity_depends_on_batch_neighbours(quantus):
    maps = torch.rand(2, 16, generator=torch.Generator().manual_seed(18), dtype=torch.float64) * 0.4 + 0.6
    maps[1] *= 10.0  # a neighbour ten times larger
    alone = quantus_scores(quantus, "EffectiveComplexity", maps[:1], eps=0.5)
    batched = quantus_scores(quantus, "EffectiveComplexity", maps, eps=0.5)
    assert alone.tolist() == [16.0] and batched[0] == 0.0  # every patch of image 0 drops under the shared max
    ours = concise("effective_complexity", maps, eps=0.5)
    assert_close(ours, [1.0, 1.0], tol=0)
    assert_close(concise("effective_complexity", maps[:1], eps=0.5), ours[:1], tol=0)


@pytest.mark.parametrize("eps", [-0.1, 1.0, 2, True, "0.01", None])
def test_effective_complexity_rejects_a_bad_eps(eps):
    with pytest.raises(XaibenchError, match="eps="):
        concise("effective_complexity", torch.ones(1, 4), eps=eps)
    with pytest.raises(XaibenchError, match="eps="):
        EffectiveComplexity(eps=eps)


# -- the contract --------------------------------------------------------------------------------------------------


def every_score(maps: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
    scores = {name: localise(name, maps, masks) for name in LOCALISATION}
    scores.update({name: concise(name, maps) for name in COMPLEXITY})
    return scores


def test_a_batch_of_one_scores_as_the_batch():
    maps, masks = random_maps(9, 16, seed=19, ties=True)
    maps[3] *= 1e4
    masks[4] = False
    batched = every_score(maps, masks)
    for row in range(9):
        alone = every_score(maps[row:row + 1], masks[row:row + 1])
        for name, values in batched.items():
            torch.testing.assert_close(alone[name], values[row:row + 1], atol=0, rtol=0, equal_nan=True)


def test_no_forward_no_draw_and_batch_size_is_moot():
    maps, masks = random_maps(5, 16, seed=20)

    def forward_fn(x, keep):
        raise AssertionError("these metrics never run the model")

    for name, fn in {**LOCALISATION, **COMPLEXITY}.items():
        extra = {"ground_truth": masks} if name in LOCALISATION else {}
        first = fn(forward_fn, torch.zeros(5, 1, 4, 4), maps, torch.zeros(5, dtype=torch.long), batch_size=1,
                   generator=torch.Generator().manual_seed(0), **extra)
        second = fn(None, None, maps, None, batch_size=256, generator=torch.Generator().manual_seed(1), **extra)
        assert first.n_forward == 0 and list(first.scores) == [name]
        torch.testing.assert_close(first.scores[name], second.scores[name], atol=0, rtol=0, equal_nan=True)


def test_scores_that_must_move():
    maps, _ = random_maps(6, 49, seed=21)
    masks = torch.zeros(6, 49, dtype=torch.bool)
    masks.scatter_(1, torch.rand(6, 49, generator=torch.Generator().manual_seed(21)).argsort(dim=1)[:, :10], True)
    aligned = torch.where(masks, 1.0 + maps.abs(), -maps.abs() * 0.1)  # every mask patch above every other
    opposite = -aligned
    for name in LOCALISATION:
        assert_close(localise(name, aligned, masks, **({"k": 2} if name == "topk_intersection" else {})),
                     [1.0] * 6)
        assert (localise(name, opposite, masks) <= 0.01).all(), name
    peaked = torch.zeros(1, 49, dtype=torch.float64)
    peaked[0, :3] = 1.0
    dense = peaked + 0.5
    assert concise("sparseness", peaked) > concise("sparseness", dense)
    assert concise("complexity", peaked) < concise("complexity", dense)
    assert concise("effective_complexity", peaked) < concise("effective_complexity", dense)


def test_non_finite_maps_are_nan():
    maps, masks = random_maps(3, 16, seed=22)
    maps[0, 2] = math.nan
    maps[1, 5] = math.inf
    for name, values in every_score(maps, masks).items():
        assert values[:2].isnan().all() and not values[2].isnan(), name


def test_float32_in_float32_out():
    maps, masks = random_maps(4, 16, seed=23)
    wide, narrow = every_score(maps, masks), every_score(maps.float(), masks)
    for name in wide:
        assert narrow[name].dtype == torch.float32 and wide[name].dtype == torch.float64
        assert_close(narrow[name], wide[name], tol=1e-5)


def test_registered_classes_share_the_functions_options_and_call():
    maps, masks = random_maps(4, 16, seed=24)
    expected = every_score(maps, masks)
    for name, cls in CLASSES.items():
        assert METRICS.get(name) is cls
        fn = {**LOCALISATION, **COMPLEXITY}[name]
        options = {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.kind == p.KEYWORD_ONLY
                   and k not in ("ground_truth", "batch_size", "generator")}
        assert {k: p.default for k, p in inspect.signature(cls).parameters.items()} == options
        metric = METRICS.create(name)
        assert metric.group == ("localisation" if name in LOCALISATION else "complexity")
        assert metric.needs_ground_truth == (name in LOCALISATION) and not metric.needs_explainer
        assert metric.main_score == name and metric.scores_given() == (name,) and metric.nan_reason
        out = metric(None, None, maps, None, ground_truth=masks if name in LOCALISATION else None)
        torch.testing.assert_close(out.scores[name], expected[name], atol=0, rtol=0, equal_nan=True)
        assert_close(metric.compute()[name].reshape(1), [expected[name].nanmean().item()], tol=1e-12)
    directions = {name: cls.higher_is_better for name, cls in CLASSES.items()}
    assert directions == {"pointing_game": True, "relevance_mass_accuracy": True, "relevance_rank_accuracy": True,
                          "topk_intersection": True, "sparseness": True, "complexity": False,
                          "effective_complexity": False}


def test_localisation_needs_the_mask():
    maps, masks = random_maps(2, 16, seed=25)
    for name in LOCALISATION:
        with pytest.raises(ValueError, match="ground-truth"):
            METRICS.create(name)(None, None, maps, None)
        with pytest.raises(ValueError, match="shape"):
            localise(name, maps, masks[:, :9])
    with pytest.raises(XaibenchError, match="sign="):
        RelevanceMassAccuracy(sign="pos")
    with pytest.raises(XaibenchError, match="sign="):
        localise("relevance_rank_accuracy", maps, masks, sign="abs")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_the_device_as_on_the_cpu():
    maps, masks = random_maps(64, 196, seed=26, ties=True)
    on_cpu = every_score(maps, masks)
    on_gpu = every_score(maps.cuda(), masks.cuda())
    for name, values in on_gpu.items():
        assert values.device.type == "cuda", name
        torch.testing.assert_close(values.cpu(), on_cpu[name], atol=1e-12, rtol=0, equal_nan=True)
