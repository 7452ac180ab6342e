"""The statistics behind the tables: numbers in, frames out (no labels, no text cells).

Bootstrap intervals over images (ci.csv), seed means, summary.csv, paired Wilcoxon tests with Holm's correction
(wilcoxon.csv), Kendall's tau between two rankings of the methods, and mean curves over seeds.
"""
from __future__ import annotations

import math
import warnings
import zlib
from itertools import combinations
from typing import Sequence

import numpy as np
import pandas as pd

ALL_SEEDS = "all"  # the seed column's value for a row pooled over seeds (ci.csv, wilcoxon.csv)

# -- Bootstrap confidence intervals over images ------------------------------------------------------------------

CI_RESAMPLES = 1000
CI_LEVEL = 0.95
CI_SEED = 0
CI_COLUMNS = ["dataset", "method", "metric", "seed", "mean", "ci_low", "ci_high", "n_images"]


def ci_generator(seed: int, dataset: str, run_seed, n: int) -> np.random.Generator:
    """The Generator that draws the resamples of one (dataset, seed) and sample size: keyed on them, not on
    what else the frame holds, so a cell's interval depends on its own scores only."""
    return np.random.default_rng([seed, zlib.crc32(f"{dataset}/{run_seed}".encode()), n])


def bootstrap_means(columns: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap distribution [n_resamples, G] of the mean of each column of `columns` [n, G].

    Every column is resampled with the same n_resamples draws of n row indices, drawn exactly as
    scipy.stats.bootstrap draws them (rng.integers(0, n, (n_resamples, n))), so one column's percentile
    interval equals scipy's for the same generator. Vectorised: the draws become per-resample counts of
    each row, and the means one matrix product (no loop over resamples, no [n_resamples, n, G] gather).
    """
    n = columns.shape[0]
    draws = rng.integers(0, n, (n_resamples, n))
    draws += (np.arange(n_resamples) * n)[:, None]
    counts = np.bincount(draws.ravel(), minlength=n_resamples * n).reshape(n_resamples, n)
    return (counts.astype(np.float64) @ columns) / n  # BLAS: float x float


def percentile_interval(distribution: np.ndarray, confidence: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """The percentile interval of a bootstrap distribution along axis 0 (linear interpolation, as scipy)."""
    alpha = (1 - confidence) / 2
    low, high = np.percentile(distribution, [100 * alpha, 100 * (1 - alpha)], axis=0)
    return low, high


def confidence_intervals(scores: pd.DataFrame, metrics: Sequence[str] | None = None,
                         n_resamples: int = CI_RESAMPLES, confidence: float = CI_LEVEL,
                         seed: int = CI_SEED) -> pd.DataFrame:
    """95% percentile-bootstrap intervals over images of each method's mean score, in score units (ci.csv).

    Rows (dataset, method, metric, seed, mean, ci_low, ci_high, n_images): one per seed (mean over its scored
    images; NaN scores left out) and one with seed "all": the mean of the per-seed means, whose interval
    resamples the images of every seed independently (the per-seed bootstrap means, averaged over seeds).
    Deterministic: the draws of a (dataset, seed) come from `ci_generator`, and each group's scores are
    sorted first, so the same scores give the same intervals whatever the row order.
    """
    frame = scores if metrics is None else scores[scores["metric"].isin(list(metrics))]
    frame = frame.dropna(subset=["value"])
    keys = ["dataset", "method", "metric", "seed"]
    groups = {key: np.sort(group.to_numpy(dtype=float))
              for key, group in frame.groupby(keys, sort=False)["value"]}
    buckets: dict[tuple, list[tuple]] = {}  # (dataset, seed, n) -> the groups resampled with the same draws
    for key, values in groups.items():
        buckets.setdefault((key[0], key[3], len(values)), []).append(key)
    distributions = {}
    for (dataset, run_seed, n), members in buckets.items():
        columns = np.stack([groups[key] for key in members], axis=1)
        means = bootstrap_means(columns, n_resamples, ci_generator(seed, dataset, run_seed, n))
        distributions.update({key: means[:, j] for j, key in enumerate(members)})
    rows = []
    pooled: dict[tuple, list[tuple]] = {}
    for key, values in groups.items():
        low, high = percentile_interval(distributions[key], confidence)
        rows.append((*key, values.mean(), float(low), float(high), len(values)))
        pooled.setdefault(key[:3], []).append(key)
    for cell, members in pooled.items():
        low, high = percentile_interval(np.mean([distributions[key] for key in members], axis=0), confidence)
        rows.append((*cell, ALL_SEEDS, float(np.mean([groups[key].mean() for key in members])), float(low),
                     float(high), sum(len(groups[key]) for key in members)))
    result = pd.DataFrame(rows, columns=CI_COLUMNS)
    result["seed"] = result["seed"].astype(object)
    return result


def pooled_intervals(ci: pd.DataFrame) -> dict[tuple[str, str, str], tuple[float, float]]:
    """(dataset, method, metric) -> (ci_low, ci_high) of the rows pooled over seeds (seed "all")."""
    rows = ci[ci["seed"].astype(str) == ALL_SEEDS]
    return {(d, m, metric): (low, high) for d, m, metric, low, high
            in zip(rows["dataset"], rows["method"], rows["metric"], rows["ci_low"], rows["ci_high"])}


# -- Means over images and seeds --------------------------------------------------------------------------------

def seed_means(scores: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Long per-image rows (dataset, method, seed, image, metric, value) -> mean over images per seed.

    Images whose score is NaN (plausibility with a one-class mask) are left out of the mean.
    """
    frame = scores[scores["metric"].isin(list(metrics))]
    means = frame.groupby(["dataset", "method", "seed", "metric"], sort=False)["value"].mean()
    return means.dropna().reset_index()


def summary(scores: pd.DataFrame, ci: pd.DataFrame | None = None) -> pd.DataFrame:
    """Numbers behind the tables: per (dataset, method, metric) mean and std over seeds of the per-seed
    means, the number of seeds and of scored images, and the 95% bootstrap interval of the mean (ci_low,
    ci_high: the pooled row of confidence_intervals, computed here unless given), in score units (not x 100)."""
    per_seed = seed_means(scores, scores["metric"].unique())
    counts = scores.dropna(subset=["value"]).groupby(["dataset", "method", "metric"], sort=False)["value"].size()
    grouped = per_seed.groupby(["dataset", "method", "metric"], sort=False)["value"]
    frame = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1), "n_seeds": grouped.size()})
    frame["n_images"] = counts.reindex(frame.index)
    intervals = pooled_intervals(confidence_intervals(scores) if ci is None else ci)
    frame["ci_low"] = [intervals.get(key, (math.nan, math.nan))[0] for key in frame.index]
    frame["ci_high"] = [intervals.get(key, (math.nan, math.nan))[1] for key in frame.index]
    return frame.reset_index()


def mean_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """curves: rows (dataset, method, seed, curve, x, y = mean over images) -> mean over seeds."""
    return (curves.groupby(["dataset", "method", "curve", "x"], sort=False)["y"].mean().reset_index())


# -- Paired tests between methods, and rank agreement ------------------------------------------------------------

def _holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values; NaN stays NaN and does not count as a test."""
    p = np.asarray(p_values, dtype=float)
    valid = np.flatnonzero(~np.isnan(p))
    adjusted = np.full_like(p, np.nan)
    running = 0.0
    for rank, index in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (len(valid) - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


WILCOXON_COLUMNS = ["dataset", "metric", "seed", "method_a", "method_b", "n", "mean_diff_x100", "statistic",
                    "p_value", "p_holm"]


def _wilcoxon_family(wide: pd.DataFrame, methods: Sequence[str], head: dict) -> list[dict]:
    """One family: a paired Wilcoxon test for every two `methods` (columns of `wide`, rows the pairs),
    p_holm Holm-adjusted within the family; `head` (dataset, metric, seed) starts every row."""
    from scipy.stats import wilcoxon

    family = []
    for a, b in combinations(methods, 2):
        pair = wide[[a, b]].dropna()
        difference = (pair[a] - pair[b]).to_numpy()
        statistic = p_value = math.nan
        if len(pair) and np.any(difference != 0):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    result = wilcoxon(pair[a].to_numpy(), pair[b].to_numpy())
                    statistic, p_value = float(result.statistic), float(result.pvalue)
                except ValueError:
                    pass
        family.append({**head, "method_a": a, "method_b": b, "n": len(pair),
                       "mean_diff_x100": 100 * float(difference.mean()) if len(pair) else math.nan,
                       "statistic": statistic, "p_value": p_value})
    for row, adjusted in zip(family, _holm([row["p_value"] for row in family])):
        row["p_holm"] = adjusted
    return family


def wilcoxon_tests(scores: pd.DataFrame, metrics: Sequence[str] = ("srg", "rsrg", "plausibility"),
                   methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Paired two-sided Wilcoxon signed-rank tests between every two methods, per dataset, metric and seed,
    and pooled over seeds (seed "all").

    Pairs are the same image (pooled: the same (seed, image)) scored for both methods; pairs with a NaN score
    are dropped. mean_diff_x100 is 100 * mean(a - b), in the tables' units; p_holm is Holm-adjusted within each
    (dataset, metric, seed) family of method pairs. Per (dataset, metric): the seeds' families, then the pooled.
    """
    methods = list(methods) if methods is not None else list(pd.unique(scores["method"]))
    rows = []
    frame = scores[scores["metric"].isin(list(metrics))]
    for (dataset, metric), group in frame.groupby(["dataset", "metric"], sort=False):
        wide = group.pivot_table(index=["seed", "image"], columns="method", values="value", dropna=False,
                                 aggfunc="first")
        present = [m for m in methods if m in wide.columns]
        for seed in dict.fromkeys(wide.index.get_level_values("seed")):
            rows += _wilcoxon_family(wide.xs(seed, level="seed"), present,
                                     {"dataset": dataset, "metric": metric, "seed": seed})
        rows += _wilcoxon_family(wide, present, {"dataset": dataset, "metric": metric, "seed": ALL_SEEDS})
    return pd.DataFrame(rows, columns=WILCOXON_COLUMNS)


KENDALL_COLUMNS = ["dataset", "measure", "n_methods", "tau"]


def kendall_taus(scores: pd.DataFrame, methods: Sequence[str], measures: Sequence[str] | None = None) -> pd.DataFrame:
    """Per dataset with truth scores and per truth measure: Kendall's tau between the methods' ranking by mean SRG
    and by that measure's mean (means over images and seeds; the reference left out), over the methods with both.

    measures: the truth scores to rank by, in the rows' order; None = every metric named truth_* in the scores,
    in their order. A (dataset, measure) with fewer than 3 such methods gives no row."""
    from scipy.stats import kendalltau

    if measures is None:
        measures = [m for m in pd.unique(scores["metric"]) if str(m).startswith("truth_")]
    truth = scores[scores["metric"].isin(list(measures))]
    means = scores[scores["metric"].isin(["srg", *measures])].groupby(["dataset", "metric", "method"])["value"].mean()
    rows = []
    for dataset in pd.unique(truth["dataset"]):
        table = means.loc[dataset].unstack("metric").reindex([m for m in methods if m != "reference"])
        if "srg" not in table:
            continue
        for measure in measures:
            if measure not in table:
                continue
            pair = table[["srg", measure]].dropna()
            if len(pair) >= 3:
                rows.append((dataset, measure, len(pair), kendalltau(pair["srg"], pair[measure]).statistic))
    return pd.DataFrame(rows, columns=KENDALL_COLUMNS)
