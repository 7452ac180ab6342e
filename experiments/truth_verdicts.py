"""Issue 14's verdicts from one `xaibench run --out DIR` folder on the objects set:

    python experiments/truth_verdicts.py DIR [--separated ofa,grad,attn,random] [--alpha 0.01]

1. gates: the issue's two gates (accuracy, removal agreement) hold on every seed (gates.csv; the others are shown);
2. discrimination: every pair of the --separated methods differs in SRG with Holm-adjusted Wilcoxon p < alpha
   on every seed (wilcoxon.csv, per-seed families), in whatever order; beside it, the order the model's truth
   gives the pair on that seed (mean truth_rank difference and its Wilcoxon p over the same images);
3. agreement with the truth: Kendall's tau between the methods' ranking by mean SRG and by mean rank agreement
   with the exact object Shapley values (means over images and seeds; scores_long.csv), and the reference
   ordering's SRG beside them.
Prints a Markdown report; exit 0 when all three hold, else 1.
"""
from __future__ import annotations

import argparse
import sys
from itertools import combinations
from pathlib import Path

import pandas as pd
from scipy.stats import kendalltau, wilcoxon


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="an xaibench run --out folder")
    parser.add_argument("--separated", default="ofa,grad,attn,random",
                        help="methods that must be separated pairwise in SRG (default ofa,grad,attn,random)")
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--tau", type=float, default=0.7, help="least Kendall tau (default 0.7)")
    args = parser.parse_args(argv)

    scores = pd.read_csv(args.run / "scores_long.csv")
    gates = pd.read_csv(args.run / "gates.csv")
    tests = pd.read_csv(args.run / "wilcoxon.csv", dtype={"seed": str})
    lines, ok = [f"# Issue 14 verdicts: {args.run}", ""], True

    lines += ["## Gates", "", "| seed | gate | value | threshold | holds |", "|---|---|---|---|---|"]
    for row in gates.itertuples():
        lines.append(f"| {row.seed} | {row.gate} | {row.value:.4f} | {row.threshold} | {row.holds} |")
    ok &= bool(gates.loc[gates["gate"].isin(["accuracy", "removal_agreement"]), "holds"].all())

    separated = args.separated.split(",")
    srg = tests[(tests["metric"] == "srg") & (tests["seed"] != "all")]
    truth = scores[scores["metric"] == "truth_rank"].pivot_table(index=["seed", "image"], columns="method",
                                                                 values="value")
    lines += ["", f"## SRG separation (Holm-adjusted Wilcoxon p < {args.alpha} on every seed)", "",
              "| pair | seeds | SRG diff x100 per seed | p_holm per seed | separated | truth rank diff x100 (p) per seed |",
              "|---|---|---|---|---|---|"]
    for a, b in combinations(separated, 2):
        pair = srg[((srg["method_a"] == a) & (srg["method_b"] == b)) | ((srg["method_a"] == b) & (srg["method_b"] == a))]
        if pair.empty:
            lines.append(f"| {a} - {b} | 0 | | | no (not run) |")
            ok = False
            continue
        sign = pair.apply(lambda r: 1 if r["method_a"] == a else -1, axis=1)
        diffs = pair["mean_diff_x100"] * sign
        good = bool((pair["p_holm"] < args.alpha).all())
        ok &= good
        orders = []
        for seed in sorted(pd.unique(truth.index.get_level_values("seed"))):
            both = truth.loc[seed][[a, b]].dropna() if {a, b} <= set(truth.columns) else pd.DataFrame()
            if len(both) and (both[a] != both[b]).any():
                orders.append(f"{100 * (both[a] - both[b]).mean():+.1f} ({wilcoxon(both[a], both[b]).pvalue:.2g})")
        lines.append(f"| {a} - {b} | {len(pair)} | {', '.join(f'{d:+.2f}' for d in diffs)} | "
                     f"{', '.join(f'{p:.2g}' for p in pair['p_holm'])} | {'yes' if good else 'NO'} | "
                     f"{', '.join(orders)} |")

    means = scores[scores["metric"].isin(["srg", "rsrg", "truth_rank", "truth_sign"])].groupby(
        ["method", "metric"])["value"].mean().unstack("metric") * 100
    methods = [m for m in means.index if m != "reference" and not pd.isna(means.loc[m].get("truth_rank"))]
    table = means.loc[methods].sort_values("srg", ascending=False)
    tau = kendalltau(table["srg"], table["truth_rank"]).statistic
    ok &= bool(tau >= args.tau)
    lines += ["", "## Ranking by SRG against ranking by agreement with the exact object Shapley values", "",
              "| method | SRG | R-SRG | truth rank | truth sign |", "|---|---|---|---|---|"]
    for method, row in table.iterrows():
        lines.append(f"| {method} | {row['srg']:.2f} | {row['rsrg']:.2f} | {row['truth_rank']:.2f} | "
                     f"{row['truth_sign']:.2f} |")
    if "reference" in means.index:
        ref = means.loc["reference"]
        lines.append(f"| reference (exact object Shapley) | {ref['srg']:.2f} | {ref['rsrg']:.2f} | | |")
    lines += ["", f"Kendall tau over {len(table)} methods: **{tau:.3f}** (needs >= {args.tau})", "",
              f"**All verdicts hold: {'yes' if ok else 'NO'}**"]
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
