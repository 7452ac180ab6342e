"""Explainer plugins: each file registers methods with @register_method (installed as xaibench.methods)."""
