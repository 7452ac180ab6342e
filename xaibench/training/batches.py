"""The training batches: each step's rows in a seeded epoch order (a new randperm per epoch), this process's
shard of them under DDP, gathered in memory on the CPU or by a DataLoader (pinned on CUDA)."""
from __future__ import annotations

from typing import Iterator

import torch

from xaibench.data import ImageDataset
from xaibench.data.base import to_float
from xaibench.training.masks import BatchShard
from xaibench.training.run import TrainingRun

Batch = tuple[torch.Tensor, torch.Tensor, BatchShard | None, float | None, int]


def batch_at(step: int, order: torch.Tensor | None, generator: torch.Generator, steps_per_epoch: int, n: int,
             batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The epoch order (a new randperm of the n rows from `generator` at an epoch's first step) and the rows
    of the global batch of `step`."""
    position = step % steps_per_epoch
    if position == 0 or order is None:
        order = torch.randperm(n, generator=generator)
    return order, order[position * batch_size:(position + 1) * batch_size]


def next_rows(run: TrainingRun, n: int) -> tuple[torch.Tensor, BatchShard | None, float | None, int]:
    """The rows this process computes at the current step (all of the global batch outside DDP), their
    shard of the global batch and loss weight (None outside DDP), and the global batch's size."""
    state = run.state
    state["epoch_order"], index = batch_at(state["step"], state["epoch_order"], run.order_generator,
                                           run.steps_per_epoch, n, run.config.batch_size)
    if run.group is None:
        return index, None, None, len(index)
    shard, weight = run.group.shard(len(index))
    return shard.take(index), shard, weight, len(index)


class SplitRows(torch.utils.data.Dataset):
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


class EpochSampler(torch.utils.data.Sampler):
    """This process's rows of each step's batch from the run's current step on, in the trainer's epoch order:
    the same randperm sequence, drawn from a copy of the order generator, so a loader may run ahead of the
    trainer while the run's own generator (saved in partial checkpoints) advances only with the steps."""

    def __init__(self, run: TrainingRun, n: int):
        self.run, self.n = run, n
        self.start, self.order = run.state["step"], run.state["epoch_order"]
        self.state = run.order_generator.get_state()

    def __len__(self) -> int:
        return self.run.total_steps - self.start

    def __iter__(self):
        run, generator, order = self.run, torch.Generator(), self.order
        generator.set_state(self.state)
        for step in range(self.start, run.total_steps):
            order, index = batch_at(step, order, generator, run.steps_per_epoch, self.n, run.config.batch_size)
            yield index if run.group is None else run.group.shard(len(index))[0].take(index)


def _as_is(batch):
    return batch


def batches(run: TrainingRun, train: ImageDataset, workers: int | None) -> Iterator[Batch]:
    """Per step: this process's images (float, on the device) and labels, its BatchShard and loss weight (None
    outside DDP) and the global batch's size. On the CPU without workers the split is indexed in memory; on
    CUDA (or with workers) a DataLoader gathers each batch from the uint8 split in host memory, pinned on CUDA
    and copied to the device without blocking, so the device never holds more than a few batches."""
    n = len(train)
    if run.device.type != "cuda" and not workers:
        images, labels = train.images.to(run.device), train.labels.to(run.device)
        while True:
            rows, shard, weight, count = next_rows(run, n)
            rows = rows.to(run.device)
            yield to_float(images[rows]), labels[rows], shard, weight, count
    loader = torch.utils.data.DataLoader(SplitRows(train.images, train.labels),
                                         batch_sampler=EpochSampler(run, n), num_workers=workers or 0,
                                         collate_fn=_as_is, pin_memory=run.device.type == "cuda")
    for images, labels, fetched in loader:
        rows, shard, weight, count = next_rows(run, n)
        if not torch.equal(fetched, rows):
            raise RuntimeError(f"the training batches left the epoch order at step {run.state['step']}")
        yield (to_float(images.to(run.device, non_blocking=True)), labels.to(run.device, non_blocking=True), shard,
               weight, count)
