"""The tables' layouts: which rows and columns Table 1, Table 2 and its side tables show, their labels,
captions and notes; the cells come from stats (numbers) and formats (text).

A table carries what its writers need in `table.attrs`: "higher_is_better" (column -> bool, from the
registered metric that gives the column's score: a deletion column's best cell is its lowest) and "notes"
(one line per reason a cell is `n/a` by design, e.g. a method that does not suit the model's family).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from xaibench.tables.formats import MISSING, _mean_std, format_mean_std
from xaibench.tables.stats import confidence_intervals, kendall_taus, pooled_intervals, seed_means

MODEL_LABELS = {"resnet18": "ResNet-18", "resnet50": "ResNet-50", "vit": "ViT", "segm": "Segm", "ofa": "OFA"}
DATASET_LABELS = {
    "pathmnist": "Path", "dermamnist": "Derma", "octmnist": "OCT", "pneumoniamnist": "Pneumonia",
    "retinamnist": "Retina", "breastmnist": "Breast", "bloodmnist": "Blood", "organcmnist": "OrganC",
    "organsmnist": "OrganS", "synthetic": "Synthetic", "objects": "Objects",
}
METHOD_LABELS = {"ofa": "OFA", "grad": "Grad", "attn": "Attn", "random": "Random",
                 "reference": "Reference (exact Shapley)"}
METRIC_LABELS = {"srg": "SRG", "rsrg": "R-SRG", "plausibility": "Plaus", "mrg": "MRG", "lrg": "LRG",
                 "insertion": "Ins", "deletion": "Del", "truth_rank": "Rank", "truth_wtau": "wTau",
                 "truth_top1": "Top-1", "truth_bottom1": "Bot-1", "truth_sign": "Sign",
                 "truth_rank_objects": "Rank (obj)", "truth_sign_objects": "Sign (obj)"}
# the whole game's measures (objects and background regions), then the object-only game's, for comparison
# weighted tau leads: of the measures, the curves agree with it most (docs/truth.md, seeds 0-4)
TRUTH_METRICS = ("truth_wtau", "truth_rank", "truth_top1", "truth_bottom1", "truth_sign", "truth_rank_objects",
                 "truth_sign_objects")
TABLE2_METRICS = ("srg", "rsrg")
PLAUSIBILITY_CAPTION = ("Plausibility (AUROC x100 of the attribution against the annotated patches): agreement with "
                        "the data's annotation, not faithfulness to the model.")
TRUTH_CAPTION = ("Agreement (x100, mean over test images) of each method's attribution mass per player (the objects "
                 "and the background regions) with the model's exact Shapley values of that game. "
                 "wTau: weighted Kendall tau (Vigna 2015, additive hyperbolic), swaps near the top weighing most, "
                 "as in the curves. "
                 "Rank: Spearman's correlation, every rank weighing alike. "
                 "Top-1: share of images whose highest-mass player is the game's most valuable. "
                 "Bot-1: the same for the lowest-mass player and the game's most negative. "
                 "Sign: share of players whose mass has the sign of their value. "
                 "Rank (obj), Sign (obj): rank and sign over the objects alone, against the object-only game.")

Unavailable = Mapping[tuple[str, str], str]  # (dataset, method) -> why the method does not apply there


def table1(scores: pd.DataFrame) -> pd.DataFrame:
    """scores: long rows (dataset, model, seed, metric in {AUC, ACC}, value in [0, 1]) -> the paper's layout.

    Cells are mean x 100 over seeds, with ± std when several seeds ran.
    """
    frame = scores.assign(value=scores["value"] * 100)
    cells = (frame.groupby(["model", "dataset", "metric"], sort=False)["value"].apply(_mean_std)
             .unstack(["dataset", "metric"]))
    models = [m for m in MODEL_LABELS if m in cells.index] + [m for m in cells.index if m not in MODEL_LABELS]
    datasets = list(dict.fromkeys(scores["dataset"]))
    columns = [(d, metric) for d in datasets for metric in ("AUC", "ACC") if (d, metric) in cells.columns]
    table = cells.loc[models, columns]
    table.index = [MODEL_LABELS.get(m, m) for m in table.index]
    table.index.name = "Model"
    table.columns = pd.MultiIndex.from_tuples([(DATASET_LABELS.get(d, d), metric) for d, metric in columns])
    return table


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




def truth_table(scores: pd.DataFrame, methods: Sequence[str] | None = None, datasets: Sequence[str] | None = None,
                unavailable: Unavailable | None = None, ci: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every agreement measure (TRUTH_METRICS) x 100 per method with the model's exact Shapley values of the whole
    game and of the object-only game (datasets that re-render their objects only), with intervals as in table2."""
    return method_table(scores, TRUTH_METRICS, methods, datasets, only_present=True, unavailable=unavailable, ci=ci)


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


# -- The model's truth: rank agreement, the gates, the sanity check ------------------------------------------


def kendall_notes(scores: pd.DataFrame, methods: Sequence[str]) -> list[str]:
    """One line per dataset with truth scores: Kendall's tau between the methods' ranking by mean SRG and by
    each truth measure (means over images and seeds; kendall_taus): do the faithfulness metric and each judge
    of agreement with the truth order the methods alike?"""
    taus = kendall_taus(scores, methods, TRUTH_METRICS)
    lines = []
    for dataset, rows in taus.groupby("dataset", sort=False):
        counts = set(rows["n_methods"])
        each = ", ".join(f"{METRIC_LABELS.get(row.measure, row.measure)} {row.tau:.2f}"
                         + ("" if len(counts) == 1 else f" ({row.n_methods} methods)") for row in rows.itertuples())
        over = f", over {counts.pop()} methods" if len(counts) == 1 else ""
        lines.append(f"{DATASET_LABELS.get(dataset, dataset)}: Kendall tau between the rankings by mean SRG and by "
                     f"each truth measure{over}: {each}")
    return lines


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
