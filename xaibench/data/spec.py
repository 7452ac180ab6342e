"""Which data a model is trained on (a dataset name, size, root and options): one value that loads a split and
says what the data is for the checkpoint key (xaibench/training/checkpoints.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from xaibench.data import create_dataset
from xaibench.data.base import ImageDataset
from xaibench.registry import DATASETS

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
