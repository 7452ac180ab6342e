"""The model's truth as the judge of the metrics: does a metric rank the methods as the exact Shapley values do?

From the long scores frame (one row per dataset, seed, method, image, metric score), for each metric score:
Kendall's tau between the methods' ranking by the score (its direction respected) and by the truth score
(truth_wtau), per seed and pooled over seeds, with a paired bootstrap interval over images; Krippendorff's alpha
of the score over images x methods (do the images agree on the methods' order?); and the Spearman agreement of
every two scores over the methods. Numbers in, frames out.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from xaibench.tables.stats import ALL_SEEDS, CI_LEVEL, CI_RESAMPLES, ci_generator, percentile_interval

JUDGE = "truth_wtau"  # the agreement with the model's exact Shapley values the metrics are judged by
VALIDITY_COLUMNS = ["dataset", "seed", "metric", "tau", "ci_low", "ci_high", "n_methods", "n_images", "alpha"]


def _kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b between the rows of x [R, m] and y [R, m] (as scipy.stats.kendalltau); NaN where a row
    is constant."""
    i, j = np.triu_indices(x.shape[1], 1)
    dx, dy = np.sign(x[:, i] - x[:, j]), np.sign(y[:, i] - y[:, j])
    concordance = (dx * dy).sum(axis=1)
    ties = np.sqrt((dx != 0).sum(axis=1) * (dy != 0).sum(axis=1).astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ties > 0, concordance / ties, np.nan)


def _wide(frame: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """Rows (seed, image), columns methods: the score of each method on each image (images every method has)."""
    table = frame.pivot_table(index=["seed", "image"], columns="method", values="value", aggfunc="mean")
    return table.reindex(columns=[m for m in methods if m in table.columns]).dropna()


def _tau_with_interval(metric: pd.DataFrame, judge: pd.DataFrame, sign: float, seed_label, dataset: str,
                       n_resamples: int) -> tuple[float, float, float]:
    """tau of the methods' means by metric and by judge, and its paired bootstrap interval over images."""
    x, y = sign * metric.to_numpy(), judge.to_numpy()
    tau = float(_kendall_tau_b(x.mean(axis=0)[None], y.mean(axis=0)[None])[0])
    rng = ci_generator(7, dataset, seed_label, len(x))
    draws = rng.integers(0, len(x), (n_resamples, len(x)))
    taus = _kendall_tau_b(x[draws].mean(axis=1), y[draws].mean(axis=1))
    taus = taus[~np.isnan(taus)]
    if not len(taus):
        return tau, float("nan"), float("nan")
    low, high = percentile_interval(taus, CI_LEVEL)
    return tau, float(low), float(high)


def krippendorff_alpha(wide: pd.DataFrame, sign: float = 1.0) -> float:
    """Krippendorff's alpha (ordinal) of the methods' per-image ranks: the images are the raters, the methods the
    units rated, each image ranking the methods by the score (1 = best). 1 = every image orders the methods alike,
    0 = no more agreement than chance. NaN with fewer than 2 images or 2 methods."""
    import krippendorff

    if wide.shape[0] < 2 or wide.shape[1] < 2:
        return float("nan")
    ranks = (-sign * wide).rank(axis=1, method="average").to_numpy()
    if np.unique(ranks).size < 2:
        return float("nan")
    return float(krippendorff.alpha(reliability_data=ranks, level_of_measurement="ordinal"))


def metric_validity(scores: pd.DataFrame, directions: Mapping[str, bool], methods: Sequence[str],
                    judge: str = JUDGE, n_resamples: int = CI_RESAMPLES) -> pd.DataFrame:
    """Per dataset with the judge's score, per seed and pooled (seed 'all'), per metric score in `directions`
    (score -> higher is better): Kendall's tau between the methods' ranking by the score and by the judge, its
    95% bootstrap interval over images (the same images resampled for every method), and Krippendorff's alpha
    of the score over images x methods. Methods: those of `methods` that have every score (the reference left
    out); a cell with fewer than 3 methods gives no row."""
    rows = []
    shown = scores[scores["method"].isin([m for m in methods if m != "reference"])]
    for dataset, frame in shown.groupby("dataset", sort=False):
        if judge not in set(frame["metric"]):
            continue
        judged = _wide(frame[frame["metric"] == judge], methods)
        for metric, higher in directions.items():
            if metric == judge or metric not in set(frame["metric"]):
                continue
            scored = _wide(frame[frame["metric"] == metric], methods)
            common_methods = [m for m in scored.columns if m in judged.columns]
            both = scored[common_methods].join(judged[common_methods].add_suffix("__judge"), how="inner")
            if len(common_methods) < 3 or len(both) < 2:
                continue
            sign = 1.0 if higher else -1.0
            for seed in [*sorted(pd.unique(both.index.get_level_values("seed"))), ALL_SEEDS]:
                part = both if seed == ALL_SEEDS else both.xs(seed, level="seed", drop_level=False)
                x, y = part[common_methods], part[[f"{m}__judge" for m in common_methods]]
                tau, low, high = _tau_with_interval(x, y, sign, seed, dataset, n_resamples)
                rows.append((dataset, seed, metric, tau, low, high, len(common_methods), len(part),
                             krippendorff_alpha(x, sign)))
    return pd.DataFrame(rows, columns=VALIDITY_COLUMNS)


def metric_agreement(scores: pd.DataFrame, directions: Mapping[str, bool], methods: Sequence[str]) -> pd.DataFrame:
    """Spearman's rho over the methods between every two metric scores' method means (pooled over datasets' seeds
    and images, each score's direction respected so that +1 = the same order of merit). Rows and columns: the
    scores of `directions` that some method has."""
    shown = scores[scores["method"].isin([m for m in methods if m != "reference"])
                   & scores["metric"].isin(list(directions))]
    means = shown.groupby(["dataset", "method", "metric"])["value"].mean().unstack("metric")
    present = [m for m in directions if m in means.columns]
    signed = means[present] * pd.Series({m: 1.0 if directions[m] else -1.0 for m in present})
    return signed.corr(method="spearman", min_periods=3)


def meta_properties(meta: pd.DataFrame, directions: Mapping[str, bool]) -> pd.DataFrame:
    """MetaQuantus' two properties per dataset, seed and metric score, from the meta units' rows (dataset, seed,
    method, metric, perturbation none|minor|disruptive, k, value = mean over the images):
    noise_resilience = the mean over the minor draws of Kendall's tau between the methods' ranking on the images and
    on the slightly noised images (1 = the ranking survives), adversary_reactivity = 1 - the same tau under the
    disruptive noise (a tau that is undefined because every method scores alike counts as 0); shift_minor and
    shift_disruptive = the methods' mean |score change| over the spread (max - min) of their scores on the images.
    Seed 'all' is the mean over seeds."""
    rows = []
    for (dataset, seed, metric), frame in meta[meta["metric"].isin(list(directions))].groupby(
            ["dataset", "seed", "metric"], sort=False):
        wide = frame.pivot_table(index=["perturbation", "k"], columns="method", values="value")
        if ("none", 0) not in wide.index or wide.shape[1] < 3:
            continue
        base = wide.loc[("none", 0)].to_numpy(dtype=float)
        spread = np.nanmax(base) - np.nanmin(base)
        entry = {"dataset": dataset, "seed": seed, "metric": metric}
        for perturbation in ("minor", "disruptive"):
            if perturbation not in wide.index.get_level_values(0):
                continue
            drawn = wide.loc[perturbation].to_numpy(dtype=float)
            taus = np.nan_to_num(_kendall_tau_b(drawn, np.broadcast_to(base, drawn.shape)), nan=0.0)
            shift = np.abs(drawn - base).mean() / spread if spread > 0 else np.nan
            entry["noise_resilience" if perturbation == "minor" else "adversary_reactivity"] = (
                taus.mean() if perturbation == "minor" else 1 - taus.mean())
            entry[f"shift_{perturbation}"] = shift
        rows.append(entry)
    table = pd.DataFrame(rows)
    if not len(table):
        return table
    pooled = table.drop(columns="seed").groupby(["dataset", "metric"], sort=False).mean(numeric_only=True).reset_index()
    pooled.insert(1, "seed", ALL_SEEDS)
    return pd.concat([table, pooled[[c for c in table.columns if c in pooled.columns]]], ignore_index=True)
