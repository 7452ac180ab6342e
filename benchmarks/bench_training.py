"""Training speed: OFA's step against the same forward/backward passes run alone, and images/s per model.

    python benchmarks/bench_training.py [--device cuda] [--arch tiny] [--img-size 28] [--batch-size 32] [--n-masks 4]
    python benchmarks/bench_training.py --maskings token,drop --img-size 56 --patch-size 4 --n-masks 8 --repeats 5

With --maskings, only OFA's step is timed, once per masking on the same weights and batch (interleaved rounds,
the median of the rounds' medians), and the ratio to the first masking is printed.

Prints ratios measured in one run (the machines are noisy; absolute numbers vary).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from harness import masked_model, sync

from xaibench.models import create_model
from xaibench.models.ofa import OFANet
from xaibench.training.evaluation import autocast_for
from xaibench.training.losses import classification_loss, ofa_loss


def time_steps(step, device, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", default="tiny")
    parser.add_argument("--img-size", type=int, default=28)
    parser.add_argument("--in-chans", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n-masks", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--models", default="ofa,segm,vit,resnet18,resnet50")
    parser.add_argument("--patch-size", type=int, default=None, help="ViT patch side (default: the image size's)")
    parser.add_argument("--maskings", default=None, help="e.g. token,drop,drop@b8,drop@0.02: OFA's step time per masking (and drop's grouping rule, harness.masked_model) only")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of --maskings")
    args = parser.parse_args()
    if args.maskings:
        return compare_maskings(args)
    device = torch.device(args.device)
    b, m = args.batch_size, args.n_masks
    x = torch.randn(b, args.in_chans, args.img_size, args.img_size, device=device)
    y = torch.randint(0, 3, (b,), device=device)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"arch {args.arch}, {args.img_size} px, batch {b}, M {m}, torch threads {torch.get_num_threads()}")

    model = create_model("ofa", num_classes=3, in_chans=args.in_chans, img_size=args.img_size, arch=args.arch).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator(device=device).manual_seed(0)
    n = model.n_patches
    fixed_keep = torch.rand(b * (1 + m), n, device=device) > 0.5
    x_masked = x.repeat_interleave(1 + m, dim=0)

    def ofa_step():
        with autocast_for(device):
            loss = ofa_loss(model, x, y, n_masks=m, generator=generator)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    def bare_step():  # the same two forward passes (B unmasked, B(1+M) masked) and one backward, nothing else
        with autocast_for(device):
            plus, minus = model.shapley(x)
            masked_plus, masked_minus = model.shapley(x_masked, fixed_keep)
            loss = plus.float().mean() + OFANet.logits(masked_plus.float(), masked_minus.float(), fixed_keep).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    # interleave to share the machine's noise between both
    ofa_times, bare_times = [], []
    for _ in range(3):
        ofa_times.append(time_steps(ofa_step, device, args.repeats))
        bare_times.append(time_steps(bare_step, device, args.repeats))
    ofa_time, bare_time = sorted(ofa_times)[1], sorted(bare_times)[1]
    print("\n| measure | value |\n|---|---|")
    print(f"| OFA step (l1+l2+l3, ms) | {1e3 * ofa_time:.1f} |")
    print(f"| same passes alone (ms) | {1e3 * bare_time:.1f} |")
    print(f"| overhead ratio (goal <= 1.10) | {ofa_time / bare_time:.3f} |")

    print("\n| model | batch images/s | forwarded images/s | ms/step |\n|---|---|---|---|")
    for name in args.models.split(","):
        if name == "ofa":
            print(f"| ofa (M={m}) | {b / ofa_time:.0f} | {b * (2 + m) / ofa_time:.0f} | {1e3 * ofa_time:.1f} |")
            continue
        net = create_model(name, num_classes=3, in_chans=args.in_chans, img_size=args.img_size,
                           **({"arch": args.arch} if name in ("segm", "vit") else {})).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

        def step():
            with autocast_for(device):
                loss = classification_loss(net, x, y)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        seconds = time_steps(step, device, args.repeats)
        print(f"| {name} | {b / seconds:.0f} | {b / seconds:.0f} | {1e3 * seconds:.1f} |")


def compare_maskings(args) -> None:
    """OFA's training step (ofa_loss, backward, clip, AdamW) with each masking: same initial weights, batch, masks."""
    device = torch.device(args.device)
    b, m = args.batch_size, args.n_masks
    x = torch.randn(b, args.in_chans, args.img_size, args.img_size, device=device)
    y = torch.randint(0, 3, (b,), device=device)
    steps, n = {}, None
    for masking in args.maskings.split(","):
        model = masked_model("ofa", masking, in_chans=args.in_chans, img_size=args.img_size, arch=args.arch,
                             patch_size=args.patch_size).to(device)
        n = model.n_patches
        steps[masking] = _ofa_step(model, x, y, m, device)
    times = {masking: [] for masking in steps}
    for r in range(args.rounds):
        for masking, step in steps.items():
            times[masking].append(time_steps(step, device, args.repeats))
            # a round's times as they come, so that a run stopped by a timeout still says something
            print(f"round {r + 1}: {masking} {1e3 * times[masking][-1]:.1f} ms/step", file=sys.stderr, flush=True)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"OFA training step, {where}, arch {args.arch}, {args.img_size} px, n = {n} patches, batch {b}, M {m}; "
          f"median of {args.rounds} rounds of the median of {args.repeats} steps\n")
    print("| masking | ms/step | vs first |\n|---|---|---|")
    first = None
    for masking, values in times.items():
        median = sorted(values)[len(values) // 2]
        first = first or median
        print(f"| {masking} | {1e3 * median:.1f} | {median / first:.3f} |")


def _ofa_step(model, x, y, m, device):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        generator = torch.Generator(device=device).manual_seed(0)  # the same masks every step and masking
        with autocast_for(device):
            loss = ofa_loss(model, x, y, n_masks=m, generator=generator, mask_sizes="uniform", paired=True)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step


if __name__ == "__main__":
    main()
