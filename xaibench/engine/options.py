"""The options of `xaibench run` and their defaults (RunOptions), laid over by a preset, a config file, flags and
--set (run_config); checked up front (RunOptions.from_dict)."""
from __future__ import annotations

import copy
import inspect
import logging
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from xaibench.data import resolve_datasets
from xaibench.defaults import ALL_IMAGES, DATASET_TRAIN, PRESETS
from xaibench.errors import XaibenchError
from xaibench.metrics.catalog import resolve_metrics
from xaibench.registry import METHODS, METRICS, MODELS
from xaibench.training import DataSpec, TrainConfig

TARGETS = ("label", "predicted")
WRAPPED_PREFIXES = ("torchvision:", "timm:")  # --model names that are built, not trained by xaibench


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


def _listed(*names: str):
    return field(default_factory=lambda: list(names))


@dataclass
class RunOptions:
    """What `xaibench run` does, and its defaults (the one place they live). The plain command (no options) must
    finish in under 5 minutes on a 2-core CPU, OFA training included: tune the numbers here, nowhere else. A
    --config file's [run] table, then the flags, then --set are laid over these, key by key."""

    methods: list[str] = _listed("ofa", "grad", "attn")
    datasets: list[str] = _listed("objects")  # the model-truth set (data/objects.py); "synthetic": the lesion set
    seeds: list[int] = field(default_factory=lambda: [0])
    size: int = 28  # image side; synthetic draws at any size, MedMNIST+ has 28/64/128/224
    model: str = "ofa"  # the network every method explains and every metric queries (SPEC section 4)
    target: str = "label"  # explained and scored class: "label" (ground truth) or "predicted"
    n_test: int = 64  # the first n_test test images are explained and scored ("all": every one)
    batch_size: int = 64  # images per explain/metric call
    # plausibility only where the dataset has an annotated region; truth only where it re-renders its objects
    metrics: list[str] = _listed("srg", "rsrg", "plausibility", "truth")
    curve_points: int | list[int] | None = 11  # points K per MIF/LIF/R-SRG curve (k = 0..n evenly); "all" = every k
    n_draws: int = 2  # R-SRG draws per curve
    # masked inputs per forward_fn call in a metric: "auto" = 256 on the CPU, on CUDA what half the free memory
    # holds (at most 4096); an execution detail, not part of any cache key
    metric_batch_size: int | str = "auto"
    n_figure_images: int = 6  # test images in the attribution-map figure
    figures: bool = True
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # {"captum.Lime": {"n_samples": 128}}
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # {"rsrg": {"eps": 1e-6}}
    checkpoint: str | None = None  # a classifier's weights file: it is explained and scored as it is, not trained
    sanity_images: int = 16  # images of each method's cascading model-randomization check (0 = none)
    sanity_data: bool = False  # also the data randomization test: the network trained again on permuted labels
    # MetaQuantus' noise resilience and adversary reactivity of every metric (kinds/meta.py): this many draws of
    # the minor and of the disruptive Gaussian noise (std meta_noise) on meta_images images (0 = not measured)
    meta_perturbations: int = 0
    meta_images: int = 16
    meta_noise: list[float] = field(default_factory=lambda: [0.02, 1.0])
    # players of the background in the model's whole game (objects set): tiles of a coarse grid of the patches
    background_regions: int = 2
    # how the curve metrics that take `removal` (srg, rsrg, insertion, deletion, aopc, irof) remove patches:
    # token (the model's mask token) | mean | zero | blur | road; [run.metric_options.<m>] removal wins over it
    removal: str = "token"

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The [run] table of the plain command: every option with its default value."""
        return {f.name: f.default_factory() if f.default_factory is not MISSING else f.default for f in fields(cls)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunOptions":
        """Check and normalise the [run] options (names resolved against the registries; plugins load first)."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise XaibenchError(f"unknown run option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        values = {**cls.defaults(), **values}
        values["methods"] = METHODS.resolve(values["methods"])
        values["datasets"] = resolve_datasets(values["datasets"])
        values["metrics"] = resolve_metrics(values["metrics"])
        if not str(values["model"]).startswith(WRAPPED_PREFIXES):
            values["model"] = MODELS.resolve([values["model"]])[0]
        values["seeds"] = _seeds(values["seeds"])
        if str(values["model"]).startswith(WRAPPED_PREFIXES) and not values["checkpoint"]:
            raise XaibenchError(f"model {values['model']!r} is not trained by xaibench: give its weights with "
                                f"--checkpoint PATH")
        if values["checkpoint"] and not Path(values["checkpoint"]).expanduser().is_file():
            raise XaibenchError(f"checkpoint {values['checkpoint']!r} is not a file")
        if values["curve_points"] == "all":
            values["curve_points"] = None
        if values["n_test"] == "all":
            values["n_test"] = ALL_IMAGES
        _check_values(values)
        return cls(**values)

    def metric_options_for(self, name: str) -> dict[str, Any]:
        """Options of one metric: the curve settings above where the metric takes them, then [run.metric_options]."""
        parameters = inspect.signature(METRICS.get(name)).parameters
        built = {"steps": self.curve_points, "batch_size": self.metric_batch_size, "n_draws": self.n_draws}
        if self.removal != "token":  # the metrics' own default: not passed, so the default run's keys stay as they were
            built["removal"] = self.removal
        options = {key: value for key, value in built.items() if key in parameters}
        return {**options, **self.metric_options.get(name, {})}


def _check_values(values: dict[str, Any]) -> None:
    for name in ("n_test", "batch_size", "n_draws", "metric_batch_size", "size"):
        if name == "metric_batch_size" and values[name] == "auto":
            continue
        if not isinstance(values[name], int) or isinstance(values[name], bool) or values[name] < 1:
            raise XaibenchError(f"run option {name} must be an integer >= 1, got {values[name]!r}")
    if isinstance(values["curve_points"], int) and values["curve_points"] < 2:
        raise XaibenchError(f"curve_points must be >= 2 (a curve needs k = 0 and k = n) or 'all', got "
                            f"{values['curve_points']}")
    noise = values["meta_noise"]
    if not (isinstance(noise, (list, tuple)) and len(noise) == 2 and all(isinstance(v, (int, float)) and v > 0
                                                                         for v in noise)):
        raise XaibenchError(f"run option meta_noise must be [minor, disruptive] noise stds > 0, got {noise!r}")
    if not isinstance(values["meta_images"], int) or values["meta_images"] < 1:
        raise XaibenchError(f"run option meta_images must be an integer >= 1, got {values['meta_images']!r}")
    for name in ("n_figure_images", "sanity_images", "meta_perturbations"):
        if not isinstance(values[name], int) or isinstance(values[name], bool) or values[name] < 0:
            raise XaibenchError(f"run option {name} must be an integer >= 0, got {values[name]!r}")
    if not isinstance(values["sanity_data"], bool):
        raise XaibenchError(f"run option sanity_data must be true or false, got {values['sanity_data']!r}")
    from xaibench.metrics.removal import REMOVALS

    if values["removal"] not in REMOVALS:
        raise XaibenchError(f"run option removal={values['removal']!r}: expected one of {', '.join(REMOVALS)}")
    if values["target"] not in TARGETS:
        raise XaibenchError(f"unknown target {values['target']!r}; valid: {', '.join(TARGETS)}")
    if not values["seeds"]:
        raise XaibenchError("no seed given")
    from xaibench.engine.game import check_regions

    check_regions(values["background_regions"])


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def default_config() -> dict[str, Any]:
    """The plain command's configuration: RunOptions' defaults as [run], empty [train] (the TrainConfig defaults
    and the datasets' own recipes, defaults.DATASET_TRAIN) and [data]."""
    return {"run": RunOptions.defaults(), "train": {}, "data": {}}


def preset_config(name: str | None) -> dict[str, Any]:
    """The defaults with the preset `name` laid over them (the defaults alone for None)."""
    if name is None:
        return default_config()
    if name not in PRESETS:
        raise XaibenchError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return _deep_merge(default_config(), PRESETS[name])


#: [run] tables of per-name options that --set reaches one key at a time: run.metric_options.srg.removal=blur
NESTED_RUN_OPTIONS = ("method_options", "metric_options")

#: [run] keys renamed in 0.5.0; the old name still works, with a warning, until 0.6.0
RENAMED_RUN_KEYS = {"steps": "curve_points"}


def _renamed(run: dict[str, Any], where: str) -> None:
    """Move a deprecated [run] key to its new name (in place), with one warning."""
    for old, new in RENAMED_RUN_KEYS.items():
        if old in run:
            logging.getLogger("xaibench").warning(f"{where}: run option {old!r} is deprecated (it collides with the "
                                                  f"training option 'steps'); use {new!r}")
            run[new] = run.pop(old)


def run_config(file_config: dict[str, Any], flags: dict[str, Any] | None = None,
               overrides: dict[str, Any] | None = None,
               preset: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The defaults, then the preset, then the --config file (key by key), then flags ([run] options; None = not
    given), then --set.

    --set keys 'run.<option>', 'model.<option>' and 'data.<dataset>.<option>' land in those sections; any other key
    ('steps', 'train.steps') is a training option. Returns (config, training overrides).
    """
    file_config = copy.deepcopy(file_config)
    _renamed(file_config.get("run", {}), "config")
    config = _deep_merge(preset_config(preset), file_config)
    config["run"].update({key: value for key, value in (flags or {}).items() if value is not None})
    train_overrides: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        section, _, rest = key.partition(".")
        option, _, inner = rest.partition(".")
        if section == "run" and option in NESTED_RUN_OPTIONS and "." in inner:
            # run.metric_options.<metric>.<key> (a method or metric name may hold dots; its option's key not)
            name, _, leaf = inner.rpartition(".")
            nested = config["run"].setdefault(option, {})
            nested[name] = {**nested.get(name, {}), leaf: value}
        elif section == "run" and rest:
            config["run"][rest] = value
            _renamed(config["run"], "--set")
        elif section == "model" and rest:  # options of a wrapped classifier (--model torchvision:NAME)
            config.setdefault("model", {})[rest] = value
        elif section == "data" and "." in rest:
            dataset, _, option = rest.partition(".")
            config.setdefault("data", {}).setdefault(dataset, {})[option] = value
        else:
            train_overrides[rest if section == "train" and rest else key] = value
    return config, train_overrides
