"""How a curve metric removes patches: the model's mask token, or a pixel fill (mean, zero, blur, ROAD's noisy
linear imputation) after which the network sees the filled image with every patch kept.

`with_removal(forward_fn, removal, generator=..., **options)` turns any forward_fn(x, keep_mask) into one that
removes by `removal`; every curve metric (srg, rsrg, insertion, deletion, aopc, irof, road) takes it as an option.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from xaibench.errors import XaibenchError
from xaibench.sampling import GOLDEN, gaussian_noise, splitmix64

from .curves import ForwardFn

REMOVALS = ("token", "mean", "zero", "blur", "road")
# options each removal takes, with their defaults (None: chosen per image size, see with_removal)
REMOVAL_OPTIONS: dict[str, dict[str, Any]] = {"token": {}, "mean": {}, "zero": {}, "blur": {"sigma": None},
                                              "road": {"noise": 0.01, "tol": 1e-10, "max_iter": None}}
# ROAD's neighbour weights (Rong et al. 2022, road/imputations.py): 1/6 for the 4 direct, 1/12 for the 4 diagonal
DIRECT_WEIGHT, DIAGONAL_WEIGHT = 1.0 / 6.0, 1.0 / 12.0
_SOLVE_VALUES = 1 << 25  # pixel-channel values per batched solve (float64: 256 MiB a vector)


class RemovalError(XaibenchError, ValueError):
    """A removal name or option that does not exist, or a patch grid that does not tile the image."""


def check_removal(removal: object) -> str:
    """`removal` if it is one of REMOVALS; anything else raises RemovalError naming the valid ones."""
    if not isinstance(removal, str) or removal not in REMOVALS:
        raise RemovalError(f"metric option removal={removal!r}: expected one of {', '.join(REMOVALS)}")
    return removal


def pixel_keep(keep_mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """bool [b, 1, H, W] from a patch mask [b, n]: the n patches form a square grid of side sqrt(n) over H x W."""
    b, n = keep_mask.shape
    grid = math.isqrt(n)
    if grid * grid != n or height % grid or width % grid:
        raise RemovalError(f"a pixel removal needs a square grid of patches that tiles the image; got {n} patches "
                           f"on {height}x{width}")
    return (keep_mask.view(b, 1, grid, grid).repeat_interleave(height // grid, 2)
            .repeat_interleave(width // grid, 3))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x [b, C, H, W] blurred by a normalised Gaussian of std sigma px, separable, truncated at ceil(3 sigma) px
    (at most side - 1), the image mirrored at its edges (torch "reflect" = scipy.ndimage mode "mirror")."""
    b, c, h, w = x.shape
    rows = x.reshape(b * c, 1, h, w)
    for axis, side in ((2, h), (3, w)):
        radius = min(math.ceil(3.0 * sigma), side - 1)
        if radius < 1:
            continue
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
        kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
        kernel = (kernel / kernel.sum()).to(x.dtype)
        shape, pad = ((1, 1, -1, 1), (0, 0, radius, radius)) if axis == 2 else ((1, 1, 1, -1), (radius, radius, 0, 0))
        rows = F.conv2d(F.pad(rows, pad, mode="reflect"), kernel.view(shape))
    return rows.view(b, c, h, w)


def neighbour_sum(z: torch.Tensor) -> torch.Tensor:
    """sum_o w_o z[p + o] over the 8 neighbours o of every pixel of z [..., H, W]; outside the image counts 0.

    The stencil (1/12 diagonal, 1/6 direct, 0 centre) is (1, 2, 1)^T (1, 2, 1) / 12 - centre / 3: two 1-D passes of
    shifted in-place adds."""
    rows = 2.0 * z
    rows[..., :, 1:] += z[..., :, :-1]
    rows[..., :, :-1] += z[..., :, 1:]
    both = 2.0 * rows
    both[..., 1:, :] += rows[..., :-1, :]
    both[..., :-1, :] += rows[..., 1:, :]
    return both.mul_(DIAGONAL_WEIGHT).sub_(z, alpha=DIAGONAL_WEIGHT * 4.0)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[..., 1, 1]: the dot product of each system's vectors [..., H, W] (batched BLAS, no temporary)."""
    return torch.matmul(a.flatten(-2)[..., None, :], b.flatten(-2)[..., :, None])


def _pool(z: torch.Tensor, block: int) -> torch.Tensor:
    """[..., ceil(H / block), ceil(W / block)]: sums of z [..., H, W] over block x block tiles (zero-padded)."""
    h, w = z.shape[-2:]
    z = F.pad(z, (0, (-w) % block, 0, (-h) % block))
    return z.unflatten(-2, (-1, block)).unflatten(-1, (-1, block)).sum(dim=(-3, -1))


def _unpool(coarse: torch.Tensor, block: int, h: int, w: int) -> torch.Tensor:
    return coarse.repeat_interleave(block, -2).repeat_interleave(block, -1)[..., :h, :w]


class _TwoLevel:
    """The system (D - W_RR) z = rhs of rows removed [b, 1, H, W] (all channels share it) and its two-level
    preconditioner: a damped Jacobi sweep, the exact solve of the Galerkin coarse system P^T A P (P: piecewise
    constant on block x block tiles; a dense batched Cholesky), a second sweep. Symmetric, so CG may use it."""

    omega = 0.85  # Jacobi damping; the stencil's D^-1 A has its spectrum in [0, 4/3]

    def __init__(self, removed: torch.Tensor) -> None:
        h, w = removed.shape[-2:]
        self.removed = removed
        self.degree = neighbour_sum(torch.ones_like(removed[:1]))  # the in-image neighbours' weight of each pixel
        self.inverse = removed / self.degree.clamp_min(1e-300)
        self.block = max(4, math.ceil(max(h, w) / 14))  # at most 14 x 14 tiles: the dense solve stays small
        self.grid = (-(-h // self.block), -(-w // self.block))
        self.factor = self._coarse_factor()

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        return neighbour_sum(z).neg_().addcmul_(self.degree, z).mul_(self.removed)

    def _coarse_factor(self) -> torch.Tensor:
        """Cholesky factor [b, n, n] of P^T A P, built from 9 products A e: e = the removed pixels of every tile
        whose (row, column) mod 3 is one colour, so a tile meets at most one tile of that colour among its 8."""
        (gh, gw), (h, w), device = self.grid, self.removed.shape[-2:], self.removed.device
        rows = torch.arange(gh, device=device)[:, None].expand(gh, gw)
        cols = torch.arange(gw, device=device)[None, :].expand(gh, gw)
        coarse = self.removed.new_zeros(self.removed.shape[0], gh * gw, gh * gw)
        for colour in range(9):
            tiles = ((rows % 3 == colour // 3) & (cols % 3 == colour % 3)).to(self.removed.dtype)
            sums = _pool(self.apply(_unpool(tiles, self.block, h, w) * self.removed), self.block).flatten(1)
            for dr, dc in [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]:
                near_r, near_c = rows + dr, cols + dc
                hit = ((near_r >= 0) & (near_r < gh) & (near_c >= 0) & (near_c < gw) & (near_r % 3 == colour // 3)
                       & (near_c % 3 == colour % 3)).flatten()
                tile = (rows * gw + cols).flatten()[hit]
                coarse[:, tile, (near_r * gw + near_c).flatten()[hit]] = sums[:, tile]
        diagonal = coarse.diagonal(dim1=-2, dim2=-1)
        # a tile without removed pixels has an empty row: 1 on its diagonal; a system without any kept pixel is
        # singular (constants): a 1e-12 ridge keeps the factor finite
        ridge = (diagonal <= 0).to(coarse.dtype) + 1e-12 * diagonal.amax(dim=-1, keepdim=True).clamp_min(1e-300)
        factor, info = torch.linalg.cholesky_ex(coarse + torch.diag_embed(ridge))
        if bool((info != 0).any()):  # numerically indefinite: that row falls back to the coarse diagonal
            bad = info != 0
            factor[bad] = torch.diag_embed((diagonal[bad] + ridge[bad]).sqrt())
        return factor

    def precondition(self, residual: torch.Tensor) -> torch.Tensor:
        h, w = residual.shape[-2:]
        x = self.omega * self.inverse * residual
        coarse = _pool(residual - self.apply(x), self.block).flatten(-2).transpose(-1, -2)  # [b, n, C]
        correction = torch.cholesky_solve(coarse, self.factor).transpose(-1, -2).unflatten(-1, self.grid)
        x = x + _unpool(correction, self.block, h, w) * self.removed
        return x + self.omega * self.inverse * (residual - self.apply(x))


def _conjugate_gradient(rhs: torch.Tensor, removed: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    """Solve (D - W_RR) z = rhs [b, C, H, W] on the removed pixels removed [b, 1, H, W] of every row and channel
    at once (float64 conjugate gradient from z = 0, preconditioned by _TwoLevel), each system until
    ||residual|| <= tol * ||rhs||."""
    system = _TwoLevel(removed)
    z = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = system.precondition(residual)
    rho = _dot(residual, direction)
    limit = tol ** 2 * _dot(rhs, rhs)
    for _ in range(max_iter):
        active = _dot(residual, residual) > limit
        if not bool(active.any()):
            return z
        q = system.apply(direction)
        curvature = _dot(direction, q)
        alpha = torch.where(active & (curvature > 0), rho / curvature.clamp_min(1e-300), 0.0)
        z.addcmul_(alpha, direction)
        residual.addcmul_(alpha, q, value=-1.0)
        y = system.precondition(residual)
        rho_next = _dot(residual, y)
        beta = torch.where(active & (rho > 0), rho_next / rho.clamp_min(1e-300), 0.0)
        direction = y.addcmul_(beta, direction)
        rho = torch.where(active, rho_next, rho)
    warnings.warn(f"ROAD imputation: conjugate gradient did not reach tol={tol} in {max_iter} iterations",
                  RuntimeWarning, stacklevel=3)
    return z


def linear_imputation(x: torch.Tensor, kept: torch.Tensor, *, tol: float = 1e-10,
                      max_iter: int | None = None) -> torch.Tensor:
    """ROAD's linear imputation, noise-free, float64 [b, C, H, W]: kept pixels (kept bool [b, 1, H, W]) as in x;
    each removed pixel the weighted mean of its in-image 8 neighbours (1/6 direct, 1/12 diagonal, the weights of
    neighbours outside the image left out and the rest renormalised, as ROAD does at the border), all removed
    pixels of an image and channel solved jointly. An image with every pixel removed has no anchor (the solutions
    are the constant images): it gets the minimum-norm one, 0.
    Solved on x's device, every row and channel of the call at once: conjugate gradient in float64 preconditioned
    by a two-level method (_TwoLevel), to a relative residual tol (1e-10: about 1e-9 from scipy's spsolve at
    224 x 224); the iterations grow with the tile side, the worst row of a call 23 at 28 x 28, 27 at 64 x 64,
    76 at 224 x 224 (plain CG: 133 and ~900). max_iter None = H * W + 100 (CG's exact bound)."""
    b, c, h, w = x.shape
    values = x.to(torch.float64)
    removed = (~kept).to(torch.float64)
    max_iter = h * w + 100 if max_iter is None else max_iter
    solved = torch.empty_like(values)
    step = max(1, _SOLVE_VALUES // (c * h * w))
    with torch.autocast(device_type=x.device.type, enabled=False):
        for start in range(0, b, step):
            part, lost = values[start:start + step], removed[start:start + step]
            rhs = lost * neighbour_sum((1.0 - lost) * part)
            solved[start:start + step] = _conjugate_gradient(rhs, lost, tol, max_iter)
    return torch.where(kept, values, solved)


def _row_keys(base: torch.Tensor, x: torch.Tensor, keep_mask: torch.Tensor) -> torch.Tensor:
    """int64 [b]: one noise key per row from the drawn base key, the row's pixel bits and its keep mask, so a
    row's noise does not depend on its chunk, its position in the batch or the other images."""

    bits = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}[x.element_size()]
    words = x.contiguous().view(bits).reshape(x.shape[0], -1).to(torch.int64)
    index = torch.arange(1, words.shape[1] + 1, dtype=torch.int64, device=x.device) * GOLDEN
    image_hash = splitmix64(words + index).sum(dim=1)
    slots = torch.arange(1, keep_mask.shape[1] + 1, dtype=torch.int64, device=x.device) * GOLDEN
    mask_hash = splitmix64(keep_mask.to(torch.int64) + slots).sum(dim=1)
    return splitmix64(splitmix64(base.to(x.device) + image_hash) ^ mask_hash)


def road_noise(keys: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Standard normal float64 [b, C, H, W], row r a function of keys[r] only (counter-based, any device)."""
    return gaussian_noise(keys, math.prod(shape)).view(len(keys), *shape)


def road_impute(x: torch.Tensor, kept: torch.Tensor, keys: torch.Tensor | None = None, *, noise: float = 0.01,
                tol: float = 1e-10, max_iter: int | None = None) -> torch.Tensor:
    """ROAD's noisy linear imputation (Rong, Leemann, Borisov, Kasneci & Kasneci 2022, "A consistent and efficient
    evaluation strategy for attribution methods", ICML): linear_imputation plus noise * N(0, 1) on every removed
    pixel and channel, the normal draws road_noise(keys) (keys int64 [b]; None only with noise = 0). x's dtype."""
    imputed = linear_imputation(x, kept, tol=tol, max_iter=max_iter)
    if noise:
        if keys is None:
            raise RemovalError("road_impute with noise > 0 needs the rows' noise keys")
        imputed = imputed + (~kept) * (noise * road_noise(keys, tuple(x.shape[1:])))
    return imputed.to(x.dtype)


def check_removal_options(removal: str, options: dict[str, Any]) -> dict[str, Any]:
    """The removal's options, defaults filled in; an unknown option or a bad value raises RemovalError."""
    allowed = REMOVAL_OPTIONS[removal]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise RemovalError(f"removal {removal!r} takes no option {', '.join(unknown)}; its options: "
                           f"{', '.join(allowed) or '(none)'}")
    merged = {**allowed, **options}
    for name, zero_ok in (("sigma", False), ("noise", True), ("tol", False)):
        value = merged.get(name)
        if name not in merged or (name == "sigma" and value is None):
            continue
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or value < 0 or (value == 0 and not zero_ok)):
            raise RemovalError(f"removal option {name}={value!r}: expected a number {'>= 0' if zero_ok else '> 0'}")
    max_iter = merged.get("max_iter")
    if max_iter is not None and (isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1):
        raise RemovalError(f"removal option max_iter={max_iter!r}: expected an int >= 1 or None")
    return merged


def with_removal(forward_fn: ForwardFn, removal: str, *, generator: torch.Generator | None = None,
                 **options: Any) -> ForwardFn:
    """forward_fn(x, keep_mask) that removes the patches keep_mask drops by `removal`.

    "token": forward_fn itself (the model's mask token; nothing drawn, today's code path). Otherwise the removed
    patches' pixels (pixel_keep) are filled and the network sees the filled image with every patch kept,
    forward_fn(filled, all-True): "mean" = the image's per-channel mean over all its pixels (ROAD's
    ChannelMeanImputer); "zero" = 0; "blur" = a Gaussian-blurred copy of the image (option sigma in px; None = half
    the patch side, so the patch's own detail is gone, its local colour kept, at any image size); "road" =
    road_impute (options noise = 0.01, ROAD's default std in the model's input units; tol = 1e-10, the conjugate
    gradient's relative residual; max_iter). Only "road" draws: one base key from `generator` when this is called.
    """
    check_removal(removal)
    options = check_removal_options(removal, options)
    if removal == "token":
        return forward_fn
    base = None
    if removal == "road":
        source = generator.device if generator is not None else "cpu"
        base = torch.randint(-(2 ** 62), 2 ** 62, (1,), generator=generator, device=source)

    def removed_forward(x: torch.Tensor, keep_mask: torch.Tensor) -> torch.Tensor:
        kept = pixel_keep(keep_mask.to(x.device), x.shape[2], x.shape[3])
        if removal == "mean":
            filled = torch.where(kept, x, x.mean(dim=(2, 3), keepdim=True))
        elif removal == "zero":
            filled = torch.where(kept, x, torch.zeros_like(x))
        elif removal == "blur":
            sigma = options["sigma"] or 0.5 * x.shape[2] / math.isqrt(keep_mask.shape[1])
            filled = torch.where(kept, x, gaussian_blur(x, sigma))
        else:
            keys = _row_keys(base, x, keep_mask.to(x.device)) if options["noise"] else None
            filled = road_impute(x, kept, keys, noise=options["noise"], tol=options["tol"],
                                 max_iter=options["max_iter"])
        return forward_fn(filled, torch.ones_like(keep_mask, dtype=torch.bool))

    removed_forward.removal = removal  # type: ignore[attr-defined]
    return removed_forward
