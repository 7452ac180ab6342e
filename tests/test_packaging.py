"""pyproject.toml tells the truth: every imported package is declared and every declared one is used, the version
is the package's, and CI's constraints file pins every direct dependency at a version the bounds admit."""
import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import xaibench

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
CONSTRAINTS = REPO / "constraints" / "ci.txt"
FIRST_PARTY = {"xaibench", "methods", "metrics"}
# The optional extras CI installs, so that the methods behind them are tested (dask is in the test extra;
# ray is not installed by CI: a 80 MB wheel whose local start alone takes half a minute).
CI_EXTRAS = ("lrp", "cam", "peers")
# Declared but never imported by the package, and why each is needed all the same.
NOT_IMPORTED = {"jinja2": "pandas' DataFrame.to_latex (Styler) needs it to write the LaTeX tables"}


def _requirements(extra: str | None = None) -> list[Requirement]:
    project = PYPROJECT["project"]
    raw = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(line) for line in raw]


def _imported_top_names(folder: Path) -> set[str]:
    """Top-level names of the absolute imports in folder's .py files, minus the stdlib and the folder's own modules."""
    own = {path.stem for path in folder.glob("*.py")}
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name not in FIRST_PARTY | own}


def _distributions(import_names: set[str]) -> dict[str, set[str]]:
    """import name -> the canonical names of the installed distributions that provide it (itself if none is
    installed, as for tomli on Python >= 3.11)."""
    provided = importlib.metadata.packages_distributions()
    return {name: {canonicalize_name(dist) for dist in provided.get(name, [name])} for name in import_names}


def _undeclared(folders: list[str], declared: set[str]) -> dict[str, set[str]]:
    imported = set().union(*(_imported_top_names(REPO / folder) for folder in folders))
    return {name: dists for name, dists in _distributions(imported).items() if not dists & declared}


def _optional() -> set[str]:
    """The packages of the optional extras (dask, ray, lrp, cam, ...), not the test extra."""
    extras = [name for name in PYPROJECT["project"]["optional-dependencies"] if name != "test"]
    return {canonicalize_name(req.name) for extra in extras for req in _requirements(extra)}


def _module_level_imports(folder: Path) -> set[str]:
    """Top-level names imported at module level (not inside a function) in folder's .py files."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_every_package_imported_by_the_package_is_declared():
    declared = {canonicalize_name(req.name) for req in _requirements()} | _optional()
    assert _undeclared(["xaibench", "methods", "metrics"], declared) == {}


def test_optional_packages_are_imported_only_inside_functions():
    """A missing extra must not break `import xaibench`: its packages are imported where they are used."""
    core = {canonicalize_name(req.name) for req in _requirements()}
    at_module_level = set().union(*(_module_level_imports(REPO / f) for f in ["xaibench", "methods", "metrics"]))
    optional_only = {name for name, dists in _distributions(at_module_level).items()
                     if dists & _optional() and not dists & core}
    assert optional_only == set()


def test_every_declared_dependency_is_imported_or_its_reason_listed():
    declared = {canonicalize_name(req.name) for req in _requirements()}
    imported = set().union(*(_imported_top_names(REPO / folder) for folder in ["xaibench", "methods", "metrics"]))
    provided = set().union(*_distributions(imported).values())
    assert declared - provided == set(NOT_IMPORTED), "a declared dependency nothing imports (or a stale reason)"


def test_tests_benchmarks_and_experiments_import_only_declared_packages():
    """The test-only peers (the `peers` extra) count as declared here: the tests that import them skip without them."""
    declared = {canonicalize_name(req.name) for req in _requirements() + _requirements("test") + _requirements("peers")}
    assert _undeclared(["tests", "benchmarks", "experiments"], declared) == {}


def test_version_is_one_and_has_a_changelog_section():
    version = PYPROJECT["project"]["version"]
    assert xaibench.__version__ == version
    assert re.search(rf"^## {re.escape(version)}\b", (REPO / "CHANGELOG.md").read_text(), re.MULTILINE)


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints/ci.txt: {line!r} is not name==version"
            pins[canonicalize_name(name)] = version
    return pins


def test_constraints_pin_every_direct_dependency_within_its_bounds():
    pins = _pins()
    for req in _requirements() + _requirements("test") + [r for extra in CI_EXTRAS for r in _requirements(extra)]:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints/ci.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req}"
    assert pins["torch"] and pins["torchvision"], "torch must be pinned, or pip may fetch a multi-GB CUDA build"


def test_upper_bounds_carry_their_reason():
    """An upper bound only for a known break, said on its line; none that merely mirrors a disk."""
    lines = (REPO / "pyproject.toml").read_text().splitlines()
    for req in _requirements() + _requirements("test"):
        if any(spec.operator in {"<", "<=", "==", "~=", "==="} for spec in req.specifier):
            line = next(line for line in lines if line.strip().startswith(f'"{req.name}'))
            assert "#" in line, f"{req}: an upper bound needs the known break it avoids, in a comment on its line"


def test_ci_installs_with_the_constraints_runs_the_oldest_python_check_and_lints_before_the_tests():
    script = (REPO / ".ci" / "run").read_text()
    assert "CONSTRAINTS=constraints/ci.txt" in script
    installed = re.search(r"pip install .*-c \"\$CONSTRAINTS\" -e '\.\[([a-z,]+)\]'", script)
    assert installed and set(installed.group(1).split(",")) == {"test", *CI_EXTRAS}
    assert re.search(r"^check_oldest_python$", script, re.MULTILINE)
    lint, tests = (re.search(rf"^\.venv/bin/python -m {tool}\b", script, re.MULTILINE)
                   for tool in ("ruff check", "pytest"))
    assert lint and tests and lint.start() < tests.start(), "CI lints with ruff, then runs the tests"
