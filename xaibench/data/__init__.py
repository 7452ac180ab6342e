"""Where images come from: the dataset registry, MedMNIST+ files, the embedded sets (objects, the default, and
synthetic) and `path:` datasets."""
from __future__ import annotations

import inspect

from xaibench.data import medmnist_sets as _medmnist_sets  # noqa: F401  (registers the nine sets)
from xaibench.data import objects as _objects  # noqa: F401  (registers "objects", the default)
from xaibench.data import synthetic as _synthetic  # noqa: F401  (registers "synthetic")
from xaibench.data.base import DatasetInfo, ImageDataset, pixel_to_patch_mask
from xaibench.data.folder import check_path_name, is_path_name, load_path_dataset
from xaibench.data.medmnist_sets import PAPER_DATASETS, SIZES, data_root, download
from xaibench.errors import XaibenchError
from xaibench.registry import DATASETS, list_datasets

DATASET_GROUPS = {"all": list(PAPER_DATASETS)}
EMBEDDED = ("objects", "synthetic")  # drawn from a seed in-tree: no files, nothing to download


def is_embedded(name: str) -> bool:
    """Whether a dataset needs no files: an embedded set, or a user's 'path:' data (already on disk)."""
    return name in EMBEDDED or is_path_name(name)


def create_dataset(name: str, split: str = "train", size: int = 28, root=None, **kwargs) -> ImageDataset:
    """Build a registered dataset split, or a user's folder / .npz file named 'path:...' (see data/folder.py);
    unknown names raise UnknownNameError listing the valid ones, unknown options ([data.<name>]) XaibenchError."""
    if is_path_name(name):
        _check_options(name, load_path_dataset, kwargs)
        return load_path_dataset(name, split, size=size, **kwargs)
    factory = DATASETS.get(name)
    _check_options(name, factory, kwargs)
    return factory(split=split, size=size, root=root, **kwargs)


def _check_options(name: str, factory, options: dict) -> None:
    """Options a dataset's factory does not take are refused, naming the ones it does (a factory with **kwargs
    takes any)."""
    parameters = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    valid = [p for p in parameters if p not in ("name", "split", "size", "root")]
    unknown = [option for option in options if option not in valid]
    if unknown:
        raise XaibenchError(f"dataset {name!r} has no option {', '.join(map(repr, unknown))}; valid options: "
                            f"{', '.join(valid) or '(none)'}")


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


__all__ = ["EMBEDDED", "is_embedded", "DatasetInfo", "ImageDataset", "PAPER_DATASETS", "SIZES", "create_dataset", "data_root", "download",
           "list_datasets", "pixel_to_patch_mask", "resolve_datasets"]
