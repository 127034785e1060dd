"""The install story: pyproject.toml and environment.yml list the same packages, and the package
imports none of the detection libraries it rebuilds from scratch."""
import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name
NOT_PYPI = {"python", "pip"}
FORBIDDEN = {"torchvision", "detectron2", "mmdet", "mmcv"}


def requirement_name(spec):
    return re.split(r"[<>=!~\[; ]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pyproject_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {requirement_name(s) for s in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        names |= {requirement_name(s) for s in extra}
    return names


def conda_requirements():
    names, in_dependencies = set(), False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if re.match(r"^\S", line):  # a top-level key starts a new section
            in_dependencies = line.startswith("dependencies:")
        m = re.match(r"^\s+-\s+([A-Za-z0-9_.\-]+)", line)
        if in_dependencies and m:
            names.add(CONDA_NAMES.get(m.group(1).lower(), m.group(1).lower()))
    return names - NOT_PYPI


def test_environment_yml_matches_pyproject():
    pip, conda = pyproject_requirements(), conda_requirements()
    assert pip == conda, f"only in pyproject: {sorted(pip - conda)}; only in environment.yml: {sorted(conda - pip)}"


def test_requirement_parsers_see_the_real_lists():
    # Guards the test above against passing on two empty sets.
    assert {"numpy", "numba", "torch", "pycocotools", "nbval"} <= pyproject_requirements()


def imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("path", sorted((ROOT / "mrcnn_edu").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_package_does_not_import_detection_libraries(path):
    found = FORBIDDEN & set(imported_modules(path))
    assert not found, f"{path.relative_to(ROOT)} imports {sorted(found)}"
# The layout rules (reference never imports torch, ...) live in tests/test_architecture.py.
