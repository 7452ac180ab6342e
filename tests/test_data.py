"""Datasets by name: genuine MedMNIST files checked by MD5, the streaming reader, the synthetic lesion set."""
import numpy as np
import pytest
import torch

from xaibench.cli import main
from xaibench.data import PAPER_DATASETS, create_dataset, list_datasets, resolve_datasets
from xaibench.data.medmnist_sets import load_medmnist
from xaibench.data.synthetic import make_synthetic
from xaibench.errors import DataFileError
from xaibench.registry import UnknownNameError


def test_every_name_resolves():
    assert set(PAPER_DATASETS) | {"synthetic"} <= set(list_datasets())
    assert resolve_datasets("all") == list(PAPER_DATASETS)
    assert resolve_datasets("synthetic,breastmnist") == ["synthetic", "breastmnist"]
    with pytest.raises(UnknownNameError, match="valid names: .*pathmnist"):
        resolve_datasets("breastmnist,pathmnistt")


@pytest.mark.parametrize("name", PAPER_DATASETS)
def test_every_medmnist_name_names_its_missing_file(name, tmp_path):
    with pytest.raises(DataFileError) as caught:
        create_dataset(name, "test", size=64, root=tmp_path)
    message = str(caught.value)
    assert f"{name}_64.npz not found in {tmp_path}" in message and "xaibench download" in message


def test_genuine_breastmnist_loads_with_md5(tmp_path, vendored_data):
    test = create_dataset("breastmnist", "test", root=vendored_data)
    assert test.images.shape == (156, 1, 28, 28) and test.images.dtype == torch.uint8
    assert set(test.labels.tolist()) == {0, 1} and test.info.task == "binary-class" and test.info.n_classes == 2
    assert len(create_dataset("breastmnist", "train", root=vendored_data)) == 546
    x, y = test.batch(slice(0, 4))
    assert x.shape == (4, 1, 28, 28) and x.min() >= -1 and x.max() <= 1 and y.shape == (4,)
    assert test.batch(slice(0, 2), as_rgb=True)[0].shape == (2, 3, 28, 28)


def test_genuine_shared_files_load_by_name(shared_data):
    pneumonia = create_dataset("pneumoniamnist", "train", root=shared_data)
    assert pneumonia.images.shape == (4708, 1, 28, 28) and set(pneumonia.labels.tolist()) == {0, 1}
    breast64 = create_dataset("breastmnist", "val", size=64, root=shared_data)
    assert breast64.images.shape == (78, 1, 64, 64)


def test_data_root_from_environment(monkeypatch, vendored_data):
    monkeypatch.setenv("XAIBENCH_DATA", str(vendored_data))
    assert len(create_dataset("breastmnist", "val")) == 78


def test_corrupt_and_missing_files_exit_2_with_one_line(tmp_path, capsys, vendored_data):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    data = bytearray((vendored_data / "breastmnist.npz").read_bytes())
    data[1000] ^= 0xFF
    (corrupt / "breastmnist.npz").write_bytes(bytes(data))
    with pytest.raises(DataFileError, match="MD5 .* does not match medmnist's 750601b1f35ba3300ea97c75c52ff8f6"):
        load_medmnist("breastmnist", "test", root=corrupt)
    # Through the CLI: one line on stderr, exit 2 (download re-checks an existing file's MD5).
    assert main(["download", "--datasets", "breastmnist", "--data-root", str(corrupt)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not match" in err
    assert main(["download", "--datasets", "breastmnist", "--data-root", str(vendored_data)]) == 0


def _write_official_npz(path, n_classes=5, size=28, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", 20), ("val", 5), ("test", 10)):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(count, size, size, channels), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, n_classes, size=(count, 1), dtype=np.uint8)
    np.savez_compressed(path, **arrays)


def test_rgb_ordinal_five_class_path(tmp_path, monkeypatch):
    """retinamnist is RGB, 5 ordinal classes: a file in the official layout loads through the same path."""
    import xaibench.data.medmnist_sets as sets

    _write_official_npz(tmp_path / "retinamnist.npz")
    monkeypatch.setattr(sets, "verify_md5", lambda path, expected: None)  # our file, not the release's MD5
    test = create_dataset("retinamnist", "test", root=tmp_path)
    assert test.images.shape == (10, 3, 28, 28) and test.info.n_classes == 5
    assert test.info.task == "ordinal-regression" and test.labels.max() < 5 and test.labels.dtype == torch.int64
    with np.load(tmp_path / "retinamnist.npz") as raw:  # channels-last in the file, channels-first here
        assert torch.equal(test.images[3].permute(1, 2, 0), torch.from_numpy(raw["test_images"][3]))


def test_synthetic_is_seeded_and_shaped():
    a = create_dataset("synthetic", "test", n_samples=50, seed=3)
    b = create_dataset("synthetic", "test", n_samples=50, seed=3)
    c = create_dataset("synthetic", "test", n_samples=50, seed=4)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert a.images.shape == (50, 1, 28, 28) and a.labels.max() < 3 and a.labels.min() >= 0
    rgb = create_dataset("synthetic", "train", n_samples=8, channels=3, n_classes=5, size=56)
    assert rgb.images.shape == (8, 3, 56, 56) and rgb.info.n_classes == 5
    assert rgb.patch_masks(8).shape == (8, 49)
    train = create_dataset("synthetic", "train", n_samples=50, seed=3)
    assert not torch.equal(train.images, a.images)  # splits differ


def test_synthetic_mask_is_consistent_with_the_image():
    data = create_dataset("synthetic", "test", n_samples=200, seed=1)
    masks = data.pixel_masks
    images = data.images[:, 0].float()
    for i in range(len(data)):
        inside = images[i][masks[i]].mean()
        ring = torch.nn.functional.max_pool2d(masks[i][None, None].float(), 5, 1, 2)[0, 0].bool() & ~masks[i]
        # the lesion is brighter than its immediate surroundings
        assert inside > images[i][ring].mean() + 20
    patch = data.patch_masks(4)
    assert patch.shape == (200, 49) and (patch.sum(1) >= 2).all() and (patch.sum(1) <= 16).all()
    # a patch is positive exactly when it holds a lesion pixel
    i = 7
    grid = masks[i].reshape(7, 4, 7, 4).any(dim=3).any(dim=1).flatten()
    assert torch.equal(grid, patch[i])


def test_synthetic_class_is_not_in_global_statistics():
    """A classifier on intensity statistics stays near chance; the shape carries the class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def features(images):
        flat = images.reshape(len(images), -1).astype(np.float64)
        qs = np.percentile(flat, [5, 25, 50, 75, 90, 95, 98, 99, 100], axis=1).T
        return np.column_stack([flat.mean(1), flat.std(1), qs, (flat > 120).mean(1)])

    train_x, train_y, _ = make_synthetic(1500, seed=11)
    test_x, test_y, _ = make_synthetic(600, seed=12)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(features(train_x), train_y)
    accuracy = clf.score(features(test_x), test_y)
    assert accuracy < 1 / 3 + 0.12, accuracy


def test_medmnist_classes_and_the_streaming_reader_give_the_files_arrays(monkeypatch, vendored_data):
    import xaibench.data.medmnist_sets as sets

    path = vendored_data / "breastmnist.npz"
    monkeypatch.setattr(sets, "CHUNK_BYTES", 28 * 28 * 50)  # many chunks, the last one partial
    with np.load(path) as raw:
        for split in ("train", "val", "test"):
            expected = torch.from_numpy(raw[f"{split}_images"])[:, None]
            by_medmnist, labels = sets._read_split_medmnist("breastmnist", split, 28, vendored_data)
            streamed, streamed_labels = sets.read_split_streaming(path, split)
            assert torch.equal(by_medmnist, expected) and torch.equal(streamed, expected)
            assert np.array_equal(labels, raw[f"{split}_labels"]) and np.array_equal(streamed_labels, labels)


@pytest.mark.parametrize("compressed", [True, False])
def test_224_px_files_are_streamed_channels_first(tmp_path, monkeypatch, compressed):
    import xaibench.data.medmnist_sets as sets

    rng = np.random.default_rng(5)
    arrays = {f"{split}_images": rng.integers(0, 256, size=(count, 224, 224, 3), dtype=np.uint8)
              for split, count in (("train", 3), ("val", 2), ("test", 7))}
    arrays.update({f"{split}_labels": rng.integers(0, 5, size=(len(arrays[f"{split}_images"]), 1))
                   for split in ("train", "val", "test")})
    (np.savez_compressed if compressed else np.savez)(tmp_path / "retinamnist_224.npz", **arrays)
    monkeypatch.setattr(sets, "verify_md5", lambda path, expected: None)  # our file, not the release's MD5
    monkeypatch.setattr(sets, "CHUNK_BYTES", 224 * 224 * 3 * 2)

    def not_medmnist(*args):
        raise AssertionError("a 224 px split went through medmnist's class")

    monkeypatch.setattr(sets, "_read_split_medmnist", not_medmnist)
    test = create_dataset("retinamnist", "test", size=224, root=tmp_path)
    assert test.images.shape == (7, 3, 224, 224) and test.images.is_contiguous()
    assert torch.equal(test.images, torch.from_numpy(arrays["test_images"]).permute(0, 3, 1, 2))
    assert test.labels.tolist() == arrays["test_labels"][:, 0].tolist()


def test_download_to_an_unreachable_host_fails_in_seconds_with_one_line(tmp_path, monkeypatch, capsys):
    import time

    import xaibench.data.medmnist_sets as sets

    real_info = sets._info
    monkeypatch.setattr(sets, "_info", lambda name: dict(real_info(name), url="https://127.0.0.1:9/breastmnist.npz"))
    start = time.monotonic()
    # the probe: port 443 is closed
    assert main(["download", "--datasets", "breastmnist", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot reach 127.0.0.1" in err
    # past the probe, medmnist's own download meets the closed port: one line, no partial file left
    monkeypatch.setattr(sets, "_check_network", lambda url: None)
    with pytest.raises(DataFileError) as caught:
        sets.download("breastmnist", root=tmp_path)
    message = str(caught.value)
    assert message.startswith("download of https://127.0.0.1:9/breastmnist.npz failed: ") and "\n" not in message
    assert not (tmp_path / "breastmnist.npz").exists() and time.monotonic() - start < 20
