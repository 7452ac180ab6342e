"""Every method on every dataset in one Markdown table (issue 17): SRG and R-SRG (x 100), ms per image, forward /
backward passes per image, and the training cost of the trained explainers (OFA's network, ViT-Shapley, FastSHAP).

    python experiments/methods_table.py RUN [RUN ...] [--units-from DIR ...]

Each RUN is an `xaibench run --out` folder (summary.csv, cost.csv, manifest.json); RUNs may split the methods or
the datasets between them, and a (dataset, method) in several RUNs is taken from the last. Training cost comes from the manifests' unit times: `train DATASET/seedS/ofa` (the Segm warm
start included) and `fit DATASET/seedS/vit_shapley|fastshap`, in seconds, the mean over seeds. A unit read from
the cache took only its loading time, so the first manifest (RUNs, then --units-from) where it was computed gives
its seconds: pass the run that trained OFA (e.g. `xaibench run` with the default methods on the same cache).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

from xaibench.tables import DATASET_LABELS, METHOD_LABELS

#: the explainers that are trained before they explain, first in the table: method -> its training unit's kind
TRAINED = {"ofa": "train", "vit_shapley": "fit", "fastshap": "fit"}
NA, FAILED, NOT_RUN = "n/a", "failed", "–"


def read_scores(run: Path) -> dict[tuple[str, str], dict[str, float]]:
    """{(dataset, method): {"srg": mean, "rsrg": mean}} from summary.csv (score units, not x 100)."""
    scores: dict[tuple[str, str], dict[str, float]] = {}
    with open(run / "summary.csv") as f:
        for row in csv.DictReader(f):
            if row["metric"] in ("srg", "rsrg"):
                scores.setdefault((row["dataset"], row["method"]), {})[row["metric"]] = float(row["mean"])
    return scores


def read_costs(run: Path, methods: set[str], datasets: set[str]) -> dict[tuple[str, str], tuple[str, str, str]]:
    """{(dataset, method): (ms/image, fwd/image, bwd/image)} from cost.csv, whose labels are the tables' display
    labels (METHOD_LABELS, DATASET_LABELS): mapped back to the names among `methods` and `datasets`."""
    method_of = {METHOD_LABELS.get(m, m): m for m in methods}
    dataset_of = {DATASET_LABELS.get(d, d): d for d in datasets}
    with open(run / "cost.csv") as f:
        rows = list(csv.reader(f))
    header_datasets, header_fields = rows[0], rows[1]
    costs: dict[tuple[str, str], tuple[str, str, str]] = {}
    for row in rows[3:]:
        method = method_of.get(row[0])
        if method is None:
            continue
        cells: dict[str, dict[str, str]] = {}
        for label, field, value in zip(header_datasets[1:], header_fields[1:], row[1:]):
            cells.setdefault(label, {})[field] = value
        for label, fields in cells.items():
            if label in dataset_of:
                costs[(dataset_of[label], method)] = (fields.get("ms/image", NA), fields.get("fwd/image", NA),
                                                      fields.get("bwd/image", NA))
    return costs


def unit_seconds(manifests: list[dict]) -> dict[str, float]:
    """{unit label: seconds} of the units computed (not read from the cache), the first manifest that has it."""
    seconds: dict[str, float] = {}
    for manifest in manifests:
        for label, unit in manifest.get("units", {}).items():
            if not unit.get("cached") and label not in seconds:
                seconds[label] = float(unit["seconds"])
    return seconds


def training_cost(seconds: dict[str, float], kind: str, dataset: str, method: str) -> float | None:
    """Mean seconds of the `kind` units of (dataset, method) over its seeds; None where none was computed."""
    prefix = f"{kind} {dataset}/seed"
    values = [s for label, s in seconds.items() if label.startswith(prefix) and label.endswith(f"/{method}")]
    return sum(values) / len(values) if values else None


def failed_pairs(manifest: dict) -> set[tuple[str, str]]:
    """(dataset, method) of every failed or skipped explain/score/fit/train unit of a run."""
    pairs = set()
    for entry in list(manifest.get("failures", [])) + list(manifest.get("skipped", [])):
        label = entry.get("unit", "") if isinstance(entry, dict) else str(entry)
        parts = label.split(" ", 1)[-1].split("/")
        if len(parts) >= 3:
            pairs.add((parts[0], parts[2]))
    return pairs


def collect(runs: list[Path], extra: list[Path]) -> dict:
    """Everything the table shows, merged over the runs (a later run's (dataset, method) replaces an earlier one's)."""
    data: dict = {"scores": {}, "costs": {}, "na": {}, "failed": set(), "datasets": [], "methods": [],
                  "notes": []}
    manifests = []
    for run in runs:
        manifest = json.loads((run / "manifest.json").read_text())
        manifests.append(manifest)
        scores = read_scores(run)
        na = {tuple(key.split("/", 1)): why for key, why in manifest.get("not_applicable", {}).items()}
        methods = {m for _, m in scores} | {m for _, m in na} | set(manifest["options"]["methods"])
        datasets = list(manifest["options"]["datasets"])
        data["scores"].update(scores)
        data["costs"].update(read_costs(run, methods, set(datasets)))
        data["na"].update(na)
        data["failed"] |= failed_pairs(manifest)
        data["datasets"] += [d for d in datasets if d not in data["datasets"]]
        data["methods"] += [m for m in manifest["options"]["methods"] if m not in data["methods"]]
        grid = manifest.get("execution", manifest.get("grid", {}))  # "grid" before 0.5.0
        data["notes"].append(
            f"{run.name}: {', '.join(datasets)}; seeds {manifest['options']['seeds']}; first "
            f"{manifest['options']['n_test']} test images; {manifest.get('device_name', manifest.get('device'))}; "
            f"torch {manifest.get('torch')}; backend {grid.get('backend')} x {grid.get('jobs')} jobs, "
            f"{grid.get('threads')} threads (units run side by side share the device, so ms/image is "
            f"an upper bound where jobs > 1); wall {manifest.get('wall_seconds')} s")
        for where, entry in manifest.get("checkpoints", {}).items():
            data["notes"].append(f"OFA network {where}: validation accuracy {entry.get('val_acc', math.nan):.3f}")
    data["notes"] = list(dict.fromkeys(data["notes"]))  # a checkpoint shared by several runs is noted once
    manifests += [json.loads((folder / "manifest.json").read_text()) for folder in extra]
    data["seconds"] = unit_seconds(manifests)
    return data


def ordered(methods: list[str]) -> list[str]:
    """The trained explainers first (OFA, ViT-Shapley, FastSHAP), then the rest by name."""
    return [m for m in TRAINED if m in methods] + sorted((m for m in methods if m not in TRAINED), key=str.lower)


def hundredths(value: float) -> str:
    """value x 100 with two decimals, '-0.00' written '0.00'."""
    text = f"{100 * value:.2f}"
    return "0.00" if text == "-0.00" else text


def cells(data: dict, dataset: str, method: str) -> list[str]:
    """The five cells of one method on one dataset: SRG, R-SRG, ms/img, fwd / bwd, training s."""
    kind = TRAINED.get(method)
    cost = training_cost(data["seconds"], kind, dataset, method) if kind else None
    trained = NOT_RUN if kind is None else (f"{cost:.1f} ({kind})" if cost is not None else "cached")
    if (dataset, method) in data["na"]:
        return [NA] * 4 + [NOT_RUN]
    scores = data["scores"].get((dataset, method), {})
    ms, forward, backward = data["costs"].get((dataset, method), (NA, NA, NA))
    missing = FAILED if (dataset, method) in data["failed"] else NOT_RUN
    srg, rsrg = (hundredths(scores[key]) if key in scores and not math.isnan(scores[key]) else missing
                 for key in ("srg", "rsrg"))
    passes = f"{forward} / {backward}" if forward != NA else missing
    return [srg, rsrg, ms if ms != NA else missing, passes, trained]


def markdown(data: dict) -> str:
    """The table, then its notes (n/a reasons, failed units, run settings)."""
    columns = ("SRG", "R-SRG", "ms/img", "fwd / bwd", "train s")
    header = ["method"] + [f"{DATASET_LABELS.get(d, d)} {c}" for d in data["datasets"] for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for method in ordered(data["methods"]):
        row = [method] + [cell for dataset in data["datasets"] for cell in cells(data, dataset, method)]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "SRG and R-SRG x 100 (higher is better), mean over the scored images (and seeds); ms/img and "
              "fwd / bwd (passes through the explained model) per image; train s: seconds of the training unit "
              "(train: OFA's network, Segm warm start included; fit: the amortized explainer on that network)."]
    reasons: dict[str, list[str]] = {}
    for (dataset, method), why in data["na"].items():
        reasons.setdefault(why, []).append(f"{method} on {dataset}")
    lines += [f"- {NA}: {', '.join(sorted(where))}: {why}" for why, where in reasons.items()]
    if data["failed"]:
        lines.append(f"- {FAILED}: " + ", ".join(f"{m} on {d}" for d, m in sorted(data["failed"])))
    lines += [f"- {note}" for note in data["notes"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="xaibench run --out folders")
    parser.add_argument("--units-from", nargs="*", type=Path, default=[],
                        help="more run folders whose manifests give the seconds of units cached in RUNs")
    args = parser.parse_args(argv)
    print(markdown(collect(args.runs, args.units_from)))


if __name__ == "__main__":
    main()
