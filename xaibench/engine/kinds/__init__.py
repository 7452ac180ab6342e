"""The unit kinds of `xaibench run` and `xaibench train`, one file each; importing this package registers them.

At each level (engine/units.py: LEVELS) the planner asks them by their `planning_order`: the network first (train
or load), Table 1's evaluations, the truth, amortized fits, explanations, scores, sanity checks.
"""
from xaibench.engine.kinds import evaluate, explain, fit, load, meta, reexplain, sanity, score, train, truth  # noqa: F401,E501
from xaibench.engine.kinds.common import explanation_targets, merge_explanations

__all__ = ["explanation_targets", "merge_explanations"]
