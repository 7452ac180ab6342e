"""The metrics that run the method again (robustness: max/avg-sensitivity, local Lipschitz, relative input stability;
randomisation: random logit, eMPRT) against Captum's sensitivity_max and Quantus 0.6.0 fed the perturbations
xaibench drew (read back from the explain_fn calls), skimage's SSIM, numpy/scipy transcriptions and closed forms,
with a tiny network whose input-times-gradient map is written out in closed form (no autograd, so it runs under
Captum's no_grad)."""
from __future__ import annotations

import inspect
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.metrics.randomisation import EMPRT, RandomLogit, emprt, histogram_entropy, random_logit, ssim_grid
from xaibench.metrics.result import MetricResult
from xaibench.metrics.robustness import (
    AvgSensitivity,
    LocalLipschitz,
    MaxSensitivity,
    RelativeInputStability,
    avg_sensitivity,
    local_lipschitz,
    max_sensitivity,
    relative_input_stability,
    uniform_ball,
)
from xaibench.registry import METRICS

if not hasattr(np, "trapz"):  # Quantus 0.6 on NumPy >= 2.4
    np.trapz = np.trapezoid
if not hasattr(np, "NaN"):
    np.NaN = np.nan

N_CLASSES = 3


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class TinyNet(nn.Module):
    """logits = V tanh(W x + c) on the flattened image, the removed patches set to 0.2; explain(x, t) = input x
    gradient of logit t, summed over each patch's pixels and channels, in closed form. Records every explain call;
    randomized=True explains with a second, independent set of weights (the "randomized copy")."""

    def __init__(self, channels: int = 3, side: int = 4, patch: int = 1, seed: int = 0, gain: float = 1.0):
        super().__init__()
        self.channels, self.side, self.patch, self.grid = channels, side, patch, side // patch
        g = seeded(seed)
        dim = channels * side * side
        self.w = gain * torch.randn(6, dim, generator=g, dtype=torch.float64)
        self.c = torch.randn(6, generator=g, dtype=torch.float64)
        self.v = torch.randn(N_CLASSES, 6, generator=g, dtype=torch.float64)
        self.w_random = torch.randn(6, dim, generator=g, dtype=torch.float64)
        self.v_random = torch.randn(N_CLASSES, 6, generator=g, dtype=torch.float64)
        self.explained: list[tuple[torch.Tensor, torch.Tensor, bool]] = []
        self.forwarded = 0

    @property
    def n(self) -> int:
        return self.grid * self.grid

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x.flatten(1).double() @ self.w.T + self.c) @ self.v.T

    def forward(self, x):  # Quantus's predictions (it passes float32 tensors)
        return self.logits(torch.as_tensor(x))

    def pixels(self, keep: torch.Tensor) -> torch.Tensor:
        view = keep.view(-1, 1, self.grid, self.grid)
        return view.repeat_interleave(self.patch, 2).repeat_interleave(self.patch, 3)

    def forward_fn(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        assert keep.dtype == torch.bool and keep.shape == (len(x), self.n)
        self.forwarded += len(x)
        return self.logits(torch.where(self.pixels(keep), x, torch.full_like(x, 0.2))).softmax(-1).to(x.dtype)

    def patch_sums(self, pixels: torch.Tensor) -> torch.Tensor:
        b = len(pixels)
        shaped = pixels.reshape(b, self.channels, self.grid, self.patch, self.grid, self.patch)
        return shaped.sum(dim=(1, 3, 5)).reshape(b, self.n)

    def explain(self, x: torch.Tensor, targets: torch.Tensor, randomized: bool = False) -> torch.Tensor:
        self.explained.append((x.clone(), targets.clone(), randomized))
        w, v = (self.w_random, self.v_random) if randomized else (self.w, self.v)
        hidden = torch.tanh(x.flatten(1).double() @ w.T + self.c)
        grad = ((1 - hidden ** 2) * v[targets.long()]) @ w
        return self.patch_sums(x.double() * grad.view(x.shape)).to(x.dtype)

    def explain_fn(self, x, targets, randomized=False):
        return self.explain(x, targets, randomized)


def make_batch(net: TinyNet, n_images: int, seed: int):
    g = seeded(seed)
    inputs = torch.rand(n_images, net.channels, net.side, net.side, generator=g, dtype=torch.float64) * 2 - 1
    targets = torch.randint(0, N_CLASSES, (n_images,), generator=g)
    return inputs, net.explain(inputs, targets), targets


def perturbed_rows(net: TinyNet, n_images: int, n_samples: int) -> torch.Tensor:
    """The perturbed inputs [B, S, C, H, W] the metric explained, from the recorded calls (image-major rows)."""
    rows = torch.cat([x for x, _, randomized in net.explained if not randomized])
    return rows.view(n_images, n_samples, *rows.shape[1:])


def replay(rows: torch.Tensor):
    """A Quantus perturb_func that returns, at its s-th call, the s-th perturbed copy of every image."""
    step = itertools.count()

    def perturb_func(arr, **kwargs):
        s = next(step)
        assert arr.shape == (rows.shape[0], rows[0, 0].numel())
        return rows[:, s].reshape(rows.shape[0], -1).numpy().astype(arr.dtype)
    return perturb_func


def quantus_explain(net: TinyNet):
    def explain_func(model, inputs, targets, **kwargs):
        maps = net.explain(torch.as_tensor(inputs, dtype=torch.float64), torch.as_tensor(targets))
        return maps.view(len(inputs), 1, net.grid, net.grid).numpy()
    return explain_func


# -- Perturbations -------------------------------------------------------------------------------------------------


def test_uniform_ball_is_splitmix64_bits_in_the_open_ball():
    key = 2 ** 61 + 987

    def python_splitmix(z: int) -> int:
        mask = (1 << 64) - 1
        z &= mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    noise = uniform_ball(torch.tensor([key]), (2, 3), 0.5)
    assert noise.shape == (1, 2, 3) and noise.dtype == torch.float64
    for j, value in enumerate(noise.flatten().tolist()):
        bits = python_splitmix((key + (j + 1) * 0x9E3779B97F4A7C15) % (1 << 64))
        assert value == 0.5 * (2 * (((bits >> 11) + 0.5) / 2 ** 53) - 1)
    many = uniform_ball(torch.tensor([3, 4]), (100_000,), 0.05)
    assert float(many.abs().max()) < 0.05 and float(many.abs().max()) > 0.0499
    assert abs(float(many.mean())) < 5e-4 and abs(float(many.var()) - 0.05 ** 2 / 3) < 1e-5
    assert abs(float(torch.corrcoef(many.view(2, -1))[0, 1])) < 0.01


# -- Robustness against Captum and Quantus -------------------------------------------------------------------------


def test_max_sensitivity_matches_captum_fed_the_same_perturbations():
    from captum.metrics import sensitivity_max

    net = TinyNet(patch=2, side=8, seed=1)
    inputs, attributions, targets = make_batch(net, 3, seed=2)
    net.explained.clear()
    ours = max_sensitivity(net.forward_fn, inputs, attributions, targets, net.explain_fn, n_samples=7, radius=0.1,
                           batch_size=5, generator=seeded(3)).max_sensitivity
    rows = perturbed_rows(net, 3, 7)
    assert max(len(x) for x, _, _ in net.explained) <= 5
    deltas = rows - inputs[:, None]
    assert float(deltas.abs().max()) < 0.1 and float(deltas.abs().max()) > 0.09
    stacked = rows.reshape(21, *inputs.shape[1:])

    def perturb_func(expanded):
        assert expanded.shape == stacked.shape
        return stacked

    def explanation_func(x, target):  # Captum passes the clean inputs as a tuple, and wants one back
        return (net.explain(x[0], target),) if isinstance(x, tuple) else net.explain(x, target)

    theirs = sensitivity_max(explanation_func, inputs, perturb_func=perturb_func,
                             n_perturb_samples=7, target=targets)
    torch.testing.assert_close(ours, theirs.double(), rtol=0, atol=1e-5)
    assert float(ours.min()) > 1e-3  # a real change, not a zero-vs-zero agreement


@pytest.mark.parametrize("name", ["max", "avg"])
def test_sensitivities_match_quantus_with_the_perturbations_replayed(name):
    quantus = pytest.importorskip("quantus")
    net = TinyNet(seed=4)
    inputs, attributions, targets = make_batch(net, 3, seed=5)
    net.explained.clear()
    function = max_sensitivity if name == "max" else avg_sensitivity
    ours = function(net.forward_fn, inputs, attributions, targets, net.explain_fn, n_samples=6, radius=0.2,
                    generator=seeded(6)).scores[f"{name}_sensitivity"]
    rows = perturbed_rows(net, 3, 6)
    cls = quantus.MaxSensitivity if name == "max" else quantus.AvgSensitivity
    metric = cls(nr_samples=6, perturb_func=replay(rows), normalise=False, abs=False, disable_warnings=True,
                 return_nan_when_prediction_changes=False)
    theirs = metric(model=net.eval(), x_batch=inputs.numpy(), y_batch=targets.numpy(),
                    a_batch=attributions.view(3, 1, 4, 4).numpy(), explain_func=quantus_explain(net),
                    channel_first=True, device="cpu")
    torch.testing.assert_close(ours, torch.tensor(theirs, dtype=torch.float64), rtol=0, atol=1e-5)


def test_local_lipschitz_matches_quantus_with_the_perturbations_replayed():
    quantus = pytest.importorskip("quantus")
    net = TinyNet(seed=7)
    inputs, attributions, targets = make_batch(net, 3, seed=8)
    net.explained.clear()
    ours = local_lipschitz(net.forward_fn, inputs, attributions, targets, net.explain_fn, n_samples=6, radius=0.2,
                           normalize=False, generator=seeded(9)).local_lipschitz
    rows = perturbed_rows(net, 3, 6)
    metric = quantus.LocalLipschitzEstimate(nr_samples=6, perturb_func=replay(rows), normalise=False, abs=False,
                                            disable_warnings=True)
    theirs = metric(model=net.eval(), x_batch=inputs.numpy(), y_batch=targets.numpy(),
                    a_batch=attributions.view(3, 1, 4, 4).numpy(), explain_func=quantus_explain(net),
                    channel_first=True, device="cpu")
    torch.testing.assert_close(ours, torch.tensor(theirs, dtype=torch.float64), rtol=0, atol=1e-5)


def test_local_lipschitz_normalized_matches_a_naive_loop():
    net = TinyNet(patch=2, side=8, seed=10)
    inputs, attributions, targets = make_batch(net, 3, seed=11)
    net.explained.clear()
    ours = local_lipschitz(net.forward_fn, inputs, attributions, targets, net.explain_fn, n_samples=5,
                           generator=seeded(12)).local_lipschitz
    rows = perturbed_rows(net, 3, 5)
    for b in range(3):
        scale = max(abs(float(v)) for v in attributions[b])
        best = -math.inf
        for s in range(5):
            again = net.explain(rows[b, s][None], targets[b:b + 1])[0]
            top = math.sqrt(sum(((float(p) - float(q)) / scale) ** 2 for p, q in zip(attributions[b], again)))
            bottom = math.sqrt(sum((float(p) - float(q)) ** 2 for p, q in zip(inputs[b].flatten(),
                                                                                rows[b, s].flatten())))
            best = max(best, top / bottom)
        assert float(ours[b]) == pytest.approx(best, rel=1e-10)


def naive_ris(x, x_s, phi, phi_s, eps=1e-6):
    """The paper's objective on flat Python lists; exact zeros divided by eps (OpenXAI, Quantus)."""
    top = math.sqrt(sum(((p - q) / (p if p != 0 else eps)) ** 2 for p, q in zip(phi, phi_s)))
    bottom = math.sqrt(sum(((a - c) / (a if a != 0 else eps)) ** 2 for a, c in zip(x, x_s)))
    return top / max(bottom, eps)


def test_relative_input_stability_matches_a_naive_loop_over_the_kept_samples():
    net = TinyNet(patch=2, side=8, seed=13, gain=4.0)
    inputs, attributions, targets = make_batch(net, 4, seed=14)
    net.explained.clear()
    net.forwarded = 0
    out = relative_input_stability(net.forward_fn, inputs, attributions, targets, net.explain_fn, n_samples=8,
                                   radius=0.3, batch_size=6, generator=seeded(15))
    assert out.n_forward == net.forwarded == 4 * 9
    rows = perturbed_rows(net, 4, 8)
    all_kept = torch.ones(net.n, dtype=torch.bool)
    n_changed = 0
    for b in range(4):
        label = int(net.forward_fn(inputs[b:b + 1], all_kept[None]).argmax())
        values = []
        for s in range(8):
            if int(net.forward_fn(rows[b, s][None], all_kept[None]).argmax()) != label:
                n_changed += 1
                continue
            again = net.explain(rows[b, s][None], targets[b:b + 1])[0]
            values.append(naive_ris(inputs[b].flatten().tolist(), rows[b, s].flatten().tolist(),
                                    attributions[b].tolist(), again.tolist()))
        expected = max(values) if values else math.nan
        assert float(out.relative_input_stability[b]) == pytest.approx(expected, rel=1e-10, nan_ok=True)
    assert 0 < n_changed < 32  # some samples changed the prediction and were left out, not all


def test_relative_input_stability_matches_quantus_where_no_prediction_changes_and_keeps_the_rest_where_one_does():
    """Quantus 0.6.0 RelativeInputStability (return_nan_when_prediction_changes=True, its default) takes np.max, so
    an image becomes NaN as soon as one of its samples flips the prediction; xaibench leaves that sample out and
    keeps the max over the rest. Pinned on image and radius where the two part."""
    quantus = pytest.importorskip("quantus")
    results = {}
    for radius in (0.01, 0.6):
        net = TinyNet(seed=16, gain=4.0)
        inputs, attributions, targets = make_batch(net, 4, seed=17)
        net.explained.clear()
        ours = relative_input_stability(net.forward_fn, inputs, attributions, targets, net.explain_fn,
                                        n_samples=6, radius=radius, generator=seeded(18)).relative_input_stability
        rows = perturbed_rows(net, 4, 6)
        metric = quantus.RelativeInputStability(nr_samples=6, perturb_func=replay(rows), disable_warnings=True)
        theirs = metric(model=net.eval(), x_batch=inputs.numpy(), y_batch=targets.numpy(),
                        a_batch=attributions.view(4, 1, 4, 4).numpy(), explain_func=quantus_explain(net),
                        channel_first=True, device="cpu")
        results[radius] = ours, torch.tensor(theirs, dtype=torch.float64)
    ours, theirs = results[0.01]
    assert torch.isfinite(theirs).all()
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-5)
    ours, theirs = results[0.6]
    nan_in_quantus = torch.isnan(theirs)
    assert nan_in_quantus.any() and torch.isfinite(ours[nan_in_quantus]).any()
    torch.testing.assert_close(ours[~nan_in_quantus], theirs[~nan_in_quantus], rtol=1e-6, atol=1e-5)


# -- Closed forms --------------------------------------------------------------------------------------------------


def test_closed_forms_constant_and_identity_explainers():
    """A constant explainer moves by 0 under every metric; the identity map phi(x) = c x (one channel, one pixel
    per patch) has local Lipschitz |c| (raw) and 1 / max|x| (normalized), relative input stability exactly 1, and
    sensitivity ||x - x'|| / ||x||."""
    net = TinyNet(channels=1, side=4, seed=19)
    inputs, _, targets = make_batch(net, 3, seed=20)
    constant_map = torch.linspace(-1, 2, net.n, dtype=torch.float64).expand(3, -1)

    def constant(x, t):
        return constant_map[:1].expand(len(x), -1).clone()
    for function, name in ((max_sensitivity, "max_sensitivity"), (avg_sensitivity, "avg_sensitivity"),
                           (local_lipschitz, "local_lipschitz"),
                           (relative_input_stability, "relative_input_stability")):
        value = function(net.forward_fn, inputs, constant_map, targets, constant, generator=seeded(21)).scores[name]
        torch.testing.assert_close(value, torch.zeros(3, dtype=torch.float64), rtol=0, atol=0)

    recorded = []

    def identity(x, t):
        recorded.append(x.clone())
        return -2.5 * x.flatten(1)
    phi = -2.5 * inputs.flatten(1)
    raw = local_lipschitz(net.forward_fn, inputs, phi, targets, identity, normalize=False, generator=seeded(22))
    torch.testing.assert_close(raw.local_lipschitz, torch.full((3,), 2.5, dtype=torch.float64), rtol=1e-12, atol=0)
    scaled = local_lipschitz(net.forward_fn, inputs, phi, targets, identity, generator=seeded(22)).local_lipschitz
    torch.testing.assert_close(scaled, 1 / inputs.flatten(1).abs().amax(1), rtol=1e-12, atol=0)
    ris = relative_input_stability(net.forward_fn, inputs, phi, targets, identity, radius=0.001, generator=seeded(23))
    torch.testing.assert_close(ris.relative_input_stability, torch.ones(3, dtype=torch.float64), rtol=1e-9, atol=0)
    recorded.clear()
    sens = max_sensitivity(None, inputs, phi, targets, identity, n_samples=4, generator=seeded(24)).max_sensitivity
    rows = torch.cat(recorded).view(3, 4, -1)
    expected = ((rows - inputs.flatten(1)[:, None]).norm(dim=-1) / inputs.flatten(1).norm(dim=-1)[:, None]).amax(1)
    torch.testing.assert_close(sens, expected, rtol=1e-12, atol=0)
    assert float(sens.max()) <= 0.05 * math.sqrt(net.n) / float(inputs.flatten(1).norm(dim=-1).min())


# -- Random logit and eMPRT ----------------------------------------------------------------------------------------


def test_random_logit_matches_scipy_spearman_on_another_class_drawn_uniformly():
    from scipy.stats import spearmanr

    net = TinyNet(patch=2, side=8, seed=25)
    inputs, attributions, targets = make_batch(net, 300, seed=26)
    net.explained.clear()
    net.forwarded = 0
    out = random_logit(net.forward_fn, inputs, attributions, targets, net.explain_fn, batch_size=128,
                       generator=seeded(27))
    assert out.n_forward == net.forwarded == 1  # the class count, read from one image
    others = torch.cat([t for _, t, _ in net.explained])
    assert len(net.explained) == 3 and max(len(x) for x, _, _ in net.explained) <= 128
    assert (others != targets).all() and others.min() >= 0 and others.max() < N_CLASSES
    shifts = (others - targets) % N_CLASSES  # 1 or 2, equally likely
    assert 120 < int((shifts == 1).sum()) < 180
    for b in range(0, 300, 37):
        again = net.explain(inputs[b:b + 1], others[b:b + 1])[0]
        expected = spearmanr(attributions[b].numpy(), again.numpy()).statistic
        assert float(out.random_logit[b]) == pytest.approx(expected, abs=1e-12)


def test_random_logit_matches_quantus_with_the_other_class_replayed(monkeypatch):
    """Quantus 0.6.0 RandomLogit with Spearman as its similarity, its np.random.randint replaced by the index of
    the class xaibench drew among the other classes (Quantus lists them in ascending order)."""
    quantus = pytest.importorskip("quantus")
    from quantus.functions.similarity_func import correlation_spearman

    net = TinyNet(seed=28)
    inputs, attributions, targets = make_batch(net, 5, seed=29)
    net.explained.clear()
    ours = random_logit(net.forward_fn, inputs, attributions, targets, net.explain_fn, n_classes=N_CLASSES,
                        generator=seeded(30)).random_logit
    others = net.explained[0][1]
    position = torch.where(others < targets, others, others - 1).numpy()
    monkeypatch.setattr(np.random, "randint", lambda low, high, size: position)
    metric = quantus.RandomLogit(num_classes=N_CLASSES, similarity_func=correlation_spearman, normalise=False,
                                 disable_warnings=True)

    def spearman_batched(a, b, batched=False):
        return [correlation_spearman(x, y) for x, y in zip(a, b)]
    metric.similarity_func = spearman_batched
    theirs = metric(model=net.eval(), x_batch=inputs.numpy(), y_batch=targets.numpy(),
                    a_batch=attributions.view(5, 1, 4, 4).numpy(), explain_func=quantus_explain(net),
                    channel_first=True, device="cpu")
    assert torch.equal(net.explained[-1][1], others)  # Quantus explained the same other classes
    torch.testing.assert_close(ours, torch.tensor(theirs, dtype=torch.float64), rtol=0, atol=1e-10)


@pytest.mark.parametrize("window", [3, 5])
def test_ssim_grid_matches_skimage(window):
    from skimage.metrics import structural_similarity

    g = seeded(31)
    a = torch.randn(4, 49, generator=g, dtype=torch.float64)
    b = 0.6 * a + 0.4 * torch.randn(4, 49, generator=g, dtype=torch.float64)
    b[3] = a[3] * 3.0  # one pattern, another scale: Spearman 1, SSIM below 1
    ours = ssim_grid(a, b, window)
    for i in range(4):
        x, y = a[i].view(7, 7).numpy(), b[i].view(7, 7).numpy()
        span = float(max(x.max(), y.max()) - min(x.min(), y.min()))
        assert float(ours[i]) == pytest.approx(structural_similarity(x, y, win_size=window, data_range=span),
                                               abs=1e-10)
    assert float(ours[3]) < 0.95
    same = ssim_grid(a, a.clone(), window)
    torch.testing.assert_close(same, torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-12)
    net = TinyNet(side=7, seed=32)
    inputs, attributions, targets = make_batch(net, 3, seed=33)
    net.explained.clear()
    out = random_logit(net.forward_fn, inputs, attributions, targets, net.explain_fn, similarity="ssim",
                       ssim_window=window, generator=seeded(34)).random_logit
    expected = ssim_grid(attributions, net.explain(inputs, net.explained[0][1]), window)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_histogram_entropy_matches_numpy_histogram_and_scipy_entropy():
    from scipy.stats import entropy

    g = seeded(35)
    maps = torch.randn(6, 49, generator=g, dtype=torch.float64)
    maps[1] = torch.arange(49, dtype=torch.float64) / 48  # values on the bin edges
    maps[2] = 0.3  # constant: one bin
    maps[3, :40] = 0.0  # mostly one value
    maps[4] = torch.randint(0, 4, (49,), generator=g).double() * 0.1  # ties between a few values
    for n_bins in (2, 7, 10, 100):
        ours = histogram_entropy(maps, n_bins)
        for i in range(6):
            counts, _ = np.histogram(maps[i].numpy(), bins=n_bins)
            assert float(ours[i]) == pytest.approx(float(entropy(counts)), abs=1e-12), (n_bins, i)
    assert float(histogram_entropy(maps, 7)[2]) == 0.0


def test_emprt_matches_a_naive_transcription_and_quantus_fed_the_same_maps():
    from scipy.stats import entropy

    quantus = pytest.importorskip("quantus")
    net = TinyNet(seed=36)
    inputs, attributions, targets = make_batch(net, 4, seed=37)
    net.explained.clear()
    ours = emprt(None, inputs, attributions, targets, net.explain_fn, batch_size=3).emprt
    assert [randomized for _, _, randomized in net.explained] == [True, True]
    randomized = net.explain(inputs, targets, randomized=True)
    for b in range(4):
        before = entropy(np.histogram(attributions[b].numpy(), bins=4)[0])  # round(sqrt(16)) bins
        after = entropy(np.histogram(randomized[b].numpy(), bins=4)[0])
        assert float(ours[b]) == pytest.approx((after - before) / before, abs=1e-12)

    def explain_func(model, inputs, targets, **kwargs):  # the original maps on the model, the others on its copies
        maps = attributions if model is net else randomized
        return maps.view(-1, 1, 4, 4).numpy()
    net.layer = nn.Linear(1, 1)  # a layer for Quantus to randomize (the maps above stand for its explanations)
    metric = quantus.EfficientMPRT(complexity_func_kwargs={"n_bins": 4}, disable_warnings=True)
    theirs = metric(model=net.eval(), x_batch=inputs.numpy(), y_batch=targets.numpy(),
                    a_batch=attributions.view(4, 1, 4, 4).numpy(), explain_func=explain_func, channel_first=True,
                    device="cpu")
    torch.testing.assert_close(ours, torch.tensor(theirs, dtype=torch.float64), rtol=0, atol=1e-10)


def test_quantus_bin_rules_count_dimensions_not_values():
    """Quantus 0.6.0's n_bins rules read a_batch[0].ndim (3 for a [1, 4, 4] map) where they mean its size (16):
    the square-root rule gives 1 bin, not 4, and Sturges 2, not 5 (EfficientMPRT then clips to its minimum, 10)."""
    pytest.importorskip("quantus")
    from quantus.functions.n_bins_func import square_root_choice, sturges_formula

    maps = np.random.default_rng(0).normal(size=(2, 1, 4, 4))
    assert square_root_choice(maps) == 1 and sturges_formula(maps) == 2


# -- Shared properties ---------------------------------------------------------------------------------------------


CASES = [
    ("max_sensitivity", max_sensitivity, {"n_samples": 3}),
    ("avg_sensitivity", avg_sensitivity, {"n_samples": 3}),
    ("local_lipschitz", local_lipschitz, {"n_samples": 3}),
    ("relative_input_stability", relative_input_stability, {"n_samples": 3, "radius": 0.2}),
    ("random_logit", random_logit, {}),
    ("random_logit", random_logit, {"similarity": "ssim"}),
    ("emprt", emprt, {}),
]


@pytest.mark.parametrize("name, function, options", CASES)
def test_per_image_seeded_and_chunking_free(name, function, options):
    net = TinyNet(patch=2, side=8, seed=38, gain=3.0)
    inputs, attributions, targets = make_batch(net, 4, seed=39)

    def run(x, a, t, seed=0, batch_size=256):
        return function(net.forward_fn, x, a, t, net.explain_fn, generator=seeded(seed), batch_size=batch_size,
                        **options).scores[name]
    together = run(inputs, attributions, targets)
    assert together.shape == (4,) and together.dtype == torch.float64 and torch.isfinite(together).all()
    torch.testing.assert_close(run(inputs[:1], attributions[:1], targets[:1]), together[:1], rtol=1e-12, atol=1e-12)
    changed_inputs, changed_maps = inputs.clone(), attributions.clone()
    changed_inputs[1:] = torch.rand(3, 3, 8, 8, generator=seeded(40), dtype=torch.float64)
    changed_maps[1:] = -attributions[1:]
    torch.testing.assert_close(run(changed_inputs, changed_maps, targets.flip(0).roll(1))[:1], together[:1],
                               rtol=1e-12, atol=1e-12)  # image 0's score ignores its neighbours (and their targets)
    torch.testing.assert_close(run(inputs, attributions, targets), together, rtol=0, atol=0)
    net.explained.clear()
    torch.testing.assert_close(run(inputs, attributions, targets, batch_size=1), together, rtol=1e-12, atol=1e-12)
    assert max(len(x) for x, _, _ in net.explained) == 1
    if name != "emprt":  # it draws nothing
        assert not torch.equal(run(inputs, attributions, targets, seed=1), together)
    net.explained.clear()
    net.forwarded = 0
    metric = METRICS.create(name, **options)
    result = metric(net.forward_fn, inputs, attributions, targets, None, seeded(0), net.explain_fn)
    assert result.n_forward == net.forwarded
    assert sum(len(x) for x, _, _ in net.explained) == 4 * metric.explained_per_image()
    torch.testing.assert_close(result.scores[name], together, rtol=0, atol=0)


def test_float32_inputs_give_float32_scores_close_to_float64():
    net = TinyNet(patch=2, side=8, seed=41)
    inputs, attributions, targets = make_batch(net, 3, seed=42)
    for name, function, options in CASES:
        wide = function(net.forward_fn, inputs, attributions, targets, net.explain_fn, generator=seeded(0),
                        **options).scores[name]
        narrow = function(net.forward_fn, inputs.float(), attributions.float(), targets, net.explain_fn,
                          generator=seeded(0), **options).scores[name]
        assert narrow.dtype == torch.float32
        torch.testing.assert_close(narrow.double(), wide, rtol=1e-3, atol=1e-3)


def test_undefined_scores_are_nan():
    net = TinyNet(patch=2, side=8, seed=43, gain=4.0)
    inputs, attributions, targets = make_batch(net, 3, seed=44)
    zero = attributions.clone()
    zero[1] = 0.0
    for function, name in ((max_sensitivity, "max_sensitivity"), (avg_sensitivity, "avg_sensitivity"),
                           (local_lipschitz, "local_lipschitz")):
        value = function(net.forward_fn, inputs, zero, targets, net.explain_fn, generator=seeded(0)).scores[name]
        assert torch.isnan(value[1]) and torch.isfinite(value[[0, 2]]).all(), name
    raw = local_lipschitz(net.forward_fn, inputs, zero, targets, net.explain_fn, normalize=False, generator=seeded(0))
    assert torch.isfinite(raw.local_lipschitz).all()  # the raw estimate is defined for a zero map

    def flipping(x, keep):  # the prediction follows the sign of the first pixel's noise
        value = (x[:, 0, 0, 0] - inputs[0, 0, 0, 0]) * 1e6
        return torch.stack([value, -value], 1).softmax(-1)
    ris = relative_input_stability(flipping, inputs[:1], attributions[:1], targets[:1], net.explain_fn,
                                   n_samples=1, generator=seeded(0)).relative_input_stability
    assert torch.isnan(ris).all()  # the only sample changed the prediction: no sample kept
    constant = attributions.clone()
    constant[2] = 0.4
    rl = random_logit(net.forward_fn, inputs, constant, targets, net.explain_fn, generator=seeded(0)).random_logit
    mp = emprt(None, inputs, constant, targets, net.explain_fn).emprt
    for value in (rl, mp):
        assert torch.isnan(value[2]) and torch.isfinite(value[:2]).all()
    one_class = random_logit(None, inputs, attributions, targets, net.explain_fn, n_classes=1).random_logit
    assert torch.isnan(one_class).all()


CLASSES = [(MaxSensitivity, max_sensitivity, "robustness"), (AvgSensitivity, avg_sensitivity, "robustness"),
           (LocalLipschitz, local_lipschitz, "robustness"),
           (RelativeInputStability, relative_input_stability, "robustness"),
           (RandomLogit, random_logit, "randomisation"), (EMPRT, emprt, "randomisation")]


@pytest.mark.parametrize("cls, function, group", CLASSES)
def test_registered_class_shares_options_defaults_and_declares_its_cost(cls, function, group):
    class_options = {name: p.default for name, p in inspect.signature(cls).parameters.items()}
    function_options = {name: p.default for name, p in inspect.signature(function).parameters.items()
                        if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "generator"}
    assert class_options == function_options
    name = cls.main_score
    assert METRICS.get(name) is cls and cls.group == group and cls.needs_explainer and not cls.needs_ground_truth
    assert cls.higher_is_better is (name == "emprt")
    assert cls.nan_reason
    metric = METRICS.create(name)
    assert metric.explained_per_image() == (10 if group == "robustness" else 1)
    net = TinyNet(seed=45)
    inputs, attributions, targets = make_batch(net, 2, seed=46)
    with pytest.raises(ValueError, match="re-runs the explainer"):
        metric(net.forward_fn, inputs, attributions, targets, generator=seeded(0))
    direct = function(net.forward_fn, inputs, attributions, targets, net.explain_fn, generator=seeded(1))
    registered = metric(net.forward_fn, inputs, attributions, targets, None, seeded(1), net.explain_fn)
    assert type(registered) is MetricResult and list(registered.scores) == [name]
    torch.testing.assert_close(direct.scores[name], registered.scores[name], rtol=0, atol=0)
    assert direct.n_forward == registered.n_forward
    torch.testing.assert_close(metric.compute()[name], registered.scores[name].nanmean())


@pytest.mark.parametrize("name, options, named", [
    ("max_sensitivity", {"n_samples": 0}, "n_samples"),
    ("avg_sensitivity", {"radius": 0.0}, "radius"),
    ("avg_sensitivity", {"radius": "0.1"}, "radius"),
    ("local_lipschitz", {"normalize": 1}, "normalize"),
    ("local_lipschitz", {"batch_size": 0}, "batch_size"),
    ("relative_input_stability", {"p": 0.5}, "p"),
    ("relative_input_stability", {"eps_min": 0.0}, "eps_min"),
    ("random_logit", {"similarity": "pearson"}, "similarity"),
    ("random_logit", {"ssim_window": 4}, "ssim_window"),
    ("random_logit", {"n_classes": 0}, "n_classes"),
    ("emprt", {"n_bins": 1}, "n_bins"),
    ("emprt", {"n_bins": 2.0}, "n_bins"),
])
def test_bad_options_name_themselves(name, options, named):
    with pytest.raises(XaibenchError, match=f"metric option {named}="):
        METRICS.create(name, **options)


def test_a_wrong_explain_fn_shape_is_named():
    net = TinyNet(seed=47)
    inputs, attributions, targets = make_batch(net, 2, seed=48)
    with pytest.raises(XaibenchError, match=r"explain_fn must return attributions \[2, 16\]"):
        max_sensitivity(None, inputs, attributions, targets, lambda x, t: x.flatten(1), n_samples=1)
    with pytest.raises(XaibenchError, match="ssim needs a square grid"):
        random_logit(None, inputs, attributions[:, :15], targets, lambda x, t: x.flatten(1)[:, :15],
                     similarity="ssim", n_classes=3)
