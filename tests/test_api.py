"""The Python API: xaibench.run runs what `xaibench run` runs; xaibench.load_run reads a run folder back."""
from __future__ import annotations

import json
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


def test_stdout_holds_the_table_alone_and_the_log_goes_to_stderr_and_run_log(tmp_path, tiny_config, run_cli, capsys):
    out = tmp_path / "out"
    assert run_cli(tiny_config, out, tmp_path / "cache", "--methods", "random", "--no-figures", "--log-level",
                   "INFO") == 0
    printed = capsys.readouterr()
    assert printed.out == (out / "table2.md").read_text() + "\n"  # `xaibench run > table.md`
    assert "score synthetic/seed0/random/srg: done" in printed.err
    log = (out / "run.log").read_text()
    assert "score synthetic/seed0/random/srg: done" in log and "INFO xaibench.run" in log
    assert "run.log" in json.loads((out / "manifest.json").read_text())["files"]
    # a second run into the folder keeps one run.log, this run's (every line cached now)
    assert run_cli(tiny_config, out, tmp_path / "cache", "--methods", "random", "--no-figures", "-v") == 0
    assert "score synthetic/seed0/random/srg: cached" in (out / "run.log").read_text()


def test_the_log_level_flags(tmp_path, tiny_config, run_cli, capsys):
    from xaibench.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["run", "--log-level", "LOUD"])
    assert stop.value.code == 2 and "DEBUG" in capsys.readouterr().err
    assert run_cli(tiny_config, tmp_path / "out", tmp_path / "cache", "--methods", "random", "--no-figures",
                   "--log-level", "WARNING") == 0
    assert "score synthetic/seed0/random/srg" not in capsys.readouterr().err  # below the threshold: not shown
    assert "score synthetic/seed0/random/srg" in (tmp_path / "out" / "run.log").read_text()  # but kept
