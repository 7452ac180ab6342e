"""Shared fixtures: the tiny run and the CLI call that runs it, where the MedMNIST files are, a private cache,
seeds. Tests reach these through fixtures only: no test file imports another file of tests/."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
VENDORED_DATA = REPO / "tests" / "data"
SHARED_DATA = Path(os.environ.get("XAIBENCH_TEST_DATA", REPO.parent / "shared" / "data" / "medmnist"))

# The tiny run: the synthetic set, a one-block ViT, a few training steps, 8 test images, no sanity check.
TINY_RUN = """
[run]
datasets = ["synthetic"]
sanity_images = 0
n_test = 8
curve_points = 5
batch_size = 8
n_figure_images = 3
[train]
steps = 6
batch_size = 8
eval_every = 3
warmup_steps = 1
init = "segm"
init_steps = 3
n_masks = 2
[train.model_options]
depth = 1
embed_dim = 32
num_heads = 2
[data.synthetic]
n_samples = 48
"""


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Keep the MD5 memo and checkpoints of tests out of the user's cache."""
    monkeypatch.setenv("XAIBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "xaibench-cache"))
    monkeypatch.delenv("XAIBENCH_DATA", raising=False)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_run() -> str:
    """The tiny run's config as TOML text (to extend or to break in a test)."""
    return TINY_RUN


@pytest.fixture
def tiny_config(tmp_path, tiny_run) -> Path:
    """The tiny run as a config file."""
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_run)
    return path


def _run_cli(config: Path, out: Path, cache: Path, *extra: str) -> int:
    from xaibench.cli import main  # here, not at the top: a broken CLI fails its tests, not every test's collection

    return main(["run", "--config", str(config), "--size", "16", "--out", str(out), "--cache", str(cache),
                 "--quiet", *extra])


@pytest.fixture
def run_cli() -> Callable[..., int]:
    """`run_cli(config, out, cache, *flags)`: `xaibench run` in-process at 16 px, quiet; returns the exit code."""
    return _run_cli


@pytest.fixture(scope="session")
def vendored_data() -> Path:
    """tests/data: the genuine BreastMNIST file (28 px), small enough to ship with the tests."""
    return VENDORED_DATA


@pytest.fixture(scope="session")
def shared_data_root() -> Path:
    """Where the genuine MedMNIST files of this machine would be (XAIBENCH_TEST_DATA); it may hold none."""
    return SHARED_DATA


@pytest.fixture
def shared_data(shared_data_root) -> Path:
    """The genuine MedMNIST files; the test is skipped where they are not."""
    if not (shared_data_root / "pneumoniamnist.npz").exists():
        pytest.skip(f"genuine MedMNIST files not found in {shared_data_root} (set XAIBENCH_TEST_DATA)")
    return shared_data_root


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
