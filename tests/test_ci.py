"""Bootstrap confidence intervals over images (ci.csv, every table cell, summary.csv) and the per-seed Wilcoxon
families: against scipy.stats.bootstrap and scipy.stats.wilcoxon, deterministic, and in the files a run writes."""
import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import bootstrap, wilcoxon

from xaibench.engine.collect import Frames
from xaibench.engine.report import write_run_outputs
from xaibench.tables import (
    ALL_SEEDS,
    CI_COLUMNS,
    bootstrap_means,
    ci_generator,
    confidence_intervals,
    summary,
    table2,
    to_latex,
    to_markdown,
    wilcoxon_tests,
)

TRUE_MEANS = {"ofa": 0.30, "grad": 0.10, "attn": 0.20}


def random_scores(n_images=64, seeds=(0, 1, 2), datasets=("synthetic",), metrics=("srg", "rsrg"), sd=0.2,
                  generator_seed=0) -> pd.DataFrame:
    """Per-image scores drawn around TRUE_MEANS (normal, sd `sd`), long rows as the engine collects them."""
    rng = np.random.default_rng(generator_seed)
    parts = []
    for dataset in datasets:
        for seed in seeds:
            for method, mean in TRUE_MEANS.items():
                for metric in metrics:
                    parts.append(pd.DataFrame({"dataset": dataset, "seed": seed, "method": method,
                                               "image": np.arange(n_images), "label": 0, "target": 0,
                                               "metric": metric, "value": rng.normal(mean, sd, n_images)}))
    return pd.concat(parts, ignore_index=True)


def values_of(scores, **where) -> np.ndarray:
    mask = np.ones(len(scores), dtype=bool)
    for column, value in where.items():
        mask &= (scores[column] == value).to_numpy()
    return np.sort(scores.loc[mask, "value"].dropna().to_numpy())


def test_a_seed_interval_is_scipys_percentile_bootstrap_with_the_same_generator():
    scores = random_scores(n_images=50, seeds=(3,))
    ci = confidence_intervals(scores)
    row = ci[(ci["method"] == "grad") & (ci["metric"] == "rsrg") & (ci["seed"] == 3)].iloc[0]
    values = values_of(scores, method="grad", metric="rsrg")
    expected = bootstrap((values,), np.mean, n_resamples=1000, method="percentile", confidence_level=0.95,
                         rng=ci_generator(0, "synthetic", 3, 50))
    assert row["ci_low"] == pytest.approx(expected.confidence_interval.low, rel=1e-12)
    assert row["ci_high"] == pytest.approx(expected.confidence_interval.high, rel=1e-12)
    assert row["mean"] == pytest.approx(values.mean()) and row["n_images"] == 50
    # the vectorised counts x values product is scipy's bootstrap distribution itself
    distribution = bootstrap_means(values[:, None], 1000, ci_generator(0, "synthetic", 3, 50))[:, 0]
    np.testing.assert_allclose(distribution, expected.bootstrap_distribution, rtol=1e-12)


def test_the_pooled_interval_averages_independent_per_seed_resamples():
    scores = random_scores(n_images=40)
    ci = confidence_intervals(scores).set_index(["method", "metric", "seed"])
    per_seed = []
    for seed in (0, 1, 2):  # scipy's distribution per seed, from that seed's own generator
        values = values_of(scores, method="ofa", metric="srg", seed=seed)
        per_seed.append(bootstrap((values,), np.mean, n_resamples=1000, method="percentile",
                                  rng=ci_generator(0, "synthetic", seed, 40)).bootstrap_distribution)
    pooled = ci.loc[("ofa", "srg", ALL_SEEDS)]
    low, high = np.percentile(np.mean(per_seed, axis=0), [2.5, 97.5])
    assert (pooled["ci_low"], pooled["ci_high"]) == pytest.approx((low, high), rel=1e-12)
    means = [values_of(scores, method="ofa", metric="srg", seed=s).mean() for s in (0, 1, 2)]
    assert pooled["mean"] == pytest.approx(np.mean(means)) and pooled["n_images"] == 120
    # three independent seeds: the pooled interval is about 1/sqrt(3) as wide as one seed's
    widths = [ci.loc[("ofa", "srg", s), "ci_high"] - ci.loc[("ofa", "srg", s), "ci_low"] for s in (0, 1, 2)]
    assert (pooled["ci_high"] - pooled["ci_low"]) / np.mean(widths) == pytest.approx(3 ** -0.5, rel=0.15)


def test_intervals_cover_the_mean_with_the_normal_width():
    scores = random_scores(n_images=400, seeds=(0,), sd=0.2)
    ci = confidence_intervals(scores)
    assert list(ci.columns) == CI_COLUMNS
    assert ((ci["ci_low"] < ci["mean"]) & (ci["mean"] < ci["ci_high"])).all()
    widths = ci["ci_high"] - ci["ci_low"]
    assert widths.to_numpy() == pytest.approx(2 * 1.96 * 0.2 / np.sqrt(400), rel=0.15)


def test_same_scores_same_intervals_whatever_the_rest_of_the_frame():
    scores = random_scores(n_images=30)
    ci = confidence_intervals(scores)
    shuffled = confidence_intervals(scores.sample(frac=1.0, random_state=np.random.RandomState(1)))
    key = ["dataset", "method", "metric", "seed"]
    order = lambda frame: frame.assign(seed=frame["seed"].astype(str)).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(order(ci), order(shuffled))
    # another dataset and a dropped method change no interval of the cells that remain
    more = pd.concat([scores[scores["method"] != "attn"], random_scores(n_images=30, datasets=("breastmnist",))])
    kept = order(ci[ci["method"] != "attn"])
    pd.testing.assert_frame_equal(order(confidence_intervals(more).query("dataset == 'synthetic'")), kept)


def test_nan_scores_are_left_out_of_mean_count_and_interval():
    scores = random_scores(n_images=20, seeds=(0,), metrics=("plausibility",))
    with_nan = scores.copy()
    with_nan.loc[with_nan["image"] < 5, "value"] = np.nan  # one-class masks: no AUROC
    row = confidence_intervals(with_nan).query("method == 'ofa' and seed == 0").iloc[0]
    values = values_of(with_nan, method="ofa")
    expected = bootstrap((values,), np.mean, n_resamples=1000, method="percentile",
                         rng=ci_generator(0, "synthetic", 0, 15))
    assert row["n_images"] == 15 and row["mean"] == pytest.approx(values.mean())
    assert row["ci_low"] == pytest.approx(expected.confidence_interval.low, rel=1e-12)


def cell_numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+\.\d+", cell)]


def test_table_cells_read_mean_std_and_the_pooled_interval_x100():
    scores = random_scores(n_images=64)
    ci = confidence_intervals(scores).set_index(["method", "metric", "seed"])
    table = table2(scores, methods=list(TRUE_MEANS))
    cell = table.loc["Grad", ("Synthetic", "R-SRG")]
    assert re.fullmatch(r"-?\d+\.\d\d ± \d+\.\d\d \[-?\d+\.\d\d, -?\d+\.\d\d\]", cell), cell
    seed_means = [values_of(scores, method="grad", metric="rsrg", seed=s).mean() * 100 for s in (0, 1, 2)]
    pooled = ci.loc[("grad", "rsrg", ALL_SEEDS)]
    assert cell_numbers(cell) == pytest.approx([np.mean(seed_means), np.std(seed_means, ddof=1),
                                                pooled["ci_low"] * 100, pooled["ci_high"] * 100], abs=0.005)
    single = table2(scores[scores["seed"] == 1], methods=list(TRUE_MEANS)).loc["Grad", ("Synthetic", "R-SRG")]
    assert re.fullmatch(r"-?\d+\.\d\d \[-?\d+\.\d\d, -?\d+\.\d\d\]", single), single
    assert cell_numbers(single) == pytest.approx([seed_means[1], ci.loc[("grad", "rsrg", 1), "ci_low"] * 100,
                                                  ci.loc[("grad", "rsrg", 1), "ci_high"] * 100], abs=0.005)
    # given intervals are used as they are (the report computes them once for every table)
    assert table2(scores, methods=list(TRUE_MEANS), ci=confidence_intervals(scores)).equals(table)
    latex = to_latex(table, "c", "tab:t")
    assert "[" not in latex.split("\\begin{tabular}")[1] and "bootstrap confidence interval" in latex
    assert "OFA & \\textbf{" in latex and "textbf" not in latex.split("Grad")[1].split("\\\\")[0]  # OFA is best
    assert f"| Grad | {table.loc['Grad', ('Synthetic', 'SRG')]} | {cell} |" in to_markdown(table)


def test_summary_gains_the_pooled_interval_in_score_units():
    scores = random_scores(n_images=32)
    frame = summary(scores)
    ci = confidence_intervals(scores)
    pooled = ci[ci["seed"] == ALL_SEEDS].drop(columns=["seed", "n_images"])
    merged = frame.merge(pooled, on=["dataset", "method", "metric"], suffixes=("", "_ci"))
    assert len(merged) == len(frame) == 6
    np.testing.assert_allclose(merged["ci_low"], merged["ci_low_ci"])
    np.testing.assert_allclose(merged["mean"], merged["mean_ci"])
    assert (frame["ci_low"] < frame["mean"]).all() and (frame["mean"] < frame["ci_high"]).all()
    assert frame["ci_high"].max() < 1  # score units, not x 100


def test_wilcoxon_per_seed_families_and_the_pooled_one():
    scores = random_scores(n_images=30, seeds=(0, 1), metrics=("srg",))
    tests = wilcoxon_tests(scores, metrics=("srg",), methods=list(TRUE_MEANS))
    assert list(tests["seed"]) == [0] * 3 + [1] * 3 + [ALL_SEEDS] * 3
    assert list(tests["n"]) == [30] * 6 + [60] * 3
    seed1 = tests[tests["seed"] == 1].set_index(["method_a", "method_b"])
    a, b = values_of(scores, method="ofa", seed=1), values_of(scores, method="attn", seed=1)
    ordered = lambda m: scores[(scores["method"] == m) & (scores["seed"] == 1)].sort_values("image")["value"]
    expected = wilcoxon(ordered("ofa").to_numpy(), ordered("attn").to_numpy())
    assert seed1.loc[("ofa", "attn"), "p_value"] == pytest.approx(expected.pvalue)
    assert seed1.loc[("ofa", "attn"), "mean_diff_x100"] == pytest.approx(100 * (a.mean() - b.mean()))
    for seed, family in tests.groupby(tests["seed"].astype(str)):  # Holm within each (dataset, metric, seed)
        p = family["p_value"].to_numpy()
        assert family["p_holm"].min() == pytest.approx(min(1.0, 3 * p.min())), seed


def test_the_run_writes_ci_csv_plausibility_and_intervals_in_every_table(tmp_path):
    scores = pd.concat([random_scores(n_images=16, seeds=(0, 1)),
                        random_scores(n_images=16, seeds=(0, 1), metrics=("plausibility",), generator_seed=1)])
    empty = pd.DataFrame()
    frames = Frames(scores=scores, costs=empty, curves=empty, table1=empty)
    names = {path.name for path in write_run_outputs(tmp_path, frames, list(TRUE_MEANS), ["synthetic"])}
    assert {"ci.csv", "plausibility.csv", "plausibility.md", "plausibility.tex", "table2.md"} <= names
    assert not any(name.startswith("localization") for name in names)
    ci = pd.read_csv(tmp_path / "ci.csv")
    assert list(ci.columns) == CI_COLUMNS and len(ci) == 3 * 3 * (2 + 1)  # methods x scores x (seeds + all)
    assert set(ci["seed"].astype(str)) == {"0", "1", "all"}
    assert {"ci_low", "ci_high"} <= set(pd.read_csv(tmp_path / "summary.csv").columns)
    assert "agreement with the data's annotation, not faithfulness" in (tmp_path / "plausibility.tex").read_text()
    for stem in ("table2", "plausibility"):
        rows = (tmp_path / f"{stem}.md").read_text().splitlines()[2:]
        cells = [cell for row in rows for cell in row.split(" | ")[1:]]
        assert all(re.search(r" ± [\d.]+ \[-?[\d.]+, -?[\d.]+\]", cell) for cell in cells)
    tests = pd.read_csv(tmp_path / "wilcoxon.csv")
    assert set(tests["metric"]) == {"srg", "rsrg", "plausibility"}
    assert set(tests["seed"].astype(str)) == {"0", "1", "all"}
