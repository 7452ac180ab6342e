"""Finished units of work on disk (explanations, scores): one file per unit, named by a hash of its inputs.

Files are written atomically, so a run killed at any moment leaves each unit whole or absent; the next
run loads what exists and computes the rest. Checkpoints have their own cache (training/checkpoints.py).
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xaibench.io import DamagedFileError, atomic_sealed_save, sealed_load, stable_hash, unit_lock, worker_id

logger = logging.getLogger("xaibench.cache")

#: bump when the content or meaning of a unit file changes; old files are then ignored
#: 2 (xaibench 0.2.0): keys chain through the planned units' keys; every file records its format and writer
#: 3 (xaibench 0.3.0): every file sealed with a sha256 of its content (io.seal); score keys without the forward batch
UNIT_VERSION = 3
FORMAT_KEY = "__unit_format__"
WRITER_KEY = "__written_by__"
COMPUTED_BY_KEY = "__computed_by__"


def unit_key(kind: str, inputs: dict[str, Any]) -> str:
    """Hash of everything a unit's result depends on."""
    return stable_hash({"v": UNIT_VERSION, "kind": kind, **inputs}, length=20)


def derive_seed(*parts: Any) -> int:
    """A generator seed from (seed, dataset, method, stage...), stable across sessions and machines."""
    return int(stable_hash(list(parts)), 16) % (2**63 - 1)


@lru_cache(maxsize=None)
def _files_hash(paths: tuple[Path, ...]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def code_fingerprint(obj: Any) -> str:
    """Hash of the source an explainer or metric runs: its package folder's .py files, or its plugin file.

    Editing the code of a method or metric then invalidates its cached units instead of serving stale ones.
    """
    try:
        source = Path(inspect.getsourcefile(obj) or "")
    except TypeError:
        source = Path("")
    if not source.is_file():
        module = sys.modules.get(getattr(obj, "__module__", ""), None)
        return stable_hash([getattr(module, "__name__", None), getattr(obj, "__qualname__", repr(obj))])
    folder = source.parent
    files = tuple(sorted(folder.glob("*.py"))) if (folder / "__init__.py").exists() else (source,)
    return _files_hash(files + _ENGINE_FILES)


# Engine code every method and metric runs through (seeded draws, the models' masked forward): a change
# there must invalidate cached explanations and scores too.
_PACKAGE = Path(__file__).resolve().parent
_ENGINE_FILES = (_PACKAGE / "sampling.py", *sorted((_PACKAGE / "models").glob("*.py")))


def weights_fingerprint(model: nn.Module) -> str:
    """Hash of a model's parameters and buffers (what it computes, not where its file came from)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()[:16]


class UnitStore:
    """`<root>/<kind>/<key>.pt` per finished unit; payloads are dicts of tensors, numbers and strings.

    Each file records the unit format and the xaibench version that wrote it; a file that cannot be read, or
    was written in another format, is ignored (and counted in `ignored`, so a run can say so) and recomputed.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.ignored: list[Path] = []
        self.writers: dict[str, str] = {}  # key -> 'host:pid' that computed the loaded file

    def lock(self, kind: str, key: str):
        """The unit's file lock (a context manager): one process at a time computes it."""
        return unit_lock(self.path(kind, key))

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.pt"

    def load(self, kind: str, key: str) -> dict[str, Any] | None:
        """The unit's payload, or None when it is not there. A file that fails its checksum (truncated,
        bit-flipped), is foreign or of another format is reported, deleted and so recomputed: never loaded."""
        path = self.path(kind, key)
        if not path.exists():
            return None
        try:
            payload = sealed_load(path)
            if not isinstance(payload, dict) or payload.pop(FORMAT_KEY, None) != UNIT_VERSION:
                raise DamagedFileError("another unit format")
        except DamagedFileError as why:
            logger.info("cached unit %s: %s; deleted, it is computed again", path, why)
            self.ignored.append(path)
            path.unlink(missing_ok=True)
            return None
        except FileNotFoundError:  # removed meanwhile (pruned, or deleted as damaged by another process)
            return None
        payload.pop(WRITER_KEY, None)
        computed_by = payload.pop(COMPUTED_BY_KEY, None)
        if computed_by:
            self.writers[key] = computed_by
        return payload

    def save(self, kind: str, key: str, payload: dict[str, Any]) -> Path:
        from xaibench.version import __version__

        return atomic_sealed_save({**payload, FORMAT_KEY: UNIT_VERSION, WRITER_KEY: __version__,
                                   COMPUTED_BY_KEY: worker_id()}, self.path(kind, key))


def cache_entries(root: str | Path) -> dict[str, list[Path]]:
    """The result files of a cache folder by kind: 'checkpoints' and each unit kind (locks and temporaries aside)."""
    root = Path(root)
    kinds: dict[str, list[Path]] = {}
    folder = root / "checkpoints"
    if folder.is_dir():
        kinds["checkpoints"] = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".pt", ".partial")
                                      and p.is_file())
    units = root / "units"
    for kind in sorted(p for p in units.iterdir() if p.is_dir()) if units.is_dir() else []:
        kinds[kind.name] = sorted(p for p in kind.glob("*.pt") if p.is_file())
    return kinds


def cache_info(root: str | Path) -> list[dict[str, Any]]:
    """Per kind: file count, bytes, oldest and newest write time (POSIX seconds)."""
    rows = []
    for kind, files in cache_entries(root).items():
        times = [p.stat().st_mtime for p in files]
        rows.append({"kind": kind, "files": len(files), "bytes": sum(p.stat().st_size for p in files),
                     "oldest": min(times, default=None), "newest": max(times, default=None)})
    return rows


def prune_cache(root: str | Path, older_than_days: float | None = None, keep_latest: int | None = None,
                now: float | None = None, dry_run: bool = False) -> list[Path]:
    """Delete result files written more than `older_than_days` ago, and/or all but the `keep_latest` newest of
    each kind; a file being computed (its lock held) is never touched. Returns the deleted (or, dry, doomed)."""
    import time

    from filelock import Timeout

    now = time.time() if now is None else now
    doomed = []
    for files in cache_entries(root).values():
        by_age = sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)
        for index, path in enumerate(by_age):
            old = older_than_days is not None and now - path.stat().st_mtime > older_than_days * 86400
            surplus = keep_latest is not None and index >= keep_latest
            if old or surplus:
                doomed.append(path)
    deleted = []
    for path in doomed:
        lock = unit_lock(path.with_suffix(".safetensors") if path.suffix == ".partial" else path, timeout=0)
        try:
            with lock:
                if not dry_run:
                    path.unlink(missing_ok=True)
                deleted.append(path)
        except Timeout:  # a process is computing it right now
            continue
    return deleted
