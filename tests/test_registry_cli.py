"""The registry's verbs (register, create, list, resolve) and the CLI commands on top of them: list, errors, help."""
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest

from xaibench.cli import main
from xaibench.registry import Registry, UnknownNameError

REPO = Path(__file__).resolve().parents[1]


def test_registry_register_create_list_and_errors():
    registry = Registry("widget")

    @registry.register("a.one")
    def one(value=1):
        """First widget."""
        return ("one", value)

    registry.register("b.two", lambda: "two")
    assert registry.names() == ["a.one", "b.two"]
    assert registry.names("a.*") == ["a.one"]
    assert registry.create("a.one", value=5) == ("one", 5)
    assert "b.two" in registry and "c" not in registry
    with pytest.raises(UnknownNameError, match=r"unknown widget 'nope'; valid names: a.one, b.two"):
        registry.create("nope")
    with pytest.raises(UnknownNameError, match="no widget matches"):
        registry.resolve("z*")
    assert registry.resolve("b.two, a.*") == ["b.two", "a.one"]
    assert registry.resolve("grp", groups={"grp": ["a.one"]}) == ["a.one"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry.register("a.one", lambda: None)
    assert any("registered twice" in str(w.message) for w in caught)


def test_cli_list_shows_all_registries(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for heading in ("datasets", "models", "methods", "metrics"):
        assert f"{heading} (" in out
    for name in ("synthetic", "breastmnist", "pathmnist", "ofa", "segm", "vit", "resnet18", "resnet50"):
        assert f"  {name} " in out


def test_cli_unknown_name_exits_2_with_valid_names(capsys):
    assert main(["download", "--datasets", "nosuchset"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'nosuchset'" in err and "breastmnist" in err and "Traceback" not in err


def test_cli_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as stop:  # argparse's usage error
        main(["list", "--bogus"])
    assert stop.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.slow
def test_python_m_xaibench_cli_prints_the_help():
    helped = subprocess.run([sys.executable, "-m", "xaibench.cli", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "list" in helped.stdout and "download" in helped.stdout


def test_plugin_folders_install_inside_the_namespace(tmp_path):
    import xaibench.methods
    import xaibench.metrics

    assert Path(xaibench.methods.__file__).parent == REPO / "methods"
    assert Path(xaibench.metrics.__file__).parent == REPO / "metrics"
    # outside the repository (no cwd on sys.path) there is no top-level `methods` or `metrics`
    for generic in ("methods", "metrics"):
        probe = subprocess.run([sys.executable, "-c", f"import {generic}"], cwd=tmp_path, capture_output=True)
        assert probe.returncode != 0 and b"ModuleNotFoundError" in probe.stderr


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = config["package-dir"]
    listed = set(config["packages"])
    for package, folder in mapping.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder).parts
            assert ".".join((package, *relative)) in listed, f"{init.parent} missing from pyproject packages"
