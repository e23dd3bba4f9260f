r"""Beyond the paper, measured: NTRK as an exact SMC proposal, a cheaper guided step, a strength that stops.

Three studies on any protocol ``World`` whose ``context`` carries ``schedule``, ``reward`` and (where
the target has one) ``beta`` (the 2-D worlds of ``toy2d``; the learned-versus-exact world of
``embedded``; the trained UNet): each is a ``protocol.run_study`` (fronts over knob grids, levels
stated in advance, paired verdicts over evaluation seeds), written to ``results/beyond_*``.

1. **NTRK-SMC** (``smc_study``). SMC with the incremental weight
   ``exp((r(x0_hat_{t-1}) - r(x0_hat_t)) / beta) * p_base(x_{t-1}|x_t) / q(x_{t-1}|x_t)``
   (``sampling.smc``; the ratio in closed form, ``kernels``) targets ``p_base exp(r / beta)`` whatever the
   proposal ``q``. Proposals: the base kernel, NTRK (``kappa_t`` falling linearly), NTRK with the
   matched strength (``strength.TiltMatched``), DPS; and, as the demonstration of the bug ``smc()``
   had, NTRK without the correction (``Uncorrected``). The proposal knob is chosen on the tuning seeds
   at 4 particles (lowest energy distance to ``p*``); then the front over the number of particles
   (``P = 1 .. 32``: 25 .. 800 NFE) is compared at 100 and 500 NFE with SVDD (soft selection at the
   target's temperature, ``K`` candidates). A second, finer schedule (``convergence``: 100 steps, where
   the base sampler's own law is within the floor of ``p_0``) shows the limit ``P -> inf`` reaching
   ``p*`` itself.
2. **The cheap guided step** (``cheap_study``, ``cost_split``): ``grad="cheap"`` takes
   ``g_t ≈ grad_{x0} r(x0_hat) / a_t`` without back-propagating through the denoiser. Fronts of NTRK,
   NTRK-matched and DPS with the full and the cheap gradient; the cost split of one guided evaluation
   (denoiser forward, denoiser backward, reward forward + backward) by interleaved timing, medians.
3. **A strength that knows when to stop** (``strength_study``): NTRK with constant, linearly falling
   and matched ``kappa_t`` (``TiltMatched``: ``kappa_t = c sigma_t ||g_t|| / beta`` under norm matching)
   against DPS, with the matched strength's derived, untuned point ``c = 1`` alongside.

``python -m ntrk_minimal.bench --task beyond`` runs every study the installed worlds allow.
"""
from __future__ import annotations

import math
import statistics
import time
from functools import partial
from pathlib import Path

import torch

from .. import bench as P, whitening
from ..adapters import flux, sd
from ..adapters.aesthetic import load_tiny_aesthetic
from ..bench import methods as M
from ..kernels import Base, denoise, guided_eval
from ..worlds import embedded, toy2d, trained

__all__ = ["Uncorrected", "run_base", "run_dps", "run_ntrk", "run_matched", "run_smc", "run_svdd",
           "smc_methods", "smc_study", "cheap_methods", "cheap_study", "strength_methods", "strength_study",
           "cost_split", "interleaved_wall", "WORLDS", "make_world", "run_benchmark"]

NTRK_SMC_LIMIT = 1.3        # linear-decay kappa_0 <= 1.3 in 2-D: rho_0 = kappa^2 / 2 <= 0.85 (an SMC proposal needs rho < 1)


# ---- methods: the table's (bench.methods), with what these studies record ---------------------------------
run_base = M.base
#: DPS, lambda_t = scale sigma_t^2 / beta; NTRK, rho_t = kappa_t^2 / N (decay: constant or linear); NTRK with the
#: matched strength TiltMatched(scale, beta): a run whose reward gradient stops being finite is a missing point
run_dps = partial(M.dps, on_diverge="nan", diagnostics=("diverged_run",))
run_ntrk = partial(M.ntrk, on_diverge="nan", diagnostics=("diverged_run",))
run_matched = partial(M.ntrk_matched, on_diverge="nan", diagnostics=("kappa_mean", "clipped", "diverged_run"))
#: SMC at the target's temperature temp * beta (proposal: base / ntrk / matched / dps), with its mean ESS / P
run_smc = partial(M.smc, diagnostics=("ess",))
#: SVDD, soft selection k ∝ exp(r_k / (temp beta))
run_svdd = partial(M.svdd, mode="soft")
Uncorrected = M.Uncorrected


def nan_safe(world):
    """``world`` whose ``evaluate`` returns NaN for every metric when the samples are not finite (or its
    evaluator raises ``FloatingPointError`` on them), so a diverged point is missing, not a crash."""
    import dataclasses

    inner = world.evaluate
    keys = [k for k, m in world.metrics.items()]

    def evaluate(x0, seed):
        if not torch.isfinite(x0).all():
            return {k: float("nan") for k in keys if k not in ("nfe", "backward", "wall_s", "model_s")}
        return inner(x0, seed)

    return dataclasses.replace(world, evaluate=evaluate)


# ---- 1. NTRK-SMC ---------------------------------------------------------------------------------------
PARTICLES = [1, 2, 3, 4, 6, 8, 11, 16, 23, 32]          # 25 .. 800 NFE at 25 steps
CANDIDATES = [1, 2, 3, 4, 6, 8, 11, 16, 23, 32]


def _proposal_tuning_methods(kappa_limit: float, points: int = 9) -> list:
    kappas = P.geometric_grid(kappa_limit / 16, kappa_limit, points)
    return [
        P.Method("smc-4 (ntrk)", run_smc, "knob", kappas, budget=100, limit=(0.0, kappa_limit),
                 limit_notes=("(the base proposal)", f"(the largest kappa_0 tried: rho_0 < 1)"),
                 fixed={"num_particles": 4, "proposal": "ntrk"}),
        P.Method("smc-4 (ntrk, matched)", run_smc, "knob", P.geometric_grid(1 / 16, 4.0, points), budget=100,
                 limit=(0.0, None), limit_notes=("(the base proposal)", ""),
                 fixed={"num_particles": 4, "proposal": "matched"}),
        P.Method("smc-4 (dps)", run_smc, "knob", P.geometric_grid(1 / 16, 4.0, points), budget=100,
                 limit=(0.0, None), limit_notes=("(the base proposal)", ""),
                 fixed={"num_particles": 4, "proposal": "dps"}),
    ]


def tune_proposals(world, n: int, tuning_seeds, kappa_limit: float = NTRK_SMC_LIMIT, progress=False,
                   points: int = 9) -> dict:
    """Each proposal's knob at its lowest ``world.fidelity`` with 4 particles, on the tuning seeds only.
    Returns ``{proposal: {"knob", "where", "front"}}``."""
    out = {}
    for m in _proposal_tuning_methods(kappa_limit, points):
        fr = P.front(world, m, list(tuning_seeds), n, x_key=world.fidelity, level="min", progress=progress)
        knob, where = P.pick(fr, world.fidelity, "min")
        out[m.fixed["proposal"]] = {"knob": float(knob), "where": where, "front": fr.to_dict()}
    return out


def smc_methods(knobs: dict, particles=PARTICLES, candidates=CANDIDATES, uncorrected=True) -> list:
    """Fronts over the number of particles (knob ``num_particles``) with each proposal's knob fixed."""
    Pm = lambda name, **fx: P.Method(name, run_smc, "num_particles", particles, budget="25 P", integer=True,
                                     limit=(1, math.inf), limit_notes=("(the proposal alone)", "(exact p_base tilt)"),
                                     fixed=fx, min_points=min(8, len(particles)))
    ms = [Pm("smc (base)", proposal="base"),
          Pm("smc (ntrk)", proposal="ntrk", knob=knobs["ntrk"]),
          Pm("smc (ntrk, matched)", proposal="matched", knob=knobs["matched"]),
          Pm("smc (dps)", proposal="dps", knob=knobs["dps"])]
    if uncorrected:
        ms.append(Pm("smc (ntrk, uncorrected)", proposal="ntrk", knob=knobs["ntrk"], correct=False))
    ms.append(P.Method("svdd-soft", run_svdd, "num_candidates", candidates, budget="1 + 24 K", integer=True,
                       limit=(1, math.inf), limit_notes=("(the base sampler)", "(exact local tilt)"),
                       min_points=min(8, len(candidates))))
    return ms


def smc_levels_comparisons(fid: str = "ed_pstar", nfes=(100, 500)):
    C = P.Comparison
    levels = [P.Level(f"{v} NFE", "nfe", float(v), f"{v} denoiser evaluations per sample "
                      f"({v // 25} particles at 25 steps)") for v in nfes]
    comps = []
    for v in nfes:
        L = f"{v} NFE"
        comps += [C(f"{fid} at {v} NFE: SMC (ntrk) vs SMC (base)", L, fid, "smc (ntrk)", "smc (base)"),
                  C(f"{fid} at {v} NFE: SMC (ntrk) vs SMC (dps)", L, fid, "smc (ntrk)", "smc (dps)"),
                  C(f"{fid} at {v} NFE: SMC (ntrk) vs SVDD", L, fid, "smc (ntrk)", "svdd-soft"),
                  C(f"{fid} at {v} NFE: SMC (ntrk, matched) vs SMC (base)", L, fid, "smc (ntrk, matched)",
                    "smc (base)"),
                  C(f"{fid} at {v} NFE: corrected vs uncorrected NTRK-SMC", L, fid, "smc (ntrk)",
                    "smc (ntrk, uncorrected)")]
    return levels, comps


def smc_study(world, n: int, tuning_seeds=(1000, 1001, 1002), eval_seeds=range(5), progress=False,
              particles=PARTICLES, candidates=CANDIDATES, nfes=(100, 500), kappa_limit=None, config=None,
              tuning_points: int = 9) -> dict:
    """Stage 1 ``tune_proposals`` (4 particles, tuning seeds); stage 2 the particle fronts through
    ``run_study``. The stage-1 fronts and knobs are stored under ``data["proposal_tuning"]``.
    ``kappa_limit``: the NTRK proposal's largest ``kappa_0`` (default 1.3 in 2-D, where ``rho_0 = kappa^2/2``
    must stay below 1; 8 otherwise); ``tuning_points``: the size of each proposal's stage-1 knob grid."""
    N = int(math.prod(world.sample_shape))
    kappa_limit = kappa_limit or (NTRK_SMC_LIMIT if N == 2 else 8.0)
    tuned = tune_proposals(world, n, tuning_seeds, kappa_limit=kappa_limit, progress=progress, points=tuning_points)
    knobs = {k: v["knob"] for k, v in tuned.items()}
    levels, comps = smc_levels_comparisons(world.fidelity, nfes)
    data = P.run_study(world, smc_methods(knobs, particles, candidates), levels, comps, n=n,
                       tuning_seeds=tuning_seeds, eval_seeds=eval_seeds, progress=progress,
                       cost_reference="smc (base)", config=config)
    data["proposal_tuning"] = P.clean(tuned)
    return data


def convergence(world, n: int, seeds, particles=(1, 2, 4, 8, 16, 32, 64), knob=None, progress=False) -> dict:
    """Energy distance to ``p*`` against the number of particles for base-, NTRK- and uncorrected
    NTRK-SMC on a (finer) world, on ``seeds``; ``knob``: the NTRK proposal's kappa (linear decay).
    Returns ``{method: Front dict}`` and the floor."""
    ms = smc_methods({"ntrk": knob, "matched": 1.0, "dps": 1.0}, particles=list(particles))
    keep = ("smc (base)", "smc (ntrk)", "smc (ntrk, uncorrected)")
    fronts = {m.name: P.front(world, m, list(seeds), n, progress=progress).to_dict() for m in ms if m.name in keep}
    floor = [world.floor(n, s) for s in seeds]
    return {"fronts": fronts, "floor": {k: [f[k] for f in floor] for k in floor[0]}, "n": n, "seeds": list(seeds),
            "num_steps": world.context.schedule.num_steps, "kappa": knob}


def fine_grids(N: int, ratio_log2: float = 0.25) -> dict:
    """Knob grids with one common ratio ``2^ratio_log2`` for every knobbed method (a coarser grid for one
    method biases its optimum and its interpolated values: compare fronts at equal resolution):
    NTRK ``kappa`` from ``sqrt(N)`` down to ``sqrt(N) / 16``, matched ``c`` in [1/8, 2], DPS ``scale`` in [1/8, 4]."""
    k = int(round(4 / ratio_log2))
    kmax = math.sqrt(N)
    return {"kappas": [kmax * 2 ** (-j * ratio_log2) for j in range(k, -1, -1)],
            "scales": P.geometric_grid(1 / 8, 2.0, int(round(4 / ratio_log2)) + 1),
            "dps_scales": P.geometric_grid(1 / 8, 4.0, int(round(5 / ratio_log2)) + 1)}


# ---- 2. the cheap guided step --------------------------------------------------------------------------
def _method(name: str, N: int, grids: dict, grad: str = "full") -> P.Method:
    """One of the named methods of studies 2 and 3 (``grad``: full or cheap gradient; " cheap" suffix)."""
    kmax = math.sqrt(N)
    kappas = grids.get("kappas") or [kmax * 2 ** (-j / 2) for j in range(7, -1, -1)]
    scales = grids.get("scales") or P.geometric_grid(1 / 8, 2.0, 9)
    dps_scales = grids.get("dps_scales") or P.geometric_grid(1 / 8, 4.0, 11)
    base_l = ("(the base sampler)", "")
    sfx = "" if grad == "full" else " cheap"
    if name in ("ntrk (linear)", "ntrk (constant)"):
        decay = name[6:-1]
        return P.Method(name + sfx, run_ntrk, "kappa", kappas, budget=25, limit=(0.0, kmax),
                        limit_notes=("(the base sampler)", "(rho_0 = 1)" if decay == "linear" else "(rho_t = 1)"),
                        fixed={"decay": decay, "grad": grad})
    if name == "ntrk (matched)":
        return P.Method(name + sfx, run_matched, "scale", scales, budget=25, limit=(0.0, None), limit_notes=base_l,
                        fixed={"grad": grad})
    if name == "ntrk (matched, c = 1)":
        return P.Method(name + sfx, run_matched, budget=25, fixed={"scale": 1.0, "grad": grad})
    if name == "dps":
        return P.Method(name + sfx, run_dps, "scale", dps_scales, budget=25, limit=(0.0, None), limit_notes=base_l,
                        fixed={"grad": grad})
    if name == "base":
        return P.Method("base", run_base, budget=25)
    raise ValueError(f"unknown method {name!r}")


def cheap_methods(N: int, decay: str = "linear", **grids) -> list:
    """NTRK (``decay``), NTRK (matched) and DPS, each with the full and the cheap gradient (same grids)."""
    names = (f"ntrk ({decay})", "ntrk (matched)", "dps")
    return [_method("base", N, grids)] + [_method(m, N, grids, g) for g in ("full", "cheap") for m in names]


def cheap_levels_comparisons(world, decay: str = "linear", reward_level=None):
    """Levels: each method's best fidelity; the target reward ``reward_level`` (default: the full NTRK's
    reward at its best fidelity, tuning seeds). Comparisons: cheap vs full for each method."""
    fid, tgt = world.fidelity, world.target
    nt_ = f"ntrk ({decay})"
    rl = reward_level if reward_level is not None else (lambda st: st.value_at(nt_, "best", tgt))
    levels = [P.Level("best", fid, "min", f"each method at its own best {fid} (knob chosen on the tuning seeds)"),
              P.Level("reward", tgt, rl, "the target reward " + ("stated by the world" if reward_level is not None
                      else "of the full-gradient NTRK at its best fidelity (tuning seeds)"))]
    C = P.Comparison
    comps = []
    for m in (nt_, "ntrk (matched)", "dps"):
        comps += [C(f"best {fid}: {m} cheap vs full", "best", fid, f"{m} cheap", m),
                  C(f"{fid} at the reward level: {m} cheap vs full", "reward", fid, f"{m} cheap", m)]
    return levels, comps


def cheap_study(world, n: int, tuning_seeds=(1000, 1001, 1002), eval_seeds=range(5), progress=False,
                reward_level=None, config=None, decay="linear", wall_reps: int = 5, **grids) -> dict:
    """``run_study`` of ``cheap_methods``; then each method's whole-trajectory wall time at its best-fidelity
    knob by ``interleaved_wall`` (``wall_reps`` rounds; the fronts' own ``wall_s`` are sequential runs),
    stored under ``data["interleaved_wall"]``."""
    levels, comps = cheap_levels_comparisons(world, decay, reward_level)
    methods = cheap_methods(int(math.prod(world.sample_shape)), decay, **grids)
    data = P.run_study(world, methods, levels, comps, n=n, tuning_seeds=tuning_seeds, eval_seeds=eval_seeds,
                       progress=progress, config=config)
    picks = data["picks"].get("best", {})
    runs = {m.name: (m.run, {**m.fixed, **({m.knob: picks[m.name]} if m.knob else {})}) for m in methods
            if m.knob is None or picks.get(m.name) is not None}
    data["interleaved_wall"] = {"per_sample_s": interleaved_wall(world, runs, n, reps=wall_reps), "n": n,
                                "reps": wall_reps, "knobs": {k: picks.get(k) for k in runs},
                                "how": "each method at its best-fidelity knob (tuning seeds), rounds rotated, medians"}
    return data


def _timer(sync):
    def t(fn):
        if sync is not None:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        return time.perf_counter() - t0
    return t


def cost_split(model, reward, schedule, x_t: torch.Tensor, i: int | None = None, reps: int = 15,
               sync=None, whiten=None) -> dict:
    """Seconds (medians over ``reps`` interleaved rounds) of the pieces of one step on the batch ``x_t``:

    ``base_step`` (one NFE and the noise), ``den_fwd`` (denoiser forward, no graph), ``den_fwd_graph``
    (forward recording the graph), ``den_bwd`` (the vector-Jacobian product through the denoiser and
    Tweedie alone), ``rew_fb`` (reward forward + backward at ``x0_hat``), ``guided_full``
    (``reward_grad(grad="full")``), ``guided_cheap`` (``grad="cheap"``), ``w`` (the whitening ``W(g)``).
    Every round runs each piece once, in an order rotated per round (so drifts in machine load hit all
    pieces alike). ``i``: the step (default the middle one).
    """
    i = schedule.num_steps // 2 if i is None else int(i)
    whiten = whiten or whitening.whiten
    x_t = x_t.detach()
    with torch.no_grad():
        _, x0_ref = denoise(model, x_t, i, schedule)
    g_ref = guided_eval(model, reward, x_t, i, schedule, "full")[2]
    gen = torch.Generator(device=x_t.device).manual_seed(0)

    def fwd():
        with torch.no_grad():
            denoise(model, x_t, i, schedule)

    def fwd_graph():
        with torch.enable_grad():
            x = x_t.clone().requires_grad_(True)
            denoise(model, x, i, schedule)

    graph = {}

    def prep_bwd():
        with torch.enable_grad():
            x = x_t.clone().requires_grad_(True)
            graph["x"], graph["x0"] = x, denoise(model, x, i, schedule)[1]

    def bwd():
        torch.autograd.grad(graph["x0"], graph["x"], torch.ones_like(graph["x0"]))

    def rew_fb():
        with torch.enable_grad():
            x0 = x0_ref.detach().clone().requires_grad_(True)
            torch.autograd.grad(reward(x0).sum(), x0)

    pieces = {"base_step": lambda: Base().step(model, x_t, i, schedule, gen),
              "den_fwd": fwd, "den_fwd_graph": fwd_graph, "den_bwd": bwd, "rew_fb": rew_fb,
              "guided_full": lambda: guided_eval(model, reward, x_t, i, schedule, "full"),
              "guided_cheap": lambda: guided_eval(model, reward, x_t, i, schedule, "cheap"),
              "w": lambda: whiten(g_ref)}
    timer = _timer(sync)
    names = list(pieces)
    for nm in names:                                       # warm-up
        if nm == "den_bwd":
            prep_bwd()
        pieces[nm]()
    times = {nm: [] for nm in names}
    for r in range(reps):
        order = names[r % len(names):] + names[:r % len(names)]
        for nm in order:
            if nm == "den_bwd":
                prep_bwd()                                 # the forward it needs is not timed
            times[nm].append(timer(pieces[nm]))
    med = {nm: statistics.median(v) for nm, v in times.items()}
    b = med["base_step"]
    return {"seconds": med, "batch": int(x_t.shape[0]), "step": i, "reps": reps,
            "vs_base": {nm: v / b for nm, v in med.items()},
            "cheap_over_full": med["guided_cheap"] / med["guided_full"],
            "share_of_full": {"denoiser forward": med["den_fwd_graph"] / med["guided_full"],
                              "denoiser backward": med["den_bwd"] / med["guided_full"],
                              "reward forward + backward": med["rew_fb"] / med["guided_full"]}}


def interleaved_wall(world, runs: dict, n: int, seed: int = 0, reps: int = 5) -> dict:
    """Whole-trajectory wall seconds per sample of ``runs = {name: (run_fn, kwargs)}``, interleaved
    (each round runs every entry once, rotated), medians over ``reps`` rounds."""
    names = list(runs)
    times = {nm: [] for nm in names}
    sync = getattr(world, "sync", None)
    timer = _timer(sync)
    for r in range(reps + 1):
        order = names[r % len(names):] + names[:r % len(names)]
        for nm in order:
            fn, kw = runs[nm]
            x_T, g = world.start(seed, n)
            t = timer(lambda: fn(world, x_T, g, **kw))
            if r > 0:                                      # round 0 is the warm-up
                times[nm].append(t / n)
    return {nm: statistics.median(v) for nm, v in times.items()}


# ---- 3. a strength that knows when to stop -------------------------------------------------------------
def strength_methods(N: int, **grids) -> list:
    return [_method(m, N, grids) for m in ("base", "dps", "ntrk (linear)", "ntrk (constant)", "ntrk (matched)",
                                            "ntrk (matched, c = 1)")]


def strength_comparisons(fid: str) -> list:
    C = P.Comparison
    M = "ntrk (matched)"
    comps = []
    for lv, what in (("best", f"best {fid}"), ("reward", f"{fid} at the reward level")):
        comps += [C(f"{what}: matched vs constant kappa", lv, fid, M, "ntrk (constant)"),
                  C(f"{what}: matched vs linear kappa", lv, fid, M, "ntrk (linear)"),
                  C(f"{what}: matched vs DPS", lv, fid, M, "dps")]
    comps.append(C(f"{fid}: matched at c = 1 (untuned) vs DPS at its best", "best", fid, "ntrk (matched, c = 1)", "dps"))
    return comps


def strength_levels_comparisons(world, reward_level=None):
    fid, tgt = world.fidelity, world.target
    rl = reward_level if reward_level is not None else (lambda st: st.value_at("dps", "best", tgt))
    levels = [P.Level("best", fid, "min", f"each method at its own best {fid} (knob chosen on the tuning seeds)"),
              P.Level("reward", tgt, rl, "the target reward " + ("stated by the world (the exact p*'s)"
                      if reward_level is not None else "of DPS at its best fidelity (tuning seeds)"))]
    return levels, strength_comparisons(fid)


def strength_study(world, n: int, tuning_seeds=(1000, 1001, 1002), eval_seeds=range(5), progress=False,
                   reward_level=None, config=None, **grids) -> dict:
    levels, comps = strength_levels_comparisons(world, reward_level)
    return P.run_study(world, strength_methods(int(math.prod(world.sample_shape)), **grids), levels, comps, n=n,
                       tuning_seeds=tuning_seeds, eval_seeds=eval_seeds, progress=progress, config=config)


# ---- the learned worlds: one study for both questions (their fronts are the expensive part) ----------
def learned_methods(N: int, decay: str = "constant", **grids) -> list:
    """``cheap_methods`` (NTRK with the world's ``decay``, matched and DPS, full and cheap) plus NTRK with
    the other decay and the matched strength's untuned ``c = 1``."""
    other = "linear" if decay == "constant" else "constant"
    return cheap_methods(N, decay, **grids) + [_method(f"ntrk ({other})", N, grids),
                                               _method("ntrk (matched, c = 1)", N, grids)]


def learned_levels_comparisons(world, decay: str, reward_level=None):
    """Levels: best fidelity; a stated reward (the world's: real data's or p*'s). Comparisons: those of
    ``cheap_levels_comparisons`` and ``strength_comparisons``, and held-out rewards where the world has one."""
    levels, comps = cheap_levels_comparisons(world, decay, reward_level)
    comps += strength_comparisons(world.fidelity)
    if world.heldout is not None:
        C = P.Comparison
        comps += [C(f"held-out reward at the reward level: {m} cheap vs full", "reward", world.heldout, f"{m} cheap", m)
                  for m in (f"ntrk ({decay})", "dps")]
        comps.append(C("held-out reward at the reward level: matched vs DPS", "reward", world.heldout,
                       "ntrk (matched)", "dps"))
    return levels, comps


def learned_study(world, n: int, decay: str, tuning_seeds=(1000, 1001), eval_seeds=range(4), progress=False,
                  reward_level=None, eval_grid="needed", config=None, **grids) -> dict:
    levels, comps = learned_levels_comparisons(world, decay, reward_level)
    return P.run_study(nan_safe(world), learned_methods(int(math.prod(world.sample_shape)), decay, **grids), levels,
                       comps, n=n, tuning_seeds=tuning_seeds, eval_seeds=eval_seeds, progress=progress,
                       eval_grid=eval_grid, config=config)


# ---- worlds ------------------------------------------------------------------------------------------
def _toy(angle):
    def build():
        return toy2d.world(angle_deg=angle)
    return build


def _toy_fine(num_steps=100):
    def build():
        return toy2d.world(num_steps=num_steps)
    return build


def _trained():
    return trained.world()


def _embedded(model):
    def build():
        return embedded.make_world(embedded.embedded_problem(load_learned=model == "unet"), model)
    return build


WORLDS = {"2d": _toy(67.5), "2d-aligned": _toy(90.0), "2d-100": _toy_fine(100), "trained": _trained,
          "embedded-unet": _embedded("unet"), "embedded-exact": _embedded("exact")}
LEARNED = {  # world -> (NTRK decay of its own benchmark, samples per run, reward level key in config)
    "trained": ("constant", 128, "r_real"), "embedded-unet": ("linear", 128, "E_p*[r]"),
    "embedded-exact": ("linear", 128, "E_p*[r]")}


def make_world(name: str):
    if name not in WORLDS:
        raise ValueError(f"unknown world {name!r}; expected one of {sorted(WORLDS)}")
    return WORLDS[name]()


# ---- writing results -------------------------------------------------------------------------------
COLORS = {"base": "k", "dps": "tab:orange", "dps cheap": "tab:orange",
          "ntrk (linear)": "tab:red", "ntrk (linear) cheap": "tab:red",
          "ntrk (constant)": "tab:brown", "ntrk (constant) cheap": "tab:brown",
          "ntrk (matched)": "tab:blue", "ntrk (matched) cheap": "tab:blue", "ntrk (matched, c = 1)": "navy",
          "smc (base)": "k", "smc (ntrk)": "tab:red", "smc (ntrk, matched)": "tab:blue", "smc (dps)": "tab:orange",
          "smc (ntrk, uncorrected)": "tab:pink", "svdd-soft": "tab:green"}
DASHED = {**{m: (0, (4, 2)) for m in COLORS if m.endswith(" cheap")}, "smc (ntrk, uncorrected)": (0, (2, 2))}


def _fid_panel(world_d: dict, x: str, y: str, **kw) -> dict:
    p = {"x": x, "y": y, **kw}
    lo = world_d["metrics"].get(y, {}).get("label", "")
    if "unbiased" in lo or "KID" in lo or "energy" in lo:
        p.setdefault("yscale", "symlog")
        p.setdefault("ylinthresh", 1e-3)
    return p


def write_study(data: dict, kind: str, world_name: str, out_dir, title: str = "") -> str:
    """``results/beyond_<kind>_<world>.{json,md,png}`` through ``protocol.write_results``."""
    w = data["world"]
    fid, tgt = w["fidelity"], w["target"]
    if kind == "smc":
        panels = [_fid_panel(w, "nfe", fid, xscale="log", title="distance to p* vs NFE per sample"),
                  {"x": "nfe", "y": tgt, "xscale": "log", "title": "reward vs NFE"},
                  {"x": "nfe", "y": "ess", "xscale": "log", "title": "mean ESS / P", "methods":
                   [m for m in data["fronts"]["eval"] if m.startswith("smc")]},
                  _fid_panel(w, "wall_s", fid, xscale="log", title="distance to p* vs wall s per sample")]
        keys = [tgt, fid, "ess", "nfe", "wall_s"]
    elif kind == "cheap":
        panels = [_fid_panel(w, tgt, fid, title="fidelity vs reward: full (solid) and cheap (dashed)"),
                  _fid_panel(w, "wall_s", fid, xscale="log", title="fidelity vs wall s per sample")]
        keys = [tgt, fid, "backward", "wall_s"]
    elif kind == "learned":
        panels = [_fid_panel(w, tgt, fid, title="fidelity vs reward: full (solid) and cheap (dashed)",
                             methods=["base"] + [m for m in data["fronts"]["eval"] if "cheap" in m]
                             + [m.replace(" cheap", "") for m in data["fronts"]["eval"] if "cheap" in m]),
                  _fid_panel(w, tgt, fid, title="strengths: constant, linear, matched; DPS",
                             methods=[m for m in data["fronts"]["eval"] if "cheap" not in m]),
                  _fid_panel(w, "wall_s", fid, xscale="log", title="fidelity vs wall s per sample")]
        if w.get("heldout"):
            panels.append({"x": tgt, "y": w["heldout"], "title": "held-out vs target reward"})
        keys = [tgt, fid, w.get("heldout") or tgt, "kappa_mean", "backward", "wall_s"]
    else:
        panels = [_fid_panel(w, tgt, fid, title="fidelity vs reward"),
                  {"x": tgt, "y": "kappa_mean", "title": "matched strength: mean kappa_t",
                   "methods": ["ntrk (matched)", "ntrk (matched, c = 1)"]}]
        keys = [tgt, fid, "kappa_mean", "clipped"]
    keys = [k for k in dict.fromkeys(keys) if k in w["metrics"] or k in ("ess", "kappa_mean", "clipped", "nfe",
                                                                            "wall_s", "backward")]
    data["world"]["metrics"].setdefault("ess", {"label": "mean ESS / P", "higher_is_better": None, "digits": 3})
    data["world"]["metrics"].setdefault("kappa_mean", {"label": "mean kappa_t (matched)", "higher_is_better": None,
                                                       "digits": 3})
    data["world"]["metrics"].setdefault("clipped", {"label": "share clipped at rho_max", "higher_is_better": None,
                                                    "digits": 3})
    stem = Path(out_dir) / f"beyond_{kind}_{world_name}"
    return P.write_results(data, stem, title or f"beyond: {kind} on {w['name']}", panels, colors=COLORS,
                           points_keys=keys, ncols=2, linestyles=DASHED)


# ---- study specifications per world ---------------------------------------------------------------------
DEFAULT_N = {"2d": 1000, "2d-aligned": 1000, "2d-100": 1000, "trained": 128, "embedded-unet": 128,
             "embedded-exact": 128}
CONVERGENCE_KAPPA = 0.5     # the NTRK proposal of the 100-step convergence run (linear decay; rho_0 = 0.125)


def study_spec(world_name: str, study: str, n: int | None = None, seeds: int = 5, tuning: int = 3,
               progress: bool = True, particles=None, ratio_log2: float = 0.25, tuning_points: int = 9) -> dict:
    """``{"config": dict, "run": callable -> json-ready dict}`` of one study on one world (sizes: ``DEFAULT_N``).

    ``particles``: the SMC particle (and SVDD candidate) grid (default ``PARTICLES``; the convergence
    run's default ``(1, 2, 4, 8, 16, 32, 64)``); ``ratio_log2``: the common knob ratio ``2^ratio_log2`` of
    the strength and cheap studies' grids (``fine_grids``); ``tuning_points``: the SMC proposals' stage-1
    grid size. Every size is recorded in the result's ``config``."""
    w = make_world(world_name)
    n = n or DEFAULT_N.get(world_name, 256)
    tune = tuple(range(1000, 1000 + tuning))
    ev = range(seeds)
    cfg = {"world": world_name, "study": study, "n": n, "torch_threads": torch.get_num_threads(),
           "tuning_seeds": list(tune), "eval_seeds": list(ev)}
    r_star = w.config.get("r_star", w.config.get("E_p*[r]"))
    if study == "smc":
        parts = list(particles or PARTICLES)
        cfg.update(particles=parts, candidates=parts, tuning_points=tuning_points)
        return {"config": cfg, "run": lambda: smc_study(w, n, tune, ev, progress, particles=parts, candidates=parts, config=cfg,
                                         tuning_points=tuning_points)}
    N = int(math.prod(w.sample_shape))
    grids = fine_grids(N, ratio_log2)
    if study in ("strength", "cheap"):
        cfg.update(grid_ratio=f"2^{ratio_log2:g}", grids=grids)
    if study == "strength":
        return {"config": cfg, "run": lambda: strength_study(w, n, tune, ev, progress, reward_level=r_star, config=cfg, **grids)}
    if study == "cheap":
        return {"config": cfg, "run": lambda: cheap_study(w, n, tune, ev, progress, reward_level=r_star, config=cfg, decay="linear",
                                           **grids)}
    if study == "convergence":
        parts = tuple(particles or (1, 2, 4, 8, 16, 32, 64))
        cfg.update(particles=list(parts), kappa=CONVERGENCE_KAPPA)
        return {"config": cfg, "run": lambda: {**convergence(w, n, ev, particles=parts, knob=CONVERGENCE_KAPPA,
                                                             progress=progress), "config": cfg}}
    if study == "learned":
        decay, n_default, rkey = LEARNED[world_name]
        cfg["ntrk_decay"] = decay
        return {"config": cfg, "run": lambda: learned_study(w, n, decay, tune, ev, progress, reward_level=w.config.get(rkey),
                                             config=cfg)}
    raise ValueError(f"unknown study {study!r}")


def _cost_inputs(name: str):
    """``(model, reward, schedule, x_t, whiten, description)`` for the cost split of one world."""
    g = torch.Generator().manual_seed(0)
    if name.startswith("2d"):
        w = make_world("2d")
        pb = w.context
        return w.model, pb.reward, pb.schedule, torch.randn(1000, 2, generator=g, dtype=torch.float64), None, \
            "2-D ring, exact isotropic mixture denoiser, quadratic reward, batch 1000"
    if name == "trained":
        pb = trained.trained_problem()
        return pb.model, pb.reward, pb.schedule, torch.randn(64, 1, 16, 16, generator=g), None, \
            "trained 16x16 UNet (0.64M parameters), CNN log-odds reward, batch 64"
    if name == "embedded":
        pb = embedded.embedded_problem()
        return pb.unet, pb.reward, pb.schedule, torch.randn(16, 1, 32, 32, generator=g, dtype=torch.float64), None, \
            "learned-vs-exact world: 32x32 UNet, quadratic reward, batch 16"
    if name in ("sd", "sd-full128"):
        if name == "sd":
            pipe, scorer, hw, what = sd.load_tiny_pipeline(), sd.load_tiny_aesthetic(), None, "tiny SD (random, offline)"
        else:
            pipe, scorer = sd.build_random_pipeline("full"), sd.build_random_scorer("full")
            hw, what = 128, "SD-1.5-sized UNet + VAE + CLIP ViT-L/14 scorer (random weights) at 128 px"
        prob = sd.make_problem(pipe, scorer, ["a photo of a lighthouse"], height=hw, width=hw)
        return prob.model, prob.reward, prob.schedule, prob.x_T(g), None, \
            f"{what}, latent {tuple(prob.latent_shape)}, CFG (2 UNet rows per sample), batch 1"
    if name == "flux":
        prob = flux.make_problem(flux.load_tiny_pipeline(), load_tiny_aesthetic(), ["a photo of a lighthouse"])
        return prob.model, prob.reward, prob.schedule, prob.x_T(g), prob.whiten, \
            f"tiny FLUX (random, offline), latent {tuple(prob.latent_shape)}, batch 1"
    raise ValueError(f"unknown cost world {name!r}")


COST_REPS = {"sd-full128": 5}


def cost_splits(names, path=None, reps: int = 21) -> dict:
    """``cost_split`` for each named world (``2d``, ``trained``, ``embedded``, ``sd``, ``sd-full128``,
    ``flux``); merged into ``path`` (json) when given. A world whose module or weights are missing is
    recorded with the reason instead."""
    out = P.load_json(path) if path is not None and Path(path).exists() else {}
    for nm in names:
        t0 = time.perf_counter()
        try:
            model, reward, sched, x, wh, what = _cost_inputs(nm)
        except (ImportError, FileNotFoundError, OSError, ValueError) as e:
            out[nm] = {"skipped": f"{type(e).__name__}: {e}"}
            continue
        res = cost_split(model, reward, sched, x, reps=COST_REPS.get(nm, reps), whiten=wh)
        res["world"], res["measured_s"] = what, time.perf_counter() - t0
        res["torch_threads"] = torch.get_num_threads()
        out[nm] = res
        if path is not None:
            P.write_json(out, path)
    return out


# ---- summaries (rendered from the stored json, never typed) -------------------------------------------
COST_ORDER = ("2d", "trained", "embedded", "sd", "sd-full128", "flux")


def cost_table(cost: dict) -> str:
    """Markdown: per world the medians of one step's pieces relative to a base step and the shares of
    one full guided evaluation (``cost_split``)."""
    rows = []
    for nm in [k for k in COST_ORDER if k in cost] + [k for k in cost if k not in COST_ORDER]:
        c = cost[nm]
        if "skipped" in c:
            rows.append([nm, "skipped: " + c["skipped"][:80]] + [""] * 7)
            continue
        v, sh = c["vs_base"], c["share_of_full"]
        rows.append([nm, f"{1e3 * c['seconds']['base_step']:.2f}", f"{v['guided_full']:.2f}x",
                     f"{v['guided_cheap']:.2f}x", f"{c['cheap_over_full']:.2f}",
                     f"{sh['denoiser forward']:.0%}", f"{sh['denoiser backward']:.0%}",
                     f"{sh['reward forward + backward']:.0%}", f"{v['w']:.2f}x"])
    return P.markdown_table(["world", "base step ms", "full guided", "cheap guided", "cheap / full",
                             "denoiser fwd", "denoiser bwd", "reward fwd+bwd", "W"], rows)


def _verdicts(data: dict) -> dict:
    return {c["name"]: c["verdict"] for c in data["comparisons"]}


def convergence_table(conv: dict, key: str = "ed_pstar") -> str:
    fr = {k: P.Front.from_dict(v) for k, v in conv["fronts"].items()}
    knobs = next(iter(fr.values())).knobs
    rows = []
    for i, k in enumerate(knobs):
        rows.append([str(int(k))] + [P.fmt_ci(list(f.array(key)[i]), 4) for f in fr.values()])
    rows.append(["floor (exact p* samples)"] + [P.fmt_ci(conv["floor"][key], 4)] * len(fr))
    return P.markdown_table(["particles"] + list(fr), rows)


def write_summary(out_dir) -> str:
    """``results/beyond.md``: the verdict tables of every stored study, the convergence table and the
    cost split, each rendered from its json."""
    out_dir = Path(out_dir)
    parts = ["# Beyond the paper: the measurements\n",
             "Rendered by `python scripts/beyond_studies.py --summary` from the json files beside this one "
             "(each written by `scripts/beyond_studies.py`; protocol: fronts, levels stated in advance, paired "
             "95% t intervals over the evaluation seeds, TOST at the worlds' margins).\n"]
    for kind, title in (("smc", "1. NTRK as an SMC proposal"), ("cheap", "2. The cheap guided step"),
                        ("strength", "3. A strength that knows when to stop"),
                        ("learned", "4. The learned worlds: cheap step and matched strength together")):
        parts.append(f"## {title}\n")
        for f in sorted(out_dir.glob(f"beyond_{kind}_*.json")):
            if f.stem.endswith("_quick"):
                continue
            d = P.load_json(f)
            parts.append(f"### {d['world']['name']} (`{f.name}`, n = {d['n']}, "
                         f"{len(d['seeds']['eval'])} evaluation seeds, {d['wall_time_s']:.0f} s)\n")
            if d.get("config", {}).get("command"):
                parts.append(f"Command: `{d['config']['command']}` ({d['config'].get('torch_threads')} torch thread).\n")
            if d.get("interleaved_wall"):
                iw = d["interleaved_wall"]
                parts.append(f"Interleaved wall time per sample at each method's best knob (n = {iw['n']}, "
                             f"{iw['reps']} rounds, medians), ms: "
                             + ", ".join(f"{k} {1e3 * v:.3f}" for k, v in iw["per_sample_s"].items()) + "\n")
            if kind == "smc":
                knobs = {k: round(v["knob"], 4) for k, v in d["proposal_tuning"].items()}
                parts.append(f"Proposal knobs chosen at 4 particles on the tuning seeds: {knobs}\n")
            parts.append(P.verdict_table(d) + "\n")
        if kind == "smc":
            for f in sorted(out_dir.glob("beyond_convergence_*.json")):
                if f.stem.endswith("_quick"):
                    continue
                c = P.load_json(f)
                parts.append(f"### Convergence to p* ({c['num_steps']} steps, n = {c['n']}, {len(c['seeds'])} seeds, "
                             f"NTRK proposal kappa = {c['kappa']}, {c.get('wall_time_s', float('nan')):.0f} s): "
                             f"energy distance to p*\n")
                if c.get("config", {}).get("command"):
                    parts.append(f"Command: `{c['config']['command']}`.\n")
                parts.append(convergence_table(c) + "\n")
        if kind == "cheap" and (out_dir / "beyond_cost.json").exists():
            parts.append("### Cost split of one guided evaluation (medians of interleaved rounds)\n")
            parts.append(cost_table(P.load_json(out_dir / "beyond_cost.json")) + "\n")
    walls = [P.load_json(f).get("wall_time_s", 0.0) for f in sorted(out_dir.glob("beyond_*_*.json"))
             if not f.stem.endswith("_quick")]
    parts.insert(2, f"Total wall time of the {len(walls)} stored studies: {sum(walls) / 60:.1f} min (one torch thread "
                    f"each, run one after another on a shared machine: wall times include its load).\n")
    text = "\n".join(parts)
    (out_dir / "beyond.md").write_text(text)
    return text


# ---- the benchmark -----------------------------------------------------------------------------------
STUDIES_2D = (("2d", "smc"), ("2d-aligned", "smc"), ("2d", "strength"), ("2d-aligned", "strength"), ("2d", "cheap"))
# the sizes of the committed results (results/beyond.md lists each study's command): n = 500, 2 tuning + 5 eval seeds
# (the stored mode-aligned SMC study ran at n = 300 to fit one session's compute budget; its json says so)
SIZES = {"smc": {"particles": [1, 2, 3, 4, 6, 8, 12, 16, 24], "tuning_points": 8},
         "strength": {"ratio_log2": 0.5}, "cheap": {"ratio_log2": 0.5},
         "convergence": {"particles": [1, 2, 4, 8, 16, 32], "seeds": 3}}


def run_benchmark(out_dir, quick: bool = False, seeds: int = 5) -> str:
    """The studies on the 2-D worlds (``STUDIES_2D``) and the 100-step convergence run at the sizes of
    the committed results (``SIZES``, n = 500, 2 tuning seeds), written to ``out_dir/beyond_<study>_<world>.*``
    (``..._quick`` with ``quick``: 200 samples, 3 evaluation seeds). About 35 min on one busy CPU thread; the
    learned worlds' studies and the cost split: ``scripts/beyond_studies.py``."""
    torch.set_num_threads(1)
    n, seeds = (200, 3) if quick else (500, seeds)
    sfx = "_quick" if quick else ""
    texts = []
    for world_name, study in STUDIES_2D:
        t0 = time.perf_counter()
        data = study_spec(world_name, study, n=n, seeds=seeds, tuning=2, **SIZES[study])["run"]()
        data["wall_time_s"] = time.perf_counter() - t0
        md = write_study(data, study, world_name + sfx, out_dir,
                         title=("QUICK SMOKE RUN: " if quick else "") + f"beyond: {study} on {data['world']['name']}")
        texts.append(P.verdict_table(data))
    t0 = time.perf_counter()
    sz = dict(SIZES["convergence"])
    conv = study_spec("2d-100", "convergence", n=n, seeds=min(seeds, sz.pop("seeds")), **sz)["run"]()
    conv["wall_time_s"] = time.perf_counter() - t0
    P.write_json(conv, Path(out_dir) / f"beyond_convergence_2d-100{sfx}.json")
    return "\n\n".join(texts)
