"""Every notebook is a jupytext pair, ``notebooks/NAME.py`` (percent format, the source) and
``notebooks/NAME.ipynb`` (the executed notebook), and the two hold the same cells.

Fails when a ``.py`` was edited but the notebook not regenerated (``make notebooks``), when a notebook
was edited without jupytext (its ``.py`` not updated), when one half of a pair is missing, when the
pairing metadata is gone, or when a cell's tags (``reference``, ``solution-only``: read by
``scripts/make_assignments.py``) differ between the two.
"""
from pathlib import Path

import jupytext  # pinned in requirements.txt: a missing install must fail here, not skip
import nbformat
import pytest
from jupytext.cell_metadata import _IGNORE_CELL_METADATA  # what jupytext never writes to the text file

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NOT_NOTEBOOKS = {"conftest.py"}
FORMATS = "ipynb,py:percent"
IGNORED_METADATA = {k.lstrip("-") for k in _IGNORE_CELL_METADATA.split(",")}


def _stems(ext):
    return {p.stem for p in NOTEBOOKS.glob(f"*{ext}") if p.name not in NOT_NOTEBOOKS}


STEMS = sorted(_stems(".ipynb") | _stems(".py"))


def differences(source, notebook) -> list[str]:
    """What differs between the cells read from the ``.py`` and those of the ``.ipynb`` (empty: in sync)."""
    out = []
    if len(source.cells) != len(notebook.cells):
        out.append(f"{len(source.cells)} cells in the .py, {len(notebook.cells)} in the .ipynb")
    for k, (a, b) in enumerate(zip(source.cells, notebook.cells)):
        meta_b = {key: v for key, v in b.metadata.items() if key not in IGNORED_METADATA}
        if a.cell_type != b.cell_type:
            out.append(f"cell {k}: {a.cell_type} in the .py, {b.cell_type} in the .ipynb")
        elif a.source != b.source:
            i = next((i for i, (x, y) in enumerate(zip(a.source, b.source)) if x != y),
                     min(len(a.source), len(b.source)))
            out.append(f"cell {k}: source differs at char {i}: .py {a.source[max(0, i - 30):i + 30]!r}, "
                       f".ipynb {b.source[max(0, i - 30):i + 30]!r}")
        elif dict(a.metadata) != meta_b:
            out.append(f"cell {k}: metadata (tags) differ: .py {dict(a.metadata)}, .ipynb {meta_b}")
    return out


def test_every_notebook_has_a_source_and_every_source_a_notebook():
    assert STEMS, f"no notebooks found in {NOTEBOOKS}"
    no_py = sorted(_stems(".ipynb") - _stems(".py"))
    no_nb = sorted(_stems(".py") - _stems(".ipynb"))
    assert not no_py, f"notebooks without a jupytext source (jupytext --set-formats {FORMATS} ...): {no_py}"
    assert not no_nb, f".py sources without a notebook (python scripts/execute_notebooks.py ...): {no_nb}"


@pytest.mark.parametrize("stem", STEMS)
def test_pair_is_in_sync(stem):
    py, ipynb = NOTEBOOKS / f"{stem}.py", NOTEBOOKS / f"{stem}.ipynb"
    if not (py.exists() and ipynb.exists()):
        pytest.skip("half a pair: reported by test_every_notebook_has_a_source_and_every_source_a_notebook")
    source = jupytext.read(py)
    notebook = nbformat.read(ipynb, as_version=4)
    for nb, where in ((source, py.name), (notebook, ipynb.name)):
        assert nb.metadata.get("jupytext", {}).get("formats") == FORMATS, \
            f"{where}: no pairing metadata `jupytext: formats: {FORMATS}`"
    diff = differences(source, notebook)
    assert not diff, (f"{ipynb.name} is out of sync with {py.name} (edited the .py? run "
                      f"`python scripts/execute_notebooks.py notebooks/{py.name}`):\n  " + "\n  ".join(diff[:5]))


@pytest.mark.parametrize("stem", STEMS)
def test_sources_hold_no_control_characters(stem):
    """A non-raw Python string turns ``\\alpha`` into BEL + 'lpha' and ``\\text`` into TAB + 'ext'."""
    py = NOTEBOOKS / f"{stem}.py"
    if not py.exists():
        pytest.skip("no source")
    bad = [(n, hex(ord(ch))) for n, line in enumerate(py.read_text().splitlines(), 1)
           for ch in line if ord(ch) < 32]
    assert not bad, f"{py.name}: control characters (line, char): {bad[:5]}"


def test_differences_catches_edits():
    """The comparison itself: a changed source, a dropped tag, an extra cell are each reported."""
    v4 = nbformat.v4
    base = v4.new_notebook(cells=[v4.new_markdown_cell("# t"), v4.new_code_cell("x = 1", metadata={"tags": ["reference"]})])
    same = nbformat.from_dict(base)
    same.cells[1].metadata["execution"] = {"iopub.status.busy": "2026-01-01"}   # nbclient's: ignored
    assert differences(base, same) == []
    edited = nbformat.from_dict(base)
    edited.cells[1].source = "x = 2"
    untagged = nbformat.from_dict(base)
    untagged.cells[1].metadata = {}
    longer = nbformat.from_dict(base)
    longer.cells.append(v4.new_code_cell("y"))
    for other in (edited, untagged, longer):
        assert differences(base, other), other
