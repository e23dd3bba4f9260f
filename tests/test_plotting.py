"""The shared figure style reaches the stored PNGs, and the signed colour scale puts zero at white."""
import importlib
import struct

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402

from ntrk_minimal import plotting  # noqa: E402


@pytest.fixture
def styled():
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        plt.rcParams["figure.dpi"] = 72          # what the notebooks used to set: use_style must override it
        plotting.use_style()
        yield
    plt.close("all")


def _png_width(data: bytes) -> int:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">I", data[16:20])[0]


def test_inline_backend_stores_default_figures_wide_and_at_the_style_dpi(styled):
    """The notebook path: IPython's print_figure (what matplotlib_inline calls) stores at fig.dpi."""
    pylabtools = importlib.import_module("IPython.core.pylabtools")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    ax.set_title("t")
    assert fig.dpi == plotting.DPI >= 100
    width = _png_width(pylabtools.print_figure(fig, "png", bbox_inches="tight"))
    assert width >= 800, f"a default-size figure is stored {width} px wide"


def test_every_text_element_is_at_least_9pt(styled):
    rc = plt.rcParams
    for key in ("font.size", "axes.titlesize", "axes.labelsize", "xtick.labelsize", "ytick.labelsize",
                "legend.fontsize", "legend.title_fontsize", "figure.titlesize"):
        size = FontProperties(size=rc[key]).get_size_in_points()   # resolves "small", "large", ...
        assert size >= 9, f"{key} = {rc[key]!r} is {size:.1f} pt"
    fig, ax = plt.subplots()
    ax.plot([0, 1], label="a")
    leg = ax.legend()
    cb = plotting.colorbar(ax, ax.imshow(np.eye(3)))
    texts = leg.get_texts() + ax.get_xticklabels() + cb.ax.get_yticklabels()
    assert min(t.get_fontsize() for t in texts) >= 9


def test_signed_scale_is_symmetric_shared_and_zero_is_white():
    a = torch.tensor([[-0.5, 0.0], [0.2, 0.1]])
    b = np.array([[3.0, -1.0]])
    kw = plotting.signed_scale(a, b)
    assert kw["vmin"] == -3.0 and kw["vmax"] == 3.0          # the largest |value| of all panels
    cmap = matplotlib.colormaps[kw["cmap"]]
    norm = matplotlib.colors.Normalize(kw["vmin"], kw["vmax"])
    assert np.allclose(cmap(norm(0.0))[:3], 1.0, atol=0.05), "zero is not drawn (near) white"
    assert plotting.signed_scale(np.zeros(3))["vmax"] > 0     # all-zero input: still a valid scale
    assert plotting.signed_scale(a, vmax=2.0)["vmin"] == -2.0
