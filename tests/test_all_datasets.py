"""`--datasets all`, really all: the nine MedMNIST+ sets (grey and RGB, 2 to 11 classes, ordinal Retina,
28 and 64 px) end to end through the CLI, on format-true fixture files (xaibench/data/fixtures.py)."""
import json
import math
import zipfile

import medmnist
import numpy as np
import pandas as pd
import pytest
import torch

from xaibench.cli import main
from xaibench.data import PAPER_DATASETS, create_dataset
from xaibench.data.fixtures import fixture_arrays, write_fixture, write_fixtures
from xaibench.data.medmnist_sets import UNVERIFIED_ENV, file_name
from xaibench.engine import plan as engine_plan
from xaibench.errors import DataFileError
from xaibench.tables import DATASET_LABELS, without_ci

SPLITS = ("train", "val", "test")
# Tiny training: a one-block ViT of width 32, a few Segm and OFA steps (the tables are checked, not the scores).
TINY = ["--set", "steps=4", "--set", "init_steps=2", "--set", "batch_size=8", "--set", "eval_every=2",
        "--set", "warmup_steps=1", "--set", "n_masks=2",
        "--set", 'model_options={"depth": 1, "embed_dim": 32, "num_heads": 2}',
        "--set", "run.n_draws=1", "--set", "run.n_figure_images=2"]


def test_fixture_files_have_the_release_format(vendored_data, shared_data_root):
    with np.load(vendored_data / "breastmnist.npz") as release:
        release_keys = {key: (release[key].dtype, release[key].shape[1:]) for key in release.files}
    fixture = fixture_arrays("breastmnist", 28)
    assert {key: (array.dtype, array.shape[1:]) for key, array in fixture.items()} == release_keys
    if (shared_data_root / "breastmnist_64.npz").exists():
        with np.load(shared_data_root / "breastmnist_64.npz") as release:
            assert release["test_images"].shape[1:] == fixture_arrays("breastmnist", 64)["test_images"].shape[1:]
    for name in PAPER_DATASETS:
        info = medmnist.INFO[name]
        n_classes, channels = len(info["label"]), info["n_channels"]
        arrays = fixture_arrays(name, 64)
        for split in SPLITS:
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            assert images.dtype == np.uint8 and labels.dtype == np.uint8
            assert images.shape[1:] == ((64, 64) if channels == 1 else (64, 64, 3)), name
            assert labels.shape == (len(images), 1)
            assert sorted(set(labels[:, 0].tolist())) == list(range(n_classes)), (name, split)
    assert not np.array_equal(fixture_arrays("pathmnist", 28, seed=1)["train_images"],
                              fixture_arrays("pathmnist", 28)["train_images"])
    assert all(np.array_equal(a, b) for a, b in zip(fixture_arrays("pathmnist", 28).values(),
                                                     fixture_arrays("pathmnist", 28).values()))


def test_fixture_files_load_only_from_the_folder_named_unverified(tmp_path, monkeypatch, caplog):
    path = write_fixture("dermamnist", 28, tmp_path / "fixtures")
    assert path.name == file_name("dermamnist", 28)
    with zipfile.ZipFile(path) as archive:  # compressed members like the release's
        assert {member.compress_type for member in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    with pytest.raises(DataFileError, match="does not match medmnist's"):
        create_dataset("dermamnist", "test", root=path.parent)
    monkeypatch.setenv(UNVERIFIED_ENV, str(tmp_path))  # another folder: still checked
    with pytest.raises(DataFileError, match="does not match medmnist's"):
        create_dataset("dermamnist", "test", root=path.parent)
    monkeypatch.setenv(UNVERIFIED_ENV, str(path.parent))
    test = create_dataset("dermamnist", "test", root=path.parent)
    assert "MD5 not checked" in caplog.text
    assert test.info.in_chans == 3 and test.info.n_classes == 7 and test.info.task == "multi-class"
    with np.load(path) as raw:  # the RGB split streamed channels-first, in memory once
        assert torch.equal(test.images, torch.from_numpy(raw["test_images"]).permute(0, 3, 1, 2))
    assert test.images.is_contiguous() and test.images.dtype == torch.uint8


def test_loaded_splits_stay_uint8_and_channel_mean_is_exact(tmp_path, monkeypatch):
    import xaibench.data.base as base

    folder = tmp_path / "fixtures"
    write_fixtures(folder, sizes=(28,), names=("retinamnist", "organcmnist"))
    monkeypatch.setenv(UNVERIFIED_ENV, str(folder))
    retina = create_dataset("retinamnist", "train", root=folder)
    assert retina.info.task == "ordinal-regression" and retina.info.n_classes == 5
    monkeypatch.setattr(base, "SUM_CHUNK_ELEMENTS", 28 * 28 * 3 * 4)  # several chunks, the last one partial
    expected = base.to_float(retina.images).double().mean(dim=(0, 2, 3))
    assert torch.allclose(retina.channel_mean().double(), expected, atol=1e-6)
    organ = create_dataset("organcmnist", "train", root=folder, as_rgb=True)
    assert organ.info.n_classes == 11 and organ.images.shape[1] == 3
    assert organ.images.stride(1) == 0  # grey repeated to RGB as a view, not a copy
    x, y = organ.batch(slice(0, 5))
    assert x.dtype == torch.float32 and x.shape == (5, 3, 28, 28) and torch.equal(x[:, 0], x[:, 2])


def test_a_split_alive_is_shared_and_a_rewritten_file_is_read_again(tmp_path, monkeypatch):
    import os

    folder = tmp_path / "fixtures"
    path = write_fixture("bloodmnist", 28, folder)
    monkeypatch.setenv(UNVERIFIED_ENV, str(folder))
    first = create_dataset("bloodmnist", "train", root=folder)
    assert create_dataset("bloodmnist", "train", root=folder) is first  # e.g. a warm start inside a training
    assert create_dataset("bloodmnist", "val", root=folder) is not first
    write_fixture("bloodmnist", 28, folder, seed=1, n_samples={"train": 16, "val": 8, "test": 8})
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    again = create_dataset("bloodmnist", "train", root=folder)
    assert again is not first and len(again) == 16 and len(first) == 24


def test_evaluation_batches_shrink_with_the_image_size_and_give_the_same_scores(tmp_path, monkeypatch):
    from xaibench.models import create_model
    from xaibench.training.evaluation import classification_scores, eval_batch_size, predict_proba

    assert [eval_batch_size(size) for size in (28, 64, 128, 224)] == [512, 512, 128, 41]
    folder = tmp_path / "fixtures"
    write_fixture("retinamnist", 128, folder, per_class={"test": 10})
    monkeypatch.setenv(UNVERIFIED_ENV, str(folder))
    test = create_dataset("retinamnist", "test", size=128, root=folder)
    torch.manual_seed(0)
    model = create_model("ofa", num_classes=5, in_chans=3, img_size=128, depth=1, embed_dim=32, num_heads=2)
    whole = predict_proba(model, test, "cpu", batch_size=len(test))
    batched = predict_proba(model, test, "cpu", batch_size=7)
    assert whole.shape == (50, 5) and torch.allclose(whole, batched, atol=1e-5)
    scores = classification_scores(whole, test)  # ordinal-regression: medmnist's AUC/ACC over the 5 grades
    assert all(math.isfinite(value) for value in scores.values())


def _finite(cell: str) -> bool:
    """'mean', 'mean ± std', either with its interval ' [low, high]': every number finite."""
    parts = without_ci(cell).split(" ± ")
    interval = str(cell)[len(without_ci(cell)):].strip(" []")
    return all(math.isfinite(float(part)) for part in [*parts, *(interval.split(", ") if interval else [])])


def _check_checkpoints(manifest: dict, cache, size: int) -> None:
    """Each set's OFA network was built for its channels, classes and size, and validated to a finite AUC."""
    from xaibench.training import load_trained

    for name in PAPER_DATASETS:
        trained = load_trained(cache / "checkpoints" / manifest["checkpoints"][f"{name}/seed0"]["file"])
        info, model = medmnist.INFO[name], trained.model
        assert (model.in_chans, model.num_classes, model.img_size) == (
            info["n_channels"], len(info["label"]), size), name
        assert math.isfinite(trained.record["val_auc"]), name


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core runner two threads per process
    made this test up to four times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("size", [28, 64])
def test_run_all_nine_sets_end_to_end(size, tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.setattr(engine_plan, "BASELINE_MODELS", ["ofa"])  # Table 1 through medmnist's Evaluator, no ResNet
    data, cache, out = tmp_path / "data", tmp_path / "cache", tmp_path / "out"
    write_fixtures(data, sizes=(size,))
    monkeypatch.setenv(UNVERIFIED_ENV, str(data))
    code = main(["run", "--datasets", "all", "--size", str(size), "--data-root", str(data), "--cache", str(cache),
                 "--out", str(out), "--n-test", "4", "--curve-points", "3", "--methods", "ofa,grad,attn",
                 "--train-baselines", "--quiet", *TINY])
    printed = capsys.readouterr().err
    assert code == 0, printed
    assert printed.count("MD5 not checked") == len(PAPER_DATASETS)  # once per file, each file named
    labels = [DATASET_LABELS[name] for name in PAPER_DATASETS]

    table = pd.read_csv(out / "table2.csv", header=[0, 1], index_col=0)
    assert list(table.index) == ["OFA", "Grad", "Attn"]
    assert list(table.columns) == [(label, metric) for label in labels for metric in ("SRG", "R-SRG")]
    assert all(_finite(cell) for cell in table.to_numpy().ravel())
    markdown, latex = (out / "table2.md").read_text(), (out / "table2.tex").read_text()
    assert markdown.splitlines()[0].split(" | ")[1::2] == [f"{label} SRG" for label in labels]
    assert all(f"\\multicolumn{{2}}{{c}}{{{label}}}" in latex for label in labels)
    for line in markdown.splitlines()[2:]:
        assert all(_finite(cell.strip().strip("*")) for cell in line.strip("| ").split(" | ")[1:]), line

    table1 = pd.read_csv(out / "table1.csv", header=[0, 1], index_col=0)
    assert list(table1.columns.get_level_values(0).unique()) == labels
    assert all(_finite(cell) for cell in table1.to_numpy().ravel())

    scores = pd.read_csv(out / "scores_long.csv")
    assert list(scores["dataset"].unique()) == list(PAPER_DATASETS) and np.isfinite(scores["value"]).all()
    for name in [*(f"maps_{name}" for name in PAPER_DATASETS), "curves"]:
        assert (out / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
        assert (out / "figures" / f"{name}.pdf").read_bytes()[:4] == b"%PDF", name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["failures"] == [] and manifest["options"]["size"] == size
    _check_checkpoints(manifest, cache, size)
