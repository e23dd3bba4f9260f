"""Regenerate notebooks from their jupytext sources and execute them in place, the way nbval re-runs them.

    python scripts/execute_notebooks.py notebooks/01_gmm_diffusion_2d.py [...]   # .py or .ipynb: same
    make notebooks                                                              # every notebook

Each notebook is a pair: ``NN_topic.py`` (jupytext percent format, the source you edit in a text
editor or diff in review) and ``NN_topic.ipynb`` (the same cells with their stored outputs, what a
learner opens and what nbval checks). The pairing (``jupytext: formats: ipynb,py:percent`` in the
notebook metadata) keeps the two in sync when a notebook is edited in JupyterLab; this script is the
documented way to regenerate the outputs after editing the ``.py``. For each notebook it

1. reads the cells from the ``.py`` and merges them into the existing ``.ipynb`` with jupytext (cells
   whose text did not change keep their ids; new cells get new ones; the pairing metadata is set),
2. executes it top to bottom with its own folder as working directory, progress bars off, hub offline,
3. writes the ``.ipynb`` with outputs and execution counts, and prints the wall time and file size
   (the budget is ~2 minutes on 2 CPU cores and < ~2.5 MB per notebook).

A notebook without a ``.py`` source is an error (create one with
``jupytext --set-formats ipynb,py:percent NOTEBOOK.ipynb``). ``tests/test_notebook_sources.py``
checks that every pair is in sync.
"""
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from jupytext.combine import combine_inputs_with_outputs
from nbclient import NotebookClient

FORMATS = "ipynb,py:percent"
KERNEL = "python3"

os.environ.pop("MPLBACKEND", None)  # notebooks use the inline backend; figures are stored
os.environ.update(TQDM_DISABLE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                  PYTHONHASHSEED="0")


def pair_paths(path: Path) -> tuple[Path, Path]:
    """``(source .py, notebook .ipynb)`` for either member of a pair."""
    if path.suffix not in (".py", ".ipynb"):
        raise ValueError(f"path: expected a notebook .ipynb or its .py source, got {path}")
    return path.with_suffix(".py"), path.with_suffix(".ipynb")


def update_from_source(py: Path, ipynb: Path) -> nbformat.NotebookNode:
    """The notebook with the cells of ``py`` and the outputs of ``ipynb`` where a cell is unchanged."""
    if not py.exists():
        raise FileNotFoundError(f"{ipynb}: no jupytext source {py.name} (create it with "
                                f"`jupytext --set-formats {FORMATS} {ipynb}`)")
    nb = jupytext.read(py)
    if ipynb.exists():
        nb = combine_inputs_with_outputs(nb, nbformat.read(ipynb, as_version=4), fmt="py:percent")
    nb.metadata.setdefault("jupytext", {})["formats"] = FORMATS
    nb.metadata["jupytext"].pop("text_representation", None)
    nb.metadata.setdefault("kernelspec", {"name": KERNEL, "display_name": "Python 3", "language": "python"})
    return nb


def main(paths):
    for py, ipynb in dict.fromkeys(pair_paths(Path(p)) for p in paths):
        nb = update_from_source(py, ipynb)
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=900, kernel_name=KERNEL,
                       resources={"metadata": {"path": str(ipynb.parent)}}).execute()
        jupytext.write(nb, ipynb, fmt="ipynb")
        print(f"{ipynb}: executed in {time.perf_counter() - t0:.1f} s, "
              f"{ipynb.stat().st_size / 1e6:.2f} MB", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
