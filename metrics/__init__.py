"""Metric plugins: pure tensor functions of forward_fn(x, keep) (installed as xaibench.metrics)."""
