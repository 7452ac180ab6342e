"""Where scores become tables: pandas aggregation into the paper's layouts, written as CSV, LaTeX, Markdown.

Table 1 (SPEC §7): rows ResNet-18, ResNet-50, ViT, Segm, OFA; per dataset AUC and ACC x 100.
Table 2: rows methods; per dataset SRG and R-SRG x 100 (mean over test images; mean ± std over seeds), each cell
with its 95% bootstrap confidence interval over images ("16.78 [14.90, 18.61]", "16.78 ± 1.20 [15.02, 18.40]");
the LaTeX keeps the paper's "mean ± std" and says where the intervals are.
Side tables: plausibility AUROC (formerly "localization"), cost per image, paired Wilcoxon tests between methods
(per seed and pooled over seeds), and `confidence_intervals` (ci.csv) behind every cell.

A table carries what its writers need in `table.attrs`: "higher_is_better" (column -> bool, from the
registered metric that gives the column's score: a deletion column's best cell is its lowest) and "notes"
(one line per reason a cell is `n/a` by design, e.g. a method that does not suit the model's family).
"""
from __future__ import annotations

import math
import re
import warnings
import zlib
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
    "organsmnist": "OrganS", "synthetic": "Synthetic", "objects": "Objects",
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
    """The leading number of a cell ('35.26 ± 1.20 [33.10, 37.02]' -> 35.26); NaN for 'n/a' and other text."""
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


_CI_SUFFIX = re.compile(r" \[[^\]]*\]$")  # a cell's trailing " [low, high]"
CI_CAPTION_NOTE = ("Each cell's 95\\% bootstrap confidence interval over images is left out here: see the "
                   "Markdown and CSV tables and ci.csv.")


def without_ci(cell) -> str:
    """A cell without its trailing confidence interval: '16.78 ± 1.20 [15.02, 18.40]' -> '16.78 ± 1.20'."""
    return _CI_SUFFIX.sub("", str(cell))


def to_latex(table: pd.DataFrame, caption: str, label: str, bold_best: bool = True,
             higher_is_better: Mapping | None = None, notes: Sequence[str] | None = None) -> str:
    """booktabs LaTeX through pandas' Styler; with bold_best, the best mean of each column in bold (largest,
    or smallest where higher_is_better[column] is False; cells without a number never).

    The LaTeX keeps the paper's layout 'mean ± std': a cell's confidence interval is left out, and the caption
    then ends with CI_CAPTION_NOTE (where the intervals are). higher_is_better and notes default to table.attrs
    (set by method_table and cost_table); the notes (why cells are n/a) follow the tabular, one line each,
    only when there are any.
    """
    higher = table.attrs.get("higher_is_better", {}) if higher_is_better is None else higher_is_better
    notes = table.attrs.get("notes", []) if notes is None else notes
    body = table.astype(str).rename_axis(None)
    stripped = body.map(without_ci)
    if not stripped.equals(body):
        caption, body = f"{caption} {CI_CAPTION_NOTE}", stripped
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

METHOD_LABELS = {"ofa": "OFA", "grad": "Grad", "attn": "Attn", "random": "Random",
                 "reference": "Reference (exact object Shapley)"}
METRIC_LABELS = {"srg": "SRG", "rsrg": "R-SRG", "plausibility": "Plaus", "mrg": "MRG", "lrg": "LRG",
                 "insertion": "Ins", "deletion": "Del", "truth_rank": "Rank", "truth_sign": "Sign"}
TRUTH_METRICS = ("truth_rank", "truth_sign")
TABLE2_METRICS = ("srg", "rsrg")
PLAUSIBILITY_CAPTION = ("Plausibility (AUROC x100 of the attribution against the annotated patches): agreement with "
                        "the data's annotation, not faithfulness to the model.")
MISSING = "n/a"  # a cell whose unit failed or did not run
ALL_SEEDS = "all"  # the seed column's value for a row pooled over seeds (ci.csv, wilcoxon.csv)


def _number(value: float, decimals: int) -> str:
    """value with `decimals` decimals, never '-0.00'."""
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def format_mean_std(values: Sequence[float], decimals: int = 2, ci: tuple[float, float] | None = None) -> str:
    """'mean' for one value, 'mean ± std' (ddof 1) for several; NaN-free input; no '-0.00'.

    With ci (low, high), in the values' units, the interval follows: '16.78 [14.90, 18.61]',
    '16.78 ± 1.20 [15.02, 18.40]'.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return MISSING
    text = _number(values[0], decimals)
    if values.size > 1:
        text = f"{_number(values.mean(), decimals)} ± {_number(values.std(ddof=1), decimals)}"
    if ci is not None:
        text += f" [{_number(ci[0], decimals)}, {_number(ci[1], decimals)}]"
    return text


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


def seed_means(scores: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Long per-image rows (dataset, method, seed, image, metric, value) -> mean over images per seed.

    Images whose score is NaN (plausibility with a one-class mask) are left out of the mean.
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
                 only_present: bool = False, unavailable: Unavailable | None = None,
                 ci: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows methods, columns (dataset, metric): mean over images x scale; mean ± std over seeds; then the 95%
    bootstrap interval over images of that mean ('16.78 [14.90, 18.61]', '16.78 ± 1.20 [15.02, 18.40]').

    `methods`/`datasets` fix the order (and keep rows of methods that failed, as 'n/a'); with
    `only_present`, a (dataset, metric) column appears only where some method has that score.
    `unavailable` (dataset, method) -> reason: those cells are 'n/a', and table.attrs["notes"] says why.
    `ci`: the intervals (confidence_intervals' frame) when computed already, else computed here.
    table.attrs["higher_is_better"] holds each column's direction, from the registered metrics.
    """
    from xaibench.metrics import score_higher_is_better

    per_seed = seed_means(scores, metrics)
    methods = list(methods) if methods is not None else list(pd.unique(scores["method"]))
    datasets = list(datasets) if datasets is not None else list(pd.unique(scores["dataset"]))
    shown = scores[scores["method"].isin(methods) & scores["dataset"].isin(datasets)]
    intervals = pooled_intervals(confidence_intervals(shown, metrics) if ci is None else ci)

    def cell(method: str, dataset: str, metric: str, means: np.ndarray) -> str:
        interval = intervals.get((dataset, method, metric))
        return format_mean_std(means * scale, decimals,
                               None if interval is None else (interval[0] * scale, interval[1] * scale))

    cells = {key: cell(*key, group["value"].to_numpy())
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
           unavailable: Unavailable | None = None, ci: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's Table 2: rows methods; per dataset SRG and R-SRG x 100 with 2 decimals and their intervals.

    unavailable: (dataset, method) -> reason the method does not apply there; those cells read 'n/a'.
    ci: confidence_intervals(scores) when computed already.
    """
    return method_table(scores, TABLE2_METRICS, methods, datasets, unavailable=unavailable, ci=ci)


def plausibility_table(scores: pd.DataFrame, methods: Sequence[str] | None = None,
                       datasets: Sequence[str] | None = None, unavailable: Unavailable | None = None,
                       ci: pd.DataFrame | None = None) -> pd.DataFrame:
    """Plausibility AUROC x 100 per method (agreement with the annotated patches), for the datasets with
    ground-truth masks only (unavailable and ci as in table2)."""
    return method_table(scores, ("plausibility",), methods, datasets, only_present=True, unavailable=unavailable,
                        ci=ci)


localization_table = plausibility_table  # its former name


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


# -- The model's truth: agreement with exact object Shapley values, the gates, the sanity check --------------

TRUTH_CAPTION = ("Agreement (x100) of each method's attribution mass per object with the model's exact object "
                 "Shapley values: Spearman rank correlation (Rank) and share of objects with the right sign (Sign), "
                 "mean over test images.")


def truth_table(scores: pd.DataFrame, methods: Sequence[str] | None = None, datasets: Sequence[str] | None = None,
                unavailable: Unavailable | None = None, ci: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rank and sign agreement x 100 per method with the model's exact object Shapley values (datasets that
    re-render their objects only), with intervals as in table2."""
    return method_table(scores, TRUTH_METRICS, methods, datasets, only_present=True, unavailable=unavailable, ci=ci)


def kendall_notes(scores: pd.DataFrame, methods: Sequence[str]) -> list[str]:
    """Per dataset with truth scores: Kendall's tau between the methods' ranking by mean SRG and by mean rank
    agreement with the model's truth (means over images and seeds): do the faithfulness metric and the truth
    order the methods alike?"""
    from scipy.stats import kendalltau

    notes = []
    means = scores[scores["metric"].isin(["srg", "truth_rank"])].groupby(["dataset", "metric", "method"])["value"].mean()
    for dataset in pd.unique(scores.loc[scores["metric"] == "truth_rank", "dataset"]):
        table = means.loc[dataset].unstack("metric").reindex([m for m in methods if m != "reference"]).dropna()
        if len(table) < 3 or "srg" not in table:
            continue
        tau = kendalltau(table["srg"], table["truth_rank"]).statistic
        notes.append(f"{DATASET_LABELS.get(dataset, dataset)}: Kendall tau between the rankings by mean SRG and by "
                     f"mean rank agreement, over {len(table)} methods: {tau:.2f}")
    return notes


def gates_table(gates: pd.DataFrame) -> pd.DataFrame:
    """gates.csv as it is written: one row per dataset, seed and gate (value, threshold, holds, what)."""
    return gates[["dataset", "seed", "gate", "value", "threshold", "holds", "measures"]]


def gate_warnings(gates: pd.DataFrame) -> list[str]:
    """One line per failing gate: what a reader of any table must know before trusting it."""
    if not len(gates):
        return []
    failing = gates[~gates["holds"].astype(bool)]
    return [f"WARNING: gate {row.gate} fails on {DATASET_LABELS.get(row.dataset, row.dataset)} seed {row.seed}: "
            f"{row.value:.3f} (needs {row.threshold}; {row.measures})" for row in failing.itertuples()]


def sanity_table(sanity: pd.DataFrame, methods: Sequence[str] | None = None,
                 threshold: float | None = None) -> pd.DataFrame:
    """Rows methods; per dataset the mean Spearman correlation (over images, then seeds) between each method's
    maps on the model and on the model randomized from the top stage down to each stage, and the verdict:
    pass when the correlation after the whole cascade is below `threshold` (the maps changed with the model)."""
    import torch

    from xaibench.metrics.sanity import SANITY_THRESHOLD, passes_sanity

    threshold = SANITY_THRESHOLD if threshold is None else threshold
    methods = list(methods) if methods is not None else list(pd.unique(sanity["method"]))
    if "test" not in sanity:
        sanity = sanity.assign(test="model")
    means = sanity.groupby(["dataset", "method", "test", "stage"], sort=False)["spearman"].mean()
    columns, rows = [], {m: [] for m in methods}
    for dataset in pd.unique(sanity["dataset"]):
        label = DATASET_LABELS.get(dataset, dataset)
        for test in ("model", "data"):
            stages = list(pd.unique(sanity.loc[(sanity["dataset"] == dataset) & (sanity["test"] == test), "stage"]))
            if not stages:
                continue
            columns += [(label, stage) for stage in stages]
            columns.append((label, f"{test} verdict"))
            for method in methods:
                values = [means.get((dataset, method, test, stage), math.nan) for stage in stages]
                rows[method] += [MISSING if math.isnan(v) else f"{v:.2f}" for v in values]
                last = values[-1] if values else math.nan
                rows[method].append(MISSING if math.isnan(last) else
                                    "pass" if passes_sanity(torch.tensor([last]), threshold) else "FAIL")
    table = pd.DataFrame([rows[m] for m in methods], index=[METHOD_LABELS.get(m, m) for m in methods], dtype=object)
    table.index.name = "Method"
    table.columns = pd.MultiIndex.from_tuples(columns)
    table.attrs["higher_is_better"] = {column: False for column in table.columns}
    table.attrs["notes"] = [f"Model randomization: stages re-initialised from the output down; a method passes when "
                            f"its maps' mean Spearman correlation with the original after the whole cascade is below "
                            f"{threshold}. Data randomization (where run): the same on a network trained on permuted "
                            f"labels. Maps that do not depend on the model (random, an amortized explainer fitted "
                            f"once) fail by design."]
    return table
