"""What every unit of one execution shares: device, stores, and the test images loaded once per dataset."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xaibench.cache import UnitStore
from xaibench.io import cache_dir


@dataclass
class TestBatch:
    """The first n test images of a dataset, on the device, with labels and (where present) lesion masks."""

    indices: torch.Tensor  # [N] long, positions in the test split
    x: torch.Tensor  # [N, C, H, W] float, on the device
    labels: torch.Tensor  # [N] long, on the device
    dataset: Any  # the ImageDataset of the test split (ground-truth masks, info)


@dataclass
class Context:
    """Shared state of one execution. Only in-memory memos; everything on disk goes through the stores."""

    device: torch.device
    cache: Path | None = None
    progress: bool = True
    _tests: dict[tuple[str, int], TestBatch] = field(default_factory=dict)
    _splits: dict[str, Any] = field(default_factory=dict)  # repr(spec.key()) -> the test split

    def __post_init__(self) -> None:
        self.cache_root = Path(self.cache or cache_dir())
        self.store = UnitStore(self.cache_root / "units")

    def progress_range(self, n: int, step: int, label: str):
        """range(0, n, step), with a transient progress bar when a unit runs several batches."""
        from tqdm.auto import tqdm

        starts = range(0, n, step)
        return tqdm(starts, desc=label, leave=False, disable=not self.progress or len(starts) < 2,
                    dynamic_ncols=True, file=sys.stderr)

    def test_split(self, spec, loaded=None):
        """The test split of `spec` (a DataSpec), read once per execution (or `loaded`, read by the plan)."""
        key = repr(spec.key())
        if key not in self._splits:
            self._splits[key] = loaded if loaded is not None else spec.load("test")
        return self._splits[key]

    def test_batch(self, spec, n_test: int) -> TestBatch:
        """The first `n_test` test images of `spec` (a DataSpec), loaded once per execution."""
        memo_key = (repr(spec.key()), n_test)
        if memo_key not in self._tests:
            test = self.test_split(spec)
            indices = torch.arange(min(n_test, len(test)))
            x, labels = test.batch(indices, device=self.device)
            self._tests[memo_key] = TestBatch(indices, x, labels, test)
        return self._tests[memo_key]
