"""Where scores become tables: pandas aggregation into the paper's layouts, written as CSV, LaTeX, Markdown.

Table 1 (SPEC §7): rows ResNet-18, ResNet-50, ViT, Segm, OFA; per dataset AUC and ACC x 100.
"""
from __future__ import annotations

from pathlib import Path

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


def to_latex(table: pd.DataFrame, caption: str, label: str, bold_best: bool = True) -> str:
    """booktabs LaTeX; the best (largest mean) cell of each column in bold."""
    body = table.copy().astype(str)
    if bold_best:
        for column in table.columns:
            means = table[column].map(lambda cell: float(str(cell).split(" ")[0]))
            best = means.max()
            body[column] = [f"\\textbf{{{cell}}}" if mean == best else cell
                            for cell, mean in zip(table[column], means)]
    body = body.map(lambda cell: cell.replace("±", "$\\pm$")).rename_axis(None)
    latex = body.to_latex(escape=False, multicolumn=True, multicolumn_format="c", column_format="l" + "r" * len(body.columns))
    return (f"\\begin{{table}}\n\\centering\n\\caption{{{caption}}}\n\\label{{{label}}}\n{latex}\\end{{table}}\n")


def to_markdown(table: pd.DataFrame) -> str:
    header = ["Model" if table.index.name == "Model" else (table.index.name or "")]
    header += [" ".join(map(str, col)) if isinstance(col, tuple) else str(col) for col in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in table.iterrows():
        lines.append("| " + " | ".join([str(name), *map(str, row.tolist())]) + " |")
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, folder: str | Path, stem: str, caption: str) -> list[Path]:
    """Write <stem>.csv, <stem>.tex and <stem>.md atomically; returns the paths."""
    folder = Path(folder)
    return [
        atomic_write_text(folder / f"{stem}.csv", table.to_csv()),
        atomic_write_text(folder / f"{stem}.tex", to_latex(table, caption, f"tab:{stem}")),
        atomic_write_text(folder / f"{stem}.md", to_markdown(table)),
    ]
