"""Checkpoint files: safetensors with the record as JSON metadata and a checksum of the weights. Nothing a
checkpoint holds is unpickled, so a file a user is handed cannot run code; a damaged file is detected.

A final checkpoint (`<model>-<data>-<size>-<key>.safetensors`) holds the best weights; its metadata holds the
format, the model name, the factory's arguments, the training record (config, steps, validation scores, who
computed it) and the sha256 of the weights. A partial checkpoint (training in progress, with optimizer and
generator states) is a sealed torch file (xaibench/io.py: checksummed, read with weights_only=True).
Checkpoints of xaibench < 0.3 (`.pt`, pickled dicts) are still read, with weights_only=True.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from xaibench.errors import XaibenchError
from xaibench.io import DamagedFileError, atomic_write_bytes, tensors_digest

FORMAT = "xaibench-checkpoint-1"
SUFFIX = ".safetensors"
LEGACY_SUFFIX = ".pt"


@dataclass
class Checkpoint:
    model_name: str
    model_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    record: dict[str, Any]


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> Path:
    """Write `checkpoint` atomically as safetensors (the weights cloned off shared storage first)."""
    from safetensors.torch import save

    tensors = {name: tensor.detach().cpu().clone().contiguous() for name, tensor in checkpoint.state_dict.items()}
    metadata = {"format": FORMAT, "model_name": checkpoint.model_name,
                "model_kwargs": json.dumps(checkpoint.model_kwargs, sort_keys=True),
                "record": json.dumps(checkpoint.record, sort_keys=True, default=str),
                "sha256": tensors_digest(tensors)}
    return atomic_write_bytes(path, save(tensors, metadata=metadata))


def read_checkpoint(path: str | Path) -> Checkpoint:
    """A checkpoint file's content, checked; XaibenchError naming the file when it cannot be trusted or read
    (a pickle that would run code, a checksum mismatch, a truncated or foreign file)."""
    path = Path(path)
    try:
        return _read_safetensors(path) if path.suffix == SUFFIX else _read_legacy(path)
    except FileNotFoundError:
        raise XaibenchError(f"checkpoint {path} does not exist") from None
    except DamagedFileError as why:
        raise DamagedCheckpointError(f"checkpoint {path} is damaged: {why}") from None


class DamagedCheckpointError(XaibenchError):
    """A checkpoint whose weights do not match its checksum, or that cannot be parsed."""


def _read_safetensors(path: Path) -> Checkpoint:
    from safetensors import SafetensorError
    from safetensors.torch import load

    blob = path.read_bytes()
    try:
        tensors = load(blob)
        header_size = int.from_bytes(blob[:8], "little")
        metadata = json.loads(blob[8:8 + header_size]).get("__metadata__") or {}
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise DamagedFileError(f"not a readable safetensors file ({str(error).splitlines()[0][:80]})") from None
    if metadata.get("format") != FORMAT:
        raise DamagedFileError(f"not an xaibench checkpoint (format {metadata.get('format')!r})")
    if tensors_digest(tensors) != metadata.get("sha256"):
        raise DamagedFileError("the weights do not match their checksum (truncated or altered)")
    return Checkpoint(metadata["model_name"], json.loads(metadata["model_kwargs"]), tensors,
                      json.loads(metadata["record"]))


def _read_legacy(path: Path) -> Checkpoint:
    """A `.pt` checkpoint of xaibench < 0.3, unpickled with weights_only=True (no code runs)."""
    import pickle

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise XaibenchError(f"checkpoint {path} is refused: it is a pickle that asks to run code or build objects "
                            f"other than tensors ({str(error).splitlines()[0][:120]})") from None
    except (RuntimeError, EOFError, ValueError) as error:
        raise DamagedFileError(f"unreadable ({type(error).__name__})") from None
    if not isinstance(saved, dict) or not {"model_name", "model_kwargs", "state_dict", "record"} <= set(saved):
        raise DamagedFileError("not an xaibench checkpoint")
    return Checkpoint(saved["model_name"], dict(saved["model_kwargs"]), saved["state_dict"], saved["record"])
