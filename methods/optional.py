"""Methods that need an optional package or a model structure their `families` cannot say.

Such a method raises `not_suited(reason)` when it is built: the engine shows its cells as n/a with the reason (it is a
`NotApplicable`), and the Python API and the command line get one `XaibenchError` line (exit code 2).
"""
from __future__ import annotations

import importlib.util

from xaibench.errors import NotApplicable, XaibenchError

#: the optional-dependency extra that provides each lazily imported package (see pyproject.toml)
EXTRAS = {"zennit": "lrp", "pytorch_grad_cam": "cam"}
#: the distribution (pip) name of each package
DISTRIBUTIONS = {"zennit": "zennit", "pytorch_grad_cam": "grad-cam"}


class NotSuited(NotApplicable, XaibenchError):
    """A method that cannot run here: its optional package is missing, or the model lacks what it reads."""


def not_suited(reason: str) -> NotSuited:
    """The exception a method raises when built where it cannot run (n/a in a run, one line elsewhere)."""
    return NotSuited(reason)


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
