"""Issue 24's reconciliation of the benchmark's two judges on `objects`, from one finished run folder:

    xaibench run --methods ofa,grad,attn,random,vit_shapley,fastshap,captum.IntegratedGradients --seeds 0,1,2,3,4 \
        --set run.sanity_images=0 --out runs/reconcile
    python experiments/truth_reconcile.py runs/reconcile > docs/truth_reconcile.md

Per seed and pooled: Kendall's tau between the methods' ranking by mean SRG (and R-SRG) and by the mean of each
agreement measure with the model's whole game (metrics/truth.py), the methods' means, and the background's share
of the game (game.csv). Prints Markdown.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from scipy.stats import kendalltau

CURVES = ("srg", "rsrg")
MEASURES = ("truth_rank", "truth_wtau", "truth_top1", "truth_bottom1", "truth_sign", "truth_rank_objects",
            "truth_sign_objects")


def seed_means(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean over images of every score, per seed and method (the reference ordering left out)."""
    scores = scores[(scores["method"] != "reference") & scores["metric"].isin(CURVES + MEASURES)]
    return scores.groupby(["seed", "method", "metric"])["value"].mean().unstack("metric")


def tau_table(means: pd.DataFrame) -> pd.DataFrame:
    """Kendall's tau between the ranking by each curve score and by each measure, per seed."""
    rows = []
    for seed, table in means.groupby(level="seed"):
        for curve in CURVES:
            rows.append({"seed": seed, "curve": curve,
                         **{measure: kendalltau(table[curve], table[measure]).statistic for measure in MEASURES}})
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame, decimals: int = 2) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    lines = [header, "|" + "---|" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.{decimals}f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="an xaibench run --out folder on the objects set")
    args = parser.parse_args(argv)
    scores = pd.read_csv(args.run / "scores_long.csv")
    means = seed_means(scores)
    taus = tau_table(means)
    pooled = taus.groupby("curve")[list(MEASURES)].mean().reset_index().assign(seed="mean")
    print(f"# The two judges reconciled: {args.run}\n")
    print("## Kendall's tau between the ranking by the curves and by each agreement measure\n")
    print(markdown(pd.concat([taus, pooled], ignore_index=True)[["seed", "curve", *MEASURES]]))
    print("\n## Means over images and seeds (x100)\n")
    table = (100 * means.groupby(level="method").mean()).reset_index()
    print(markdown(table[["method", *CURVES, *MEASURES]], 1))
    game = args.run / "game.csv"
    if game.is_file():
        shares = pd.read_csv(game)
        shares = shares[shares["measure"] == "background_share"][["seed", "value"]]
        print("\n## The background's share of |phi| per seed\n")
        print(markdown(shares.rename(columns={"value": "background_share"}), 3))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
