"""report(out, frames): where scores become files: Table 2 and its side tables, Table 1, figures, attribution
maps on request, and the manifest. Every file is written atomically into a staging folder, and the whole set is
moved into --out only once it is complete; files that only an earlier run's manifest listed are then removed."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from xaibench.engine.collect import Frames
from xaibench.engine.scope import REFERENCE
from xaibench.io import atomic_write_bytes, atomic_write_text
from xaibench.tables import (
    DATASET_LABELS,
    METHOD_LABELS,
    PLAUSIBILITY_CAPTION,
    TRUTH_CAPTION,
    TRUTH_METRICS,
    confidence_intervals,
    cost_table,
    flat_markdown,
    gate_warnings,
    gates_table,
    kendall_notes,
    mean_curves,
    plausibility_table,
    sanity_table,
    summary,
    table1,
    table2,
    to_markdown,
    truth_table,
    wilcoxon_tests,
    write_table,
)
from xaibench.version import __version__


def cpu_name() -> str:
    """The CPU's model name (float results of a training can differ between CPU models), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: distributions whose version can change a result (xaibench's own dependencies and extras)
RESULT_PACKAGES = ("torch", "torchvision", "timm", "numpy", "scipy", "pandas", "captum", "medmnist", "grad-cam",
                   "zennit", "scikit-learn", "safetensors", "matplotlib", "seaborn")


def versions() -> dict[str, str | None]:
    """The installed version of each RESULT_PACKAGES distribution (None where it is not installed), the CUDA and
    cuDNN builds torch runs with, the Python and the OS."""
    from importlib import metadata

    found: dict[str, str | None] = {}
    for name in RESULT_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {**found, "cuda": torch.version.cuda, "cudnn": str(cudnn) if cudnn else None,
            "python": platform.python_version(), "os": platform.platform()}


def environment(config: dict[str, Any], device: torch.device, timings: dict[str, float]) -> dict[str, Any]:
    """Versions, commit, device and configuration: the head of every manifest."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    import numpy
    import timm

    return {"xaibench": __version__, "git_commit": commit, "python": platform.python_version(),
            "torch": torch.__version__, "timm": timm.__version__, "numpy": numpy.__version__,
            "versions": versions(),
            "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
            cpu_name(), "config": config, "timings_s": timings,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_table1(out: Path, frames: Frames, config: dict[str, Any], device: torch.device) -> list[Path]:
    """table1_scores.csv, table1.{csv,tex,md} and table1_manifest.json."""
    timings = {label.split(" ", 1)[1]: unit["seconds"] for label, unit in frames.units.items()
               if label.startswith(("train ", "evaluate "))}
    files = [atomic_write_text(out / "table1_scores.csv", frames.table1.to_csv(index=False))]
    files += write_table(table1(frames.table1), out, "table1",
                         "Test AUC and ACC (x100) of the classifiers (medmnist Evaluator).")
    record = environment(config, device, timings)
    record["units"] = {label: unit for label, unit in frames.units.items()
                       if label.startswith(("train ", "evaluate "))}  # cached or computed, and by whom
    files.append(atomic_write_text(out / "table1_manifest.json", json.dumps(record, indent=2, default=str)))
    return files


def write_run_outputs(out: Path, frames: Frames, methods: list[str], datasets: list[str]) -> list[Path]:
    """scores_long.csv, Table 2, plausibility, cost, Wilcoxon (per seed and pooled), summary, the bootstrap
    intervals behind every cell (ci.csv) and mean curves into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    scores, costs, curves, unavailable = frames.scores, frames.costs, frames.curves, frames.unavailable or None
    ci = confidence_intervals(scores)  # once, for every table: the bootstrap is the costly part
    files = [atomic_write_text(out / "scores_long.csv", scores.to_csv(index=False, float_format="%.9g"))]
    warnings = gate_warnings(frames.gates)
    shown = methods + ([REFERENCE] if (scores["method"] == REFERENCE).any() else [])
    main = table2(scores, shown, datasets, **_na(unavailable), ci=ci)
    files += write_table(main, out, "table2", "SRG and R-SRG (x100, mean over test images; mean $\\pm$ std over "
                         "seeds) of each method." + _warned(warnings), notes=_notes(main, warnings))
    files += write_truth_outputs(out, frames, methods, datasets, ci, warnings)
    if (scores["metric"] == "plausibility").any():
        files += write_table(plausibility_table(scores, methods, datasets, **_na(unavailable), ci=ci), out,
                             "plausibility", PLAUSIBILITY_CAPTION)
    if len(costs):
        files += write_table(cost_table(costs, methods, datasets, **_na(unavailable)), out, "cost",
                             "Cost of each method: milliseconds and forward/backward passes per image.",
                             bold_best=False)
    if len(scores):
        tests = wilcoxon_tests(scores, [m for m in ("srg", "rsrg", "plausibility") if m in set(scores["metric"])],
                               methods)
        files.append(atomic_write_text(out / "wilcoxon.csv", tests.to_csv(index=False, float_format="%.6g")))
        files.append(atomic_write_text(out / "wilcoxon.md", flat_markdown(tests)))
        files.append(atomic_write_text(out / "summary.csv", summary(scores, ci).to_csv(index=False,
                                                                                        float_format="%.9g")))
        files.append(atomic_write_text(out / "ci.csv", ci.to_csv(index=False, float_format="%.9g")))
    if len(curves):
        files.append(atomic_write_text(out / "curves.csv", mean_curves(curves).to_csv(index=False,
                                                                                       float_format="%.9g")))
    for name, table in frames.extra.items():  # rows of a unit kind the report has no layout for
        files.append(atomic_write_text(out / f"{name}.csv", table.to_csv(index=False, float_format="%.9g")))
    return files


def _warned(warnings: list[str]) -> str:
    """A caption's tail naming the failed gates (the notes under the table give them in full)."""
    return f" {len(warnings)} gate(s) of the model's truth fail: see the notes and gates.md." if warnings else ""


def _notes(table: pd.DataFrame, warnings: list[str]) -> list[str]:
    return list(table.attrs.get("notes", [])) + warnings


def write_truth_outputs(out: Path, frames: Frames, methods: list[str], datasets: list[str], ci: pd.DataFrame,
                        warnings: list[str]) -> list[Path]:
    """truth.{csv,md,tex} (agreement with the model's exact Shapley values, and Kendall's tau between the rankings
    by SRG and by each agreement measure), gates.{csv,md}, game.{csv,md} (the background's share of the whole game)
    and sanity.{csv,md}; each only where it was measured."""
    scores, unavailable, files = frames.scores, frames.unavailable or None, []
    if scores["metric"].isin(TRUTH_METRICS).any():
        table = truth_table(scores, methods, datasets, **_na(unavailable), ci=ci)
        notes = _notes(table, kendall_notes(scores, methods) + warnings)
        files += write_table(table, out, "truth", TRUTH_CAPTION + _warned(warnings), notes=notes)
    if len(frames.gates):
        gates = gates_table(frames.gates)
        files.append(atomic_write_text(out / "gates.csv", gates.to_csv(index=False, float_format="%.6g")))
        files.append(atomic_write_text(out / "gates.md", flat_markdown(gates)))
    if len(frames.game):  # the background's share of the whole game, beside the truth
        files.append(atomic_write_text(out / "game.csv", frames.game.to_csv(index=False, float_format="%.6g")))
        files.append(atomic_write_text(out / "game.md", flat_markdown(frames.game)))
    if len(frames.sanity):
        files.append(atomic_write_text(out / "sanity.csv", frames.sanity.to_csv(index=False, float_format="%.6g")))
        table = sanity_table(frames.sanity, methods)
        files.append(atomic_write_text(out / "sanity.md", to_markdown(table, table.attrs["notes"])))
    return files


def _na(unavailable: dict[tuple[str, str], str] | None) -> dict[str, Any]:
    """The `unavailable` keyword for the table builders, only when some cell is n/a (older signatures)."""
    return {"unavailable": unavailable} if unavailable else {}


def write_figures(folder: Path, frames: Frames, target: str) -> list[Path]:
    """figures/maps_<dataset>.{png,pdf} (images and each method's map) and figures/curves.{png,pdf}."""
    from xaibench.figures import attribution_maps, curves_figure, save_figure

    files = []
    for dataset, entry in frames.figure_data.items():
        maps = {METHOD_LABELS.get(m, m): values for m, values in entry["maps"].items()}
        captions = [f"#{i} label {int(y)}" for i, y in enumerate(entry["labels"])]
        figure = attribution_maps(entry["images"], maps, masks=entry["masks"], captions=captions,
                                  title=f"{DATASET_LABELS.get(dataset, dataset)}: attributions for the "
                                        f"{target} class, centred per image (seed {entry['seed']})")
        files += save_figure(figure, folder / f"maps_{dataset}")
    if len(frames.curves):
        frame = mean_curves(frames.curves)
        frame = frame[frame["curve"].isin(["mif", "lif", "random"])]
        if len(frame):
            files += save_figure(curves_figure(frame, dataset_labels=DATASET_LABELS, method_labels=METHOD_LABELS),
                                 folder / "curves")
    return files


def save_attributions(folder: Path, frames: Frames) -> list[Path]:
    """attributions/<dataset>_seed<seed>_<method>.safetensors: every explained image's patch map, with the
    image index (position in the test split) and the explained class; method, dataset and seed as metadata."""
    from safetensors.torch import save

    files = []
    for entry in frames.explanations:
        name = f"{entry['dataset']}_seed{entry['seed']}_{entry['method']}".replace("/", "_").replace(":", "_")
        tensors = {"attributions": entry["attributions"].float().contiguous(),
                   "image": entry["image"].long().contiguous(), "target": entry["target"].long().contiguous()}
        metadata = {"dataset": entry["dataset"], "seed": str(entry["seed"]), "method": entry["method"]}
        files.append(atomic_write_bytes(folder / f"{name}.safetensors", save(tensors, metadata=metadata)))
    return files


def stale_outputs(out: Path, written: list[str]) -> list[Path]:
    """Files the manifest of an earlier run in `out` lists that this run did not write again. Only files an
    earlier run recorded are ever removed, never anything else in the folder."""
    try:
        earlier = json.loads((out / "manifest.json").read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    keep = set(written) | {"manifest.json"}
    stale = []
    for name in earlier:
        path = (out / str(name)).resolve()
        if str(name) not in keep and path.is_file() and out.resolve() in path.parents:
            stale.append(path)
    return stale


def write_manifest(out: Path, record: dict[str, Any], files: list[Path]) -> Path:
    """manifest.json (listing `files`, relative to `out`)."""
    record["files"] = sorted(str(p.relative_to(out)) for p in files)
    return atomic_write_text(out / "manifest.json", json.dumps(record, indent=2, default=str))


@contextlib.contextmanager
def staged(out: Path):
    """A run's files are written into `out/.staging-<pid>/` and moved into `out` only once all are written, so a
    failure (a full disk, a crash) leaves `out` as it was: no partial set of results. Yields the staging folder;
    `publish` then moves its files (and removes what only an earlier manifest in `out` listed)."""
    for left in out.glob(".staging-*"):  # of a killed run (the caller holds --out: no live run writes here)
        shutil.rmtree(left, ignore_errors=True)
    stage = out / f".staging-{os.getpid()}"
    stage.mkdir(parents=True)
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def publish(stage: Path, out: Path, files: list[Path]) -> list[Path]:
    """Move the staged `files` into `out` (the manifest last), remove stale outputs; the final paths."""
    names = [p.relative_to(stage) for p in files]
    stale = stale_outputs(out, [str(n) for n in names])
    for name in sorted(names, key=lambda n: str(n) == "manifest.json"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / name, out / name)
    for old in stale:  # written by an earlier run into this folder and not by this one (e.g. a dropped method)
        old.unlink(missing_ok=True)
    return [out / name for name in names]
