"""The whole game of an image, exact: every patch belongs to one player (an object, or a region of the background)
and v(S) is the target log-odds with every patch of the players outside S removed by the model's own removal,
the mask token SRG uses. All subsets of the present players of many images go through one masked forward call.

Players of an image: its object slots 0..5 (xaibench/data/objects.py) and the background split into `regions`
tiles of a coarse grid of the patch grid (players 6..6+regions-1). Empty slots and tiles without a background
patch are absent: they are left out of the game (absent players of an exact game are null players, so the
others' values do not change), which keeps the subsets per image at 2^(present players) <= 2^MAX_PLAYERS.
"""
from __future__ import annotations

import math

import torch

from xaibench.engine.truth import N_SLOTS, _log_odds, shapley_matrix, subset_masks
from xaibench.errors import XaibenchError

MAX_PLAYERS = 10  # the exact game's limit: 2^10 subsets per image
MAX_REGIONS = MAX_PLAYERS - N_SLOTS
GAME_ROWS = 1 << 13  # masked inputs built at a time (each forward call takes `batch` of them)


def check_regions(regions: object) -> int:
    """`regions` as the background's player count, or XaibenchError naming the valid range and the limit."""
    if not isinstance(regions, int) or isinstance(regions, bool) or not 1 <= regions <= MAX_REGIONS:
        raise XaibenchError(f"run option background_regions must be an integer from 1 to {MAX_REGIONS}, got "
                            f"{regions!r}: the exact game is limited to 2^{MAX_PLAYERS} subsets per image "
                            f"({N_SLOTS} object slots + the background regions <= {MAX_PLAYERS} players)")
    return regions


def region_grid(regions: int) -> tuple[int, int]:
    """(rows, columns) of the background's tiles: the most nearly square factorisation of `regions`."""
    rows = max(d for d in range(1, math.isqrt(regions) + 1) if regions % d == 0)
    return rows, regions // rows


def patch_regions(n_patches: int, regions: int) -> torch.Tensor:
    """long [n]: the background tile of each patch of a square grid of n patches (raster order)."""
    side = math.isqrt(n_patches)
    rows, columns = region_grid(regions)
    row, column = torch.arange(n_patches) // side, torch.arange(n_patches) % side
    return (row * rows // side) * columns + column * columns // side


def game_players(object_patches: torch.Tensor, regions: int) -> torch.Tensor:
    """long [B, n]: each patch's player, its object slot (0..5) or N_SLOTS + its background tile."""
    tiles = patch_regions(object_patches.shape[1], regions).to(object_patches.device)
    return torch.where(object_patches >= 0, object_patches, N_SLOTS + tiles[None, :])


def present_players(players: torch.Tensor, n_players: int) -> torch.Tensor:
    """bool [B, n_players]: the players that own at least one patch."""
    present = torch.zeros(players.shape[0], n_players, dtype=torch.bool, device=players.device)
    return present.scatter_(1, players, True)


@torch.no_grad()
def whole_game(model, x: torch.Tensor, players: torch.Tensor, targets: torch.Tensor, n_players: int,
               batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact Shapley values of every player of each image: (shapley float64 [B, n_players], NaN for an absent
    player; subsets long [B], the subsets forwarded per image). x [B, C, H, W] on the model's device, players
    long [B, n] (game_players), targets long [B]. Images with the same number of present players share calls."""
    device = x.device
    players, targets = players.to(device), targets.to(device)
    present = present_players(players, n_players)
    counts = present.sum(dim=1)
    shapley = torch.full((len(x), n_players), float("nan"), dtype=torch.float64)
    for count in counts.unique().tolist():
        rows = (counts == count).nonzero()[:, 0]
        members = subset_masks(count).to(device)  # [2^K, K]
        local = (present[rows].cumsum(dim=1) - 1).gather(1, players[rows])  # [b, n] the player's index among K
        per_call = max(1, GAME_ROWS // len(members))
        values = []
        for first in range(0, len(rows), per_call):
            part = slice(first, first + per_call)
            keep = members[:, local[part]].permute(1, 0, 2).flatten(0, 1)  # [b * 2^K, n]
            images = x[rows[part]].repeat_interleave(len(members), dim=0)
            values.append(_log_odds(model, images, targets[rows[part]].repeat_interleave(len(members)), keep,
                                    batch).view(-1, len(members)).cpu())
        phi = torch.cat(values) @ shapley_matrix(count)  # [b, K], the present players in index order
        block = shapley[rows.cpu()]
        block[present[rows].cpu()] = phi.flatten()
        shapley[rows.cpu()] = block
    return shapley, (2 ** counts).cpu()


def spread_over_patches(shapley: torch.Tensor, players: torch.Tensor) -> torch.Tensor:
    """float [B, n]: each player's value spread evenly over its patches (the reference ordering)."""
    players = players.cpu()
    sizes = torch.zeros(shapley.shape).scatter_add_(1, players, torch.ones(players.shape))
    per_patch = torch.nan_to_num(shapley).float() / sizes.clamp(min=1)
    return per_patch.gather(1, players)


def background_share(shapley: torch.Tensor) -> torch.Tensor:
    """float64 [B]: the background players' share of the image's total |phi| (NaN where the total is 0)."""
    magnitude = torch.nan_to_num(shapley).abs()
    total = magnitude.sum(dim=1)
    return torch.where(total > 0, magnitude[:, N_SLOTS:].sum(dim=1) / total, torch.full_like(total, float("nan")))
