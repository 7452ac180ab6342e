"""Where scores become tables: pandas aggregation into the paper's layouts, written as CSV, LaTeX, Markdown.

Table 1 (SPEC §7): rows ResNet-18, ResNet-50, ViT, Segm, OFA; per dataset AUC and ACC x 100.
Table 2: rows methods; per dataset SRG and R-SRG x 100 (mean over test images; mean ± std over seeds).
Side tables: localization AUROC, cost per image, paired Wilcoxon tests between methods.

A table carries what its writers need in `table.attrs`: "higher_is_better" (column -> bool, from the
registered metric that gives the column's score: a deletion column's best cell is its lowest) and "notes"
(one line per reason a cell is `n/a` by design, e.g. a method that does not suit the model's family).
"""
from __future__ import annotations

import math
import warnings
from itertools import combinations
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from xaibench.io import atomic_write_text

MODEL_LABELS = {"resnet18": "ResNet-18", "resnet50": "ResNet-50", "vit": "ViT", "segm": "Segm", "ofa": "OFA"}
DATASET_LABELS = {
    "pathmnist": "Path", "dermamnist": "Derma", "octmnist": "OCT", "pneumoniamnist": "Pneumonia",
    "retinamnist": "Retina", "breastmnist": "Breast", "bloodmnist": "Blood", "organcmnist": "OrganC",
    "organsmnist": "OrganS", "synthetic": "Synthetic",
}


def _mean_std(values: pd.Series) -> str:
    if len(values) > 1:
        return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"
    return f"{values.mean():.1f}"


def table1(scores: pd.DataFrame) -> pd.DataFrame:
    """scores: long rows (dataset, model, seed, metric in {AUC, ACC}, value in [0, 1]) -> the paper's layout.

    Cells are mean x 100 over seeds, with ± std when several seeds ran.
    """
    frame = scores.assign(value=scores["value"] * 100)
    cells = frame.groupby(["model", "dataset", "metric"], sort=False)["value"].apply(_mean_std).unstack(["dataset", "metric"])
    models = [m for m in MODEL_LABELS if m in cells.index] + [m for m in cells.index if m not in MODEL_LABELS]
    datasets = list(dict.fromkeys(scores["dataset"]))
    columns = [(d, metric) for d in datasets for metric in ("AUC", "ACC") if (d, metric) in cells.columns]
    table = cells.loc[models, columns]
    table.index = [MODEL_LABELS.get(m, m) for m in table.index]
    table.index.name = "Model"
    table.columns = pd.MultiIndex.from_tuples([(DATASET_LABELS.get(d, d), metric) for d, metric in columns])
    return table


def _cell_mean(cell) -> float:
    """The leading number of a cell ('35.26 ± 1.20' -> 35.26); NaN for 'n/a' and other text."""
    try:
        return float(str(cell).split(" ")[0])
    except ValueError:
        return math.nan


BOLD = "textbf:--rwrap;"  # Styler's LaTeX property: the cell becomes \textbf{cell}
Unavailable = Mapping[tuple[str, str], str]  # (dataset, method) -> why the method does not apply there


def _bold_best(column: pd.Series, higher_is_better: Mapping) -> list[str]:
    """Styler.apply: BOLD for the best-mean cells of one column (largest or smallest by its direction)."""
    means = column.map(_cell_mean)
    best = means.max() if higher_is_better.get(column.name, True) else means.min()  # NaN-skipping
    return [BOLD if mean == best else "" for mean in means]


def _latex_escape(text: str) -> str:
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(special.get(char, char) for char in text)


def to_latex(table: pd.DataFrame, caption: str, label: str, bold_best: bool = True,
             higher_is_better: Mapping | None = None, notes: Sequence[str] | None = None) -> str:
    """booktabs LaTeX through pandas' Styler; with bold_best, the best mean of each column in bold (largest,
    or smallest where higher_is_better[column] is False; cells without a number never).

    higher_is_better and notes default to table.attrs (set by method_table and cost_table); the notes
    (why cells are n/a) follow the tabular, one line each, only when there are any.
    """
    higher = table.attrs.get("higher_is_better", {}) if higher_is_better is None else higher_is_better
    notes = table.attrs.get("notes", []) if notes is None else notes
    body = table.astype(str).rename_axis(None)
    styler = body.style.format(lambda cell: cell.replace("±", "$\\pm$"), escape=None)
    if bold_best:
        styler = styler.apply(_bold_best, axis=0, higher_is_better=higher)
    latex = styler.to_latex(hrules=True, multicol_align="c", multirow_align="t",
                            column_format="l" + "r" * len(body.columns))
    latex += "".join(f"{{\\footnotesize {_latex_escape(note)}\\par}}\n" for note in notes)
    return (f"\\begin{{table}}\n\\centering\n\\caption{{{caption}}}\n\\label{{{label}}}\n{latex}\\end{{table}}\n")


def to_markdown(table: pd.DataFrame, notes: Sequence[str] | None = None) -> str:
    """A Markdown table; the notes (default table.attrs["notes"]) follow it, one paragraph each, if any."""
    notes = table.attrs.get("notes", []) if notes is None else notes
    header = ["Model" if table.index.name == "Model" else (table.index.name or "")]
    header += [" ".join(map(str, col)) if isinstance(col, tuple) else str(col) for col in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in table.iterrows():
        lines.append("| " + " | ".join([str(name), *map(str, row.tolist())]) + " |")
    lines += [line for note in notes for line in ("", note)]
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, folder: str | Path, stem: str, caption: str, bold_best: bool = True,
                higher_is_better: Mapping | None = None, notes: Sequence[str] | None = None) -> list[Path]:
    """Write <stem>.csv, <stem>.tex and <stem>.md atomically; returns the paths.

    higher_is_better (column -> bool) and notes (lines on n/a cells) default to the table's attrs.
    """
    folder = Path(folder)
    latex = to_latex(table, caption, f"tab:{stem}", bold_best, higher_is_better, notes)
    return [
        atomic_write_text(folder / f"{stem}.csv", table.to_csv()),
        atomic_write_text(folder / f"{stem}.tex", latex),
        atomic_write_text(folder / f"{stem}.md", to_markdown(table, notes)),
    ]


# -- Table 2 and its side tables ---------------------------------------------------------------------------

METHOD_LABELS = {"ofa": "OFA", "grad": "Grad", "attn": "Attn", "random": "Random"}
METRIC_LABELS = {"srg": "SRG", "rsrg": "R-SRG", "localization": "Loc", "mrg": "MRG", "lrg": "LRG",
                 "insertion": "Ins", "deletion": "Del"}
TABLE2_METRICS = ("srg", "rsrg")
MISSING = "n/a"  # a cell whose unit failed or did not run


def format_mean_std(values: Sequence[float], decimals: int = 2) -> str:
    """'mean' for one value, 'mean ± std' (ddof 1) for several; NaN-free input; no '-0.00'."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return MISSING

    def number(value: float) -> str:
        text = f"{value:.{decimals}f}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text

    if values.size > 1:
        return f"{number(values.mean())} ± {number(values.std(ddof=1))}"
    return number(values[0])


def seed_means(scores: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Long per-image rows (dataset, method, seed, image, metric, value) -> mean over images per seed.

    Images whose score is NaN (localization with a one-class mask) are left out of the mean.
    """
    frame = scores[scores["metric"].isin(list(metrics))]
    means = frame.groupby(["dataset", "method", "seed", "metric"], sort=False)["value"].mean()
    return means.dropna().reset_index()


def unavailable_notes(unavailable: Unavailable | None, methods: Sequence[str], datasets: Sequence[str]) -> list[str]:
    """One line per distinct reason, naming its cells: 'n/a (Attn: Synthetic, Breast): <reason>'.

    Only the (dataset, method) pairs the table shows count; table order, labels as in the table.
    """
    cells: dict[str, dict[str, list[str]]] = {}  # reason -> method label -> dataset labels
    for method in methods:
        for dataset in datasets:
            reason = (unavailable or {}).get((dataset, method))
            if reason is not None:
                labels = cells.setdefault(reason, {}).setdefault(METHOD_LABELS.get(method, method), [])
                labels.append(DATASET_LABELS.get(dataset, dataset))
    notes = []
    for reason, by_method in cells.items():
        where = "; ".join(f"{method}: {', '.join(labels)}" for method, labels in by_method.items())
        notes.append(f"{MISSING} ({where}): {reason}")
    return notes


def method_table(scores: pd.DataFrame, metrics: Sequence[str], methods: Sequence[str] | None = None,
                 datasets: Sequence[str] | None = None, scale: float = 100.0, decimals: int = 2,
                 only_present: bool = False, unavailable: Unavailable | None = None) -> pd.DataFrame:
    """Rows methods, columns (dataset, metric): mean over images x scale; mean ± std over seeds.

    `methods`/`datasets` fix the order (and keep rows of methods that failed, as 'n/a'); with
    `only_present`, a (dataset, metric) column appears only where some method has that score.
    `unavailable` (dataset, method) -> reason: those cells are 'n/a', and table.attrs["notes"] says why.
    table.attrs["higher_is_better"] holds each column's direction, from the registered metrics.
    """
    from xaibench.metrics import score_higher_is_better

    per_seed = seed_means(scores, metrics)
    methods = list(methods) if methods is not None else list(dict.fromkeys(scores["method"]))
    datasets = list(datasets) if datasets is not None else list(dict.fromkeys(scores["dataset"]))
    cells = {key: format_mean_std(group["value"].to_numpy() * scale, decimals)
             for key, group in per_seed.groupby(["method", "dataset", "metric"], sort=False)
             if (key[1], key[0]) not in (unavailable or {})}
    columns = [(d, m) for d in datasets for m in metrics
               if not only_present or any((method, d, m) in cells for method in methods)]
    table = pd.DataFrame([[cells.get((method, d, m), MISSING) for d, m in columns] for method in methods],
                         index=[METHOD_LABELS.get(m, m) for m in methods], dtype=object)
    table.index.name = "Method"
    labels = [(DATASET_LABELS.get(d, d), METRIC_LABELS.get(m, m)) for d, m in columns]
    table.columns = pd.MultiIndex.from_tuples(labels)
    table.attrs["higher_is_better"] = {label: score_higher_is_better(m) for label, (_, m) in zip(labels, columns)}
    table.attrs["notes"] = unavailable_notes(unavailable, methods, list(dict.fromkeys(d for d, _ in columns)))
    return table


def table2(scores: pd.DataFrame, methods: Sequence[str] | None = None, datasets: Sequence[str] | None = None,
           unavailable: Unavailable | None = None) -> pd.DataFrame:
    """The paper's Table 2: rows methods; per dataset SRG and R-SRG x 100 with 2 decimals.

    unavailable: (dataset, method) -> reason the method does not apply there; those cells read 'n/a'.
    """
    return method_table(scores, TABLE2_METRICS, methods, datasets, unavailable=unavailable)


def localization_table(scores: pd.DataFrame, methods: Sequence[str] | None = None,
                       datasets: Sequence[str] | None = None, unavailable: Unavailable | None = None) -> pd.DataFrame:
    """Localization AUROC x 100 per method, for the datasets with ground-truth masks only (unavailable as table2)."""
    return method_table(scores, ("localization",), methods, datasets, only_present=True, unavailable=unavailable)


def summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Numbers behind the tables: per (dataset, method, metric) mean and std over seeds of the per-seed
    means, the number of seeds and of scored images, in score units (not x 100)."""
    per_seed = seed_means(scores, scores["metric"].unique())
    counts = scores.dropna(subset=["value"]).groupby(["dataset", "method", "metric"], sort=False)["value"].size()
    grouped = per_seed.groupby(["dataset", "method", "metric"], sort=False)["value"]
    frame = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1), "n_seeds": grouped.size()})
    frame["n_images"] = counts.reindex(frame.index)
    return frame.reset_index()


def cost_table(costs: pd.DataFrame, methods: Sequence[str] | None = None, datasets: Sequence[str] | None = None,
               unavailable: Unavailable | None = None) -> pd.DataFrame:
    """costs: rows (dataset, method, seed, ms_per_image, forward_per_image, backward_per_image) ->
    rows methods; per dataset ms/image and passes/image through the model (mean over seeds).

    unavailable as in table2 ('n/a' in the pair's three cells, a note per reason); every column is
    lower-is-better in table.attrs["higher_is_better"] (cost, not a score).
    """
    methods = list(methods) if methods is not None else list(dict.fromkeys(costs["method"]))
    datasets = list(datasets) if datasets is not None else list(dict.fromkeys(costs["dataset"]))
    fields = {"ms_per_image": ("ms/image", "{:.2f}"), "forward_per_image": ("fwd/image", "{:.4g}"),
              "backward_per_image": ("bwd/image", "{:.4g}")}
    means = costs.groupby(["method", "dataset"], sort=False)[list(fields)].mean()
    rows = []
    for method in methods:
        row = []
        for dataset in datasets:
            shown = (method, dataset) in means.index and (dataset, method) not in (unavailable or {})
            for field, (_, pattern) in fields.items():
                row.append(pattern.format(means.loc[(method, dataset), field]) if shown else MISSING)
        rows.append(row)
    table = pd.DataFrame(rows, index=[METHOD_LABELS.get(m, m) for m in methods], dtype=object)
    table.index.name = "Method"
    table.columns = pd.MultiIndex.from_tuples([(DATASET_LABELS.get(d, d), label) for d in datasets
                                               for label, _ in fields.values()])
    table.attrs["higher_is_better"] = {column: False for column in table.columns}
    table.attrs["notes"] = unavailable_notes(unavailable, methods, datasets)
    return table


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


def wilcoxon_tests(scores: pd.DataFrame, metrics: Sequence[str] = ("srg", "rsrg", "localization"),
                   methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Paired two-sided Wilcoxon signed-rank tests between every two methods, per dataset and metric.

    Pairs are the same (seed, image) scored for both methods; pairs with a NaN score are dropped.
    mean_diff_x100 is 100 * mean(a - b), in the tables' units; p_holm is Holm-adjusted within each
    (dataset, metric) family of method pairs.
    """
    from scipy.stats import wilcoxon

    methods = list(methods) if methods is not None else list(dict.fromkeys(scores["method"]))
    rows = []
    frame = scores[scores["metric"].isin(list(metrics))]
    for (dataset, metric), group in frame.groupby(["dataset", "metric"], sort=False):
        wide = group.pivot_table(index=["seed", "image"], columns="method", values="value", dropna=False,
                                 aggfunc="first")
        present = [m for m in methods if m in wide.columns]
        family = []
        for a, b in combinations(present, 2):
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
            family.append({"dataset": dataset, "metric": metric, "method_a": a, "method_b": b, "n": len(pair),
                           "mean_diff_x100": 100 * float(difference.mean()) if len(pair) else math.nan,
                           "statistic": statistic, "p_value": p_value})
        for row, adjusted in zip(family, _holm([row["p_value"] for row in family])):
            row["p_holm"] = adjusted
        rows.extend(family)
    return pd.DataFrame(rows, columns=["dataset", "metric", "method_a", "method_b", "n", "mean_diff_x100", "statistic",
                                       "p_value", "p_holm"])


def flat_markdown(frame: pd.DataFrame, float_format: str = "{:.4g}") -> str:
    """A Markdown table of a flat frame (no index), floats by `float_format`, NaN as 'n/a'."""
    def cell(value) -> str:
        if isinstance(value, float):
            return MISSING if math.isnan(value) else float_format.format(value)
        return str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(value) for value in row) + " |")
    return "\n".join(lines) + "\n"


def mean_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """curves: rows (dataset, method, seed, curve, x, y = mean over images) -> mean over seeds."""
    return (curves.groupby(["dataset", "method", "curve", "x"], sort=False)["y"].mean().reset_index())
