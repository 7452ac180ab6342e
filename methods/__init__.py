"""Explainer plugins: each file registers methods with @register_method (installed as xaibench.methods).

`create_method(name, model, **options).explain(inputs, targets, generator=g)` -> Explanation; see docs/methods.md.
"""
from xaibench.registry import METHODS, list_methods, register_method

from .base import Explainer, Explanation, PassCounter, create_method, seeded_global_rng
from . import builtin, captum_family  # noqa: E402,F401  (register the built-in methods)
from .captum_family import CaptumExplainer, PatchCaptumExplainer, PixelCaptumExplainer

__all__ = ["METHODS", "CaptumExplainer", "Explainer", "Explanation", "PassCounter", "PatchCaptumExplainer",
           "PixelCaptumExplainer", "create_method", "list_methods", "register_method", "seeded_global_rng"]
