"""Orchestration: train or load every (dataset, model, seed), explain and score, and hand long score tables to
tables.py and figures.py. `run_table1` is `xaibench train`; `run_benchmark` is `xaibench run`.

Only the runner and the CLI know about result folders on disk.
"""
from __future__ import annotations

import copy
import inspect
import json
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from tqdm.auto import tqdm

from xaibench import __version__
from xaibench.cache import UnitStore, code_fingerprint, derive_seed, unit_key, weights_fingerprint
from xaibench.data import data_root, resolve_datasets
from xaibench.defaults import DEFAULT_RUN
from xaibench.errors import XaibenchError
from xaibench.io import atomic_write_text, cache_dir
from xaibench.methods import create_method
from xaibench.metrics import create_metric
from xaibench.registry import METHODS, METRICS, MODELS
from xaibench.tables import (DATASET_LABELS, METHOD_LABELS, cost_table, flat_markdown, localization_table,
                             mean_curves, summary, table1, table2, wilcoxon_tests, write_table)
from xaibench.training import (DataSpec, TrainConfig, checkpoint_key, classification_scores, medmnist_evaluate,
                               predict_proba, train_model)


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise XaibenchError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise XaibenchError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu")
    return device


def train_config_for(model: str, config: dict[str, Any], overrides: dict[str, Any]) -> TrainConfig:
    """[train] options, then [train.<model>] options, then --set overrides."""
    section = dict(config.get("train", {}))
    per_model = {k: section.pop(k) for k in MODELS.names() if isinstance(section.get(k), dict)}
    return TrainConfig.from_dict({**section, **per_model.get(model, {}), **overrides})


def data_spec(name: str, size: int, root: str | None, config: dict[str, Any]) -> DataSpec:
    return DataSpec(name, size, root, dict(config.get("data", {}).get(name, {})))


def manifest(config: dict[str, Any], device: torch.device, timings: dict[str, float]) -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    import numpy
    import timm

    return {"xaibench": __version__, "git_commit": commit, "python": platform.python_version(),
            "torch": torch.__version__, "timm": timm.__version__, "numpy": numpy.__version__,
            "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
            platform.processor() or platform.machine(), "config": config, "timings_s": timings,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def run_table1(models: list[str], datasets: list[str], *, size: int = 28, root: str | None = None,
               seeds: list[int] = (0,), out: Path, device: torch.device, config: dict[str, Any] | None = None,
               overrides: dict[str, Any] | None = None, cache: Path | None = None, progress: bool = True,
               log: Callable[[str], None] = print) -> pd.DataFrame:
    """Train (or load) each model on each dataset and seed; test AUC/ACC; write Table 1 into `out`."""
    config = config or {}
    rows, timings = [], {}
    for dataset in datasets:
        spec = data_spec(dataset, size, root, config)
        test = spec.load("test")
        for model_name in models:
            train_config = train_config_for(model_name, config, overrides or {})
            for seed in seeds:
                start = time.perf_counter()
                trained = train_model(model_name, spec, train_config, seed, device, cache, progress, log)
                probabilities = predict_proba(trained.model, test, device)
                if dataset == "synthetic":
                    scores = classification_scores(probabilities, test)
                else:
                    scores = medmnist_evaluate(probabilities, test, data_root(root))
                timings[f"{dataset}/{model_name}/{seed}"] = round(time.perf_counter() - start, 1)
                log(f"{dataset} {model_name} seed {seed}: test AUC {scores['auc']:.4f} ACC {scores['acc']:.4f} "
                    f"(checkpoint {trained.path.name})")
                for metric in ("auc", "acc"):
                    rows.append({"dataset": dataset, "model": model_name, "seed": seed, "metric": metric.upper(),
                                 "value": scores[metric], "checkpoint": trained.path.name,
                                 "train_seconds": trained.record.get("train_seconds")})
    scores = pd.DataFrame(rows)
    out = Path(out)
    atomic_write_text(out / "table1_scores.csv", scores.to_csv(index=False))
    write_table(table1(scores), out, "table1", "Test AUC and ACC (x100) of the classifiers (medmnist Evaluator).")
    atomic_write_text(out / "table1_manifest.json", json.dumps(manifest(config, device, timings), indent=2, default=str))
    return scores


# -- xaibench run: the whole benchmark --------------------------------------------------------------------

BASELINE_MODELS = ["resnet18", "resnet50", "vit", "segm", "ofa"]
TARGETS = ("label", "predicted")


class RunFailedError(XaibenchError):
    """A unit of `xaibench run` failed (without --keep-going). exit_code: 2 for a XaibenchError cause, else 1."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class RunOptions:
    """What `xaibench run` does. No defaults here: they live in xaibench/defaults.py (DEFAULT_RUN["run"])."""

    methods: list[str]
    datasets: list[str]
    seeds: list[int]
    size: int
    model: str
    target: str
    n_test: int
    batch_size: int
    metrics: list[str]
    steps: int | list[int] | None
    n_draws: int
    metric_batch_size: int
    n_figure_images: int
    figures: bool
    method_options: dict[str, dict[str, Any]]
    metric_options: dict[str, dict[str, Any]]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunOptions":
        """Check and normalise the [run] options (names resolved against the registries; plugins load first)."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise XaibenchError(f"unknown run option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        missing = [name for name in known if name not in values]
        if missing:
            raise XaibenchError(f"run option(s) {', '.join(missing)} missing (see xaibench/defaults.py)")
        values = dict(values)
        values["methods"] = METHODS.resolve(values["methods"])
        values["datasets"] = resolve_datasets(values["datasets"])
        values["metrics"] = METRICS.resolve(values["metrics"])
        values["model"] = MODELS.resolve([values["model"]])[0]
        seeds = values["seeds"]
        seeds = [seeds] if isinstance(seeds, int) else str(seeds).split(",") if isinstance(seeds, str) else seeds
        try:
            values["seeds"] = list(dict.fromkeys(int(seed) for seed in seeds))
        except (TypeError, ValueError):
            raise XaibenchError(f"seeds must be integers, got {values['seeds']!r}") from None
        if values["steps"] == "all":
            values["steps"] = None
        for name in ("n_test", "batch_size", "n_draws", "metric_batch_size", "size"):
            if not isinstance(values[name], int) or values[name] < 1:
                raise XaibenchError(f"run option {name} must be an integer >= 1, got {values[name]!r}")
        if isinstance(values["steps"], int) and values["steps"] < 2:
            raise XaibenchError(f"steps must be >= 2 (a curve needs k = 0 and k = n) or 'all', got {values['steps']}")
        if not isinstance(values["n_figure_images"], int) or values["n_figure_images"] < 0:
            raise XaibenchError(f"run option n_figure_images must be an integer >= 0, "
                                f"got {values['n_figure_images']!r}")
        if values["target"] not in TARGETS:
            raise XaibenchError(f"unknown target {values['target']!r}; valid: {', '.join(TARGETS)}")
        if not values["seeds"]:
            raise XaibenchError("no seed given")
        return cls(**values)

    def metric_options_for(self, name: str) -> dict[str, Any]:
        """Options of one metric: the curve settings above where the metric takes them, then [run.metric_options]."""
        parameters = inspect.signature(METRICS.get(name)).parameters
        built = {"steps": self.steps, "batch_size": self.metric_batch_size, "n_draws": self.n_draws}
        options = {key: value for key, value in built.items() if key in parameters}
        return {**options, **self.metric_options.get(name, {})}


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def run_config(file_config: dict[str, Any], flags: dict[str, Any] | None = None,
               overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """DEFAULT_RUN, then the --config file (key by key), then flags ([run] options; None = not given), then --set.

    --set keys 'run.<option>' and 'data.<dataset>.<option>' land in those sections; any other key
    ('steps', 'train.steps') is a training option. Returns (config, training overrides).
    """
    config = _deep_merge(DEFAULT_RUN, file_config)
    config["run"].update({key: value for key, value in (flags or {}).items() if value is not None})
    train_overrides: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        section, _, rest = key.partition(".")
        if section == "run" and rest:
            config["run"][rest] = value
        elif section == "data" and "." in rest:
            dataset, _, option = rest.partition(".")
            config.setdefault("data", {}).setdefault(dataset, {})[option] = value
        else:
            train_overrides[rest if section == "train" and rest else key] = value
    return config, train_overrides


@dataclass
class RunResult:
    """What a run produced: per-image scores, the written files, the failed units (empty = success)."""

    scores: pd.DataFrame
    out: Path
    files: list[Path] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    n_units: int = 0
    n_cached: int = 0
    seconds: float = 0.0


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _targets(model, x: torch.Tensor, labels: torch.Tensor, target: str, batch_size: int) -> torch.Tensor:
    if target == "label":
        return labels
    with torch.no_grad():  # not inference_mode: the targets take part in the explainers' autograd
        return torch.cat([model.forward_fn(x[start:start + batch_size]).argmax(dim=-1)
                          for start in range(0, len(x), batch_size)])


def _explain_unit(model, method: str, options: dict[str, Any], x: torch.Tensor, targets: torch.Tensor,
                  batch_size: int, generator: torch.Generator) -> dict[str, Any]:
    explainer = create_method(method, model, **options)
    parts, seconds, forward, backward = [], 0.0, 0.0, 0.0
    for start in range(0, len(x), batch_size):
        chunk = slice(start, start + batch_size)
        explanation = explainer.explain(x[chunk], targets[chunk], generator=generator)
        count = explanation.attributions.shape[0]
        parts.append(explanation.attributions.float().cpu())
        seconds += explanation.seconds
        forward += explanation.n_forward * count
        backward += explanation.n_backward * count
    return {"attributions": torch.cat(parts), "targets": targets.cpu(), "seconds": seconds,
            "forward_per_image": forward / len(x), "backward_per_image": backward / len(x)}


def _score_unit(model, metric_name: str, options: dict[str, Any], x: torch.Tensor, attributions: torch.Tensor,
                targets: torch.Tensor, ground_truth: torch.Tensor | None, batch_size: int,
                generator: torch.Generator) -> dict[str, Any]:
    metric = create_metric(metric_name, **options)
    scores: dict[str, list[torch.Tensor]] = {}
    curves: dict[str, list[torch.Tensor]] = {}
    x_axis, n_forward = None, 0
    start_time = time.perf_counter()
    for start in range(0, len(x), batch_size):
        chunk = slice(start, start + batch_size)
        output = metric.evaluate(model.forward_fn, x[chunk], attributions[chunk].to(x.device),
                                 targets[chunk].to(x.device),
                                 ground_truth[chunk].to(x.device) if ground_truth is not None else None, generator)
        for name, values in output.scores.items():
            scores.setdefault(name, []).append(values.detach().float().cpu())
        for name, values in output.curves.items():
            curves.setdefault(name, []).append(values.detach().float().cpu())
        x_axis = output.x.detach().float().cpu() if output.x is not None else x_axis
        n_forward += int(output.n_forward)
    return {"scores": {name: torch.cat(values) for name, values in scores.items()},
            "curves": {name: torch.cat(values) for name, values in curves.items()},
            "x": x_axis, "n_forward": n_forward, "seconds": time.perf_counter() - start_time}


def run_benchmark(options: RunOptions, *, config: dict[str, Any], overrides: dict[str, Any] | None = None,
                  root: str | None = None, out: str | Path, device: torch.device, cache: Path | None = None,
                  keep_going: bool = False, progress: bool = True, train_baselines: bool = False,
                  log: Callable[[str], None] | None = None, command: list[str] | None = None) -> RunResult:
    """Train or load the evaluated network per dataset and seed, explain the first n_test test images with
    every method, score them with every metric, and write Table 2, side tables, figures and a manifest.

    Every unit (train, explain, score) is cached on disk by a hash of its inputs, so a killed run resumes.
    A failing unit raises RunFailedError, or with keep_going is recorded in the result and skipped.
    """
    started = time.perf_counter()
    overrides = overrides or {}
    out = Path(out)
    cache_root = Path(cache or cache_dir())
    store = UnitStore(cache_root / "units")
    log = log or print

    # Everything that can be checked before any work: data files, training options, metric options.
    prepared = []
    for dataset in options.datasets:
        spec = data_spec(dataset, options.size, root, config)
        test = spec.load("test")
        train_config = train_config_for(options.model, config, overrides)
        prepared.append((dataset, spec, test, train_config))
    metric_options = {}
    for name in options.metrics:
        metric_options[name] = options.metric_options_for(name)
        try:
            create_metric(name, **metric_options[name])
        except TypeError as error:
            raise XaibenchError(f"metric {name!r}: bad options {metric_options[name]}: {error}") from None
    needs_truth = {name: bool(getattr(METRICS.get(name), "needs_ground_truth", False)) for name in options.metrics}
    method_code = {m: code_fingerprint(METHODS.get(m)) for m in options.methods}
    metric_code = {m: code_fingerprint(METRICS.get(m)) for m in options.metrics}

    def metrics_for(test) -> list[str]:
        return [m for m in options.metrics if test.has_ground_truth or not needs_truth[m]]

    n_units = sum(len(options.seeds) * (1 + len(options.methods) * (1 + len(metrics_for(test))))
                  for _, _, test, _ in prepared)
    bar = tqdm(total=n_units, desc="xaibench run", unit="unit", disable=not progress, dynamic_ncols=True,
               file=sys.stderr)
    timings: dict[str, float] = {}
    units: dict[str, dict[str, Any]] = {}
    failures: list[dict[str, str]] = []
    score_frames: list[pd.DataFrame] = []
    curve_rows: list[dict[str, Any]] = []
    cost_rows: list[dict[str, Any]] = []
    checkpoints: dict[str, dict[str, Any]] = {}
    figure_data: dict[str, dict[str, Any]] = {}

    def attempt(label: str, work: Callable[[], Any]) -> tuple[bool, Any]:
        try:
            return True, work()
        except KeyboardInterrupt:
            raise
        except Exception as error:  # a unit's failure must not lose the finished ones
            if not keep_going:
                bar.close()
                raise RunFailedError(
                    f"{label} failed: {_one_line(error)} (finished units are cached: rerunning resumes; "
                    f"--keep-going runs the other units)", 2 if isinstance(error, XaibenchError) else 1) from error
            failures.append({"unit": label, "error": _one_line(error), "traceback": traceback.format_exc()})
            log(f"{label}: FAILED: {_one_line(error)}")
            return False, None

    def finish(label: str, seconds: float, cached: bool, detail: str = "") -> None:
        timings[label] = round(seconds, 3)
        units[label] = {"seconds": round(seconds, 3), "cached": cached}
        log(f"{label}: {'cached' if cached else f'done in {seconds:.2f} s'}{detail}")
        bar.update(1)

    def unit(kind: str, label: str, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """A finished unit from the store, or computed and stored; None when it failed (with keep_going)."""
        start = time.perf_counter()
        payload = store.load(kind, key)
        if payload is not None:
            finish(label, payload["seconds"], True)
            return payload
        ok, payload = attempt(label, compute)
        if not ok:
            return None
        store.save(kind, key, payload)
        finish(label, time.perf_counter() - start, False)
        return payload

    for dataset, spec, test, train_config in prepared:
        dataset_metrics = metrics_for(test)
        indices = torch.arange(min(options.n_test, len(test)))
        for seed in options.seeds:
            label = f"train {dataset}/seed{seed}/{options.model}"
            expected = (cache_root / "checkpoints" /
                        f"{options.model}-{spec.name}-{spec.size}-"
                        f"{checkpoint_key(spec, options.model, train_config, seed)}.pt")
            was_cached = expected.exists()
            start = time.perf_counter()
            ok, trained = attempt(label, lambda: train_model(options.model, spec, train_config, seed, device, cache,
                                                             progress, log if progress else (lambda line: None)))
            if not ok:
                bar.update(len(options.methods) * (1 + len(dataset_metrics)) + 1)
                continue
            model = trained.model.eval()
            checkpoints[f"{dataset}/seed{seed}"] = {"file": trained.path.name, "val_acc": trained.record.get("val_acc"),
                                                    "best_step": trained.record.get("best_step")}
            finish(label, time.perf_counter() - start, was_cached, f" (checkpoint {trained.path.name})")
            weights = weights_fingerprint(model)
            x, labels = test.batch(indices, device=device)
            ground_truth = test.patch_masks(model.patch_size, indices) if test.has_ground_truth else None
            targets = _targets(model, x, labels, options.target, options.batch_size)
            for method in options.methods:
                label = f"explain {dataset}/seed{seed}/{method}"
                method_options = options.method_options.get(method, {})
                key = unit_key("explain", {
                    "weights": weights, "checkpoint": trained.record.get("key"), "data": spec.key(),
                    "n_test": len(indices), "target": options.target, "method": method, "options": method_options,
                    "code": method_code[method], "seed": seed, "batch_size": options.batch_size,
                    "device": device.type})
                generator = torch.Generator(device=device).manual_seed(derive_seed(seed, dataset, method, "explain"))
                explanation = unit("explain", label, key, lambda: _explain_unit(
                    model, method, method_options, x, targets, options.batch_size, generator))
                if explanation is None:
                    bar.update(len(dataset_metrics) + 1)
                    continue
                attributions = explanation["attributions"]
                cost_rows.append({"dataset": dataset, "method": method, "seed": seed,
                                  "ms_per_image": 1000 * explanation["seconds"] / len(indices),
                                  "forward_per_image": explanation["forward_per_image"],
                                  "backward_per_image": explanation["backward_per_image"]})
                first_seed = figure_data.get(dataset, {}).get("seed", seed) == seed
                if options.figures and options.n_figure_images and first_seed:
                    shown = slice(0, options.n_figure_images)
                    entry = figure_data.setdefault(dataset, {
                        "seed": seed, "images": x[shown].cpu(), "labels": labels[shown].cpu(),
                        "masks": test.pixel_masks[indices[shown]] if test.has_ground_truth else None, "maps": {}})
                    entry["maps"][method] = model.patches_to_pixels(attributions[shown].to(device)).cpu()
                emitted: set[str] = set()  # a score two metrics both give (srg and insertion) is kept once
                for metric_name in dataset_metrics:
                    label = f"score {dataset}/seed{seed}/{method}/{metric_name}"
                    score_key = unit_key("score", {
                        "explanation": key, "weights": weights, "metric": metric_name,
                        "options": metric_options[metric_name], "code": metric_code[metric_name], "seed": seed,
                        "batch_size": options.batch_size, "device": device.type})
                    generator = torch.Generator(device=device).manual_seed(
                        derive_seed(seed, dataset, method, metric_name))
                    scored = unit("score", label, score_key, lambda: _score_unit(
                        model, metric_name, metric_options[metric_name], x, attributions, explanation["targets"],
                        ground_truth if needs_truth[metric_name] else None, options.batch_size, generator))
                    if scored is None:
                        bar.update(1)
                        continue
                    fresh = {name: values for name, values in scored["scores"].items() if name not in emitted}
                    emitted.update(fresh)
                    score_frames.extend(_score_rows(dataset, seed, method, indices, labels.cpu(),
                                                    explanation["targets"], fresh))
                    curve_rows.extend(_curve_rows(dataset, seed, method, scored))
    bar.close()

    scores = (pd.concat(score_frames, ignore_index=True) if score_frames else
              pd.DataFrame(columns=["dataset", "seed", "method", "image", "label", "target", "metric", "value"]))
    files = write_run_outputs(out, scores, pd.DataFrame(cost_rows), pd.DataFrame(curve_rows), options)
    if options.figures and figure_data:
        ok, written = attempt("figures", lambda: write_figures(out / "figures", figure_data, pd.DataFrame(curve_rows),
                                                              options))
        files.extend(written or [])
    if train_baselines:
        ok, _ = attempt("train baselines (Table 1)", lambda: run_table1(
            BASELINE_MODELS, options.datasets, size=options.size, root=root, seeds=options.seeds, out=out,
            device=device, config=config, overrides=overrides, cache=cache, progress=progress, log=log))
        if ok:
            files.extend(out / f"table1.{suffix}" for suffix in ("csv", "tex", "md"))
    seconds = time.perf_counter() - started
    record = manifest(config, device, timings)
    record.update({
        "command": command, "options": asdict(options), "train_overrides": overrides,
        "train_config": {dataset: asdict(train_config) for dataset, _, _, train_config in prepared},
        "data_root": str(data_root(root)) if any(d != "synthetic" for d in options.datasets) else None,
        "cache": str(cache_root), "checkpoints": checkpoints, "units": units,
        "n_units": n_units, "n_cached": sum(u["cached"] for u in units.values()), "failures": failures,
        "wall_seconds": round(seconds, 1), "files": sorted(str(p.relative_to(out)) for p in files)})
    stale = _stale_outputs(out, record["files"])
    files.append(atomic_write_text(out / "manifest.json", json.dumps(record, indent=2, default=str)))
    for path in stale:  # written by an earlier run into this folder and not by this one (e.g. a dropped method)
        path.unlink(missing_ok=True)
    return RunResult(scores, out, files, failures, n_units, record["n_cached"], seconds)


def _stale_outputs(out: Path, written: list[str]) -> list[Path]:
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


def _score_rows(dataset: str, seed: int, method: str, indices: torch.Tensor, labels: torch.Tensor,
                targets: torch.Tensor, scores: dict[str, torch.Tensor]) -> list[pd.DataFrame]:
    frames = []
    for name, values in scores.items():
        frames.append(pd.DataFrame({"dataset": dataset, "seed": seed, "method": method,
                                    "image": indices.numpy(), "label": labels.numpy(),
                                    "target": targets.numpy(), "metric": name,
                                    "value": values.double().numpy()}))
    return frames


def _curve_rows(dataset: str, seed: int, method: str, scored: dict[str, Any]) -> list[dict[str, Any]]:
    if scored.get("x") is None:
        return []
    x_axis = scored["x"].tolist()
    rows = []
    for name, curves in scored["curves"].items():
        for x_value, y_value in zip(x_axis, curves.double().mean(dim=0).tolist()):
            rows.append({"dataset": dataset, "method": method, "seed": seed, "curve": name, "x": x_value,
                         "y": y_value})
    return rows


def write_run_outputs(out: Path, scores: pd.DataFrame, costs: pd.DataFrame, curves: pd.DataFrame,
                      options: RunOptions) -> list[Path]:
    """scores_long.csv, Table 2, localization, cost, Wilcoxon, summary and mean curves into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    methods, datasets = options.methods, options.datasets
    files = [atomic_write_text(out / "scores_long.csv", scores.to_csv(index=False, float_format="%.9g"))]
    files += write_table(table2(scores, methods, datasets), out, "table2",
                         "SRG and R-SRG (x100, mean over test images; mean $\\pm$ std over seeds) of each method.")
    if (scores["metric"] == "localization").any():
        files += write_table(localization_table(scores, methods, datasets), out, "localization",
                             "Localization AUROC (x100) of each method against the true lesion patches.")
    if len(costs):
        files += write_table(cost_table(costs, methods, datasets), out, "cost",
                             "Cost of each method: milliseconds and forward/backward passes per image.",
                             bold_best=False)
    if len(scores):
        tests = wilcoxon_tests(scores, [m for m in ("srg", "rsrg", "localization") if m in set(scores["metric"])],
                               methods)
        files.append(atomic_write_text(out / "wilcoxon.csv", tests.to_csv(index=False, float_format="%.6g")))
        files.append(atomic_write_text(out / "wilcoxon.md", flat_markdown(tests)))
        files.append(atomic_write_text(out / "summary.csv", summary(scores).to_csv(index=False,
                                                                                    float_format="%.9g")))
    if len(curves):
        files.append(atomic_write_text(out / "curves.csv", mean_curves(curves).to_csv(index=False,
                                                                                       float_format="%.9g")))
    return files


def write_figures(folder: Path, figure_data: dict[str, dict[str, Any]], curves: pd.DataFrame,
                  options: RunOptions) -> list[Path]:
    """figures/maps_<dataset>.{png,pdf} (images and each method's map) and figures/curves.{png,pdf}."""
    from xaibench.figures import attribution_maps, curves_figure, save_figure

    files = []
    for dataset, entry in figure_data.items():
        maps = {METHOD_LABELS.get(m, m): values for m, values in entry["maps"].items()}
        captions = [f"#{i} label {int(y)}" for i, y in enumerate(entry["labels"])]
        figure = attribution_maps(entry["images"], maps, masks=entry["masks"], captions=captions,
                                  title=f"{DATASET_LABELS.get(dataset, dataset)}: attributions for the "
                                        f"{options.target} class, centred per image (seed {entry['seed']})")
        files += save_figure(figure, folder / f"maps_{dataset}")
    if len(curves):
        frame = mean_curves(curves)
        frame = frame[frame["curve"].isin(["mif", "lif", "random"])]
        if len(frame):
            files += save_figure(curves_figure(frame, dataset_labels=DATASET_LABELS, method_labels=METHOD_LABELS),
                                 folder / "curves")
    return files
