"""Build and execute a lesson notebook from its source in lessons/src/.

Each lesson is written as a plain Python file, `lessons/src/NN_topic.py`, with cells marked like
this (the same markers VS Code and Jupytext understand):

    # %% [markdown]
    # # Title
    # Text of a markdown cell, each line behind "# ".

    # %%
    code_cell()

`python lessons/build.py 03` (or a file name, or `all`) writes `lessons/NN_topic.ipynb`, executes
it in `lessons/` with the current Python environment, and saves it with outputs, so that
`pytest --nbval lessons/` compares a fresh run against what was committed. The source file is
the one to edit; the notebook is what learners open.

`python lessons/build.py --check [NN ...]` executes nothing: it reports each notebook whose cells
differ from its source (or that is missing) and exits 1 if any does.

`python lessons/build.py --text NN ...` copies edited markdown cells into the committed notebook
without executing it, and refuses when any code cell (or the number of cells) changed: text has
no outputs, so a wording fix needs no re-run.

A cell whose output depends on the CPU's kernels (training, a long float reduction) starts with
`# NBVAL_IGNORE_OUTPUT`; the next cell asserts the claim the text makes about those numbers, with
a tolerance that holds on every machine (tests/test_lessons.py enforces both rules).
"""
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

LESSONS = Path(__file__).resolve().parent
SOURCES = LESSONS / "src"
CELL_MARK = re.compile(r"^# %%(?P<kind> \[markdown\])?\s*$")


def parse_cells(text):
    """Split a lesson source into [(kind, source)] with kind 'markdown' or 'code'."""
    cells, kind, lines = [], None, []

    def flush():
        body = "\n".join(lines).strip("\n")
        if kind is not None and body.strip():
            if kind == "markdown":
                body = "\n".join(re.sub(r"^# ?", "", ln) for ln in body.split("\n"))
            cells.append((kind, body))

    for line in text.split("\n"):
        m = CELL_MARK.match(line)
        if m:
            flush()
            kind, lines = ("markdown" if m.group("kind") else "code"), []
        else:
            lines.append(line)
    flush()
    return cells


def notebook_path(source):
    return LESSONS / f"{source.stem}.ipynb"


def committed_and_expected(source):
    """(notebook, its [(kind, source)] cells, the source's cells) for a committed notebook."""
    nb = nbformat.read(notebook_path(source), as_version=4)
    return nb, [(c.cell_type, c.source) for c in nb.cells], parse_cells(source.read_text())


def drift(source):
    """Why the committed notebook of `source` differs from it, or None when it matches cell for cell."""
    target = notebook_path(source)
    if not target.exists():
        return f"{target.name} is missing: run `python lessons/build.py {source.stem[:2]}`"
    _, committed, expected = committed_and_expected(source)
    if committed == expected:
        return None
    if len(committed) != len(expected):
        where = f"{len(committed)} cells, the source has {len(expected)}"
    else:
        first = next(i for i, (a, b) in enumerate(zip(committed, expected)) if a != b)
        where = f"cell {first} differs"
    return f"{target.name} drifted from src/{source.name} ({where}): run `python lessons/build.py {source.stem[:2]}`"


def build_notebook(source):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, body) in enumerate(parse_cells(source.read_text())):
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        cell = make(body)
        cell.id = f"{source.stem[:2]}-{i:03d}"  # stable ids keep diffs small
        nb.cells.append(cell)
    return nb


def execute(nb, timeout=900):
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(LESSONS)}}).execute()
    for cell in nb.cells:  # execution timestamps would make every re-run a diff
        cell.metadata.pop("execution", None)
    return nb


def find_sources(args):
    if not args or args == ["all"]:
        return sorted(SOURCES.glob("[0-9][0-9]_*.py"))
    found = []
    for a in args:
        matches = sorted(SOURCES.glob(f"{Path(a).stem[:2]}_*.py")) if a[:2].isdigit() else []
        if not matches:
            raise SystemExit(f"no lesson source matches {a!r} in {SOURCES}")
        found += matches
    return found


def check(argv):
    problems = [p for p in map(drift, find_sources(argv)) if p]
    for problem in problems:
        print(problem)
    if not problems:
        print("every notebook matches its source")
    return 1 if problems else 0


def update_text(source):
    """Copy the source's markdown cells into the committed notebook; code cells must be unchanged."""
    target = notebook_path(source)
    nb, committed, expected = committed_and_expected(source)
    changed_code = [i for i, (a, b) in enumerate(zip(committed, expected))
                    if a != b and "code" in (a[0], b[0])]
    if len(committed) != len(expected) or changed_code:
        where = (f"cell {changed_code[0]} is code and changed" if changed_code
                 else f"{len(committed)} cells, the source has {len(expected)}")
        raise SystemExit(f"{target.name}: {where}; run `python lessons/build.py "
                         f"{source.stem[:2]}` to execute it")
    for cell, (_, body) in zip(nb.cells, expected):
        cell.source = body
    nbformat.write(nb, target)
    print(f"{target.name}: text updated, nothing executed")


def main(argv):
    if argv[:1] == ["--check"]:
        raise SystemExit(check(argv[1:]))
    if argv[:1] == ["--text"]:
        for source in find_sources(argv[1:]):
            update_text(source)
        return
    for source in find_sources(argv):
        start = time.perf_counter()
        nb = execute(build_notebook(source))
        target = notebook_path(source)
        nbformat.write(nb, target)
        print(f"{target.name}: {len(nb.cells)} cells, executed in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
