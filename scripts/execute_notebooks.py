"""Execute notebooks in place (outputs and execution counts stored), the way nbval will re-run them.

    python scripts/execute_notebooks.py notebooks/01_gmm_diffusion_2d.ipynb [...]

Runs each notebook with its own folder as working directory, progress bars off, hub offline,
and prints the wall time per notebook (the notebook budget is ~2 minutes on 2 CPU cores).
"""
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

os.environ.pop("MPLBACKEND", None)  # notebooks use the inline backend; figures are stored
os.environ.update(TQDM_DISABLE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                  PYTHONHASHSEED="0")


def main(paths):
    for p in map(Path, paths):
        nb = nbformat.read(p, as_version=4)
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": str(p.parent)}}).execute()
        nbformat.write(nb, p)
        print(f"{p}: executed in {time.perf_counter() - t0:.1f} s, "
              f"{p.stat().st_size / 1e6:.2f} MB", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
