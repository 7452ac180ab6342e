"""How close is OFA's phi to the Shapley values it is trained to give, and how well do those localize?

    python experiments/exact_shapley.py CHECKPOINT.pt --n-images 40 --permutations 32

For a trained OFA checkpoint on `synthetic`, estimates per test image the Shapley values of the network's
own masked prediction, v(S) = z_y(x_S) - mean_k z_k(x_S) (the centred target logit with the patches outside
S removed; what l3 teaches phi to add up to), by permutation sampling with antithetic pairs, and prints for
those estimates, OFA's phi and Grad: localization AUROC against the true lesion patches, SRG x 100 and the
correlation with the estimates. Results are in docs/training.md.
"""
from __future__ import annotations

import argparse

import torch

from xaibench.methods import create_method, run_explainer
from xaibench.metrics import plausibility_auroc, srg
from xaibench.training import DataSpec, load_trained


@torch.no_grad()
def sampled_shapley(model, x: torch.Tensor, y: torch.Tensor, permutations: int, generator: torch.Generator,
                    batch_size: int = 1024) -> torch.Tensor:
    """[B, n] permutation-sampling estimates of the Shapley values of the centred target logit."""
    n = model.n_patches
    half = max(permutations // 2, 1)
    out = []
    for i in range(len(x)):
        perms = torch.stack([torch.randperm(n, generator=generator) for _ in range(half)])
        perms = torch.cat([perms, perms.flip(1)]).to(x.device)  # antithetic: every order and its reverse
        p = len(perms)
        rank = torch.empty_like(perms)
        rank.scatter_(1, perms, torch.arange(n, device=x.device).expand(p, n))
        keep = (rank[:, None, :] < torch.arange(n + 1, device=x.device)[None, :, None]).reshape(-1, n)
        values = []
        for chunk in keep.split(batch_size):
            z = model(x[i:i + 1].expand(len(chunk), -1, -1, -1), chunk).float()
            values.append(z[:, y[i]] - z.mean(1))
        v = torch.cat(values).view(p, n + 1)
        phi = torch.zeros(p, n, device=x.device)
        phi.scatter_(1, perms, v[:, 1:] - v[:, :-1])  # marginal contribution of the patch added at each step
        out.append(phi.mean(0))
    return torch.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="an OFA checkpoint trained on synthetic (the cache's checkpoints/)")
    parser.add_argument("--n-images", type=int, default=40)
    parser.add_argument("--permutations", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model = load_trained(args.checkpoint, args.device).model.eval()
    test = DataSpec("synthetic", model.img_size, None, {}).load("test")
    x, y = test.batch(slice(0, args.n_images), device=args.device)
    truth = test.patch_masks(model.patch_size, slice(0, args.n_images)).to(args.device)
    exact = sampled_shapley(model, x, y, args.permutations, torch.Generator().manual_seed(0))
    for name in ("sampled Shapley", "ofa", "grad"):
        a = exact if name == "sampled Shapley" else run_explainer(create_method(name, model), x, y).attributions
        score = srg(model.forward_fn, x, a, y, steps=13, generator=torch.Generator().manual_seed(1)).srg.mean().item()
        corr = torch.corrcoef(torch.stack([a.flatten().float(), exact.flatten()]))[0, 1].item()
        print(f"{name:16s} localization {plausibility_auroc(a, truth).nanmean().item():.3f}  SRG {100 * score:6.2f}"
              f"  correlation with sampled Shapley {corr:.3f}", flush=True)


if __name__ == "__main__":
    main()
