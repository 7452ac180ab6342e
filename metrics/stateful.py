"""The registered metrics: torchmetrics-style classes that wrap the functional twins and keep per-image scores.

Every metric has one call, `metric(forward_fn, inputs, attributions, targets, ground_truth=None, generator=None)`,
returning a MetricResult (per-image scores and curves, the type the functions return) and accumulating the scores
on the device. Options and their defaults are the functional twin's (tested). `higher_is_better` and `directions`
say which way each score is better; `score_higher_is_better(score)` asks every registered metric (the tables bold
by it: a deletion column bolds its lowest cell).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch

from xaibench.registry import METRICS, register_metric

from .curves import ForwardFn, Steps
from .pixel_flipping import deletion, insertion, srg
from .plausibility import plausibility_auroc
from .removal import check_removal
from .result import MetricResult
from .rsrg import rsrg

# explain_fn(inputs [b, C, H, W], targets long [b], randomized=False) -> attributions [b, n]: the method under test
# run again (on perturbed inputs, other targets); randomized=True explains with the fully randomized copy of the
# network (every stage re-initialised, as at the end of the MPRT cascade). The runner counts its cost.
ExplainFn = Callable[..., torch.Tensor]


class Metric:
    """Base class: `update` (or calling the metric) scores a batch and keeps its per-image scores;
    `compute` gives the mean of each score over all images seen (NaN-skipping), `per_image` the scores
    themselves, `reset` forgets them.
    """

    higher_is_better: ClassVar[bool] = True  # of the main score
    # the family the metric belongs to: faithfulness, robustness, localisation, complexity, randomisation, truth;
    # `--metrics faithfulness.*` picks a family
    group: ClassVar[str] = "faithfulness"
    needs_ground_truth: ClassVar[bool] = False
    # re-runs the explainer (robustness, randomisation): the call then needs explain_fn (see ExplainFn)
    needs_explainer: ClassVar[bool] = False
    is_differentiable: ClassVar[bool] = False
    main_score: ClassVar[str] = ""
    # every score the metric can give; empty = only main_score
    score_names: ClassVar[tuple[str, ...]] = ()
    # score name -> higher is better; scores missing here follow `higher_is_better`
    directions: ClassVar[dict[str, bool]] = {}

    def __init__(self) -> None:
        self._scores: dict[str, list[torch.Tensor]] = {}

    def evaluate(self, forward_fn: ForwardFn | None, inputs: torch.Tensor, attributions: torch.Tensor,
                 targets: torch.Tensor, ground_truth: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> MetricResult:
        """Score one batch without touching the state. A metric with needs_explainer takes explain_fn as well:
        evaluate(..., ground_truth, generator, explain_fn)."""
        raise NotImplementedError

    def update(self, forward_fn: ForwardFn | None, inputs: torch.Tensor, attributions: torch.Tensor,
               targets: torch.Tensor, ground_truth: torch.Tensor | None = None,
               generator: torch.Generator | None = None, explain_fn: "ExplainFn | None" = None) -> MetricResult:
        if self.needs_ground_truth and ground_truth is None:
            raise ValueError(f"metric {self.main_score!r} needs a ground-truth patch mask [B, n]")
        if self.needs_explainer:
            if explain_fn is None:
                raise ValueError(f"metric {self.main_score!r} re-runs the explainer: give explain_fn(inputs, "
                                 f"targets, randomized=False) -> attributions [b, n]")
            output = self.evaluate(forward_fn, inputs, attributions, targets, ground_truth, generator, explain_fn)
        else:
            output = self.evaluate(forward_fn, inputs, attributions, targets, ground_truth, generator)
        for name, values in output.scores.items():
            self._scores.setdefault(name, []).append(values.detach())
        return output

    __call__ = update

    def per_image(self) -> dict[str, torch.Tensor]:
        """Every score of every image seen so far, name -> [N]."""
        return {name: torch.cat(values) for name, values in self._scores.items()}

    def compute(self) -> dict[str, torch.Tensor]:
        """Mean of each score over the images seen (images with a NaN score are left out)."""
        return {name: values.nanmean() for name, values in self.per_image().items()}

    def reset(self) -> None:
        self._scores = {}

    @classmethod
    def scores_given(cls) -> tuple[str, ...]:
        """The names of the scores this metric gives."""
        return cls.score_names or ((cls.main_score,) if cls.main_score else ())

    @classmethod
    def is_higher_better(cls, score: str) -> bool:
        """Whether a larger value of `score` is better (the table's best cell is then its largest)."""
        return cls.directions.get(score, cls.higher_is_better)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({options})"


class _CurveMetric(Metric):
    """A metric of perturbation curves: steps, batch_size, autocast and removal (metrics/removal.py: "token", the
    model's mask token, by default; "mean" | "zero" | "blur" | "road" fill the removed pixels instead)."""

    def __init__(self, steps: Steps = None, batch_size: int = 256, autocast: bool | None = None,
                 removal: str = "token") -> None:
        super().__init__()
        self.steps = steps
        self.batch_size = batch_size
        self.autocast = autocast
        self.removal = check_removal(removal)

    def _options(self) -> dict[str, Any]:
        return dict(steps=self.steps, batch_size=self.batch_size, autocast=self.autocast, removal=self.removal)


@register_metric("srg")
class SRG(_CurveMetric):
    """SRG = AUC(LIF) - AUC(MIF) (Blücher et al. 2024); also mrg, lrg, insertion, deletion."""

    main_score = "srg"
    score_names = ("srg", "mrg", "lrg", "insertion", "deletion")
    directions = {"deletion": False}

    def __init__(self, steps: Steps = None, batch_size: int = 256, random_baseline: bool = True,
                 autocast: bool | None = None, removal: str = "token") -> None:
        super().__init__(steps, batch_size, autocast, removal)
        self.random_baseline = random_baseline

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        return srg(forward_fn, inputs, attributions, targets, generator=generator,
                   random_baseline=self.random_baseline, **self._options())


@register_metric("rsrg")
class RSRG(_CurveMetric):
    """R-SRG = AUC(R-LIF) - AUC(R-MIF), kept sets drawn ∝ the attribution (Salvage 2025)."""

    main_score = "rsrg"

    def __init__(self, n_draws: int = 4, steps: Steps = None, batch_size: int = 256, eps: float = 1e-6,
                 autocast: bool | None = None, removal: str = "token") -> None:
        super().__init__(steps, batch_size, autocast, removal)
        self.n_draws = n_draws
        self.eps = eps

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        return rsrg(forward_fn, inputs, attributions, targets, n_draws=self.n_draws, eps=self.eps,
                    generator=generator, **self._options())


@register_metric("insertion")
class Insertion(_CurveMetric):
    """Insertion AUC: target probability as the most important patches are kept first."""

    main_score = "insertion"

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        return insertion(forward_fn, inputs, attributions, targets, generator=generator, **self._options())


@register_metric("deletion")
class Deletion(_CurveMetric):
    """Deletion AUC: target probability as the most important patches are removed first (lower is better)."""

    main_score = "deletion"
    higher_is_better = False

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        return deletion(forward_fn, inputs, attributions, targets, generator=generator, **self._options())


@register_metric("plausibility")
class Plausibility(Metric):
    """Plausibility: AUROC of the attribution against the annotated patch mask, i.e. agreement with the data's
    annotation, not faithfulness to the model (needs ground truth; NaN for a one-class mask)."""

    main_score = "plausibility"
    group = "localisation"
    needs_ground_truth = True

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        if ground_truth is None:
            raise ValueError(f"metric {self.main_score!r} needs a ground-truth patch mask [B, n]")
        return MetricResult({"plausibility": plausibility_auroc(attributions, ground_truth)})


def _metric_classes() -> dict[str, type[Metric]]:
    """The registered metrics that are Metric classes, name -> class."""
    classes = {name: METRICS.get(name) for name in METRICS.names()}
    return {name: cls for name, cls in classes.items() if isinstance(cls, type) and issubclass(cls, Metric)}


def score_higher_is_better(score: str) -> bool:
    """Whether a larger `score` is better, as declared by the registered metric(s) that give it.

    Raises ValueError for a score no registered metric gives, or one two metrics declare both ways.
    """
    classes = _metric_classes()
    declared = {name: cls.is_higher_better(score) for name, cls in classes.items() if score in cls.scores_given()}
    if not declared:
        known = sorted({name for cls in classes.values() for name in cls.scores_given()})
        raise ValueError(f"no registered metric gives the score {score!r}; scores: {', '.join(known)}")
    if len(set(declared.values())) > 1:
        raise ValueError(f"metrics disagree on whether a higher {score!r} is better: {declared}")
    return next(iter(declared.values()))
