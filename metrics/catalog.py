"""Which metrics a run scores: `--metrics` names, globs, families (`faithfulness.*`, `localisation.point*`) or `all`,
checked against the registered metrics and their declared `group`.

A family is the `group` a metric class declares (faithfulness, robustness, localisation, complexity, randomisation,
truth). Unknown names, globs or families raise UnknownNameError naming the valid ones.
"""
from __future__ import annotations

import fnmatch
from typing import Iterable

from xaibench.registry import METRICS, UnknownNameError

from .stateful import Metric


def metric_group(name: str) -> str:
    """The family of a registered metric (a plugin that is not a Metric class counts as faithfulness)."""
    cls = METRICS.get(name)
    return getattr(cls, "group", "faithfulness") if isinstance(cls, type) else "faithfulness"


def metric_groups() -> dict[str, list[str]]:
    """family -> its registered metric names, in name order."""
    groups: dict[str, list[str]] = {}
    for name in METRICS.names():
        groups.setdefault(metric_group(name), []).append(name)
    return dict(sorted(groups.items()))


def needs_explainer(name: str) -> bool:
    """Whether the metric re-runs the method (robustness, randomisation): a unit kind of its own scores it."""
    cls = METRICS.get(name)
    return isinstance(cls, type) and issubclass(cls, Metric) and cls.needs_explainer


def resolve_metrics(names: str | Iterable[str]) -> list[str]:
    """'srg,faithfulness.*' (or a list) -> checked metric names in the order given, each once.

    Accepted: a name, a glob over names (`truth*`), `all`, a family (`robustness`, unless a metric has that name:
    `complexity` is the metric, `complexity.*` the family) or `family.glob` (`faithfulness.*`, `localisation.rel*`).
    """
    tokens = [t.strip() for t in (names.split(",") if isinstance(names, str) else names)]
    groups, out = metric_groups(), []
    for token in filter(None, tokens):
        family, _, pattern = token.partition(".")
        if token == "all":
            picked = METRICS.names()
        elif token in groups and token not in METRICS:  # a metric's own name wins: `complexity` is one metric
            picked = groups[token]
        elif pattern and family in groups:
            picked = [n for n in groups[family] if fnmatch.fnmatchcase(n, pattern)]
            if not picked:
                raise UnknownNameError(f"no {family} metric matches {pattern!r}; {family} metrics: "
                                       f"{', '.join(groups[family])}")
        elif pattern:
            raise UnknownNameError(f"unknown metric family {family!r} in {token!r}; families: {', '.join(groups)}")
        else:
            try:
                picked = METRICS.resolve([token])
            except UnknownNameError as error:
                raise UnknownNameError(f"{error}; families: {', '.join(f'{g}.*' for g in groups)}; or all") from None
        out.extend(p for p in picked if p not in out)
    if not out:
        raise UnknownNameError(f"no metric given; valid names: {', '.join(METRICS.names())}; families: "
                               f"{', '.join(f'{g}.*' for g in groups)}; or all")
    return out


def score_metric(score: str) -> type[Metric] | None:
    """The registered Metric class that gives `score` (None for a score no Metric class gives)."""
    for name in METRICS.names():
        cls = METRICS.get(name)
        if isinstance(cls, type) and issubclass(cls, Metric) and score in cls.scores_given():
            return cls
    return None


def nan_reason(score: str) -> str:
    """Why an image's `score` can be NaN, as its metric states it (`nan_reason`), or a pointer to the docs."""
    cls = score_metric(score)
    return getattr(cls, "nan_reason", "") or "the score is undefined there (docs/metrics.md says when)"


def main_scores(metrics: Iterable[str]) -> dict[str, bool]:
    """The main score of each metric (a metric class may name several in `table_scores`) -> higher is better."""
    out: dict[str, bool] = {}
    for name in metrics:
        cls = METRICS.get(name)
        if not (isinstance(cls, type) and issubclass(cls, Metric)):
            continue
        for score in getattr(cls, "table_scores", ()) or (cls.main_score,):
            out[score] = cls.is_higher_better(score)
    return out
