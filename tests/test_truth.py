"""The model-truth benchmark: the objects dataset re-renders exactly, the exact object Shapley values are exact
(checked on a model whose truth is known in closed form), the agreement metric, and a tiny run end to end."""
from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from xaibench.data import create_dataset
from xaibench.data.objects import BACKGROUND, BLOCK, SHAPES, evidence_score, make_objects
from xaibench.engine.truth import (
    gate_rows,
    gate_values,
    measure_rows,
    object_truth,
    shapley_matrix,
    subset_masks,
    target_log_odds,
)
from xaibench.metrics import GameTruth, create_metric, object_agreement
from xaibench.models.base import MaskedClassifier


@pytest.fixture(scope="module")
def test_split():
    return create_dataset("objects", "test", n_samples=40, seed=3)


def test_objects_follow_the_rule_and_tile_whole_patches(test_split):
    shapes, labels = test_split.shapes, test_split.labels
    counts = (shapes >= 0).sum(dim=1)
    assert counts.min() >= 3 and counts.max() <= 6
    for row, label in zip(shapes.tolist(), labels.tolist()):
        score = evidence_score([SHAPES[s] for s in row if s >= 0])
        assert score != 0 and (score > 0) == bool(label)
    patches = test_split.object_patches(torch.arange(len(test_split)))
    for b in range(len(test_split)):  # every present object covers BLOCK x BLOCK patches, no patch twice
        for k in range(6):
            assert int((patches[b] == k).sum()) == (BLOCK * BLOCK if shapes[b, k] >= 0 else 0)
    pixels = test_split.images[:, 0].float()
    outside = patches.view(-1, 7, 7).repeat_interleave(4, 1).repeat_interleave(4, 2) < 0
    assert torch.all(pixels[outside] == round(BACKGROUND * 255))  # a flat background


def test_render_reproduces_the_images_and_removes_objects_exactly(test_split):
    indices = torch.arange(len(test_split))
    every = torch.ones(1, 1, 6, dtype=torch.bool)
    assert torch.equal(test_split.render(indices, every)[:, 0], test_split.images)
    none = test_split.render(indices, torch.zeros(1, 1, 6, dtype=torch.bool))
    assert torch.all(none == round(BACKGROUND * 255))
    without_first = torch.ones(1, 1, 6, dtype=torch.bool)
    without_first[..., 0] = False
    redrawn = test_split.render(indices, without_first)[:, 0, 0]
    first = test_split.object_patches(indices).view(-1, 7, 7).repeat_interleave(4, 1).repeat_interleave(4, 2) == 0
    assert torch.all(redrawn[first] == round(BACKGROUND * 255))
    assert torch.equal(redrawn[~first], test_split.images[:, 0][~first])


def test_the_same_seed_draws_the_same_scenes():
    a, b = make_objects(30, seed=5), make_objects(30, seed=5)
    assert all(np.array_equal(a[name], b[name]) for name in a)
    assert not np.array_equal(a["shapes"], make_objects(30, seed=6)["shapes"])


def _brute_force_shapley(v: dict[frozenset, float], n: int) -> list[float]:
    """Shapley values by averaging marginal contributions over all n! orderings."""
    phi = [0.0] * n
    orders = list(itertools.permutations(range(n)))
    for order in orders:
        coalition: frozenset = frozenset()
        for player in order:
            phi[player] += v[coalition | {player}] - v[coalition]
            coalition = coalition | {player}
    return [value / len(orders) for value in phi]


def test_shapley_matrix_matches_the_permutation_definition():
    n = 4
    rng = np.random.default_rng(0)
    values = torch.tensor(rng.normal(size=2**n), dtype=torch.float64)
    members = subset_masks(n)
    game = {frozenset(np.flatnonzero(members[code].numpy()).tolist()): float(values[code]) for code in range(2**n)}
    expected = _brute_force_shapley(game, n)
    assert torch.allclose(values @ shapley_matrix(n), torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    assert math.isclose(float((values @ shapley_matrix(n)).sum()), float(values[-1] - values[0]), abs_tol=1e-12)


def test_target_log_odds_is_log_p_over_one_minus_p():
    logits = torch.tensor([[0.3, -1.2, 2.0], [1.0, 1.0, 1.0]])
    targets = torch.tensor([2, 0])
    p = logits.double().softmax(dim=1).gather(1, targets[:, None])[:, 0]
    assert torch.allclose(target_log_odds(logits, targets), torch.log(p / (1 - p)))


class AdditiveModel(MaskedClassifier):
    """A model whose truth is known: logit of class 1 = sum over patches of w_p * (mean pixel - background), a
    masked patch counting as background. Its target log-odds (2 classes, logits [-s/2, s/2]) = +-s, additive over
    objects, so each object's exact Shapley value is its own contribution."""

    family = "vit"

    def __init__(self):
        super().__init__(28, 4, 1, 2)
        self.weights = nn.Parameter(torch.linspace(-1, 1, 49), requires_grad=False)
        self.background = (round(BACKGROUND * 255) / 255 - 0.5) / 0.5  # the background as drawn (uint8)

    def patch_means(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x, 4).flatten(1) - self.background

    def forward(self, x, keep_mask=None):
        means = self.patch_means(x)
        if keep_mask is not None:
            means = means * keep_mask
        s = (means * self.weights).sum(dim=1)
        return torch.stack([-s / 2, s / 2], dim=1)


def test_exact_shapley_values_equal_a_known_additive_truth(test_split):
    model = AdditiveModel()
    indices = torch.arange(12)
    targets = torch.ones(12, dtype=torch.long)
    truth = object_truth(model, test_split, indices, targets, torch.device("cpu"), batch=100)
    x = (test_split.images[indices].float() / 255 - 0.5) / 0.5
    contribution = model.patch_means(x).double() * model.weights.double()
    patches = truth["patches"]
    for b in range(12):
        for k in range(6):
            if test_split.shapes[b, k] < 0:
                assert math.isnan(truth["shapley"][b, k])
            else:
                expected = float(contribution[b][patches[b] == k].sum())
                assert math.isclose(float(truth["shapley"][b, k]), expected, rel_tol=1e-5, abs_tol=1e-5)
    # removing an object by masking its patches = removing it by re-rendering, for this model
    gates = gate_values(truth, accuracy=1.0)
    assert gates["removal_agreement"] > 0.999999 and gates["background_shift"] < 1e-6
    # the reference map spreads each object's value over its 4 patches; the background gets 0
    assert torch.allclose(truth["reference"][patches < 0], torch.zeros(()))
    sums = torch.zeros(12, 6).scatter_add_(1, patches.clamp(min=0), torch.where(patches >= 0, truth["reference"], 0.))
    assert torch.allclose(sums, torch.nan_to_num(truth["shapley"]).float(), atol=1e-5)


def test_efficiency_holds_for_a_trained_looking_network(test_split):
    from xaibench.models import create_model

    torch.manual_seed(0)
    model = create_model("ofa", num_classes=2, in_chans=1, img_size=28, depth=1, embed_dim=32, num_heads=2).eval()
    indices = torch.arange(6)
    truth = object_truth(model, test_split, indices, test_split.labels[indices], torch.device("cpu"))
    total = torch.nansum(truth["shapley"], dim=1)
    assert torch.allclose(total, truth["values"][:, -1] - truth["values"][:, 0], atol=1e-9)


def test_gate_failures_name_the_gate_and_its_threshold():
    from xaibench.tables import gate_warnings

    measured = {"accuracy": 0.9, "removal_agreement": float("nan"), "background_shift": 0.9,
                "distractor_share": 0.9, "background_share": 0.4}
    lines = gate_warnings(pd.DataFrame(gate_rows("objects", 0, measured)))
    assert len(lines) == 2 and "accuracy" in lines[0] and ">= 0.95" in lines[0] and "removal_agreement" in lines[1]
    # the background and distractor figures are measured shares, not gates: no threshold, never a warning
    shares = measure_rows("objects", 0, measured)
    assert [row["measure"] for row in shares] == ["background_share", "background_shift", "distractor_share"]
    assert {row["gate"] for row in gate_rows("objects", 0, measured)} == {"accuracy", "removal_agreement"}


def test_object_agreement_ranks_and_signs():
    patches = torch.tensor([[0, 0, 1, 1, 2, -1], [0, 1, 2, 3, -1, -1]])
    shapley = torch.tensor([[3.0, -1.0, 0.5, float("nan")], [1.0, 2.0, 3.0, 4.0]])
    exact = torch.tensor([[1.5, 1.5, -0.5, -0.5, 0.5, 9.0], [1.0, 2.0, 3.0, 4.0, -7.0, 5.0]])
    rank, sign = object_agreement(exact, patches, shapley)
    assert torch.allclose(rank, torch.ones(2, dtype=torch.float64)) and torch.allclose(sign, torch.ones(2).double())
    rank, sign = object_agreement(-exact, patches, shapley)
    assert torch.allclose(rank, -torch.ones(2, dtype=torch.float64))
    assert math.isclose(float(sign[0]), 0.0) and math.isclose(float(sign[1]), 0.0)
    unsigned = exact.abs()  # counter-evidence made positive: the rank breaks, one sign of three is wrong
    rank, sign = object_agreement(unsigned, patches, shapley)
    assert float(rank[0]) < 1 and math.isclose(float(sign[0]), 2 / 3)
    metric = create_metric("truth")
    out = metric(None, torch.zeros(2, 1, 28, 28), exact, torch.zeros(2, dtype=torch.long),
                 GameTruth(patches, shapley, 4, patches, shapley))  # a game of the objects alone
    assert list(out.scores) == ["truth_rank", "truth_wtau", "truth_top1", "truth_bottom1", "truth_sign",
                                "truth_rank_objects", "truth_sign_objects"]
    assert torch.equal(out.scores["truth_rank"], out.scores["truth_rank_objects"])
    with pytest.raises(ValueError, match="game truth"):
        metric(None, torch.zeros(2, 1, 28, 28), exact, torch.zeros(2, dtype=torch.long), None)


def test_rank_agreement_matches_scipy_per_image():
    from scipy.stats import spearmanr

    generator = torch.Generator().manual_seed(0)
    patches = torch.arange(6).repeat_interleave(2)[None].expand(5, -1).clone()
    attributions = torch.randn(5, 12, generator=generator)
    shapley = torch.randn(5, 6, generator=generator)
    rank, _ = object_agreement(attributions, patches, shapley)
    mass = attributions.view(5, 6, 2).sum(dim=2)
    for b in range(5):
        assert math.isclose(float(rank[b]), spearmanr(mass[b], shapley[b]).statistic, abs_tol=1e-6)


def manifest_units(out) -> list[str]:
    return list(json.loads((out / "manifest.json").read_text())["units"])


def test_permuted_labels_keep_the_test_split_and_change_the_key():
    from xaibench.training import DataSpec

    spec = DataSpec("objects", 28, None, {"n_samples": 40})
    permuted = spec.permuted(0)
    assert permuted.key() != spec.key()
    train, shuffled = spec.load("train"), permuted.load("train")
    assert torch.equal(train.images, shuffled.images) and not torch.equal(train.labels, shuffled.labels)
    assert sorted(train.labels.tolist()) == sorted(shuffled.labels.tolist())
    assert torch.equal(spec.load("test").labels, permuted.load("test").labels)
    assert torch.equal(permuted.load("train").labels, shuffled.labels)  # seeded


def test_a_tiny_run_writes_truth_gates_and_sanity(tmp_path, tiny_config):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "xaibench.cli", "run", "--config", str(tiny_config), "--datasets", "objects",
               "--methods", "ofa,grad,random", "--set", "data.objects.n_samples=48", "--set", "run.sanity_images=4",
               "--set", "run.sanity_data=true",
               "--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet", "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("truth.md", "truth.csv", "gates.csv", "gates.md", "sanity.md", "sanity.csv", "table2.md", "ci.csv"):
        assert (out / name).is_file(), name
    table2 = (out / "table2.md").read_text()
    assert "Reference (exact Shapley)" in table2
    truth = (out / "truth.md").read_text()
    assert "Objects Rank" in truth and "Kendall tau" in truth
    gates = pd.read_csv(out / "gates.csv")
    assert set(gates["gate"]) == {"accuracy", "removal_agreement"}
    game = pd.read_csv(out / "game.csv").set_index("measure")["value"]
    assert set(game.index) == {"background_share", "background_shift", "distractor_share"}
    assert 0 <= game["background_share"] <= 1
    # a tiny network trained for 6 steps fails the accuracy gate: the run says so, in the log and the tables
    assert not gates.set_index("gate").loc["accuracy", "holds"]
    assert "gate accuracy fails" in done.stderr and "gate accuracy fails" in table2
    sanity = pd.read_csv(out / "sanity.csv")
    random_rows = sanity[sanity["method"] == "random"]
    assert len(random_rows) and np.allclose(random_rows["spearman"], 1.0)  # its maps ignore the model
    assert set(sanity["test"]) == {"model", "data"}
    assert list(sanity.loc[sanity["test"] == "data", "stage"].unique()) == ["data randomization"]
    markdown = (out / "sanity.md").read_text()
    assert "FAIL" in markdown and "model verdict" in markdown and "data verdict" in markdown
    assert "train objects/seed0/ofa" in manifest_units(out) and len(
        [label for label in manifest_units(out) if label.startswith("train objects/seed0/ofa")]) == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert {row["gate"] for row in manifest["gates"]} == set(gates["gate"])
    scores = pd.read_csv(out / "scores_long.csv")
    assert {"truth_rank", "truth_wtau", "truth_top1", "truth_bottom1", "truth_sign", "truth_rank_objects",
            "truth_sign_objects"} <= set(scores["metric"])
    assert not ((scores["method"] == "reference") & scores["metric"].str.startswith("truth")).any()
