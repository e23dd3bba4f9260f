"""nbval settings for the notebooks: stderr (warnings, progress bars) is never compared.

The ``NAME.py`` files here are the jupytext sources of the notebooks, not tests: pytest must not import
them (nbval collects the ``.ipynb``; ``tests/test_notebook_sources.py`` checks that each pair is in sync).
"""
import os

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

collect_ignore_glob = ["[0-9]*.py", "ex_*.py"]


def pytest_collectstart(collector):
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("stderr", "text/html", "application/javascript")
