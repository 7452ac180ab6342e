"""The training loop: one optimiser step per batch, validation every eval_every steps (the best weights kept)
and a partial checkpoint after each validation but the last, so that an interrupted training resumes."""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from xaibench.data import ImageDataset
from xaibench.faults import event
from xaibench.training.batches import batches
from xaibench.training.evaluation import autocast_for, classification_scores, predict_proba
from xaibench.training.masks import BatchShard
from xaibench.training.run import TrainingRun

logger = logging.getLogger(__name__)


def train_step(run: TrainingRun, x: torch.Tensor, y: torch.Tensor, shard: BatchShard | None,
               weight: float | None) -> dict[str, torch.Tensor]:
    """One optimiser step on a batch (under DDP, on this process's shard of the global batch, its loss
    weighted so that DDP's averaged gradient is the global batch's mean); returns this process's losses."""
    config = run.config
    with autocast_for(run.device):
        if run.ddp is None:
            losses = run.objective.loss(run.model, x, y, run.mask_generator)
        else:
            losses = run.ddp(x, y, run.mask_generator, shard)
    run.optimizer.zero_grad(set_to_none=True)
    (losses["loss"] if weight is None else losses["loss"] * weight).backward()
    if config.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.state["step"] += 1
    return losses


def evaluate(run: TrainingRun, val: ImageDataset, running: dict[str, Any], elapsed: float, n_images: int) -> None:
    """Validation scores into the history and the log; the best-accuracy weights kept (later wins ties).
    Under DDP rank 0 validates and keeps the weights; its entry and decision are broadcast to all ranks."""
    state, every = run.state, run.config.eval_every
    entry, is_best = None, False
    if run.group is not None:
        running = run.group.global_mean(running, 1.0)
    if run.is_main:
        scores = classification_scores(predict_proba(run.model, val, run.device), val)
        run.model.train()
        count = every if state["step"] % every == 0 else state["step"] % every
        entry = {"step": state["step"], "epoch": state["step"] / run.steps_per_epoch,
                 **{name: float(value) / count for name, value in running.items()},
                 "val_acc": scores["acc"], "val_auc": scores["auc"], "images_per_s": n_images / max(elapsed, 1e-9)}
        is_best = state["best"] is None or scores["acc"] >= state["best"]["val_acc"]
        logger.info("%s step %d epoch %.1f: %s val_acc %.4f val_auc %.4f (%.0f img/s)", run.label, entry["step"],
                    entry["epoch"], " ".join(f"{name} {entry[name]:.4f}" for name in running), scores["acc"],
                    scores["auc"], entry["images_per_s"])
    if run.group is not None:
        entry, is_best = run.group.broadcast((entry, is_best))
    state["history"].append(entry)
    state["seconds"] += elapsed
    if is_best:
        weights = (copy.deepcopy({k: v.detach().cpu() for k, v in run.model.state_dict().items()})
                   if run.is_main else None)  # only rank 0 writes checkpoints
        state["best"] = {"val_acc": entry["val_acc"], "val_auc": entry["val_auc"], "step": state["step"],
                         "state_dict": weights}


def train_loop(run: TrainingRun, train: ImageDataset, val: ImageDataset, partial_path: Path, progress: bool,
               workers: int | None = None) -> None:
    """Steps until total_steps: validation every eval_every steps and at the end, a partial checkpoint after
    each validation but the last."""
    per_example = run.objective.images_per_example()
    steps = batches(run, train, workers)
    run.model.train()
    bar = tqdm(total=run.total_steps, initial=run.state["step"], desc=f"train {run.label}",
               disable=not (progress and run.is_main), dynamic_ncols=True, leave=False)
    running: dict[str, Any] = {}
    window_start, window_images = time.perf_counter(), 0
    while run.state["step"] < run.total_steps:
        x, y, shard, weight, batch = next(steps)
        event("train step")
        losses = train_step(run, x, y, shard, weight)
        step = run.state["step"]
        for name, value in losses.items():  # stays on the device until the log; under DDP weighted by the shard
            running[name] = running.get(name, 0.0) + (value.detach() if weight is None else value.detach() * weight)
        window_images += batch * per_example
        bar.update(1)
        if step % 10 == 0:
            elapsed = time.perf_counter() - window_start
            bar.set_postfix(loss=f"{float(losses['loss'].detach()):.3f}",
                            img_s=f"{window_images / max(elapsed, 1e-9):.0f}")
        if step % run.config.eval_every == 0 or step == run.total_steps:
            evaluate(run, val, running, time.perf_counter() - window_start, window_images)
            running = {}
            window_start, window_images = time.perf_counter(), 0
            if step < run.total_steps and run.is_main:
                run.save_partial(partial_path)
    steps.close()
    bar.close()
