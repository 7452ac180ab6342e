"""The whole game (engine/game.py): objects and background regions as players, removal by masking, exact."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from xaibench.engine.game import (
    MAX_PLAYERS,
    background_share,
    check_regions,
    game_players,
    patch_regions,
    present_players,
    spread_over_patches,
    whole_game,
)
from xaibench.engine.truth import N_SLOTS, shapley_matrix, subset_masks
from xaibench.errors import XaibenchError


class AdditiveModel(torch.nn.Module):
    """Two classes whose log-odds of class 1 is bias + sum of w_p over the kept patches: its Shapley values are
    known in closed form (a player's value is the sum of its patches' weights)."""

    def __init__(self, weights: torch.Tensor, bias: float = 0.3):
        super().__init__()
        self.weights, self.bias = weights, bias

    def forward(self, x, keep=None):
        keep = torch.ones(len(x), len(self.weights), dtype=torch.bool) if keep is None else keep
        score = self.bias + (keep.double() * self.weights.double()).sum(dim=1)
        return torch.stack([torch.zeros_like(score), score], dim=1)


class PairModel(torch.nn.Module):
    """Log-odds = the product of the kept masses of two patch groups (a pure interaction: each group gets half)."""

    def forward(self, x, keep=None):
        keep = torch.ones(len(x), 16, dtype=torch.bool) if keep is None else keep
        score = keep[:, :2].double().sum(dim=1) * keep[:, 14:].double().sum(dim=1)
        return torch.stack([torch.zeros_like(score), score], dim=1)


def _objects(n_images: int = 3) -> torch.Tensor:
    """Object slots of a 4 x 4 patch grid: image b holds b + 1 objects of two patches, the rest background."""
    patches = torch.full((n_images, 16), -1)
    for image in range(n_images):
        for slot in range(image + 1):
            patches[image, 2 * slot: 2 * slot + 2] = slot
    return patches


def test_the_weights_equal_the_permutation_definition_up_to_the_exact_limit():
    for n in (3, 5, 7):
        values = torch.randn(2**n, dtype=torch.float64)
        codes = {tuple(row.tolist()): code for code, row in enumerate(subset_masks(n))}
        expected = torch.zeros(n, dtype=torch.float64)
        for order in itertools.permutations(range(n)):
            members = [False] * n
            for player in order:
                before = values[codes[tuple(members)]]
                members[player] = True
                expected[player] += values[codes[tuple(members)]] - before
        assert torch.allclose(values @ shapley_matrix(n), expected / math.factorial(n), atol=1e-10)


@pytest.mark.parametrize("regions", [1, 2, 4])
def test_an_additive_model_gets_its_closed_form_values_background_included(regions):
    weights = torch.linspace(-1, 2, 16)
    patches = _objects()
    players = game_players(patches, regions)
    shapley, subsets = whole_game(AdditiveModel(weights), torch.zeros(3, 1, 8, 8), players, torch.ones(3).long(),
                                  N_SLOTS + regions, batch=7)
    expected = torch.zeros(3, N_SLOTS + regions, dtype=torch.float64).scatter_add_(1, players, weights.double()
                                                                                   .expand(3, -1).contiguous())
    present = present_players(players, N_SLOTS + regions)
    assert torch.allclose(shapley[present], expected[present], atol=1e-9)
    assert shapley[~present].isnan().all()
    assert subsets.tolist() == [2 ** int(n) for n in present.sum(dim=1)]
    # every patch belongs to exactly one player, the background to the regions
    assert (players >= 0).all() and ((players >= N_SLOTS) == (patches < 0)).all()


def test_an_interaction_is_shared_and_efficiency_holds():
    patches = torch.full((1, 16), -1)
    patches[0, :2] = 0
    players = game_players(patches, 4)  # tile 3 (bottom right) holds patches 14, 15
    shapley, _ = whole_game(PairModel(), torch.zeros(1, 1, 8, 8), players, torch.ones(1).long(), N_SLOTS + 4)
    assert shapley[0, 0].item() == pytest.approx(2.0) and shapley[0, N_SLOTS + 3].item() == pytest.approx(2.0)
    assert torch.nansum(shapley).item() == pytest.approx(4.0)  # v(N) - v(empty) = 2 * 2 - 0


def test_efficiency_on_a_network():
    from xaibench.models import create_model

    torch.manual_seed(0)
    model = create_model("vit", num_classes=3, in_chans=1, img_size=16, patch_size=4, depth=1, embed_dim=16,
                         num_heads=2).eval()
    x, targets, patches = torch.randn(3, 1, 16, 16), torch.tensor([0, 2, 1]), _objects()
    players = game_players(patches, 3)
    shapley, _ = whole_game(model, x, players, targets, N_SLOTS + 3, batch=64)
    with torch.no_grad():
        full = model(x).double()
        empty = model(x, torch.zeros(3, 16, dtype=torch.bool)).double()

    def log_odds(logits):
        picked = logits.gather(1, targets[:, None])[:, 0]
        return picked - logits.scatter(1, targets[:, None], float("-inf")).logsumexp(dim=1)

    assert torch.allclose(torch.nansum(shapley, dim=1), log_odds(full) - log_odds(empty), atol=1e-4)


def test_the_regions_tile_the_grid_and_bad_counts_name_the_limit():
    assert patch_regions(16, 4).view(4, 4).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    assert sorted(set(patch_regions(49, 3).tolist())) == [0, 1, 2]
    for bad in (0, -1, 2.5, "4", True, MAX_PLAYERS - N_SLOTS + 1):
        with pytest.raises(XaibenchError, match=f"1 to {MAX_PLAYERS - N_SLOTS}.*2\\^{MAX_PLAYERS}"):
            check_regions(bad)


def test_the_reference_spreads_each_value_and_the_background_share():
    players = torch.tensor([[0, 0, 6, 7]])
    shapley = torch.tensor([[2.0] + [float("nan")] * 5 + [-1.0, 1.0]], dtype=torch.float64)
    assert spread_over_patches(shapley, players).tolist() == [[1.0, 1.0, -1.0, 1.0]]
    assert background_share(shapley).tolist() == [0.5]


@pytest.mark.parametrize("value", ["0", "5", "2.5", "\"two\""])
def test_a_bad_region_count_exits_2_naming_the_limit(value, capsys):
    from xaibench.cli import main

    assert main(["run", "--dry-run", "--set", f"run.background_regions={value}"]) == 2
    error = capsys.readouterr().err
    assert "background_regions" in error and f"2^{MAX_PLAYERS}" in error and "Traceback" not in error
