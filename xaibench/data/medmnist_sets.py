"""The nine MedMNIST+ 2D sets of the paper, from local npz files with their MD5 checked.

Files are downloaded by medmnist's own code, only when asked for, and the download fails fast when
the network is closed (a reachability probe and a socket time-out around it). Grey splits are read by
medmnist's dataset classes (the channels-first tensor is a view of its array); RGB splits and all 224 px
files are streamed by `read_split_streaming` (it says why). Either way a split is in memory once, as
uint8; it becomes float one batch at a time (`ImageDataset.batch`). docs/data.md gives the RAM per size.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import weakref
import zipfile
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
STREAMED_SIZES = (224,)  # read by `read_split_streaming` at every channel count (RGB splits at every size)
CHUNK_BYTES = 1 << 20  # zipfile holds about three chunks while reading one: 64 MB chunks cost 0.2 GB more at the peak
# Files directly in the folder this variable names are read without the MD5 check: the test fixtures of
# xaibench/data/fixtures.py, which are not the release. Set by the tests only; docs/data.md.
UNVERIFIED_ENV = "XAIBENCH_UNVERIFIED_DATA"
_warned_unverified: set[Path] = set()
# Splits alive somewhere, by (file, its size and mtime, split, as_rgb): a second load shares the first.
_LOADED: "weakref.WeakValueDictionary[tuple, ImageDataset]" = weakref.WeakValueDictionary()


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


def _unverified(path: Path) -> bool:
    """True for a file directly in the folder named by $XAIBENCH_UNVERIFIED_DATA (logged once per file)."""
    folder = os.environ.get(UNVERIFIED_ENV, "").strip()
    if not folder or path.parent.resolve() != Path(folder).expanduser().resolve():
        return False
    if path not in _warned_unverified:
        _warned_unverified.add(path)
        logging.getLogger(__name__).warning("%s: MD5 not checked (%s names its folder)", path, UNVERIFIED_ENV)
    return True


def _check_network(url: str, timeout: float = 5.0) -> None:
    host = urlparse(url).hostname or url
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as error:
        raise DataFileError(
            f"cannot reach {host} to download ({error}); download {url} elsewhere and put it in the data root"
        ) from None


def _medmnist_class(name: str):
    import medmnist

    return getattr(medmnist, _info(name)["python_class"])


def _medmnist_download(name: str, size: int, folder: Path) -> None:
    """medmnist's own download (its `MedMNIST.download`: the release URL, the MD5 check), without the
    rest of its `__init__`, which would then read a whole split into memory."""
    fetcher = _medmnist_class(name).__new__(_medmnist_class(name))
    fetcher.info, fetcher.root, fetcher.size_flag = _info(name), str(folder), _size_key(size)
    fetcher.download()


def download(name: str, size: int = 28, root: str | os.PathLike | None = None, timeout: float = 30.0) -> Path:
    """Fetch one release file into the data root through medmnist (network permitting) and check its MD5."""
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
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # a stalled transfer must not hang the run
    try:
        _medmnist_download(name, size, folder)
    except Exception as error:
        path.unlink(missing_ok=True)
        cause = error.__cause__ or error.__context__ or error  # medmnist re-raises every failure as a long text
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise DataFileError(f"download of {url} failed: {reason}") from None
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
    """One split of a release file, uint8 [N, C, H, W]. While a loaded split is alive, loading it again (same
    file, unchanged) returns the same object, so nested users (a warm start inside a training, the run's test
    splits) do not hold a second copy: treat it as read-only."""
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
    if not _unverified(path):
        verify_md5(path, info[f"MD5{_size_key(size)}"])
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, split, as_rgb)
    dataset = _LOADED.get(key)
    if dataset is None:
        dataset = _read_dataset(name, split, size, path, as_rgb)
        _LOADED[key] = dataset
    return dataset


def _read_dataset(name: str, split: str, size: int, path: Path, as_rgb: bool) -> ImageDataset:
    info = _info(name)
    try:
        _check_keys(path)
        images_t, labels = (read_split_streaming(path, split) if _streamed(name, size)
                            else _read_split_medmnist(name, split, size, path.parent))
    except (OSError, KeyError, ValueError, RuntimeError, EOFError, zipfile.BadZipFile) as error:
        raise DataFileError(f"{path}: not a readable MedMNIST npz ({error})") from None
    _check_arrays(path, split, size, info, images_t, labels)
    if as_rgb and images_t.shape[1] == 1:
        images_t = images_t.expand(-1, 3, -1, -1)  # a view: the grey split stays in memory once
    labels_t = torch.from_numpy(labels.reshape(len(labels), -1)[:, 0].astype(np.int64))
    class_names = tuple(info["label"][str(i)] for i in range(len(info["label"])))
    dataset_info = DatasetInfo(name=name, task=info["task"], n_classes=len(class_names),
                               in_chans=images_t.shape[1], size=size, class_names=class_names)
    return ImageDataset(images_t, labels_t, dataset_info, split)


def _check_keys(path: Path) -> None:
    """The release's six arrays are in the file (read from the archive's directory, no array is loaded)."""
    expected = [f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels")]
    with zipfile.ZipFile(path) as archive:
        present = {member[:-4] for member in archive.namelist() if member.endswith(".npy")}
    missing = [key for key in expected if key not in present]
    if missing:
        raise DataFileError(f"{path}: no array {', '.join(missing)} (it holds {', '.join(sorted(present)) or 'none'}"
                            f"); a MedMNIST file holds {', '.join(expected)}")


def _check_arrays(path: Path, split: str, size: int, info: dict, images: torch.Tensor, labels: np.ndarray) -> None:
    """One split as the release has it: uint8 images of side `size` with the set's channels, one integer label
    in 0..K-1 per image. DataFileError naming the array, what it holds and what it should."""
    n_classes, channels = len(info["label"]), info["n_channels"]
    expected = f"uint8 [N, {size}, {size}{', 3' if channels == 3 else ''}]"
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (channels, size, size):
        dtype = str(images.dtype).replace("torch.", "")
        shape = list(images.shape[:1]) + [*images.shape[2:], *([images.shape[1]] if images.shape[1] != 1 else [])]
        raise DataFileError(f"{path}: {split}_images is {dtype} {shape}, expected {expected} for --size {size} "
                            f"(is the file of another size or set?)")
    if labels.dtype.kind not in "iu" or labels.reshape(len(labels), -1).shape != (images.shape[0], 1):
        raise DataFileError(f"{path}: {split}_labels is {labels.dtype} {list(labels.shape)}, expected integers "
                            f"[{images.shape[0]}, 1] (one label per image)")
    low, high = int(labels.min(initial=0)), int(labels.max(initial=0))
    if low < 0 or high >= n_classes:
        raise DataFileError(f"{path}: {split}_labels hold {low}..{high}, expected class ids 0..{n_classes - 1} "
                            f"({info['python_class']} has {n_classes} classes)")


def _streamed(name: str, size: int) -> bool:
    """RGB splits and 224 px files are streamed: medmnist's array is channels-last, and making an RGB split
    channels-first copies it (twice the split in memory at the peak)."""
    return size in STREAMED_SIZES or _info(name)["n_channels"] == 3


def _read_split_medmnist(name: str, split: str, size: int, folder: Path) -> tuple[torch.Tensor, np.ndarray]:
    """One split through medmnist's dataset class: images uint8 [N, C, H, W] (a view for grey files), labels as
    in the file."""
    dataset = _medmnist_class(name)(split=split, root=str(folder), size=size)
    images = torch.from_numpy(np.ascontiguousarray(dataset.imgs))
    images = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2).contiguous()
    return images, dataset.labels


def _read_exact(member, view: memoryview) -> None:
    filled = 0
    while filled < len(view):
        got = member.readinto(view[filled:])
        if not got:
            raise ValueError("the images array ends early")
        filled += got


def read_split_streaming(path: Path, split: str) -> tuple[torch.Tensor, np.ndarray]:
    """One split of a MedMNIST npz streamed from the archive into a channels-first uint8 tensor [N, C, H, W].

    Why not medmnist's dataset class here: it holds the split as the file's channels-last numpy
    array (`mmap_mode` has no effect on an .npz archive), and making an RGB split channels-first copies
    it, so the split is in memory twice: about 27 GB for PathMNIST-224's train split (13.5 GB once).
    Read in chunks of CHUNK_BYTES, the split is in memory once (plus about 3 chunks). The arrays are those
    np.load gives.
    """
    with zipfile.ZipFile(path) as archive:
        with archive.open(f"{split}_labels.npy") as member:
            labels = np.lib.format.read_array(member)
        with archive.open(f"{split}_images.npy") as member:
            version = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                else np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read_header(member)
            if fortran_order or dtype != np.uint8 or len(shape) not in (3, 4):
                raise ValueError(f"{split}_images is {dtype} {shape}, not a C-ordered uint8 [N, H, W(, C)] array")
            n, h, w = shape[:3]
            c = shape[3] if len(shape) == 4 else 1
            images = torch.empty((n, c, h, w), dtype=torch.uint8)
            rows = max(1, CHUNK_BYTES // (h * w * c))
            chunk = np.empty((min(rows, n), h, w, c), dtype=np.uint8)
            for start in range(0, n, rows):
                count = min(rows, n - start)
                _read_exact(member, memoryview(chunk[:count]).cast("B"))
                images[start:start + count] = torch.from_numpy(chunk[:count]).permute(0, 3, 1, 2)
    return images, labels


def _make_factory(name: str):
    def factory(split: str = "train", size: int = 28, root=None, download: bool = False,
                as_rgb: bool = False) -> ImageDataset:
        return load_medmnist(name, split, size, root, download_missing=download, as_rgb=as_rgb)

    factory.__doc__ = f"MedMNIST+ {name} ({_info(name)['task']}, {_info(name)['n_channels']} channel(s))."
    return factory


for _name in PAPER_DATASETS:
    register_dataset(_name, _make_factory(_name))
