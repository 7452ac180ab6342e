"""One registry mechanism (timm's register/create/list) for datasets, models, methods and metrics.

Imports nothing of the project: built-in plugins register themselves when their
package is imported, which a registry does lazily on first lookup.
"""
from __future__ import annotations

import contextlib
import fnmatch
import importlib
import sys
import warnings
from importlib import metadata
from typing import Any, Callable, Iterable


class UnknownNameError(KeyError, ValueError):
    """A name that is not registered; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class NameTakenError(ValueError):
    """A name registered again, to another object, while names are guarded (a plugin file being loaded)."""


_GUARDS: list[bool] = []  # non-empty while `refusing_taken_names` is active


def _owner(obj: Any) -> str:
    """Where a registered object comes from: its plugin file, else its module."""
    module = getattr(obj, "__module__", None) or "?"
    path = getattr(sys.modules.get(module), "__file__", None)
    return path if module.startswith("xaibench_plugin_") and path else module


class Registry:
    """A named collection of constructors.

    `builtin_modules` are imported on first lookup (so that `import xaibench`
    stays light); `entry_point_group` lets installed packages add entries.
    """

    def __init__(self, kind: str, builtin_modules: Iterable[str] = (), entry_point_group: str | None = None):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}
        self._aliases: dict[str, str] = {}  # a former name -> the name it now has
        self._builtin_modules = tuple(builtin_modules)
        self._entry_point_group = entry_point_group
        self._loaded = False

    # -- registration -------------------------------------------------------
    def register(self, name: str, obj: Callable[..., Any] | None = None):
        """Register `obj` under `name`; usable as `@registry.register("name")`."""

        def decorate(target: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries and self._entries[name] is not target:
                if _GUARDS:
                    raise NameTakenError(f"{self.kind} {name!r} is already registered (by "
                                         f"{_owner(self._entries[name])}); give it another name")
                warnings.warn(f"{self.kind} {name!r} registered twice; the later one wins", stacklevel=3)
            self._entries[name] = target
            try:
                target.registered_name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return target

        return decorate(obj) if obj is not None else decorate

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtin_modules:
            importlib.import_module(module)
        if self._entry_point_group:
            for entry_point in metadata.entry_points(group=self._entry_point_group):
                try:
                    entry_point.load()
                except Exception as error:  # a broken third-party plugin must not hide the built-ins
                    warnings.warn(f"plugin {entry_point.name!r} ({entry_point.value}) failed to load: {error}")

    # -- lookup ---------------------------------------------------------------
    def alias(self, old: str, new: str) -> None:
        """Keep accepting a former name: `get` and `resolve` map `old` to `new` with a FutureWarning; `names`
        lists only `new`."""
        self._aliases[old] = new

    def _current(self, name: str) -> str:
        new = self._aliases.get(name)
        if new is None or name in self._entries:
            return name
        warnings.warn(f"{self.kind} {name!r} is now called {new!r}; the old name will go in a later version",
                      FutureWarning, stacklevel=3)
        return new

    def names(self, pattern: str | None = None) -> list[str]:
        self._load()
        names = sorted(self._entries)
        if pattern:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        return names

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries or self._aliases.get(name) in self._entries

    def get(self, name: str) -> Callable[..., Any]:
        self._load()
        name = self._current(name)
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names()) or '(none)'}"
            ) from None

    def create(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def resolve(self, names: str | Iterable[str], groups: dict[str, list[str]] | None = None) -> list[str]:
        """Turn 'a,b' (or a list; glob patterns and group names allowed) into checked names."""
        if isinstance(names, str):
            names = [n for n in names.split(",")]
        out: list[str] = []
        for raw in names:
            name = raw.strip()
            if not name:
                continue
            if groups and name in groups:
                picked = groups[name]
            elif any(ch in name for ch in "*?["):
                picked = self.names(name)
                if not picked:
                    raise UnknownNameError(
                        f"no {self.kind} matches {name!r}; valid names: {', '.join(self.names())}"
                    )
            else:
                self._load()
                name = self._current(name)
                self.get(name)
                picked = [name]
            out.extend(p for p in picked if p not in out)
        if not out:
            raise UnknownNameError(f"no {self.kind} given; valid names: {', '.join(self.names())}")
        return out


DATASETS = Registry("dataset", ["xaibench.data"], "xaibench.datasets")
MODELS = Registry("model", ["xaibench.models"], "xaibench.models")
METHODS = Registry("method", ["xaibench.methods"], "xaibench.methods")
METRICS = Registry("metric", ["xaibench.metrics"], "xaibench.metrics")

REGISTRIES = (DATASETS, MODELS, METHODS, METRICS)


@contextlib.contextmanager
def refusing_taken_names():
    """Within: registering a name that is taken raises NameTakenError, and whatever was registered inside is
    undone if the block raises (a plugin file that fails to load leaves every registry as it was)."""
    for registry in REGISTRIES:
        registry._load()
    before = [dict(registry._entries) for registry in REGISTRIES]
    _GUARDS.append(True)
    try:
        yield
    except BaseException:
        for registry, entries in zip(REGISTRIES, before):
            registry._entries.clear()
            registry._entries.update(entries)
        raise
    finally:
        _GUARDS.pop()


register_dataset = DATASETS.register
register_model = MODELS.register
register_method = METHODS.register
register_metric = METRICS.register


def list_datasets(pattern: str | None = None) -> list[str]:
    return DATASETS.names(pattern)


def list_models(pattern: str | None = None) -> list[str]:
    return MODELS.names(pattern)


def list_methods(pattern: str | None = None) -> list[str]:
    return METHODS.names(pattern)


def list_metrics(pattern: str | None = None) -> list[str]:
    return METRICS.names(pattern)
