"""Table writers: which cell is bold (by the registered metric's direction), LaTeX through Styler, n/a with reasons."""
from __future__ import annotations

import re

import pandas as pd
import pytest

from xaibench.tables import (
    KENDALL_COLUMNS,
    cost_table,
    flat_markdown,
    kendall_notes,
    kendall_taus,
    markdown_table,
    method_table,
    plausibility_table,
    table2,
    to_latex,
    to_markdown,
    without_ci,
    write_table,
)

# Seed-0 means per (method, metric): Grad has the highest SRG and the LOWEST deletion, OFA the highest deletion.
MEANS = {"ofa": {"srg": 0.20, "rsrg": 0.05, "deletion": 0.60, "plausibility": 0.70},
         "grad": {"srg": 0.30, "rsrg": 0.02, "deletion": 0.10, "plausibility": 0.90},
         "attn": {"srg": -0.10, "rsrg": 0.04, "deletion": 0.40, "plausibility": 0.60}}


def long_scores(datasets=("synthetic", "breastmnist")) -> pd.DataFrame:
    rows = []
    for dataset in datasets:
        for method, means in MEANS.items():
            for metric, mean in means.items():
                if metric == "plausibility" and dataset != "synthetic":
                    continue  # ground truth on the synthetic set only
                for image, offset in enumerate((-0.01, 0.01)):
                    rows.append({"dataset": dataset, "method": method, "seed": 0, "image": image, "metric": metric,
                                 "value": mean + offset})
    return pd.DataFrame(rows)


def bold_rows(latex: str) -> dict[str, list[int]]:
    """Row label -> the cell positions (0-based, data columns) printed in bold."""
    rows = {}
    for line in latex.splitlines():
        if line.endswith("\\\\") and "&" in line and not line.startswith(" &"):
            cells = [cell.strip() for cell in line[:-2].split("&")]
            rows[cells[0]] = [i for i, cell in enumerate(cells[1:]) if cell.startswith("\\textbf{")]
    return rows


def test_a_deletion_column_bolds_its_lowest_cell():
    table = method_table(long_scores(("synthetic",)), ("srg", "deletion"), methods=["ofa", "grad", "attn"])
    assert table.attrs["higher_is_better"] == {("Synthetic", "SRG"): True, ("Synthetic", "Del"): False}
    latex = to_latex(table, "caption", "tab:x")
    assert table.loc["Grad", ("Synthetic", "SRG")] == "30.00 [29.00, 31.00]"  # bootstrap interval of 2 images
    assert "Grad & \\textbf{30.00} & \\textbf{10.00} \\\\" in latex  # highest SRG, lowest deletion
    assert bold_rows(latex) == {"OFA": [], "Grad": [0, 1], "Attn": []}
    # the direction can be given explicitly too (the table's attrs are only the default)
    flipped = to_latex(table, "caption", "tab:x", higher_is_better={("Synthetic", "Del"): True})
    assert bold_rows(flipped) == {"OFA": [1], "Grad": [0], "Attn": []}


def test_bold_skips_na_cells_and_keeps_ties():
    scores = long_scores(("synthetic",))
    scores = scores[~((scores["method"] == "grad") & (scores["metric"] == "deletion"))]  # Grad's deletion fails
    scores.loc[(scores["method"] == "attn") & (scores["metric"] == "srg"), "value"] = 0.30  # ties Grad's SRG
    table = method_table(scores, ("srg", "deletion"), methods=["ofa", "grad", "attn"])
    assert table.loc["Grad", ("Synthetic", "Del")] == "n/a"
    assert bold_rows(to_latex(table, "c", "tab:x")) == {"OFA": [], "Grad": [0], "Attn": [0, 1]}


# The exact text the hand-made bolding wrote before the Styler (results/ and the ref run compare bytes).
EXPECTED_TABLE2 = r"""\begin{table}
\centering
\caption{SRG $\pm$ x Each cell's 95\% bootstrap confidence interval over images is left out here: see the Markdown and CSV tables and ci.csv.}
\label{tab:table2}
\begin{tabular}{lrrrr}
\toprule
 & \multicolumn{2}{c}{Synthetic} & \multicolumn{2}{c}{Breast} \\
 & SRG & R-SRG & SRG & R-SRG \\
\midrule
OFA & 20.00 $\pm$ 1.41 & \textbf{5.00 $\pm$ 1.41} & 20.00 & \textbf{5.00} \\
Grad & \textbf{30.00 $\pm$ 1.41} & 2.00 $\pm$ 1.41 & \textbf{30.00} & 2.00 \\
Attn & -10.00 $\pm$ 1.41 & 4.00 $\pm$ 1.41 & -10.00 & 4.00 \\
\bottomrule
\end{tabular}
\end{table}
"""


def two_seed_scores() -> pd.DataFrame:
    """Synthetic with seeds 0 and 1 (means ± 1.41 over seeds), Breast with seed 0 only."""
    scores = long_scores()
    synthetic = scores[scores["dataset"] == "synthetic"]
    return pd.concat([synthetic.assign(value=synthetic["value"] - 0.01),
                      synthetic.assign(seed=1, value=synthetic["value"] + 0.01),
                      scores[scores["dataset"] != "synthetic"]])


def test_latex_through_styler_is_byte_identical_to_the_former_writer(tmp_path):
    table = table2(two_seed_scores(), methods=["ofa", "grad", "attn"], datasets=["synthetic", "breastmnist"])
    assert table.attrs["notes"] == []
    paths = write_table(table, tmp_path, "table2", "SRG $\\pm$ x")
    assert [p.name for p in paths] == ["table2.csv", "table2.tex", "table2.md"]
    assert (tmp_path / "table2.tex").read_text() == EXPECTED_TABLE2  # the paper's layout: no intervals
    assert (tmp_path / "table2.md").read_text().endswith(
        "| Attn | -10.00 ± 1.41 [-11.00, -9.00] | 4.00 ± 1.41 [3.00, 5.00] | -10.00 [-11.00, -9.00] "
        "| 4.00 [3.00, 5.00] |\n")
    assert pd.read_csv(tmp_path / "table2.csv", header=[0, 1], index_col=0).loc["Attn"].tolist() == \
        table.loc["Attn"].tolist()  # the CSV cells carry the intervals too
    plain = to_latex(table, "SRG $\\pm$ x", "tab:table2", bold_best=False)
    assert plain == re.sub(r"\\textbf\{([^}]*)\}", r"\1", EXPECTED_TABLE2)
    no_intervals = table.map(without_ci)  # cells without intervals: the caption gains no note
    assert "bootstrap" not in to_latex(no_intervals, "SRG $\\pm$ x", "tab:table2")


REASON = "attention rollout needs a ViT; the model is resnet_18"


def test_unavailable_cells_read_na_with_one_note_per_reason(tmp_path):
    unavailable = {("synthetic", "attn"): REASON, ("breastmnist", "attn"): REASON,
                   ("breastmnist", "grad"): "no gradients through the 100% lookup",
                   ("pathmnist", "ofa"): "not in this table"}
    table = table2(long_scores(), methods=["ofa", "grad", "attn"], unavailable=unavailable)
    assert (table.loc["Attn"] == "n/a").all()
    assert list(table.loc["Grad"]) == ["30.00 [29.00, 31.00]", "2.00 [1.00, 3.00]", "n/a", "n/a"]
    notes = ["n/a (Grad: Breast): no gradients through the 100% lookup",
             f"n/a (Attn: Synthetic, Breast): {REASON}"]
    assert table.attrs["notes"] == notes
    write_table(table, tmp_path, "t2", "caption")
    markdown = (tmp_path / "t2.md").read_text()
    assert markdown.endswith("| Attn | n/a | n/a | n/a | n/a |\n\n" + notes[0] + "\n\n" + notes[1] + "\n")
    latex = (tmp_path / "t2.tex").read_text()
    assert latex.endswith("\\end{tabular}\n{\\footnotesize n/a (Grad: Breast): no gradients through the 100\\% lookup"
                          "\\par}\n{\\footnotesize n/a (Attn: Synthetic, Breast): attention rollout needs a ViT; the "
                          "model is resnet\\_18\\par}\n\\end{table}\n")
    assert bold_rows(latex)["Attn"] == [] and bold_rows(latex)["OFA"] == [1, 2, 3]  # Grad's Breast SRG is gone
    assert (tmp_path / "t2.csv").read_text().count("n/a") == 6  # the CSV holds the cells, not the notes
    without = table2(long_scores(), methods=["ofa", "grad", "attn"], unavailable={})
    assert to_markdown(without) == to_markdown(table2(long_scores(), methods=["ofa", "grad", "attn"]))
    assert "footnotesize" not in to_latex(without, "c", "tab:x") and "\n\n" not in to_markdown(without)


def test_plausibility_and_cost_tables_take_unavailable_too():
    unavailable = {("synthetic", "attn"): REASON, ("breastmnist", "attn"): REASON}
    plausibility = plausibility_table(long_scores(), methods=["ofa", "grad", "attn"], unavailable=unavailable)
    assert list(plausibility.columns) == [("Synthetic", "Plaus")] and plausibility.loc["Attn"].tolist() == ["n/a"]
    assert plausibility.loc["Grad"].tolist() == ["90.00 [89.00, 91.00]"]
    assert plausibility.attrs["notes"] == [f"n/a (Attn: Synthetic): {REASON}"]  # Breast has no Plaus column
    costs = pd.DataFrame([{"dataset": d, "method": m, "seed": 0, "ms_per_image": 2.0, "forward_per_image": 9,
                           "backward_per_image": 1} for d in ("synthetic", "breastmnist") for m in MEANS])
    cost = cost_table(costs, methods=list(MEANS), unavailable={("breastmnist", "attn"): REASON})
    assert cost.loc["Attn"].tolist() == ["2.00", "9", "1", "n/a", "n/a", "n/a"]
    assert cost.attrs["notes"] == [f"n/a (Attn: Breast): {REASON}"]
    assert set(cost.attrs["higher_is_better"].values()) == {False}  # cheaper is better, if ever bolded
    assert "textbf" not in to_latex(cost, "c", "tab:cost", bold_best=False)


def test_a_score_no_metric_declares_is_an_error():
    scores = long_scores(("synthetic",)).replace({"metric": {"srg": "speed"}})
    with pytest.raises(ValueError, match="no registered metric gives the score 'speed'"):
        method_table(scores, ("speed",))


def test_plausibility_is_registered_and_localization_is_no_longer_a_name():
    import torch

    from xaibench.metrics import create_metric, score_higher_is_better
    from xaibench.registry import METRICS, UnknownNameError

    attributions = torch.tensor([[0.9, 0.1, 0.5, 0.2], [0.1, 0.2, 0.3, 0.4]])
    truth = torch.tensor([[True, False, True, False], [True, True, True, True]])
    plausibility = create_metric("plausibility")
    out = plausibility(None, None, attributions, None, ground_truth=truth)
    assert list(out.scores) == ["plausibility"] and out.scores["plausibility"][0] == 1
    assert torch.isnan(out.scores["plausibility"][1])  # a one-class mask has no AUROC
    assert score_higher_is_better("plausibility")
    # 0.5.0 drops the name 0.4.0 deprecated: a config naming it gets the valid names
    with pytest.raises(UnknownNameError, match="unknown metric 'localization'; valid names: .*plausibility"):
        METRICS.resolve(["localization"])
    with pytest.raises(ValueError, match="no registered metric gives the score 'localization'"):
        score_higher_is_better("localization")


def test_one_markdown_writer_serves_the_layouts_and_the_flat_frames():
    assert markdown_table(["a", "b"], [["1", "2"]], ["a note"]) == "| a | b |\n|---|---|\n| 1 | 2 |\n\na note\n"
    flat = pd.DataFrame({"gate": ["fit", "rank"], "value": [0.123456, float("nan")], "holds": [True, False]})
    assert flat_markdown(flat) == ("| gate | value | holds |\n|---|---|---|\n| fit | 0.1235 | True |\n"
                                   "| rank | n/a | False |\n")
    assert flat_markdown(flat, "{:.1f}").splitlines()[2] == "| fit | 0.1 | True |"
    table = table2(long_scores(("synthetic",)), methods=["ofa", "grad"])
    assert to_markdown(table, ["why"]) == markdown_table(
        ["Method", "Synthetic SRG", "Synthetic R-SRG"],
        [["OFA", "20.00 [19.00, 21.00]", "5.00 [4.00, 6.00]"], ["Grad", "30.00 [29.00, 31.00]", "2.00 [1.00, 3.00]"]],
        ["why"])


def test_kendall_taus_are_numbers_and_the_notes_their_text():
    scores = long_scores(("synthetic", "breastmnist"))
    srg = scores[scores["metric"] == "srg"]
    rank = srg[srg["dataset"] == "synthetic"].assign(metric="truth_rank")  # the same order as SRG: tau 1
    wtau = rank.assign(metric="truth_wtau", value=-rank["value"])  # the reverse order: tau -1
    scores = pd.concat([scores, rank, wtau, rank.assign(method="reference")])  # the reference does not count
    taus = kendall_taus(scores, ["ofa", "grad", "attn", "reference"])
    assert list(taus.columns) == KENDALL_COLUMNS and taus["dataset"].tolist() == ["synthetic", "synthetic"]
    assert taus["measure"].tolist() == ["truth_rank", "truth_wtau"] and taus["n_methods"].tolist() == [3, 3]
    assert taus["tau"].tolist() == pytest.approx([1.0, -1.0])
    assert kendall_taus(scores, ["ofa", "grad", "attn"], ["truth_wtau"])["tau"].tolist() == pytest.approx([-1.0])
    assert kendall_notes(scores, ["ofa", "grad", "attn", "reference"]) == [
        "Synthetic: Kendall tau between the rankings by mean SRG and by each truth measure, over 3 methods: "
        "wTau -1.00, Rank 1.00"]
    assert kendall_notes(scores, ["ofa", "grad"]) == []  # fewer than 3 methods rank nothing
    # a measure with a method missing says its own count
    fewer = scores[~((scores["metric"] == "truth_wtau") & (scores["method"] == "attn"))]
    more = pd.concat([fewer] + [frame.assign(method="random", value=0.0) for frame in (srg, rank, wtau)])
    assert kendall_notes(more, ["ofa", "grad", "attn", "random"]) == [
        "Synthetic: Kendall tau between the rankings by mean SRG and by each truth measure: wTau -1.00 (3 methods), "
        "Rank 1.00 (4 methods)"]
