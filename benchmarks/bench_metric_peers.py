"""Speed of xaibench's metrics against their peers (Quantus 0.6.0, Captum) on the same model, the same inputs and
the same number of perturbations, in scored images per second, measured side by side in one run; and xaibench's
peak memory at two perturbation counts (flat: the forward inputs are built chunk by chunk).

Run (the table of docs/metrics.md; about 3 minutes on two CPU cores):

    nice .venv/bin/python benchmarks/bench_metric_peers.py --out bench_metric_peers.md

Setup. A small float32 classifier (--model mlp: 784 -> 256 -> 256 -> 10; vit: a 2-block patch transformer) over
28 x 28 images, 1 channel (3 for the second ROAD row), 49 patches (a 7 x 7 grid of 4 x 4 pixels). Removing a patch
sets its pixels to BASELINE on both sides: xaibench's forward_fn(x, keep) writes BASELINE into the removed patches
and calls the network, and Quantus removes the same pixels with perturb_baseline=BASELINE, so a forward costs both
tools the same. The attributions are one cheap explainer's maps (the gradient of the target probability, summed
per patch; the targets are the model's predictions); Quantus gets them per pixel (the patch value on its 16
pixels: with distinct patch values its pixel sorts remove whole patches, features_in_step = 16), the model-free
metrics (complexity, localisation) get the 7 x 7 patch maps on both sides. The robustness and randomisation
metrics re-run that explainer (explain_fn / explain_func, the same autograd code) on both sides. Quantus runs with
normalise=False and abs as xaibench's definition, its own default batch of 64 images; xaibench with its default
batch_size of 256 rows. Work per image (forwards, imputations or explanations) is in the table's last column;
where the two sides differ, xaibench's count comes first (e.g. Quantus's pixel flipping has no k = 0 point, its
eMPRT explains the original input again, Captum's sensitivity_max too).

The forward-only rows also time their bare forwards (the same number of forward inputs per image through the same
forward_fn, 256 rows a call, nothing else): peer time / bare-forward time bounds any implementation's ratio on
that row, so where it is below a goal, the goal cannot be met by making xaibench faster.

Each row: one warm-up call per side (a peer that raises shows its error), then --repeats rounds, every round
timing every row's two sides back to back, alternating which goes first; img/s = images / median time, and the
ratio is the median over rounds of the within-round ratio (the machines are shared: only ratios measured side by
side mean anything). The memory table comes from a child process (glibc's mmap threshold fixed, so freed tensors
leave the resident set): peak resident set above the one before the call (VmHWM reset through
/proc/self/clear_refs), after a warm-up call.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

if not hasattr(np, "trapz"):  # Quantus 0.6.0 calls np.trapz / np.NaN, gone from NumPy >= 2.4 / 2.0
    np.trapz = np.trapezoid
if not hasattr(np, "NaN"):
    np.NaN = np.nan

from xaibench.metrics.complexity import complexity, effective_complexity, sparseness  # noqa: E402
from xaibench.metrics.faithfulness import faithfulness_correlation, monotonicity_correlation  # noqa: E402
from xaibench.metrics.infidelity import infidelity  # noqa: E402
from xaibench.metrics.localisation import (  # noqa: E402
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    topk_intersection,
)
from xaibench.metrics.pixel_flipping import deletion  # noqa: E402
from xaibench.metrics.randomisation import emprt, random_logit  # noqa: E402
from xaibench.metrics.removal import pixel_keep  # noqa: E402
from xaibench.metrics.robustness import (  # noqa: E402
    avg_sensitivity,
    local_lipschitz,
    max_sensitivity,
    relative_input_stability,
)

try:  # being written beside this benchmark (issue 25); their rows are left out while they are missing
    from xaibench.metrics.road import road
except ImportError:  # pragma: no cover
    road = None
try:
    from xaibench.metrics.curve_scores import aopc, irof
except ImportError:  # pragma: no cover
    aopc = irof = None

SIDE, PATCH, CLASSES, BASELINE = 28, 4, 10, 0.0
GRID = SIDE // PATCH
N = GRID * GRID


# -- Model, explainer, data ----------------------------------------------------------------------------------------


class PatchViT(nn.Module):
    """A ViT-like classifier: 4 x 4 patch embedding, 2 pre-norm transformer blocks of width 64, mean pool."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.embed = nn.Conv2d(channels, 64, PATCH, stride=PATCH)
        self.position = nn.Parameter(0.02 * torch.randn(1, N, 64))
        layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(64, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.position
        return self.head(self.blocks(tokens).mean(dim=1))


def build_net(kind: str, channels: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "vit":
        return PatchViT(channels).eval()
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * SIDE * SIDE, 256), nn.ReLU(), nn.Linear(256, 256),
                         nn.ReLU(), nn.Linear(256, CLASSES)).eval()


def randomized_copy(net: nn.Module, seed: int = 42) -> nn.Module:
    """Every layer re-initialised (the last model of the MPRT cascade; what Quantus's EfficientMPRT explains)."""
    copy_ = copy.deepcopy(net)
    torch.manual_seed(seed)
    for module in copy_.modules():
        if hasattr(module, "reset_parameters") and module is not copy_:
            module.reset_parameters()
    return copy_.eval()


def patch_sums(pixels: torch.Tensor) -> torch.Tensor:
    b = pixels.shape[0]
    return pixels.reshape(b, -1, GRID, PATCH, GRID, PATCH).sum(dim=(1, 3, 5)).reshape(b, N)


def to_pixels(maps: torch.Tensor) -> torch.Tensor:
    """[b, 1, H, W]: each patch's value on its pixels."""
    b = maps.shape[0]
    return maps.reshape(b, 1, GRID, 1, GRID, 1).expand(b, 1, GRID, PATCH, GRID, PATCH).reshape(b, 1, SIDE, SIDE)


def gradient_maps(net: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The explainer of both sides: d softmax(net(x))_t / dx, summed over each patch's pixels and channels [b, n]."""
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        probs = net(x).softmax(dim=-1)
        index = targets.long().view(-1, 1).clone()
        (grad,) = torch.autograd.grad(probs.gather(1, index).sum(), x)
    return patch_sums(grad)


@dataclass
class Data:
    """One model and its inputs, on both sides: tensors for xaibench, arrays for Quantus (made before timing)."""

    net: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    maps: torch.Tensor
    masks: torch.Tensor
    arrays: dict = field(default_factory=dict)

    def forward_fn(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        kept = pixel_keep(keep.to(x.device), x.shape[2], x.shape[3])
        return self.net(torch.where(kept, x, torch.full_like(x, BASELINE))).softmax(dim=-1)

    def explain_fn(self, x: torch.Tensor, targets: torch.Tensor, randomized: bool = False) -> torch.Tensor:
        return gradient_maps(self.randomized if randomized else self.net, x, targets)

    randomized: nn.Module | None = None


def make_data(kind: str, channels: int, n_images: int, seed: int = 1) -> Data:
    net = build_net(kind, channels)
    g = torch.Generator().manual_seed(seed)
    inputs = torch.rand(n_images, channels, SIDE, SIDE, generator=g) * 2 - 1
    with torch.no_grad():
        targets = net(inputs).argmax(dim=-1)
    maps = gradient_maps(net, inputs, targets)
    corner = torch.randint(0, GRID - 2, (n_images, 2, 1), generator=g)  # a random 3 x 3 block of patches
    rows, cols = torch.arange(N) // GRID, torch.arange(N) % GRID
    masks = ((rows >= corner[:, 0]) & (rows < corner[:, 0] + 3) & (cols >= corner[:, 1]) & (cols < corner[:, 1] + 3))
    data = Data(net, inputs, targets, maps, masks)
    data.arrays = {"x": inputs.numpy(), "y": targets.numpy(), "a": to_pixels(maps).numpy(),
                   "a_grid": maps.view(-1, 1, GRID, GRID).numpy(), "s_grid": masks.view(-1, 1, GRID, GRID).numpy(),
                   "x_grid": np.zeros((n_images, 1, GRID, GRID), dtype=np.float32)}
    return data


def quantus_explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs) -> np.ndarray:
    """Quantus's explain_func: gradient_maps of the model it is given, per pixel (the patch value on its pixels)."""
    maps = gradient_maps(model, torch.as_tensor(inputs), torch.as_tensor(np.asarray(targets)))
    return to_pixels(maps).numpy()


def seeded() -> torch.Generator:
    return torch.Generator().manual_seed(0)


# -- The rows ------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    metric: str
    peer: str
    work: str
    images: int
    ours: Callable[[], object]
    theirs: Callable[[], object]
    error: str = ""
    forwards: int = 0  # forward inputs per image of a forward-only metric: its bare-forward floor is timed too
    times: dict = field(default_factory=lambda: {"ours": [], "theirs": [], "floor": []})
    floor: Callable[[], object] | None = None


def bare_forwards(data: Data, count: int) -> Callable[[], object]:
    """`count` forward inputs per image through data.forward_fn, 256 rows a call, under random keep-masks drawn
    before timing: the least time any implementation of a metric that needs those forwards can take (xaibench's
    and Quantus's forwards cost the same), so peer time / floor time bounds every ratio on that row."""
    b = len(data.inputs)
    keep = torch.rand(b * count, N, generator=seeded()) < 0.75
    image = torch.arange(b).repeat_interleave(count)

    def call() -> None:
        with torch.inference_mode():
            for start in range(0, b * count, 256):
                rows = slice(start, start + 256)
                data.forward_fn(data.inputs[image[rows]], keep[rows])
    return call


def with_floors(rows: list[Row], data: Data) -> list[Row]:
    for row in rows:
        if row.forwards:
            row.floor = bare_forwards(data, row.forwards)
    return rows


@contextmanager
def patch_segments():
    """Quantus's IROF on patch-sized segments: its superpixel segmentation replaced by the 7 x 7 patch grid, so it
    removes the same 49 segments as xaibench (and skips SLIC's cost)."""
    from quantus.helpers import utils

    original = utils.get_superpixel_segments
    grid = (np.arange(SIDE)[:, None] // PATCH) * GRID + np.arange(SIDE)[None, :] // PATCH
    utils.get_superpixel_segments = lambda img, segmentation_method: grid
    try:
        yield
    finally:
        utils.get_superpixel_segments = original


def quantus_call(metric, data: Data, *, pixels: bool = True, **kwargs):
    """Run a Quantus metric on data's arrays (pixel maps, or the patch grid for model-free metrics), seeded."""
    np.random.seed(0)
    arrays = data.arrays
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if pixels:
            return metric(model=data.net, x_batch=arrays["x"], y_batch=arrays["y"], a_batch=arrays["a"],
                          channel_first=True, device="cpu", **kwargs)
        return metric(model=None, x_batch=arrays["x_grid"], y_batch=arrays["y"], a_batch=arrays["a_grid"],
                      s_batch=arrays["s_grid"], channel_first=True, device="cpu", **kwargs)


def faithfulness_rows(q, data: Data, counts: dict) -> list[Row]:
    f, x, a, y, b = data.forward_fn, data.inputs, data.maps, data.targets, len(data.inputs)
    s, size = counts["subsets"], counts["subset_size"]
    common = dict(normalise=False, abs=False, disable_warnings=True, perturb_baseline=BASELINE)
    rows = [
        Row("faithfulness_correlation", "Quantus FaithfulnessCorrelation", f"1 + {s} forwards", b,
            lambda: faithfulness_correlation(f, x, a, y, n_subsets=s, subset_size=size, generator=seeded()),
            lambda: quantus_call(q.FaithfulnessCorrelation(nr_runs=s, subset_size=size * PATCH * PATCH,
                                                           return_aggregate=False, **common), data), forwards=1 + s),
        Row("deletion", "Quantus PixelFlipping", f"{N + 1} / {N} forwards", b,
            lambda: deletion(f, x, a, y, generator=seeded()),
            lambda: quantus_call(q.PixelFlipping(features_in_step=PATCH * PATCH, return_auc_per_sample=True,
                                                 **common), data), forwards=N + 1),
        Row("monotonicity_correlation", "Quantus MonotonicityCorrelation", f"1 + {N} forwards", b,
            lambda: monotonicity_correlation(f, x, a, y),
            lambda: quantus_call(q.MonotonicityCorrelation(nr_samples=1, features_in_step=PATCH * PATCH,
                                                           **{**common, "abs": True}), data), forwards=1 + N),
    ]
    if aopc is not None:
        rows.append(Row("aopc", "Quantus RegionPerturbation", f"{N + 1} / 1 + {N} forwards", b,
                        lambda: aopc(f, x, a, y, generator=seeded()),
                        lambda: quantus_call(q.RegionPerturbation(patch_size=PATCH, regions_evaluation=N,
                                                                  order="morf", **common), data), forwards=N + 1))
    if irof is not None:
        def quantus_irof():
            with patch_segments():
                return quantus_call(q.IROF(return_aggregate=False, **common), data)
        rows.append(Row("irof", "Quantus IROF (patch segments)", f"{N + 1} / 1 + {N} forwards", b,
                        lambda: irof(f, x, a, y, generator=seeded()), quantus_irof, forwards=N + 1))
    return with_floors(rows, data)


def road_rows(q, datasets: dict[int, Data], steps: int) -> list[Row]:
    """ROAD: xaibench's MoRF and LeRF at `steps` points k = 0, n/(K-1), .., n (the end points shared) against
    Quantus's ROAD run twice, on a (MoRF) and on -a (LeRF), at the same inner fractions."""
    if road is None:
        return []
    inner = [round(k * N / (steps - 1)) for k in range(1, steps - 1)]
    percentages = [100.0 * (k * PATCH * PATCH + 0.5) / (SIDE * SIDE) for k in inner]  # int(784 p / 100) = 16 k
    rows = []
    for channels, data in datasets.items():
        def ours(data=data):
            return road(data.forward_fn, data.inputs, data.maps, data.targets, steps=steps, generator=seeded())

        def theirs(data=data):
            metric = q.ROAD(percentages=percentages, disable_warnings=True, return_aggregate=False)
            morf = quantus_call(metric, data, softmax=True)
            flipped = Data(data.net, data.inputs, data.targets, -data.maps, data.masks,
                           {**data.arrays, "a": -data.arrays["a"]})
            return morf, quantus_call(metric, flipped, softmax=True)
        rows.append(Row(f"road ({channels} ch)", "Quantus ROAD (MoRF + LeRF)",
                        f"{2 * steps - 2} / {2 * len(inner)} imputations", len(data.inputs), ours, theirs))
    return rows


def captum_rows(data: Data, counts: dict) -> list[Row]:
    from captum.metrics import infidelity as captum_infidelity
    from captum.metrics import sensitivity_max

    f, x, a, y, b = data.forward_fn, data.inputs, data.maps, data.targets, len(data.inputs)
    s, samples = counts["perturbations"], counts["samples"]
    pixel_maps = to_pixels(a) / (PATCH * PATCH)  # I^T a = the removed patches' attribution sum, as xaibench's

    def captum_infid():
        g = seeded()

        def perturb(inputs):  # each patch removed with probability 0.5, as xaibench's "patch" perturbation
            removed = to_pixels(torch.rand(len(inputs), N, generator=g) < 0.5).expand_as(inputs)
            return removed.to(inputs.dtype), torch.where(removed, torch.full_like(inputs, BASELINE), inputs)
        with torch.inference_mode():
            return captum_infidelity(lambda z: data.net(z).softmax(dim=-1), perturb, x, pixel_maps, target=y,
                                     n_perturb_samples=s, normalize=True, max_examples_per_batch=256)

    def explanation(inputs, target):  # Captum passes the inputs as a tuple and wants a tuple back
        if isinstance(inputs, tuple):
            return (gradient_maps(data.net, inputs[0], target),)
        return gradient_maps(data.net, inputs, target)

    return with_floors([
        Row("infidelity", "Captum infidelity", f"1 + {s} forwards", b,
            lambda: infidelity(f, x, a, y, n_perturbations=s, generator=seeded()), captum_infid, forwards=1 + s),
        Row("max_sensitivity", "Captum sensitivity_max", f"{samples} / 1 + {samples} explanations", b,
            lambda: max_sensitivity(f, x, a, y, data.explain_fn, n_samples=samples, radius=0.05,
                                    generator=seeded()),
            lambda: sensitivity_max(explanation, x, perturb_radius=0.05, n_perturb_samples=samples, target=y,
                                    max_examples_per_batch=256)),
    ], data)


def robustness_rows(q, data: Data, counts: dict) -> list[Row]:
    f, x, a, y, e, b = data.forward_fn, data.inputs, data.maps, data.targets, data.explain_fn, len(data.inputs)
    samples = counts["samples"]
    kw = dict(nr_samples=samples, normalise=False, abs=False, disable_warnings=True)
    bounds = dict(lower_bound=0.05, return_nan_when_prediction_changes=False)

    def run(metric, **extra):
        return lambda: quantus_call(metric, data, explain_func=quantus_explain, softmax=False, **extra)

    def randomized_emprt():
        data.randomized = randomized_copy(data.net)  # built inside the timed call, as Quantus builds its own
        return emprt(f, x, a, y, e)

    from quantus.functions.similarity_func import correlation_spearman
    work = f"{samples} explanations"
    return [
        Row("max_sensitivity", "Quantus MaxSensitivity", work, b,
            lambda: max_sensitivity(f, x, a, y, e, n_samples=samples, radius=0.05, generator=seeded()),
            run(q.MaxSensitivity(**kw, **bounds))),
        Row("avg_sensitivity", "Quantus AvgSensitivity", work, b,
            lambda: avg_sensitivity(f, x, a, y, e, n_samples=samples, radius=0.05, generator=seeded()),
            run(q.AvgSensitivity(**kw, **bounds))),
        Row("local_lipschitz", "Quantus LocalLipschitzEstimate", work, b,
            lambda: local_lipschitz(f, x, a, y, e, n_samples=samples, radius=0.05, generator=seeded()),
            run(q.LocalLipschitzEstimate(**kw, perturb_std=0.05, return_nan_when_prediction_changes=False))),
        Row("relative_input_stability", "Quantus RelativeInputStability",
            f"{samples} explanations + 1 + {samples} forwards", b,
            lambda: relative_input_stability(f, x, a, y, e, n_samples=samples, radius=0.05, generator=seeded()),
            run(q.RelativeInputStability(nr_samples=samples, perturb_func_kwargs={"lower_bound": 0.05},
                                         disable_warnings=True))),
        Row("random_logit", "Quantus RandomLogit (Spearman)", "1 explanation", b,
            lambda: random_logit(f, x, a, y, e, n_classes=CLASSES, generator=seeded()),
            run(q.RandomLogit(num_classes=CLASSES, similarity_func=correlation_spearman, normalise=False,
                              disable_warnings=True))),
        Row("emprt", "Quantus EfficientMPRT", "1 / 2 explanations", b, randomized_emprt,
            run(q.EfficientMPRT(complexity_func_kwargs={"n_bins": round(math.sqrt(N))}, disable_warnings=True))),
    ]


def model_free_rows(q, data: Data, k: int) -> list[Row]:
    f, x, a, y, m, b = data.forward_fn, data.inputs, data.maps, data.targets, data.masks, len(data.inputs)
    plain = dict(normalise=False, disable_warnings=True)
    grid = dict(pixels=False)
    return [
        Row("sparseness", "Quantus Sparseness", "none", b, lambda: sparseness(f, x, a, y),
            lambda: quantus_call(q.Sparseness(abs=True, **plain), data, **grid)),
        Row("complexity", "Quantus Complexity", "none", b, lambda: complexity(f, x, a, y),
            lambda: quantus_call(q.Complexity(abs=True, **plain), data, **grid)),
        Row("effective_complexity", "Quantus EffectiveComplexity", "none", b,
            lambda: effective_complexity(f, x, a, y),
            lambda: quantus_call(q.EffectiveComplexity(eps=1e-3, abs=True, **plain), data, **grid)),
        Row("pointing_game", "Quantus PointingGame", "none", b, lambda: pointing_game(f, x, a, y, ground_truth=m),
            lambda: quantus_call(q.PointingGame(abs=False, **plain), data, **grid)),
        Row("relevance_mass_accuracy", "Quantus RelevanceMassAccuracy", "none", b,
            lambda: relevance_mass_accuracy(f, x, a, y, ground_truth=m),
            lambda: quantus_call(q.RelevanceMassAccuracy(abs=False, **plain), data, **grid)),
        Row("relevance_rank_accuracy", "Quantus RelevanceRankAccuracy", "none", b,
            lambda: relevance_rank_accuracy(f, x, a, y, ground_truth=m),
            lambda: quantus_call(q.RelevanceRankAccuracy(abs=False, **plain), data, **grid)),
        Row("topk_intersection", "Quantus TopKIntersection", "none", b,
            lambda: topk_intersection(f, x, a, y, ground_truth=m, k=k),
            lambda: quantus_call(q.TopKIntersection(k=k, abs=False, **plain), data, **grid)),
    ]


def unavailable(reason: str) -> Callable[[], object]:
    def call():
        raise RuntimeError(reason)
    return call


# -- Timing --------------------------------------------------------------------------------------------------------


def warm_up(rows: list[Row]) -> None:
    for row in rows:
        row.ours()
        try:
            row.theirs()
        except Exception as error:  # noqa: BLE001 - a peer that fails is reported in its row, not fatal
            row.error = f"raises {type(error).__name__}"
            print(f"{row.metric} / {row.peer}: {type(error).__name__}: {str(error)[:200]}", file=sys.stderr)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(rows: list[Row], repeats: int) -> None:
    """`repeats` rounds; each round times every row's two sides back to back, alternating which goes first."""
    for round_ in range(repeats):
        started = time.perf_counter()
        for row in rows:
            sides = [("ours", row.ours), ("theirs", row.theirs)] + ([("floor", row.floor)] if row.floor else [])
            for side, fn in (sides if round_ % 2 == 0 else sides[::-1]):
                if side == "theirs" and row.error:
                    continue
                row.times[side].append(timed(fn))
        print(f"round {round_ + 1}/{repeats}: {time.perf_counter() - started:.1f} s", file=sys.stderr)


def rate(row: Row, side: str) -> float:
    return row.images / statistics.median(row.times[side])


def ratio(row: Row, over: str = "ours") -> float:
    """Median over rounds of the peer's time / `over`'s time in the same round."""
    return statistics.median(t / o for o, t in zip(row.times[over], row.times["theirs"]))


def table(rows: list[Row]) -> list[str]:
    lines = ["| metric | peer | xaibench img/s | peer img/s | ratio (xaibench / peer) | perturbations per image "
             "| bare forwards img/s | peer / bare forwards |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ours = f"{rate(row, 'ours'):,.0f}"
        if row.error:
            theirs, ratio_text = f"n/a ({row.error})", "n/a"
        else:
            theirs, ratio_text = f"{rate(row, 'theirs'):,.0f}", f"{ratio(row):.1f}"
        floor = bound = "–"
        if row.floor is not None:
            floor = f"{rate(row, 'floor'):,.0f}"
            bound = "n/a" if row.error else f"{ratio(row, 'floor'):.1f}"
        lines.append(f"| {row.metric} | {row.peer} | {ours} | {theirs} | {ratio_text} | {row.work} | {floor} "
                     f"| {bound} |")
    return lines


# -- Memory (child process) ----------------------------------------------------------------------------------------


def _resident_kib(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def peak_mib(fn: Callable[[], object]) -> float:
    """Peak resident set above the one before the call (MiB), after a warm-up call."""
    import gc

    fn()
    gc.collect()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current resident set
    before = _resident_kib("VmRSS")
    fn()
    return (_resident_kib("VmHWM") - before) / 1024


def memory_cases(data: Data, low: int, high: int) -> list[tuple[str, str, tuple[int, int], Callable]]:
    """(metric, option, its two values, call(value)): the perturbation counts low, high as each option takes them
    (steps = count / 8, at most n + 1; explanations = count / 10)."""
    from captum.metrics import infidelity as captum_infidelity

    f, x, a, y, e = data.forward_fn, data.inputs, data.maps, data.targets, data.explain_fn
    pixel_maps = to_pixels(a) / (PATCH * PATCH)
    steps = tuple(min(N + 1, max(3, c // 8)) for c in (low, high))
    samples = tuple(max(1, c // 10) for c in (low, high))

    def unchunked_captum(s):
        def perturb(inputs):
            removed = to_pixels(torch.rand(len(inputs), N) < 0.5).expand_as(inputs)
            return removed.to(inputs.dtype), torch.where(removed, torch.full_like(inputs, BASELINE), inputs)
        with torch.inference_mode():
            return captum_infidelity(lambda z: data.net(z).softmax(dim=-1), perturb, x, pixel_maps, target=y,
                                     n_perturb_samples=s)
    cases = [
        ("faithfulness_correlation", "n_subsets", (low, high),
         lambda s: faithfulness_correlation(f, x, a, y, n_subsets=s, generator=seeded())),
        ("infidelity", "n_perturbations", (low, high),
         lambda s: infidelity(f, x, a, y, n_perturbations=s, generator=seeded())),
        ("max_sensitivity", "n_samples", samples,
         lambda s: max_sensitivity(f, x, a, y, e, n_samples=s, generator=seeded())),
        ("deletion", "steps", steps, lambda s: deletion(f, x, a, y, steps=s, generator=seeded())),
    ]
    if road is not None:
        cases.append(("road", "steps", steps, lambda s: road(f, x, a, y, steps=s, generator=seeded())))
    cases.append(("(Captum infidelity, unchunked)", "n_perturb_samples", (low, high), unchunked_captum))
    return cases


def memory_child(args: argparse.Namespace) -> None:
    """Print one JSON line per case: its name, option, the two values used and the two peaks."""
    data = make_data(args.model, 1, args.images)
    for name, option, counts, call in memory_cases(data, *args.memory_counts):
        peaks = [peak_mib(lambda s=s: call(s)) for s in counts]
        print(json.dumps({"metric": name, "option": option, "counts": counts, "peaks": peaks}), flush=True)


def memory_table(args: argparse.Namespace) -> list[str]:
    command = [sys.executable, os.path.abspath(__file__), "--memory-child", "--model", args.model,
               "--images", str(args.images), "--memory-counts", *map(str, args.memory_counts)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        return [f"memory: the child process failed ({done.stderr.strip().splitlines()[-1:]})"]
    lines = [f"Peak resident memory above the process's before the call (MiB, {args.images} images, batch_size 256):",
             "", "| metric | option | count | peak MiB | count | peak MiB | peak ratio |", "|---|---|---|---|---|---|---|"]
    for line in done.stdout.splitlines():
        row = json.loads(line)
        (c1, c2), (p1, p2) = row["counts"], row["peaks"]
        share = f"{p2 / p1:.2f}" if p1 > 0.05 else "n/a"
        lines.append(f"| {row['metric']} | {row['option']} | {c1} | {p1:.1f} | {c2} | {p2:.1f} | {share} |")
    return lines


# -- Main ----------------------------------------------------------------------------------------------------------


def build_rows(args: argparse.Namespace, counts: dict) -> list[Row]:
    data = make_data(args.model, 1, args.images)
    try:
        import quantus as q
    except ImportError:
        q = None
    rows = captum_rows(data, counts)
    if q is None:
        print("Quantus is not installed (pip install -e '.[peers]'): its rows are left out", file=sys.stderr)
        return rows
    three = make_data(args.model, 3, args.images, seed=2)
    rows = (faithfulness_rows(q, data, counts) + road_rows(q, {1: data, 3: three}, counts["road_steps"])
            + rows[:1] + robustness_rows(q, data, counts) + rows[1:] + model_free_rows(q, data, counts["k"]))
    return rows


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="scored images per call (both sides)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after the warm-up")
    parser.add_argument("--model", choices=("mlp", "vit"), default="mlp")
    parser.add_argument("--quick", action="store_true", help="tiny counts (the smoke test; seconds)")
    parser.add_argument("--out", default=None, help="also write the Markdown tables to this file")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table")
    parser.add_argument("--memory-counts", type=int, nargs=2, default=(100, 400), metavar=("LOW", "HIGH"),
                        help="perturbation counts of the memory table (steps = count / 8, samples = count / 10)")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeats = min(args.images, 4), 1
        args.memory_counts = (16, 48)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        return memory_child(args)
    counts = {"subsets": 100, "subset_size": 12, "perturbations": 100, "samples": 10, "road_steps": 8, "k": 5}
    if args.quick:
        counts.update(subsets=8, perturbations=8, samples=2, road_steps=4)
    started = time.perf_counter()
    rows = build_rows(args, counts)
    warm_up(rows)
    measure(rows, args.repeats)
    lines = table(rows)
    where = f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    versions = [f"torch {torch.__version__}", f"numpy {np.__version__}"]
    for name in ("quantus", "captum"):
        try:
            versions.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            pass
    lines += ["", f"{args.model}, {N} patches of {PATCH} x {PATCH} px on {SIDE} x {SIDE}, {args.images} images, "
              f"float32, {where}, {', '.join(versions)}; img/s = images / median of {args.repeats} interleaved "
              f"rounds, ratio = median of the rounds' ratios"]
    if not args.no_memory:
        lines += ["", *memory_table(args)]
    lines += ["", f"total {time.perf_counter() - started:.0f} s"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as out:
            out.write(text + "\n")


if __name__ == "__main__":
    main()
