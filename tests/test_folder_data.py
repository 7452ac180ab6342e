"""A user's images as a dataset: `path:DIR` (class sub-folders) and `path:FILE.npz` (MedMNIST keys)."""
import numpy as np
import pytest
import torch
from PIL import Image

from xaibench.data import create_dataset, resolve_datasets
from xaibench.errors import DataFileError, XaibenchError
from xaibench.registry import UnknownNameError


def _write_images(folder, count, size=(20, 20), mode="L", seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(folder / f"img{index:02d}.png")


def test_class_folders_split_by_a_seeded_shuffle(tmp_path):
    _write_images(tmp_path / "data" / "benign", 10, size=(16, 16))
    _write_images(tmp_path / "data" / "malignant", 20, size=(16, 16), seed=1)
    name = f"path:{tmp_path / 'data'}"
    splits = {s: create_dataset(name, s, size=16) for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [21, 3, 6]  # 7:1:2 per class
    train = splits["train"]
    assert train.images.shape == (21, 1, 16, 16) and train.images.dtype == torch.uint8
    assert train.info.n_classes == 2 and train.info.class_names == ("benign", "malignant")
    assert train.info.task == "binary-class" and train.info.in_chans == 1
    assert (train.labels == 0).sum() == 7 and set(splits["test"].labels.tolist()) == {0, 1}
    # the same split every time; disjoint splits that together hold every image
    assert torch.equal(create_dataset(name, "train", size=16).images, train.images)
    every = torch.cat([splits[s].images for s in splits]).flatten(1)
    assert len({tuple(row.tolist()) for row in every}) == 30
    other = create_dataset(name, "train", size=16, seed=1)
    assert not torch.equal(other.images, train.images)
    raw = np.array(Image.open(tmp_path / "data" / "benign" / "img00.png"))
    assert any(torch.equal(image[0], torch.from_numpy(raw)) for image in torch.cat([s.images for s in splits.values()]))


def test_given_split_folders_rgb_and_resizing(tmp_path):
    for split, count in (("train", 4), ("val", 2), ("test", 3)):
        for label in ("a", "b", "c"):
            _write_images(tmp_path / split / label, count, size=(40, 30), mode="RGB", seed=count)
    test = create_dataset(f"path:{tmp_path}", "test", size=28)
    assert test.images.shape == (9, 3, 28, 28) and test.info.n_classes == 3 and test.info.task == "multi-class"
    assert test.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert create_dataset(f"path:{tmp_path}", "val", size=28, channels=1).images.shape == (6, 1, 28, 28)
    _write_images(tmp_path / "test" / "d", 1)
    with pytest.raises(DataFileError, match="classes d are not in .*train .valid: a, b, c."):
        create_dataset(f"path:{tmp_path}", "test", size=28)


def test_npz_with_medmnist_keys(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", 12), ("val", 3), ("test", 5)):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(count, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 4, size=(count, 1)).astype(np.uint8)
    arrays["train_labels"][0] = 3
    np.savez_compressed(tmp_path / "mine.npz", **arrays)
    test = create_dataset(f"path:{tmp_path / 'mine.npz'}", "test", size=28)
    assert test.images.shape == (5, 3, 28, 28) and test.info.n_classes == 4
    assert torch.equal(test.images.permute(0, 2, 3, 1), torch.from_numpy(arrays["test_images"]))
    assert test.labels.tolist() == arrays["test_labels"][:, 0].tolist()
    with pytest.raises(DataFileError, match="test_images must be uint8 .N, 64, 64. .* got uint8 .5, 28, 28, 3."):
        create_dataset(f"path:{tmp_path / 'mine.npz'}", "test", size=64)
    np.savez(tmp_path / "partial.npz", train_images=arrays["train_images"])
    with pytest.raises(DataFileError, match="missing the MedMNIST keys train_labels, val_images"):
        create_dataset(f"path:{tmp_path / 'partial.npz'}", "train", size=28)


def test_resolve_checks_that_the_path_exists(tmp_path):
    (tmp_path / "mine").mkdir()
    assert resolve_datasets([f"path:{tmp_path / 'mine'}", "synthetic"]) == [f"path:{tmp_path / 'mine'}", "synthetic"]
    assert resolve_datasets(f"synthetic,path:{tmp_path / 'mine'}") == ["synthetic", f"path:{tmp_path / 'mine'}"]
    with pytest.raises(DataFileError, match=f"dataset 'path:{tmp_path / 'absent'}': .* does not exist"):
        resolve_datasets([f"path:{tmp_path / 'absent'}"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(XaibenchError, match="is not an .npz file"):
        resolve_datasets([f"path:{tmp_path / 'notes.txt'}"])
    with pytest.raises(UnknownNameError, match="valid names: .*pathmnist"):
        resolve_datasets([f"path:{tmp_path / 'mine'}", "pathmnistt"])
    with pytest.raises(DataFileError, match="needs at least 2 class sub-folders"):
        create_dataset(f"path:{tmp_path / 'mine'}", "train")
