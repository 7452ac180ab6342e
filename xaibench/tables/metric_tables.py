"""The methods x metrics table (LATEC's layout: every chosen metric's main score per dataset, and each method's
mean rank across them), the cost of each metric per image, and the notes on n/a cells and NaN images."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from xaibench.tables.formats import MISSING
from xaibench.tables.layouts import DATASET_LABELS, METHOD_LABELS

MEAN_RANK = "mean rank"


def _cell(values: np.ndarray) -> str:
    """'mean' (one seed) or 'mean ± std' over seeds, 3 significant digits (the metrics' scales differ)."""
    if values.size == 1:
        return f"{values[0]:.3g}"
    return f"{values.mean():.3g} ± {values.std(ddof=1):.2g}"


def metrics_table(scores: pd.DataFrame, columns: Mapping[str, bool], methods: Sequence[str],
                  datasets: Sequence[str], unavailable: Mapping[tuple[str, str], str] | None = None) -> pd.DataFrame:
    """Rows methods; per dataset one column per score of `columns` (score -> higher is better; the mean over
    images, mean ± std over seeds) and the methods' mean rank across those scores (1 = best; each score ranked by
    its direction, ties averaged, the metrics a method lacks left out). `unavailable` (dataset, score) -> reason:
    those cells are 'n/a' and table.attrs["notes"] says why. table.attrs["higher_is_better"] gives each column's
    direction (the mean rank is lower-is-better)."""
    unavailable = unavailable or {}
    per_seed = scores[scores["metric"].isin(list(columns))].groupby(
        ["dataset", "method", "metric", "seed"], sort=False)["value"].mean()
    cells = {key: values.to_numpy() for key, values in per_seed.groupby(level=[0, 1, 2], sort=False)}
    present = {(dataset, score) for dataset, _, score in cells}
    rows: dict[str, list[str]] = {method: [] for method in methods}
    header, higher, notes = [], {}, []
    for dataset in datasets:
        label = DATASET_LABELS.get(dataset, dataset)
        shown = [s for s in columns if (dataset, s) in unavailable or (dataset, s) in present]
        rankable = [s for s in shown if (dataset, s) not in unavailable]
        means = pd.DataFrame({s: [cells[(dataset, m, s)].mean() if (dataset, m, s) in cells else np.nan
                                  for m in methods] for s in rankable}, index=list(methods), dtype=float)
        signs = pd.Series({s: 1.0 if columns[s] else -1.0 for s in rankable}, dtype=float)
        mean_rank = (means * signs).rank(ascending=False).mean(axis=1) if rankable else \
            pd.Series(np.nan, index=list(methods))
        for score in shown:
            header.append((label, score))
            higher[(label, score)] = columns[score]
            for method in methods:
                values = cells.get((dataset, method, score))
                usable = values is not None and (dataset, score) not in unavailable
                rows[method].append(_cell(values) if usable else MISSING)
        header.append((label, MEAN_RANK))
        higher[(label, MEAN_RANK)] = False
        for method in methods:
            rank = mean_rank.get(method, np.nan)
            rows[method].append(MISSING if np.isnan(rank) else f"{rank:.2f}")
        notes += [f"{label}, {s}: n/a, {unavailable[(dataset, s)]}." for s in shown if (dataset, s) in unavailable]
    table = pd.DataFrame([rows[m] for m in methods], index=[METHOD_LABELS.get(m, m) for m in methods], dtype=object)
    table.index.name = "Method"
    table.columns = pd.MultiIndex.from_tuples(header) if header else table.columns
    table.attrs["higher_is_better"] = higher
    table.attrs["notes"] = notes + nan_notes(scores[scores["metric"].isin(list(columns))])
    return table


def nan_notes(scores: pd.DataFrame) -> list[str]:
    """One line per (dataset, score) with NaN images: how many of how many, and why where the metric says."""
    from xaibench.metrics.catalog import nan_reason

    lines = []
    for (dataset, metric), frame in scores.groupby(["dataset", "metric"], sort=False):
        missing = int(frame["value"].isna().sum())
        if missing:
            lines.append(f"{DATASET_LABELS.get(dataset, dataset)}, {metric}: {missing} of {len(frame)} image scores "
                         f"are NaN (left out of the means): {nan_reason(metric)}.")
    return lines


def metric_cost_table(costs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and metric (means over methods and seeds): ms, forward inputs and re-explained images per
    scored image."""
    fields = ["ms_per_image", "forward_per_image", "explained_per_image"]
    table = costs.groupby(["dataset", "metric"], sort=False)[fields].mean().reset_index()
    return table.round({"ms_per_image": 3, "forward_per_image": 2, "explained_per_image": 2})


def bold_best_markdown(table: pd.DataFrame) -> pd.DataFrame:
    """A copy whose best cell of each column (by table.attrs["higher_is_better"]) is **bold**, for Markdown."""
    from xaibench.tables.formats import _cell_mean

    bolded = table.copy()
    for column in table.columns:
        means = table[column].map(_cell_mean)
        if means.notna().any():
            best = means.max() if table.attrs["higher_is_better"].get(column, True) else means.min()
            bolded[column] = [f"**{cell}**" if mean == best else cell for cell, mean in zip(table[column], means)]
    return bolded
