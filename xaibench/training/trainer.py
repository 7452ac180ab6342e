"""Where data becomes a trained model: `train_model`, one trainer for every registered model, driven by an
objective; it finds the checkpoint, takes its lock, and trains (alone or across torchrun's processes).

The trainer knows no model by name: the model's options pass to its factory (those it takes, building.py), the
objective (`ce`, `ofa`, ... see objectives.py) owns the loss and any warm start. Checkpoints are keyed by
a hash of (dataset, size, model, training config, seed) and written atomically under the cache folder
(checkpoints.py); asking for the same training twice loads the checkpoint, and an interrupted training resumes
from its last partial checkpoint (run.py, loop.py). A lock beside each checkpoint (`<path>.lock`) keeps two
processes from training the same one at once. Under torchrun (WORLD_SIZE > 1) one training runs across the
processes with DDP (distributed.py).
"""
from __future__ import annotations

import contextlib
import inspect
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from xaibench.data import ImageDataset
from xaibench.data.spec import DataSpec
from xaibench.errors import XaibenchError
from xaibench.io import unit_lock, worker_id
from xaibench.training.building import build_model, model_kwargs
from xaibench.training.checkpoints import (
    Checkpoint,
    TrainedModel,
    checkpoint_file,
    checkpoint_key,
    existing_checkpoint,
    load_or_forget,
    load_trained,
    report_ignored_legacy,
    save_checkpoint,
)
from xaibench.training.config import TrainConfig, resolve_objective
from xaibench.training.distributed import Collective, collective
from xaibench.training.loop import train_loop
from xaibench.training.run import TrainingRun

logger = logging.getLogger(__name__)


@dataclass
class TrainRequest:
    """What one train_model call asks for: what to train, where its checkpoint goes, and (under torchrun) this
    process's place in the training. The training itself, once started, is a TrainingRun (run.py)."""

    model_name: str
    data: DataSpec
    config: TrainConfig
    seed: int
    device: torch.device
    cache: Path | None
    progress: bool
    workers: int | None
    key: str
    final_path: Path
    group: Collective | None

    @property
    def is_main(self) -> bool:
        return self.group is None or self.group.is_main


def train_model(model_name: str, data: DataSpec, config: TrainConfig | None = None, seed: int = 0,
                device: torch.device | str = "cpu", cache: Path | None = None, progress: bool = True,
                workers: int | None = None) -> TrainedModel:
    """Train (or load from the cache) `model_name` on `data` with its objective; model selection on the
    validation split. Progress lines go to the `xaibench.training` loggers.

    One process trains a checkpoint at a time (a lock beside it); under torchrun (WORLD_SIZE > 1) every process
    calls this and the training runs across them with DDP (distributed.py). `workers`: DataLoader processes
    gathering the training batches (default 0: on the CPU the split is indexed in memory, on CUDA the batches
    are gathered in this process into pinned memory)."""
    config = config or TrainConfig()
    group = collective(device, config.batch_size)
    device = group.device if group is not None else torch.device(device)
    key = checkpoint_key(data, model_name, config, seed)
    final_path = checkpoint_file(data, model_name, key, cache)
    request = TrainRequest(model_name, data, config, seed, device, cache, progress, workers, key, final_path, group)
    if group is not None:
        return _train_collective(request)
    trained = load_or_forget(final_path, device)
    if trained is not None:
        return trained
    with unit_lock(final_path):
        trained = load_or_forget(final_path, device)
        if trained is not None:  # written by another process while this one waited for the lock
            logger.info("%s on %s: trained meanwhile by another process (%s)", model_name, data.name,
                        final_path.name)
            return trained
        return _train(request)


def _train_collective(request: TrainRequest) -> TrainedModel:
    """Rank 0 checks the cache under the lock and, where the checkpoint is missing, all ranks train it; then
    every rank loads the checkpoint rank 0 wrote."""
    group = request.group
    with unit_lock(request.final_path) if group.is_main else contextlib.nullcontext():
        cached = load_or_forget(request.final_path, request.device) is not None if group.is_main else None
        if not group.broadcast(cached):
            _train(request)
        group.barrier()
    return load_trained(existing_checkpoint(request.final_path) or request.final_path, request.device)


def _train(request: TrainRequest) -> TrainedModel | None:
    """Build, warm-start (or resume) and train the model, then write the checkpoint (rank 0 under DDP)."""
    model_name, data, config, seed, device = (request.model_name, request.data, request.config, request.seed,
                                              request.device)
    partial_path = request.final_path.with_suffix(".partial")
    objective = resolve_objective(model_name, config)
    if request.group is not None and "shard" not in inspect.signature(objective.loss).parameters:
        raise XaibenchError(f"objective {objective.name!r} cannot train under torchrun: its loss takes no `shard` "
                            f"(see Objective.loss)")
    if request.is_main:
        report_ignored_legacy(request.final_path)
    train, val = _load_splits(data)
    kwargs = model_kwargs(model_name, train, config)
    model = build_model(model_name, kwargs, seed, train)
    resume = partial_path.exists()
    if request.group is not None:
        resume = request.group.broadcast(resume)
    init_record = None
    if not resume:
        init_record = objective.warm_start(
            model, config, lambda name, warm_config: train_model(name, data, warm_config, seed, device, request.cache,
                                                                 request.progress, workers=request.workers))
    model.to(device)
    run = TrainingRun.start(f"{model_name}/{data.name}", model, objective, config, len(train), seed, device,
                            init_record, request.group)
    if resume:
        run.resume(partial_path)
        if run.is_main:
            logger.info("resuming %s on %s from step %d (%s)", model_name, data.name, run.state["step"],
                        partial_path.name)
    train_loop(run, train, val, partial_path, request.progress, request.workers)
    if not run.is_main:
        return None
    return _finish(run, request, kwargs, partial_path)


def _load_splits(data: DataSpec) -> tuple[ImageDataset, ImageDataset]:
    train, val = data.load("train"), data.load("val")
    if len(train) == 0 or len(val) == 0:
        raise XaibenchError(f"{data.name}: the train and val splits must not be empty "
                            f"(train {len(train)}, val {len(val)})")
    return train, val


def _finish(run: TrainingRun, request: TrainRequest, kwargs: dict[str, Any], partial_path: Path) -> TrainedModel:
    """Best weights into the model and the final checkpoint; the partial one removed."""
    best, state = run.state["best"], run.state
    run.model.load_state_dict(best["state_dict"])
    record = {"model_name": request.model_name, "data": request.data.key(), "config": asdict(run.config),
              "objective": run.objective.name, "seed": request.seed, "key": request.key,
              "best_step": best["step"], "val_acc": best["val_acc"], "val_auc": best["val_auc"],
              "history": state["history"], "train_seconds": state["seconds"], "device": str(run.device),
              "init": run.init_record, "computed_by": worker_id()}
    if run.group is not None:
        record["world_size"] = run.group.world_size
    saved_kwargs = {**kwargs, "pretrained": None} if "pretrained" in kwargs else dict(kwargs)
    save_checkpoint(request.final_path, Checkpoint(request.model_name, saved_kwargs, best["state_dict"], record))
    partial_path.unlink(missing_ok=True)
    run.model.eval()
    run.model.trained_masked = run.objective.trains_masked  # read by amortized explainers (surrogate="auto")
    return TrainedModel(run.model, record, request.final_path, trained_now=True)
