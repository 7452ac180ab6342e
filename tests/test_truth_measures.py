"""The truth metric's agreement measures against scipy and numpy on fixed inputs: weighted tau (scipy's weightedtau,
ties included), Spearman, top-1 / bottom-1 and their tie rule, sign, NaN below two players, absent players left out,
and the object-only figures equal to the object_agreement of before the whole game."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr, weightedtau

from xaibench.metrics import GameTruth, agreement, create_metric, object_agreement, score_higher_is_better
from xaibench.metrics.sanity import spearman_rows
from xaibench.metrics.truth import (
    TRUTH_SCORES,
    bottom_hit_rows,
    player_mass,
    rank_rows,
    sign_rows,
    top_hit_rows,
    weighted_tau_rows,
)

NAN = float("nan")


def fixed_rows(n: int, ties: str, rows: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """rows x n pairs of score rows: normal draws, or small integers (many ties) in x, y or both."""
    rng = np.random.default_rng([seed, n, len(ties)])
    x, y = rng.normal(size=(rows, n)), rng.normal(size=(rows, n))
    if ties in ("x", "both"):
        x = rng.integers(0, 3, size=(rows, n)).astype(float)
    if ties in ("y", "both"):
        y = rng.integers(0, 3, size=(rows, n)).astype(float)
    return x, y


def assert_rows_match(got: torch.Tensor, expected: list[float], tol: float = 1e-12) -> None:
    got_np = got.numpy()
    assert got_np.shape == (len(expected),)
    for value, reference in zip(got_np, expected):
        if math.isnan(reference):
            assert math.isnan(value)
        else:
            assert abs(value - reference) <= tol, (value, reference)


@pytest.mark.parametrize("ties", ["none", "x", "y", "both"])
@pytest.mark.parametrize("n", range(2, 11))
def test_weighted_tau_is_scipys_weightedtau(n, ties):
    x, y = fixed_rows(n, ties)
    expected = [weightedtau(a, b).statistic for a, b in zip(x, y)]  # defaults: additive hyperbolic, rank=True
    assert_rows_match(weighted_tau_rows(torch.tensor(x), torch.tensor(y)), expected)


def test_weighted_tau_on_scipys_documented_example_and_constant_rows():
    x = torch.tensor([[12.0, 2, 1, 12, 2], [1, 1, 1, 1, 1], [3, 1, 2, 5, 4]])
    y = torch.tensor([[1.0, 4, 7, 1, 0], [1, 2, 3, 4, 5], [2, 2, 2, 2, 2]])
    got = weighted_tau_rows(x, y)
    assert math.isclose(float(got[0]), -0.56694968153682723, abs_tol=1e-12)  # scipy's docstring
    assert math.isnan(float(got[1])) and math.isnan(float(got[2]))  # a constant row ranks nothing
    assert math.isclose(float(weighted_tau_rows(x[2:], x[2:])[0]), 1.0)


def test_weighted_tau_weighs_the_top():
    """Swapping the two top players costs more than swapping the two bottom ones (Spearman sees them alike)."""
    phi = torch.tensor([[5.0, 4, 3, 2, 1]])
    top_swapped, bottom_swapped = torch.tensor([[4.0, 5, 3, 2, 1]]), torch.tensor([[5.0, 4, 3, 1, 2]])
    assert float(weighted_tau_rows(top_swapped, phi)[0]) < float(weighted_tau_rows(bottom_swapped, phi)[0])
    assert float(rank_rows(top_swapped, phi)[0]) == pytest.approx(float(rank_rows(bottom_swapped, phi)[0]))


@pytest.mark.parametrize("ties", ["none", "both"])
def test_rank_is_scipys_spearman(ties):
    x, y = fixed_rows(7, ties)
    expected = [spearmanr(a, b).statistic for a, b in zip(x, y)]
    assert_rows_match(rank_rows(torch.tensor(x), torch.tensor(y)), expected, tol=1e-6)  # through float32


def numpy_hit(mass: np.ndarray, phi: np.ndarray) -> float:
    """The tie rule spelled out: the share of the method's top players (ties included) that are a game's top."""
    method_top = np.flatnonzero(mass == mass.max())
    game_top = set(np.flatnonzero(phi == phi.max()).tolist())
    return sum(int(i in game_top) for i in method_top) / len(method_top)


def test_top1_and_bottom1_match_argmax_and_argmin_without_ties():
    x, y = fixed_rows(6, "none", rows=40)
    top = top_hit_rows(torch.tensor(x), torch.tensor(y)).numpy()
    bottom = bottom_hit_rows(torch.tensor(x), torch.tensor(y)).numpy()
    assert np.array_equal(top, (x.argmax(axis=1) == y.argmax(axis=1)).astype(float))
    assert np.array_equal(bottom, (x.argmin(axis=1) == y.argmin(axis=1)).astype(float))
    assert 0 < top.sum() < len(top)  # the fixed draws hold hits and misses


def test_top1_and_bottom1_tie_rule():
    phi = torch.tensor([[3.0, 3.0, 1.0, -2.0]] * 4)
    mass = torch.tensor([[9.0, 1.0, 1.0, -5.0],  # the method's top is one of the game's two tied tops: a hit
                         [9.0, 9.0, 9.0, 0.0],  # three tied at the top, two of them the game's: 2/3; the bottom hits
                         [0.0, 0.0, 0.0, 0.0],  # a constant map: a uniform pick hits the top 2/4, the bottom 1/4
                         [1.0, 2.0, 5.0, 5.0]])  # the top tie holds no game top; the bottom is the game's top
    assert top_hit_rows(mass, phi).tolist() == pytest.approx([1.0, 2 / 3, 0.5, 0.0])
    assert bottom_hit_rows(mass, phi).tolist() == pytest.approx([1.0, 1.0, 0.25, 0.0])
    for row_mass, row_phi, got in zip(mass.numpy(), phi.numpy(), top_hit_rows(mass, phi).tolist()):
        assert got == pytest.approx(numpy_hit(row_mass, row_phi))


def test_sign_counts_a_zero_mass_wrong_for_a_nonzero_value():
    mass = torch.tensor([[1.0, -2.0, 0.0, 0.0], [-1.0, 2.0, 3.0, 0.5]])
    phi = torch.tensor([[0.5, -1.0, 2.0, 0.0], [1.0, 2.0, 3.0, -0.5]])
    expected = (np.sign(mass.numpy()) == np.sign(phi.numpy())).mean(axis=1)
    assert sign_rows(mass, phi).tolist() == pytest.approx(expected.tolist())
    assert sign_rows(mass, phi).tolist() == pytest.approx([0.75, 0.5])


def test_every_measure_is_nan_with_one_player_and_skips_absent_players():
    # image 0: one object (1 patch) and nothing else; image 1: players 0, 2, 3 (1 absent), a patch of no player;
    # image 2: players 0..3 with two patches each
    players = torch.tensor([[0, -1, -1, -1, -1, -1, -1, -1], [0, 0, 2, 3, 3, -1, -1, -1], [0, 0, 1, 1, 2, 2, 3, 3]])
    shapley = torch.tensor([[2.0, NAN, NAN, NAN], [1.0, NAN, -3.0, 0.5], [0.1, 0.4, -0.2, 0.3]])
    generator = torch.Generator().manual_seed(0)
    attributions = torch.randn(3, 8, generator=generator)
    out = agreement(attributions, players, shapley)
    assert list(out) == ["rank", "wtau", "top1", "bottom1", "sign"]
    assert all(math.isnan(float(values[0])) for values in out.values())
    mass = player_mass(attributions, players, 4).numpy()
    for b, kept in ((1, [0, 2, 3]), (2, [0, 1, 2, 3])):
        a, phi = mass[b, kept], shapley[b, kept].double().numpy()
        assert math.isclose(float(out["rank"][b]), spearmanr(a, phi).statistic, abs_tol=1e-6)
        assert math.isclose(float(out["wtau"][b]), weightedtau(a, phi).statistic, abs_tol=1e-12)
        assert float(out["top1"][b]) == numpy_hit(a, phi) and float(out["bottom1"][b]) == numpy_hit(-a, -phi)
        assert math.isclose(float(out["sign"][b]), float((np.sign(a) == np.sign(phi)).mean()))
    assert math.isclose(float(mass[1, 0]), float(attributions[1, :2].double().sum()))


def object_agreement_before(attributions, patches, shapley):
    """object_agreement as it was before the whole game (xaibench 0.5), kept verbatim as the reference."""
    shapley = shapley.to(device=attributions.device, dtype=torch.float64)
    present = ~shapley.isnan()
    n_slots = shapley.shape[1]
    mass = torch.zeros(attributions.shape[0], n_slots + 1, dtype=torch.float64, device=attributions.device)
    slot = torch.where(patches >= 0, patches, torch.full_like(patches, n_slots))
    mass = mass.scatter_add_(1, slot, attributions.double())[:, :n_slots]
    rank = torch.full((len(mass),), float("nan"), dtype=torch.float64, device=mass.device)
    sign = rank.clone()
    for count in present.sum(dim=1).unique().tolist():
        if count < 2:
            continue
        rows = (present.sum(dim=1) == count).nonzero()[:, 0]
        kept = present[rows]
        a = mass[rows][kept].view(len(rows), count)
        b = shapley[rows][kept].view(len(rows), count)
        rank[rows] = spearman_rows(a, b).double()
        sign[rows] = (torch.sign(a) == torch.sign(b)).double().mean(dim=1)
    return rank, sign


def random_game(n_images: int = 16, n_patches: int = 49, n_regions: int = 4, seed: int = 0) -> GameTruth:
    """A fixed random GameTruth: 1 to 6 objects per image on patches, the rest split into regions (some empty)."""
    generator = torch.Generator().manual_seed(seed)
    object_patches = torch.randint(-1, 6, (n_images, n_patches), generator=generator)
    object_patches[object_patches >= torch.randint(1, 7, (n_images, 1), generator=generator)] = -1
    regions = 6 + torch.randint(0, n_regions, (n_images, n_patches), generator=generator)
    regions[:4] = torch.where(regions[:4] >= 6 + 2, 6, regions[:4])  # images whose last regions are empty
    players = torch.where(object_patches >= 0, object_patches, regions)
    counts = torch.stack([(players == p).sum(dim=1) for p in range(6 + n_regions)], dim=1)
    shapley = torch.randn(n_images, 6 + n_regions, generator=generator).masked_fill(counts == 0, NAN)
    object_shapley = torch.randn(n_images, 6, generator=generator).masked_fill(counts[:, :6] == 0, NAN)
    return GameTruth(players, shapley, 6, object_patches, object_shapley)


def test_the_object_only_figures_are_those_of_before():
    truth = random_game()
    attributions = torch.randn(16, 49, generator=torch.Generator().manual_seed(1))
    rank, sign = object_agreement(attributions, truth.object_patches, truth.object_shapley)
    old_rank, old_sign = object_agreement_before(attributions, truth.object_patches, truth.object_shapley)
    assert torch.equal(rank.nan_to_num(-9), old_rank.nan_to_num(-9)) and torch.equal(sign.nan_to_num(-9),
                                                                                     old_sign.nan_to_num(-9))
    assert rank.isnan().any() and not rank.isnan().all()  # images with a single object are in the draw
    out = create_metric("truth")(None, None, attributions, None, ground_truth=truth)
    assert torch.equal(out.scores["truth_rank_objects"].nan_to_num(-9), old_rank.float().nan_to_num(-9))
    assert torch.equal(out.scores["truth_sign_objects"].nan_to_num(-9), old_sign.float().nan_to_num(-9))


def test_the_metric_scores_the_whole_game_per_image():
    truth = random_game(seed=2)
    attributions = torch.randn(16, 49, generator=torch.Generator().manual_seed(3))
    out = create_metric("truth")(None, None, attributions, None, ground_truth=truth)
    assert tuple(out.scores) == TRUTH_SCORES and all(v.dtype == torch.float32 for v in out.scores.values())
    mass = player_mass(attributions, truth.players, 10).numpy()
    for b in range(16):
        kept = ~np.isnan(truth.shapley[b].numpy())
        a, phi = mass[b, kept], truth.shapley[b, kept].double().numpy()
        assert math.isclose(float(out.scores["truth_wtau"][b]), weightedtau(a, phi).statistic, abs_tol=1e-6)
        assert math.isclose(float(out.scores["truth_rank"][b]), spearmanr(a, phi).statistic, abs_tol=1e-6)
        assert float(out.scores["truth_top1"][b]) == numpy_hit(a, phi)
    half = truth[torch.arange(8)].to("cpu")  # rows and device as the score unit moves them
    assert isinstance(half, GameTruth) and half.n_objects == 6 and half.players.shape == (8, 49)
    assert torch.equal(half.object_shapley.nan_to_num(-9), truth.object_shapley[:8].nan_to_num(-9))


def test_the_metric_declares_its_scores_and_directions():
    cls = type(create_metric("truth"))
    assert cls.main_score == "truth_wtau" and cls.scores_given() == TRUTH_SCORES
    assert TRUTH_SCORES == ("truth_rank", "truth_wtau", "truth_top1", "truth_bottom1", "truth_sign",
                            "truth_rank_objects", "truth_sign_objects")
    assert all(score_higher_is_better(name) for name in TRUTH_SCORES)
    with pytest.raises(ValueError, match="GameTruth"):
        create_metric("truth")(None, None, torch.zeros(1, 4), None, ground_truth=torch.zeros(1, 4, dtype=torch.bool))
