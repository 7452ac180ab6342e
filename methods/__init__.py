"""Explainer plugins: each file registers methods with @register_method (installed as xaibench.methods).

`create_method(name, model, **options).explain(inputs, targets, generator=g)` -> Explanation; see docs/methods.md.
`unsuited_reason(name, model)` says in one line why a method does not suit a model (None: it does).
"""
from xaibench.registry import METHODS, list_methods, register_method

from .base import (Explainer, Explanation, FittedExplainer, PassCounter, create_method, is_fitted,
                   seeded_global_rng, unsuited_reason)
# Importing a module registers its methods.
from . import (amortized, attention_family, builtin, cam_family, captum_family,  # noqa: E402,F401
               lrp_family, rise)
from .captum_family import (CAPTUM_TABLE, CaptumExplainer, CaptumRow, LayerCaptumExplainer, PatchCaptumExplainer,
                            PixelCaptumExplainer, register_captum_row)

__all__ = ["CAPTUM_TABLE", "METHODS", "CaptumExplainer", "CaptumRow", "Explainer", "Explanation", "FittedExplainer",
           "is_fitted",
           "LayerCaptumExplainer", "PassCounter", "PatchCaptumExplainer", "PixelCaptumExplainer", "create_method",
           "list_methods", "register_captum_row", "register_method", "seeded_global_rng", "unsuited_reason"]
