"""Where data becomes a trained model: one trainer for every registered model, driven by an objective.

The trainer knows no model by name: the model's options pass to its factory (those it takes), the
objective (`ce`, `ofa`, ... see objectives.py) owns the loss and any warm start. Checkpoints are keyed by
a hash of (dataset, size, model, training config, seed) and written atomically under the cache folder;
asking for the same training twice loads the checkpoint, and an interrupted training resumes from its
last partial checkpoint. A lock beside each checkpoint (`<path>.lock`) keeps two processes from training the
same one at once. Under torchrun (WORLD_SIZE > 1) one training runs across the processes with DDP
(distributed.py).
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import math
import time
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from xaibench.data import ImageDataset, create_dataset
from xaibench.data.base import to_float
from xaibench.errors import XaibenchError
from xaibench.faults import event
from xaibench.io import atomic_sealed_save, cache_dir, sealed_load, stable_hash, unit_lock, worker_id
from xaibench.training.checkpoints import (LEGACY_SUFFIX, SUFFIX, Checkpoint, DamagedCheckpointError,
                                           read_checkpoint, save_checkpoint)
from xaibench.models import MaskedClassifier, create_model
from xaibench.registry import DATASETS, MODELS
from xaibench.training.config import TrainConfig
from xaibench.training.evaluation import autocast_for, classification_scores, predict_proba
from xaibench.training.masks import BatchShard
from xaibench.training.objectives import OBJECTIVES, Objective, default_objective

if TYPE_CHECKING:
    from xaibench.training.distributed import Collective

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
# A model's revision (`factory.revision` on its registered factory) is part of the key: raise it when a change
# to the model's code changes what its training produces, so that only that model's checkpoints are retrained.

# Model options taken from the training images, offered to a factory that names them.
DATA_OPTIONS = {"fill_value": lambda train: train.channel_mean()}


PERMUTE_LABELS = "permute_labels"  # a DataSpec option that is no dataset's own: see DataSpec.load


@dataclass
class DataSpec:
    """Which data a model is trained on; part of the checkpoint key."""

    name: str
    size: int = 28
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # e.g. synthetic n_samples, n_classes, seed

    def load(self, split: str) -> ImageDataset:
        """The split; with the option `permute_labels` (a seed), the training and validation labels are permuted
        by a generator of that seed (Adebayo et al.'s data randomization test), the test split kept as it is."""
        options = dict(self.options)
        permutation_seed = options.pop(PERMUTE_LABELS, None)
        dataset = create_dataset(self.name, split, size=self.size, root=self.root, **options)
        if permutation_seed is not None and split != "test":
            generator = torch.Generator().manual_seed(int(permutation_seed) * 1000 + (split == "val"))
            dataset.labels = dataset.labels[torch.randperm(len(dataset.labels), generator=generator)]
        return dataset

    def permuted(self, seed: int) -> "DataSpec":
        """The same data with the training and validation labels permuted (a different checkpoint key)."""
        return DataSpec(self.name, self.size, self.root, {**self.options, PERMUTE_LABELS: seed})

    def key(self) -> dict[str, Any]:
        """What the data is: name, size, options, and the generator's `data_version` where an embedded dataset
        declares one (a changed generator must not reuse old checkpoints). The data root is where, not what:
        it stays out."""
        key = {"name": self.name, "size": self.size, "options": self.options}
        version = getattr(DATASETS.get(self.name), "data_version", None) if self.name in DATASETS else None
        if version is not None:
            key["data_version"] = version
        return key


@dataclass
class TrainedModel:
    model: MaskedClassifier
    record: dict[str, Any]
    path: Path
    trained_now: bool = False  # trained by this call (not loaded from the cache)


def resolve_objective(model_name: str, config: TrainConfig) -> Objective:
    """The config's objective, else the one the model declares, with its options from the config."""
    name = config.objective or default_objective(model_name)
    return OBJECTIVES.get(name)(config.options_of(name))


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
    return _checkpoint_file(data, model_name, checkpoint_key(data, model_name, config, seed), cache)


def _checkpoint_file(data: DataSpec, model_name: str, key: str, cache: Path | None) -> Path:
    return Path(cache or cache_dir()) / "checkpoints" / f"{model_name}-{data.name}-{data.size}-{key}{SUFFIX}"


def existing_checkpoint(final_path: Path) -> Path | None:
    """The checkpoint file for `final_path` that is on disk: itself, else a `.pt` one of xaibench < 0.3."""
    for path in (final_path, final_path.with_suffix(LEGACY_SUFFIX)):
        if path.exists():
            return path
    return None


def _load_or_forget(final_path: Path, device: torch.device) -> TrainedModel | None:
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


def accepted_parameters(factory) -> set[str]:
    """Names a model factory takes: its own parameters and, when it passes **kwargs on, those of the class
    its return annotation names (`def vit(..., **kwargs) -> ViTClassifier`)."""
    parameters = inspect.signature(factory).parameters.values()
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        try:
            built = typing.get_type_hints(factory).get("return")
        except Exception:  # an annotation that does not resolve names nothing
            built = None
        if inspect.isclass(built) and built.__init__ is not object.__init__:
            names |= accepted_parameters(built.__init__) - {"self"}
    return names


def model_kwargs(model_name: str, train: ImageDataset, config: TrainConfig) -> dict[str, Any]:
    """The factory's arguments for the data `train` holds (model_kwargs_for its DatasetInfo)."""
    return model_kwargs_for(model_name, train.info, config)


def model_kwargs_for(model_name: str, info, config: TrainConfig) -> dict[str, Any]:
    """The factory's arguments: the data's shape (a DatasetInfo), the named model options it takes, then
    model_options."""
    accepted = accepted_parameters(MODELS.get(model_name))
    kwargs: dict[str, Any] = dict(num_classes=info.n_classes, in_chans=info.in_chans, img_size=info.size)
    named = asdict(config.model)
    extra = named.pop("model_options")
    kwargs.update({name: value for name, value in named.items() if name in accepted})
    kwargs.update(extra)
    return kwargs


def build_model(model_name: str, kwargs: dict[str, Any], seed: int, train: ImageDataset | None = None):
    """The model, its weights drawn from `seed`; data options (DATA_OPTIONS) from `train` where it takes them."""
    accepted = accepted_parameters(MODELS.get(model_name))
    data_kwargs = {name: make(train) for name, make in DATA_OPTIONS.items()
                   if train is not None and name in accepted and name not in kwargs}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(model_name, **kwargs, **data_kwargs)


def load_trained(path: Path, device: torch.device | str = "cpu") -> TrainedModel:
    """A trained model from its checkpoint file (checked, never unpickled: checkpoints.py)."""
    saved = read_checkpoint(path)
    kwargs = dict(saved.model_kwargs)
    if "pretrained" in kwargs:  # the weights are in the checkpoint: never fetch them again
        kwargs["pretrained"] = None
    model = create_model(saved.model_name, **kwargs)
    model.load_state_dict(saved.state_dict)
    objective = saved.record.get("objective")
    model.trained_masked = bool(objective in OBJECTIVES and OBJECTIVES.get(objective).trains_masked)
    return TrainedModel(model.to(device).eval(), saved.record, Path(path))


def _lr_lambda(warmup: int, total: int):
    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return schedule


def _param_groups(model: MaskedClassifier, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: no decay on norms, biases and tokens; parameters outside a model's `encoder` (a decoder,
    a head) take decoder_lr."""
    decoder_lr = config.decoder_lr if config.decoder_lr is not None else config.lr
    has_encoder = isinstance(getattr(model, "encoder", None), torch.nn.Module)
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        is_decoder = has_encoder and not name.startswith("encoder.")
        decay = param.ndim >= 2 and "token" not in name and "pos_embed" not in name and "class_embed" not in name
        groups.setdefault((is_decoder, decay), []).append(param)
    return [{"params": params, "lr": decoder_lr if is_decoder else config.lr,
             "weight_decay": config.weight_decay if decay else 0.0}
            for (is_decoder, decay), params in sorted(groups.items())]


@dataclass
class _Run:
    """One training in progress: the model, its optimiser and schedule, both generators and the state."""

    label: str
    model: MaskedClassifier
    objective: Objective
    config: TrainConfig
    device: torch.device
    steps_per_epoch: int
    total_steps: int
    optimizer: torch.optim.Optimizer
    scheduler: Any
    order_generator: torch.Generator
    mask_generator: torch.Generator
    init_record: dict[str, Any] | None
    state: dict[str, Any] = field(default_factory=lambda: {"step": 0, "epoch_order": None, "best": None,
                                                           "history": [], "seconds": 0.0})
    group: Collective | None = None  # under torchrun: this process's place in the DDP training
    ddp: torch.nn.Module | None = None  # DDP over the objective's loss (with a group)

    @property
    def is_main(self) -> bool:
        return self.group is None or self.group.is_main


def _start_run(label: str, model, objective: Objective, config: TrainConfig, n_train: int, seed: int,
               device: torch.device, init_record, group: Collective | None = None) -> _Run:
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    total_steps = min(config.steps, config.max_epochs * steps_per_epoch)
    optimizer = torch.optim.AdamW(_param_groups(model, config), betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(min(config.warmup_steps, total_steps),
                                                                       total_steps))
    order_generator = torch.Generator().manual_seed(seed)
    mask_generator = torch.Generator(device=device).manual_seed(seed + 1)
    run = _Run(label, model, objective, config, device, steps_per_epoch, total_steps, optimizer, scheduler,
               order_generator, mask_generator, init_record)
    if group is not None:
        run.group, run.ddp = group, group.wrap(model, objective)
    return run


def _save_partial(run: _Run, path: Path) -> None:
    atomic_sealed_save({"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                       "scheduler": run.scheduler.state_dict(), "order_generator": run.order_generator.get_state(),
                       "mask_generator": run.mask_generator.get_state(), "state": run.state,
                       "init_record": run.init_record}, path)


def _resume(run: _Run, path: Path) -> None:
    saved = sealed_load(path)
    run.model.load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    run.order_generator.set_state(saved["order_generator"])
    run.mask_generator.set_state(saved["mask_generator"])
    run.state = saved["state"]
    run.init_record = saved.get("init_record")


def _batch_at(step: int, order: torch.Tensor | None, generator: torch.Generator, steps_per_epoch: int, n: int,
              batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The epoch order (a new randperm of the n rows from `generator` at an epoch's first step) and the rows
    of the global batch of `step`."""
    position = step % steps_per_epoch
    if position == 0 or order is None:
        order = torch.randperm(n, generator=generator)
    return order, order[position * batch_size:(position + 1) * batch_size]


def _next_rows(run: _Run, n: int) -> tuple[torch.Tensor, BatchShard | None, float | None, int]:
    """The rows this process computes at the current step (all of the global batch outside DDP), their
    shard of the global batch and loss weight (None outside DDP), and the global batch's size."""
    state = run.state
    state["epoch_order"], index = _batch_at(state["step"], state["epoch_order"], run.order_generator,
                                            run.steps_per_epoch, n, run.config.batch_size)
    if run.group is None:
        return index, None, None, len(index)
    shard, weight = run.group.shard(len(index))
    return shard.take(index), shard, weight, len(index)


class _SplitRows(torch.utils.data.Dataset):
    """A split's uint8 images and labels, read a batch of rows at a time (`__getitems__`) by a DataLoader."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, row: int):
        return self.images[row], self.labels[row]

    def __getitems__(self, rows):
        rows = torch.as_tensor(rows)
        return self.images.index_select(0, rows), self.labels.index_select(0, rows), rows


class _EpochSampler(torch.utils.data.Sampler):
    """This process's rows of each step's batch from the run's current step on, in the trainer's epoch order:
    the same randperm sequence, drawn from a copy of the order generator, so a loader may run ahead of the
    trainer while the run's own generator (saved in partial checkpoints) advances only with the steps."""

    def __init__(self, run: _Run, n: int):
        self.run, self.n = run, n
        self.start, self.order = run.state["step"], run.state["epoch_order"]
        self.state = run.order_generator.get_state()

    def __len__(self) -> int:
        return self.run.total_steps - self.start

    def __iter__(self):
        run, generator, order = self.run, torch.Generator(), self.order
        generator.set_state(self.state)
        for step in range(self.start, run.total_steps):
            order, index = _batch_at(step, order, generator, run.steps_per_epoch, self.n, run.config.batch_size)
            yield index if run.group is None else run.group.shard(len(index))[0].take(index)


def _as_is(batch):
    return batch


def _batches(run: _Run, train: ImageDataset, workers: int | None):
    """Per step: this process's images (float, on the device) and labels, its BatchShard and loss weight (None
    outside DDP) and the global batch's size. On the CPU without workers the split is indexed in memory; on
    CUDA (or with workers) a DataLoader gathers each batch from the uint8 split in host memory, pinned on CUDA
    and copied to the device without blocking, so the device never holds more than a few batches."""
    n = len(train)
    if run.device.type != "cuda" and not workers:
        images, labels = train.images.to(run.device), train.labels.to(run.device)
        while True:
            rows, shard, weight, count = _next_rows(run, n)
            rows = rows.to(run.device)
            yield to_float(images[rows]), labels[rows], shard, weight, count
    loader = torch.utils.data.DataLoader(_SplitRows(train.images, train.labels),
                                         batch_sampler=_EpochSampler(run, n), num_workers=workers or 0,
                                         collate_fn=_as_is, pin_memory=run.device.type == "cuda")
    for images, labels, fetched in loader:
        rows, shard, weight, count = _next_rows(run, n)
        if not torch.equal(fetched, rows):
            raise RuntimeError(f"the training batches left the epoch order at step {run.state['step']}")
        yield (to_float(images.to(run.device, non_blocking=True)), labels.to(run.device, non_blocking=True), shard,
               weight, count)


def _step(run: _Run, x: torch.Tensor, y: torch.Tensor, shard: BatchShard | None,
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


def _evaluate(run: _Run, val: ImageDataset, running: dict[str, Any], elapsed: float, n_images: int) -> None:
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


def _loop(run: _Run, train: ImageDataset, val: ImageDataset, partial_path: Path, progress: bool,
          workers: int | None = None) -> None:
    """Steps until total_steps: validation every eval_every steps and at the end, a partial checkpoint after
    each validation but the last."""
    per_example = run.objective.images_per_example()
    batches = _batches(run, train, workers)
    run.model.train()
    bar = tqdm(total=run.total_steps, initial=run.state["step"], desc=f"train {run.label}",
               disable=not (progress and run.is_main), dynamic_ncols=True, leave=False)
    running: dict[str, Any] = {}
    window_start, window_images = time.perf_counter(), 0
    while run.state["step"] < run.total_steps:
        x, y, shard, weight, batch = next(batches)
        event("train step")
        losses = _step(run, x, y, shard, weight)
        step = run.state["step"]
        for name, value in losses.items():  # stays on the device until the log; under DDP weighted by the shard
            running[name] = running.get(name, 0.0) + (value.detach() if weight is None else value.detach() * weight)
        window_images += batch * per_example
        bar.update(1)
        if step % 10 == 0:
            elapsed = time.perf_counter() - window_start
            bar.set_postfix(loss=f"{float(losses['loss'].detach()):.3f}", img_s=f"{window_images / max(elapsed, 1e-9):.0f}")
        if step % run.config.eval_every == 0 or step == run.total_steps:
            _evaluate(run, val, running, time.perf_counter() - window_start, window_images)
            running = {}
            window_start, window_images = time.perf_counter(), 0
            if step < run.total_steps and run.is_main:
                _save_partial(run, partial_path)
    batches.close()
    bar.close()


def _load_splits(data: DataSpec) -> tuple[ImageDataset, ImageDataset]:
    train, val = data.load("train"), data.load("val")
    if len(train) == 0 or len(val) == 0:
        raise XaibenchError(f"{data.name}: the train and val splits must not be empty "
                            f"(train {len(train)}, val {len(val)})")
    return train, val


@dataclass
class _Job:
    """One train_model call: what to train, where, and (under torchrun) this process's place in it."""

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


def train_model(model_name: str, data: DataSpec, config: TrainConfig | None = None, seed: int = 0,
                device: torch.device | str = "cpu", cache: Path | None = None, progress: bool = True,
                log=None, workers: int | None = None) -> TrainedModel:
    """Train (or load from the cache) `model_name` on `data` with its objective; model selection on the
    validation split. Progress lines go to this module's logger (`log` is deprecated and ignored).

    One process trains a checkpoint at a time (a lock beside it); under torchrun (WORLD_SIZE > 1) every process
    calls this and the training runs across them with DDP (distributed.py). `workers`: DataLoader processes
    gathering the training batches (default 0: on the CPU the split is indexed in memory, on CUDA the batches
    are gathered in this process into pinned memory)."""
    from xaibench.training.distributed import collective  # not at the top: torchrun runs that module as __main__

    config = config or TrainConfig()
    group = collective(device, config.batch_size)
    device = group.device if group is not None else torch.device(device)
    key = checkpoint_key(data, model_name, config, seed)
    final_path = _checkpoint_file(data, model_name, key, cache)
    job = _Job(model_name, data, config, seed, device, cache, progress, workers, key, final_path, group)
    if group is not None:
        return _train_collective(job)
    trained = _load_or_forget(final_path, device)
    if trained is not None:
        return trained
    with unit_lock(final_path):
        trained = _load_or_forget(final_path, device)
        if trained is not None:  # written by another process while this one waited for the lock
            logger.info("%s on %s: trained meanwhile by another process (%s)", model_name, data.name,
                        final_path.name)
            return trained
        return _train(job)


def _train_collective(job: _Job) -> TrainedModel:
    """Rank 0 checks the cache under the lock and, where the checkpoint is missing, all ranks train it; then
    every rank loads the checkpoint rank 0 wrote."""
    group = job.group
    with unit_lock(job.final_path) if group.is_main else contextlib.nullcontext():
        cached = _load_or_forget(job.final_path, job.device) is not None if group.is_main else None
        if not group.broadcast(cached):
            _train(job)
        group.barrier()
    return load_trained(existing_checkpoint(job.final_path) or job.final_path, job.device)


def _train(job: _Job) -> TrainedModel | None:
    """Build, warm-start (or resume) and train the model, then write the checkpoint (rank 0 under DDP)."""
    model_name, data, config, seed, device = job.model_name, job.data, job.config, job.seed, job.device
    partial_path = job.final_path.with_suffix(".partial")
    objective = resolve_objective(model_name, config)
    if job.group is not None and "shard" not in inspect.signature(objective.loss).parameters:
        raise XaibenchError(f"objective {objective.name!r} cannot train under torchrun: its loss takes no `shard` "
                            f"(see Objective.loss)")
    train, val = _load_splits(data)
    kwargs = model_kwargs(model_name, train, config)
    model = build_model(model_name, kwargs, seed, train)
    resume = partial_path.exists()
    if job.group is not None:
        resume = job.group.broadcast(resume)
    init_record = None
    if not resume:
        init_record = objective.warm_start(
            model, config, lambda name, warm_config: train_model(name, data, warm_config, seed, device, job.cache,
                                                                 job.progress, workers=job.workers))
    model.to(device)
    run = _start_run(f"{model_name}/{data.name}", model, objective, config, len(train), seed, device, init_record,
                     job.group)
    if resume:
        _resume(run, partial_path)
        if run.is_main:
            logger.info("resuming %s on %s from step %d (%s)", model_name, data.name, run.state["step"],
                        partial_path.name)
    _loop(run, train, val, partial_path, job.progress, job.workers)
    if not run.is_main:
        return None
    return _finish(run, model_name, data, seed, job.key, kwargs, job.final_path, partial_path)


def _finish(run: _Run, model_name: str, data: DataSpec, seed: int, key: str, kwargs: dict[str, Any],
            final_path: Path, partial_path: Path) -> TrainedModel:
    """Best weights into the model and the final checkpoint; the partial one removed."""
    best, state = run.state["best"], run.state
    run.model.load_state_dict(best["state_dict"])
    record = {"model_name": model_name, "data": data.key(), "config": asdict(run.config),
              "objective": run.objective.name, "seed": seed, "key": key,
              "best_step": best["step"], "val_acc": best["val_acc"], "val_auc": best["val_auc"],
              "history": state["history"], "train_seconds": state["seconds"], "device": str(run.device),
              "init": run.init_record, "computed_by": worker_id()}
    if run.group is not None:
        record["world_size"] = run.group.world_size
    saved_kwargs = {**kwargs, "pretrained": None} if "pretrained" in kwargs else dict(kwargs)
    save_checkpoint(final_path, Checkpoint(model_name, saved_kwargs, best["state_dict"], record))
    partial_path.unlink(missing_ok=True)
    run.model.eval()
    run.model.trained_masked = run.objective.trains_masked  # read by amortized explainers (surrogate="auto")
    return TrainedModel(run.model, record, final_path, trained_now=True)
