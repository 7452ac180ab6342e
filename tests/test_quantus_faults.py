"""Quantus 0.6.0's faulty implementations (issue 25), each shown on a minimal input.

Every test asserts what Quantus 0.6.0 really does, so it FAILS once Quantus is fixed; the correct value for the same
input is stated in the test (and, where xaibench computes it, pinned by xaibench's own tests: see
docs/metrics.md). Tiny torch models with channel-first inputs, a few pixels each; no xaibench code involved.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

# Quantus 0.6.0 calls np.trapz (gone in NumPy 2.4) and np.NaN (gone in NumPy 2.0): that it needs this shim is
# itself fault (9), shown by test_quantus_numpy_2_removed_names below.
if not hasattr(np, "trapz"):
    np.trapz = np.trapezoid
if not hasattr(np, "NaN"):
    np.NaN = np.nan
quantus = pytest.importorskip("quantus")

pytestmark = pytest.mark.filterwarnings("ignore")


class Linear(torch.nn.Module):
    """Two logits: [w . x, 0]; records every input it is fed."""

    def __init__(self, w):
        super().__init__()
        self.register_buffer("w", torch.as_tensor(np.asarray(w), dtype=torch.float32).flatten())
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        s = (x.flatten(1) * self.w).sum(1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


class Constant(torch.nn.Module):
    """Two logits, [bias0, bias1], whatever the input (predicts class 0 when bias0 > bias1)."""

    def __init__(self, bias=(1.0, 0.0)):
        super().__init__()
        self.register_buffer("bias", torch.tensor(bias))

    def forward(self, x):
        return self.bias.expand(x.shape[0], 2).clone()


def run(metric, model, x, y, a=None, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric(model=model if model is None else model.eval(), x_batch=x, y_batch=np.asarray(y),
                      a_batch=a, device="cpu", **kwargs)


# (1) Monotonicity (Arya et al. 2019): monotonicity.py:338-353 writes the baseline into the baseline image.
def test_quantus_monotonicity_never_inserts_the_input():
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
    w = np.array([1.0, -1.0] * 8, dtype=np.float32)  # half the pixels push the logit down
    a = -np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)  # insertion order (ascending a): pixel 15, 14, ..., 0
    model = Linear(w)
    score = run(quantus.Monotonicity(perturb_baseline=0.0, normalise=False, disable_warnings=True), model, x, [0], a,
                softmax=False)
    assert score == [True]
    # x never reaches the model: each of the 16 inputs is the all-baseline image
    assert len(model.seen) == 16 and all(float(s.abs().max()) == 0.0 for s in model.seen)
    # the paper's curve: insert pixels 15, 14, ... of x into the baseline; logit -16, -1, -15, -2, ...: not monotone
    order, kept, curve = np.argsort(a.ravel()), np.zeros(16, np.float32), []
    for i in order:
        kept[i] = x.ravel()[i]
        curve.append(float(kept @ w))
    assert not np.all(np.diff(curve) >= 0)  # correct answer: False


# (2a) ROAD (Rong et al. 2022): road.py:260 sets a_size = H*W, road.py:326-329 draws indices into C*H*W, and
# noisy_linear_imputation (perturb_func.py:750-753) indexes the per-channel H*W array with them.
@pytest.mark.parametrize("map_channels", [3, 1])
def test_quantus_road_raises_on_3_channel_images(map_channels):
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 8, 8), dtype=np.float32)
    a = rng.random((1, map_channels, 8, 8), dtype=np.float32)
    with pytest.raises(IndexError, match="out of bounds for axis 0 with size 64"):
        run(quantus.ROAD(percentages=[50], disable_warnings=True), Constant(), x, [0], a)


# (2b) ROAD: custom_postprocess (road.py:280) averages self.evaluation_scores[0], the first batch only.
def test_quantus_road_scores_only_the_first_batch():
    rng = np.random.default_rng(0)
    x = rng.random((4, 1, 8, 8), dtype=np.float32)
    a = rng.random((4, 1, 8, 8), dtype=np.float32)
    y = [0, 0, 1, 1]  # the model always says 0: images 0, 1 are always right, images 2, 3 always wrong
    metric = quantus.ROAD(percentages=[10, 50], disable_warnings=True)
    assert run(metric, Constant(), x, y, a, batch_size=2) == {10: 1.0, 50: 1.0}  # correct: 0.5 at every percentage
    assert run(metric, Constant(), x, y, a, batch_size=4) == {10: 0.5, 50: 0.5}


# (3) Sensitivity-N (Ancona et al. 2018): sensitivity_n.py:326-334 correlates, for each step, across the images of
# the first batch (pearsonr(..., axis=1) on [steps, B]); the paper correlates within one image over random subsets.
def test_quantus_sensitivity_n_correlates_across_the_images_of_a_batch():
    rng = np.random.default_rng(0)
    x = rng.random((3, 1, 2, 2), dtype=np.float32) + 0.5
    w = np.array([1.0, -2.0, 3.0, 0.5], dtype=np.float32)
    a = x * w.reshape(1, 1, 2, 2)  # exact contributions of an additive model: the paper's value is 1 per image and N
    metric = quantus.SensitivityN(perturb_baseline=0.0, normalise=False, n_max_percentage=1.0, return_aggregate=False,
                                  disable_warnings=True)
    scores = np.asarray(run(metric, Linear(w), x, [0, 0, 0], a, softmax=False, batch_size=3))
    assert scores.shape == (4,)  # one number per step N, none per image

    # What Quantus computes: at step k (k removed pixels, by descending a), over the images of the batch,
    # corr(f(x) - f(x without the top k), a of the k-th pixel alone) -- the second term is not even the sum of a.
    ranked = -np.sort(-a.reshape(3, -1), axis=1)
    deltas, single = np.cumsum(ranked, axis=1), ranked
    across = [np.corrcoef(deltas[:, k], single[:, k])[0, 1] for k in range(4)]
    assert np.allclose(scores, across, atol=1e-5)
    assert not np.allclose(scores, 1.0, atol=1e-3)  # correct: 1.0 at every N for every image

    # ... so the score depends on the batch size, and a batch of one cannot be scored at all
    pairs = np.asarray(run(metric, Linear(w), x, [0, 0, 0], a, softmax=False, batch_size=2))
    assert np.allclose(np.abs(pairs), 1.0) and not np.allclose(pairs, scores)
    with pytest.raises(ValueError, match="length at least 2"):
        run(metric, Linear(w), x[:1], [0], a[:1], softmax=False, batch_size=1)


# (4) Infidelity (Yeh et al. 2019): infidelity.py:352-396 repeats n_perturb_samples times the same deterministic
# sequence: patches deleted one after another in raster order (x_perturbed is never reset inside the block loop).
def test_quantus_infidelity_is_a_deterministic_cumulative_deletion():
    rng = np.random.default_rng(0)
    x = rng.random((1, 1, 4, 4), dtype=np.float32) + 1.0
    w = rng.standard_normal(16).astype(np.float32)
    a = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    scores, models = {}, {}
    for n in (1, 5):
        np.random.seed(n)
        torch.manual_seed(n)
        models[n] = Linear(w)
        metric = quantus.Infidelity(perturb_baseline=0.0, perturb_patch_sizes=[2], n_perturb_samples=n,
                                    disable_warnings=True)
        scores[n] = float(run(metric, models[n], x, [0], a, softmax=False)[0])
    assert scores[1] == pytest.approx(scores[5], rel=1e-6)  # 5 "samples" are 5 copies of one
    removed = [int((s == 0).sum()) for s in models[5].seen[1:]]
    assert removed == [4, 8, 12, 16] * 5  # nested deletions, the last one the whole image

    # Quantus's value is this loop: mean over k of ((w - a) . (x - x with the first k 2x2 blocks zeroed))^2
    blocks = [(r, c) for r in (0, 2) for c in (0, 2)]

    def block_mask(chosen):
        mask = np.zeros((4, 4), bool)
        for r, c in chosen:
            mask[r:r + 2, c:c + 2] = True
        return mask

    terms = [float((w - a.ravel()) @ np.where(block_mask(blocks[:k]), x[0, 0], 0.0).ravel()) ** 2
             for k in range(1, 5)]
    assert scores[1] == pytest.approx(np.mean(terms), rel=1e-5)
    # correct (Yeh et al.): E_I[((w - a) . I)^2] over random I. With I = x on a uniform random subset of the four
    # blocks (exact over the 16 subsets) that is 41.88 here; with I ~ N(0, s^2 Id) it is s^2 |w - a|^2 = 16.69 s^2
    subsets = [[b for b, bit in zip(blocks, bits) if bit] for bits in np.ndindex(2, 2, 2, 2)]
    expectation = np.mean([float((w - a.ravel()) @ np.where(block_mask(chosen), x[0, 0], 0.0).ravel()) ** 2
                           for chosen in subsets])
    assert expectation == pytest.approx(41.883, abs=1e-3) and scores[1] == pytest.approx(62.778, abs=1e-3)


# (4b) Infidelity: infidelity.py:369-375 takes block indices from the padded array, applies them to the unpadded one
# and reshapes the result to the padded shape, which fails whenever the patch does not tile the image.
def test_quantus_infidelity_raises_when_the_patch_does_not_tile_the_image():
    x = np.ones((1, 1, 5, 5), dtype=np.float32)
    a = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
    metric = quantus.Infidelity(perturb_baseline=0.0, perturb_patch_sizes=[2], n_perturb_samples=1,
                                disable_warnings=True)
    with pytest.raises(ValueError, match="cannot reshape array of size 25 into shape"):
        run(metric, Linear(np.ones(25)), x, [0], a, softmax=False)


# (5) Pointing game (Zhang et al. 2018): pointing_game.py:296 writes NaN into a bool array, which stores True.
def test_quantus_pointing_game_counts_an_empty_mask_as_a_hit():
    a = np.arange(32, dtype=np.float64).reshape(2, 1, 4, 4)
    s = np.zeros((2, 1, 4, 4))
    s[0, 0, 0, 0] = 1  # image 0: the mask holds the minimum only, a miss; image 1: an empty mask
    scores = run(quantus.PointingGame(disable_warnings=True), None, np.zeros((2, 1, 4, 4)), [0, 0], a, s_batch=s)
    assert [bool(v) for v in scores] == [False, True]  # correct: [0, NaN] (nothing to point at)


# (6) MPRT (Adebayo et al. 2018): the original-vs-original entry is stored under "original" (mprt.py:341) but the
# average skips the key "orig" (mprt.py:407), so the self-correlation 1.0 enters the mean.
def test_quantus_mprt_average_includes_the_self_correlation():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)).eval()

    def explain(model, inputs, targets, **kwargs):  # input x weight of the target class
        inputs = np.asarray(inputs)
        w = model[1].weight.detach().numpy()[np.asarray(targets)]
        return (inputs.reshape(len(inputs), -1) * w).reshape(inputs.shape)

    x = np.random.default_rng(0).random((3, 1, 4, 4)).astype(np.float32)
    y = np.zeros(3, dtype=int)
    a = explain(model, x, y)
    layers = run(quantus.MPRT(disable_warnings=True), model, x, y, a, explain_func=explain)
    assert list(layers) == ["original", "1"] and layers["original"] == [1.0, 1.0, 1.0]
    average = run(quantus.MPRT(return_average_correlation=True, disable_warnings=True), model, x, y, a,
                  explain_func=explain)
    rho = np.asarray(layers["1"])  # correct average over the one randomised layer: rho itself
    assert np.allclose(average, (1.0 + rho) / 2) and not np.allclose(average, rho)


# (7) Normalisation: base.py:452-453 applies normalise_by_max to the whole a_batch of the call, and
# normalise_func.py:42-49 takes one max over all axes, the batch axis included.
@pytest.mark.parametrize("batch_size", [64, 1])
def test_quantus_normalisation_divides_the_batch_by_one_maximum(batch_size):
    a = np.array([0.6, 0.7, 0.8, 0.9]).reshape(1, 1, 2, 2).repeat(2, axis=0)
    a[1] *= 10.0  # a neighbour ten times larger
    metric = quantus.EffectiveComplexity(eps=0.5, disable_warnings=True)
    alone = run(metric, None, np.zeros((1, 1, 2, 2)), [0], a[:1], batch_size=batch_size)
    together = run(metric, None, np.zeros((2, 1, 2, 2)), [0, 0], a, batch_size=batch_size)
    assert list(alone) == [4] and list(together) == [0, 4]  # correct: 4 for image 0 either way


# (8) AUCs: utils.py:1032 integrates with np.trapz(dx=1), so a curve of K points spans K - 1 units, not [0, 1].
def test_quantus_pixel_flipping_auc_grows_with_the_step_count():
    rng = np.random.default_rng(0)
    x = rng.random((1, 1, 4, 4), dtype=np.float32)
    a = rng.random((1, 1, 4, 4), dtype=np.float32)
    aucs = [run(quantus.PixelFlipping(features_in_step=k, return_auc_per_sample=True, disable_warnings=True),
                Constant((0.0, 0.0)), x, [0], a)[0] for k in (1, 2, 4, 8)]  # 16, 8, 4, 2 curve points
    assert np.allclose(aucs, [7.5, 3.5, 1.5, 0.5])  # correct: 0.5 each (p = 0.5 over the removed fraction 0..1)


# (9) NumPy: utils.py:1032 calls np.trapz (removed in NumPy 2.4) and continuity.py:364 np.NaN (removed in 2.0);
# the wheel only asks numpy>=1.19.5, so a fresh install raises here without the shim at the top of this file.
def test_quantus_numpy_2_removed_names(monkeypatch):
    x = np.random.default_rng(0).random((1, 1, 4, 4)).astype(np.float32)

    def explain(model, inputs, targets, **kwargs):
        return np.broadcast_to(np.arange(1.0, 17.0).reshape(1, 1, 4, 4), np.shape(inputs)).copy()

    monkeypatch.delattr(np, "trapz", raising=False)
    monkeypatch.delattr(np, "NaN", raising=False)
    with pytest.raises(AttributeError, match="trapz"):
        run(quantus.PixelFlipping(features_in_step=8, return_auc_per_sample=True, disable_warnings=True),
            Constant(), x, [0], x)
    with pytest.raises(AttributeError, match="NaN"):
        run(quantus.Continuity(nr_steps=2, return_nan_when_prediction_changes=True, disable_warnings=True),
            Constant(), x, [0], explain_func=explain)
