"""The layout rules of the package: short functions, small files, and docs that name files that exist."""
import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("xaibench", "methods", "metrics")
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 400
# The pages a newcomer follows to find code; a file they name that is gone sends them nowhere.
GUIDES = ("README.md", "docs/architecture.md")
REPO_PATH = re.compile(r"\b((?:xaibench|methods|metrics|tests|docs|benchmarks|experiments)/[\w/.-]*\.(?:py|md|toml))\b")


def _long_functions(folder: Path) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_in_the_package_is_longer_than_60_lines():
    long = [entry for folder in PACKAGE_FOLDERS for entry in _long_functions(REPO / folder)]
    assert not long, "functions over 60 lines:\n" + "\n".join(long)


def test_no_file_in_the_package_is_longer_than_400_lines():
    long = [f"{path.relative_to(REPO)} ({n} lines)" for folder in PACKAGE_FOLDERS
            for path in sorted((REPO / folder).rglob("*.py"))
            if (n := len(path.read_text().splitlines())) > MAX_FILE_LINES]
    assert not long, "files over 400 lines:\n" + "\n".join(long)


def test_the_files_the_readme_and_the_architecture_doc_name_exist():
    named = {(guide, path) for guide in GUIDES for path in REPO_PATH.findall((REPO / guide).read_text())}
    assert named, "the pattern found no file name at all"  # so that a broken pattern cannot pass
    missing = sorted(f"{guide}: {path}" for guide, path in named if not (REPO / path).exists())
    assert not missing, "files named in the guides that do not exist:\n" + "\n".join(missing)
