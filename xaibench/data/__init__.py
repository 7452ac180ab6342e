"""Where images come from: the dataset registry, MedMNIST+ files and the synthetic default."""
from __future__ import annotations

from xaibench.data.base import DatasetInfo, ImageDataset, pixel_to_patch_mask
from xaibench.data import medmnist_sets as _medmnist_sets  # noqa: F401  (registers the nine sets)
from xaibench.data import synthetic as _synthetic  # noqa: F401  (registers "synthetic")
from xaibench.data.medmnist_sets import PAPER_DATASETS, SIZES, data_root, download
from xaibench.registry import DATASETS, list_datasets

DATASET_GROUPS = {"all": list(PAPER_DATASETS)}


def create_dataset(name: str, split: str = "train", size: int = 28, root=None, **kwargs) -> ImageDataset:
    """Build a registered dataset split; unknown names raise UnknownNameError listing the valid ones."""
    return DATASETS.create(name, split=split, size=size, root=root, **kwargs)


def resolve_datasets(names) -> list[str]:
    """'all' is the paper's nine; 'a,b' or a list of names is checked against the registry."""
    return DATASETS.resolve(names, groups=DATASET_GROUPS)


__all__ = ["DatasetInfo", "ImageDataset", "PAPER_DATASETS", "SIZES", "create_dataset", "data_root", "download",
           "list_datasets", "pixel_to_patch_mask", "resolve_datasets"]
