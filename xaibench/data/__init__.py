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
    hints = _hints(factory)
    for option, value in options.items():  # a value of another type than declared: one line, not a traceback
        kinds = hints.get(option) or _default_kind(parameters[option].default)
        if kinds and not _fits(value, kinds):
            raise XaibenchError(f"dataset {name!r} option {option}={value!r}: expected "
                                f"{' or '.join('null' if k is type(None) else k.__name__ for k in kinds)}")


def _hints(factory) -> dict[str, tuple[type, ...]]:
    """Parameter -> the plain types its annotation allows (None where it allows anything or cannot be read)."""
    import typing

    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # noqa: BLE001  (an annotation that does not resolve: fall back on the defaults)
        return {}
    out = {}
    for option, hint in hints.items():
        kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, type(int | None)) else (hint,)
        kinds = tuple(typing.get_origin(k) or k for k in kinds)
        out[option] = kinds if all(isinstance(k, type) for k in kinds) and object not in kinds else None
    return out


def _default_kind(default) -> tuple[type, ...] | None:
    if default is inspect.Parameter.empty or default is None:
        return None
    return (type(default),)


def _fits(value, kinds: tuple[type, ...]) -> bool:
    if value is None:
        return type(None) in kinds
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    return isinstance(value, tuple(k for k in kinds if k is not bool))


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
