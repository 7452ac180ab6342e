"""Shared fixtures: where the genuine MedMNIST files are, a private cache folder, seeds."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
VENDORED_DATA = REPO / "tests" / "data"
SHARED_DATA = Path(os.environ.get("XAIBENCH_TEST_DATA", REPO.parent / "shared" / "data" / "medmnist"))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Keep the MD5 memo and checkpoints of tests out of the user's cache."""
    monkeypatch.setenv("XAIBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "xaibench-cache"))
    monkeypatch.delenv("XAIBENCH_DATA", raising=False)
    torch.manual_seed(0)


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    """The tiny run of tests/test_run.py (TINY_RUN: a one-block ViT, a few steps, 8 test images) as a file."""
    from test_run import TINY_RUN

    path = tmp_path / "tiny.toml"
    path.write_text(TINY_RUN)
    return path


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "pneumoniamnist.npz").exists():
        pytest.skip(f"genuine MedMNIST files not found in {SHARED_DATA} (set XAIBENCH_TEST_DATA)")
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
