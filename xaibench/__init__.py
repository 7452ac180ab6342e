"""xaibench: benchmark attribution methods on medical images.

data -> models -> training -> methods (explanations) -> metrics (scores) -> tables. From Python:
`xaibench.run(methods=["ofa", "grad"], datasets=["objects"])` runs what `xaibench run` runs and returns its frames;
`xaibench.load_run("xaibench-out/run")` reads a finished run folder back into the same frames.
"""
from xaibench.version import __version__

__all__ = ["__version__", "load_run", "run"]


def run(*args, **kwargs):
    """Run the benchmark as `xaibench run` does; see xaibench.api.run (imported on first use: no torch here)."""
    from xaibench.api import run as _run

    return _run(*args, **kwargs)


def load_run(out):
    """Read a finished run folder into frames; see xaibench.api.load_run."""
    from xaibench.api import load_run as _load_run

    return _load_run(out)
