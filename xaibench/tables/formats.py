"""How a table is shown: cell text, one Markdown writer, booktabs LaTeX (bold best, escaping), and the
<stem>.csv/.tex/.md triple that write_table puts on disk."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from xaibench.io import atomic_write_text

MISSING = "n/a"  # a cell whose unit failed or did not run

# -- Cells ----------------------------------------------------------------------------------------------------


def _mean_std(values: pd.Series) -> str:
    """Table 1's cell: 'mean ± std' with one decimal (the mean alone for one value)."""
    if len(values) > 1:
        return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"
    return f"{values.mean():.1f}"


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


def _cell_mean(cell) -> float:
    """The leading number of a cell ('35.26 ± 1.20 [33.10, 37.02]' -> 35.26); NaN for 'n/a' and other text."""
    try:
        return float(str(cell).split(" ")[0])
    except ValueError:
        return math.nan


_CI_SUFFIX = re.compile(r" \[[^\]]*\]$")  # a cell's trailing " [low, high]"


def without_ci(cell) -> str:
    """A cell without its trailing confidence interval: '16.78 ± 1.20 [15.02, 18.40]' -> '16.78 ± 1.20'."""
    return _CI_SUFFIX.sub("", str(cell))


# -- Markdown ---------------------------------------------------------------------------------------------------


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], notes: Sequence[str] = ()) -> str:
    """The one Markdown writer: a pipe table of text cells; the notes follow it, one paragraph each."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += [line for note in notes for line in ("", note)]
    return "\n".join(lines) + "\n"


def to_markdown(table: pd.DataFrame, notes: Sequence[str] | None = None) -> str:
    """A Markdown table; the notes (default table.attrs["notes"]) follow it, one paragraph each, if any."""
    notes = table.attrs.get("notes", []) if notes is None else notes
    header = ["Model" if table.index.name == "Model" else (table.index.name or "")]
    header += [" ".join(map(str, col)) if isinstance(col, tuple) else str(col) for col in table.columns]
    rows = ([str(name), *map(str, row.tolist())] for name, row in table.iterrows())
    return markdown_table(header, rows, notes)


def flat_markdown(frame: pd.DataFrame, float_format: str = "{:.4g}") -> str:
    """A Markdown table of a flat frame (no index), floats by `float_format`, NaN as 'n/a'."""
    def cell(value) -> str:
        if isinstance(value, float):
            return MISSING if math.isnan(value) else float_format.format(value)
        return str(value)

    rows = ([cell(value) for value in row] for row in frame.itertuples(index=False))
    return markdown_table([str(column) for column in frame.columns], rows)


# -- LaTeX ------------------------------------------------------------------------------------------------------

BOLD = "textbf:--rwrap;"  # Styler's LaTeX property: the cell becomes \textbf{cell}
CI_CAPTION_NOTE = ("Each cell's 95\\% bootstrap confidence interval over images is left out here: see the "
                   "Markdown and CSV tables and ci.csv.")


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


# -- Files ------------------------------------------------------------------------------------------------------


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
