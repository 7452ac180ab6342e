"""The unit kinds of `xaibench run` and `xaibench train`, one file each; importing this package registers them.

The import order is the registration order, which is the order the planner asks the kinds for units at each
level (engine/units.py: LEVELS): the network first (train or load), its truth, amortized fits, explanations,
scores, sanity checks; Table 1's evaluations at the end.
"""
from xaibench.engine.kinds import evaluate, explain, fit, load, sanity, score, train, truth  # noqa: F401
from xaibench.engine.kinds.common import explanation_targets, merge_explanations

__all__ = ["explanation_targets", "merge_explanations"]
