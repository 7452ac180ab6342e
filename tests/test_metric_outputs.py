"""Choosing metrics (names, globs, families), the unit kind of metrics that re-run the method, the methods x metrics
table with its mean rank and notes, and the truth's verdict on the metrics (Kendall's tau, Krippendorff's alpha)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import kendalltau

from xaibench.metrics import MetricResult
from xaibench.metrics.catalog import main_scores, metric_groups, resolve_metrics
from xaibench.metrics.stateful import Metric
from xaibench.registry import METRICS, UnknownNameError
from xaibench.tables.metric_tables import MEAN_RANK, metrics_table
from xaibench.tables.validity import _kendall_tau_b, krippendorff_alpha, metric_validity


class ExplainAgain(Metric):
    """Test metric: the largest change of the map when the method explains the same images again."""

    main_score = "explain_again"
    group = "robustness"
    needs_explainer = True
    higher_is_better = False

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None,
                 explain_fn=None) -> MetricResult:
        again = explain_fn(inputs, targets)
        return MetricResult({"explain_again": (again - attributions).abs().amax(dim=1)})


@pytest.fixture
def explain_again():
    METRICS.register("explain_again", ExplainAgain)
    yield "explain_again"
    METRICS._entries.pop("explain_again", None)


def test_families_globs_and_all_resolve():
    groups = metric_groups()
    assert {"faithfulness", "localisation", "truth"} <= set(groups)
    assert resolve_metrics("faithfulness.*") == groups["faithfulness"]
    assert resolve_metrics("localisation") == groups["localisation"]
    assert resolve_metrics("srg,faithfulness.*")[0] == "srg"
    assert resolve_metrics("all") == METRICS.names()
    assert resolve_metrics("faithfulness.*srg") == [m for m in groups["faithfulness"] if m.endswith("srg")]


@pytest.mark.parametrize("bad, named", [("nosuch", "valid names"), ("nofamily.*", "families"),
                                        ("truth.zzz*", "truth metrics")])
def test_unknown_metric_or_family_names_the_valid_ones(bad, named):
    with pytest.raises(UnknownNameError, match=named):
        resolve_metrics(bad)


def test_unknown_family_exits_2_on_the_command_line(tiny_config, tmp_path, run_cli, capsys):
    assert run_cli(tiny_config, tmp_path / "out", tmp_path / "cache", "--metrics", "nofamily.*", "--dry-run") == 2
    assert "families" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_metric_that_reexplains_gets_its_own_unit_and_cost(explain_again, tiny_config, tmp_path, run_cli):
    out = tmp_path / "out"
    assert run_cli(tiny_config, out, tmp_path / "cache", "--methods", "grad,random", "--metrics", "srg,explain_again",
                   "--no-figures") == 0
    scores = pd.read_csv(out / "scores_long.csv")
    again = scores[scores["metric"] == "explain_again"]
    assert set(again["method"]) == {"grad", "random"} and len(again) == 16
    assert again[again["method"] == "grad"]["value"].max() < 1e-5  # the gradient is deterministic
    assert again[again["method"] == "random"]["value"].min() > 0  # the random map is drawn anew
    costs = pd.read_csv(out / "cost_metrics.csv").set_index("metric")
    assert costs.loc["explain_again", "explained_per_image"] == 1.0
    assert costs.loc["srg", "explained_per_image"] == 0.0 and costs.loc["srg", "forward_per_image"] > 0
    table = (out / "metrics.md").read_text()
    assert "explain_again" in table and MEAN_RANK in table


def test_the_plain_run_writes_no_metric_outputs(tiny_config, tmp_path, run_cli):
    out = tmp_path / "out"
    assert run_cli(tiny_config, out, tmp_path / "cache", "--methods", "grad", "--no-figures") == 0
    assert not (out / "metrics.md").exists() and not (out / "cost_metrics.csv").exists()


def _frame(values: dict[tuple[str, str], list[float]], dataset: str = "objects", seed: int = 0) -> pd.DataFrame:
    rows = [{"dataset": dataset, "seed": seed, "method": method, "image": image, "label": 0, "target": 0,
             "metric": metric, "value": value}
            for (method, metric), scores in values.items() for image, value in enumerate(scores)]
    return pd.DataFrame(rows)


def test_mean_rank_respects_each_metric_direction_and_notes_n_a_and_nan():
    scores = _frame({("a", "srg"): [3, 3], ("b", "srg"): [2, 2], ("c", "srg"): [1, 1],
                     ("a", "deletion"): [0.9, 0.9], ("b", "deletion"): [0.1, 0.1], ("c", "deletion"): [0.5, np.nan]})
    table = metrics_table(scores, {"srg": True, "deletion": False, "plausibility": True}, ["a", "b", "c"],
                          ["objects"], unavailable={("objects", "plausibility"): "the dataset has no annotated region"})
    ranks = table[("Objects", MEAN_RANK)] if ("Objects", MEAN_RANK) in table else table.iloc[:, -1]
    # srg ranks a, b, c = 1, 2, 3; deletion (lower better) b, c, a = 1, 2, 3 -> means 2, 1.5, 2.5
    assert list(ranks) == ["2.00", "1.50", "2.50"]
    assert list(table.iloc[:, 2]) == ["n/a"] * 3
    notes = " ".join(table.attrs["notes"])
    assert "no annotated region" in notes and "1 of 6 image scores are NaN" in notes


def test_kendall_tau_b_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, (20, 7)).astype(float), rng.integers(0, 4, (20, 7)).astype(float)
    ours = _kendall_tau_b(x, y)
    for row in range(20):
        expected = kendalltau(x[row], y[row]).statistic
        assert ours[row] == pytest.approx(expected, abs=1e-12) or (np.isnan(ours[row]) and np.isnan(expected))


def test_validity_is_plus_one_for_the_truth_order_and_minus_one_reversed():
    judge = {("a", "truth_wtau"): [0.9, 0.8, 0.7], ("b", "truth_wtau"): [0.5, 0.6, 0.4],
             ("c", "truth_wtau"): [0.1, 0.2, 0.0]}
    agrees = {(m, "srg"): [v * 10 for v in values] for (m, _), values in judge.items()}
    reversed_ = {(m, "deletion"): values for (m, _), values in judge.items()}  # lower = better, so reversed
    validity = metric_validity(_frame({**judge, **agrees, **reversed_}), {"srg": True, "deletion": False},
                               ["a", "b", "c"], n_resamples=50).set_index(["seed", "metric"])
    assert validity.loc[(0, "srg"), "tau"] == pytest.approx(1.0)
    assert validity.loc[(0, "deletion"), "tau"] == pytest.approx(-1.0)
    assert validity.loc[("all", "srg"), "n_images"] == 3
    assert validity.loc[(0, "srg"), "alpha"] == pytest.approx(1.0)  # every image orders the methods alike


def test_alpha_is_low_when_images_disagree():
    rng = np.random.default_rng(1)
    wide = pd.DataFrame(rng.normal(size=(40, 5)), columns=list("abcde"))
    assert abs(krippendorff_alpha(wide)) < 0.2
    assert krippendorff_alpha(wide.iloc[:1]) != krippendorff_alpha(wide.iloc[:1])  # NaN with one image


def test_main_scores_give_each_metric_its_direction():
    scores = main_scores(["srg", "deletion", "plausibility"])
    assert scores == {"srg": True, "deletion": False, "plausibility": True}


def test_reexplain_needs_explain_fn():
    metric = ExplainAgain()
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="explain_fn"):
        metric(None, x, torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))


def test_an_objects_run_judges_its_metrics_by_the_truth(tiny_config, tmp_path, run_cli):
    out = tmp_path / "out"
    assert run_cli(tiny_config, out, tmp_path / "cache", "--datasets", "objects", "--methods", "ofa,grad,random",
                   "--metrics", "srg,deletion,truth", "--set", "data.objects.n_samples=48",
                   "--set", "run.meta_perturbations=1", "--set", "run.meta_images=4") == 0
    validity = pd.read_csv(out / "metric_validity.csv")
    assert set(validity["metric"]) == {"srg", "deletion"} and set(validity["seed"].astype(str)) == {"0", "all"}
    assert validity["tau"].between(-1, 1).all() and (validity["n_methods"] == 3).all()
    assert {"noise_resilience", "adversary_reactivity", "shift_minor", "alpha"} <= set(validity.columns)
    meta = pd.read_csv(out / "meta.csv")
    assert set(meta["perturbation"]) == {"none", "minor", "disruptive"}
    assert (out / "figures" / "metric_validity.png").exists() and (out / "figures" / "metric_agreement.png").exists()
    agreement = pd.read_csv(out / "metric_agreement.csv", index_col=0)
    assert agreement.loc["srg", "srg"] == pytest.approx(1.0)


def test_meta_properties_reward_a_ranking_that_survives_noise_and_breaks_under_destruction():
    from xaibench.tables.validity import meta_properties

    rows = []
    for method, base in zip("abc", (3.0, 2.0, 1.0)):
        rows.append(("none", 0, base))
        rows.append(("minor", 1, base + 0.01))  # the order kept
        rows.append(("disruptive", 1, 4.0 - base))  # the order reversed
    meta = pd.DataFrame([{"dataset": "objects", "seed": 0, "method": m, "metric": "srg", "perturbation": p, "k": k,
                          "value": v} for m, chunk in zip("abc", zip(*[iter(rows)] * 3)) for p, k, v in chunk])
    table = meta_properties(meta, {"srg": True}).set_index("seed")
    assert table.loc[0, "noise_resilience"] == pytest.approx(1.0)
    assert table.loc[0, "adversary_reactivity"] == pytest.approx(2.0)  # 1 - tau, tau = -1
    assert table.loc[0, "shift_minor"] == pytest.approx(0.005)


@pytest.mark.parametrize("steps", [2, 5, 17, None])
def test_curve_aucs_do_not_grow_with_the_step_count(steps):
    """Quantus 0.6.0 integrates with dx=1, so its AUC of a constant 0.5 is 7.5 at 16 points (tests/
    test_quantus_faults.py); xaibench integrates over the removed fraction: 0.5 at every step count."""
    from xaibench.metrics import deletion, insertion

    def constant(x, keep):
        return torch.full((x.shape[0], 2), 0.5, dtype=torch.float64)

    x, a, t = torch.rand(3, 1, 4, 4, dtype=torch.float64), torch.rand(3, 16), torch.zeros(3, dtype=torch.long)
    for curve in (deletion, insertion):
        assert torch.allclose(curve(constant, x, a, t, steps=steps).auc, torch.full((3,), 0.5, dtype=torch.float64))
