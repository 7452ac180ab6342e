"""Throughput and scaling of the batched SRG / R-SRG metrics against the bare masked forward of the same model.

Run: .venv/bin/python benchmarks/bench_metrics.py [--device cuda --arch vit-b --img-size 224 ...];
prints a markdown table (docs/metrics.md holds the results).

    .venv/bin/python benchmarks/bench_metrics.py --masking token,drop --models vit,ofa --img-size 56 --patch-size 4

With --masking: the side-by-side of docs/metrics.md, "Token dropping": per model, the masked inputs/s of `srg`
at every curve point (MIF and LIF) with each listed masking against the bare full-token forward (no keep-mask,
identical under either masking) of the same weights at the same batch; each rate the median of --repeats
interleaved repeats.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch
from harness import add_model_args, build_model, masked_model, sync

from xaibench.metrics import rsrg, srg


def timed(device: torch.device, fn, repeats: int = 1):
    """(result, best seconds of `repeats`, peak CUDA MiB above the memory in use before, or None on CPU)."""
    best, peak = float("inf"), None
    for _ in range(repeats):
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
        if device.type == "cuda":
            peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return result, best, peak


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--n-images", type=int, default=16, help="images of the SRG throughput row (R-SRG: half)")
    parser.add_argument("--batch-size", type=int, default=256, help="masked inputs per forward call")
    parser.add_argument("--n-draws", type=int, default=4, help="R-SRG draws")
    parser.add_argument("--scaling-steps", type=int, default=7, help="smallest K of the scaling rows (K, 2K-1, 4K-3)")
    parser.add_argument("--bare-batches", type=int, default=4, help="timed batches of the bare forward")
    parser.add_argument("--repeats", type=int, default=2, help="timings per row; the best is kept")
    parser.add_argument("--masking", default=None, help="e.g. token,drop,drop@0.02: srg with each masking (drop's grouping rule: harness.masked_model) against the bare forward")
    parser.add_argument("--models", default="vit,ofa", help="models of the --masking side-by-side")
    parser.add_argument("--patch-size", type=int, default=None, help="patch side (default: the image size's)")
    args = parser.parse_args(argv)
    if args.masking:
        return side_by_side(args)

    device, model = build_model(args)
    n = model.n_patches
    shape = (args.in_chans, args.img_size, args.img_size)
    bs = args.batch_size

    def data(n_images: int):
        g = torch.Generator().manual_seed(1)
        inputs = torch.randn((n_images, *shape), generator=g).to(device)
        attributions = torch.randn(n_images, n, generator=g).to(device)
        return inputs, attributions, torch.randint(0, 3, (n_images,), generator=g).to(device)

    # (a) bare masked forward on pre-built batches of batch_size, in the metrics' precision (bf16 on CUDA).
    x_bare = torch.randn((bs, *shape), device=device)
    keep_bare = [torch.rand(bs, n, device=device) < torch.rand(bs, 1, device=device) for _ in range(args.bare_batches)]

    def bare():
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            for keep in keep_bare:
                model.forward_fn(x_bare, keep)

    rows = []

    def run_bare():
        _, seconds, peak = timed(device, bare, args.repeats)
        count = bs * args.bare_batches
        rows.append(("bare forward_fn", "-", "-", count, seconds, count / seconds, peak))
        return count / seconds

    def run_metric(name: str, n_images: int, steps, repeats: int = args.repeats):
        inputs, attributions, targets = data(n_images)

        def call():
            g = torch.Generator(device=device).manual_seed(0)
            if name == "srg":
                return srg(model.forward_fn, inputs, attributions, targets, steps=steps, batch_size=bs, generator=g,
                           random_baseline=False)  # MIF and LIF only: the measured 2K - 2 inputs per image
            return rsrg(model.forward_fn, inputs, attributions, targets, n_draws=args.n_draws, steps=steps,
                        batch_size=bs, generator=g)

        result, seconds, peak = timed(device, call, repeats)
        rows.append((name, n_images, result.x.numel(), result.n_forward, seconds, result.n_forward / seconds, peak))
        return seconds, peak

    bare()  # warm-up
    run_metric("srg", 2, 5, 1)
    rows.clear()
    # (a, b) throughput on every step k = 0..n; bare measured before and after (shared machines drift).
    bare_rates = [run_bare()]
    run_metric("srg", args.n_images, None)
    run_metric("rsrg", max(1, args.n_images // 2), None)
    bare_rates.append(run_bare())
    bare_rate = max(bare_rates)
    # (c) time against images and against steps; (d) peak memory against steps.
    k0 = args.scaling_steps
    k_values = [k0, 2 * k0 - 1, 4 * k0 - 3]  # 2K - 2 masked inputs per image: 1 : 2 : 4
    if k_values[-1] > n + 1:
        raise SystemExit(f"--scaling-steps {k0}: 4K-3 = {k_values[-1]} exceeds n + 1 = {n + 1}")
    by_images = [run_metric("srg", m * args.n_images, k_values[1]) for m in (1, 2, 4)]
    by_steps = [run_metric("srg", args.n_images, k) for k in k_values]

    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"\nofa/{args.arch} {args.img_size}px, n = {n} patches, batch_size {bs}, {where}, "
          f"torch {torch.__version__}, best of {args.repeats}; 'vs bare' = inputs/s / best bare inputs/s\n")
    print("| run | images | steps K | masked inputs | time (s) | inputs/s | vs bare | peak CUDA MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for run, images, k, count, seconds, rate, peak in rows:
        peak_text = "n/a (CPU)" if peak is None else f"{peak:.0f}"
        print(f"| {run} | {images} | {k} | {count} | {seconds:.3f} | {rate:,.0f} | {rate / bare_rate:.2f} "
              f"| {peak_text} |")
    t_img = [s for s, _ in by_images]
    t_steps = [s for s, _ in by_steps]
    print(f"\ntime vs images (x1, x2, x4): {t_img[1] / t_img[0]:.2f}x, {t_img[2] / t_img[0]:.2f}x (linear: 2, 4)")
    print(f"time vs steps K = {k_values} (2K-2 inputs: x1, x2, x4): {t_steps[1] / t_steps[0]:.2f}x, "
          f"{t_steps[2] / t_steps[0]:.2f}x (linear: 2, 4)")
    peaks = [p for _, p in by_steps]
    if peaks[0] is not None:
        print(f"peak CUDA memory vs steps: {', '.join(f'{p:.0f}' for p in peaks)} MiB (flat = bounded by batch_size)")
    else:
        print("peak memory: measured on CUDA only; masks and masked inputs are built per chunk of batch_size")


def side_by_side(args) -> None:
    """srg (every point) with masking token and --masking against the bare full-token forward, same weights."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device, bs = torch.device(args.device), args.batch_size
    maskings = args.masking.split(",")
    g = torch.Generator().manual_seed(1)
    shape = (args.in_chans, args.img_size, args.img_size)
    x_bare = torch.randn((bs, *shape), generator=g).to(device)
    inputs = torch.randn((args.n_images, *shape), generator=g).to(device)
    targets = torch.randint(0, 3, (args.n_images,), generator=g).to(device)
    print("| model | n | masking | srg inputs/s | bare full-token inputs/s | srg / bare |\n|---|---|---|---|---|---|")
    for name in args.models.split(","):
        models = {}
        for masking in maskings:
            models[masking] = masked_model(name, masking, in_chans=args.in_chans, img_size=args.img_size,
                                           arch=args.arch, patch_size=args.patch_size).eval().to(device)
        n = models[maskings[0]].n_patches
        attributions = torch.randn(args.n_images, n, generator=g).to(device)
        runs = {"bare": lambda: _bare(models[maskings[0]], x_bare, args.bare_batches, device)}
        for masking, model in models.items():
            runs[masking] = lambda model=model: srg(model.forward_fn, inputs, attributions, targets, steps=None,
                                                    batch_size=bs, random_baseline=False).n_forward
        rates = {key: [] for key in runs}
        for run in runs.values():
            run()  # warm-up
        for _ in range(args.repeats):
            for key, run in runs.items():
                sync(device)
                start = time.perf_counter()
                count = run()
                sync(device)
                rates[key].append(count / (time.perf_counter() - start))
        median = {key: sorted(values)[len(values) // 2] for key, values in rates.items()}
        for masking in maskings:
            print(f"| {name} | {n} | {masking} | {median[masking]:,.0f} | {median['bare']:,.0f} "
                  f"| {median[masking] / median['bare']:.2f} |")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"\n{args.arch}, {args.img_size} px, batch {bs}, {args.n_images} images, {where}, torch {torch.__version__}, "
          f"median of {args.repeats} interleaved repeats")


def _bare(model, x, batches: int, device) -> int:
    """The full-token forward (no keep-mask) of `batches` batches, in the metrics' precision; inputs counted."""
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for _ in range(batches):
            model.forward_fn(x)
    return x.shape[0] * batches


if __name__ == "__main__":
    main()
