"""The noise level of a flow sampler: the 2-D flow world (``worlds.flow2d``) through the protocol, at the
stochastic sampler and across a sweep of noise levels.

``python -m ntrk_minimal.bench --task flow2d`` runs ``run_benchmark``: the protocol at ``f = 1`` with
every method (the main study), then one study per noise level of ``SWEEP`` (``sigma_t = f s_prev``
between the Euler ODE and the stochastic sampler, and the DDPM variance) with base, DPS (both
coefficients) and NTRK, verdicts per noise level and across noise levels (``across_noise``), written
to ``results/flow2d.{json,md,png}`` and ``results/flow2d_sweep.png``; ``markdown``, ``sweep_table``,
``reach_rows`` and ``sweep_figure`` render from the json alone (notebook 07 reads them).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .. import bench as P, paths
from ..plotting import DPI, STYLE
from ..worlds import toy2d
from ..worlds.flow2d import COLORS, MAIN_NOISE, MAIN_PANELS, POINT_KEYS, comparisons, levels, methods, world

__all__ = ["RESULTS", "SWEEP", "SWEEP_METHODS", "sweep_levels", "sweep_comparisons", "across_noise", "load_results",
           "sweep_table", "reach_rows", "markdown", "sweep_figure", "run_benchmark", "write"]


RESULTS = paths.RESULTS / "flow2d.json"
SWEEP = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, "ddpm")      # noise levels of the sweep (f, or the DDPM variance)


SWEEP_METHODS = ("base", "dps", "dps (tilt)", "ntrk", "ntrk (constant)")


def sweep_levels(w: P.World) -> list:
    return [lv for lv in toy2d.levels(w) if lv.name in ("best", "r*")]


def sweep_comparisons(noise) -> list:
    """Per noise level: NTRK (linear and constant kappa_t) against both DPS coefficients, at the best
    distance to p* and at p*'s reward; at ``f = 0`` (no NTRK) the exact-tilt DPS against base."""
    C = P.Comparison
    if noise == 0 or noise == 0.0:
        return [C("closest to p*: dps (tilt) vs base", "best", "ed_pstar", "dps (tilt)", "base")]
    out = []
    for a in ("ntrk", "ntrk (constant)"):
        out += [C(f"closest to p*: {a} vs dps", "best", "ed_pstar", a, "dps"),
                C(f"closest to p*: {a} vs dps (tilt)", "best", "ed_pstar", a, "dps (tilt)"),
                C(f"ED at r*: {a} vs dps", "r*", "ed_pstar", a, "dps"),
                C(f"spread at best: {a} vs dps", "best", "spread_err", a, "dps")]
    return out + [C("closest to p*: dps (tilt) vs dps", "best", "ed_pstar", "dps (tilt)", "dps")]


# ---- across noise levels --------------------------------------------------------------------------------
def _best_values(study: dict, method: str, key: str):
    """Per evaluation seed, ``key`` of ``method`` at its knob of lowest tuning ED (the 'best' level)."""
    fr = P.Front.from_dict(study["fronts"]["eval"][method])
    knob = study["picks"]["best"].get(method)
    return P.at_knob(fr, knob, key)


def across_noise(sweep: dict, method: str = "ntrk", key: str = "ed_pstar", ref=MAIN_NOISE) -> list:
    """Paired verdicts (``protocol.verdict``, the same evaluation seeds and x_T) of ``method`` at its
    best knob at each noise level against the same at ``ref``: which noise level serves it best."""
    ref_study = sweep[str(ref)]
    w = ref_study["world"]
    margin, hib = w["margins"][key], w["metrics"][key]["higher_is_better"]
    b = _best_values(ref_study, method, key)
    out = []
    for lvl, st in sweep.items():
        if lvl == str(ref) or method not in st["fronts"]["eval"]:
            continue
        a = _best_values(st, method, key)
        v = P.verdict(a, b, margin, hib, names=(f"{method} @ {st['world']['config']['noise_label']}",
                                               f"{method} @ {ref_study['world']['config']['noise_label']}"), key=key)
        out.append({"noise": lvl, "method": method, "key": key, "verdict": v.to_dict()})
    return out


def load_results(path=RESULTS) -> dict:
    """The committed benchmark json (``results/flow2d.json``; ``run_benchmark`` writes it)."""
    return P.load_json(path)


# ---- renders (from the json alone) ------------------------------------------------------------------------
def sweep_table(data: dict, keys=("reward", "ed_pstar", "spread", "hist_kl")) -> str:
    """Markdown: per noise level and method, the knob at 'best' and mean ± 95% CI of ``keys`` there."""
    rows = []
    for lvl, st in data["sweep"].items():
        lab = st["world"]["config"]["noise_label"]
        for nm in st["fronts"]["eval"]:
            knob = st["picks"]["best"].get(nm)
            fr = P.Front.from_dict(st["fronts"]["eval"][nm])
            kt = "–" if knob is None else f"{fr.knob} = {knob:.3g}"
            where = st["where"]["best"].get(nm, "")
            if where and where != "interior":
                kt += " (edge)" if "not bracketed" in where else " (limit)"
            dg = lambda k: st["world"]["metrics"][k]["digits"]
            rows.append([lab, nm, kt] + [P.fmt_ci(_best_values(st, nm, k), dg(k)) for k in keys])
    labels = [data["sweep"][next(iter(data["sweep"]))]["world"]["metrics"][k]["label"] for k in keys]
    return P.markdown_table(["noise", "method", "knob at best ED"] + labels, rows)


def reach_rows(data: dict) -> list:
    """Per noise level: does NTRK's front reach p*'s reward r*, on how many evaluation seeds."""
    rows = []
    for lvl, st in data["sweep"].items():
        lab = st["world"]["config"]["noise_label"]
        r_star = st["levels"]["r*"]["value"]
        for nm in ("ntrk", "ntrk (constant)", "dps"):
            if nm not in st["fronts"]["eval"]:
                continue
            fr = P.Front.from_dict(st["fronts"]["eval"][nm])
            top = fr.array("reward").max(axis=0)                  # per seed, the largest reward on the front
            note = " (grid top: no ceiling)" if nm == "dps" else ""
            rows.append([lab, nm + note, P.fmt_ci(top, 3), f"{int((top >= r_star).sum())} of {len(top)}"])
    return rows


def markdown(data: dict) -> str:
    """The whole markdown report (main study, the sweep, verdicts across noise levels) from the json."""
    main = data["main"]
    cfg = data["config"]
    lines = [P.report(main, f"{'QUICK SMOKE RUN: ' if cfg['quick'] else ''}2-D flow world "
                            f"({main['world']['config']['noise_label']}): the protocol", POINT_KEYS).rstrip(), "",
             "# The noise sweep: sigma_t = f s_prev between the ODE (f = 0) and the stochastic sampler (f = 1)", "",
             f"Each noise level is its own protocol study ({main['n']} samples, tuning seeds "
             f"{main['seeds']['tuning']}, evaluation seeds {main['seeds']['eval']}); methods {list(SWEEP_METHODS)}; "
             "at f = 0 NTRK cannot run (sigma_t = 0) and DPS's lambda = c sigma^2 / beta is 0: only the exact-tilt "
             "coefficient (dps (tilt)) guides. 'DDPM variance' is sigma_t = s_prev sqrt(1 - (a_t s_prev / "
             "(a_prev s_t))^2).", "",
             "## Operating points at each method's lowest energy distance to p* (knob from the tuning seeds)", "",
             sweep_table(data), "",
             "## Reach: the largest mean reward on each front, against p*'s reward r* = "
             f"{main['levels']['r*']['value']:.4f}", "",
             P.markdown_table(["noise", "method", "largest reward on the front (per seed, mean ± 95% CI)",
                               "seeds reaching r*"], reach_rows(data)), "",
             "## Verdicts per noise level", ""]
    for lvl, st in data["sweep"].items():
        lines += [f"### {st['world']['config']['noise_label']}", "", P.verdict_table(st), ""]
    lines += ["## Across noise levels (paired over the same evaluation seeds and starts)", ""]
    rows = []
    for c in data["across"]:
        v = c["verdict"]
        f = lambda x: "–" if x is None else f"{x:+.4f}"
        rows.append([f"{v['a']} vs {v['b']}", c["key"], f"{v['a_mean']:.4f} vs {v['b_mean']:.4f}",
                     f"{f(v['mean'])} [{f(v['lo'])}, {f(v['hi'])}]",
                     "–" if v["p_tost"] is None else f"{v['p_tost']:.3f} (±{v['margin']:g})", f"**{v['label']}**"])
    lines += [P.markdown_table(["comparison", "metric (lower is better)", "A vs B (means)", "paired A − B [95% CI]",
                                "TOST p (margin)", "verdict"], rows), "",
              f"Wall time of the whole run: {data['wall_time_s']:.0f} s ({cfg['command']})."]
    return "\n".join(lines) + "\n"


def sweep_figure(data: dict):
    """Three panels from the json, per noise level (mean ± 95% CI over evaluation seeds): each method's
    distance to p* at its best knob; NTRK's reach (the largest reward on its front: kappa is capped at
    sqrt(d), DPS's scale is not); the within-mode spread at the best knob."""
    import matplotlib.pyplot as plt

    levels_ = list(data["sweep"])
    labels = [data["sweep"][lv]["world"]["config"]["noise_label"].replace("DDPM variance", "DDPM\nvariance")
              for lv in levels_]
    names = list(SWEEP_METHODS)
    colors = COLORS
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.2), dpi=DPI)
        xs = np.arange(len(levels_))
        width = 0.8 / len(names)
        for j, nm in enumerate(names):
            ed, top, sp = [], [], []
            for lv in levels_:
                st = data["sweep"][lv]
                if nm not in st["fronts"]["eval"]:
                    ed.append((np.nan, np.nan)); top.append((np.nan, np.nan)); sp.append((np.nan, np.nan))
                    continue
                ed.append(P.mean_ci(_best_values(st, nm, "ed_pstar")))
                sp.append(P.mean_ci(_best_values(st, nm, "spread")))
                fr = P.Front.from_dict(st["fronts"]["eval"][nm])
                top.append(P.mean_ci(fr.array("reward").max(axis=0)))
            off = xs + (j - (len(names) - 1) / 2) * width
            for k, (ax, vals) in enumerate(zip(axes, (ed, top, sp))):
                if k > 0 and nm == "base" or k == 1 and not nm.startswith("ntrk"):
                    continue              # base has no front near p*; DPS's knob has no ceiling (no reach)
                m, h = np.array(vals).T
                ax.errorbar(off, m, yerr=h, fmt="o", ms=4, capsize=2, color=colors.get(nm), label=nm)
        main = data["main"]
        axes[0].set_yscale("symlog", linthresh=1e-3)
        axes[0].set_ylabel("energy distance to p* at the best knob")
        axes[0].set_title("closest each method gets to p*")
        axes[1].axhline(main["levels"]["r*"]["value"], color="grey", ls=":", lw=1)
        axes[1].set_ylabel("largest mean reward on NTRK's front")
        axes[1].set_title("NTRK's reach, kappa <= sqrt(d) (dotted: r*)")
        fl = main["floor"]["eval"]["spread"]
        axes[2].axhline(float(np.mean(fl)), color="grey", ls=":", lw=1)
        axes[2].set_ylabel("within-mode spread vs p*")
        axes[2].set_title("spread at the best knob (dotted: exact p*)")
        for ax in axes:
            ax.set_xticks(xs, labels)
            ax.set_xlabel("noise level sigma_t = f s_prev")
            ax.grid(alpha=0.25)
        handles, labs = axes[0].get_legend_handles_labels()
        fig.legend(handles, labs, loc="lower center", ncol=len(names), frameon=False)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


# ---- the benchmark ------------------------------------------------------------------------------------------
def run_benchmark(out_dir, quick: bool = False, seeds: int = 5) -> str:
    """The protocol on the flow world: the main study at ``f = 1`` (every method) and the noise sweep;
    writes ``flow2d.{json,md,png}`` and ``flow2d_sweep.png`` (``flow2d_quick*`` with ``quick``).

    ``quick``: 300 samples, two tuning seeds, the main study with base / DPS / NTRK only (W replaced by
    norm matching, equal in 2-D) and the sweep at f = 0.5 and 1: a smoke test of the pipeline, not a result."""
    torch.set_num_threads(1)          # 2-D tensors are tiny: extra threads only add overhead
    t0 = time.perf_counter()
    n = 300 if quick else 1000
    tuning = toy2d.TUNING_SEEDS[:2] if quick else toy2d.TUNING_SEEDS
    cmd = "python -m ntrk_minimal.bench --task flow2d" + (" --quick" if quick else "") + f" --seeds {seeds}"
    cfg = {"task": "flow2d", "quick": quick, "command": cmd, "torch_threads": 1}
    w = world(MAIN_NOISE)
    if quick:
        ms = methods(MAIN_NOISE, ["base", "dps", "ntrk", "ntrk (W off)", "ntrk (constant)", "dps (tilt)"], "norm_match")
        comps = [c for c in comparisons() if c.a in {m.name for m in ms}
                 and all(b in {m.name for m in ms} for b in (c.b if isinstance(c.b, tuple) else (c.b,)))]
        lvls = [lv for lv in levels(w) if not lv.name.startswith("wall")]
    else:
        ms, comps, lvls = methods(MAIN_NOISE), comparisons(), levels(w)
    main = P.run_study(w, ms, lvls, comps, n=n, tuning_seeds=tuning, eval_seeds=range(seeds), progress=True,
                       config={**cfg, "study": "main"})
    sweep = {}
    for noise in ((0.5, 1.0) if quick else SWEEP):
        ws = world(noise)
        sweep[str(noise)] = P.run_study(ws, methods(noise, SWEEP_METHODS, "norm_match"), sweep_levels(ws),
                                        sweep_comparisons(noise), n=n, tuning_seeds=tuning,
                                        eval_seeds=range(seeds), progress=True, config={**cfg, "study": "sweep"})
    across = [c for m in ("ntrk", "ntrk (constant)", "dps") for key in ("ed_pstar", "spread_err")
              for c in across_noise(sweep, m, key)]
    data = {"config": cfg, "main": main, "sweep": sweep, "across": across,
            "wall_time_s": time.perf_counter() - t0}
    stem = Path(out_dir) / ("flow2d_quick" if quick else "flow2d")
    return write(data, stem)


def write(data: dict, stem) -> str:
    """``stem.json`` (everything), ``stem.md`` (``report``), ``stem.png`` (the main study's fronts) and
    ``stem_sweep.png`` (``sweep_figure``; ``flow2d_sweep_quick.png`` for ``flow2d_quick``), all rendered from
    the stored json; returns the markdown."""
    import matplotlib.pyplot as plt

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    P.write_json(data, stem.with_suffix(".json"))
    data = P.load_json(stem.with_suffix(".json"))
    text = markdown(data)
    stem.with_suffix(".md").write_text(text)
    have = set(data["main"]["fronts"]["eval"])
    panels = [{**p, "methods": [m for m in p["methods"] if m in have]} if "methods" in p else p for p in MAIN_PANELS]
    fig = P.fronts_figure(data["main"], panels, colors=COLORS, ncols=2,
                          linestyles={"ntrk (W off)": (0, (4, 2))})
    fig.savefig(stem.with_suffix(".png"))
    plt.close(fig)
    fig = sweep_figure(data)
    quick = stem.name.endswith("_quick")
    fig.savefig(stem.parent / ((stem.name[:-6] + "_sweep_quick.png") if quick else (stem.name + "_sweep.png")))
    plt.close(fig)
    return text
