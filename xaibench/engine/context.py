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
    compile: str | None = None  # a torch.compile backend for the metrics' masked forward ("inductor"), or None
    _tests: dict[tuple[str, int], TestBatch] = field(default_factory=dict)
    _splits: dict[str, Any] = field(default_factory=dict)  # repr(spec.key()) -> the test split
    _forwards: dict[int, Any] = field(default_factory=dict)  # id(model) -> (model, forward_fn, batch size)

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

    def split(self, spec, split: str):
        """A split of `spec` (the test split through test_split; the others read once per execution)."""
        if split == "test":
            return self.test_split(spec)
        key = f"{split}:{repr(spec.key())}"
        if key not in self._splits:
            self._splits[key] = spec.load(split)
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

    def forward(self, model, sample: torch.Tensor) -> tuple[Any, int]:
        """The masked forward the metrics call (compiled when asked) and the forward batch that fills the device
        (`auto_batch_size`), once per model. Neither enters a cache key: they change speed, not results."""
        entry = self._forwards.get(id(model))
        if entry is None or entry[0] is not model:
            forward_fn = model.forward_fn
            if self.compile:
                forward_fn = torch.compile(forward_fn, backend=self.compile, dynamic=True)
            entry = (model, forward_fn, auto_batch_size(model, sample, self.device))
            self._forwards[id(model)] = entry
        return entry[1], entry[2]


def auto_batch_size(model, sample: torch.Tensor, device: torch.device, cpu: int = 256, most: int = 4096) -> int:
    """Masked inputs per forward call: `cpu` on the CPU; on CUDA what half the free memory holds, measured from
    the peak memory of one forward of 64 inputs under bf16 autocast (a multiple of 64, at most `most`)."""
    if device.type != "cuda":
        return cpu
    probe = sample[:1].expand(64, *sample.shape[1:]).contiguous()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        model.forward_fn(probe)
    per_input = max(1, (torch.cuda.max_memory_allocated(device) - before) // 64)
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(64, min(most, (free // 2) // per_input // 64 * 64)))
