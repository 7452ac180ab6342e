"""OFA recipe search: train (Segm warm start, then OFA) under several settings, score ofa/grad/attn.

    python experiments/recipe_sweep.py --dataset synthetic --configs '[{"logit_scale_init": 10}, {...}]' --seeds 0,1,2

Each config is a dict of TrainConfig overrides, trained once per seed. For each it prints test accuracy, and
SRG / R-SRG (x100) and localization AUROC (where ground truth exists) of ofa, grad and attn on the same
network; where ground truth exists also the SRG of the true lesion mask used as the attribution ("truth").
Results of earlier sweeps are in docs/training.md.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from xaibench.methods import create_method, run_explainer
from xaibench.metrics import plausibility_auroc, rsrg, srg
from xaibench.training import DataSpec, TrainConfig, classification_scores, predict_proba, train_model


def evaluate(model, test, device, n_eval: int, steps: int) -> dict[str, float]:
    n = min(len(test), n_eval)
    x, y = test.batch(slice(0, n), device=device)
    truth = test.patch_masks(model.patch_size, slice(0, n)) if test.has_ground_truth else None
    row = {}

    def srg_x100(attributions: torch.Tensor) -> float:
        return 100 * srg(model.forward_fn, x, attributions, y, steps=steps, batch_size=1024,
                         generator=torch.Generator().manual_seed(1)).srg.mean().item()

    for name in ("ofa", "grad", "attn"):
        explanation = run_explainer(create_method(name, model), x, y, generator=torch.Generator().manual_seed(0))
        attributions = explanation.attributions
        row[f"{name} SRG"] = srg_x100(attributions)
        row[f"{name} R-SRG"] = 100 * rsrg(model.forward_fn, x, attributions, y, steps=steps, n_draws=2,
                                          batch_size=1024, generator=torch.Generator().manual_seed(2)).rsrg.mean().item()
        if truth is not None:
            row[f"{name} loc"] = plausibility_auroc(attributions, truth.to(device)).nanmean().item()
    if truth is not None:
        row["truth SRG"] = srg_x100(truth.to(device).float())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--base", default="{}", help="JSON overrides shared by every config")
    parser.add_argument("--configs", default="[{}]", help="JSON list of TrainConfig overrides")
    parser.add_argument("--n-eval", type=int, default=200)
    parser.add_argument("--steps", type=int, default=13, help="curve points for SRG/R-SRG")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds, each config once per seed")
    parser.add_argument("--cache", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    data = DataSpec(args.dataset, 28, args.data_root, {})
    test = data.load("test")
    cache = args.cache or tempfile.mkdtemp(prefix="xaibench-sweep-")
    base = json.loads(args.base)
    print(f"device {device}, dataset {args.dataset}, base {base}", flush=True)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    for overrides, seed in ((o, s) for o in json.loads(args.configs) for s in seeds):
        config = TrainConfig().replace(**{**base, **overrides})
        start = time.perf_counter()
        trained = train_model("ofa", data, config, seed=seed, device=device, cache=cache, progress=False)
        seconds = time.perf_counter() - start
        scores = classification_scores(predict_proba(trained.model, test, device), test)
        row = evaluate(trained.model, test, device, args.n_eval, args.steps)
        last = trained.record["history"][-1]
        print(json.dumps({"config": overrides, "seed": seed, "train_s": round(seconds), "test_acc": round(scores["acc"], 3),
                          "train_l3": round(last.get("l3", float("nan")), 4),
                          **{k: round(v, 3) for k, v in row.items()}}), flush=True)


if __name__ == "__main__":
    main()
