"""What the whole game costs and resolves, per background region count, on a trained objects network.

Prints per region count: seconds for the exact game of N test images (one run, interleaved), subsets forwarded
per image, ms per image, the background's share of |phi|, and how much background |phi| the regions resolve
against the largest count (a region holding patches that help and patches that hurt nets them out). Also the
object game by re-rendering (engine/truth.py) as the reference cost. Ratios measured in one run.

    python benchmarks/bench_truth.py --checkpoint CACHE/checkpoints/ofa-objects-28-....safetensors --n-images 64
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from xaibench.data.spec import DataSpec
from xaibench.engine.game import MAX_REGIONS, background_share, game_players, whole_game
from xaibench.engine.truth import N_SLOTS, object_truth
from xaibench.training import load_trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a trained OFA network on objects (28 px)")
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256, help="masked inputs per forward call")
    parser.add_argument("--regions", default=",".join(map(str, range(1, MAX_REGIONS + 1))))
    args = parser.parse_args()
    model = load_trained(Path(args.checkpoint)).model.eval()
    test = DataSpec("objects", 28, None, {}).load("test")
    indices = torch.arange(min(args.n_images, len(test)))
    x, labels = test.batch(indices)
    start = time.perf_counter()
    truth = object_truth(model, test, indices, labels, torch.device("cpu"), batch=args.batch)
    object_seconds = time.perf_counter() - start
    print(f"object game (re-rendered, 64 subsets): {object_seconds:.2f} s, "
          f"{1000 * object_seconds / len(indices):.1f} ms/image")
    rows, resolved = [], {}
    for regions in [int(r) for r in args.regions.split(",")]:
        players = game_players(truth["patches"], regions)
        start = time.perf_counter()
        shapley, subsets = whole_game(model, x, players, labels, N_SLOTS + regions, args.batch)
        seconds = time.perf_counter() - start
        resolved[regions] = float(torch.nan_to_num(shapley[:, N_SLOTS:]).abs().sum(dim=1).mean())
        rows.append((regions, seconds, float(subsets.double().mean()), float(background_share(shapley).nanmean())))
    top = resolved[max(resolved)]
    print("| regions | seconds | subsets/image | ms/image | background share of abs(phi) | background abs(phi) vs "
          f"{max(resolved)} regions |")
    print("|---|---|---|---|---|---|")
    for regions, seconds, subsets, share in rows:
        print(f"| {regions} | {seconds:.2f} | {subsets:.0f} | {1000 * seconds / len(indices):.1f} | {share:.3f} | "
              f"{resolved[regions] / top:.3f} |")


if __name__ == "__main__":
    main()
