"""Ablations in one command: `--sweep KEY=V1,V2,...` (repeatable) on `xaibench run` and `xaibench train`.

Every combination of the swept values is a variant: the plain request with those values laid over its --set
options. Every variant is planned before any work (so a bad key or value exits 2 first), the plans are merged
(a unit two variants share, such as a training a method-option sweep does not change, is one unit: keys are the
plain run's, so a variant equal to the plain run hits its cache) and executed once on the chosen backend; then
each variant's outputs are written as the plain run would write them, into `--out/variants/<variant>/`, and the
sweep's combined files into `--out`: every CSV with a `variant` column first, `sweep.csv` (one row per variant,
dataset, method and score: the swept values as columns), `sweep_cost.{csv,md}` (each variant's training and
explanation cost) and `figures/sweep.png` (each score against each numeric swept value, one line per method).
"""
from __future__ import annotations

import itertools
import json
import logging
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from xaibench.engine.report_sweep import (
    Variant,
    combine_csvs,
    sweep_manifest,
    value_text,
    write_sweep_outputs,
    write_swept,
)
from xaibench.errors import XaibenchError

logger = logging.getLogger("xaibench.sweep")

MAX_VARIANTS = 64


def split_values(text: str) -> list[str]:
    """'2,4,[1,2],"a,b"' -> ['2', '4', '[1,2]', '"a,b"']: commas inside brackets, braces or quotes do not split."""
    parts, depth, quote, current = [], 0, None, []
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts]


def _value(raw: str) -> Any:
    """Typed as --set types it: JSON where it parses, else the text."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _folder(name: str, taken: set[str]) -> str:
    folder = re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)[:150] or "variant"
    stem, n = folder, 2
    while folder in taken:
        folder, n = f"{stem}~{n}", n + 1
    taken.add(folder)
    return folder


def parse_sweeps(specs: list[str] | None, max_variants: int = MAX_VARIANTS) -> list[Variant]:
    """The variants of the --sweep options (their product, the first key varying slowest); [] for none.

    Raises XaibenchError (exit 2) for a spec without '=', a key swept twice, an empty value, or more than
    `max_variants` combinations."""
    if not specs:
        return []
    keys, values = [], []
    for spec in specs:
        if "=" not in spec:
            raise XaibenchError(f"--sweep expects KEY=V1,V2,..., got {spec!r}")
        key, raw = spec.split("=", 1)
        key = key.strip().replace("-", "_")
        if not key:
            raise XaibenchError(f"--sweep {spec!r} names no key")
        if key in keys:
            raise XaibenchError(f"--sweep key {key!r} is given twice; give all its values in one --sweep")
        texts = split_values(raw)
        if any(text == "" for text in texts):
            raise XaibenchError(f"--sweep {spec!r} has an empty value")
        keys.append(key)
        values.append(list(dict.fromkeys(texts)))
    return _product(keys, [[(text, _value(text)) for text in texts] for texts in values], max_variants, "--sweep")


def variants_of(sweep: dict[str, list[Any]], max_variants: int = MAX_VARIANTS) -> list[Variant]:
    """The variants of `xaibench.run(..., sweep={"n_masks": [2, 4], "run.n_draws": [2, 4]})`: typed values."""
    keys, values = [], []
    for key, options in sweep.items():
        options = list(options) if isinstance(options, (list, tuple)) else [options]
        if not options:
            raise XaibenchError(f"sweep {key!r} has no value")
        keys.append(str(key).strip().replace("-", "_"))
        values.append([(value_text(value), value) for value in options])
    return _product(keys, values, max_variants, "sweep")


def _product(keys: list[str], values: list[list[tuple[str, Any]]], max_variants: int, what: str) -> list[Variant]:
    count = 1
    for options in values:
        count *= len(options)
    if count > max_variants:
        raise XaibenchError(f"{what} makes {count} variants ({' x '.join(str(len(v)) for v in values)}), more than "
                            f"--max-variants {max_variants}; sweep fewer values or raise --max-variants")
    variants, taken = [], set()
    for combination in itertools.product(*values):
        name = ",".join(f"{key}={text}" for key, (text, _) in zip(keys, combination))
        overrides = {key: value for key, (_, value) in zip(keys, combination)}
        variants.append(Variant(name, overrides, _folder(name, taken)))
    return variants


# -- running -------------------------------------------------------------------------------------------------

def run_sweep(make_request: Callable[[dict[str, Any], Path], Any], variants: list[Variant], out: Path,
              dry_run: bool = False) -> Any:
    """`xaibench run --sweep`: `make_request(overrides, variant_out)` builds a variant's RunRequest (the --set
    options with the variant's laid over them). Returns the RunResult of the whole sweep."""
    from xaibench import runner
    from xaibench.engine import Plan, staged
    from xaibench.engine.plan import cached_units

    started, out = time.perf_counter(), Path(out)
    requests = [make_request(v.overrides, out / "variants" / v.folder) for v in variants]
    ctx = runner.context_of(requests[0])
    plans = [runner.planned(request, ctx) for request in requests]  # every variant checked before any work
    merged = Plan()
    for plan, _ in plans:
        for unit in plan:
            merged.add(unit)
    if dry_run:
        cached = cached_units(merged, ctx)
        for variant, (plan, _) in zip(variants, plans):
            todo = sum(unit.key not in cached for unit in plan)
            print(f"variant {variant.name}: {len(plan)} units, {todo} to compute")
            for unit in plan:
                print(f"  {'cached' if unit.key in cached else 'to do':>6}  {unit.label}  [{unit.kind} {unit.key}]")
        print(f"{len(variants)} variants; {len(merged)} distinct units ({len(cached)} cached, "
              f"{len(merged) - len(cached)} to compute)")
        return runner.RunResult(pd.DataFrame(), out, n_units=len(merged))
    probed = set()
    for request, (plan, setup) in zip(requests, plans):  # once per distinct method configuration
        what = repr((request.options.methods, request.options.method_options, request.config.get("model")))
        if what not in probed:
            probed.add(what)
            runner._probe(request, setup, ctx, plan)
    first = requests[0]
    with runner.claim_out(out), runner.run_log() as log:
        outcomes = runner._executed(merged, ctx, first.keep_going, first.execution)
        with staged(out) as stage:
            results, files = [], []
            for variant, request, (plan, setup) in zip(variants, requests, plans):
                folder = stage / "variants" / variant.folder
                folder.mkdir(parents=True, exist_ok=True)
                results.append(runner._benchmark_outputs(replace(request, out=folder), plan, outcomes, ctx, folder,
                                                         started, log, setup))
                files += results[-1].files
            files += write_sweep_outputs(stage, variants, [stage / "variants" / v.folder for v in variants],
                                         [plan for plan, _ in plans], results)
            files.append(sweep_manifest(stage, first, variants, files, len(merged), started))
            files = runner.publish(stage, out, files)
    return runner.RunResult(pd.concat([r.scores.assign(variant=v.name) for v, r in zip(variants, results)],
                                      ignore_index=True), out, files,
                            [f for r in results for f in r.failures], len(merged),
                            sum(r.n_cached for r in results), time.perf_counter() - started,
                            [s for r in results for s in r.skipped])


def run_train_sweep(make_request: Callable[[dict[str, Any], Path], Any], variants: list[Variant], out: Path,
                    dry_run: bool = False) -> Any:
    """`xaibench train --sweep`: each variant's Table 1 in --out/variants/<variant>/, and table1_scores.csv
    with a variant column in --out; the variants' trainings run as one plan."""
    from xaibench import runner
    from xaibench.engine import Plan, collect, plan_train, staged, write_table1

    started, out = time.perf_counter(), Path(out)
    requests = [make_request(v.overrides, out / "variants" / v.folder) for v in variants]
    ctx = runner.context_of(requests[0])
    plans = [plan_train(list(r.models), list(r.datasets), list(r.seeds), size=r.size, root=r.root, config=r.config,
                        overrides=r.overrides, device=r.device) for r in requests]
    merged = Plan()
    for plan in plans:
        for unit in plan:
            merged.add(unit)
    if dry_run:
        for variant, plan in zip(variants, plans):
            print(f"variant {variant.name}: {len(plan)} units")
            print("\n".join(f"  {line}" for line in runner.describe_plan(plan, ctx).splitlines()))
        print(f"{len(variants)} variants; {len(merged)} distinct units")
        return runner.RunResult(pd.DataFrame(), out, n_units=len(merged))
    first = requests[0]
    with runner.claim_out(out):
        outcomes = runner._executed(merged, ctx, first.keep_going, first.execution)
        with staged(out) as stage:
            files, failures = [], []
            for variant, request, plan in zip(variants, requests, plans):
                folder = stage / "variants" / variant.folder
                folder.mkdir(parents=True, exist_ok=True)
                frames = collect(plan, outcomes, ctx)
                failures += frames.failures
                if len(frames.table1):
                    files += write_table1(folder, frames, request.config, request.device)
            files += combine_csvs(stage, variants, [stage / "variants" / v.folder for v in variants])
            files += write_swept(stage, variants)
            files.append(sweep_manifest(stage, first, variants, files, len(merged), started))
            files = runner.publish(stage, out, files)
    result = runner.RunResult(pd.DataFrame(), out, files, failures, len(merged), 0, time.perf_counter() - started)
    return result
