"""The layout rules of the engine: short functions, packages that say what they hold."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 60


def _long_functions(folder: Path) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_LINES:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_in_the_package_is_longer_than_60_lines():
    long = [entry for folder in ("xaibench", "methods", "metrics") for entry in _long_functions(REPO / folder)]
    assert long == []


def test_the_engine_steps_live_where_the_architecture_doc_says():
    engine = REPO / "xaibench" / "engine"
    assert {"plan.py", "execute.py", "collect.py", "report.py", "units.py", "kinds.py"} <= {
        p.name for p in engine.glob("*.py")}
    doc = (REPO / "docs" / "architecture.md").read_text()
    for step in ("plan", "execute", "collect", "report"):
        assert f"xaibench/engine/{step}.py" in doc


def test_every_package_folder_ships_in_the_wheel():
    import tomllib

    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"xaibench." + ".".join(p.parent.relative_to(REPO / "xaibench").parts) if p.parent != REPO / "xaibench"
             else "xaibench" for p in (REPO / "xaibench").rglob("__init__.py")}
    assert found <= declared
