"""The unit grid on this machine: one `xaibench run` executed serially and on joblib's loky and dask backends.

    python benchmarks/bench_grid.py [--jobs 2] [--seeds 0,1] [--backends serial,loky,dask] [--set steps=100 ...]

Each configuration runs the same command as a fresh process into its own fresh cache, so every unit (the
trainings too) is computed. Prints the wall time of each, its ratio to the serial run at the same per-unit
thread count, and whether table2.csv, scores_long.csv and curves.csv are byte-identical to that run's.
"serial, all threads" is the default `xaibench run` (torch's own thread count); it computes with other
thread counts than the workers do, so its tables may differ by float rounding (module docstring of
xaibench/engine/grid.py). Timings on a 2-core machine are noisy: compare ratios from one run only.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMPARED = ("table2.csv", "scores_long.csv", "curves.csv")
WORKLOAD = ["--set", "steps=150", "--set", "init_steps=100", "--n-test", "64"]


def configurations(jobs: int, backends: list[str]) -> list[tuple[str, list[str]]]:
    runs = [("serial, all threads", []), ("serial, 1 thread", ["--threads", "1"])]
    for backend in backends:
        if backend != "serial":
            runs.append((f"{backend}, {jobs} jobs x 1 thread",
                         ["--backend", backend, "--jobs", str(jobs), "--threads", "1"]))
    return runs


def run_once(flags: list[str], base: list[str], folder: Path) -> float:
    command = [sys.executable, "-m", "xaibench.cli", "run", *base, *flags, "--quiet", "--no-figures",
               "--out", str(folder / "out"), "--cache", str(folder / "cache")]
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds


def same_tables(a: Path, b: Path) -> bool:
    return all((a / "out" / name).read_bytes() == (b / "out" / name).read_bytes() for name in COMPARED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--backends", default="serial,loky,dask")
    parser.add_argument("--set", action="append", default=[], help="extra --set KEY=VALUE for the workload")
    args = parser.parse_args()
    base = ["--seeds", args.seeds, *WORKLOAD, *[flag for item in args.set for flag in ("--set", item)]]
    print(f"workload: xaibench run {' '.join(base)}  ({os.cpu_count()} cores)")
    root = Path(tempfile.mkdtemp(prefix="bench-grid-"))
    rows, reference = [], None
    for index, (name, flags) in enumerate(configurations(args.jobs, args.backends.split(","))):
        folder = root / str(index)
        seconds = run_once(flags, base, folder)
        if name == "serial, 1 thread":
            reference = (folder, seconds)
        rows.append((name, folder, seconds))
        print(f"  {name:<28} {seconds:7.1f} s", flush=True)
    print(f"\n{'configuration':<28} {'wall s':>8} {'vs serial 1 thread':>19}  tables equal to serial 1 thread")
    for name, folder, seconds in rows:
        equal = same_tables(folder, reference[0])
        print(f"{name:<28} {seconds:8.1f} {seconds / reference[1]:19.2f}  {'yes' if equal else 'no'}")


if __name__ == "__main__":
    main()
