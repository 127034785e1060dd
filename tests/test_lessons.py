"""The lessons' own rules: a notebook never drifts from its source, and every output that nbval
ignores is followed by a cell that asserts the claim the text makes about it.

Why: `pytest --nbval lessons/` is how a learner checks that a lesson still shows what it claims. A
number produced by training or a long float reduction differs from CPU to CPU (torch and oneDNN
choose kernels by instruction set), so such a cell is excluded from comparison with
`# NBVAL_IGNORE_OUTPUT` -- and the claim must then be checked by an `assert` in the next cell, or
the lesson would verify nothing.
"""
import ast
import importlib.util
from pathlib import Path

import pytest

LESSONS = Path(__file__).resolve().parents[1] / "lessons"
MARKER = "# NBVAL_IGNORE_OUTPUT"


def load_build():
    spec = importlib.util.spec_from_file_location("lesson_build", LESSONS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = load_build()
SOURCES = sorted((LESSONS / "src").glob("[0-9][0-9]_*.py"))


def is_ignored(cell):
    """nbval's reading: a comment line that is exactly the marker (`#NBVAL_SKIP` skips it too)."""
    kind, body = cell
    comments = [ln.strip().lstrip("#").strip() for ln in body.split("\n") if ln.strip().startswith("#")]
    return kind == "code" and bool({"NBVAL_IGNORE_OUTPUT", "NBVAL_SKIP"} & set(comments))


def asserts_something(cell):
    kind, body = cell
    if kind != "code":
        return False
    lines = [ln for ln in body.split("\n") if not ln.lstrip().startswith("%")]  # IPython magics
    return any(isinstance(node, ast.Assert) for node in ast.walk(ast.parse("\n".join(lines))))


def unchecked_ignores(cells):
    """Indices of ignored code cells that are not followed by an asserting, compared cell."""
    bad = []
    for i, cell in enumerate(cells):
        if not is_ignored(cell):
            continue
        following = cells[i + 1] if i + 1 < len(cells) else ("markdown", "")
        if is_ignored(following) or not asserts_something(following):
            bad.append(i)
    return bad


def test_there_are_lessons():
    assert len(SOURCES) >= 13


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_matches_its_source(source):
    assert build.drift(source) is None, build.drift(source)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_every_ignored_output_is_followed_by_an_asserted_claim(source):
    cells = build.parse_cells(source.read_text())
    bad = unchecked_ignores(cells)
    assert not bad, (f"{source.name}: cells {bad} ignore their output (# NBVAL_IGNORE_OUTPUT) "
                     "but the next cell asserts nothing about it")


def test_the_rule_catches_an_ignore_without_a_check():
    ignored = ("code", f"{MARKER}\nprint(loss)")
    checked = ("code", "assert abs(loss - 0.69) < 0.05\nprint('claim holds')")
    prose = ("markdown", "The loss is near ln 2.")
    assert unchecked_ignores([ignored, checked]) == []
    assert unchecked_ignores([ignored, prose, checked]) == [0]      # the check must come right after
    assert unchecked_ignores([ignored]) == [0]                      # nothing after it
    assert unchecked_ignores([ignored, ("code", "print(loss)")]) == [0]
    assert unchecked_ignores([ignored, ("code", f"{MARKER}\nassert loss < 1")]) == [0, 1]
    assert unchecked_ignores([("code", "x = 1  # NBVAL_IGNORE_OUTPUT is mentioned")]) == []
    assert unchecked_ignores([("code", "#NBVAL_SKIP\nprint(loss)")]) == [0]


@pytest.fixture
def demo_source(tmp_path, monkeypatch):
    """lessons/src/99_demo.py of a lesson folder in tmp_path: a title and `print(1)`."""
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    source = src_dir / "99_demo.py"
    source.write_text("# %% [markdown]\n# # Demo\n\n# %%\nprint(1)\n")
    monkeypatch.setattr(build, "LESSONS", tmp_path)
    return source


def test_drift_names_the_lesson(tmp_path, demo_source):
    source = demo_source
    assert "99_demo.ipynb is missing" in build.drift(source)
    build.nbformat.write(build.build_notebook(source), tmp_path / "99_demo.ipynb")
    assert build.drift(source) is None
    source.write_text("# %% [markdown]\n# # Demo\n\n# %%\nprint(2)\n")
    message = build.drift(source)
    assert "99_demo.ipynb drifted from src/99_demo.py (cell 1 differs)" in message
    source.write_text("# %% [markdown]\n# # Demo\n")
    assert "(2 cells, the source has 1)" in build.drift(source)


def test_text_update_copies_markdown_and_refuses_changed_code(tmp_path, demo_source):
    source = demo_source
    notebook = build.build_notebook(source)
    notebook.cells[1].outputs = [build.nbformat.v4.new_output("stream", text="1\n")]
    build.nbformat.write(notebook, tmp_path / "99_demo.ipynb")
    source.write_text("# %% [markdown]\n# # Demo, reworded\n\n# %%\nprint(1)\n")
    build.update_text(source)
    assert build.drift(source) is None
    kept = build.nbformat.read(tmp_path / "99_demo.ipynb", as_version=4)
    assert kept.cells[1].outputs[0]["text"] == "1\n"  # nothing was executed or lost
    source.write_text("# %% [markdown]\n# # Demo, reworded\n\n# %%\nprint(2)\n")
    with pytest.raises(SystemExit, match="cell 1 is code and changed"):
        build.update_text(source)
    source.write_text("# %% [markdown]\n# # Demo\n")
    with pytest.raises(SystemExit, match="2 cells, the source has 1"):
        build.update_text(source)
