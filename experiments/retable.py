"""Rewrite a finished run's tables from its per-image scores with this version's table code, without running
any model: Table 2, plausibility, Wilcoxon (per seed and pooled), summary.csv and ci.csv.

    python experiments/retable.py results [--methods ofa,grad,attn] [--datasets breastmnist,pneumoniamnist]

Used when a release changes only how scores become tables (0.4.0: bootstrap intervals in every cell, per-seed
Wilcoxon families, localization renamed plausibility). Scores stored under the old name "localization" are
renamed. Other files (cost, curves, figures, Table 1, manifests) are left as they are.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from xaibench.engine.collect import Frames
from xaibench.engine.report import write_run_outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder holding scores_long.csv")
    parser.add_argument("--methods", help="row order (default: as in the scores)")
    parser.add_argument("--datasets", help="column order (default: as in the scores)")
    args = parser.parse_args(argv)
    scores = pd.read_csv(args.run / "scores_long.csv")
    scores["metric"] = scores["metric"].replace({"localization": "plausibility"})
    methods = args.methods.split(",") if args.methods else list(pd.unique(scores["method"]))
    datasets = args.datasets.split(",") if args.datasets else list(pd.unique(scores["dataset"]))
    costs = pd.DataFrame()  # cost.* stays as written (it is not rebuilt from scores)
    frames = Frames(scores=scores, costs=costs, curves=pd.DataFrame(), table1=pd.DataFrame())
    for path in write_run_outputs(args.run, frames, methods, datasets):
        print(path)
    for stale in ("localization.csv", "localization.md", "localization.tex"):
        if (args.run / stale).exists():
            (args.run / stale).unlink()
            print(f"removed {args.run / stale}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
