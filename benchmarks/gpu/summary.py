"""One table from the outputs of benchmarks/gpu_check.sh: python3 benchmarks/gpu/summary.py OUT SECONDS.

The runner's score units (masked inputs / unit seconds, from the run's manifest) against bench_metrics' SRG
row at every curve point for the same model size and card; the network's validation accuracy per dataset;
the OFA training step's overhead; the CUDA tests' last line. Missing pieces print as 'not measured'.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def bench_rate(text: str, run: str) -> float | None:
    """inputs/s of the first `run` row of bench_metrics' table."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and cells[0] == run:
            return float(cells[5].replace(",", ""))
    return None


def runner_rates(manifest: dict) -> dict[str, float]:
    """Masked inputs/s of the run's srg and rsrg units (all datasets and methods pooled per metric)."""
    totals: dict[str, list[float]] = {}
    for label, unit in manifest.get("units", {}).items():
        if label.startswith("score ") and unit.get("n_forward") and not unit.get("cached"):
            metric = label.rsplit("/", 1)[1]
            entry = totals.setdefault(metric, [0.0, 0.0])
            entry[0] += unit["n_forward"]
            entry[1] += unit["seconds"]
    return {metric: count / seconds for metric, (count, seconds) in totals.items() if seconds > 0}


def main() -> None:
    out, seconds = Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "?"
    read = lambda name: (out / name).read_text() if (out / name).exists() else ""  # noqa: E731
    gpu = read("gpu.txt").splitlines()[0] if read("gpu.txt") else "not measured"
    manifest_path = out / "run" / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    bench_srg, bare = bench_rate(read("bench_metrics.txt"), "srg"), bench_rate(read("bench_metrics.txt"),
                                                                               "bare forward_fn")
    rows = [("card", gpu), ("CUDA tests", (read("cuda_tests.txt").strip().splitlines() or ["not measured"])[-1])]
    run_seconds = re.search(r"run_seconds (\d+)", read("run.txt"))
    rows.append(("xaibench run wall s (ViT-B/16 224, 2 datasets)", run_seconds.group(1) if run_seconds else
                 "not measured"))
    for name, entry in manifest.get("checkpoints", {}).items():
        rows.append((f"val accuracy {name}", f"{entry.get('val_acc'):.3f}" if entry.get("val_acc") is not None
                     else "not measured"))
    for metric, rate in sorted(runner_rates(manifest).items()):
        ratio = f" = {rate / bench_srg:.2f} of bench_metrics srg ({bench_srg:,.0f})" if bench_srg else ""
        rows.append((f"runner {metric} units, masked inputs/s", f"{rate:,.0f}{ratio}"))
    rows.append(("bench_metrics srg inputs/s (vs bare)", f"{bench_srg:,.0f} ({bench_srg / bare:.2f})"
                 if bench_srg and bare else "not measured"))
    overhead = re.search(r"overhead ratio[^|]*\|\s*([\d.]+)", read("bench_training.txt"))
    rows.append(("OFA step / its passes alone", overhead.group(1) if overhead else "not measured"))
    rows.append(("gpu_check wall s", seconds))
    print("| check | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
