"""Orchestration: train or load every (dataset, model, seed), evaluate, and hand long score tables to tables.py.

Only the runner and the CLI know about result folders on disk.
"""
from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from xaibench import __version__
from xaibench.data import data_root
from xaibench.errors import XaibenchError
from xaibench.io import atomic_write_text
from xaibench.registry import MODELS
from xaibench.tables import table1, write_table
from xaibench.training import DataSpec, TrainConfig, classification_scores, medmnist_evaluate, predict_proba, train_model


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
