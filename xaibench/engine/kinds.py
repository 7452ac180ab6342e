"""The unit kinds of `xaibench run` and `xaibench train`: a model becomes trained (or loaded), an explanation,
a score, a Table 1 row. Each kind turns its params and its dependencies' results into a payload."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from xaibench.cache import derive_seed
from xaibench.engine.context import Context
from xaibench.engine.units import NotApplicable, Unit, UnitKind, register_kind
from xaibench.faults import event
from xaibench.methods import Explanation, create_method
from xaibench.metrics import create_metric
from xaibench.training.trainer import existing_checkpoint
from xaibench.training import (TrainedModel, checkpoint_path, classification_scores, medmnist_evaluate,
                               predict_proba, train_model)


def _model(deps: dict[str, Any], unit: Unit) -> TrainedModel:
    """The trained (or loaded) model a unit depends on: the payload of its first dependency."""
    return deps[unit.deps[0]]


@register_kind
class TrainKind(UnitKind):
    """Train a model (or load it from the checkpoint cache). The unit's key is the checkpoint key."""

    name = "train"

    def cached(self, unit: Unit, ctx: Context) -> bool:
        p = unit.params
        return existing_checkpoint(checkpoint_path(p["spec"], p["model"], p["config"], p["seed"], ctx.cache_root)) \
            is not None

    def run(self, unit: Unit, ctx: Context, deps: dict[str, Any]) -> tuple[Any, bool, float]:
        start, p = time.perf_counter(), unit.params
        trained = train_model(p["model"], p["spec"], p["config"], p["seed"], ctx.device, ctx.cache_root,
                              ctx.progress)
        trained.model.eval()
        return trained, not trained.trained_now, time.perf_counter() - start

    def detail(self, payload: Any) -> str:
        return f" (checkpoint {payload.path.name})"

    def portable(self, payload: Any) -> Any:
        return TrainedModel(None, payload.record, payload.path)  # the weights stay in the checkpoint

    def computed_by(self, unit: Unit, ctx: Context, payload: Any) -> str | None:
        return payload.record.get("computed_by")


@register_kind
class LoadKind(UnitKind):
    """A user's classifier from its checkpoint file (`--model torchvision:NAME --checkpoint PATH`): no training."""

    name = "load"

    def cached(self, unit: Unit, ctx: Context) -> bool:
        return True  # nothing to compute: the file is the result

    def run(self, unit: Unit, ctx: Context, deps: dict[str, Any]) -> tuple[Any, bool, float]:
        from xaibench.models import build_classifier

        start, p = time.perf_counter(), unit.params
        info = ctx.test_split(p["spec"]).info
        model = build_classifier(p["model"], num_classes=info.n_classes, in_chans=info.in_chans,
                                 img_size=info.size, checkpoint=p["checkpoint"], **p["options"])
        if hasattr(model, "set_fill") and p["options"].get("fill", "mean") == "mean":
            model.set_fill(p["spec"].load("train").channel_mean())
        record = {"key": unit.key, "model_name": p["model"], "checkpoint": str(p["checkpoint"])}
        trained = TrainedModel(model.to(ctx.device).eval(), record, Path(p["checkpoint"]))
        return trained, True, time.perf_counter() - start

    def detail(self, payload: Any) -> str:
        return f" (from {payload.path})"

    def portable(self, payload: Any) -> Any:
        return TrainedModel(None, payload.record, payload.path)

    def computed_by(self, unit: Unit, ctx: Context, payload: Any) -> str | None:
        return None  # nothing is computed: the user's file is loaded


@register_kind
class EvaluateKind(UnitKind):
    """Test AUC and ACC of a trained classifier (a Table 1 row): medmnist's Evaluator, or the in-tree scores."""

    name = "evaluate"

    def compute(self, unit: Unit, ctx: Context, deps: dict[str, Any]) -> dict[str, Any]:
        start, p = time.perf_counter(), unit.params
        trained = _model(deps, unit)
        test = ctx.test_split(p["spec"])
        probabilities = predict_proba(trained.model, test, ctx.device)
        if p["medmnist"]:
            scores = medmnist_evaluate(probabilities, test, p["data_root"])
        else:
            scores = classification_scores(probabilities, test)
        return {"auc": float(scores["auc"]), "acc": float(scores["acc"]), "seconds": time.perf_counter() - start,
                "checkpoint": trained.path.name, "train_seconds": trained.record.get("train_seconds")}


def explanation_targets(model, x: torch.Tensor, labels: torch.Tensor, target: str, batch_size: int) -> torch.Tensor:
    """The class each image is explained for: its label, or the model's prediction."""
    if target == "label":
        return labels
    with torch.no_grad():  # not inference_mode: the targets take part in the explainers' autograd
        return torch.cat([model.forward_fn(x[start:start + batch_size]).argmax(dim=-1)
                          for start in range(0, len(x), batch_size)])


def merge_explanations(parts: list[Explanation]) -> Explanation:
    """One Explanation for all batches: attributions concatenated, time summed, passes per image averaged."""
    counts = [part.attributions.shape[0] for part in parts]
    total = max(sum(counts), 1)
    forward = sum(part.n_forward * count for part, count in zip(parts, counts))
    backward = sum(part.n_backward * count for part, count in zip(parts, counts))
    return Explanation(method=parts[0].method, attributions=torch.cat([p.attributions.float().cpu() for p in parts]),
                       seconds=sum(part.seconds for part in parts), n_forward=forward / total,
                       n_backward=backward / total)


def explanation_payload(explanation: Explanation, targets: torch.Tensor) -> dict[str, Any]:
    """What an explain unit stores: the Explanation's fields (no pixel map) and the explained classes."""
    return {"method": explanation.method, "attributions": explanation.attributions, "seconds": explanation.seconds,
            "n_forward": float(explanation.n_forward), "n_backward": float(explanation.n_backward),
            "targets": targets.cpu()}


def payload_explanation(payload: dict[str, Any]) -> Explanation:
    """The Explanation an explain unit stored."""
    return Explanation(method=payload["method"], attributions=payload["attributions"], seconds=payload["seconds"],
                       n_forward=payload["n_forward"], n_backward=payload["n_backward"])


def _unsuited(method: str, model, options: dict[str, Any]) -> str | None:
    """Why `method` does not suit `model`'s family (None: it does), as the method declares it."""
    from xaibench.methods import unsuited_reason

    return unsuited_reason(method, model, options)


def _suited_model(deps: dict[str, Any], unit: Unit):
    """The unit's model, or NotApplicable when its method does not suit the model's family."""
    model = _model(deps, unit).model
    reason = _unsuited(unit.params["method"], model, unit.params["options"])
    if reason:
        raise NotApplicable(reason)
    return model


@register_kind
class ExplainKind(UnitKind):
    """Explain the first n_test test images of a dataset with one method, in batches, with a seeded generator."""

    name = "explain"

    def load(self, unit: Unit, ctx: Context) -> Any:
        payload = super().load(unit, ctx)
        return payload if payload is not None and "method" in payload else None

    def compute(self, unit: Unit, ctx: Context, deps: dict[str, Any]) -> dict[str, Any]:
        p = unit.params
        model = _suited_model(deps, unit)
        batch = ctx.test_batch(p["spec"], p["n_test"])
        targets = explanation_targets(model, batch.x, batch.labels, p["target"], p["batch_size"])
        generator = torch.Generator(device=ctx.device).manual_seed(
            derive_seed(p["seed"], p["dataset"], p["method"], "explain"))
        explainer = create_method(p["method"], model, **p["options"])
        if len(unit.deps) > 1:  # an amortized explainer: its fitted state first
            explainer.load_fitted(deps[unit.deps[1]]["state"])
        parts = []
        for start in ctx.progress_range(len(batch.x), p["batch_size"], unit.label):
            chunk = slice(start, start + p["batch_size"])
            event("explain")
            parts.append(explainer.explain(batch.x[chunk], targets[chunk], generator=generator))
        return explanation_payload(merge_explanations(parts), targets)


@register_kind
class FitKind(UnitKind):
    """Train an amortized explainer (a FittedExplainer) on the model and the training split; its state is cached."""

    name = "fit"

    def compute(self, unit: Unit, ctx: Context, deps: dict[str, Any]) -> dict[str, Any]:
        start, p = time.perf_counter(), unit.params
        model = _suited_model(deps, unit)
        explainer = create_method(p["method"], model, **p["options"])
        generator = torch.Generator(device=ctx.device).manual_seed(
            derive_seed(p["seed"], p["dataset"], p["method"], "fit"))
        state = explainer.fit(ctx.split(p["spec"], "train"), generator, progress=ctx.progress)
        return {"state": {name: tensor.detach().cpu() for name, tensor in state.items()},
                "seconds": time.perf_counter() - start}


@register_kind
class ScoreKind(UnitKind):
    """Score one method's explanations with one metric; the metric sees forward_fn and tensors only."""

    name = "score"

    def compute(self, unit: Unit, ctx: Context, deps: dict[str, Any]) -> dict[str, Any]:
        p, start_time = unit.params, time.perf_counter()
        model = _model(deps, unit).model
        explained = deps[unit.deps[1]]
        batch = ctx.test_batch(p["spec"], p["n_test"])
        truth = batch.dataset.patch_masks(model.patch_size, batch.indices) if p["needs_truth"] else None
        if p.get("needs_object_truth"):
            from xaibench.metrics import ObjectTruth

            truth = ObjectTruth(deps[unit.deps[2]]["patches"], deps[unit.deps[2]]["shapley"])
        forward_fn, forward_batch = ctx.forward(model, batch.x)
        options = dict(p["options"])
        if options.get("batch_size") == "auto":
            options["batch_size"] = forward_batch
        metric = create_metric(p["metric"], **options)
        generator = torch.Generator(device=ctx.device).manual_seed(
            derive_seed(p["seed"], p["dataset"], p["method"], p["metric"]))
        scores: dict[str, list[torch.Tensor]] = {}
        curves: dict[str, list[torch.Tensor]] = {}
        x_axis, n_forward = None, 0
        for start in ctx.progress_range(len(batch.x), p["batch_size"], unit.label):
            chunk = slice(start, start + p["batch_size"])
            event("score")
            output = metric.evaluate(forward_fn, batch.x[chunk],
                                     explained["attributions"][chunk].to(ctx.device),
                                     explained["targets"][chunk].to(ctx.device),
                                     truth[chunk].to(ctx.device) if truth is not None else None, generator)
            for name, values in output.scores.items():
                scores.setdefault(name, []).append(values.detach().float().cpu())
            for name, values in output.curves.items():
                curves.setdefault(name, []).append(values.detach().float().cpu())
            x_axis = output.x.detach().float().cpu() if output.x is not None else x_axis
            n_forward += int(output.n_forward)
        return {"scores": {name: torch.cat(values) for name, values in scores.items()},
                "curves": {name: torch.cat(values) for name, values in curves.items()},
                "x": x_axis, "n_forward": n_forward, "seconds": time.perf_counter() - start_time}


@register_kind
class TruthKind(UnitKind):
    """The model's exact object Shapley values on a dataset that re-renders its objects, the reference ordering
    (stored as an explanation of the method "reference", so the metrics score it like any method) and the gates."""

    name = "truth"

    def compute(self, unit: Unit, ctx: Context, deps: dict[str, Any]) -> dict[str, Any]:
        from xaibench.engine.truth import gate_values, object_truth

        start, p = time.perf_counter(), unit.params
        model = _model(deps, unit).model
        test = ctx.test_split(p["spec"])
        grid = getattr(test, "patch", None)
        if grid != model.patch_size:
            raise NotApplicable(f"the model's patches ({model.patch_size} px) are not the dataset's object grid "
                                f"({grid} px): set [data.{p['dataset']}] patch to match")
        batch = ctx.test_batch(p["spec"], p["n_test"])
        targets = explanation_targets(model, batch.x, batch.labels, p["target"], p["batch_size"])
        truth = object_truth(model, test, batch.indices, targets, ctx.device)
        accuracy = classification_scores(predict_proba(model, test, ctx.device), test)["acc"]
        seconds = time.perf_counter() - start
        n_subsets = truth["values"].shape[1]
        return {"method": p["method"], "attributions": truth["reference"], "targets": targets.cpu(),
                "seconds": seconds, "n_forward": float(n_subsets), "n_backward": 0.0,
                **{name: truth[name] for name in ("values", "shapley", "patches", "kinds", "masked_without",
                                                  "background_masked")},
                "gates": gate_values(truth, float(accuracy))}


@register_kind
class SanityKind(UnitKind):
    """Cascading model-parameter randomization of one method (Adebayo et al. 2018): Spearman correlation of the
    method's maps on the model and on copies randomized from the top stage down (metrics/sanity.py)."""

    name = "sanity"

    def compute(self, unit: Unit, ctx: Context, deps: dict[str, Any]) -> dict[str, Any]:
        from xaibench.metrics.sanity import cascading_randomization

        start, p = time.perf_counter(), unit.params
        model = _suited_model(deps, unit)
        batch = ctx.test_batch(p["spec"], p["n_images"])
        targets = explanation_targets(model, batch.x, batch.labels, p["target"], len(batch.x))
        state = deps[unit.deps[1]]["state"] if p.get("fitted") else None

        def make_explainer(network):
            explainer = create_method(p["method"], network, **p["options"])
            if state is not None:  # an amortized explainer keeps the state fitted on the original model
                explainer.load_fitted(state)
            return explainer

        seed = derive_seed(p["seed"], p["dataset"], p["method"], "sanity")

        def generator():
            return torch.Generator(device=ctx.device).manual_seed(seed)

        if p.get("test") == "data":  # the same method on the network trained on permuted labels
            from xaibench.metrics.sanity import map_correlations

            original = make_explainer(model).explain(batch.x, targets, generator=generator()).attributions
            permuted = deps[unit.deps[-1]].model
            maps = make_explainer(permuted).explain(batch.x, targets, generator=generator()).attributions
            rho, rho_abs = map_correlations(original, maps)
            result = {"stages": ["data randomization"], "spearman": rho[None], "spearman_abs": rho_abs[None]}
        else:
            result = cascading_randomization(
                model, make_explainer, batch.x, targets, generator,
                weight_generator=torch.Generator(device=ctx.device).manual_seed(derive_seed(p["seed"], "sanity-weights")))
        return {"stages": list(result["stages"]), "spearman": result["spearman"].float().cpu(),
                "spearman_abs": result["spearman_abs"].float().cpu(), "seconds": time.perf_counter() - start}
