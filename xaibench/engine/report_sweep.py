"""The files of a `--sweep` run (xaibench/sweep.py runs it): every CSV of the variants with a `variant` column,
sweep.csv, sweep_variants.csv, sweep_cost.{csv,md}, figures/sweep.png and the sweep's manifest."""
from __future__ import annotations

import csv
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

logger = logging.getLogger("xaibench.sweep")


@dataclass(frozen=True)
class Variant:
    """One combination of swept values: `name` is its KEY=VALUE pairs joined by commas (the keys as given),
    `overrides` the same pairs as --set options, `folder` its subfolder of --out/variants."""

    name: str
    overrides: dict[str, Any]
    folder: str


def value_text(value: Any) -> str:
    """A swept value as its variant name shows it (text as it is, anything else as compact JSON)."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def swept_columns(variants: list[Variant]) -> pd.DataFrame:
    """One row per variant: its name and each swept key's value (as text, and numeric where every value is)."""
    frame = pd.DataFrame([{"variant": v.name, **{k: value_text(x) for k, x in v.overrides.items()}} for v in variants])
    for key in frame.columns[1:]:
        numeric = pd.to_numeric(frame[key], errors="coerce")
        if numeric.notna().all():
            frame[key] = numeric
    return frame


def sweep_manifest(stage: Path, request: Any, variants: list[Variant], files: list[Path], n_units: int,
                   started: float) -> Path:
    """manifest.json of the sweep folder: the environment, the command, every variant and its folder (each
    variant's own manifest.json holds its units), the file list."""
    from xaibench.engine.report import environment, write_manifest

    record = environment(request.config, request.device, {})
    record.update({"command": getattr(request, "command", None), "sweep": True, "n_units": n_units,
                   "variants": [{"name": v.name, "overrides": v.overrides, "folder": f"variants/{v.folder}"}
                                for v in variants],
                   "wall_seconds": round(time.perf_counter() - started, 1)})
    return write_manifest(stage, record, files)


# -- the sweep's own files -----------------------------------------------------------------------------------

def _rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text())))


def _header_rows(rows: list[list[str]]) -> int:
    """How many header rows a CSV has: 1 for a tidy file; a display sheet (pandas' multi-row column header) ends
    its header with the index-name row ('Method,,,')."""
    for i, row in enumerate(rows[1:4], start=1):
        if row and row[0] and not any(row[1:]):
            return i + 1
    return 1


def combine_csvs(stage: Path, variants: list[Variant], folders: list[Path]) -> list[Path]:
    """Every CSV the variants wrote, once in `stage`, with a `variant` column first (display sheets keep their
    header rows). A file whose header differs between variants is combined from the variants sharing the first
    one's header, and the others are named in the log."""
    names = sorted({str(p.relative_to(folder)) for folder in folders for p in folder.rglob("*.csv")})
    written = []
    for name in names:
        header, body, skipped = None, [], []
        for variant, folder in zip(variants, folders):
            if not (folder / name).is_file():
                continue
            rows = _rows(folder / name)
            n = _header_rows(rows)
            if header is None:
                header = rows[:n]
            elif rows[:n] != header:
                skipped.append(variant.name)
                continue
            body += [[variant.name, *row] for row in rows[n:]]
        if skipped:
            logger.warning(f"sweep: {name} has other columns in variant(s) {', '.join(skipped)}: left out of the "
                           f"combined {name} (each variant's own file has them)")
        head = [["variant" if i == len(header) - 1 else "", *row] for i, row in enumerate(header)]
        if len(header) == 1:
            head = [["variant", *header[0]]]
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(head + body)
        (stage / name).parent.mkdir(parents=True, exist_ok=True)
        (stage / name).write_text(buffer.getvalue())
        written.append(stage / name)
    return written


def write_swept(stage: Path, variants: list[Variant]) -> list[Path]:
    path = stage / "sweep_variants.csv"
    frame = swept_columns(variants)
    frame.insert(1, "folder", [f"variants/{v.folder}" for v in variants])
    frame.to_csv(path, index=False)
    return [path]


def sweep_summary(variants: list[Variant], results: list[Any]) -> pd.DataFrame:
    """One row per variant, dataset, method and score: the mean over images and seeds, beside the swept values."""
    swept = swept_columns(variants)
    parts = []
    for variant, result in zip(variants, results):
        scores = result.scores
        if scores is None or not len(scores):
            continue
        means = (scores.groupby(["dataset", "method", "metric"], sort=False)["value"]
                 .agg(mean="mean", n_images="count").reset_index())
        means.insert(0, "variant", variant.name)
        parts.append(means)
    if not parts:
        return pd.DataFrame(columns=["variant", *swept.columns[1:], "dataset", "method", "metric", "mean"])
    return swept.merge(pd.concat(parts, ignore_index=True), on="variant", how="right")


def sweep_cost(variants: list[Variant], plans: list[list[Any]], results: list[Any],
               folders: list[Path]) -> pd.DataFrame:
    """Each variant's cost: seconds of its training, fitting, explanation and scoring units as they were computed
    (a unit two variants share counts in both), and how many of its units were cached."""
    rows = []
    for variant, plan, folder in zip(variants, plans, folders):
        manifest = json.loads((folder / "manifest.json").read_text())
        units = manifest.get("units", {})
        row = {"variant": variant.name, "train_s": 0.0, "fit_s": 0.0, "explain_s": 0.0, "score_s": 0.0,
               "other_s": 0.0}
        cached = 0
        for unit in plan:
            entry = units.get(unit.label)
            if entry is None:
                continue
            column = f"{unit.kind}_s" if f"{unit.kind}_s" in row else "other_s"
            seconds = entry.get("train_seconds", entry["seconds"]) if unit.kind == "train" else entry["seconds"]
            row[column] += float(seconds or 0.0)
            cached += bool(entry.get("cached"))
        row.update({"units": len(plan), "cached": cached})
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in ("train_s", "fit_s", "explain_s", "score_s", "other_s"):
        frame[column] = frame[column].round(2)
    return frame


def write_sweep_outputs(stage: Path, variants: list[Variant], folders: list[Path], plans: list[list[Any]],
                        results: list[Any]) -> list[Path]:
    """The sweep's combined files in `stage` (see the module's docstring)."""
    from xaibench.io import atomic_write_text
    from xaibench.tables.formats import flat_markdown

    files = combine_csvs(stage, variants, folders) + write_swept(stage, variants)
    summary = sweep_summary(variants, results)
    summary.to_csv(stage / "sweep.csv", index=False)
    files.append(stage / "sweep.csv")
    cost = sweep_cost(variants, plans, results, folders)
    cost.to_csv(stage / "sweep_cost.csv", index=False)
    files += [stage / "sweep_cost.csv", atomic_write_text(stage / "sweep_cost.md", flat_markdown(cost, "{:.2f}"))]
    files += sweep_figure(stage / "figures", summary, variants)
    return files


def sweep_figure(folder: Path, summary: pd.DataFrame, variants: list[Variant]) -> list[Path]:
    """figures/sweep.png: each score's mean against each numeric swept key (the other keys' values as separate
    lines), one line per method and dataset; nothing when no swept key is numeric."""
    swept = swept_columns(variants)
    numeric = [key for key in swept.columns[1:] if pd.api.types.is_numeric_dtype(swept[key])]
    if not numeric or not len(summary):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    metrics = list(dict.fromkeys(summary["metric"]))
    fig, axes = plt.subplots(len(numeric), len(metrics), figsize=(3.2 * len(metrics), 2.8 * len(numeric)),
                             squeeze=False)
    for row, key in enumerate(numeric):
        others = [k for k in swept.columns[1:] if k != key]
        for col, metric in enumerate(metrics):
            data = summary[summary["metric"] == metric].copy()
            data["line"] = data["method"] + data["dataset"].map(lambda d: f" ({d})" if summary["dataset"].nunique()
                                                                 > 1 else "")
            if others:
                data["line"] += data[others].astype(str).agg(lambda r: " " + ",".join(
                    f"{k}={v}" for k, v in zip(others, r)), axis=1)
            ax = axes[row][col]
            sns.lineplot(data=data, x=key, y="mean", hue="line", marker="o", ax=ax, errorbar=None)
            ax.set_title(metric)
            ax.set_xlabel(key)
            ax.set_ylabel("mean over images" if col == 0 else "")
            if ax.get_legend() is not None and (row, col) != (0, len(metrics) - 1):
                ax.get_legend().remove()
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sweep.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
