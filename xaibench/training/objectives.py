"""Training objectives: what a model is trained to minimise, with the options only that objective reads.

`ce` (cross-entropy, l1 alone) trains the baselines; `ofa` (L = l1 + l2 + l3 with informed masks, SPEC §3)
trains OFA. A model declares the objective it is trained with by default on its registered factory
(`factory.objective = "ofa"`; `ce` when it declares none); a training config's `objective` overrides it.
A plugin adds an objective with `@register_objective("name")` on an `Objective` subclass.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from xaibench.errors import XaibenchError
from xaibench.io import file_digest
from xaibench.registry import MODELS, Registry
from xaibench.training.losses import DETACH_CHOICES, KL_ORDERS, L3_TARGETS, classification_loss, ofa_loss
from xaibench.training.masks import MASK_SIZES, BatchShard

OBJECTIVES = Registry("objective", ["xaibench.training.objectives"], "xaibench.objectives")
register_objective = OBJECTIVES.register
DEFAULT_OBJECTIVE = "ce"


@dataclass
class NoOptions:
    """The options of an objective that has none."""


class Objective:
    """Owns a training loss and its options. Subclasses set `Options` (a dataclass) and override `loss`."""

    Options: type = NoOptions
    #: whether the loss trains the model's masked forward (then the model is a surrogate of itself under masking)
    trains_masked: bool = False

    def __init__(self, options: Any = None):
        self.options = options if options is not None else self.Options()

    @property
    def name(self) -> str:
        return getattr(type(self), "registered_name", type(self).__name__)

    def loss(self, model, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
             shard: BatchShard | None = None) -> dict[str, torch.Tensor]:
        """{"loss": the tensor to minimise, other names: detached parts to log}, each a mean over the batch.

        An objective trains under torchrun only when it takes `shard`: x and y are then the rows shard.start:
        shard.stop of a global batch of shard.total, and every random draw must be made for the global batch
        and sliced (`BatchShard.pad`/`take`), so the step equals one process's step on the global batch."""
        raise NotImplementedError

    def images_per_example(self) -> int:
        """Images the network sees per training image and step (for the img/s figure)."""
        return 1

    def key_options(self) -> dict[str, Any]:
        """What of the options goes into the checkpoint key (the options themselves, by default)."""
        return asdict(self.options)

    def warm_start(self, model, config, train: Callable[[str, Any], Any]) -> dict[str, Any] | None:
        """Set the model's starting weights before training; `train(model_name, config)` trains (or loads)
        another model on the same data and seed. Returns a record of what was done, or None."""
        return None


@register_objective("ce")
class CrossEntropy(Objective):
    """l1 only: cross-entropy of the unmasked image's logits (the ResNet, ViT and Segm baselines)."""

    def loss(self, model, x, y, generator, shard=None):  # no random draw: a shard needs nothing
        return classification_loss(model, x, y)


@dataclass
class OFAOptions:
    """OFA's options (SPEC §3; defaults: the CPU recipe of docs/training.md)."""

    n_masks: int = 4  # M, informed masks per image for l3
    uniform_share: float = 0.25
    mask_sizes: str = "uniform"  # subset sizes of the informed masks: "uniform" or "shapley" (the kernel)
    paired: bool = True  # every second informed mask is the complement of the one before
    detach: str = "masked"  # which side of l3 is the (detached) target
    kl_order: str = "paper"  # "paper": KL(u_x(S) || u_{x_S}(S)) as Eq. 7; "swapped": the reverse
    loss_weights: tuple[float, float, float] = (1.0, 1.0, 5.0)  # l1, l2, l3
    init: str | None = "segm"  # warm start: a registered model trained with `ce` first, a checkpoint file, or None
    init_steps: int | None = 300  # steps of that warm start (None = steps)
    # l3's form: "kl" (Eq. 7) or "wls" (the masked logits fitted by least squares, as ViT-Shapley fits them)
    l3_target: str = "kl"

    def __post_init__(self):
        for name, valid in (("detach", DETACH_CHOICES), ("mask_sizes", MASK_SIZES), ("kl_order", KL_ORDERS),
                            ("l3_target", L3_TARGETS)):
            if getattr(self, name) not in valid:
                raise XaibenchError(f"unknown {name} {getattr(self, name)!r}; valid: {', '.join(valid)}")
        if self.n_masks < 1:
            raise XaibenchError(f"n_masks must be >= 1, got {self.n_masks}")
        self.loss_weights = tuple(self.loss_weights)
        if len(self.loss_weights) != 3:
            raise XaibenchError(f"loss_weights must be three numbers (l1, l2, l3), got {list(self.loss_weights)}")


@register_objective("ofa")
class OFAObjective(Objective):
    """L = l1 + l2 + l3 (weighted): one unmasked and one batched masked forward per step."""

    Options = OFAOptions
    trains_masked = True  # l2 and l3 train the masked forward

    def loss(self, model, x, y, generator, shard=None):
        o = self.options
        return ofa_loss(model, x, y, n_masks=o.n_masks, generator=generator, uniform_share=o.uniform_share,
                        detach=o.detach, kl_order=o.kl_order, mask_sizes=o.mask_sizes, paired=o.paired,
                        weights=o.loss_weights, shard=shard, l3_target=o.l3_target)

    def images_per_example(self) -> int:
        return 1 + self.options.n_masks + 1

    def key_options(self) -> dict[str, Any]:
        options = asdict(self.options)
        if options["l3_target"] == "kl":  # added in 0.6.0: at its default, the checkpoint keys stay as they were
            del options["l3_target"]
        init = options["init"]
        if init and init not in MODELS and Path(init).expanduser().is_file():  # a file's contents, not its name
            options["init"] = file_digest(init)
        return options

    def warm_start(self, model, config, train):
        """OFA starts from the same network trained with l1 alone (the in-tree DINOv2 analogue), or a file."""
        init = self.options.init
        if not init:
            return None
        if init in MODELS:
            warm = train(init, config.replace(steps=self.options.init_steps or config.steps, objective="ce"))
            _load_weights(model, warm.model.state_dict(), strict=True, source=f"the {init} warm start")
            return {"from": init, "path": str(warm.path), "val_acc": warm.record["val_acc"]}
        path = Path(init).expanduser()
        if not path.exists():
            raise XaibenchError(f"OFA init {init!r} is neither a registered model ({', '.join(MODELS.names())}) "
                                f"nor an existing checkpoint file")
        from xaibench.models.pretrained import read_state_dict  # safetensors, or torch with weights_only=True

        state_dict = read_state_dict(path, "OFA init checkpoint")
        _load_weights(model, state_dict, strict=False, source=f"checkpoint {path}")
        return {"from": str(path)}


def _load_weights(model, state_dict: dict[str, torch.Tensor], strict: bool, source: str) -> None:
    try:
        missing, _ = model.load_state_dict(state_dict, strict=strict)
    except RuntimeError as error:
        raise XaibenchError(f"{source} does not fit the network: {str(error).splitlines()[0]}") from None
    if len(missing) > len(state_dict):
        raise XaibenchError(f"{source} does not fit the network ({len(missing)} tensors missing)")


def default_objective(model_name: str) -> str:
    """The objective a registered model declares on its factory (`factory.objective`), else `ce`."""
    return getattr(MODELS.get(model_name), "objective", DEFAULT_OBJECTIVE)


def check_objective(name: str) -> str:
    if name not in OBJECTIVES:
        raise XaibenchError(f"unknown objective {name!r}; valid: {', '.join(OBJECTIVES.names())}")
    return name
