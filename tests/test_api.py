"""The Python API: xaibench.run runs what `xaibench run` runs; xaibench.load_run reads a run folder back."""
from __future__ import annotations

import logging

import pandas as pd
import pytest

import xaibench
from xaibench.errors import XaibenchError


def test_run_returns_the_frames_the_cli_run_writes(tmp_path, tiny_config, run_cli):
    cache = tmp_path / "cache"
    frames = xaibench.run(tmp_path / "api", config=tiny_config, size=16, methods=["grad", "random"], figures=False,
                          cache=cache, progress=False)
    assert set(frames.scores["method"]) == {"grad", "random"}
    assert set(frames.scores["metric"]) >= {"srg", "rsrg"}
    assert frames.manifest["options"]["methods"] == ["grad", "random"] and len(frames.curves)

    # the same run from the command line (its cache: nothing recomputed) writes the same scores
    assert run_cli(tiny_config, tmp_path / "cli", cache, "--methods", "grad,random", "--no-figures") == 0
    cli = xaibench.load_run(tmp_path / "cli")
    pd.testing.assert_frame_equal(cli.scores, frames.scores)
    pd.testing.assert_frame_equal(cli.curves, frames.curves)
    assert cli.manifest["n_cached"] == cli.manifest["n_units"]


def test_load_run_refuses_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(XaibenchError, match="not a finished run folder"):
        xaibench.load_run(tmp_path)


def test_run_names_an_unknown_option(tmp_path):
    with pytest.raises(XaibenchError, match="unknown run option.*n_tests"):
        xaibench.run(tmp_path / "out", n_tests=3)


def test_the_old_steps_key_still_sets_the_curve_points_with_a_warning(caplog):
    from xaibench.engine import RunOptions, run_config

    with caplog.at_level(logging.WARNING, logger="xaibench"):
        config, _ = run_config({"run": {"steps": 7}})
    assert RunOptions.from_dict(config["run"]).curve_points == 7
    assert "deprecated" in caplog.text and "curve_points" in caplog.text
    config, _ = run_config({}, None, {"run.steps": 5})
    assert RunOptions.from_dict(config["run"]).curve_points == 5


def test_the_manifest_records_every_version_that_changes_a_result(tmp_path, tiny_config):
    from importlib import metadata

    frames = xaibench.run(tmp_path / "out", config=tiny_config, size=16, methods=["random"], figures=False,
                          metrics=["srg"], cache=tmp_path / "cache", progress=False)
    versions = frames.manifest["versions"]
    for name in ("torch", "timm", "numpy", "scipy", "pandas", "captum", "medmnist", "grad-cam", "zennit"):
        assert versions[name] == metadata.version(name)
    assert {"cuda", "cudnn", "python", "os"} <= set(versions) and versions["python"] and versions["os"]
