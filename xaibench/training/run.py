"""One training in progress (`TrainingRun`): the model, its optimiser and schedule, both generators and the
state of the loop, and its partial checkpoint (written after each validation, read to resume)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from xaibench.io import atomic_sealed_save, sealed_load
from xaibench.models import MaskedClassifier
from xaibench.training.building import build_optimizer
from xaibench.training.config import TrainConfig
from xaibench.training.objectives import Objective

if TYPE_CHECKING:
    from xaibench.training.distributed import Collective


def _fresh_state() -> dict[str, Any]:
    return {"step": 0, "epoch_order": None, "best": None, "history": [], "seconds": 0.0}


@dataclass
class TrainingRun:
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
    state: dict[str, Any] = field(default_factory=_fresh_state)
    group: Collective | None = None  # under torchrun: this process's place in the DDP training
    ddp: torch.nn.Module | None = None  # DDP over the objective's loss (with a group)

    @classmethod
    def start(cls, label: str, model, objective: Objective, config: TrainConfig, n_train: int, seed: int,
              device: torch.device, init_record, group: Collective | None = None) -> "TrainingRun":
        """A run at step 0: the optimiser built, the epoch-order generator seeded with `seed`, the mask
        generator (on the device) with seed + 1; under DDP the objective's loss wrapped."""
        steps_per_epoch = math.ceil(n_train / config.batch_size)
        total_steps = min(config.steps, config.max_epochs * steps_per_epoch)
        optimizer, scheduler = build_optimizer(model, config, total_steps)
        order_generator = torch.Generator().manual_seed(seed)
        mask_generator = torch.Generator(device=device).manual_seed(seed + 1)
        run = cls(label, model, objective, config, device, steps_per_epoch, total_steps, optimizer, scheduler,
                  order_generator, mask_generator, init_record)
        if group is not None:
            run.group, run.ddp = group, group.wrap(model, objective)
        return run

    @property
    def is_main(self) -> bool:
        return self.group is None or self.group.is_main

    def save_partial(self, path: Path) -> None:
        """The partial checkpoint: everything a resumed run needs to take the same steps."""
        atomic_sealed_save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                            "scheduler": self.scheduler.state_dict(),
                            "order_generator": self.order_generator.get_state(),
                            "mask_generator": self.mask_generator.get_state(), "state": self.state,
                            "init_record": self.init_record}, path)

    def resume(self, path: Path) -> None:
        """Continue from the partial checkpoint at `path` (written by save_partial)."""
        saved = sealed_load(path)
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.order_generator.set_state(saved["order_generator"])
        self.mask_generator.set_state(saved["mask_generator"])
        self.state = saved["state"]
        self.init_record = saved.get("init_record")
