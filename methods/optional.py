"""Methods that need an optional package or a model structure their `families` cannot say.

Such a method raises `not_suited(reason)` when it is built: the engine shows its cells as n/a with the reason (it is a
`NotApplicable`), and the Python API and the command line get one `XaibenchError` line (exit code 2).
"""
from __future__ import annotations

import functools
import importlib.util

from xaibench.errors import XaibenchError

#: the optional-dependency extra that provides each lazily imported package (see pyproject.toml)
EXTRAS = {"zennit": "lrp", "pytorch_grad_cam": "cam"}
#: the distribution (pip) name of each package
DISTRIBUTIONS = {"zennit": "zennit", "pytorch_grad_cam": "grad-cam"}


@functools.cache
def _not_suited_class() -> type:
    # Imported at the first refusal, not with the package: xaibench.engine imports xaibench.methods.
    from xaibench.engine.units import NotApplicable

    return type("NotSuited", (NotApplicable, XaibenchError), {
        "__module__": __name__,
        "__doc__": "A method that cannot run here: its optional package is missing, or the model lacks what it reads."})


def not_suited(reason: str) -> Exception:
    """The exception a method raises when built where it cannot run (n/a in a run, one line elsewhere)."""
    return _not_suited_class()(reason)


def install_line(package: str) -> str:
    return f"pip install 'xaibench[{EXTRAS[package]}]'"


def available(package: str) -> bool:
    """Whether `package` can be imported (without importing it)."""
    return importlib.util.find_spec(package) is not None


def require(method: str, package: str) -> None:
    """Raise NotSuited naming the install line where the optional `package` that `method` imports is missing."""
    if not available(package):
        raise not_suited(f"{method} needs the optional package {DISTRIBUTIONS[package]} ({install_line(package)})")


def summary(doc: str, package: str) -> str:
    """`doc`'s first line, marked as not installed where `package` is missing (what `xaibench list` shows)."""
    if available(package):
        return doc
    return f"[not installed: {install_line(package)}] {doc}"
