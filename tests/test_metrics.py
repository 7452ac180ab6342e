"""SRG, R-SRG, insertion/deletion and plausibility against plain loops, known answers and sklearn."""
from __future__ import annotations

import copy
import inspect

import pytest
import torch
from torch import nn

from xaibench.metrics import (
    RSRG,
    SRG,
    Deletion,
    Insertion,
    MetricResult,
    create_metric,
    deletion,
    insertion,
    plausibility_auroc,
    resolve_steps,
    rsrg,
    score_higher_is_better,
    srg,
)
from xaibench.registry import METRICS, UnknownNameError, list_metrics
from xaibench.sampling import minmax, weighted_order

SIDE, PATCH = 8, 2
N_PATCHES = (SIDE // PATCH) ** 2  # 16


class PatchMLP(nn.Module):
    """A small random classifier of the image with removed patches set to a baseline value."""

    def __init__(self, seed: int = 0, n_classes: int = 3, dtype=torch.float64):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(SIDE * SIDE, 24), nn.Tanh(), nn.Linear(24, n_classes)).to(dtype)
        with torch.no_grad():
            self.net[0].weight.mul_(3.0)
        self.calls: list[int] = []

    def forward_fn(self, x: torch.Tensor, keep_mask: torch.Tensor) -> torch.Tensor:
        assert keep_mask.dtype == torch.bool and keep_mask.shape == (x.shape[0], N_PATCHES)
        self.calls.append(x.shape[0])
        grid = SIDE // PATCH
        pixels = keep_mask.view(-1, 1, grid, grid).repeat_interleave(PATCH, 2).repeat_interleave(PATCH, 3)
        masked = torch.where(pixels, x, torch.full_like(x, -0.5))
        return self.net(masked.flatten(1).to(self.net[0].weight.dtype)).float().softmax(-1).to(x.dtype)


def additive_forward_fn(x: torch.Tensor, keep_mask: torch.Tensor) -> torch.Tensor:
    """Two classes; the logit of class 1 is the sum of the kept pixels (one pixel = one patch)."""
    logit = (x.flatten(1) * keep_mask).sum(dim=1)
    return torch.stack([torch.zeros_like(logit), logit], dim=1).softmax(dim=1)


def make_batch(n_images: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n_images, 1, SIDE, SIDE, generator=g, dtype=dtype)
    attributions = torch.randn(n_images, N_PATCHES, generator=g, dtype=dtype)
    targets = torch.randint(0, 3, (n_images,), generator=g)
    return inputs, attributions, targets


def trapezoid(xs: list[float], ys: list[float]) -> float:
    return sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))


def loop_srg(forward_fn, image, attribution, target, ks):
    """One image, one step at a time (attributions without ties)."""
    n = attribution.numel()
    order = sorted(range(n), key=lambda i: -float(attribution[i]))

    def probability(kept: list[int]) -> float:
        keep = torch.zeros(1, n, dtype=torch.bool)
        keep[0, kept] = True
        with torch.no_grad():
            return float(forward_fn(image[None], keep)[0, target])

    mif = [probability(order[k:]) for k in ks]
    lif = [probability(order[: n - k]) for k in ks]
    xs = [k / n for k in ks]
    return trapezoid(xs, lif) - trapezoid(xs, mif), mif, lif


def mean_and_sem(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std() / values.numel() ** 0.5)


@pytest.mark.parametrize("steps", [None, 5, [0, 3, 7, 16], [2, 5, 11]])
def test_srg_matches_a_plain_loop(steps):
    model = PatchMLP()
    inputs, attributions, targets = make_batch(3, seed=1)
    result = srg(model.forward_fn, inputs, attributions, targets, steps=steps, batch_size=7,
                 generator=torch.Generator().manual_seed(0))
    ks = resolve_steps(steps, N_PATCHES).tolist()
    assert torch.allclose(result.x, torch.tensor(ks, dtype=torch.float64) / N_PATCHES)
    for b in range(3):
        score, mif, lif = loop_srg(model.forward_fn, inputs[b], attributions[b], int(targets[b]), ks)
        assert abs(float(result.srg[b]) - score) < 1e-6
        assert torch.allclose(result.mif[b], torch.tensor(mif, dtype=torch.float64), atol=1e-6)
        assert torch.allclose(result.lif[b], torch.tensor(lif, dtype=torch.float64), atol=1e-6)
        assert abs(float(result.insertion[b]) - trapezoid([k / N_PATCHES for k in ks], lif)) < 1e-6


def test_srg_costs_2k_minus_2_inputs_per_image_and_respects_batch_size():
    model = PatchMLP()
    inputs, attributions, targets = make_batch(5, seed=2)
    result = srg(model.forward_fn, inputs, attributions, targets, steps=6, batch_size=8, random_baseline=False)
    assert sum(model.calls) == result.n_forward == 5 * (2 * 6 - 2)
    assert max(model.calls) <= 8
    assert set(result.scores) == {"srg", "insertion", "deletion"} and set(result.curves) == {"mif", "lif"}
    model.calls.clear()
    with_random = srg(model.forward_fn, inputs, attributions, targets, steps=6, batch_size=8)  # the default
    assert sum(model.calls) == with_random.n_forward == 5 * (2 + 3 * 4)
    assert torch.allclose(with_random.mrg + with_random.lrg, with_random.srg, atol=1e-12)
    assert torch.allclose(with_random.srg, result.srg, atol=1e-12)  # the random ordering is drawn after the ties


def test_rsrg_matches_a_plain_loop_over_the_same_draws():
    model = PatchMLP(seed=3)
    inputs, attributions, targets = make_batch(2, seed=4)
    n_draws, ks = 3, [0, 5, 10, 16]
    result = rsrg(model.forward_fn, inputs, attributions, targets, n_draws=n_draws, steps=ks, batch_size=5,
                  generator=torch.Generator().manual_seed(9))
    unit = minmax(attributions.float(), eps=0.0)
    weights = torch.stack([unit + 1e-6, 1 - unit + 1e-6], dim=1)[:, :, None].expand(2, 2, n_draws, N_PATCHES)
    orders = weighted_order(weights, torch.Generator().manual_seed(9))
    xs = [k / N_PATCHES for k in ks]
    for b in range(2):
        areas = []
        for curve in range(2):  # R-LIF, R-MIF
            ys = []
            for k in ks:
                total = 0.0
                for d in range(n_draws):
                    keep = torch.zeros(1, N_PATCHES, dtype=torch.bool)
                    keep[0, orders[b, curve, d, : N_PATCHES - k]] = True
                    with torch.no_grad():
                        total += float(model.forward_fn(inputs[b:b + 1], keep)[0, targets[b]])
                ys.append(total / n_draws)
            areas.append(trapezoid(xs, ys))
            name = "rlif" if curve == 0 else "rmif"
            assert torch.allclose(getattr(result, name)[b], torch.tensor(ys, dtype=torch.float64), atol=1e-6)
        assert abs(float(result.rsrg[b]) - (areas[0] - areas[1])) < 1e-6


def test_random_and_constant_attributions_score_about_zero():
    model = PatchMLP(seed=5)
    inputs, attributions, targets = make_batch(240, seed=6)
    for attr in (attributions, torch.zeros_like(attributions)):
        for name, values in (
            ("srg", srg(model.forward_fn, inputs, attr, targets, steps=6, batch_size=1024,
                        generator=torch.Generator().manual_seed(1)).srg),
            ("rsrg", rsrg(model.forward_fn, inputs, attr, targets, n_draws=2, steps=6, batch_size=1024,
                          generator=torch.Generator().manual_seed(2)).rsrg),
        ):
            assert torch.isfinite(values).all()
            mean, sem = mean_and_sem(values)
            assert sem > 1e-4, name  # the scores do vary, so the check below means something
            assert abs(mean) < 3 * sem, (name, mean, sem)


def test_true_contributions_beat_shuffled_copies_on_an_additive_model():
    g = torch.Generator().manual_seed(7)
    n_images = 32
    inputs = torch.randn(n_images, 1, 4, 4, generator=g, dtype=torch.float64)
    contributions = inputs.flatten(1)
    targets = torch.ones(n_images, dtype=torch.long)

    def scores(attr, seed):
        srg_result = srg(additive_forward_fn, inputs, attr, targets, generator=torch.Generator().manual_seed(seed))
        rsrg_result = rsrg(additive_forward_fn, inputs, attr, targets, n_draws=8,
                           generator=torch.Generator().manual_seed(seed))
        return srg_result.srg, rsrg_result.rsrg

    true_srg, true_rsrg = scores(contributions, 0)
    assert true_srg.mean() > 0.2 and true_rsrg.mean() > 0.05
    for shuffle_index in range(5):
        shuffle = torch.rand(n_images, 16, generator=g).argsort(dim=1)
        other_srg, other_rsrg = scores(contributions.gather(1, shuffle), shuffle_index + 1)
        # The true order maximises every kept partial sum, so it wins image by image for SRG.
        assert (true_srg >= other_srg - 1e-12).all()
        assert true_srg.mean() > other_srg.mean() + 0.1
        assert true_rsrg.mean() > other_rsrg.mean() + 0.03


def test_same_seed_same_result_and_chunking_does_not_matter():
    model = PatchMLP(seed=8)
    inputs, attributions, targets = make_batch(4, seed=9)
    attributions = attributions.round(decimals=0)  # ties, so the generator matters
    runs = []
    for batch_size in (1, 7, 10_000):
        runs.append((
            srg(model.forward_fn, inputs, attributions, targets, steps=7, batch_size=batch_size,
                generator=torch.Generator().manual_seed(11), random_baseline=True),
            rsrg(model.forward_fn, inputs, attributions, targets, n_draws=3, steps=7, batch_size=batch_size,
                 generator=torch.Generator().manual_seed(12)),
        ))
    for srg_run, rsrg_run in runs[1:]:
        for name in ("srg", "mrg", "lrg", "mif", "lif", "random"):
            torch.testing.assert_close(getattr(srg_run, name), getattr(runs[0][0], name), rtol=0, atol=1e-12)
        for name in ("rsrg", "rlif", "rmif"):
            torch.testing.assert_close(getattr(rsrg_run, name), getattr(runs[0][1], name), rtol=0, atol=1e-12)
    other_seed = srg(model.forward_fn, inputs, attributions, targets, steps=7,
                     generator=torch.Generator().manual_seed(99))
    assert not torch.equal(other_seed.mif, runs[0][0].mif)  # ties really were broken by the generator


def test_insertion_and_deletion_are_the_srg_curves():
    model = PatchMLP(seed=10)
    inputs, attributions, targets = make_batch(3, seed=11)
    full = srg(model.forward_fn, inputs, attributions, targets, steps=5)
    ins = insertion(model.forward_fn, inputs, attributions, targets, steps=5)
    dele = deletion(model.forward_fn, inputs, attributions, targets, steps=5)
    torch.testing.assert_close(ins.curve, full.lif, rtol=0, atol=1e-12)
    torch.testing.assert_close(dele.curve, full.mif, rtol=0, atol=1e-12)
    torch.testing.assert_close(ins.auc - dele.auc, full.srg, rtol=0, atol=1e-12)


def test_steps_are_checked():
    assert resolve_steps(5, 16).tolist() == [0, 4, 8, 12, 16]
    assert resolve_steps(100, 4).tolist() == [0, 1, 2, 3, 4]
    for bad in (1, [3], [0, 17], [-1, 4]):
        with pytest.raises(ValueError):
            resolve_steps(bad, 16)


def test_plausibility_auroc_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(13)
    attributions = torch.cat([torch.randn(3, 20, generator=g),
                              torch.randint(0, 3, (3, 20), generator=g).float()])  # rows 3..5 have ties
    truth = torch.rand(6, 20, generator=g) < 0.3
    truth[:, 0], truth[:, 1] = True, False
    auroc = plausibility_auroc(attributions, truth)
    for b in range(6):
        expected = metrics.roc_auc_score(truth[b].numpy(), attributions[b].numpy())
        assert abs(float(auroc[b]) - expected) < 1e-6
    one_class = plausibility_auroc(attributions[:2], torch.stack([torch.ones(20, dtype=torch.bool),
                                                                  torch.zeros(20, dtype=torch.bool)]))
    assert torch.isnan(one_class).all()


def test_registered_metrics_accumulate_per_image_scores():
    assert {"srg", "rsrg", "insertion", "deletion", "plausibility"} <= set(list_metrics())
    model = PatchMLP(seed=14)
    inputs, attributions, targets = make_batch(6, seed=15)
    metric = create_metric("srg", steps=5, batch_size=16)
    assert metric.higher_is_better and not metric.needs_ground_truth and not metric.is_higher_better("deletion")
    first = metric(model.forward_fn, inputs[:4], attributions[:4], targets[:4], generator=torch.Generator())
    metric.update(model.forward_fn, inputs[4:], attributions[4:], targets[4:], generator=torch.Generator())
    assert set(first.scores) == {"srg", "mrg", "lrg", "insertion", "deletion"}
    assert first.scores["srg"].shape == (4,) and first.curves["mif"].shape == (4, 5) and first.x.shape == (5,)
    per_image = metric.per_image()
    assert per_image["srg"].shape == (6,)
    torch.testing.assert_close(metric.compute()["srg"], per_image["srg"].mean())
    metric.reset()
    assert metric.compute() == {}

    rsrg_metric = create_metric("rsrg", n_draws=2, steps=4)
    assert set(rsrg_metric(model.forward_fn, inputs, attributions, targets).scores) == {"rsrg"}
    assert create_metric("deletion").higher_is_better is False

    plausibility = create_metric("plausibility")
    assert plausibility.needs_ground_truth
    with pytest.raises(ValueError, match="'plausibility' needs a ground-truth patch mask"):
        plausibility(None, inputs, attributions, targets)
    truth = attributions > 0.5
    truth[0] = True  # one-class image: NaN, left out of the mean
    out = plausibility(None, inputs, attributions, targets, ground_truth=truth)
    assert torch.isnan(out.scores["plausibility"][0]) and (out.scores["plausibility"][1:] == 1).all()
    assert plausibility.compute()["plausibility"] == 1


def test_the_names_0_5_0_dropped_are_unknown():
    """`localization` (now `plausibility`) and the former result-type names are gone: a config or an import naming
    one fails at once, with the valid names."""
    for lookup in (lambda: create_metric("localization"), lambda: METRICS.resolve(["localization"])):
        with pytest.raises(UnknownNameError, match="unknown metric 'localization'; valid names: .*plausibility"):
            lookup()
    assert "localization" not in METRICS
    import xaibench.metrics as metrics

    for former in ("localization_auroc", "Localization", "MetricOutput", "SRGResult", "RSRGResult", "CurveResult"):
        assert not hasattr(metrics, former), former
    with pytest.raises(ModuleNotFoundError):
        import xaibench.metrics.localization  # noqa: F401


@pytest.mark.parametrize("cls, function", [(SRG, srg), (RSRG, rsrg), (Insertion, insertion), (Deletion, deletion)])
def test_a_metric_class_and_its_function_share_options_and_defaults(cls, function):
    class_options = {name: p.default for name, p in inspect.signature(cls).parameters.items()}
    function_options = {name: p.default for name, p in inspect.signature(function).parameters.items()
                        if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "generator"}
    assert class_options == function_options


def test_class_and_function_give_the_same_result_of_one_type():
    model = PatchMLP(seed=18)
    inputs, attributions, targets = make_batch(3, seed=19)
    for name, function, options in (("srg", srg, {}), ("rsrg", rsrg, {"n_draws": 2}), ("insertion", insertion, {}),
                                    ("deletion", deletion, {})):
        direct = function(model.forward_fn, inputs, attributions, targets, steps=5,
                          generator=torch.Generator().manual_seed(3), **options)
        registered = create_metric(name, steps=5, **options)(model.forward_fn, inputs, attributions, targets,
                                                             generator=torch.Generator().manual_seed(3))
        assert type(direct) is type(registered) is MetricResult
        assert list(direct.scores) == list(registered.scores) and list(direct.curves) == list(registered.curves)
        for key in direct.scores:
            torch.testing.assert_close(direct.scores[key], registered.scores[key], rtol=0, atol=0)
        assert direct.n_forward == registered.n_forward and torch.equal(direct.x, registered.x)
    full = srg(model.forward_fn, inputs, attributions, targets, steps=5)
    assert list(full.scores) == ["srg", "mrg", "lrg", "insertion", "deletion"]  # the runner's row order
    assert list(full.curves) == ["mif", "lif", "random"]
    assert full.srg is full.scores["srg"] and full.mif is full.curves["mif"]
    with pytest.raises(AttributeError, match="no score or curve 'auc'.*scores: srg, mrg"):
        full.auc  # two or more scores: no single area
    one = deletion(model.forward_fn, inputs, attributions, targets, steps=5)
    assert one.auc is one.scores["deletion"] and one.curve is one.curves["deletion"]
    assert copy.deepcopy(one).scores.keys() == one.scores.keys()


def test_each_score_says_which_way_is_better():
    assert score_higher_is_better("deletion") is False  # the tables bold its lowest cell
    for score in ("srg", "mrg", "lrg", "insertion", "rsrg", "plausibility"):
        assert score_higher_is_better(score) is True
    assert SRG.is_higher_better("deletion") is False and Deletion.is_higher_better("deletion") is False
    with pytest.raises(ValueError, match="no registered metric gives the score 'speed'; scores: .*deletion"):
        score_higher_is_better("speed")


def test_runs_on_the_ofa_models_masked_forward():
    from xaibench.models import create_model

    model = create_model("ofa", num_classes=3, in_chans=1, img_size=28, arch="tiny").eval()
    inputs = torch.randn(2, 1, 28, 28)
    attributions = torch.randn(2, model.n_patches)
    targets = torch.tensor([0, 2])
    result = srg(model.forward_fn, inputs, attributions, targets, steps=4, generator=torch.Generator())
    assert result.srg.shape == (2,) and torch.isfinite(result.srg).all()
    full = model.forward_fn(inputs).gather(1, targets[:, None]).squeeze(1)
    torch.testing.assert_close(result.lif[:, 0], full, rtol=1e-4, atol=1e-5)  # k = 0 is the unmasked image


@pytest.mark.cuda
def test_srg_and_rsrg_on_cuda():
    model = PatchMLP(seed=16, dtype=torch.float32).cuda()
    inputs, attributions, targets = make_batch(8, seed=17, dtype=torch.float32)
    cpu_model = PatchMLP(seed=16, dtype=torch.float32)
    reference = srg(cpu_model.forward_fn, inputs, attributions, targets, steps=6,
                    generator=torch.Generator().manual_seed(0))
    exact = srg(model.forward_fn, inputs.cuda(), attributions.cuda(), targets.cuda(), steps=6, autocast=False,
                generator=torch.Generator().manual_seed(0))  # CPU generator: the same draws
    assert exact.srg.is_cuda
    torch.testing.assert_close(exact.srg.cpu(), reference.srg, rtol=0, atol=1e-5)
    for _ in range(2):
        fast = srg(model.forward_fn, inputs.cuda(), attributions.cuda(), targets.cuda(), steps=6,
                   generator=torch.Generator("cuda").manual_seed(0), random_baseline=True)
        rand = rsrg(model.forward_fn, inputs.cuda(), attributions.cuda(), targets.cuda(), n_draws=2, steps=6,
                    generator=torch.Generator("cuda").manual_seed(1))
        assert fast.srg.is_cuda and rand.rsrg.is_cuda
        assert torch.isfinite(fast.srg).all() and torch.isfinite(rand.rsrg).all()
        assert (fast.srg.abs() <= 1).all() and (rand.rsrg.abs() <= 1).all()
    torch.testing.assert_close(fast.srg.cpu(), reference.srg, rtol=0, atol=0.05)  # bf16 autocast
