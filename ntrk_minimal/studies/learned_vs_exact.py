"""Learned versus exact: the samplers on the embedded digits world, with the UNet and with the exact eps*.

The world is ``worlds.embedded`` (the 64-D digits mixture embedded at 32x32, exact ``eps*``, ``log p_t``
and ``p*``, and a UNet trained on it). This study (``python -m ntrk_minimal.bench --task embedded`` ->
``results/embedded.{json,md,png}``; notebook 04 reads it) runs the protocol twice, on the UNet and on
``eps*``, and measures what learning costs each method:

* ``learned_vs_exact``: per method at the p* reward, UNet minus exact (paired over the same seeds and x_T);
* ``mechanism``: every state where a sampler queries the denoiser is probed (``TrajectoryProbe``: the
  learned error against ``eps*`` there, and how typical the state is under the true ``p_t``), against
  genuine draws of ``p_t`` (``reference_profile``);
* ``gradient_profile``: the reward gradient through the UNet against the one through ``eps*``;
* ``ablation``: W's tiles, domains and stages at a matched effective step.

Each stage is kept in ``build/embedded_stages/`` (``run_benchmark(resume=True)`` reuses it); ``markdown``
and ``figure`` render from the json alone.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .. import bench as P, paths
from ..kernels import reward_grad
from ..whitening import norm_match, tile_layout, whiten
from ..worlds.embedded import (N, SAMPLE_SHAPE, UNET_DIR, EmbeddedProblem, ExactDenoiser, embedded_problem,
                               levels_and_comparisons, make_world, methods, run_dps, run_ntrk)

__all__ = ["TrajectoryProbe", "reference_profile", "gradient_profile", "mechanism", "ablation_variants", "ablation",
           "learned_vs_exact", "SIZES", "STAGE_DIR", "run_benchmark", "markdown", "render", "report",
           "mechanism_table", "gradient_table", "ablation_table", "lve_table", "COLORS", "figure"]


# ---- instruments: the effective step of NTRK, the denoiser error along trajectories ------------------
class TrajectoryProbe:
    """A model wrapper that measures, at every state ``x_t`` where a sampler queries the denoiser, the
    learned-vs-exact error ``||eps_hat(x_t) - eps*(x_t)||^2 / N`` and how typical ``x_t`` is under the
    true marginal ``p_t`` (``LowRankMixture.typicality``: ``log p_t``, in-subspace Mahalanobis / r,
    complement energy / (v (N - r))). Stores per timestep the sum over rows; ``table()`` gives means."""

    def __init__(self, model, exact: ExactDenoiser):
        self.model, self.exact, self.acc = model, exact, {}

    def __call__(self, x_t, t):
        out = self.model(x_t, t)
        with torch.no_grad():
            x = x_t.detach().to(torch.float64)
            e_star = self.exact(x, t)
            ty = self.exact.marginal(t).typicality(x)
            row = {"gap": ((out.detach().to(torch.float64) - e_star) ** 2).flatten(1).mean(1),
                   "log_p_t": ty["log_prob"], "maha_in": ty["maha_in"], "perp_ratio": ty["perp_ratio"]}
        a = self.acc.setdefault(int(t), {k: [] for k in row})
        for k, v in row.items():
            a[k].append(v)
        return out

    def table(self) -> list[dict]:
        """Per timestep (decreasing t): mean and median of each statistic over every queried row."""
        out = []
        for t, a in sorted(self.acc.items(), reverse=True):
            v = {k: torch.cat(vs) for k, vs in a.items()}
            row = {"t": t, "rows": int(len(v["gap"]))}
            for k, x in v.items():
                row[k], row[k + "_median"] = float(x.mean()), float(x.median())
            out.append(row)
        return out


def reference_profile(pb: EmbeddedProblem, model, n: int = 256, seed: int = 4242) -> list[dict]:
    """The same statistics on *genuine* draws of ``p_t`` (``x_t = a x_0 + s eps``, ``x_0 ~ p_0``) at
    every timestep of the schedule: what a denoiser is trained on, the yardstick for trajectories."""
    g = torch.Generator().manual_seed(seed)
    x0 = pb.p0.sample(n, g).reshape((n,) + SAMPLE_SHAPE)
    eps = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    probe = TrajectoryProbe(model, pb.exact)
    with torch.no_grad():
        for t in pb.schedule.timesteps.tolist():
            a, s = pb.exact.a_s(t)
            probe(a * x0 + s * eps, t)
    return probe.table()


def gradient_profile(pb: EmbeddedProblem, n: int = 32, seed: int = 4343) -> list[dict]:
    """The guidance signal itself, learned against exact, on genuine draws of ``p_t`` at every step of
    the schedule: ``g = grad_{x_t} r(x0_hat(x_t))`` through the UNet and through ``eps*``
    (``kernels.reward_grad``). Per step: median ``||g_theta|| / ||g*||``, mean ``cos(g_theta, g*)``,
    mean ``cos(W(g_theta), g*)`` (does W bring the learned direction closer?), and the RMS error of
    ``x0_hat``. At high noise ``x0_hat = (x_t - s_t eps_hat) / a_t`` divides the learned error by a
    small ``a_t``, and its Jacobian more so."""
    g = torch.Generator().manual_seed(seed)
    x0 = pb.p0.sample(n, g).reshape((n,) + SAMPLE_SHAPE)
    eps = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    cos = lambda u, v: torch.nn.functional.cosine_similarity(u.flatten(1), v.flatten(1))
    rows = []
    for i, t in enumerate(pb.schedule.timesteps.tolist()):
        a, s = pb.exact.a_s(t)
        x_t = a * x0 + s * eps
        _, x0_u, g_u = reward_grad(pb.unet, pb.reward, x_t, i, pb.schedule)
        _, x0_e, g_e = reward_grad(pb.exact, pb.reward, x_t, i, pb.schedule)
        ratio = g_u.flatten(1).norm(dim=1) / g_e.flatten(1).norm(dim=1)
        rows.append({"t": t, "a_t": a, "norm_ratio": float(ratio.median()), "cos": float(cos(g_u, g_e).mean()),
                     "cos_W": float(cos(whiten(g_u), g_e).mean()), "cos_W_exact": float(cos(whiten(g_e), g_e).mean()),
                     "x0_rms_err": float(((x0_u - x0_e) ** 2).mean().sqrt())})
    return rows


# ---- the benchmark: two studies, the mechanism, the W ablation -------------------------------------
def _knob_at(data: dict, method: str, level: str):
    """The knob of ``method`` at a level of a study, from its tuning fronts (mean front; None if no knob
    or the level is not reached)."""
    fr = P.Front.from_dict(data["fronts"]["tuning"][method])
    if fr.knob is None:
        return None
    lv = data["levels"][level]
    if isinstance(lv["value"], str):
        return data["picks"][level][method]
    k, _ = P.knob_at_level(fr, lv["x_key"], lv["value"])
    return None if not math.isfinite(k) else float(k)


def mechanism(pb: EmbeddedProblem, world, method_list, knobs: dict, seeds, n: int) -> dict:
    """Per method at its knob (``knobs[name]``; skipped if missing): every state where the sampler
    queries the denoiser is probed (``TrajectoryProbe``), per timestep, pooled over ``seeds``; plus
    the final samples' metrics. ``world.model`` is the model that drives the sampler."""
    out = {}
    for m in method_list:
        if m.knob is not None and knobs.get(m.name) is None:
            continue
        probe = TrajectoryProbe(world.model, pb.exact)
        w = dataclasses.replace(world, model=probe)
        finals = []
        for s in seeds:
            x_T, g = world.start(s, n)
            kw = dict(m.fixed)
            if m.knob is not None:
                kw[m.knob] = knobs[m.name]
            res = m.run(w, x_T, g, **kw)
            res = res[0] if isinstance(res, tuple) else res
            finals.append(world.evaluate(res.x0, s))
        steps = probe.table()
        out[m.name] = {"knob": knobs.get(m.name), "steps": steps,
                       "final": {k: [f[k] for f in finals] for k in finals[0]},
                       "gap_mean": float(np.mean([r["gap"] for r in steps])),
                       "perp_mean": float(np.mean([r["perp_ratio"] for r in steps])),
                       "maha_mean": float(np.mean([r["maha_in"] for r in steps]))}
    return out


def ablation_variants() -> dict:
    """W variants for the ablation: tile count (1 to 64 tiles per domain), domains, stages; and W off."""
    v = {f"{M} tile{'s' if M > 1 else ''} ({32 // int(math.sqrt(M))}x{32 // int(math.sqrt(M))})":
         {"tile_size": (32 // int(math.sqrt(M)),) * 2} for M in (1, 4, 16, 64)}
    v["pixel domain only (16 tiles)"] = {"domains": ("pixel",)}
    v["DCT domain only (16 tiles)"] = {"domains": ("dct",)}
    v["values stage only (16 tiles)"] = {"stages": ("values",)}
    out = {}
    for name, kw in v.items():
        out[name] = kw
    out["W off (norm matching)"] = norm_match
    return out


def ablation(world, level_eff: float, seeds, n: int, grid, variants=None) -> dict:
    """NTRK fronts (kappa over ``grid``, on ``seeds``) for each W variant, read at the effective step
    ``level_eff`` (``protocol.at_level`` on ``eff_step``): target, ``log p_0``, ED to p*, cos(W(g), g),
    ``||W(g)||^2 / N``, lag-1 of g and of W(g), the knob there. Grids extend until they bracket."""
    variants = ablation_variants() if variants is None else variants
    out = {}
    for name, kw in variants.items():
        wmap = kw if callable(kw) else partial(whiten, **kw)
        if callable(kw):
            tiles = None
        else:
            tiles = {d: int(tile_layout(SAMPLE_SHAPE, d, kw.get("tile_size", "auto")).shape[0])
                     for d in kw.get("domains", ("dct", "pixel"))}
        m = P.Method(f"ntrk [{name}]", run_ntrk, "kappa", grid, budget=25, limit=(0.0, math.sqrt(N)),
                     fixed={"whiten": wmap}, min_points=len(grid))
        fr = P.front(world, m, seeds, n, x_key="eff_step", level=float(level_eff), max_extend=4)
        at = {k: P.at_level(fr, "eff_step", level_eff, k) for k in
              ("target", "loglik", "ed_pstar", "cos_wg", "wnorm", "lag1_g", "lag1_w", "perp")}
        out[name] = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in ({} if callable(kw) else kw).items()},
                     "tiles": tiles, "front": fr.to_dict(),
                     "at_level": {k: a.values.tolist() for k, a in at.items()},
                     "knob_at_level": at["target"].knobs.tolist(), "flags": at["target"].flags}
    return out


def learned_vs_exact(studies: dict, level: str = "p* reward", keys=("ed_pstar", "loglik", "perp")) -> dict:
    """Per method at ``level`` (a numeric level both studies share): per-seed values with the UNet and
    with ``eps*`` (evaluation fronts, same seeds, same x_T) and the paired verdict of UNet - exact."""
    du, de = studies["unet"], studies["exact"]
    lv = du["levels"][level]
    out = {}
    for name in du["fronts"]["eval"]:
        row = {}
        for key in keys:
            vals = {}
            for tag, d in (("unet", du), ("exact", de)):
                fr = P.Front.from_dict(d["fronts"]["eval"][name])
                vals[tag] = (fr.array(key)[0] if fr.knob is None
                             else P.at_level(fr, lv["x_key"], lv["value"], key).values)
            hib = du["world"]["metrics"][key]["higher_is_better"]
            margin = du["world"]["margins"].get(key, 1e-9)
            v = P.verdict(vals["unet"], vals["exact"], margin, hib, names=("UNet", "exact"), key=key)
            row[key] = {"unet": [float(x) for x in vals["unet"]], "exact": [float(x) for x in vals["exact"]],
                        "verdict": v.to_dict()}
        out[name] = row
    return out


SIZES = {
    # the committed run, sized for ~35 minutes of one shared CPU core: 16 samples per run (a 32-sample
    # guided UNet run costs ~3x a 16-sample one here), 2 tuning + 5 evaluation seeds, 8-point geometric
    # grids (10 for DPS); the mechanism on 3 seeds; the ablation (8 variants) on 3 seeds over kappa in
    # {2, 4} (extended until it brackets the level)
    "full": dict(n=16, num_steps=25, tuning_seeds=(1000, 1001), eval_seeds=tuple(range(5)),
                 mech_seeds=(0, 1, 2), abl_seeds=(0, 1, 2), abl_grid=(2.0, 4.0), eval_grid="needed",
                 max_extend=3),
    # the CI smoke run (a few minutes on a busy machine): every code path, numbers not for reading
    "quick": dict(n=8, num_steps=8, tuning_seeds=(1000,), eval_seeds=(0, 1), mech_seeds=(0,),
                  abl_seeds=(0,), abl_grid=(1.0, 4.0), eval_grid="needed", max_extend=1),
}


STAGE_DIR = paths.BUILD / "embedded_stages"


def run_benchmark(out_dir, quick: bool = False, seeds: int = 5, resume: bool = False, only=None) -> str:
    """``python -m ntrk_minimal.bench --task embedded``: both studies (UNet, exact eps*), the learned-vs-
    exact table, the mechanism measurement and the W ablation; writes ``embedded.{json,md,png}``
    (``embedded_quick.*`` with ``quick``) into ``out_dir`` and returns the markdown.

    Each stage's output is also kept in ``build/embedded_stages/``; ``resume=True`` reuses the stages
    found there (same configuration) instead of recomputing them (their wall times are kept).
    ``only`` (e.g. ``("ablation",)``): compute just these of the later stages (``mechanism``, ``ablation``,
    ``gradients``; the studies they need are computed or loaded), so that two processes can share them;
    nothing is written to ``out_dir`` while a stage is missing. Rerun with ``resume=True`` to assemble.
    """
    if only is not None and not set(only) <= {"mechanism", "ablation", "gradients"}:
        raise ValueError(f"only must name some of 'mechanism', 'ablation', 'gradients', got {only!r}")
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                # same numbers on any machine; one core each on a shared box
    try:
        return _run(Path(out_dir), quick, seeds, t0, resume, only)
    finally:
        torch.set_num_threads(threads)


def _stage(name: str, tag: str, resume: bool, walls: dict, fn):
    """Run ``fn()`` (json-able result) or, with ``resume``, load it from ``STAGE_DIR / tag / name``."""
    path = STAGE_DIR / tag / f"{name}.json"
    if resume and path.is_file():
        d = P.load_json(path)
        walls[name] = d["wall_s"]
        return d["result"]
    w0 = time.perf_counter()
    result = fn()
    walls[name] = time.perf_counter() - w0
    path.parent.mkdir(parents=True, exist_ok=True)
    P.write_json({"result": result, "wall_s": walls[name]}, path)
    return P.load_json(path)["result"]


def _run(out_dir: Path, quick, seeds, t0, resume, only=None):
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = dict(SIZES["quick" if quick else "full"])
    if not quick:
        cfg["eval_seeds"] = tuple(range(seeds))
    pb = embedded_problem(num_steps=cfg["num_steps"])
    ms = methods(quick)
    levels, comps = levels_and_comparisons(pb)
    tag = ("quick" if quick else "full") + f"_seeds{len(cfg['eval_seeds'])}"
    studies, walls = {}, {}
    for model in ("unet", "exact"):
        studies[model] = _stage(f"study_{model}", tag, resume, walls, lambda: P.run_study(
            make_world(pb, model), ms, levels, comps, n=cfg["n"], tuning_seeds=cfg["tuning_seeds"],
            eval_seeds=cfg["eval_seeds"], eval_grid=cfg["eval_grid"], max_extend=cfg["max_extend"],
            progress=not quick, config={"size": "quick" if quick else "full"}))

    def mech_stage():
        """Each method at its knob at the p* reward (or its closest point), on the UNet and on eps*."""
        out = {}
        for model in ("unet", "exact"):
            knobs, where = {}, {}
            for m in ms:
                k = _knob_at(studies[model], m.name, "p* reward")
                if k is None and m.knob is not None:          # the p* reward is out of reach
                    k, where[m.name] = _knob_at(studies[model], m.name, "closest to p*"), "closest to p*"
                knobs[m.name] = k
                where.setdefault(m.name, "p* reward" if m.knob is not None else "its only point")
            extra = [P.Method("dps @ exact-tilt step", run_dps, "scale", [0.5, 1.0], budget=25, min_points=2)]
            knobs["dps @ exact-tilt step"] = 1.0
            where["dps @ exact-tilt step"] = "scale = 1 (lambda_t = sigma_t^2 / beta)"
            out[model] = mechanism(pb, make_world(pb, model), ms + extra, knobs, cfg["mech_seeds"], cfg["n"])
            for name, entry in out[model].items():
                entry["where"] = where[name]
        return {"mech": out, "reference": reference_profile(pb, pb.unet, n=64 if quick else 256)}

    def later(name, fn):
        """A later stage, unless ``only`` leaves it out and it is not cached (then None)."""
        if only is not None and name not in only and not (resume and (STAGE_DIR / tag / f"{name}.json").is_file()):
            return None
        return _stage(name, tag, resume, walls, fn)

    mr = later("mechanism", mech_stage)

    def abl_stage():
        """The W ablation at NTRK (W)'s effective step at the p* reward (UNet world)."""
        variants = ablation_variants()
        if quick:
            variants = {k: variants[k] for k in list(variants)[:1] + ["W off (norm matching)"]}
        eff = studies["unet"]["levels"]["matched effective step"]["value"]
        return ablation(make_world(pb, "unet"), eff, cfg["abl_seeds"], cfg["n"], list(cfg["abl_grid"]), variants)

    abl = later("ablation", abl_stage)
    grads = later("gradients", lambda: gradient_profile(pb, n=8 if quick else 64))
    if mr is None or abl is None or grads is None:
        return f"stages computed: {sorted(walls)}; rerun with resume=True once every stage is cached"
    mech, ref = mr["mech"], mr["reference"]
    training = json.loads((UNET_DIR / "training.json").read_text()) if (UNET_DIR / "training.json").is_file() else {}
    data = {"quick": quick, "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
            "studies": studies, "learned_vs_exact": learned_vs_exact(studies), "mechanism": mech,
            "reference_profile": ref, "gradients": grads, "ablation": abl, "training": training, "walls": walls,
            "wall_time_s": float(sum(walls.values())), "wall_this_call_s": time.perf_counter() - t0}
    stem = out_dir / ("embedded_quick" if quick else "embedded")
    P.write_json(data, stem.with_suffix(".json"))
    return render(stem)


def markdown(data: dict) -> str:
    """``results/embedded.md`` from the json alone (``report``)."""
    return report(data)


def render(stem) -> str:
    """``stem.md`` and ``stem.png`` from ``stem.json`` alone; returns the markdown."""
    import matplotlib.pyplot as plt

    stem = Path(stem)
    data = P.load_json(stem.with_suffix(".json"))
    text = report(data)
    stem.with_suffix(".md").write_text(text)
    fig = figure(data)
    fig.savefig(stem.with_suffix(".png"))
    plt.close(fig)
    return text


# ---- rendering (from the json alone) ---------------------------------------------------------------
def _num(v, d=3, sign=False) -> str:
    """``v`` with ``d`` decimals, "–" for None/NaN (missing: a level a front did not reach)."""
    if v is None or not np.isfinite(v):
        return "–"
    return f"{v:+.{d}f}" if sign else f"{v:.{d}f}"


def _ci(v, d=3):
    v = np.asarray([x for x in np.asarray([np.nan if x is None else x for x in np.ravel(v)], float)
                    if np.isfinite(x)])
    if v.size == 0:
        return "–"
    m, h = P.mean_ci(v)
    return f"{m:.{d}f} ± {h:.{d}f}" if np.isfinite(h) else f"{m:.{d}f}"


def mechanism_table(data: dict) -> str:
    """Per method and model: the denoiser error and typicality along its trajectories (matched reward)."""
    ref = data["reference_profile"]
    ref_gap = float(np.mean([r["gap"] for r in ref]))
    g = lambda v: f"{v:.3g}"
    rows = []
    for model in ("unet", "exact"):
        for name, m in data["mechanism"][model].items():
            k = "–" if m["knob"] is None else f"{m['knob']:.3g}"
            steps = m["steps"]
            gap = (f"{g(m['gap_mean'])} (x{g(m['gap_mean'] / ref_gap)})" if model == "unet" else "0 (exact)")
            med = float(np.mean([r["gap_median"] for r in steps]))
            late = [r for r in steps if r["t"] <= 200]
            div = float(np.mean(m["final"].get("diverged", [0.0])))
            finals = ([f"diverged ({100 * div:.0f}% of samples with |x| > 10)", "–", "–"] if div > 0 else
                      [_ci(m["final"]["target"]), _ci(m["final"]["loglik"], 1), _ci(m["final"]["ed_pstar"], 4)])
            rows.append([model, name, m.get("where", ""), k, gap, "–" if model == "exact" else g(med),
                         g(np.mean([r["perp_ratio"] for r in late])), g(m["perp_mean"]), g(m["maha_mean"])] + finals)
    head = ["model", "method", "operating point", "knob",
            "E||eps_th - eps*||^2/N over queried x_t (x genuine p_t)", "its per-step median",
            "complement energy ratio, t <= 200", "complement ratio, all t", "in-subspace Mahalanobis/64",
            "final reward", "final log p_0", "final ED to p*"]
    note = (f"Genuine draws of p_t (the UNet's training distribution), averaged over the sampling timesteps: "
            f"E||eps_th - eps*||^2/N = {ref_gap:.4f}, complement energy ratio "
            f"{np.mean([r['perp_ratio'] for r in ref]):.3f} (t <= 200: "
            f"{np.mean([r['perp_ratio'] for r in ref if r['t'] <= 200]):.3f}), Mahalanobis/64 "
            f"{np.mean([r['maha_in'] for r in ref]):.2f}.")
    return P.markdown_table(head, rows) + "\n\n" + note


def gradient_table(data: dict) -> str:
    rows = [[r["t"], f"{r['a_t']:.4f}", f"{r['norm_ratio']:.3g}", f"{r['cos']:.3f}", f"{r['cos_W']:.3f}",
             f"{r['cos_W_exact']:.3f}", f"{r['x0_rms_err']:.3f}"] for r in data.get("gradients", [])]
    return P.markdown_table(["t", "a_t", "median ||g_theta|| / ||g*||", "cos(g_theta, g*)", "cos(W(g_theta), g*)",
                             "cos(W(g*), g*)", "RMS error of x0_hat"], rows)


def ablation_table(data: dict) -> str:
    rows = []
    for name, a in data["ablation"].items():
        at = a["at_level"]
        tiles = "–" if a["tiles"] is None else ", ".join(f"{d} {m}" for d, m in a["tiles"].items())
        kn = [k for k in a["knob_at_level"] if k is not None and np.isfinite(k)]
        rows.append([name, tiles, f"{np.mean(kn):.3g}" if kn else "–", _ci(at["cos_wg"], 4), _ci(at["wnorm"], 3),
                     _ci(at["lag1_g"], 3), _ci(at["lag1_w"], 3), _ci(at["target"]), _ci(at["loglik"], 1),
                     _ci(at["ed_pstar"], 4)])
    head = ["W variant", "tiles per domain", "kappa at the level", "cos(W(g), g)", "||W(g)||/sqrt(N)",
            "lag-1 of g", "lag-1 of W(g)", "reward", "log p_0", "ED to p*"]
    return P.markdown_table(head, rows)


def lve_table(data: dict) -> str:
    rows = []
    for name, row in data["learned_vs_exact"].items():
        cells = [name]
        for key, d in (("ed_pstar", 4), ("loglik", 1), ("perp", 3)):
            v = row[key]["verdict"]
            # a label only where the metric's direction means "closer to the target": a higher log p_0 or
            # a complement ratio farther below 1 is over-concentration, not fidelity
            label = f" {v['label']}" if key == "ed_pstar" else ""
            cells += [_ci(row[key]["unet"], d), _ci(row[key]["exact"], d),
                      f"{_num(v['mean'], d, True)} [{_num(v['lo'], d, True)}, {_num(v['hi'], d, True)}]{label}"]
        rows.append(cells)
    head = ["method", "ED to p*: UNet", "exact", "UNet - exact", "log p_0: UNet", "exact", "UNet - exact",
            "complement ratio: UNet", "exact", "UNet - exact"]
    return P.markdown_table(head, rows)


def report(data: dict) -> str:
    """The markdown of ``results/embedded.md``: headline tables first, then each study's full report."""
    su = data["studies"]["unet"]
    tr = data.get("training", {})
    cfg = su["world"]["config"]
    walls = data["walls"]
    lines = [f"# Learned versus exact: the digits mixture embedded at 1x32x32{' (QUICK smoke run)' if data['quick'] else ''}",
             "",
             f"p_0 = 16-component digits mixture, bilinearly upsampled 8x8 -> 32x32 plus N(0, {cfg['tau']}^2 I) "
             f"(N = 1024): exact eps*, exact log p_0, exact p* ∝ p_0 exp(r / beta) with r(x) = "
             f"-||x - c||^2 / (2 * {cfg['reward_scale']:g}^2), c = the mean training {cfg['target_class']}, "
             f"beta = {cfg['beta']:g} (E_p0[r] = {cfg['E_p0[r]']:.3f}, E_p*[r] = {cfg['E_p*[r]']:.3f}). "
             f"The same samplers run twice: on the learned UNet and on eps*. {su['n']} samples per run, "
             f"tuning seeds {su['seeds']['tuning']}, evaluation seeds {su['seeds']['eval']}; W sees 16 tiles "
             f"per domain (8x8 patches, 16 DCT bands).", ""]
    if tr:
        gap = {r["t"]: r["gap"] for r in tr["gap"]}
        lines += [f"UNet: {tr['parameters'] / 1e6:.2f} M parameters, {tr.get('stopped_at', tr['steps'])} steps (of a "
                  f"{tr['steps']}-step cosine schedule) x batch {tr['batch']} of fresh exact samples, training wall "
                  f"{tr['train_wall_s'] / 60:.0f} min on the shared machine; held-out "
                  f"E||eps_th - eps*||^2/N = " + ", ".join(f"{gap[t]:.4f} (t={t})" for t in (0, 40, 160, 480, 960) if t in gap)
                  + ".", ""]
    lines += ["Wall time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in walls.items())
              + f"; total {data['wall_time_s'] / 60:.1f} min.", ""]
    for model, title in (("unet", "learned UNet"), ("exact", "exact eps*")):
        lines += [f"## Verdicts, {title}", "", P.verdict_table(data["studies"][model]), ""]
    lines += ["## What learning costs each method (at the p* reward; paired over evaluation seeds)", "",
              "UNet minus exact, same seeds and start noise; a verdict only on the energy distance to p* (lower "
              "is better); for log p_0 and the complement ratio (1 for p_0) the difference alone: the 25-step "
              "samplers are over-concentrated on both models, so a higher log p_0 is not better fidelity.", "",
              lve_table(data), "",
              "## The mechanism: denoiser error and typicality along each method's trajectories (p* reward)", "",
              "Every state at which a sampler queries the denoiser (SVDD candidates and SMC particles "
              "included) is probed: the learned error against eps* there, and how typical the state is under "
              "the true marginal p_t (complement energy ratio: 1 for a genuine draw, SD 0.046).", "",
              mechanism_table(data), "",
              "## The guidance signal: the reward gradient through the UNet against the one through eps*", "",
              "On genuine draws of p_t at every sampling step: g = grad_{x_t} r(x0_hat(x_t)), through the UNet "
              "(g_theta) and through eps* (g*).", "",
              gradient_table(data), "",
              "## W ablation at matched effective step (UNet)", "",
              f"Every NTRK variant read at effective step {data['studies']['unet']['levels']['matched effective step']['value']:.3f} "
              f"along g (eff = kappa cos(W(g), g) ||W(g)|| / sqrt(N), averaged over steps), seeds {data['sizes']['abl_seeds']}.", "",
              ablation_table(data), ""]
    for model, title in (("unet", "learned UNet"), ("exact", "exact eps*")):
        body = P.report(data["studies"][model], f"Study: {title}").replace("\n# ", "\n### ").replace("\n## ", "\n### ")
        lines += ["---", "", body.replace("# Study", "## Study", 1), ""]
    return "\n".join(lines)


COLORS = {"base": "k", "dps": "tab:orange", "ntrk (W)": "tab:red", "ntrk (W off)": "tab:pink",
          "svdd-4": "tab:green", "smc-4": "tab:purple", "best-of-4": "tab:blue"}


def _front_xy(fr_d: dict, xk: str, yk: str):
    """Mean ± 95% CI over seeds of ``xk`` and ``yk`` per knob, leaving out knobs where any sample of any
    seed diverged (their values are astronomically far off; the tables list them)."""
    fr = P.Front.from_dict(fr_d)
    X, Y = fr.array(xk), fr.array(yk)
    D = fr.array("diverged") if "diverged" in fr.keys() else np.zeros_like(X)
    keep = [i for i in range(len(fr.knobs)) if np.nansum(D[i]) == 0 and np.isfinite(X[i]).all()
            and np.isfinite(Y[i]).all()]
    cx = np.array([P.mean_ci(X[i]) for i in keep]).reshape(-1, 2)
    cy = np.array([P.mean_ci(Y[i]) for i in keep]).reshape(-1, 2)
    return fr, cx, cy


def figure(data: dict):
    """Fronts with 95% CIs for both models and the matched levels, the mechanism per timestep and the
    W ablation; everything from the json. Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    su, se = data["studies"]["unet"], data["studies"]["exact"]
    r_star = su["levels"]["p* reward"]["value"]
    r0 = su["world"]["config"]["E_p0[r]"]
    x_lo = r0 - 0.5 * (r_star - r0)                 # the view: from below p_0's reward to r = 0 (its max)

    def window(ax, pts, log=False):
        """y-limits from the plotted means whose x lies in the view (diverging knobs fall outside)."""
        ys = [y for x, y in pts if x_lo <= x <= 0 and np.isfinite(y) and (y > 0 or not log)]
        if ys:
            lo, hi = min(ys), max(ys)
            if log:
                ax.set_ylim(lo / 2, hi * 2)
            else:
                pad = 0.1 * (hi - lo + 1e-9)
                ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlim(x_lo, 0)

    with plt.rc_context({"font.size": 10, "axes.titlesize": 11, "legend.fontsize": 9, "xtick.labelsize": 9, "ytick.labelsize": 9}):
        fig, axes = plt.subplots(2, 4, figsize=(22, 10.5), dpi=110)
        for ax, d, title in ((axes[0, 0], su, "learned UNet"), (axes[0, 1], se, "exact eps*")):
            pts = []
            for name, fr_d in d["fronts"]["eval"].items():
                fr, cx, cy = _front_xy(fr_d, "target", "loglik")
                pts += list(zip(cx[:, 0], cy[:, 0]))
                single = fr.knob is None
                ax.errorbar(cx[:, 0], cy[:, 0], xerr=cx[:, 1], yerr=cy[:, 1], color=COLORS.get(name),
                            marker="s" if single else "o", ms=5 if single else 3, lw=1, capsize=1.5,
                            ls="none" if single else "-", label=name)
            fl = d["floor"]["eval"]
            window(ax, pts)
            ax.text(0.02, 0.98, f"exact p* samples: reward {np.mean(fl['target']):.2f}, log p_0 "
                    f"{np.mean(fl['loglik']):.0f}\n(off the chart: the 25-step samplers are over-concentrated)",
                    transform=ax.transAxes, ha="left", va="top", fontsize=9, color="0.3",
                    bbox=dict(fc="white", ec="none", alpha=0.8))
            ax.axvline(r_star, color="grey", ls=":", lw=1)
            ax.text(r_star, ax.get_ylim()[0], " E_p*[r]", rotation=90, va="bottom", fontsize=9, color="grey")
            ax.set(xlabel="target reward (mean)", ylabel="mean log p_0 (exact)", title=f"fronts, {title}")
            ax.grid(alpha=0.25)
        axes[0, 0].legend(loc="lower left")
        ax = axes[0, 2]
        pts = []
        for tag, d, ls in (("UNet", su, "-"), ("exact", se, "--")):
            for name, fr_d in d["fronts"]["eval"].items():
                fr, cx, cy = _front_xy(fr_d, "target", "ed_pstar")
                pts += list(zip(cx[:, 0], cy[:, 0]))
                ax.errorbar(cx[:, 0], cy[:, 0], xerr=cx[:, 1], yerr=cy[:, 1], color=COLORS.get(name),
                            marker="s" if fr.knob is None else "o", ms=3, lw=1, capsize=1.5,
                            ls="none" if fr.knob is None else ls, label=f"{name}" if tag == "UNet" else None)
        ed_floor = float(np.mean(su["floor"]["eval"]["ed_pstar"]))
        ax.axhline(ed_floor, color="gold", lw=1.5, label="exact p* floor")
        window(ax, pts + [(r_star, abs(ed_floor))], log=True)
        ax.axvline(r_star, color="grey", ls=":", lw=1)
        ax.set(xlabel="target reward (mean)", ylabel="energy distance to exact p* (lower = better)",
               yscale="log", title="distance to the exact target (solid: UNet, dashed: eps*)")
        ax.grid(alpha=0.25)
        ax.legend(loc="upper right", fontsize=9)
        ref = data["reference_profile"]
        for ax, key, lab in ((axes[1, 0], "gap", "median ||eps_theta - eps*||^2 / N at the queried x_t"),
                             (axes[1, 1], "perp_ratio", "median complement energy / (v_t (N - 64)) of x_t")):
            ref_y = [r[key + "_median"] for r in ref]
            ax.plot([r["t"] for r in ref], ref_y, "k--", lw=1.5, label="genuine p_t draws")
            cap = 1e3 * max(ref_y) if key == "gap" else 3.0       # curves beyond it would flatten the others
            shown = list(ref_y)
            for name, m in data["mechanism"]["unet"].items():
                ys = [r[key + "_median"] for r in m["steps"]]
                far = not all(np.isfinite(y) and y <= cap for y in ys)
                shown += [] if far else ys
                ax.plot([r["t"] for r in m["steps"]], ys, color=COLORS.get(name, "grey"), marker=".", lw=1,
                        label=f"{name} (off the chart: up to {np.nanmax(ys):.2g})" if far else name,
                        ls=":" if "exact-tilt" in name else "-")
            lo, hi = min(shown), max(shown)
            ax.set_ylim(*((lo / 2, hi * 2) if key == "gap" else (0, 1.1 * hi)))
            ax.set(xlabel="timestep t (sampling runs right to left)", ylabel=lab,
                   title="along the trajectories at the p* reward (UNet)")
            ax.invert_xaxis()
            ax.grid(alpha=0.25)
        axes[1, 0].set_yscale("log")
        axes[1, 1].axhspan(1 - 2 * 0.046, 1 + 2 * 0.046, color="gold", alpha=0.3, label="genuine ± 2 SD")
        axes[1, 1].legend(fontsize=9)
        ax = axes[1, 2]
        names = list(data["ablation"])
        vals = [data["ablation"][k]["at_level"]["target"] for k in names]

        cis = [P.mean_ci([v for v in vs if v is not None and np.isfinite(v)]) if any(
            v is not None and np.isfinite(v) for v in vs) else (np.nan, np.nan) for vs in vals]
        y = np.arange(len(names))
        ax.errorbar([c[0] for c in cis], y, xerr=[0 if not np.isfinite(c[1]) else c[1] for c in cis], ls="none",
                    marker="o", color="tab:red", capsize=2)
        labels = []
        for k in names:
            cw = [v for v in data["ablation"][k]["at_level"]["cos_wg"] if v is not None and np.isfinite(v)]
            ed = [v for v in data["ablation"][k]["at_level"]["ed_pstar"] if v is not None and np.isfinite(v)]
            labels.append(f"{k}\ncos(W(g), g) {np.mean(cw):.2f}, ED to p* {np.mean(ed):.3f}" if cw and ed else k)
        ax.set_yticks(y, labels, fontsize=9)
        ax.invert_yaxis()
        ax.set(xlabel="target reward at matched effective step", title="W ablation (UNet)")
        ax.grid(alpha=0.25, axis="x")
        gr = data.get("gradients", [])
        if gr:
            ts = [r["t"] for r in gr]
            ax = axes[0, 3]
            ax.plot(ts, [r["norm_ratio"] for r in gr], "k.-", label="median ||g_theta|| / ||g*||")
            ax.plot(ts, [r["x0_rms_err"] for r in gr], ".-", color="tab:brown", label="RMS error of x0_hat")
            ax.axhline(1, color="grey", lw=0.8, ls=":")
            ax.set(yscale="log", xlabel="timestep t", title="reward gradient through the UNet vs through eps*")
            ax.invert_xaxis()
            ax.legend(fontsize=9)
            ax.grid(alpha=0.25)
            ax = axes[1, 3]
            ax.plot(ts, [r["cos"] for r in gr], "k.-", label="cos(g_theta, g*)")
            ax.plot(ts, [r["cos_W"] for r in gr], ".-", color="tab:red", label="cos(W(g_theta), g*)")
            ax.plot(ts, [r["cos_W_exact"] for r in gr], ".--", color="tab:pink", label="cos(W(g*), g*)")
            ax.set(ylim=(-0.05, 1.05), xlabel="timestep t", ylabel="cosine",
                   title="direction of the guidance signal (genuine p_t draws)")
            ax.invert_xaxis()
            ax.legend(fontsize=9)
            ax.grid(alpha=0.25)
        else:
            axes[0, 3].axis("off"), axes[1, 3].axis("off")
        fig.tight_layout()
    return fig
