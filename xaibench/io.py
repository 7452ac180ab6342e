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
    from xaibench.faults import event

    event("write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp's 0600 would keep a lab's shared results unreadable
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        if error.filename is None:  # name the file in the one-line error
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


SEAL = b"XAIBENCH-SEALED-1\n"  # then the sha256 of the body (32 bytes), then the body


class DamagedFileError(Exception):
    """A sealed file whose content does not match its checksum (truncated, bit-flipped) or is not sealed."""


def seal(body: bytes) -> bytes:
    return SEAL + hashlib.sha256(body).digest() + body


def unseal(blob: bytes) -> bytes:
    """The body of a sealed blob, or DamagedFileError saying what is wrong."""
    if not blob.startswith(SEAL):
        raise DamagedFileError("not a sealed xaibench file (another format, or foreign)")
    digest, body = blob[len(SEAL):len(SEAL) + 32], blob[len(SEAL) + 32:]
    if len(digest) < 32 or hashlib.sha256(body).digest() != digest:
        raise DamagedFileError("checksum mismatch (truncated or altered)")
    return body


def atomic_sealed_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save of tensors, numbers, strings and containers, sealed with its checksum, written atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, seal(buffer.getvalue()))


def sealed_load(path: str | os.PathLike) -> Any:
    """What `atomic_sealed_save` wrote, checked against its checksum and read without unpickling code
    (weights_only=True). DamagedFileError when the file is damaged or foreign."""
    body = unseal(Path(path).read_bytes())
    try:
        return torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as error:
        raise DamagedFileError(f"unreadable content ({type(error).__name__})") from None


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of tensors, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
