"""The nine MedMNIST+ 2D sets of the paper, read from local npz files with their MD5 checked.

Download happens only when asked for, and fails fast when the network is closed.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from xaibench.data.base import DatasetInfo, ImageDataset
from xaibench.errors import DataFileError, XaibenchError
from xaibench.io import atomic_write_text, cache_dir
from xaibench.registry import register_dataset

PAPER_DATASETS = (
    "pathmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist",
    "breastmnist", "bloodmnist", "organcmnist", "organsmnist",
)
SIZES = (28, 64, 128, 224)
SPLITS = ("train", "val", "test")


def _info(name: str) -> dict:
    import medmnist

    return medmnist.INFO[name]


def data_root(root: str | os.PathLike | None = None) -> Path:
    """`root`, else $XAIBENCH_DATA, else medmnist's default (~/.medmnist)."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("XAIBENCH_DATA"):
        return Path(os.environ["XAIBENCH_DATA"]).expanduser()
    return Path.home() / ".medmnist"


def file_name(name: str, size: int) -> str:
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


def _size_key(size: int) -> str:
    return "" if size == 28 else f"_{size}"


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _verified_cache() -> Path:
    return cache_dir() / "verified_md5.json"


def verify_md5(path: Path, expected: str) -> None:
    """Check the file's MD5 once; later calls trust (path, size, mtime) recorded after a match."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache = _verified_cache()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if known.get(key) == expected:
        return
    actual = md5sum(path)
    if actual != expected:
        raise DataFileError(
            f"{path}: MD5 {actual} does not match medmnist's {expected}; the file is corrupt or from "
            f"another release. Delete it and download it again (xaibench download {path.stem.split('_')[0]})."
        )
    known[key] = expected
    try:  # a read-only cache folder only costs a re-check next time
        atomic_write_text(cache, json.dumps(known, indent=0))
    except OSError:
        pass


def _check_network(url: str, timeout: float = 5.0) -> None:
    host = urlparse(url).hostname or url
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as error:
        raise DataFileError(
            f"cannot reach {host} to download ({error}); download {url} elsewhere and put it in the data root"
        ) from None


def download(name: str, size: int = 28, root: str | os.PathLike | None = None, timeout: float = 30.0) -> Path:
    """Fetch one release file into the data root (network permitting) and check its MD5."""
    _check_name_size(name, size)
    info = _info(name)
    folder = data_root(root)
    path = folder / file_name(name, size)
    if path.exists():
        verify_md5(path, info[f"MD5{_size_key(size)}"])
        return path
    url = info[f"url{_size_key(size)}"]
    _check_network(url)
    folder.mkdir(parents=True, exist_ok=True)
    from torchvision.datasets.utils import download_url

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # a stalled transfer must not hang the run
    try:
        download_url(url, root=str(folder), filename=path.name, md5=info[f"MD5{_size_key(size)}"])
    except Exception as error:
        path.unlink(missing_ok=True)
        raise DataFileError(f"download of {url} failed: {error}") from None
    finally:
        socket.setdefaulttimeout(previous)
    verify_md5(path, info[f"MD5{_size_key(size)}"])
    return path


def _check_name_size(name: str, size: int) -> None:
    if name not in PAPER_DATASETS:
        raise XaibenchError(f"unknown MedMNIST set {name!r}; valid: {', '.join(PAPER_DATASETS)}")
    if size not in SIZES:
        raise XaibenchError(f"size {size!r} is not a MedMNIST+ size; valid: {', '.join(map(str, SIZES))}")


def load_medmnist(name: str, split: str = "train", size: int = 28, root: str | os.PathLike | None = None,
                  download_missing: bool = False, as_rgb: bool = False) -> ImageDataset:
    _check_name_size(name, size)
    if split not in SPLITS:
        raise XaibenchError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    info = _info(name)
    folder = data_root(root)
    path = folder / file_name(name, size)
    if not path.exists():
        if download_missing:
            download(name, size, folder)
        else:
            url = info[f"url{_size_key(size)}"]
            raise DataFileError(
                f"{path.name} not found in {folder}; run `xaibench download {name} --size {size} "
                f"--data-root {folder}` or fetch {url} (MD5 {info[f'MD5{_size_key(size)}']}) and put it there "
                f"(the folder comes from --data-root, else $XAIBENCH_DATA, else ~/.medmnist)"
            )
    verify_md5(path, info[f"MD5{_size_key(size)}"])
    try:
        with np.load(path) as archive:
            images = archive[f"{split}_images"]
            labels = archive[f"{split}_labels"]
    except (OSError, KeyError, ValueError) as error:
        raise DataFileError(f"{path}: not a readable MedMNIST npz ({error})") from None
    images_t = torch.from_numpy(np.ascontiguousarray(images))
    images_t = images_t[:, None] if images_t.ndim == 3 else images_t.permute(0, 3, 1, 2).contiguous()
    if as_rgb and images_t.shape[1] == 1:
        images_t = images_t.expand(-1, 3, -1, -1).contiguous()
    labels_t = torch.from_numpy(labels.reshape(len(labels), -1)[:, 0].astype(np.int64))
    class_names = tuple(info["label"][str(i)] for i in range(len(info["label"])))
    dataset_info = DatasetInfo(name=name, task=info["task"], n_classes=len(class_names),
                               in_chans=images_t.shape[1], size=size, class_names=class_names)
    return ImageDataset(images_t, labels_t, dataset_info, split)


def _make_factory(name: str):
    def factory(split: str = "train", size: int = 28, root=None, download: bool = False, as_rgb: bool = False,
                **unused) -> ImageDataset:
        return load_medmnist(name, split, size, root, download_missing=download, as_rgb=as_rgb)

    factory.__doc__ = f"MedMNIST+ {name} ({_info(name)['task']}, {_info(name)['n_channels']} channel(s))."
    return factory


for _name in PAPER_DATASETS:
    register_dataset(_name, _make_factory(_name))
