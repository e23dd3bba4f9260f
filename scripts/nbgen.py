"""What every notebook generator (``scripts/make_nb_*.py``) shares: collect cells, write the notebook.

    from nbgen import new_cells, write
    cells, md, code = new_cells()
    md(r'''# Title''')
    code(r'''print(1)''', "reference")          # optional cell tags (md too)
    write(cells, "01_gmm_diffusion_2d.ipynb")   # into notebooks/, then execute it
"""
from pathlib import Path

import nbformat as nbf

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def new_cells():
    """``(cells, md, code)``: an empty cell list and the two functions that append to it."""
    cells = []

    def add(cell, tags):
        if tags:
            cell.metadata["tags"] = list(tags)
        cells.append(cell)

    def md(source: str, *tags: str):
        add(nbf.v4.new_markdown_cell(source.strip()), tags)

    def code(source: str, *tags: str):
        add(nbf.v4.new_code_cell(source.strip()), tags)

    return cells, md, code


def write(cells, name: str, id_prefix: str | None = None, out: Path | None = None) -> Path:
    """Write ``cells`` as ``notebooks/<name>`` (or ``out``) with the python3 kernel. ``id_prefix`` gives
    stable cell ids ``<prefix>-00, -01, ...`` (the assignment notebooks: generation is deterministic)."""
    nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": dict(KERNELSPEC)})
    if id_prefix is not None:
        for k, c in enumerate(nb.cells):
            c.id = f"{id_prefix}-{k:02d}"
    out = Path(out) if out is not None else NOTEBOOKS / name
    nbf.write(nb, out)
    print("wrote", out)
    return out
