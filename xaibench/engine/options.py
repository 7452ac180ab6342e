"""The options of `xaibench run`: DEFAULT_RUN, then a config file, then flags, then --set; checked up front."""
from __future__ import annotations

import copy
import inspect
from pathlib import Path
from dataclasses import dataclass, fields
from typing import Any

import torch

from xaibench.data import resolve_datasets
from xaibench.defaults import ALL_IMAGES, DATASET_TRAIN, DEFAULT_RUN, PRESETS
from xaibench.errors import XaibenchError
from xaibench.registry import METHODS, METRICS, MODELS
from xaibench.training import DataSpec, TrainConfig

TARGETS = ("label", "predicted")
WRAPPED_PREFIXES = ("torchvision:", "timm:")  # --model names that are built, not trained by xaibench


def resolve_device(name: str | None) -> torch.device:
    """auto: CUDA, else Apple's MPS where torch offers it (untested: no such machine here), else the CPU."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise XaibenchError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N, mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise XaibenchError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise XaibenchError(f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) "
                            f"are visible (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    if device.type == "mps" and not _mps_available():
        raise XaibenchError(f"device {name!r} asked for, but torch offers no MPS here; use --device cpu")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def train_config_for(model: str, config: dict[str, Any], overrides: dict[str, Any],
                     dataset: str | None = None) -> TrainConfig:
    """The dataset's own recipe (defaults.DATASET_TRAIN: the embedded sets are sized for the default run), then
    [train] options, then [train.<model>] options, then --set overrides."""
    section = dict(config.get("train", {}))
    per_model = {k: section.pop(k) for k in MODELS.names() if isinstance(section.get(k), dict)}
    recipe = DATASET_TRAIN.get(dataset, {}) if dataset is not None else {}
    return TrainConfig.from_dict({**recipe, **section, **per_model.get(model, {}), **overrides})


def data_spec(name: str, size: int, root: str | None, config: dict[str, Any]) -> DataSpec:
    return DataSpec(name, size, root, dict(config.get("data", {}).get(name, {})))


def _seeds(value: Any) -> list[int]:
    seeds = [value] if isinstance(value, int) else str(value).split(",") if isinstance(value, str) else value
    try:
        parsed = list(dict.fromkeys(int(seed) for seed in seeds))
    except (TypeError, ValueError):
        raise XaibenchError(f"seeds must be integers, got {value!r}") from None
    if any(seed < 0 for seed in parsed):
        raise XaibenchError(f"seeds must be integers >= 0, got {value!r}")
    return parsed


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
    metric_batch_size: int | str  # or "auto"
    n_figure_images: int
    figures: bool
    method_options: dict[str, dict[str, Any]]
    metric_options: dict[str, dict[str, Any]]
    checkpoint: str | None  # a classifier's weights file: it is explained and scored as it is, not trained
    sanity_images: int  # images of the cascading randomization check per method (0 = no check)
    sanity_data: bool  # also the data randomization test: the network trained again on permuted labels

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
        if not str(values["model"]).startswith(WRAPPED_PREFIXES):
            values["model"] = MODELS.resolve([values["model"]])[0]
        values["seeds"] = _seeds(values["seeds"])
        if str(values["model"]).startswith(WRAPPED_PREFIXES) and not values["checkpoint"]:
            raise XaibenchError(f"model {values['model']!r} is not trained by xaibench: give its weights with "
                                f"--checkpoint PATH")
        if values["checkpoint"] and not Path(values["checkpoint"]).expanduser().is_file():
            raise XaibenchError(f"checkpoint {values['checkpoint']!r} is not a file")
        if values["steps"] == "all":
            values["steps"] = None
        if values["n_test"] == "all":
            values["n_test"] = ALL_IMAGES
        _check_values(values)
        return cls(**values)

    def metric_options_for(self, name: str) -> dict[str, Any]:
        """Options of one metric: the curve settings above where the metric takes them, then [run.metric_options]."""
        parameters = inspect.signature(METRICS.get(name)).parameters
        built = {"steps": self.steps, "batch_size": self.metric_batch_size, "n_draws": self.n_draws}
        options = {key: value for key, value in built.items() if key in parameters}
        return {**options, **self.metric_options.get(name, {})}


def _check_values(values: dict[str, Any]) -> None:
    for name in ("n_test", "batch_size", "n_draws", "metric_batch_size", "size"):
        if name == "metric_batch_size" and values[name] == "auto":
            continue
        if not isinstance(values[name], int) or isinstance(values[name], bool) or values[name] < 1:
            raise XaibenchError(f"run option {name} must be an integer >= 1, got {values[name]!r}")
    if isinstance(values["steps"], int) and values["steps"] < 2:
        raise XaibenchError(f"steps must be >= 2 (a curve needs k = 0 and k = n) or 'all', got {values['steps']}")
    for name in ("n_figure_images", "sanity_images"):
        if not isinstance(values[name], int) or isinstance(values[name], bool) or values[name] < 0:
            raise XaibenchError(f"run option {name} must be an integer >= 0, got {values[name]!r}")
    if not isinstance(values["sanity_data"], bool):
        raise XaibenchError(f"run option sanity_data must be true or false, got {values['sanity_data']!r}")
    if values["target"] not in TARGETS:
        raise XaibenchError(f"unknown target {values['target']!r}; valid: {', '.join(TARGETS)}")
    if not values["seeds"]:
        raise XaibenchError("no seed given")


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def preset_config(name: str | None) -> dict[str, Any]:
    """DEFAULT_RUN with the preset `name` laid over it (DEFAULT_RUN alone for None)."""
    if name is None:
        return DEFAULT_RUN
    if name not in PRESETS:
        raise XaibenchError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return _deep_merge(DEFAULT_RUN, PRESETS[name])


def run_config(file_config: dict[str, Any], flags: dict[str, Any] | None = None,
               overrides: dict[str, Any] | None = None,
               preset: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """DEFAULT_RUN, then the preset, then the --config file (key by key), then flags ([run] options; None = not
    given), then --set.

    --set keys 'run.<option>', 'model.<option>' and 'data.<dataset>.<option>' land in those sections; any other key
    ('steps', 'train.steps') is a training option. Returns (config, training overrides).
    """
    config = _deep_merge(preset_config(preset), file_config)
    config["run"].update({key: value for key, value in (flags or {}).items() if value is not None})
    train_overrides: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        section, _, rest = key.partition(".")
        if section == "run" and rest:
            config["run"][rest] = value
        elif section == "model" and rest:  # options of a wrapped classifier (--model torchvision:NAME)
            config.setdefault("model", {})[rest] = value
        elif section == "data" and "." in rest:
            dataset, _, option = rest.partition(".")
            config.setdefault("data", {}).setdefault(dataset, {})[option] = value
        else:
            train_overrides[rest if section == "train" and rest else key] = value
    return config, train_overrides
