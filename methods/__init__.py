"""Explainer plugins: each file registers methods with @register_method (installed as xaibench.methods).

`create_method(name, model, **options).attribute(inputs, target, generator=g)` -> patch scores [B, n];
`run_explainer(explainer, inputs, target, generator=g)` -> Explanation (scores, time, passes); see docs/methods.md.
`unsuited_reason(name, model)` says in one line why a method does not suit a model (None: it does).
"""
from xaibench.registry import METHODS, list_methods, register_method

# Importing a module registers its methods.
from . import amortized, attention_family, builtin, cam_family, captum_family, lrp_family, rise  # noqa: F401
from .base import (
    Explainer,
    Explanation,
    FittedExplainer,
    PassCounter,
    create_method,
    is_fitted,
    run_explainer,
    seeded_global_rng,
    unsuited_reason,
)
from .captum_family import (
    CAPTUM_TABLE,
    CaptumExplainer,
    CaptumRow,
    LayerCaptumExplainer,
    PatchCaptumExplainer,
    PixelCaptumExplainer,
    register_captum_row,
)

__all__ = ["CAPTUM_TABLE", "METHODS", "CaptumExplainer", "CaptumRow", "Explainer", "Explanation", "FittedExplainer",
           "LayerCaptumExplainer", "PassCounter", "PatchCaptumExplainer", "PixelCaptumExplainer", "create_method",
           "is_fitted", "list_methods", "register_captum_row", "register_method", "run_explainer", "seeded_global_rng",
           "unsuited_reason"]
