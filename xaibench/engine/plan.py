"""plan(options) -> [Unit]: every unit of a run, with its key, before any work (pure: nothing trained or written).

A unit's key hashes its own inputs and the keys of the units it depends on; a train unit's key is the
checkpoint key. The order of the list is the order a serial execution runs them in.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from xaibench.cache import code_fingerprint, unit_key
from xaibench.data import data_root, is_embedded
from xaibench.engine.context import Context
from xaibench.engine.options import RunOptions, data_spec, train_config_for
from xaibench.engine.units import UNIT_KINDS, Unit
from xaibench.errors import XaibenchError
from xaibench.io import file_digest
from xaibench.methods import is_fitted
from xaibench.metrics import create_metric
from xaibench.registry import METHODS, METRICS
from xaibench.training import DataSpec, checkpoint_key

BASELINE_MODELS = ["resnet18", "resnet50", "vit", "segm", "ofa"]
REFERENCE = "reference"  # the method name of the ordering by the model's exact object Shapley values


class Plan(list):
    """The units of a run in execution order; a unit asked for twice (same key) is kept once."""

    def add(self, unit: Unit) -> Unit:
        index = self.__dict__.setdefault("_index", {})
        if (unit.kind, unit.key) not in index:
            index[(unit.kind, unit.key)] = unit
            self.append(unit)
        return index[(unit.kind, unit.key)]


def train_unit(model: str, spec: DataSpec, config, seed: int) -> Unit:
    return Unit("train", f"train {spec.name}/seed{seed}/{model}", checkpoint_key(spec, model, config, seed),
                params={"model": model, "spec": spec, "config": config, "seed": seed})


def load_unit(model: str, checkpoint: str, options: dict[str, Any], spec: DataSpec, seed: int) -> Unit:
    key = unit_key("load", {"model": model, "weights": file_digest(checkpoint), "options": options,
                            "data": spec.key()})
    return Unit("load", f"load {spec.name}/seed{seed}/{model}", key,
                params={"model": model, "checkpoint": checkpoint, "options": options, "spec": spec, "seed": seed})


def evaluate_unit(trained: Unit, spec: DataSpec, model: str, seed: int, root: str | None,
                  device: torch.device) -> Unit:
    """Test AUC/ACC of a trained model: a Table 1 row."""
    medmnist = not is_embedded(spec.name)
    key = unit_key("evaluate", {"model": trained.key, "data": spec.key(), "medmnist": medmnist,
                                "device": device.type})
    return Unit("evaluate", f"evaluate {spec.name}/seed{seed}/{model}", key, (trained.key,),
                params={"spec": spec, "model": model, "seed": seed, "medmnist": medmnist,
                        "data_root": str(data_root(root)) if medmnist else None})


def plan_train(models: list[str], datasets: list[str], seeds: list[int], *, size: int, root: str | None,
               config: dict[str, Any], overrides: dict[str, Any], device: torch.device,
               plan: Plan | None = None) -> Plan:
    """Table 1: per dataset, model and seed, a train unit and an evaluate unit."""
    plan = Plan() if plan is None else plan
    for dataset in datasets:
        spec = data_spec(dataset, size, root, config)
        for model in models:
            train_config = train_config_for(model, config, overrides, dataset)
            for seed in seeds:
                trained = plan.add(train_unit(model, spec, train_config, seed))
                plan.add(evaluate_unit(trained, spec, model, seed, root, device))
    return plan


@dataclass
class RunSetup:
    """What planning a run checks and derives once: per-metric options, code fingerprints, the test splits."""

    metric_options: dict[str, dict[str, Any]]
    needs_truth: dict[str, bool]
    method_code: dict[str, str]
    metric_code: dict[str, str]
    tests: dict[str, Any]
    needs_object_truth: dict[str, bool] = field(default_factory=dict)

    def has_object_truth(self, dataset: str) -> bool:
        """Whether the dataset re-renders its objects, so the model's exact object Shapley values exist."""
        return bool(getattr(self.tests[dataset], "has_object_truth", False))

    def metrics_for(self, options: RunOptions, dataset: str) -> list[str]:
        has_truth, has_objects = self.tests[dataset].has_ground_truth, self.has_object_truth(dataset)
        return [m for m in options.metrics if (has_truth or not self.needs_truth[m])
                and (has_objects or not self.needs_object_truth.get(m, False))]


def run_setup(options: RunOptions, specs: dict[str, DataSpec]) -> RunSetup:
    """Everything checkable before any work: the data files open, every metric accepts its options."""
    tests = {dataset: spec.load("test") for dataset, spec in specs.items()}
    metric_options = {}
    for name in options.metrics:
        metric_options[name] = options.metric_options_for(name)
        try:
            create_metric(name, **{**metric_options[name], **_concrete_batch(metric_options[name])})
        except TypeError as error:
            raise XaibenchError(f"metric {name!r}: bad options {metric_options[name]}: {error}") from None
    return RunSetup(metric_options,
                    {name: bool(getattr(METRICS.get(name), "needs_ground_truth", False)) for name in options.metrics},
                    {m: code_fingerprint(METHODS.get(m)) for m in options.methods},
                    {m: code_fingerprint(METRICS.get(m)) for m in options.metrics}, tests,
                    {name: bool(getattr(METRICS.get(name), "needs_object_truth", False)) for name in options.metrics})


def _concrete_batch(options: dict[str, Any]) -> dict[str, Any]:
    """A stand-in for batch_size 'auto' (resolved per model and device when the unit runs)."""
    return {"batch_size": 256} if options.get("batch_size") == "auto" else {}


def key_options(options: dict[str, Any]) -> dict[str, Any]:
    """A metric's options as its score key sees them: the forward batch size only sets how many masked inputs
    go through one call (it varies by device and free memory), so it stays out."""
    return {name: value for name, value in options.items() if name != "batch_size"}


def model_unit(options: RunOptions, spec: DataSpec, config: dict[str, Any], overrides: dict[str, Any],
               seed: int) -> Unit:
    """The network every method explains: trained by xaibench, or a user's classifier loaded from --checkpoint."""
    if options.checkpoint:
        unit = load_unit(options.model, options.checkpoint, dict(config.get("model", {})), spec, seed)
    else:
        unit = train_unit(options.model, spec, train_config_for(options.model, config, overrides, spec.name), seed)
    unit.params["main"] = True  # the network of Table 2 (its checkpoint goes into the manifest)
    return unit


def permuted_unit(options: RunOptions, spec: DataSpec, config: dict[str, Any], overrides: dict[str, Any],
                  seed: int) -> Unit:
    """The evaluated network trained the same way on permuted training labels (data randomization test)."""
    if options.checkpoint:
        raise XaibenchError("sanity_data needs a network xaibench trains (with --checkpoint there is no recipe to "
                            "train it again on permuted labels); set run.sanity_data = false")
    return train_unit(options.model, spec.permuted(seed), train_config_for(options.model, config, overrides, spec.name),
                      seed)


def fit_unit(setup: RunSetup, model: Unit, spec: DataSpec, seed: int, method: str, method_options: dict[str, Any],
             device: torch.device) -> Unit:
    """An amortized explainer (FittedExplainer) trained on the model and the training split."""
    key = unit_key("fit", {"model": model.key, "data": spec.key(), "method": method, "options": method_options,
                           "code": setup.method_code[method], "seed": seed, "device": device.type})
    return Unit("fit", f"fit {spec.name}/seed{seed}/{method}", key, (model.key,),
                params={"dataset": spec.name, "spec": spec, "seed": seed, "method": method,
                        "options": method_options})


def explain_unit(options: RunOptions, setup: RunSetup, model: Unit, spec: DataSpec, seed: int, method: str,
                 device: torch.device, fitted: Unit | None = None) -> Unit:
    n_test = min(options.n_test, len(setup.tests[spec.name]))
    method_options = options.method_options.get(method, {})
    inputs = {"model": model.key, "data": spec.key(), "n_test": n_test, "target": options.target, "method": method,
              "options": method_options, "code": setup.method_code[method], "seed": seed,
              "batch_size": options.batch_size, "device": device.type}
    if fitted is not None:
        inputs["fit"] = fitted.key
    key = unit_key("explain", inputs)
    deps = (model.key,) if fitted is None else (model.key, fitted.key)
    return Unit("explain", f"explain {spec.name}/seed{seed}/{method}", key, deps,
                params={"dataset": spec.name, "spec": spec, "seed": seed, "method": method,
                        "options": method_options, "n_test": n_test, "target": options.target,
                        "batch_size": options.batch_size})


def score_unit(options: RunOptions, setup: RunSetup, model: Unit, explained: Unit, metric: str,
               device: torch.device, truth: Unit | None = None) -> Unit:
    """A metric on one explanation (or on the reference ordering of a truth unit); a metric that reads the
    model's object truth (`truth`) depends on the truth unit as well."""
    p = explained.params
    inputs = {"explanation": explained.key, "model": model.key, "metric": metric,
              "options": key_options(setup.metric_options[metric]), "code": setup.metric_code[metric],
              "seed": p["seed"], "batch_size": options.batch_size, "device": device.type}
    needs_objects = setup.needs_object_truth.get(metric, False)
    if needs_objects:
        inputs["truth"] = truth.key
    deps = (model.key, explained.key, truth.key) if needs_objects else (model.key, explained.key)
    return Unit("score", f"score {p['dataset']}/seed{p['seed']}/{p['method']}/{metric}", unit_key("score", inputs),
                deps, params={"dataset": p["dataset"], "spec": p["spec"], "seed": p["seed"], "method": p["method"],
                              "metric": metric, "options": setup.metric_options[metric], "n_test": p["n_test"],
                              "needs_truth": setup.needs_truth[metric], "needs_object_truth": needs_objects,
                              "batch_size": options.batch_size})


def truth_unit(options: RunOptions, setup: RunSetup, model: Unit, spec: DataSpec, seed: int,
               device: torch.device) -> Unit:
    """The model's exact object Shapley values on the first n_test test images, the reference ordering they
    give (scored as the method "reference") and the gates (engine/truth.py)."""
    from xaibench.engine import truth

    n_test = min(options.n_test, len(setup.tests[spec.name]))
    key = unit_key("truth", {"model": model.key, "data": spec.key(), "n_test": n_test, "target": options.target,
                             "code": code_fingerprint(truth.object_truth), "seed": seed,
                             "batch_size": options.batch_size, "device": device.type})
    return Unit("truth", f"truth {spec.name}/seed{seed}", key, (model.key,),
                params={"dataset": spec.name, "spec": spec, "seed": seed, "method": REFERENCE, "n_test": n_test,
                        "target": options.target, "batch_size": options.batch_size})


def sanity_unit(options: RunOptions, setup: RunSetup, model: Unit, explained: Unit, device: torch.device,
                fitted: Unit | None = None, permuted: Unit | None = None) -> Unit:
    """Adebayo et al. (2018)'s checks of one method on sanity_images images: the cascading model-parameter
    randomization, or with `permuted` (a model trained on permuted labels) the data randomization test."""
    p = explained.params
    test = "data" if permuted is not None else "model"
    n_images = min(options.sanity_images, p["n_test"])
    key = unit_key("sanity", {"model": model.key, "data": p["spec"].key(), "method": p["method"],
                              "options": p["options"], "code": setup.method_code[p["method"]], "n": n_images,
                              "target": options.target, "seed": p["seed"], "device": device.type,
                              **({"fit": fitted.key} if fitted is not None else {}),
                              **({"permuted": permuted.key} if permuted is not None else {})})
    deps = (model.key,) + ((fitted.key,) if fitted is not None else ()) + \
        ((permuted.key,) if permuted is not None else ())
    return Unit("sanity", f"sanity {p['dataset']}/seed{p['seed']}/{p['method']}/{test}", key, deps,
                params={"dataset": p["dataset"], "spec": p["spec"], "seed": p["seed"], "method": p["method"],
                        "options": p["options"], "n_images": n_images, "target": options.target, "test": test,
                        "fitted": fitted is not None})


def plan_run(options: RunOptions, *, config: dict[str, Any], overrides: dict[str, Any], root: str | None,
             device: torch.device, train_baselines: bool = False) -> tuple[Plan, RunSetup]:
    """`xaibench run`: per dataset and seed the evaluated network, then per method an explanation and per
    metric a score; with train_baselines, Table 1's trainings and evaluations after them."""
    specs = {dataset: data_spec(dataset, options.size, root, config) for dataset in options.datasets}
    setup = run_setup(options, specs)
    plan = Plan()
    for dataset, spec in specs.items():
        for seed in options.seeds:
            model = plan.add(model_unit(options, spec, config, overrides, seed))
            truth = plan.add(truth_unit(options, setup, model, spec, seed, device)) \
                if setup.has_object_truth(dataset) else None
            permuted = plan.add(permuted_unit(options, spec, config, overrides, seed)) \
                if options.sanity_data and options.sanity_images > 0 else None
            for method in options.methods:
                fitted = plan.add(fit_unit(setup, model, spec, seed, method, options.method_options.get(method, {}),
                                           device)) if is_fitted(method) else None
                explained = plan.add(explain_unit(options, setup, model, spec, seed, method, device, fitted))
                for metric in setup.metrics_for(options, dataset):
                    plan.add(score_unit(options, setup, model, explained, metric, device, truth))
                if options.sanity_images > 0:
                    plan.add(sanity_unit(options, setup, model, explained, device, fitted))
                if permuted is not None:
                    plan.add(sanity_unit(options, setup, model, explained, device, fitted, permuted))
            if truth is not None:  # the reference ordering, scored like a method (its own truth score is moot)
                for metric in setup.metrics_for(options, dataset):
                    if not setup.needs_object_truth.get(metric, False):
                        plan.add(score_unit(options, setup, model, truth, metric, device))
    if train_baselines:
        plan_train(BASELINE_MODELS, options.datasets, options.seeds, size=options.size, root=root, config=config,
                   overrides=overrides, device=device, plan=plan)
    return plan, setup


def cached_units(plan: list[Unit], ctx: Context) -> set[str]:
    """Keys of the units whose results are already on disk."""
    return {unit.key for unit in plan if UNIT_KINDS[unit.kind].cached(unit, ctx)}
