"""Where images come from: the dataset registry, MedMNIST+ files, the synthetic default and `path:` datasets."""
from __future__ import annotations

from xaibench.data.base import DatasetInfo, ImageDataset, pixel_to_patch_mask
from xaibench.data import medmnist_sets as _medmnist_sets  # noqa: F401  (registers the nine sets)
from xaibench.data import synthetic as _synthetic  # noqa: F401  (registers "synthetic")
from xaibench.data.folder import check_path_name, is_path_name, load_path_dataset
from xaibench.data.medmnist_sets import PAPER_DATASETS, SIZES, data_root, download
from xaibench.registry import DATASETS, list_datasets

DATASET_GROUPS = {"all": list(PAPER_DATASETS)}


def create_dataset(name: str, split: str = "train", size: int = 28, root=None, **kwargs) -> ImageDataset:
    """Build a registered dataset split, or a user's folder / .npz file named 'path:...' (see data/folder.py);
    unknown names raise UnknownNameError listing the valid ones."""
    if is_path_name(name):
        return load_path_dataset(name, split, size=size, **kwargs)
    return DATASETS.create(name, split=split, size=size, root=root, **kwargs)


def resolve_datasets(names) -> list[str]:
    """'all' is the paper's nine; 'a,b' or a list of names is checked against the registry; a 'path:DIR' or
    'path:FILE.npz' entry is kept (in its place) once its path is found to exist."""
    if isinstance(names, str):
        names = names.split(",")
    names = [name.strip() for name in names if name.strip()]
    if not names:
        return DATASETS.resolve(names, groups=DATASET_GROUPS)  # raises: no dataset given, with the valid names
    out: list[str] = []
    for name in names:  # each entry in its place; a group or a pattern may give several names
        picked = [check_path_name(name)] if is_path_name(name) else DATASETS.resolve([name], groups=DATASET_GROUPS)
        out.extend(p for p in picked if p not in out)
    return out


__all__ = ["DatasetInfo", "ImageDataset", "PAPER_DATASETS", "SIZES", "create_dataset", "data_root", "download",
           "list_datasets", "pixel_to_patch_mask", "resolve_datasets"]
