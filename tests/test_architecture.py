"""The house rules of mrcnn_edu's layout, checked on the import graph of the package.

Floors, lowest first: reference (numpy) -> ops (torch twins) -> model -> engine; data and config
stand beside them. Every rule below is one test, run over every module under mrcnn_edu/ with
`ast` (imports inside functions count too; relative imports are resolved to absolute names):

- reference never imports torch;
- ops never import model or engine;
- model never imports engine, and takes a Config but never calls or imports `preset`;
- data never imports model or ops;
- nothing in the package imports the lessons.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mrcnn_edu"


def module_name(path):
    """mrcnn_edu/ops/boxes.py -> "mrcnn_edu.ops.boxes"; a package's __init__.py -> the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(module, level, importer, is_package):
    """The absolute name of `from <level dots><module> import ...` written in `importer`."""
    if level == 0:
        return module
    base = importer.split(".")
    base = base if is_package else base[:-1]  # a module's "." is its package
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(source, importer, is_package=False):
    """[(absolute module, imported names)] of every import statement in `source`.

    `import a.b` gives ("a.b", ()); `from .x import y, z` gives ("<package>.x", ("y", "z")).
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(node.module, node.level, importer, is_package)
            found.append((target, tuple(alias.name for alias in node.names)))
    return found


def calls_preset(source):
    """True when the source calls `preset(...)` or `<anything>.preset(...)`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name == "preset":
                return True
    return False


def package_modules(floor=None):
    paths = sorted(PACKAGE.rglob("*.py"))
    if floor is not None:
        paths = [p for p in paths if p.relative_to(PACKAGE).parts[0] == floor]
    return paths


def module_imports(path):
    return imports_of(path.read_text(), module_name(path), path.name == "__init__.py")


def within(name, *prefixes):
    """True when module `name` is one of `prefixes` or inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def forbidden(path, *prefixes):
    """The imports of `path` that fall inside any of `prefixes`, with the names they take."""
    return [(m, names) for m, names in module_imports(path) if within(m, *prefixes)]


def ids(path):
    return str(path.relative_to(ROOT))


# ---------------------------------------------------------------- the checker itself


@pytest.mark.parametrize("source, importer, is_package, expected", [
    ("import torch", "mrcnn_edu.reference.boxes", False, "torch"),
    ("import torch.nn as nn", "mrcnn_edu.reference.boxes", False, "torch.nn"),
    ("from .boxes import box_iou", "mrcnn_edu.ops.nms", False, "mrcnn_edu.ops.boxes"),
    ("from ..engine import train", "mrcnn_edu.ops.nms", False, "mrcnn_edu.engine"),
    ("from ..model.rpn import RPN", "mrcnn_edu.ops", True, "mrcnn_edu.model.rpn"),
    ("from . import boxes", "mrcnn_edu.ops", True, "mrcnn_edu.ops"),
    ("def f():\n    from mrcnn_edu.engine import train\n", "mrcnn_edu.model.rpn", False,
     "mrcnn_edu.engine"),
])
def test_imports_are_resolved_to_absolute_names(source, importer, is_package, expected):
    assert [m for m, _ in imports_of(source, importer, is_package)] == [expected]


def test_the_rules_catch_a_forbidden_import():
    ops_importing_engine = imports_of("from ..engine.train import fit", "mrcnn_edu.ops.nms")
    assert any(within(m, "mrcnn_edu.engine") for m, _ in ops_importing_engine)
    assert calls_preset("cfg = preset('tiny')") and calls_preset("c = config.preset('tiny')")
    assert not calls_preset("cfg.preset_name")


def test_every_floor_has_modules():
    # Guards the rules below against passing on an empty list after a rename.
    for floor in ("reference", "ops", "model", "data", "engine"):
        assert len(package_modules(floor)) >= 2, floor


# ---------------------------------------------------------------- the rules


@pytest.mark.parametrize("path", package_modules("reference"), ids=ids)
def test_reference_never_imports_torch(path):
    assert not forbidden(path, "torch"), f"{ids(path)} imports torch"


@pytest.mark.parametrize("path", package_modules("ops"), ids=ids)
def test_ops_never_import_model_or_engine(path):
    found = forbidden(path, "mrcnn_edu.model", "mrcnn_edu.engine")
    assert not found, f"{ids(path)} imports {found}"


@pytest.mark.parametrize("path", package_modules("model"), ids=ids)
def test_model_never_imports_engine(path):
    found = forbidden(path, "mrcnn_edu.engine")
    assert not found, f"{ids(path)} imports {found}"


@pytest.mark.parametrize("path", package_modules("model"), ids=ids)
def test_model_takes_a_config_but_never_a_preset(path):
    # The model is built from the Config it is given; which preset that came from is the
    # caller's business. `from mrcnn_edu.config import Config` (for annotations) is allowed.
    taken = [(m, names) for m, names in forbidden(path, "mrcnn_edu.config")
             if not names or set(names) - {"Config"}]
    assert not taken, f"{ids(path)} imports {taken} from mrcnn_edu.config"
    assert not calls_preset(path.read_text()), f"{ids(path)} calls preset()"


@pytest.mark.parametrize("path", package_modules("data"), ids=ids)
def test_data_never_imports_model_or_ops(path):
    found = forbidden(path, "mrcnn_edu.model", "mrcnn_edu.ops")
    assert not found, f"{ids(path)} imports {found}"


@pytest.mark.parametrize("path", package_modules(), ids=ids)
def test_nothing_in_the_package_imports_lessons(path):
    found = forbidden(path, "lessons", "mrcnn_edu.lessons")
    assert not found, f"{ids(path)} imports {found}"
