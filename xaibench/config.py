"""Reading run configurations: a TOML or JSON file plus `--set key=value` overrides."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: tomli is tomllib's source, declared for this version in pyproject.toml
    import tomli as tomllib

from xaibench.errors import XaibenchError

# The top-level tables a config may hold: [run], [train] (and [train.<model>]), [data.<name>], [model].
SECTIONS = ("data", "model", "run", "train")


def read_config(path: str | Path | None) -> dict[str, Any]:
    """{} for None; a TOML (.toml) or JSON file otherwise. Unreadable files raise XaibenchError."""
    if path is None:
        return {}
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise XaibenchError(f"cannot read config {path}: {error.strerror or error}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise XaibenchError(f"config {path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {error}") from None
    if not isinstance(data, dict):
        raise XaibenchError(f"config {path} must hold a table/object at the top")
    check_sections(data, str(path))
    return data


def check_sections(config: dict[str, Any], where: str) -> None:
    """Every top-level key is a known section holding a table, and [data] holds one table per dataset."""
    for section, value in config.items():
        if section not in SECTIONS:
            raise XaibenchError(f"config {where}: unknown section {section!r}; valid: {', '.join(SECTIONS)}")
        if not isinstance(value, dict):
            raise XaibenchError(f"config {where}: section {section!r} must be a table/object, got {value!r}")
    for dataset, options in config.get("data", {}).items():
        if not isinstance(options, dict):
            raise XaibenchError(f"config {where}: [data.{dataset}] must be a table/object of that dataset's "
                                f"options, got {options!r}")


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """['steps=300', 'detach=full', 'loss_weights=[1,1,2]'] -> typed dict (JSON where it parses, else text)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise XaibenchError(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip().replace("-", "_")] = value
    return out
