"""Reports and figures, rendered from a study's json alone: tables, verdict lines, the whole markdown
report, the fronts figure, and ``write_results`` (json, md, png) (``ntrk_minimal.bench``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ..plotting import DPI, STYLE
from .fronts import Front
from .stats import finite_values, mean_ci
from .store import load_json, write_json
from .study import values_at

__all__ = ["markdown_table", "verdict_table", "verdict_line", "find_comparison", "points_table", "report",
           "fronts_figure", "write_results"]


def markdown_table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def _digits(data, key):
    return data["world"]["metrics"].get(key, {}).get("digits", 3)


def _fmt_vals(values, digits):
    v = finite_values(values)
    if not v.size:
        return "–"
    m, h = mean_ci(v)
    return f"{m:.{digits}f} ± {h:.{digits}f}" if v.size > 1 else f"{m:.{digits}f}"


def _level_text(lv: dict) -> str:
    return f"{lv['x_key']} at its {lv['value']}" if isinstance(lv["value"], str) else f"{lv['x_key']} = {lv['value']:.4g}"


def verdict_table(data: dict) -> str:
    """Markdown: one row per comparison, the verdict and its numbers (from ``run_study``'s json)."""
    rows = []
    for c in data["comparisons"]:
        v, dg = c["verdict"], _digits(data, c["y_key"]) + 1
        lab = data["world"]["metrics"].get(c["y_key"], {}).get("label", c["y_key"])
        direction = "↑" if v["higher_is_better"] else "↓"
        at = data["levels"][c["level"]]
        where = _level_text(at) if c["a_level"] == c["level"] else \
            f"A: {_level_text(data['levels'][c['a_level']])}; B: {_level_text(at)}"
        f = lambda x: "–" if x is None else f"{x:+.{dg}f}"
        rows.append([c["name"], f"{lab} {direction}", where, f"{v['a']} vs {v['b']}",
                     f"{_fmt_vals(c['a']['values'], dg)} vs {_fmt_vals(c['b']['values'], dg)}",
                     f"{f(v['mean'])} [{f(v['lo'])}, {f(v['hi'])}]",
                     "–" if v["p_tost"] is None else f"{v['p_tost']:.3f} (±{v['margin']:g})",
                     f"**{v['label']}**", v["n_seeds"]])
    return markdown_table(["comparison", "metric", "matched at", "A vs B", "A vs B (mean ± 95% CI)",
                           "paired A − B [95% CI]", "TOST p (margin)", "verdict", "seeds"], rows)


def find_comparison(data: dict, name: str) -> dict | None:
    """The comparison called ``name`` in a study's json, or None."""
    return next((c for c in data["comparisons"] if c["name"] == name), None)


def verdict_line(data: dict, name: str) -> str:
    """One comparison as a markdown bullet: ``A vs B: mean values, paired A - B [95% CI], TOST p, **verdict**``."""
    c = find_comparison(data, name)
    if c is None:
        return f"- {name}: not in this run"
    v, dg = c["verdict"], data["world"]["metrics"][c["y_key"]]["digits"] + 1
    f = lambda x: "–" if x is None else f"{x:+.{dg}f}"
    am = "–" if v["a_mean"] is None else f"{v['a_mean']:.{dg}f}"
    bm = "–" if v["b_mean"] is None else f"{v['b_mean']:.{dg}f}"
    lab = data["world"]["metrics"][c["y_key"]]["label"] + (" ↑" if v["higher_is_better"] else " ↓")
    p = "–" if v["p_tost"] is None else f"{v['p_tost']:.3f}"
    s = (f"- {name} ({lab}): {v['a']} {am} vs {v['b']} {bm}; paired A − B {f(v['mean'])} "
         f"[{f(v['lo'])}, {f(v['hi'])}], TOST p = {p} at ±{v['margin']:g}: **{v['label']}**")
    return s + (f" ({v['note']})" if v["note"] else "")


def points_table(data: dict, level: str, keys: Sequence[str] | None = None, methods=None,
                 seeds: str = "eval") -> str:
    """Markdown: every method at ``level`` (knob, then mean ± 95% CI of ``keys`` over ``seeds``)."""
    lv = data["levels"][level]
    keys = list(keys) if keys is not None else [k for k in data["world"]["metrics"]]
    names = methods or lv.get("methods") or list(data["fronts"][seeds])
    rows = []
    for nm in names:
        fr = Front.from_dict(data["fronts"][seeds][nm])
        knob = data["picks"].get(level, {}).get(nm)
        try:
            vals, knobs, flags = values_at(fr, lv, knob, lv["x_key"] if lv["x_key"] in fr.keys() else fr.keys()[0])
            cols = [_fmt_vals(values_at(fr, lv, knob, k)[0], _digits(data, k)) if k in fr.keys() else "–"
                    for k in keys]
        except (KeyError, ValueError):
            continue
        if fr.knob is None:
            kt = "–"
        elif isinstance(lv["value"], str):
            at = data["where"][level].get(nm, "")
            kt = f"{fr.knob} = {knob:.4g}" + ("" if at == "interior" else f" ({at})")
        else:
            ks = finite_values(knobs)
            kt = f"{fr.knob} ≈ {np.mean(ks):.4g}" if ks.size else "not reached"
            if 0 < ks.size < len(knobs):
                kt += f" (reached on {ks.size} of {len(knobs)} seeds)"
        budget = data["methods"][nm]["budget"]
        rows.append([nm, "–" if budget is None else budget, kt] + cols)
    labels = [data["world"]["metrics"].get(k, {}).get("label", k) for k in keys]
    return markdown_table(["method", "NFE", "knob"] + labels, rows)


def report(data: dict, title: str = "", points_keys=None) -> str:
    """The whole markdown report of a study: settings, floor, levels, picks with stability, operating
    points per level, verdicts, cost. Everything comes from ``data`` (the json)."""
    w = data["world"]
    lines = [f"# {title or w['name']}", "",
             f"{data['n']} samples per run; tuning seeds {data['seeds']['tuning']}, evaluation seeds "
             f"{data['seeds']['eval']}; mean ± 95% t CI over evaluation seeds; verdicts from paired "
             f"differences (win/lose: the 95% CI excludes 0; equivalent: TOST at the stated margin; "
             f"otherwise undecided). Wall time of the run: {data.get('wall_time_s', float('nan')):.0f} s.", ""]
    lines += ["## Margins (stated in advance)", ""]
    lines += [f"- {k}: ±{v:g} — {w['margin_notes'][k]}" for k, v in w["margins"].items()] + [""]
    if data["floor"]["eval"]:
        lines += [f"## Floor: real/exact samples against the reference at n = {data['n']}", ""]
        fl = data["floor"]["eval"]
        lines += [markdown_table(["metric", "floor (mean ± 95% CI)"],
                                 [[w["metrics"].get(k, {}).get("label", k), _fmt_vals(v, _digits(data, k) + 1)]
                                  for k, v in fl.items()]), ""]
    lines += ["## Levels", ""]
    lines += [f"- **{k}**: {_level_text(v)} — {v['how']}" for k, v in data["levels"].items()] + [""]
    lines += ["## Knob stability across tuning seeds", ""]
    rows = []
    for lvname, per in data["stability"].items():
        for nm, st in per.items():
            ks = ", ".join("–" if k is None else f"{k:.3g}" for k in st["per_seed_knob"])
            rows.append([lvname, nm, ks, "stable" if st["stable"] else "**unstable**: " + "; ".join(st["flags"])])
    lines += [markdown_table(["level", "method", "knob per tuning seed", "stability"], rows), ""]
    notes = [(nm, n) for nm, f in data["fronts"]["tuning"].items() for n in f["notes"] if ":" in n and "extended" not in n]
    if notes:
        lines += ["## Grid brackets (tuning fronts)", ""] + [f"- {nm}: {n}" for nm, n in notes] + [""]
    for lvname in data["levels"]:
        lines += [f"## Operating points at level '{lvname}'", "",
                  points_table(data, lvname, points_keys), ""]
    lines += ["## Verdicts", "", verdict_table(data), ""]
    for c in data["comparisons"]:
        if c["b_choice"]:
            lines.append(f"- {c['name']}: {c['b_choice']}")
        for side in ("a", "b"):
            fl = [f for f in c[side]["flags"] if f and "no knob" not in f]
            if fl:
                lines.append(f"- {c['name']}, {c[side]['method']}: " + "; ".join(sorted(set(fl))))
        if c["verdict"]["note"]:
            lines.append(f"- {c['name']}: {c['verdict']['note']}")
    cost = data["cost"]["methods"]
    lines += ["", f"## Cost (per sample, evaluation fronts; wall per NFE relative to {data['cost']['reference']})", ""]
    lines += [markdown_table(["method", "NFE", "backward rows", "wall ms", "model ms", "wall per NFE vs ref"],
                             [[nm, f"{r['nfe']:.0f}", f"{r['backward']:.0f}", f"{1e3 * r['wall_s']:.3f}",
                               f"{1e3 * r['model_s']:.3f}",
                               f"{r.get('wall_per_nfe_vs_ref') or float('nan'):.2f}"] for nm, r in cost.items()])]
    return "\n".join(lines) + "\n"


def fronts_figure(data: dict, panels=None, methods=None, colors: dict | None = None, seeds: str = "eval",
                  ncols: int | None = None, linestyles: dict | None = None):
    """Fronts from the json: per method the mean over ``seeds`` with 95% CI bars on both axes, points
    in knob order; knob-less methods as single markers; levels on the panel's axes as dotted lines and
    the matched values of the comparisons as stars. ``panels``: ``(x_key, y_key)`` or dicts with
    ``x``, ``y``, ``xscale``, ``yscale`` (``"symlog"`` with ``xlinthresh``/``ylinthresh`` for metrics that
    can be negative: unbiased KID or energy distance), ``methods``, ``title``, ``xlim``, ``ylim`` (a
    zoom). ``ncols``: panels per row; ``linestyles``: per method (e.g. dashed for an ablation that may
    coincide with its method). Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    w = data["world"]
    panels = panels or [(w["target"], w["fidelity"])]
    panels = [p if isinstance(p, dict) else {"x": p[0], "y": p[1]} for p in panels]
    names = list(methods or data["fronts"][seeds])
    cmap = plt.get_cmap("tab10")
    colors = {**{nm: cmap(i % 10) for i, nm in enumerate(names)}, **(colors or {})}
    label = lambda k: w["metrics"].get(k, {}).get("label", k)
    with plt.rc_context(STYLE):                           # the collection's figure style (plotting.py)
        ncols = ncols or len(panels)
        nrows = math.ceil(len(panels) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.9 * nrows + 0.5), dpi=DPI, squeeze=False)
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        for ax, p in zip(axes.flat, panels):
            xk, yk = p["x"], p["y"]
            for nm in p.get("methods", names):
                fr = Front.from_dict(data["fronts"][seeds][nm])
                if xk not in fr.keys() or yk not in fr.keys():
                    continue
                X, Y = fr.array(xk), fr.array(yk)
                ci = [(mean_ci(finite_values(X[i])), mean_ci(finite_values(Y[i]))) for i in range(len(fr.knobs))]
                xs, xh = [c[0][0] for c in ci], [c[0][1] for c in ci]
                ys, yh = [c[1][0] for c in ci], [c[1][1] for c in ci]
                single = fr.knob is None
                ax.errorbar(xs, ys, xerr=xh, yerr=yh, color=colors[nm], marker="s" if single else "o",
                            ms=5 if single else 3, lw=1.0, elinewidth=0.7, capsize=1.5,
                            ls="none" if single else (linestyles or {}).get(nm, "-"), label=nm)
            for lvname, lv in data["levels"].items():
                if isinstance(lv["value"], str):
                    continue
                if lv["x_key"] == xk:
                    ax.axvline(lv["value"], color="grey", ls=":", lw=1)
                if lv["x_key"] == yk:
                    ax.axhline(lv["value"], color="grey", ls=":", lw=1)
            for c in data["comparisons"]:
                lv = data["levels"][c["level"]]
                if c["y_key"] != yk:
                    continue
                for side in ("a", "b"):
                    s = c[side]
                    if s["method"] not in p.get("methods", names):
                        continue
                    slv = data["levels"][s["level"]]
                    yv = finite_values(s["values"])
                    if not yv.size:
                        continue
                    if not isinstance(slv["value"], str) and slv["x_key"] == xk:
                        xv = slv["value"]
                    elif isinstance(slv["value"], str):
                        fr = Front.from_dict(data["fronts"][seeds][s["method"]])
                        if xk not in fr.keys():
                            continue
                        xv = float(np.nanmean(values_at(fr, slv, data["picks"][s["level"]].get(s["method"]), xk)[0]))
                    else:
                        continue
                    ax.plot([xv], [yv.mean()], marker="*", ms=11, color=colors[s["method"]], mec="k", mew=0.6,
                            ls="none", zorder=5)
            for axis, setter in (("x", ax.set_xscale), ("y", ax.set_yscale)):
                scale = p.get(axis + "scale", "linear")
                setter(scale, **({"linthresh": p.get(axis + "linthresh", 1e-3)} if scale == "symlog" else {}))
                if scale == "log":  # ticks at 1, 2, 5 x 10^k as plain numbers; minor labels would collide
                    a = getattr(ax, axis + "axis")
                    a.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                    a.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
                    a.set_minor_formatter(matplotlib.ticker.NullFormatter())
            if "xlim" in p:
                ax.set_xlim(*p["xlim"])
            if "ylim" in p:
                ax.set_ylim(*p["ylim"])
            ax.set_xlabel(label(xk))
            ax.set_ylabel(label(yk))
            ax.set_title(p.get("title", f"{label(yk)} vs {label(xk)}"))
            ax.grid(alpha=0.25)
        handles, labs = axes[0][0].get_legend_handles_labels()
        per_row = min(len(labs), 3 * ncols)
        fig.legend(handles, labs, loc="lower center", ncol=per_row, frameon=False)
        rows = math.ceil(len(labs) / per_row)
        fig.tight_layout(rect=(0, (0.25 + 0.22 * rows) / fig.get_size_inches()[1], 1, 1))
    return fig


def write_results(data: dict, stem, title: str = "", figure_panels=None, figure_methods=None,
                  points_keys=None, colors=None, ncols: int | None = None, linestyles=None) -> str:
    """Write ``stem.json``, ``stem.md`` (``report``) and ``stem.png`` (``fronts_figure``); return the md."""
    import matplotlib.pyplot as plt

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_json(data, stem.with_suffix(".json"))
    data = load_json(stem.with_suffix(".json"))          # render from what was stored
    text = report(data, title, points_keys)
    stem.with_suffix(".md").write_text(text)
    fig = fronts_figure(data, figure_panels, figure_methods, colors, ncols=ncols, linestyles=linestyles)
    fig.savefig(stem.with_suffix(".png"))
    plt.close(fig)
    return text
