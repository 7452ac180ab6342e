"""Training recipes of the OFA network on the `objects` set, side by side: test accuracy and the model-truth gates
(engine/truth.py) per recipe and seed, to choose the default run's recipe (issue 14: accuracy >= 95 %, removal
agreement >= 0.9, the whole default run under 3 minutes on 2 CPU cores).

    python benchmarks/gpu/objects_sweep.py --device cuda --seeds 0,1,2 --jobs 6 --out sweep.md

Each (recipe, seed) trains in its own process (one torch thread each on the CPU) into a private cache; the
step counts, not the device, decide the CPU cost, which bench_training.py measures.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RECIPES = {
    "default (segm 300 + ofa 500)": {},
    "ofa 500, no segm": {"init": None},
    "ofa 300, no segm": {"init": None, "steps": 300},
    "segm 150 + ofa 350": {"init_steps": 150, "steps": 350},
    "ofa 400, no segm, M 2": {"init": None, "steps": 400, "n_masks": 2},
    "segm 100 + ofa 300, M 2": {"init_steps": 100, "steps": 300, "n_masks": 2},
}

ONE = r'''
import json, sys, time, torch
from xaibench.training import DataSpec, TrainConfig, train_model
from xaibench.training.evaluation import classification_scores, predict_proba
from xaibench.engine.truth import object_truth, gate_values
overrides, seed, device, cache, samples = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
spec = DataSpec("objects", 28, None, {} if samples == "default" else {"n_samples": int(samples)})
start = time.time()
trained = train_model("ofa", spec, TrainConfig.from_dict(overrides), seed, device, cache=cache, progress=False)
seconds = time.time() - start
model = trained.model.eval()
test = spec.load("test")
acc = classification_scores(predict_proba(model, test, device), test)["acc"]
idx = torch.arange(64)
truth = object_truth(model, test, idx, test.labels[idx], torch.device(device))
print(json.dumps({"seconds": seconds, **gate_values(truth, acc)}))
'''


def run_one(recipe: str, overrides: dict, seed: int, device: str, cache: str, samples: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", ONE, json.dumps(overrides), str(seed), device, cache, samples],
                          capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        return {"recipe": recipe, "seed": seed, "error": done.stderr.strip().splitlines()[-1:]}
    return {"recipe": recipe, "seed": seed, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--recipes", default="all", help="comma-separated indices into RECIPES, or all")
    parser.add_argument("--samples", default="default", help="objects n_samples option (default: the set's own)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    names = list(RECIPES) if args.recipes == "all" else [list(RECIPES)[int(i)] for i in args.recipes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    cache = tempfile.mkdtemp(prefix="objects-sweep-")
    start = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda job: run_one(job[0], RECIPES[job[0]], job[1], args.device, cache, args.samples),
                             [(name, seed) for name in names for seed in seeds]))
    lines = [f"objects sweep on {args.device}, seeds {args.seeds}, samples {args.samples}, "
             f"{time.time() - start:.0f} s wall", "",
             "| recipe | seed | train s | acc | removal agreement | background shift | distractor share |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['recipe']} | {row['seed']} | error: {row['error']} | | | | |")
            continue
        lines.append(f"| {row['recipe']} | {row['seed']} | {row['seconds']:.0f} | {row['accuracy']:.3f} | "
                     f"{row['removal_agreement']:.3f} | {row['background_shift']:.3f} | {row['distractor_share']:.3f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
