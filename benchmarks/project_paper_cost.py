"""A PROJECTION (not a measurement) of what `xaibench run --preset paper` costs: GPU-hours per dataset and for
the grid, and wall time on 1, 8 and 64 GPUs, from throughputs measured on one H100 (docs/gpu-logs/):

- OFA training at ViT-B/16 224 px: 2,017 forwarded images/s (bench_training, batch 32, M = 4; a step forwards
  B x (2 + M) images). Assumed: the same images/s at batch 64, M = 32 (2,176 images a step).
- SRG / R-SRG: 7,390 masked inputs/s (bench_metrics, ViT-B/16 224 px, batch 256; 0.97 of the bare forward).
  At every curve point (K = 197) an image costs 3K - 4 = 587 inputs for SRG (with the random baseline) and
  2 + 2 n_draws (K - 2) = 782 for R-SRG (n_draws 2); explaining (OFA, Grad, Attn: one pass or one
  backward each) is left out (under 0.1 % of that).
- Steps per training: min(10,000, 100 epochs x ceil(n_train / 64)); validation every 500 steps is left out.
- Wall time: units spread over the GPUs longest first; from 18 GPUs on, each training runs under DDP on
  floor(G / 9) GPUs, assumed to scale linearly (not measured; the gloo test checks correctness only).

    python benchmarks/project_paper_cost.py [--train-rate 2017] [--score-rate 7390] [--seeds 1] [--methods 3]
"""
from __future__ import annotations

import argparse
import heapq
import math

SPLITS = {  # medmnist.INFO[name]["n_samples"] (train, test) of the nine sets of Table 2
    "pathmnist": (89996, 7180), "dermamnist": (7007, 2005), "octmnist": (97477, 1000),
    "pneumoniamnist": (4708, 624), "retinamnist": (1080, 400), "breastmnist": (546, 156),
    "bloodmnist": (11959, 3421), "organcmnist": (12975, 8216), "organsmnist": (13932, 8827),
}


def per_dataset(args: argparse.Namespace) -> dict[str, tuple[int, float, float]]:
    """name -> (training steps, training GPU-hours, scoring GPU-hours) for one seed."""
    points = 197
    per_image = (3 * points - 4) + (2 + 2 * args.n_draws * (points - 2))
    rows = {}
    for name, (n_train, n_test) in SPLITS.items():
        steps = min(10_000, 100 * math.ceil(n_train / 64))
        train_h = steps * 64 * (2 + 32) / args.train_rate / 3600
        score_h = n_test * args.methods * per_image / args.score_rate / 3600
        rows[name] = (steps, train_h, score_h)
    return rows


def wall_hours(rows: dict[str, tuple[int, float, float]], gpus: int, seeds: int) -> float:
    """Longest-first schedule of the trainings (DDP-split from 18 GPUs on), then of the score units."""
    ddp = max(1, gpus // len(rows)) if gpus >= 2 * len(rows) else 1
    jobs = sorted([train / ddp for _, train, _ in rows.values()] * seeds, reverse=True)
    finish = [0.0] * max(1, gpus // ddp)
    for job in jobs:
        heapq.heapreplace(finish, finish[0] + job)
    start = max(finish)
    scores = sorted([score / 3 for _, _, score in rows.values() for _ in range(3)] * seeds, reverse=True)
    lanes = [start] * gpus
    heapq.heapify(lanes)
    for job in scores:
        heapq.heapreplace(lanes, lanes[0] + job)
    return max(lanes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-rate", type=float, default=2017.0, help="OFA forwarded images/s in training")
    parser.add_argument("--score-rate", type=float, default=7390.0, help="masked inputs/s of SRG / R-SRG")
    parser.add_argument("--n-draws", type=int, default=2)
    parser.add_argument("--methods", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    rows = per_dataset(args)
    print("PROJECTION from one H100's measured throughput (see the docstring for every assumption)\n")
    print("| dataset | train steps | training GPU-h | scoring GPU-h | total GPU-h |\n|---|---|---|---|---|")
    for name, (steps, train_h, score_h) in rows.items():
        print(f"| {name} | {steps:,} | {train_h:.1f} | {score_h:.1f} | {train_h + score_h:.1f} |")
    train_total = sum(r[1] for r in rows.values()) * args.seeds
    score_total = sum(r[2] for r in rows.values()) * args.seeds
    print(f"| all nine x {args.seeds} seed(s) | | {train_total:.1f} | {score_total:.1f} | "
          f"{train_total + score_total:.1f} |")
    print("\n| GPUs | wall time (h) |\n|---|---|")
    for gpus in (1, 8, 64):
        print(f"| {gpus} | {wall_hours(rows, gpus, args.seeds):.1f} |")


if __name__ == "__main__":
    main()
