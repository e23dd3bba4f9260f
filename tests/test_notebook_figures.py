"""The stored notebooks meet the figure rules a learner relies on: every figure stored at >= 100 dpi, stored
PNG widths with median >= 800 px and none under 450 px, each notebook < 2.5 MB, and every notebook styled by
``plotting.use_style()`` (no local dpi override).

Fails when a notebook sets its own low dpi (the figures shrink to ~500 px), when a new figure is drawn
tiny, when a notebook stores too many or too large images, or when the style is not applied.
"""
import importlib
import base64
import json
import re
import struct
from pathlib import Path
from statistics import median

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
IPYNBS = sorted(NOTEBOOKS.glob("*.ipynb"))
MIN_DPI, MEDIAN_WIDTH, MIN_WIDTH, MAX_MB = 100, 800, 450, 2.5


def png_info(data: bytes) -> tuple[int, float | None]:
    """(width in px, dpi from the pHYs chunk or None) of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width = struct.unpack(">I", data[16:20])[0]
    pos, dpi = 8, None
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"pHYs":
            ppu_x, _, unit = struct.unpack(">IIB", data[pos + 8:pos + 17])
            dpi = ppu_x * 0.0254 if unit == 1 else None      # unit 1 = pixels per metre
            break
        if kind == b"IDAT":
            break
        pos += 12 + n
    return width, dpi


def stored_pngs(path: Path) -> list[tuple[int, bytes]]:
    cells = json.loads(path.read_text())["cells"]
    return [(k, base64.b64decode(o["data"]["image/png"])) for k, c in enumerate(cells) if c["cell_type"] == "code"
            for o in c.get("outputs", []) if "image/png" in o.get("data", {})]


@pytest.mark.parametrize("path", IPYNBS, ids=[p.stem for p in IPYNBS])
def test_stored_figures_are_legible_and_the_notebook_small(path):
    size = path.stat().st_size / 1e6
    assert size < MAX_MB, f"{path.name}: {size:.2f} MB (keep each notebook under {MAX_MB} MB)"
    pngs = stored_pngs(path)
    if not pngs:
        pytest.skip("no stored figures")
    info = [(k, *png_info(data)) for k, data in pngs]
    low = [(k, round(d)) for k, _, d in info if d is not None and d < MIN_DPI - 0.5]
    assert not low, f"{path.name}: figures stored below {MIN_DPI} dpi (cell, dpi): {low}"
    widths = [w for _, w, _ in info]
    narrow = [(k, w) for k, w, _ in info if w < MIN_WIDTH]
    assert not narrow, f"{path.name}: figures narrower than {MIN_WIDTH} px (cell, px): {narrow}"
    assert median(widths) >= MEDIAN_WIDTH, f"{path.name}: median stored width {median(widths)} px < {MEDIAN_WIDTH}"


@pytest.mark.parametrize("path", IPYNBS, ids=[p.stem for p in IPYNBS])
def test_notebook_uses_the_shared_style(path):
    cells = json.loads(path.read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    first_with_plt = next((src for src in code if "matplotlib" in src), None)
    if first_with_plt is None:
        pytest.skip("no matplotlib")
    assert "plotting.use_style()" in first_with_plt, f"{path.name}: the setup cell does not call plotting.use_style()"
    local = [src.splitlines()[0] for src in code if re.search(r"rcParams|figure\.dpi|\bdpi\s*=", src)]
    assert not local, f"{path.name}: local rcParams/dpi overrides of the shared style in cells starting {local}"


def test_png_info_reads_width_and_dpi():
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(5, 2), dpi=72)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    plt.close(fig)
    width, dpi = png_info(buf.getvalue())
    assert width == 360 and abs(dpi - 72) < 0.5
