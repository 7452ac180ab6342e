"""Load a user's plugin files (explainers, metrics, models, datasets) from .py paths or folders.

A plugin file registers what it defines with `@register_method(...)` and friends when it is imported.
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Iterable

from xaibench.errors import XaibenchError
from xaibench.registry import refusing_taken_names


def plugin_files(paths: Iterable[str | Path]) -> list[Path]:
    """The .py files named by `paths`: a file itself, or every .py directly inside a folder (sorted)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.glob("*.py") if p.is_file())
            if not found:
                raise XaibenchError(f"plugin folder {path} holds no .py file")
            files.extend(found)
        elif path.is_file():
            if path.suffix != ".py":
                raise XaibenchError(f"plugin {path} is not a .py file")
            files.append(path)
        else:
            raise XaibenchError(f"plugin {path} not found (give a .py file or a folder of them)")
    return files


def _module_name(path: Path) -> str:
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    stem = "".join(ch if ch.isalnum() else "_" for ch in path.stem)
    return f"xaibench_plugin_{stem}_{digest}"


def load_plugins(paths: Iterable[str | Path]) -> list[str]:
    """Import each plugin file once; return the module names. Any error -> XaibenchError naming the file.

    The built-in entries are loaded first; a plugin that registers a name already taken (by a built-in or an
    earlier plugin) is refused, and a plugin that fails to load leaves the registries as they were.
    """
    files = plugin_files(paths)
    loaded: list[str] = []
    for path in files:
        name = _module_name(path)
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise XaibenchError(f"plugin {path} cannot be imported")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                with refusing_taken_names():
                    spec.loader.exec_module(module)
            except Exception as error:
                del sys.modules[name]
                raise XaibenchError(f"plugin {path} failed to load: {type(error).__name__}: {error}") from error
        loaded.append(name)
    return loaded
