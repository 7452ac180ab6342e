"""The metric outputs of a run that chose metrics beyond Table 2's: metrics.{csv,md,tex} (methods x metrics and the
mean rank), cost_metrics.{csv,md} (each metric's cost per image), and, where the model's exact truth exists,
metric_validity.{csv,md}, metric_agreement.csv and their figures (the truth as the judge of the metrics)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
from matplotlib.figure import Figure

from xaibench.figures import save_figure
from xaibench.io import atomic_write_text
from xaibench.metrics.catalog import main_scores, metric_group
from xaibench.registry import METRICS
from xaibench.tables.formats import flat_markdown, to_markdown, write_table
from xaibench.tables.metric_tables import bold_best_markdown, metric_cost_table, metrics_table
from xaibench.tables.validity import JUDGE, meta_properties, metric_agreement, metric_validity

TABLE2_DEFAULT = ("srg", "rsrg", "plausibility", "truth")  # the default run's metrics: their tables are Table 2's


def wants_metric_outputs(metrics: Sequence[str]) -> bool:
    """A run writes the metric outputs when it scores some metric the default run does not."""
    return any(metric not in TABLE2_DEFAULT for metric in metrics)


def inapplicable(metrics: Sequence[str], datasets: Sequence[str], setup) -> dict[tuple[str, str], str]:
    """(dataset, score) -> why a chosen metric cannot score that dataset (no annotated region, no exact truth)."""
    reasons = {}
    for dataset in datasets:
        for metric in metrics:
            cls = METRICS.get(metric)
            if setup.needs_truth.get(metric) and not setup.tests[dataset].has_ground_truth:
                reason = "the dataset has no annotated region"
            elif setup.needs_object_truth.get(metric) and not setup.has_object_truth(dataset):
                reason = "the dataset does not re-render its objects, so the model's exact truth is unknown"
            else:
                continue
            for score in main_scores([metric]) if isinstance(cls, type) else (metric,):
                reasons[(dataset, score)] = reason
    return reasons


def write_metric_outputs(out: Path, frames, methods: Sequence[str], datasets: Sequence[str],
                         metrics: Sequence[str], setup, figures: bool = True) -> list[Path]:
    """metrics.*, cost_metrics.*, and (with the judge's score present) metric_validity.*, metric_agreement.csv and
    figures/metric_validity.*, figures/metric_agreement.*."""
    scores, files = frames.scores, []
    columns = main_scores(metrics)
    shown = methods + (["reference"] if (scores["method"] == "reference").any() else [])
    table = metrics_table(scores, columns, shown, datasets, inapplicable(metrics, datasets, setup))
    files += write_table(table, out, "metrics", "Every chosen metric's main score per method (mean over test images; "
                         "mean $\\pm$ std over seeds) and the methods' mean rank across them (1 = best).")
    files[-1] = atomic_write_text(out / "metrics.md", to_markdown(bold_best_markdown(table), table.attrs["notes"]))
    if len(frames.metric_costs):
        costs = metric_cost_table(frames.metric_costs)
        files.append(atomic_write_text(out / "cost_metrics.csv", costs.to_csv(index=False)))
        files.append(atomic_write_text(out / "cost_metrics.md", flat_markdown(costs)))
    judged = {score: higher for score, higher in columns.items() if score != JUDGE}
    if JUDGE not in set(scores["metric"]) or not judged:
        return files
    validity = metric_validity(scores, judged, methods)
    if not len(validity):
        return files
    validity.insert(3, "group", [_score_group(score) for score in validity["metric"]])
    meta = frames.extra.get("meta")
    if meta is not None and len(meta):
        properties = meta_properties(meta, judged)
        if len(properties):
            validity["seed"] = validity["seed"].astype(str)
            properties["seed"] = properties["seed"].astype(str)
            validity = validity.merge(properties, on=["dataset", "seed", "metric"], how="left")
    files.append(atomic_write_text(out / "metric_validity.csv", validity.to_csv(index=False, float_format="%.6g")))
    files.append(atomic_write_text(out / "metric_validity.md", flat_markdown(validity, "{:.3f}")))
    agreement = metric_agreement(scores, {**judged, JUDGE: True}, methods)
    files.append(atomic_write_text(out / "metric_agreement.csv", agreement.to_csv(float_format="%.6g")))
    if figures:
        (out / "figures").mkdir(parents=True, exist_ok=True)
        files += save_figure(validity_figure(validity), out / "figures" / "metric_validity")
        files += save_figure(agreement_figure(agreement), out / "figures" / "metric_agreement")
    return files


def _score_group(score: str) -> str:
    from xaibench.metrics.catalog import score_metric

    cls = score_metric(score)
    return metric_group(next(n for n in METRICS.names() if METRICS.get(n) is cls)) if cls else ""


def validity_figure(validity: pd.DataFrame) -> Figure:
    """Kendall's tau with the truth per metric (pooled over seeds, 95% interval; dots: single seeds), per dataset."""
    datasets = list(pd.unique(validity["dataset"]))
    pooled = validity[validity["seed"].astype(str) == "all"].sort_values("tau")
    figure = Figure(figsize=(6.5 * len(datasets), 0.32 * max(len(pooled) // max(len(datasets), 1), 4) + 1.2))
    axes = figure.subplots(1, len(datasets), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets):
        rows = pooled[pooled["dataset"] == dataset].reset_index(drop=True)
        seeds = validity[(validity["dataset"] == dataset) & (validity["seed"].astype(str) != "all")]
        ax.errorbar(rows["tau"], range(len(rows)), xerr=[rows["tau"] - rows["ci_low"], rows["ci_high"] - rows["tau"]],
                    fmt="o", color="black", capsize=2)
        for position, metric in enumerate(rows["metric"]):
            per_seed = seeds[seeds["metric"] == metric]["tau"]
            ax.scatter(per_seed, [position] * len(per_seed), s=10, color="tab:blue", alpha=0.6, zorder=3)
        ax.set_yticks(range(len(rows)), [f"{m} ({g})" for m, g in zip(rows["metric"], rows["group"])], fontsize=8)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlim(-1.05, 1.05)
        ax.set_xlabel(f"Kendall's tau with {JUDGE} (methods' ranking)")
        ax.set_title(dataset, fontsize=10)
    figure.tight_layout()
    return figure


def agreement_figure(agreement: pd.DataFrame) -> Figure:
    """The inter-metric agreement (Spearman over methods, directions aligned) as a heatmap."""
    import seaborn as sns

    size = 0.45 * len(agreement) + 2
    figure = Figure(figsize=(size + 1, size))
    ax = figure.subplots()
    sns.heatmap(agreement, ax=ax, vmin=-1, vmax=1, cmap="RdBu_r", annot=len(agreement) <= 16, fmt=".1f",
                annot_kws={"fontsize": 6}, square=True, cbar_kws={"label": "Spearman over methods"})
    ax.tick_params(labelsize=7)
    figure.tight_layout()
    return figure

