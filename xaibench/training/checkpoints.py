"""Checkpoints: the key and file of a training's inputs, the files themselves (safetensors, checked), loading.

A final checkpoint (`<model>-<data>-<size>-<key>.safetensors`, the key a hash of data, model, training config
and seed) holds the best weights; its metadata holds the format, the model name, the factory's arguments, the
training record (config, steps, validation scores, who computed it) and the sha256 of the weights. Nothing a
checkpoint holds is unpickled, so a file a user is handed cannot run code; a damaged file is detected. A
partial checkpoint (training in progress: run.py) is a sealed torch file (xaibench/io.py). Checkpoints of
xaibench < 0.3 (`.pt`, pickled dicts) are no longer read since 0.5.0: their trainings run again.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from xaibench.data.spec import DataSpec
from xaibench.errors import XaibenchError
from xaibench.io import DamagedFileError, atomic_write_bytes, cache_dir, stable_hash, tensors_digest
from xaibench.models import MaskedClassifier, create_model
from xaibench.registry import MODELS
from xaibench.training.config import TrainConfig, resolve_objective
from xaibench.training.objectives import OBJECTIVES, default_objective

logger = logging.getLogger(__name__)

FORMAT = "xaibench-checkpoint-1"
SUFFIX = ".safetensors"
LEGACY_SUFFIX = ".pt"  # xaibench < 0.3: not read since 0.5.0 (see report_ignored_legacy)

CHECKPOINT_VERSION = 1
# A model's revision (`factory.revision` on its registered factory) is part of the key: raise it when a change
# to the model's code changes what its training produces, so that only that model's checkpoints are retrained.


@dataclass
class Checkpoint:
    model_name: str
    model_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    record: dict[str, Any]


@dataclass
class TrainedModel:
    model: MaskedClassifier
    record: dict[str, Any]
    path: Path
    trained_now: bool = False  # trained by this call (not loaded from the cache)


def checkpoint_key(data: DataSpec, model_name: str, config: TrainConfig, seed: int) -> str:
    """Hash of what the training reads: the common and model options and only its own objective's options
    (a baseline's key ignores OFA's); the objective's name only when it is not the model's default."""
    objective = resolve_objective(model_name, config)
    config_dict = {**config.common(), **asdict(config.model), **objective.key_options()}
    del config_dict["objective"]
    if config_dict.get("masking", "token") == "token":  # the default: keys as before masking existed
        config_dict.pop("masking", None)
    if objective.name != default_objective(model_name):
        config_dict["objective"] = objective.name
    key = {"v": CHECKPOINT_VERSION, "data": data.key(), "model": model_name, "config": config_dict, "seed": seed}
    revision = getattr(MODELS.get(model_name), "revision", None)
    if revision is not None:
        key["revision"] = revision
    return stable_hash(key)


def checkpoint_path(data: DataSpec, model_name: str, config: TrainConfig, seed: int, cache: Path | None = None) -> Path:
    """The final checkpoint file train_model writes or loads for these inputs (pure: nothing is trained)."""
    return checkpoint_file(data, model_name, checkpoint_key(data, model_name, config, seed), cache)


def checkpoint_file(data: DataSpec, model_name: str, key: str, cache: Path | None) -> Path:
    """The final checkpoint file of `key` under the cache folder (default: cache_dir())."""
    return Path(cache or cache_dir()) / "checkpoints" / f"{model_name}-{data.name}-{data.size}-{key}{SUFFIX}"


def existing_checkpoint(final_path: Path) -> Path | None:
    """`final_path` if it is on disk, else None (a `.pt` file of xaibench < 0.3 beside it is not read)."""
    return final_path if final_path.exists() else None


def report_ignored_legacy(final_path: Path) -> None:
    """One warning when a `.pt` checkpoint of xaibench < 0.3 lies where `final_path` is missing: it is no
    longer read, and the model is trained again."""
    legacy = final_path.with_suffix(LEGACY_SUFFIX)
    if legacy.exists():
        logger.warning("legacy checkpoint %s (xaibench < 0.3) is ignored since 0.5.0: the model is trained again",
                       legacy.name)


def load_trained(path: Path, device: torch.device | str = "cpu") -> TrainedModel:
    """A trained model from its checkpoint file (checked, never unpickled)."""
    saved = read_checkpoint(path)
    kwargs = dict(saved.model_kwargs)
    if "pretrained" in kwargs:  # the weights are in the checkpoint: never fetch them again
        kwargs["pretrained"] = None
    model = create_model(saved.model_name, **kwargs)
    model.load_state_dict(saved.state_dict)
    objective = saved.record.get("objective")
    model.trained_masked = bool(objective in OBJECTIVES and OBJECTIVES.get(objective).trains_masked)
    return TrainedModel(model.to(device).eval(), saved.record, Path(path))


def load_or_forget(final_path: Path, device: torch.device) -> TrainedModel | None:
    """The cached checkpoint, or None when there is none or it is damaged (then reported and deleted)."""
    path = existing_checkpoint(final_path)
    if path is None:
        return None
    try:
        return load_trained(path, device)
    except DamagedCheckpointError as why:
        logger.warning("%s; deleted, it is trained again", why)
        path.unlink(missing_ok=True)
        return None


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
    (a checksum mismatch, a truncated or foreign file, a `.pt` checkpoint of xaibench < 0.3)."""
    path = Path(path)
    if path.suffix == LEGACY_SUFFIX and path.exists():
        raise XaibenchError(f"checkpoint {path} is a .pt file of xaibench < 0.3, which 0.5.0 no longer reads: "
                            f"train the model again")
    try:
        return _read_safetensors(path)
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
