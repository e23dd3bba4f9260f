"""Figures shared by the notebooks: one figure style, density contours, sample clouds, trajectories,
eta histograms, signed image maps with colourbars.

Conventions: ``use_style()`` in every notebook's setup cell (stored figures >= 100 dpi, fonts >= 9 pt);
fixed axis limits across panels; reward contours under samples; one colour scale for panels that are
compared, zero = white for signed maps (``signed_scale``), a colourbar on every image panel.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["use_style", "STYLE", "DPI", "FONT_SMALL", "signed_scale", "colorbar", "grid_2d",
           "plot_density", "plot_reward", "plot_samples", "plot_trajectories", "plot_eta_hist",
           "image_grid", "annotate", "animate_paths", "animation_html", "LIM"]

LIM = 3.5
DPI = 110          # resolution of every stored figure (notebook PNGs and files written by the library)
FONT_SMALL = 9     # the smallest font any figure uses (ticks, legends, annotations), in points

# The inline backend stores a figure as a PNG at ``fig.dpi`` (IPython's ``print_figure`` passes
# ``dpi=fig.dpi``; ``savefig.dpi`` does not apply there), i.e. at ``figure.dpi`` when the figure was
# created: a W-inch-wide figure is stored ~W * DPI pixels wide (``bbox_inches="tight"`` trims the margin).
STYLE = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.figsize": (9.0, 3.6),          # ~850 px wide when stored (tight bbox trims ~150)
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "figure.titlesize": 11,
    "xtick.labelsize": FONT_SMALL,
    "ytick.labelsize": FONT_SMALL,
    "legend.fontsize": FONT_SMALL,
    "legend.title_fontsize": FONT_SMALL,
}


def use_style():
    """Set matplotlib's rcParams to the collection's figure style (``STYLE``); call it after importing pyplot."""
    import matplotlib

    matplotlib.rcParams.update(STYLE)


def signed_scale(*arrays, vmax: float | None = None, cmap: str = "RdBu_r") -> dict:
    """``imshow`` keywords for a signed map: one symmetric scale ``[-vmax, vmax]`` (zero = white) shared
    by every panel drawn with it; ``vmax`` defaults to the largest ``|value|`` over ``arrays``."""
    if vmax is None:
        vmax = max(float(np.abs(np.asarray(torch.as_tensor(a).detach().cpu(), dtype=float)).max())
                   for a in arrays)
    if not vmax > 0:
        vmax = 1.0                      # all zeros: any symmetric scale shows them white
    return {"cmap": cmap, "vmin": -vmax, "vmax": vmax}


def colorbar(ax, mappable=None, **kw):
    """A slim colourbar beside ``ax`` (one axes, or several sharing one scale) for ``mappable``
    (default: the last image drawn on the last axes)."""
    axes = list(np.atleast_1d(ax).ravel())
    if mappable is None:
        mappable = axes[-1].images[-1]
    kw.setdefault("fraction", 0.046 if len(axes) == 1 else 0.02)
    kw.setdefault("pad", 0.03 if len(axes) == 1 else 0.015)
    cb = axes[0].figure.colorbar(mappable, ax=axes[0] if len(axes) == 1 else axes, **kw)
    cb.ax.tick_params(labelsize=FONT_SMALL)
    return cb


def grid_2d(lim: float = LIM, n: int = 150):
    """(n*n, 2) float64 grid over ``[-lim, lim]^2`` and the meshgrid axes."""
    a = torch.linspace(-lim, lim, n, dtype=torch.float64)
    gx, gy = torch.meshgrid(a, a, indexing="xy")
    return torch.stack([gx.flatten(), gy.flatten()], -1), gx.numpy(), gy.numpy()


def plot_density(ax, log_density, lim: float = LIM, n: int = 150, cmap="Greys", filled=True, levels=8,
                 log: bool = False, **kw):
    """Contours of ``exp(log_density)`` on a grid (e.g. ``mixture.log_prob``), or of ``log_density`` itself
    with ``log=True`` (densities that differ by orders of magnitude); returns the contour set (for a
    colourbar). Panels that are compared share a scale: pass the same ``levels`` array to each."""
    pts, gx, gy = grid_2d(lim, n)
    with torch.no_grad():
        z = log_density(pts).reshape(n, n)
        z = (z if log else z.exp()).numpy()
    cs = (ax.contourf if filled else ax.contour)(gx, gy, z, levels=levels, cmap=cmap, **kw)
    _square(ax, lim)
    return cs


def plot_reward(ax, reward, lim: float = LIM, n: int = 100, **kw):
    """Dashed contour lines of a reward ``r(x)``."""
    pts, gx, gy = grid_2d(lim, n)
    with torch.no_grad():
        z = reward(pts).reshape(n, n).numpy()
    kw.setdefault("colors", "tab:orange")
    kw.setdefault("linewidths", 0.8)
    ax.contour(gx, gy, z, levels=6, linestyles="dashed", **kw)
    _square(ax, lim)


def plot_samples(ax, x: torch.Tensor, lim: float = LIM, title: str | None = None, **kw):
    """A 2-D sample cloud on fixed limits."""
    x = x.detach().cpu().numpy()
    kw.setdefault("s", 2)
    kw.setdefault("alpha", 0.5)
    kw.setdefault("color", "tab:blue")
    ax.scatter(x[:, 0], x[:, 1], **kw)
    if title:
        ax.set_title(title)
    _square(ax, lim)


def plot_trajectories(ax, path: torch.Tensor, num: int = 20, lim: float = LIM, **kw):
    """Lines through ``path`` (T+1, B, 2) for the first ``num`` samples; dots mark x_0."""
    p = path[:, :num].detach().cpu().numpy()
    kw.setdefault("lw", 0.7)
    kw.setdefault("alpha", 0.7)
    for j in range(p.shape[1]):
        ax.plot(p[:, j, 0], p[:, j, 1], **kw)
    ax.scatter(p[-1, :, 0], p[-1, :, 1], s=8, color="k", zorder=3)
    _square(ax, lim)


def plot_eta_hist(ax, eta: torch.Tensor, title: str | None = None, bins: int = 60, lim: float = 5.0):
    """Histogram of all entries of ``eta`` against the N(0, 1) density."""
    v = eta.detach().cpu().to(torch.float64).flatten().numpy()
    ax.hist(v, bins=bins, range=(-lim, lim), density=True, color="tab:blue", alpha=0.6)
    s = np.linspace(-lim, lim, 200)
    ax.plot(s, np.exp(-s ** 2 / 2) / math.sqrt(2 * math.pi), "k--", lw=1, label="N(0, 1)")
    ax.set_xlim(-lim, lim)
    if title:
        ax.set_title(title)


def image_grid(ax, images: torch.Tensor, nrow: int = 8, title: str | None = None, cmap="gray",
               vmin: float | None = None, vmax: float | None = None):
    """Tile (B, H, W) or (B, 1, H, W) images into one panel, on one colour scale: ``[vmin, vmax]``, or the
    panel's own min-max when they are None (pass the same range to panels that are compared)."""
    x = images.detach().cpu().to(torch.float64)
    if x.ndim == 4:
        x = x[:, 0]
    B, H, W = x.shape
    ncol = math.ceil(B / nrow)
    canvas = np.full((ncol * (H + 1) - 1, nrow * (W + 1) - 1), np.nan)
    for k in range(B):
        r, c = divmod(k, nrow)
        canvas[r * (H + 1): r * (H + 1) + H, c * (W + 1): c * (W + 1) + W] = x[k].numpy()
    ax.imshow(canvas, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.axis("off")
    if title:
        ax.set_title(title)


def annotate(ax, values, fmt: str = "{:.2f}", mark=None, fontsize: float = FONT_SMALL):
    """Write each entry of the 2-D array ``values`` into its ``imshow`` cell on ``ax`` (white on dark cells of
    the last image drawn there, black elsewhere); cells where the boolean array ``mark`` is True get a black
    frame (e.g. the entries a projection clipped)."""
    from matplotlib.patches import Rectangle

    v = np.asarray(torch.as_tensor(values).detach().cpu(), dtype=float)
    m = np.zeros(v.shape, bool) if mark is None else np.asarray(torch.as_tensor(mark).cpu(), dtype=bool)
    im = ax.images[-1] if ax.images else None
    for (i, j), val in np.ndenumerate(v):
        dark = False
        if im is not None:
            r, g, b, _ = im.cmap(im.norm(val))
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.45          # perceived luminance of the cell
        ax.text(j, i, fmt.format(val), ha="center", va="center", fontsize=fontsize, color="w" if dark else "k")
        if m[i, j]:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.6, ec="k"))


def animate_paths(paths: dict, background=None, lim: float = LIM, num: int = 300, interval: int = 250,
                  dpi: float = 100, panel_size: float = 2.7, steps=None, **scatter_kw):
    """An animation of 2-D reverse processes, one panel per entry of ``paths`` (``name -> (T+1, B, 2)``,
    e.g. ``SampleResult.path``): frame ``k`` shows the first ``num`` samples at ``x`` after ``k`` steps.

    ``background``: a log-density drawn as contour lines under every panel (e.g. ``target.log_prob``);
    ``steps``: the step indices to show (default all). Returns ``(fig, anim)``, a matplotlib
    ``FuncAnimation``; ``animation_html(anim)`` turns it into a self-contained HTML/JS player.
    """
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    names = list(paths)
    T1 = min(int(p.shape[0]) for p in paths.values())
    steps = list(range(T1)) if steps is None else list(steps)
    fig, axes = plt.subplots(1, len(names), figsize=(panel_size * len(names), panel_size + 0.5), dpi=dpi,
                             layout="constrained", squeeze=False)
    axes = axes[0]
    scatter_kw.setdefault("s", 3)
    scatter_kw.setdefault("color", "k")
    scatter_kw.setdefault("alpha", 0.6)
    clouds = []
    for ax, name in zip(axes, names):
        if background is not None:
            plot_density(ax, background, lim=lim, filled=False, cmap="Blues", linewidths=0.7)
        p0 = paths[name][steps[0], :num].detach().cpu().numpy()
        clouds.append(ax.scatter(p0[:, 0], p0[:, 1], **scatter_kw))
        _square(ax, lim)
    title = fig.suptitle("")

    def draw(k):
        i = steps[k]
        for ax, cloud, name in zip(axes, clouds, names):
            cloud.set_offsets(paths[name][i, :num].detach().cpu().numpy())
            ax.set_title(name)
        title.set_text(f"after {i} of {T1 - 1} reverse steps" + ("  (x_0)" if i == T1 - 1 else ""))
        return clouds

    draw(0)
    anim = FuncAnimation(fig, draw, frames=len(steps), interval=interval, blit=False)
    return fig, anim


def animation_html(anim, frame_format: str = "png", default_mode: str = "once") -> str:
    """``anim.to_jshtml()`` (a self-contained HTML/JS player, frames embedded) with ``frame_format`` frames:
    PNG keeps sparse scatter plots small; "jpeg" suits dense images."""
    import matplotlib

    with matplotlib.rc_context({"animation.frame_format": frame_format}):
        return anim.to_jshtml(default_mode=default_mode)


def _square(ax, lim):
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
