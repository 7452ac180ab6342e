"""Bad input through the real CLI (issue 15, part 4): one case per way a user can get an input wrong.

Each case runs `xaibench.cli.main` in-process and asserts: the exit code (2 for bad usage; 1 for a unit that
fails or a write that fails, as the README's exit codes say), exactly one error line on stderr that names the
bad value (and the valid ones where there are any), no traceback, and no partial result in --out (--out absent
afterwards, or holding what it held before). `cases` can mark a case xfail(strict) with the change it needs;
none is marked today.
"""
from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from xaibench.cli import main
from xaibench.data.fixtures import fixture_arrays, write_fixture
from xaibench.data.medmnist_sets import UNVERIFIED_ENV
from xaibench.registry import METHODS


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_run) -> dict[str, Path]:
    """The tiny config and one cache for the whole file (the few cases that train share one checkpoint)."""
    folder = tmp_path_factory.mktemp("bad-inputs")
    config = folder / "tiny.toml"
    config.write_text(tiny_run)
    return {"config": config, "cache": folder / "cache"}


def snapshot(out: Path) -> dict[str, int] | None:
    """What --out holds: None when it does not exist, else {relative path: size} of every file in it."""
    if not out.exists():
        return None
    if out.is_file():
        return {".": out.stat().st_size}
    return {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}


def expect_error(capsys, argv: list[str], out: Path, *names: str, code: int = 2) -> tuple[str, str]:
    """Run the CLI; check the exit code, one error line naming every string in `names`, no traceback and
    --out unchanged. Returns the line and what went to stdout."""
    before = snapshot(out)
    try:
        returned = main(argv)
    except SystemExit as exit:  # argparse's usage errors
        returned = exit.code
    printed, err = capsys.readouterr()
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    if lines and lines[0].startswith("usage:"):  # argparse: its usage block, then one error line
        assert all(line.startswith(" ") for line in lines[1:-1]), err
        lines = lines[-1:]
    lines = [line for line in lines if "error:" in line]  # the log's unit lines go to stderr too
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("xaibench") and "error:" in line, line
    for name in names:
        assert name in line, f"{name!r} not in {line!r}"
    assert returned == code, (returned, line)
    assert snapshot(out) == before, f"--out changed: {before} -> {snapshot(out)}"
    return line, printed


def run_argv(shared, out: Path, *extra: str, config: Path | None = None, size: str = "16",
             cache: Path | None = None) -> list[str]:
    return ["run", "--config", str(config or shared["config"]), "--size", size, "--out", str(out),
            "--cache", str(cache or shared["cache"]), "--quiet", "--no-figures", *extra]


def cases(table: dict[str, tuple], xfails: dict[str, str]) -> list:
    """pytest params of a case table, those in `xfails` marked xfail(strict) with the change they need."""
    return [pytest.param(case, id=case, marks=[pytest.mark.xfail(strict=True, reason=xfails[case])]
                         if case in xfails else []) for case in table]


# -- names, lists and numbers on the command line -------------------------------------------------------------

FLAG_CASES = {
    # id: (extra flags, strings the error line names)
    "unknown method": (["--methods", "ofa,nosuch"], ["'nosuch'", "grad", "ofa"]),
    "method pattern matching nothing": (["--methods", "zzz.*"], ["'zzz.*'", "grad"]),
    "unknown dataset": (["--datasets", "nosuchset"], ["'nosuchset'", "synthetic", "breastmnist"]),
    "unknown model": (["--model", "nosuchnet"], ["'nosuchnet'", "ofa", "resnet18"]),
    "unknown metric": (["--set", "run.metrics=srg,nosuch"], ["'nosuch'", "srg", "rsrg"]),
    "unknown device": (["--device", "tpu"], ["'tpu'", "cpu", "cuda"]),
    "unknown backend": (["--backend", "mpi"], ["'mpi'", "serial", "loky"]),
    "unknown target": (["--target", "best"], ["'best'", "label", "predicted"]),
    "unknown preset": (["--preset", "huge"], ["'huge'", "paper"]),
    "empty method list": (["--methods", ""], ["no method given", "grad"]),
    "empty dataset list": (["--datasets", ","], ["no dataset given", "synthetic"]),
    "empty metric list": (["--set", "run.metrics=[]"], ["no metric given", "srg"]),
    "empty seed list": (["--seeds", ""], ["no seed given"]),
    "size a MedMNIST set lacks": (["--datasets", "breastmnist"], ["16", "28, 64, 128, 224"]),
    "size below what the synthetic set draws": (["--size", "8"], ["8", ">= 16"]),
    "negative --n-test": (["--n-test", "-3"], ["n_test", "-3", ">= 1"]),
    "non-numeric --n-test": (["--n-test", "ten"], ["--n-test", "'ten'", "int"]),
    "negative --seeds": (["--seeds", "0,-1"], ["-1", ">= 0"]),
    "non-numeric --seeds": (["--seeds", "0,one"], ["--seeds", "'0,one'", "integers"]),
    "negative --jobs": (["--jobs", "-2"], ["--jobs", "'-2'", ">= 1"]),
    "non-numeric --jobs": (["--jobs", "two"], ["--jobs", "'two'", ">= 1"]),
    "negative --curve-points": (["--curve-points", "-4"], ["-4", ">= 2", "'all'"]),
    "non-numeric --curve-points": (["--curve-points", "many"], ["--curve-points", "'many'", "'all'"]),
    "negative --unit-timeout": (["--unit-timeout", "-1"], ["--unit-timeout", "'-1'", "> 0"]),
    "--set training key that does not exist": (["--set", "stepz=3"], ["stepz", "steps", "batch_size"]),
    "--set run key that does not exist": (["--set", "run.n_tests=3"], ["n_tests", "n_test"]),
    "--set dataset key that does not exist": (["--set", "data.synthetic.n_sample=40"], ["n_sample", "n_samples"]),
    "--set without '='": (["--set", "steps"], ["'steps'", "key=value"]),
    "--set training value of the wrong type": (["--set", "steps=six"], ["steps", "'six'"]),
    "--set run value of the wrong type": (["--set", "run.n_test=eight"], ["n_test", "'eight'", ">= 1"]),
    "negative sanity_images": (["--set", "run.sanity_images=-1"], ["sanity_images", "-1", ">= 0"]),
    "sanity_images that is not a count": (["--set", "run.sanity_images=true"], ["sanity_images", "True", ">= 0"]),
    "--model to wrap without --checkpoint": (["--model", "torchvision:resnet18"], ["torchvision:resnet18",
                                                                                  "--checkpoint"]),
    "--checkpoint that does not exist": (["--model", "torchvision:resnet18", "--checkpoint", "/no/such.pt"],
                                         ["/no/such.pt"]),
    "non-numeric --size": (["--size", "big"], ["--size", "'big'", "int"]),
    "zero --threads": (["--threads", "0"], ["--threads", "'0'", ">= 1"]),
}
FLAG_XFAILS: dict[str, str] = {}


@pytest.mark.parametrize("case", cases(FLAG_CASES, FLAG_XFAILS))
def test_bad_flags(case, shared, tmp_path, capsys):
    extra, names = FLAG_CASES[case]
    out = tmp_path / "out"
    expect_error(capsys, run_argv(shared, out, *extra), out, *names)


TRAIN_CASES = {
    "train: unknown model": (["--models", "resnet18,nosuchnet"], ["'nosuchnet'", "resnet50"]),
    "train: empty model list": (["--models", ""], ["no model given", "ofa"]),
    "train: size a MedMNIST set lacks": (["--datasets", "pneumoniamnist", "--size", "32"], ["32", "28, 64"]),
}


@pytest.mark.parametrize("case", cases(TRAIN_CASES, {}))
def test_bad_train_flags(case, shared, tmp_path, capsys):
    extra, names = TRAIN_CASES[case]
    out = tmp_path / "out"
    argv = ["train", "--config", str(shared["config"]), "--size", "16", "--out", str(out), "--cache",
            str(shared["cache"]), "--quiet", *extra]
    expect_error(capsys, argv, out, *names)


OTHER_COMMANDS = {
    "download: size MedMNIST lacks": (["download", "--datasets", "breastmnist", "--size", "32"],
                                      ["invalid choice: 32", "28", "224"]),
    "download: unknown dataset": (["download", "--datasets", "breastmnist,nosuchset"], ["'nosuchset'",
                                                                                       "pneumoniamnist"]),
    "cache prune without a rule": (["cache", "prune"], ["--older-than", "--keep-latest"]),
    "cache prune with negative days": (["cache", "prune", "--older-than", "-1"], ["--older-than", "'-1'", ">= 0"]),
    "list: unknown registry": (["list", "explainers"], ["'explainers'", "methods", "metrics"]),
}


@pytest.mark.parametrize("case", list(OTHER_COMMANDS))
def test_bad_input_to_other_commands(case, tmp_path, capsys, monkeypatch):
    argv, names = OTHER_COMMANDS[case]
    monkeypatch.chdir(tmp_path)  # nothing may appear in the working folder
    cache = tmp_path / "cache"
    cache.mkdir()
    argv = [*argv, "--cache", str(cache)] if argv[0] == "cache" else argv
    expect_error(capsys, argv, tmp_path, *names)


def test_cuda_asked_where_there_is_none(shared, tmp_path, capsys):
    out = tmp_path / "out"
    if torch.cuda.is_available():  # then a device index past the visible ones
        device = f"cuda:{torch.cuda.device_count()}"
        expect_error(capsys, run_argv(shared, out, "--device", device), out, repr(device), "visible")
    else:
        expect_error(capsys, run_argv(shared, out, "--device", "cuda"), out, "'cuda'", "not available", "cpu")


# -- configuration files --------------------------------------------------------------------------------------

CONFIG_CASES = {
    # id: (file name, text or a function of the tiny run's text, strings the error line names)
    "TOML that does not parse": ("bad.toml", "[run\nn_test = 8\n", ["bad.toml", "not valid TOML"]),
    "JSON that does not parse": ("bad.json", '{"run": {"n_test": 8,}}', ["bad.json", "not valid JSON"]),
    "config file that does not exist": ("absent.toml", None, ["absent.toml"]),
    "unknown section": ("sections.toml", lambda tiny: tiny + "[trian]\nsteps = 3\n",
                        ["'trian'", "run", "train", "data"]),
    "section that is not a table": ("flat.json", '{"run": 8}', ["'run'", "table"]),
    "run option of the wrong type": ("types.toml", lambda tiny: tiny.replace("n_test = 8", 'n_test = "eight"'),
                                     ["n_test", "'eight'", ">= 1"]),
    "training option of the wrong type": ("train.json", '{"train": {"steps": [6]}}', ["steps", "[6]"]),
    "unknown run option": ("option.toml", lambda tiny: tiny.replace("n_test = 8", "n_tset = 8"),
                           ["n_tset", "n_test"]),
    "dataset section that is not a table": ("data.json", '{"data": {"synthetic": 48}}', ["data.synthetic", "48"]),
}


@pytest.mark.parametrize("case", cases(CONFIG_CASES, {}))
def test_bad_config_files(case, shared, tiny_run, tmp_path, capsys):
    name, text, names = CONFIG_CASES[case]
    config = tmp_path / name
    if text is not None:
        config.write_text(text(tiny_run) if callable(text) else text)
    out = tmp_path / "out"
    expect_error(capsys, run_argv(shared, out, config=config), out, *names)


# -- MedMNIST files -------------------------------------------------------------------------------------------

SET = "breastmnist"  # 2 classes, grey: the smallest fixture


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def damaged(kind: str, folder: Path) -> Path:
    """A breastmnist file at 28 px (64 px for 'wrong side'), damaged in one way."""
    arrays = fixture_arrays(SET, 28)
    path = folder / f"{SET}.npz"
    if kind == "truncated":
        data = write_fixture(SET, 28, folder).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "wrong keys":
        arrays["test_pictures"] = arrays.pop("test_images")
        write_arrays(path, arrays)
    elif kind == "wrong dtype":
        arrays["test_images"] = arrays["test_images"].astype(np.float32)
        write_arrays(path, arrays)
    elif kind == "labels out of range":
        arrays["test_labels"] = arrays["test_labels"].copy()
        arrays["test_labels"][0, 0] = 7
        write_arrays(path, arrays)
    elif kind == "wrong side":
        path = write_arrays(folder / f"{SET}_64.npz", arrays)  # 28 px images under the 64 px file name
    return path


MEDMNIST_CASES = {
    # id: (size, strings the error line names; "{path}" is the file)
    "truncated": ("28", ["{path}"]),
    "wrong keys": ("28", ["{path}", "test_images", "test_labels"]),
    "wrong dtype": ("28", ["{path}", "test_images", "float32", "uint8"]),
    "labels out of range": ("28", ["{path}", "test_labels", "7", "0..1"]),
    "wrong side": ("64", ["{path}", "28", "64"]),
}


@pytest.mark.parametrize("kind", list(MEDMNIST_CASES))
def test_damaged_medmnist_files(kind, shared, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "data"
    path = damaged(kind, folder)
    monkeypatch.setenv(UNVERIFIED_ENV, str(folder))  # past the MD5 check (a fixture is not the release)
    size, names = MEDMNIST_CASES[kind]
    out = tmp_path / "out"
    argv = run_argv(shared, out, "--datasets", SET, "--data-root", str(folder), size=size)
    expect_error(capsys, argv, out, *[name.format(path=path) for name in names])


def test_medmnist_file_missing(shared, tmp_path, capsys):
    out, folder = tmp_path / "out", tmp_path / "empty"
    folder.mkdir()
    argv = run_argv(shared, out, "--datasets", SET, "--data-root", str(folder), size="28")
    expect_error(capsys, argv, out, f"{SET}.npz not found", str(folder), "xaibench download")


def test_medmnist_md5_mismatch(shared, tmp_path, capsys):
    out, folder = tmp_path / "out", tmp_path / "data"
    path = write_fixture(SET, 28, folder)  # format-true, but not the release: its MD5 differs
    argv = run_argv(shared, out, "--datasets", SET, "--data-root", str(folder), size="28")
    expect_error(capsys, argv, out, str(path), "MD5", "does not match")


# -- plugins --------------------------------------------------------------------------------------------------

EXPLAINER = '''
import time

import torch
from xaibench.methods import Explainer
from xaibench.registry import register_method


@register_method("{name}")
class Broken(Explainer):
    """A broken explainer."""

    needs_gradients = False

    def attribute(self, inputs, target, generator=None):
        n = self.model.n_patches
        {body}
'''

EXPLAINER_CASES = {
    # id: (attribute's body, strings the error line names)
    "wrong shape": ("return torch.zeros(inputs.shape[0], n + 1)", ["shape", "(2, 17)", "[2, 16]"]),
    "NaN": ("return torch.full((inputs.shape[0], n), float('nan'))", ["non-finite", "nan"]),
    "Inf": ("return torch.full((inputs.shape[0], n), float('inf'))", ["non-finite", "inf"]),
    "raises": ("raise RuntimeError('plugin bug')", ["RuntimeError: plugin bug"]),
}


def plugin_file(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name.replace('.', '_')}.py"
    path.write_text(EXPLAINER.format(name=name, body=body))
    return path


@pytest.mark.parametrize("case", list(EXPLAINER_CASES))
def test_broken_explainers_fail_before_training(case, shared, tmp_path, capsys):
    body, names = EXPLAINER_CASES[case]
    name = f"bad.{case.replace(' ', '_').lower()}"
    plugin = plugin_file(tmp_path, name, body)
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = run_argv(shared, out, "--methods", f"grad,{name}", "--plugins", str(plugin), cache=cache)
    _, printed = expect_error(capsys, argv, out, f"'{name}'", "probe", *names)
    assert "train " not in printed and not (cache / "checkpoints").exists()  # it failed before any training


PLUGIN_FILE_CASES = {
    "syntax error": ("def broken(:\n", ["syntax.py", "SyntaxError"]),
    "raises on import": ("import torch\nraise ImportError('needs a package that is absent')\n",
                         ["raising.py", "ImportError: needs a package that is absent"]),
    "name already taken": ("from xaibench.registry import register_method\n\n\n"
                           "@register_method('grad')\ndef mine(model):\n    return None\n", ["taken.py", "'grad'"]),
}


@pytest.mark.parametrize("case", list(PLUGIN_FILE_CASES))
def test_broken_plugin_files(case, shared, tmp_path, capsys):
    text, names = PLUGIN_FILE_CASES[case]
    plugin = tmp_path / names[0]
    plugin.write_text(text)
    builtin = METHODS.get("grad")
    out = tmp_path / "out"
    expect_error(capsys, run_argv(shared, out, "--plugins", str(plugin)), out, *names)
    assert METHODS.get("grad") is builtin  # a refused plugin leaves the registry as it was


PLUGIN_PATH_CASES = {
    "does not exist": ("nowhere.py", ["nowhere.py", "not found", "a .py file or a folder"]),
    "not a .py file": ("notes.txt", ["notes.txt", "not a .py file"]),
    "empty folder": ("plugins", ["plugins", "holds no .py file"]),
}


@pytest.mark.parametrize("case", list(PLUGIN_PATH_CASES))
def test_bad_plugin_paths(case, shared, tmp_path, capsys):
    name, names = PLUGIN_PATH_CASES[case]
    path = tmp_path / name
    if case == "not a .py file":
        path.write_text("print('hello')\n")
    elif case == "empty folder":
        path.mkdir()
    out = tmp_path / "out"
    expect_error(capsys, run_argv(shared, out, "--plugins", str(path)), out, *names)


def test_explainer_past_the_unit_timeout_is_a_failed_unit(shared, tmp_path, capsys):
    """A unit failure, not bad usage: exit code 1 (the README's exit codes). The probe explains two images,
    the run eight: only the run sleeps, so the timeout is what stops it."""
    plugin = plugin_file(tmp_path, "bad.slow", "if inputs.shape[0] > 2:\n            time.sleep(60)\n"
                                               "        return torch.zeros(inputs.shape[0], n)")
    out = tmp_path / "out"
    # the network first, without a timeout: a busy or slow machine may train it for more than 2 s
    assert main(run_argv(shared, tmp_path / "trained", "--methods", "grad", "--set", "run.metrics=srg")) == 0
    capsys.readouterr()
    argv = run_argv(shared, out, "--methods", "grad,bad.slow", "--plugins", str(plugin), "--unit-timeout", "2",
                    "--set", "run.metrics=srg")
    expect_error(capsys, argv, out, "explain synthetic/seed0/bad.slow", "--unit-timeout 2", code=1)


# -- the result folder ----------------------------------------------------------------------------------------

def test_out_that_is_a_file(shared, tmp_path, capsys):
    out = tmp_path / "results.csv"
    out.write_text("someone's file\n")
    expect_error(capsys, run_argv(shared, out), out, str(out), "is a file")
    assert out.read_text() == "someone's file\n"


def _mount_tmpfs(folder: Path, options: str) -> bool:
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


@contextlib.contextmanager
def mounted(folder: Path, options: str):
    folder.mkdir()
    ok = _mount_tmpfs(folder, options)
    try:
        yield ok
    finally:
        if ok:  # lazily: nothing is left mounted even if a file in it is still open
            subprocess.run(["umount", "--lazy", str(folder)], check=True)


def test_out_not_writable(shared, tmp_path, capsys, monkeypatch):
    """--out inside a read-only tmpfs where this runs as root and may mount; inside a folder without write
    permission for a user other than root (chmod does not stop root); else (root, no mount) mkdir there raises
    PermissionError as the kernel would."""
    parent = tmp_path / "locked"
    with mounted(parent, "ro,size=64k") as read_only:
        if not read_only and os.geteuid() != 0:
            parent.chmod(0o555)
        elif not read_only:
            real_mkdir = Path.mkdir

            def mkdir(self, *args, **kwargs):
                if self == parent or parent in self.parents:
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
                return real_mkdir(self, *args, **kwargs)

            monkeypatch.setattr(Path, "mkdir", mkdir)
        out = parent / "out"
        try:
            expect_error(capsys, run_argv(shared, out), out, str(out), "cannot be written")
        finally:
            if not read_only:
                parent.chmod(0o755)  # so that pytest can remove it


def test_out_on_a_full_disk(shared, tmp_path, capsys, monkeypatch):
    """A failed write, exit code 1 (README). An 8 kB tmpfs where this may mount (the tables overflow it), else
    every write of a result file fails with ENOSPC at its fsync, as on a full disk. The tables written before
    the disk filled must not stay behind as a partial result."""
    parent = tmp_path / "small"
    with mounted(parent, "size=8k") as small:
        if not small:
            real_fsync = os.fsync

            def fsync(fd):
                if str(parent) in os.readlink(f"/proc/self/fd/{fd}"):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real_fsync(fd)

            monkeypatch.setattr(os, "fsync", fsync)
        out = parent / "out"
        argv = run_argv(shared, out, "--methods", "grad", "--set", "run.metrics=srg")
        expect_error(capsys, argv, out, str(out), "No space left on device", code=1)
