"""Where data becomes a trained model: one trainer for OFA, Segm, ViT and the ResNets.

Checkpoints are keyed by a hash of (dataset, size, model, training config, seed) and written
atomically under the cache folder; asking for the same training twice loads the checkpoint,
and an interrupted training resumes from its last partial checkpoint.
"""
from __future__ import annotations

import copy
import hashlib
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from xaibench.data import ImageDataset, create_dataset
from xaibench.data.base import to_float
from xaibench.errors import XaibenchError
from xaibench.io import atomic_torch_save, cache_dir, stable_hash
from xaibench.models import MaskedClassifier, OccludedResNet, create_model
from xaibench.models.ofa import OFANet
from xaibench.training.evaluation import autocast_for, classification_scores, predict_proba
from xaibench.training.masks import MASK_SIZES
from xaibench.training.losses import DETACH_CHOICES, KL_ORDERS, classification_loss, ofa_loss

CHECKPOINT_VERSION = 1
# Per-model revision, part of the key: raise it when a change to a model's code changes what its training
# produces, so that only that model's checkpoints are retrained. ofa 2: phi centred over the classes, which
# the informed masks are drawn from.
MODEL_REVISIONS = {"ofa": 2}


@dataclass
class TrainConfig:
    """Training options. Paper (ViT-B, DINOv2 init): lr 1e-5, weight decay 1e-5, batch 64, ~10k steps,
    at most 100 epochs, M = 32 masks. The defaults are the CPU recipe chosen by measurement on the
    synthetic set (docs/training.md): 300 Segm steps, then 500 OFA steps with l3 weighted 5, uniform
    subset sizes and paired masks, logit scale 10. The baselines train for `steps` (500) as well."""

    steps: int = 500
    batch_size: int = 32
    lr: float = 5e-4
    decoder_lr: float | None = None  # OFA/Segm decoder; None = lr
    weight_decay: float = 0.05
    warmup_steps: int = 50
    grad_clip: float = 1.0
    max_epochs: int = 100
    n_masks: int = 4  # M, informed masks per image for l3
    uniform_share: float = 0.25
    mask_sizes: str = "uniform"  # subset sizes of the informed masks: "uniform" or "shapley" (the kernel)
    paired: bool = True  # every second informed mask is the complement of the one before
    detach: str = "masked"  # which side of l3 is the (detached) target
    kl_order: str = "paper"  # "paper": KL(u_x(S) || u_{x_S}(S)) as Eq. 7; "swapped": the reverse
    loss_weights: tuple[float, float, float] = (1.0, 1.0, 5.0)  # l1, l2, l3
    init: str | None = "segm"  # OFA warm start: "segm" (l1-only training first), a checkpoint path, or None
    init_steps: int | None = 300  # steps of that l1-only warm start (None = steps)
    arch: str = "tiny"
    patch_size: int | None = None
    logit_scale_init: float = 10.0
    pretrained: str | None = None
    fill: str = "mean"
    model_options: dict[str, Any] = field(default_factory=dict)  # e.g. depth, embed_dim for the ViT encoder
    eval_every: int = 100

    def __post_init__(self):
        if self.detach not in DETACH_CHOICES:
            raise XaibenchError(f"unknown detach {self.detach!r}; valid: {', '.join(DETACH_CHOICES)}")
        if self.mask_sizes not in MASK_SIZES:
            raise XaibenchError(f"unknown mask_sizes {self.mask_sizes!r}; valid: {', '.join(MASK_SIZES)}")
        if self.kl_order not in KL_ORDERS:
            raise XaibenchError(f"unknown kl_order {self.kl_order!r}; valid: {', '.join(KL_ORDERS)}")
        for name in ("steps", "batch_size", "eval_every", "max_epochs"):
            if getattr(self, name) < 1:
                raise XaibenchError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_masks < 1:
            raise XaibenchError(f"n_masks must be >= 1, got {self.n_masks}")
        self.loss_weights = tuple(self.loss_weights)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise XaibenchError(f"unknown training option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**values)

    def replace(self, **changes) -> "TrainConfig":
        return TrainConfig.from_dict({**asdict(self), **changes})


@dataclass
class DataSpec:
    """Which data a model is trained on; part of the checkpoint key."""

    name: str
    size: int = 28
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # e.g. synthetic n_samples, n_classes, seed

    def load(self, split: str) -> ImageDataset:
        return create_dataset(self.name, split, size=self.size, root=self.root, **self.options)

    def key(self) -> dict[str, Any]:  # the data root is where, not what: it stays out of the key
        return {"name": self.name, "size": self.size, "options": self.options}


@dataclass
class TrainedModel:
    model: MaskedClassifier
    record: dict[str, Any]
    path: Path


def checkpoint_key(data: DataSpec, model_name: str, config: TrainConfig, seed: int) -> str:
    config_dict = asdict(config)
    if model_name != "ofa":  # warm-start and mask options only matter for OFA
        for name in ("n_masks", "uniform_share", "mask_sizes", "paired", "detach", "kl_order", "loss_weights", "init",
                     "init_steps"):
            config_dict.pop(name)
    init = config_dict.get("init")
    if init and init != "segm" and Path(init).expanduser().is_file():  # a file's contents, not its name
        config_dict["init"] = hashlib.sha256(Path(init).expanduser().read_bytes()).hexdigest()
    key = {"v": CHECKPOINT_VERSION, "data": data.key(), "model": model_name, "config": config_dict, "seed": seed}
    if model_name in MODEL_REVISIONS:
        key["revision"] = MODEL_REVISIONS[model_name]
    return stable_hash(key)


def checkpoint_path(data: DataSpec, model_name: str, config: TrainConfig, seed: int, cache: Path | None = None) -> Path:
    """The final checkpoint file train_model writes or loads for these inputs (pure: nothing is trained)."""
    key = checkpoint_key(data, model_name, config, seed)
    return Path(cache or cache_dir()) / "checkpoints" / f"{model_name}-{data.name}-{data.size}-{key}.pt"


def model_kwargs(model_name: str, train: ImageDataset, config: TrainConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(num_classes=train.info.n_classes, in_chans=train.info.in_chans,
                                  img_size=train.info.size, patch_size=config.patch_size, pretrained=config.pretrained)
    if model_name in ("ofa", "segm"):
        kwargs.update(arch=config.arch, logit_scale_init=config.logit_scale_init)
    elif model_name == "vit":
        kwargs.update(arch=config.arch)
    else:
        kwargs.update(fill=config.fill)
    kwargs.update(config.model_options)
    return kwargs


def _lr_lambda(warmup: int, total: int):
    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return schedule


def _param_groups(model: MaskedClassifier, config: TrainConfig) -> list[dict[str, Any]]:
    decoder_lr = config.decoder_lr if config.decoder_lr is not None else config.lr
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        is_decoder = isinstance(model, OFANet) and not name.startswith("encoder.")
        decay = param.ndim >= 2 and "token" not in name and "pos_embed" not in name and "class_embed" not in name
        groups.setdefault((is_decoder, decay), []).append(param)
    return [{"params": params, "lr": decoder_lr if is_decoder else config.lr,
             "weight_decay": config.weight_decay if decay else 0.0}
            for (is_decoder, decay), params in sorted(groups.items())]


def build_model(model_name: str, kwargs: dict[str, Any], seed: int) -> MaskedClassifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(model_name, **kwargs)


def load_trained(path: Path, device: torch.device | str = "cpu") -> TrainedModel:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise XaibenchError(f"cannot read checkpoint {path}: {error}") from None
    kwargs = dict(saved["model_kwargs"], pretrained=None)
    model = create_model(saved["model_name"], **kwargs)
    model.load_state_dict(saved["state_dict"])
    return TrainedModel(model.to(device).eval(), saved["record"], Path(path))


def train_model(model_name: str, data: DataSpec, config: TrainConfig | None = None, seed: int = 0,
                device: torch.device | str = "cpu", cache: Path | None = None, progress: bool = True,
                log=print) -> TrainedModel:
    """Train (or load from the cache) `model_name` on `data`; model selection on the validation split."""
    config = config or TrainConfig()
    device = torch.device(device)
    folder = Path(cache or cache_dir()) / "checkpoints"
    key = checkpoint_key(data, model_name, config, seed)
    final_path = folder / f"{model_name}-{data.name}-{data.size}-{key}.pt"
    if final_path.exists():
        return load_trained(final_path, device)
    partial_path = final_path.with_suffix(".partial.pt")

    train, val = data.load("train"), data.load("val")
    if len(train) == 0 or len(val) == 0:
        raise XaibenchError(f"{data.name}: the train and val splits must not be empty "
                            f"(train {len(train)}, val {len(val)})")
    kwargs = model_kwargs(model_name, train, config)
    model = build_model(model_name, kwargs, seed)
    if isinstance(model, OccludedResNet):
        model.fill_value.copy_(train.channel_mean())
    init_record = None
    if model_name == "ofa" and config.init and not partial_path.exists():
        init_record = _warm_start(model, data, config, seed, device, cache, progress, log)
    model.to(device)

    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = min(config.steps, config.max_epochs * steps_per_epoch)
    optimizer = torch.optim.AdamW(_param_groups(model, config), betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(min(config.warmup_steps, total_steps),
                                                                       total_steps))
    order_generator = torch.Generator().manual_seed(seed)
    mask_generator = torch.Generator(device=device).manual_seed(seed + 1)
    state: dict[str, Any] = {"step": 0, "epoch_order": None, "best": None, "history": [], "seconds": 0.0}
    if partial_path.exists():
        saved = torch.load(partial_path, map_location="cpu", weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        order_generator.set_state(saved["order_generator"])
        mask_generator.set_state(saved["mask_generator"])
        state = saved["state"]
        init_record = saved.get("init_record")
        log(f"resuming {model_name} on {data.name} from step {state['step']} ({partial_path.name})")

    images = train.images.to(device)
    labels = train.labels.to(device)
    is_ofa = model_name == "ofa"
    model.train()
    bar = tqdm(total=total_steps, initial=state["step"], desc=f"train {model_name}/{data.name}",
               disable=not progress, dynamic_ncols=True, leave=False)
    running: dict[str, float] = {}
    window_start, window_images = time.perf_counter(), 0
    while state["step"] < total_steps:
        step = state["step"]
        position = step % steps_per_epoch
        if position == 0 or state["epoch_order"] is None:
            state["epoch_order"] = torch.randperm(len(train), generator=order_generator)
        index = state["epoch_order"][position * config.batch_size:(position + 1) * config.batch_size].to(device)
        x, y = to_float(images[index]), labels[index]
        with autocast_for(device):
            if is_ofa:
                losses = ofa_loss(model, x, y, n_masks=config.n_masks, generator=mask_generator,
                                  uniform_share=config.uniform_share, detach=config.detach,
                                  kl_order=config.kl_order, mask_sizes=config.mask_sizes, paired=config.paired,
                                  weights=config.loss_weights)
            else:
                losses = classification_loss(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        state["step"] = step + 1
        for name, value in losses.items():
            running[name] = running.get(name, 0.0) + value.detach()  # stays on the device until the log
        window_images += x.shape[0] * ((1 + config.n_masks + 1) if is_ofa else 1)
        bar.update(1)
        if state["step"] % 10 == 0:
            elapsed = time.perf_counter() - window_start
            bar.set_postfix(loss=f"{float(losses['loss'].detach()):.3f}", img_s=f"{window_images / max(elapsed, 1e-9):.0f}")
        if state["step"] % config.eval_every == 0 or state["step"] == total_steps:
            elapsed = time.perf_counter() - window_start
            scores = classification_scores(predict_proba(model, val, device), val)
            model.train()
            count = config.eval_every if state["step"] % config.eval_every == 0 else state["step"] % config.eval_every
            entry = {"step": state["step"], "epoch": state["step"] / steps_per_epoch,
                     **{name: float(value) / count for name, value in running.items()},
                     "val_acc": scores["acc"], "val_auc": scores["auc"],
                     "images_per_s": window_images / max(elapsed, 1e-9)}
            state["history"].append(entry)
            state["seconds"] += elapsed
            log(f"{model_name}/{data.name} step {entry['step']} epoch {entry['epoch']:.1f}: " +
                " ".join(f"{name} {entry[name]:.4f}" for name in running) +
                f" val_acc {scores['acc']:.4f} val_auc {scores['auc']:.4f} ({entry['images_per_s']:.0f} img/s)")
            if state["best"] is None or scores["acc"] >= state["best"]["val_acc"]:
                state["best"] = {"val_acc": scores["acc"], "val_auc": scores["auc"], "step": state["step"],
                                 "state_dict": copy.deepcopy({k: v.detach().cpu() for k, v in
                                                              model.state_dict().items()})}
            running = {}
            window_start, window_images = time.perf_counter(), 0
            if state["step"] < total_steps:
                atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                   "scheduler": scheduler.state_dict(), "order_generator": order_generator.get_state(),
                                   "mask_generator": mask_generator.get_state(), "state": state,
                                   "init_record": init_record}, partial_path)
    bar.close()

    best = state["best"]
    model.load_state_dict(best["state_dict"])
    record = {"model_name": model_name, "data": data.key(), "config": asdict(config), "seed": seed, "key": key,
              "best_step": best["step"], "val_acc": best["val_acc"], "val_auc": best["val_auc"],
              "history": state["history"], "train_seconds": state["seconds"], "device": str(device),
              "init": init_record}
    atomic_torch_save({"model_name": model_name, "model_kwargs": {**kwargs, "pretrained": None},
                       "state_dict": best["state_dict"], "record": record}, final_path)
    partial_path.unlink(missing_ok=True)
    model.eval()
    return TrainedModel(model, record, final_path)


def _warm_start(model: OFANet, data: DataSpec, config: TrainConfig, seed: int, device, cache, progress, log):
    """OFA starts from the same network trained with l1 alone (the in-tree DINOv2 analogue), or a file."""
    if config.init == "segm":
        segm_config = config.replace(steps=config.init_steps or config.steps)
        warm = train_model("segm", data, segm_config, seed, device, cache, progress, log)
        model.load_state_dict(warm.model.state_dict())
        return {"from": "segm", "path": str(warm.path), "val_acc": warm.record["val_acc"]}
    path = Path(config.init).expanduser()
    if not path.exists():
        raise XaibenchError(f"OFA init {config.init!r} is neither 'segm' nor an existing checkpoint file")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    state_dict = saved.get("state_dict", saved) if isinstance(saved, dict) else saved
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if len(missing) > len(state_dict):
        raise XaibenchError(f"checkpoint {path} does not fit the OFA network ({len(missing)} tensors missing)")
    return {"from": str(path)}
