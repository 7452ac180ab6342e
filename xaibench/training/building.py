"""Building what a training starts from: the model (its factory's arguments read from the factory's signature,
its weights drawn from the seed) and the optimiser (AdamW parameter groups, warm-up and cosine schedule)."""
from __future__ import annotations

import inspect
import math
import typing
from dataclasses import asdict
from typing import Any, Callable

import torch

from xaibench.data import ImageDataset
from xaibench.models import MaskedClassifier, create_model
from xaibench.registry import MODELS
from xaibench.training.config import TrainConfig

# Model options taken from the training images, offered to a factory that names them.
DATA_OPTIONS = {"fill_value": lambda train: train.channel_mean()}


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


def param_groups(model: MaskedClassifier, config: TrainConfig) -> list[dict[str, Any]]:
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


def lr_schedule(warmup: int, total: int) -> Callable[[int], float]:
    """The learning rate's factor at a step: linear warm-up over `warmup` steps, then a cosine to 0 at `total`."""
    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return schedule


def build_optimizer(model: MaskedClassifier, config: TrainConfig, total_steps: int):
    """AdamW over param_groups and its LambdaLR schedule (warm-up of at most total_steps)."""
    optimizer = torch.optim.AdamW(param_groups(model, config), betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(min(config.warmup_steps, total_steps),
                                                                         total_steps))
    return optimizer, scheduler
