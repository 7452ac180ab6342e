"""Cost of every explainer on the same network and batch: ms/image, forward/backward passes per image.

Run: .venv/bin/python benchmarks/bench_explainers.py [--device cuda --arch vit-b --img-size 224 ...]; prints a
markdown table with one plain forward pass of the network as the reference (goal: ofa <= 1.2 x that).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings

import torch
from harness import add_model_args, build_model, sync

from xaibench.methods import create_method, run_explainer
from xaibench.registry import METHODS

# Sample counts for a quick CPU run; pass --full to use each method's own defaults instead.
QUICK = {"captum.KernelShap": dict(n_samples=32), "captum.Lime": dict(n_samples=32),
         "captum.ShapleyValueSampling": dict(n_samples=2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--model", default="ofa", help="the network explained (default: the OFA network)")
    parser.add_argument("--n-images", type=int, default=16, help="images in the batch every method explains")
    parser.add_argument("--methods", default="*", help="comma-separated names or globs (default: all registered)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method after one warm-up; median kept")
    parser.add_argument("--full", action="store_true", help="use the methods' default sample counts")
    args = parser.parse_args(argv)

    device, model = build_model(args, args.model)
    g = torch.Generator().manual_seed(1)
    inputs = torch.randn(args.n_images, args.in_chans, args.img_size, args.img_size, generator=g).to(device)
    targets = torch.randint(0, 3, (args.n_images,), generator=g).to(device)
    names = METHODS.resolve(args.methods)

    def plain_forward() -> float:
        sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            model(inputs)
        sync(device)
        return time.perf_counter() - start

    plain_forward()
    plain = statistics.median(plain_forward() for _ in range(max(args.repeats, 5)))
    plain_ms = 1000 * plain / args.n_images

    rows = []
    for name in names:
        try:
            explainer = create_method(name, model, **({} if args.full else QUICK.get(name, {})))
        except Exception as error:  # e.g. 'ofa' on a ResNet: report, keep going
            rows.append((name, None, None, None, f"n/a: {error}"))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_explainer(explainer, inputs, targets, generator=torch.Generator().manual_seed(0))  # warm-up
            runs = [run_explainer(explainer, inputs, targets, generator=torch.Generator().manual_seed(0))
                    for _ in range(args.repeats)]
        seconds = statistics.median(r.seconds for r in runs)
        rows.append((name, 1000 * seconds / args.n_images, runs[0].n_forward, runs[0].n_backward, ""))

    print(f"network: {args.model} arch={args.arch} img={args.img_size} patches={model.n_patches} "
          f"batch={args.n_images} device={device} threads={torch.get_num_threads()} "
          f"({platform.processor() or platform.machine()}{', ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}) "
          f"torch {torch.__version__}")
    print()
    print("| method | ms/image | x plain forward | forward/image | backward/image |")
    print("|---|---:|---:|---:|---:|")
    print(f"| (plain forward, no grad) | {plain_ms:.3f} | 1.00 | 1 | 0 |")
    for name, ms, forward, backward, note in rows:
        if ms is None:
            print(f"| {name} | {note} | | | |")
        else:
            print(f"| {name} | {ms:.3f} | {ms / plain_ms:.2f} | {forward:g} | {backward:g} |")
    ofa = [r for r in rows if r[0] == "ofa" and r[1] is not None]
    if ofa:
        ratio = ofa[0][1] / plain_ms
        print(f"\nofa explanation / plain forward = {ratio:.2f} (goal <= 1.2: {'met' if ratio <= 1.2 else 'NOT met'})")


if __name__ == "__main__":
    main()
