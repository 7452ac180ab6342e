"""Files on disk: the cache folder, atomic writes (a reader never sees half a file), stable hashes."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def cache_dir() -> Path:
    """$XAIBENCH_CACHE, else ~/.cache/xaibench."""
    return Path(os.environ.get("XAIBENCH_CACHE") or Path.home() / ".cache" / "xaibench").expanduser()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes: a file a key depends on is keyed by what it holds, not by its name."""
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-able object that does not depend on dict order or the Python session."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def worker_id() -> str:
    """Who computes: 'host:pid' of this process (recorded beside a result, never part of its key)."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def unit_lock(path: str | os.PathLike, timeout: float = -1):
    """An exclusive lock beside `path` (`<path>.lock`, an OS file lock: released when its process dies), so two
    processes or machines sharing a cache never compute the same result at once. Use as a context manager;
    after acquiring it, check again whether the result exists (another process may have finished it)."""
    from filelock import FileLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock", timeout=timeout)
