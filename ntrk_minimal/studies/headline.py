"""The headline: does NTRK at 25 NFEs beat the best baseline at 500 on the trained UNet (``worlds.trained``)?

``run_benchmark`` runs the world through the protocol (``python -m ntrk_minimal.bench --task trained``;
``make bench-full`` writes ``results/headline.{json,md,png}``, ``make demo`` a reduced run beside the
committed one) with a resumable point cache shared by two processes (``point_cache``; the helper:
``python -m ntrk_minimal.studies.headline --helper``), and ``markdown`` renders the report from the json
alone: the headline's verdicts (``headline_summary``), the review's findings re-examined with the
run's numbers (``findings_summary``), then the protocol's full report.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .. import bench as P, kernels, metrics, models, paths, rewards, sampling, schedules, strength, whitening
from ..bench import fronts, methods as M, spec
from ..worlds import digits_data
from ..worlds.trained import (B100, B500, COLORS, PANELS, POINT_KEYS, QUICK_METHODS, SIZES, comparisons, levels,
                              methods, world)

__all__ = ["HEADLINE", "W_LINES", "point_cache", "headline_summary", "findings_summary", "compute_seconds", "markdown",
           "render", "run_benchmark"]


def point_cache(path) -> P.PointCache:
    """The headline's ``PointCache`` at ``path``, keyed by the source of every module a point's numbers
    depend on (the core, the protocol's runner and methods, the world and its data): a cache written by
    other code is never reused, while edits to the renders here (``headline_summary``, the figure) keep it valid."""
    return P.PointCache(path, modules=(kernels, sampling, strength, whitening, models, rewards, metrics, schedules,
                                       paths, spec, fronts, M, sys.modules[world.__module__], digits_data))
HEADLINE = ("kid_c at real reward: NTRK vs best@500", "held-out at real reward: NTRK vs best@500",
            "target at p_0 distance: NTRK vs best@500", "held-out at p_0 distance: NTRK vs best@500")
W_LINES = ("kid_c at real reward: W on vs off", "held-out at real reward: W on vs off",
           "target at p_0 distance: W on vs off", "kid_c at equal effective step: W on vs off",
           "target at equal effective step: W on vs off", "lowest kid_c: W on vs off")


def headline_summary(data: dict) -> str:
    """The headline in markdown, every number read from the study's json (``results/headline.json``):
    the question, its verdict lines, W on vs off, cost, what W can see, and the run's settings."""
    cfg, w = data["config"], data["world"]
    quick = cfg.get("quick", False)
    tag = "100" if quick else "500"
    names = [n.replace("@500", f"@{tag}") for n in HEADLINE]
    labels = [(P.find_comparison(data, n) or {}).get("verdict", {}).get("label", "missing") for n in names]
    counts = {lab: labels.count(lab) for lab in P.LABELS if lab in labels}
    tiles = w["config"]["w_tiles"]
    cost = data["cost"]["methods"]
    lines = [f"**Does NTRK@25 beat the best baseline@{tag}?** Four verdicts at two stated levels (the best "
             f"baseline chosen on the tuning seeds among {', '.join(B100 if quick else B500)}):", ""]
    lines += [P.verdict_line(data, n) for n in names]
    lines += ["", f"**Answer: " + ", ".join(f"{k} on {v} of 4" for k, v in counts.items())
              + f".** A verdict is win / lose (paired 95% CI over {len(data['seeds']['eval'])} evaluation seeds "
              f"excludes 0), equivalent (TOST at the margin stated in advance) or undecided.", ""]
    lines += ["**NTRK against DPS (both 25 NFEs):**", ""]
    lines += [P.verdict_line(data, n) for n in ("kid_c at real reward: NTRK vs DPS", "held-out at real reward: NTRK vs DPS",
                                               "target at p_0 distance: NTRK vs DPS", "lowest kid_c: NTRK vs DPS")]
    lines += ["", "**W on vs off, at matched fidelity / reward and at a matched effective step** (never each at "
              "its own knob):", ""]
    lines += [P.verdict_line(data, n) for n in W_LINES]
    eff = data["levels"].get("eff step", {}).get("value")
    if eff is not None and P.find_comparison(data, W_LINES[3]) is not None:
        lines.append(f"- the matched effective step is {eff:.3f} (W off's kappa at the real reward); W on "
                     f"reaches it at kappa ≈ {np.nanmean(np.asarray(P.find_comparison(data, W_LINES[3])['a']['knobs'], float)):.3f}")
    lines += ["", f"**What W can see here:** a 1x16x16 sample with 64-entry tiles gives W "
              f"{tiles['pixel'][0]} tiles in the pixel domain and {tiles['dct'][0]} in the DCT domain (the "
              f"2OS and tile-statistic sets cannot see structure inside a tile; W needs many tiles to act).", ""]
    if "ntrk" in cost and "base" in cost:
        nt, bs = cost["ntrk"], cost["base"]
        lines += ["**Cost** (per sample, evaluation runs): NTRK " + f"{nt['nfe']:.0f} NFE + {nt['backward']:.0f} backward "
                  f"rows, {1e3 * nt['wall_s']:.1f} ms wall; base {1e3 * bs['wall_s']:.1f} ms: one guided NFE costs "
                  f"{nt['wall_per_nfe_vs_ref']:.2f} base NFEs of wall time here (compute model: "
                  f"{w['config']['guided_step_cost']:g})."]
        for b in (("svdd-4", "smc-4") if quick else ("svdd-20", "smc-20")):
            if b in cost:
                r = cost[b]
                lines.append(f"- {b}: {r['nfe']:.0f} NFE, {1e3 * r['wall_s']:.1f} ms: NTRK uses "
                             f"{r['nfe'] / nt['nfe']:.1f}x fewer NFEs but only {r['wall_s'] / nt['wall_s']:.1f}x "
                             f"less wall time")
        lines += [P.verdict_line(data, n) for n in ("target at NTRK's cost: NTRK vs best-of-N",
                                                   "kid_c at NTRK's cost: NTRK vs best-of-N",
                                                   "target at NTRK's wall time: NTRK vs best-of-N")]
    sz = cfg.get("sizes", {})
    lines += ["", f"**This run:** {', '.join(data['fronts']['eval'])}; n = {data['n']} samples per run, tuning seeds "
              f"{data['seeds']['tuning']}, evaluation seeds {data['seeds']['eval']}; {data['wall_time_s'] / 60:.1f} minutes "
              f"wall, {compute_seconds(data) / 60:.1f} minutes of measured point time (the sum over all points; "
              f"{sz.get('torch_threads', 1)} torch thread per process)."
              + (f" {cfg['wall_note']}" if cfg.get("wall_note") else "")]
    lines.append("")
    return "\n".join(lines)


def _v(data, name):
    c = P.find_comparison(data, name)
    return None if c is None else c["verdict"]


def _ci_text(v, dg=2):
    f = lambda x: "–" if x is None else f"{x:+.{dg}f}"
    return f"{f(v['mean'])} [{f(v['lo'])}, {f(v['hi'])}]"


def _v1_starred(v1: dict) -> tuple[list, int]:
    """The old headline's starred picks: tuned methods whose coarse grid never reached its FD level."""
    knobbed = [k for k, f in v1["fronts"].items() if len(f) > 1]
    return [k for k in knobbed if not any(p["fd"] <= v1["level"] for p in v1["fronts"][k])], len(knobbed)


def findings_summary(data: dict, v1: dict | None = None) -> str:
    """The review's findings 1, 3, 4 and 6 (issue 10) re-examined with this run's numbers, every number and
    every "holds / does not hold" read from the json (``v1``: the old headline, ``results/headline_v1.json``).
    Finding 2 (FD bias at small n) is measured live in notebook 05; finding 5 (one tile at 8x8) is the
    digits world's (``digits.summary``)."""
    tag = "100" if data["config"].get("quick") else "500"
    out = ["**The review's findings, re-examined with these numbers**", ""]
    # 1: knob choice
    unstable = [(lv, nm) for lv, per in data["stability"].items() for nm, st in per.items() if not st["stable"]]
    edges = [(lv, nm, w) for lv, per in data["where"].items() for nm, w in per.items() if w != "interior"]
    npts = {nm: len(f["knobs"]) for nm, f in data["fronts"]["tuning"].items() if f["knob"] is not None}
    missing = [c["name"] for c in data["comparisons"] if "missing" in (c["verdict"]["note"] or "")]
    old = ""
    if v1 is not None:
        starred, nk = _v1_starred(v1)
        old = (f"The old run starred {len(starred)} of {nk} tuned methods (no grid point reached its FD level; "
               f"picks from 4-5 knobs on 2 seeds x {v1['n_tune']} samples). ")
    out.append(f"- **1. Knob choice was mostly noise — held for the old run; this run measures it.** {old}Here every "
               f"front has {min(npts.values())}-{max(npts.values())} knobs on the tuning seeds (extended until it "
               f"brackets each level), and levels are interpolated per evaluation seed. Knob choices flagged as "
               f"unstable across the tuning seeds: {len(unstable)}"
               + (" (" + "; ".join(f"{nm} at '{lv}'" for lv, nm in unstable) + ")" if unstable else "")
               + f"; picks on a grid edge: {len(edges)}"
               + (" (" + "; ".join(f"{nm} at '{lv}': {w}" for lv, nm, w in edges) + ")" if edges else "")
               + f"; verdicts left undecided because a level was missed on some seed: {len(missing)}.")
    # 3: NTRK vs the best baseline at matched levels
    hv = {n: _v(data, n.replace("@500", f"@{tag}")) for n in HEADLINE}
    hv = {n: v for n, v in hv.items() if v}
    if hv:
        labels = [v["label"] for v in hv.values()]
        kc = next(iter(hv.values()))
        tie = set(labels) == {"equivalent"}
        out.append(f"- **3. \"NTRK@25 ties the best baseline@{tag}\" — " + ("holds" if tie else "does not hold")
                   + f".** Against {kc['b']} (chosen on the tuning seeds) the four headline verdicts are "
                   f"{', '.join(labels)}; at the real 3s' reward, KID to real 3s NTRK − {kc['b']} = {_ci_text(kc, 3)} "
                   f"(**{kc['label']}**). A CI that covers 0 without a passing TOST is *undecided*, not a tie."
                   + ("" if "svdd-20" in data["fronts"]["eval"] or tag == "100" else
                      " SVDD-20, the review's example, is not in this run (see `trained.FULL_METHODS`)."))
    # 4: W on vs off
    wl = {n: _v(data, n) for n in W_LINES}
    wl = {n: v for n, v in wl.items() if v}
    ev = data["fronts"]["eval"].get("ntrk")
    if wl and ev and ev["knobs"]:
        ratio = [float(np.nanmean(np.asarray(p["eff_step"], float))) / k for p, k in zip(ev["values"], ev["knobs"])]
        matched = {n: v for n, v in wl.items() if n in W_LINES[:3]}
        step = {n: v for n, v in wl.items() if n in W_LINES[3:5]}
        own = wl.get(W_LINES[5])
        txt = lambda d: "; ".join(f"{n.replace(': W on vs off', '')} {_ci_text(v, 3)} **{v['label']}**" for n, v in d.items())
        wins = [n for n, v in matched.items() if v["label"] == "win"]
        out.append(f"- **4. \"W on beats W off\" — " + ("does not hold" if not wins else "holds in part")
                   + f".** W shortens the step: effective step / kappa = {min(ratio):.2f}-{max(ratio):.2f} at NTRK's "
                   f"evaluated knobs (exactly 1 with W off), so equal kappa is not an equal step. W on − W off at the "
                   f"matched levels: {txt(matched)}."
                   + (f" At an equal effective step along g: {txt(step)} (one quantity better and one worse is a move "
                      f"along the trade-off, not a better front)." if step else "")
                   + (f" Each at its own lowest kid_c: {_ci_text(own, 3)} **{own['label']}**." if own else ""))
    # 6: cost
    cost = data["cost"]["methods"]
    if "ntrk" in cost and "base" in cost:
        nt = cost["ntrk"]
        big = [b for b in (B500 if tag == "500" else B100) if b in cost]
        ratios = "; ".join(f"{b} uses {cost[b]['nfe'] / nt['nfe']:.0f}x NTRK's NFEs but {cost[b]['wall_s'] / nt['wall_s']:.1f}x "
                           f"its wall time" for b in big)
        out.append(f"- **6. NFE hides cost — holds.** One NTRK NFE (forward + backward) costs {nt['wall_per_nfe_vs_ref']:.2f} "
                   f"base NFEs of wall time here (the compute model uses {data['world']['config']['guided_step_cost']:g}); "
                   f"{ratios}.")
    return "\n".join(out) + "\n"


def compute_seconds(data: dict) -> float:
    """Sum over every point in the json (tuning and evaluation fronts) of its measured wall seconds: the
    compute the run's numbers took, however many restarts or processes shared it."""
    tot = 0.0
    for phase in ("tuning", "eval"):
        for f in data["fronts"][phase].values():
            for p in f["values"]:
                tot += float(np.nansum(np.asarray(p["wall_s"], float))) * data["n"]
    return tot


def markdown(data: dict) -> str:
    """The whole report (``results/headline.md``) from the study's json alone."""
    quick = data["config"].get("quick", False)
    size = data["config"]["sizes"]
    v1_path = paths.RESULTS / "headline_v1.json"
    v1 = json.loads(v1_path.read_text()) if v1_path.is_file() and not quick else None
    title = (("QUICK RUN (reduced: " + ", ".join(QUICK_METHODS) + f"; n = {size['n']}, {size['eval_seeds']} "
              "evaluation seeds; NOT the reported numbers): ") if quick else "") + \
        "Trained UNet on 16x16 digits: the headline through the evaluation protocol"
    return (f"# {title}\n\n" + headline_summary(data) + "\n" + findings_summary(data, v1) + "\n"
            + P.report(data, "Full report", POINT_KEYS))


def render(data: dict, stem) -> str:
    """``stem.md`` (``markdown``) and ``stem.png`` (the fronts) from the study's json (``data``); returns the markdown."""
    text = markdown(data)
    stem = Path(stem)
    stem.with_suffix(".md").write_text(text)
    import matplotlib.pyplot as plt
    fig = P.fronts_figure(data, PANELS, colors=COLORS, ncols=2, linestyles={"ntrk (W off)": (0, (4, 2))})
    fig.savefig(stem.with_suffix(".png"))
    plt.close(fig)
    return text


def run_benchmark(out_dir, quick: bool = False, seeds: int | None = None, cache=None, helper: bool = False) -> str:
    """The headline through the protocol; writes ``headline.{json,md,png}`` (``headline_quick.*`` with
    ``quick``) into ``out_dir`` and returns the markdown. ``seeds``: evaluation seeds (default from
    ``SIZES``); ``cache``: the ``point_cache`` file (default ``build/headline[_quick]_points.jsonl``).
    ``helper``: run the same study with the methods in reverse order, sharing the cache, and write
    nothing (``python -m ntrk_minimal.studies.headline --helper``: a second process on a second core)."""
    size = dict(SIZES["quick" if quick else "full"])
    if seeds is not None:
        size["eval_seeds"] = int(seeds)
    torch.set_num_threads(size["torch_threads"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / ("headline_quick" if quick else "headline")
    cache = point_cache(Path(cache) if cache is not None else paths.BUILD / f"{stem.name}_points.jsonl")
    t0 = time.perf_counter()
    w = world()
    ms = methods(quick)[::-1] if helper else methods(quick)
    data = P.run_study(w, ms, levels(w), comparisons(quick), n=size["n"],
                       tuning_seeds=size["tuning_seeds"], eval_seeds=range(size["eval_seeds"]),
                       eval_grid="needed", progress=not helper, cache=cache,
                       config={"task": "trained", "quick": quick, "sizes": size,
                               "command": "python -m ntrk_minimal.bench --task trained" + (" --quick" if quick else "")
                               + f" --seeds {size['eval_seeds']}",
                               "not_run": "NTRK+BoN (NTRK†) at 100 and 500 NFEs: see methods()"})
    hits = cache.stats
    data["wall_time_s"] = time.perf_counter() - t0
    if helper:
        return f"helper done: {hits}"
    data["config"]["cache"] = {k: hits[k] for k in ("hits", "misses", "waited")}
    data["compute_s"] = compute_seconds(data)
    P.write_json(data, stem.with_suffix(".json"))
    data = P.load_json(stem.with_suffix(".json"))
    text = render(data, stem)
    if not quick:
        return text
    committed = out_dir / "headline.json"
    full = (headline_summary(P.load_json(committed)) if committed.is_file()
            else f"(no committed full run at {committed}: run `make bench-full`)")
    return (f"# This reduced run ({data['wall_time_s']:.0f} s; written to {stem}.md)\n\n"
            + headline_summary(data) + "\n# The committed full run (results/headline.json, "
            + (f"{P.load_json(committed)['wall_time_s'] / 60:.0f} minutes wall" if committed.is_file() else "missing")
            + ")\n\n" + full)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="helper process of the headline run (see run_benchmark)")
    ap.add_argument("--helper", action="store_true", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="results")
    a = ap.parse_args()
    print(run_benchmark(a.out, quick=a.quick, helper=True))
