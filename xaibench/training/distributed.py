"""One training on several GPUs (or CPU processes) with PyTorch's DistributedDataParallel, under torchrun.

When torchrun's environment says WORLD_SIZE > 1, `train_model` runs as a collective: every process calls it
with the same arguments; the process group is initialised here unless it already is (nccl on CUDA, each
process on cuda:LOCAL_RANK; gloo on the CPU). `batch_size` stays the global batch: each process computes its
rows of it (batch_size must divide by the world size), every random draw is made for the global batch from the
same seeded generators and sliced, and each process's loss is weighted by its share of the batch, so DDP's
averaged gradient is the global batch's mean gradient: one step equals one process's step on the global batch
up to float reduction order. Rank 0 alone checks the cache, takes the checkpoint's lock, validates, and writes
the partial and final checkpoints (the cache folder must be shared by all processes); the others wait at a
barrier, then load the final checkpoint. Model selection is rank 0's decision, broadcast to all.

Launch: `torchrun --standalone --nproc_per_node N -m xaibench.cli train ...` (the runner calls train_model on
every rank, then rank 0 alone writes Table 1).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from xaibench.errors import XaibenchError
from xaibench.training.masks import BatchShard

_LOCAL_ONLY = [0]  # > 0 inside local_only()


def rank() -> int:
    """RANK of torchrun's environment (0 outside it)."""
    return int(os.environ.get("RANK", "0"))


@contextlib.contextmanager
def local_only():
    """Within it train_model ignores torchrun's environment: this process alone, no collective (e.g. rank 0
    reading, after the collective trainings, the checkpoints they wrote)."""
    _LOCAL_ONLY[0] += 1
    try:
        yield
    finally:
        _LOCAL_ONLY[0] -= 1


def shutdown() -> None:
    """Destroy the process group if one is initialised (at the end of a torchrun process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    """WORLD_SIZE of torchrun's environment (1 outside it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise XaibenchError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


@dataclass(frozen=True)
class Collective:
    """This process's place in a DDP training: its rank, the world size and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def barrier(self) -> None:
        dist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def shard(self, total: int) -> tuple[BatchShard, float]:
        """This rank's rows of a global batch of `total` and the weight of its loss (its share times the world
        size, as DDP divides the summed gradients by the world size). A rank left without rows (a last batch
        smaller than the world) computes row 0 with weight 0, so that every rank joins the gradient reduction."""
        start, stop = total * self.rank // self.world_size, total * (self.rank + 1) // self.world_size
        if start == stop:
            return BatchShard(0, 1, total), 0.0
        return BatchShard(start, stop, total), (stop - start) * self.world_size / total

    def global_mean(self, local: dict[str, torch.Tensor], weight: float) -> dict[str, torch.Tensor]:
        """Per name, the global batch's mean from each rank's batch means (weighted as in `shard`)."""
        names = sorted(local)
        stacked = torch.stack([local[name].detach().float() for name in names]) * (weight / self.world_size)
        dist.all_reduce(stacked)
        return dict(zip(names, stacked))

    def wrap(self, model: torch.nn.Module, objective) -> torch.nn.Module:
        """DDP over the objective's loss: one DDP forward per step however often the loss calls the model."""
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(ObjectiveLoss(model, objective), device_ids=device_ids,
                                       static_graph=True)


class ObjectiveLoss(torch.nn.Module):
    """forward = the objective's loss of the model on a shard of the global batch (what DDP wraps)."""

    def __init__(self, model: torch.nn.Module, objective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x, y, generator, shard):
        return self.objective.loss(self.model, x, y, generator, shard=shard)


def collective(device: torch.device | str, batch_size: int) -> Collective | None:
    """None outside torchrun (WORLD_SIZE unset or 1); else this process's Collective, the process group
    initialised if it is not yet (nccl and cuda:LOCAL_RANK for a CUDA device, gloo otherwise). The global
    `batch_size` must divide by the world size."""
    size = world_size()
    if size <= 1 or _LOCAL_ONLY[0]:
        return None
    if batch_size % size:
        raise XaibenchError(f"batch_size {batch_size} (the global batch) must divide by the world size {size}")
    device = torch.device(device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.get_world_size() != size:
        raise XaibenchError(f"the process group has {dist.get_world_size()} processes, WORLD_SIZE says {size}")
    return Collective(dist.get_rank(), size, device)

