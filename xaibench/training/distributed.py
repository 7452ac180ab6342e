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

Launch (prints the checkpoint path on rank 0):

    torchrun --standalone --nproc_per_node N -m xaibench.training.distributed --model ofa --dataset NAME \\
        --size S --set key=value ... --cache DIR
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Sequence

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m xaibench.training.distributed",
        description="Train one model (or load it from the checkpoint cache) with DDP across the processes that "
                    "torchrun starts; rank 0 prints the checkpoint path.",
        epilog="Example: torchrun --standalone --nproc_per_node 8 -m xaibench.training.distributed --model ofa "
               "--dataset pneumoniamnist --size 224 --set batch_size=64 --cache DIR. Exit codes: 0 done, 2 bad "
               "usage.")
    parser.add_argument("--model", required=True, help="registered model name, e.g. ofa")
    parser.add_argument("--dataset", required=True, help="registered dataset name")
    parser.add_argument("--size", type=int, default=28, help="image side in pixels (default 28)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--data-root", help="folder of the MedMNIST npz files (default $XAIBENCH_DATA)")
    parser.add_argument("--config", help="TOML or JSON file with [train] (and [data.<name>]) options")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one training option")
    parser.add_argument("--cache", help="cache folder shared by all processes (default $XAIBENCH_CACHE)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (cuda: each process cuda:LOCAL_RANK)")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader worker processes per rank for the training batches (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no training log")
    return parser


def _train(args: argparse.Namespace) -> str:
    from pathlib import Path

    from xaibench.config import parse_overrides, read_config
    from xaibench.engine.options import data_spec, resolve_device, train_config_for
    from xaibench.logs import setup_logging
    from xaibench.registry import MODELS
    from xaibench.training.trainer import train_model

    main = rank() == 0
    setup_logging(args.quiet or not main)
    MODELS.get(args.model)
    config = read_config(args.config)
    train_config = train_config_for(args.model, config, parse_overrides(args.set), args.dataset)
    spec = data_spec(args.dataset, args.size, args.data_root, config)
    trained = train_model(args.model, spec, train_config, args.seed, resolve_device(args.device),
                          Path(args.cache) if args.cache else None, progress=main and not args.quiet,
                          workers=args.workers)
    return str(trained.path)


def main(argv: Sequence[str] | None = None) -> int:
    from xaibench.registry import UnknownNameError

    args = build_parser().parse_args(argv)
    try:
        path = _train(args)
    except (XaibenchError, UnknownNameError) as error:
        print(f"xaibench: error: {str(error).splitlines()[0] if str(error) else error}", file=sys.stderr)
        return 2
    finally:
        shutdown()
    if rank() == 0:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
