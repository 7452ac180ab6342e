"""The one result type of every metric, functional (`srg(...)`) or registered (`create_metric("srg")(...)`).

Scores are per image [B], curves per image [B, K] at x [K] (fraction removed); each score and curve is also
an attribute (`result.srg`, `result.mif`), and a one-curve result (insertion, deletion) has `auc` and `curve`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True, eq=False)
class MetricResult:
    """What one metric call gives: scores name -> [B], curves name -> [B, K] at x [K], masked inputs evaluated.

    The dicts keep the metric's order (the runner writes rows in it). Attribute access reads a score first,
    then a curve: `srg(...).srg`, `srg(...).mif`, `rsrg(...).rlif`; `auc` / `curve` give the only score /
    curve of a result that has exactly one (insertion, deletion).
    """

    scores: dict[str, torch.Tensor]
    curves: dict[str, torch.Tensor] = field(default_factory=dict)
    x: torch.Tensor | None = None
    n_forward: int = 0  # masked inputs evaluated

    def __getattr__(self, name: str) -> torch.Tensor:
        if name.startswith("__"):  # copy, pickle and friends probe dunders before __dict__ exists
            raise AttributeError(name)
        scores, curves = self.__dict__.get("scores", {}), self.__dict__.get("curves", {})
        if name in scores:
            return scores[name]
        if name in curves:
            return curves[name]
        single = {"auc": scores, "curve": curves}.get(name)
        if single is not None and len(single) == 1:
            return next(iter(single.values()))
        raise AttributeError(f"{type(self).__name__} has no score or curve {name!r}; scores: "
                             f"{', '.join(scores) or '(none)'}; curves: {', '.join(curves) or '(none)'}")
