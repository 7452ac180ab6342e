"""Token versus drop masking, side by side: test accuracy of the trained OFA network and SRG / R-SRG of
ofa, grad and attn, from `xaibench run` folders made with each masking; then the issue-16 rule.

    python experiments/masking_validity.py --runs token=DIR[,DIR...] drop=DIR[,DIR...] --cache CACHE \
        [--data-root ROOT]

Each DIR is an `xaibench run --out` folder (summary.csv, wilcoxon.csv, manifest.json); the checkpoints its
manifest names are loaded from CACHE/checkpoints and scored on their whole test split. With several seeds the
pairs' tests are the seeds-pooled ones (wilcoxon.csv's seed "all").
Rule: drop may become the default only if, for every dataset, its accuracy is within 2 points of token's,
and no pair of methods that is separated (Holm-adjusted Wilcoxon p < 0.01) under either masking is
ordered the other way under the other masking.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch

from xaibench.training import DataSpec, load_trained
from xaibench.training.evaluation import classification_scores, predict_proba

ALPHA = 0.01
METHODS = ("ofa", "grad", "attn")


def read_run(folder: Path, cache: Path, data_root: str | None) -> dict:
    """{dataset: {"acc": [per seed], "scores": {(method, metric): mean}, "pairs": {(metric, a, b): (diff, p)}}}."""
    manifest = json.loads((folder / "manifest.json").read_text())
    out: dict = {}
    for where, entry in manifest["checkpoints"].items():
        dataset = where.split("/")[0]
        trained = load_trained(cache / "checkpoints" / entry["file"])
        data = trained.record["data"]
        test = DataSpec(data["name"], data["size"], data_root, data["options"]).load("test")
        with torch.no_grad():
            acc = classification_scores(predict_proba(trained.model, test, "cpu"), test)["acc"]
        out.setdefault(dataset, {"acc": [], "scores": {}, "pairs": {}})["acc"].append(acc)
    with open(folder / "summary.csv") as f:
        for row in csv.DictReader(f):
            if row["metric"] in ("srg", "rsrg") and row["dataset"] in out:
                out[row["dataset"]]["scores"][(row["method"], row["metric"])] = float(row["mean"])
    with open(folder / "wilcoxon.csv") as f:
        for row in csv.DictReader(f):  # the seeds-pooled family ("all", also with one seed; no column before 0.4.0)
            if row["metric"] in ("srg", "rsrg") and row["dataset"] in out and row.get("seed", "all") == "all":
                key = (row["metric"], row["method_a"], row["method_b"])
                out[row["dataset"]]["pairs"][key] = (float(row["mean_diff_x100"]), float(row["p_holm"]))
    return out


def merge(runs: list[dict]) -> dict:
    merged: dict = {}
    for run in runs:
        merged.update(run)
    return merged


def verdict(token: dict, drop: dict) -> tuple[bool, list[str]]:
    """(drop may become the default, the reasons against it)."""
    reasons = []
    for dataset in token:
        gap = 100 * (sum(drop[dataset]["acc"]) / len(drop[dataset]["acc"])
                     - sum(token[dataset]["acc"]) / len(token[dataset]["acc"]))
        if abs(gap) > 2 + 1e-9:  # 2.0 points (e.g. 6 of 300 images) is within
            reasons.append(f"{dataset}: accuracy {gap:+.1f} points")
        for key, (diff_t, p_t) in token[dataset]["pairs"].items():
            diff_d, p_d = drop[dataset]["pairs"][key]
            if (p_t < ALPHA or p_d < ALPHA) and diff_t * diff_d < 0:
                reasons.append(f"{dataset} {key[0]}: {key[1]} vs {key[2]} ordered {diff_t:+.2f} (token, p_holm "
                               f"{p_t:.2g}) and {diff_d:+.2f} (drop, p_holm {p_d:.2g})")
    return not reasons, reasons


def table(token: dict, drop: dict) -> str:
    lines = ["| dataset | masking | seeds | test acc (%) | " + " | ".join(
        f"{metric.upper()} {method}" for metric in ("srg", "rsrg") for method in METHODS) + " |",
        "|---|---|---|---|" + "---|" * 2 * len(METHODS)]
    for dataset in token:
        for name, run in (("token", token), ("drop", drop)):
            entry = run[dataset]
            acc = 100 * sum(entry["acc"]) / len(entry["acc"])
            cells = [f"{100 * entry['scores'].get((method, metric), float('nan')):.2f}"
                     for metric in ("srg", "rsrg") for method in METHODS]
            lines.append(f"| {dataset} | {name} | {len(entry['acc'])} | {acc:.1f} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| dataset | metric | pair | token: diff ×100 (p_holm) | drop: diff ×100 (p_holm) |")
    lines.append("|---|---|---|---|---|")
    for dataset in token:
        for key, (diff_t, p_t) in token[dataset]["pairs"].items():
            diff_d, p_d = drop[dataset]["pairs"][key]
            lines.append(f"| {dataset} | {key[0]} | {key[1]} − {key[2]} | {diff_t:+.2f} ({p_t:.2g}) "
                         f"| {diff_d:+.2f} ({p_d:.2g}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs=2, required=True, metavar="MASKING=DIRS")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    runs = {}
    for spec in args.runs:
        masking, _, dirs = spec.partition("=")
        runs[masking] = merge([read_run(Path(d), args.cache, args.data_root) for d in dirs.split(",")])
    token, drop = runs["token"], runs["drop"]
    print(table(token, drop))
    ok, reasons = verdict(token, drop)
    print(f"\nrule (accuracy within 2 points; no separated pair reversed, Holm p < {ALPHA}): "
          f"{'drop may become the default' if ok else 'drop stays an option'}")
    for reason in reasons:
        print(f"- {reason}")


if __name__ == "__main__":
    main()
