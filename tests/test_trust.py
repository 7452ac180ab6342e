"""Trust under faults: no code from data, a cache that checks itself, one run per --out folder, runs killed at
seeded points that resume to the same tables, Ctrl-C that ends in one line."""
import json
import os
import pickle
import random
import signal
import sys
from pathlib import Path

import pytest
import torch

from xaibench import faults
from xaibench.cli import main

REPO = Path(__file__).resolve().parents[1]

TABLES = ("table2.csv", "scores_long.csv", "curves.csv", "wilcoxon.csv", "plausibility.csv", "ci.csv")


def _run(config: Path, out: Path, cache: Path, *extra: str) -> int:
    return main(["run", "--config", str(config), "--size", "16", "--out", str(out), "--cache", str(cache),
                 "--quiet", "--threads", "1", "--methods", "ofa,grad", *extra])


class _RunsCode:
    """Unpickling this calls open(marker, 'w'): a file that runs code when a careless loader unpickles it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_file(path: Path, marker: Path) -> Path:
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": _RunsCode(marker), "model_name": "ofa", "model_kwargs": {}, "record": {}}, handle)
    return path


@pytest.mark.parametrize("how", ["checkpoint", "init", "pretrained", "cached"])
def test_a_pickle_that_would_run_code_is_refused_with_one_line_and_never_runs(tmp_path, tiny_config, capsys, caplog,
                                                                             how):
    marker = tmp_path / "the-code-ran"
    evil = _evil_file(tmp_path / "weights.pt", marker)
    cache = tmp_path / "cache"
    if how == "checkpoint":
        code = _run(tiny_config, tmp_path / "out", cache, "--model", "ofa", "--checkpoint", str(evil))
    elif how == "cached":  # a legacy .pt checkpoint where the run looks for one
        from xaibench.config import read_config
        from xaibench.engine import run_config, train_config_for
        from xaibench.training import DataSpec, checkpoint_path

        config, overrides = run_config(read_config(tiny_config), {"size": 16}, {})
        spec = DataSpec("synthetic", 16, None, dict(config["data"]["synthetic"]))
        path = checkpoint_path(spec, "ofa", train_config_for("ofa", config, overrides), 0, cache)
        path.parent.mkdir(parents=True)
        evil = _evil_file(path.with_suffix(".pt"), marker)
        code = _run(tiny_config, tmp_path / "out", cache)
    else:
        code = _run(tiny_config, tmp_path / "out", cache, "--set", f"{how}={evil}")
    err = capsys.readouterr().err
    if how == "cached":  # since 0.5.0 a legacy checkpoint is never read: one line says so, the model is retrained
        assert code == 0, err
        said = [r.getMessage() for r in caplog.records if evil.name in r.getMessage()]
        assert len(said) == 1 and "ignored" in said[0] and "trained again" in said[0], said
    else:
        assert code == 2, err
        assert str(evil.name) in err and "Traceback" not in err
    assert not marker.exists(), "unpickling ran the file's code"


def _flip_byte(path: Path, at: float = 0.6) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_units_and_checkpoints_are_detected_deleted_and_recomputed(tmp_path, tiny_config, caplog):
    cache = tmp_path / "cache"
    assert _run(tiny_config, tmp_path / "first", cache, "--no-figures") == 0
    units = sorted((cache / "units").rglob("*.pt"))
    _flip_byte(units[0])  # bit-flipped
    units[1].write_bytes(units[1].read_bytes()[:100])  # truncated
    units[2].write_bytes(b"PK\x03\x04 a foreign file")  # foreign
    checkpoint = sorted((cache / "checkpoints").glob("ofa-*.safetensors"))[0]
    _flip_byte(checkpoint, 0.9)  # a weight's bytes altered: safetensors alone would not notice
    with caplog.at_level("INFO"):
        assert _run(tiny_config, tmp_path / "second", cache, "--no-figures") == 0
    logged = caplog.text
    assert logged.count("deleted, it is computed again") == 3 and "weights do not match their checksum" in logged
    manifest = json.loads((tmp_path / "second" / "manifest.json").read_text())
    assert not manifest["units"]["train synthetic/seed0/ofa"]["cached"]  # retrained
    for name in TABLES:
        assert (tmp_path / "second" / name).read_bytes() == (tmp_path / "first" / name).read_bytes(), name


def test_a_second_run_into_a_live_out_folder_is_refused(tmp_path, tiny_config, capsys):
    from filelock import FileLock

    out = tmp_path / "out"
    out.mkdir()
    with FileLock(str(out / ".xaibench-run.lock")):  # a live run holds it
        assert _run(tiny_config, out, tmp_path / "cache", "--no-figures") == 2
    assert "is being written by another xaibench run" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == [".xaibench-run.lock"]  # nothing written
    (tmp_path / "a-file").write_text("x")
    assert _run(tiny_config, tmp_path / "a-file", tmp_path / "cache") == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_cache_info_and_prune(tmp_path, tiny_config, capsys):
    cache = tmp_path / "cache"
    assert _run(tiny_config, tmp_path / "out", cache, "--no-figures") == 0
    capsys.readouterr()
    assert main(["cache", "info", "--cache", str(cache)]) == 0
    info = capsys.readouterr().out
    assert "checkpoints" in info and "explain" in info and "score" in info
    assert main(["cache", "prune", "--cache", str(cache), "--keep-latest", "0", "--dry-run"]) == 0
    assert list((cache / "units").rglob("*.pt"))  # a dry run deletes nothing
    assert main(["cache", "prune", "--cache", str(cache), "--older-than", "0"]) == 0
    assert not list((cache / "units").rglob("*.pt")) and not list((cache / "checkpoints").glob("*.safetensors"))
    assert main(["cache", "prune", "--cache", str(cache)]) == 2  # neither --older-than nor --keep-latest


def _faulted(config: str, out: str, cache: str, fault: str, stderr: str) -> int:
    """One run in a fresh process with a fault armed (not a fork: a forked child of a process whose OpenMP pool
    has run can hang); its exit code (-9 for SIGKILL)."""
    import subprocess

    env = {**os.environ, faults.ENV: fault, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "xaibench.cli", "run", "--config", config, "--size", "16", "--out", out,
               "--cache", cache, "--quiet", "--threads", "1", "--methods", "ofa,grad"]
    with open(stderr, "w") as err:  # SIGINT as a terminal delivers it, also when pytest itself runs in the
        # background of a script (`pytest &` starts with SIGINT ignored, and a child inherits that)
        return subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=err, timeout=300,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)).returncode


@pytest.mark.slow
def test_runs_killed_at_ten_seeded_points_resume_to_the_same_tables(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setenv(faults.ENV, "kill:0")  # count the events of an uninterrupted run, kill never
    faults.reset()
    assert _run(tiny_config, tmp_path / "reference", tmp_path / "reference-cache") == 0
    n_events = faults.count()
    monkeypatch.delenv(faults.ENV)
    assert n_events > 30
    points = sorted(random.Random(0).sample(range(1, n_events), 10))
    for point in points:
        cache, out = tmp_path / f"cache-{point}", tmp_path / f"out-{point}"
        assert _faulted(str(tiny_config), str(out), str(cache), f"kill:{point}", str(tmp_path / "err")) == -9, point
        assert _run(tiny_config, out, cache) == 0, point
        assert not list(out.glob(".staging-*")), point  # a killed run's staging folder is cleared
        for name in TABLES:
            assert (out / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), (point, name)


@pytest.mark.slow
def test_ctrl_c_ends_in_one_line_and_the_same_command_resumes(tmp_path, tiny_config):
    err = tmp_path / "err"
    assert _faulted(str(tiny_config), str(tmp_path / "out"), str(tmp_path / "cache"), "interrupt:40", str(err)) == 130
    text = err.read_text()
    said = [line for line in text.strip().splitlines() if line.startswith("xaibench:")]  # the log precedes it
    assert "xaibench: interrupted" in text and "Traceback" not in text and len(said) == 1
    assert _run(tiny_config, tmp_path / "out", tmp_path / "cache") == 0
    assert "OFA" in (tmp_path / "out" / "table2.md").read_text()


def test_the_checkpoint_record_is_json_metadata_and_the_weights_a_plain_safetensors_file(tmp_path, tiny_config):
    from safetensors import safe_open

    assert _run(tiny_config, tmp_path / "out", tmp_path / "cache", "--no-figures") == 0
    path = sorted((tmp_path / "cache" / "checkpoints").glob("ofa-*.safetensors"))[0]
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
        assert all(torch.isfinite(handle.get_tensor(name)).all() for name in handle.keys())
    record = json.loads(metadata["record"])
    assert metadata["format"] == "xaibench-checkpoint-1" and record["key"] in path.name
    assert {"config", "best_step", "val_acc", "history", "computed_by"} <= set(record)
