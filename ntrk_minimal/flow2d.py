r"""The exact 2-D flow world: toy2d's ring, reward and exact ``p*`` under the rectified-flow path.

The problem is ``toy2d``'s (8 isotropic modes on a circle of radius 2, std 0.25; quadratic reward
between two modes; ``beta = 0.5``); only the path changes, from variance preserving to the rectified
flow of FLUX / SD3 (docs/METHOD.md section 6)::

    x_t = (1 - t) x_0 + t eps,       a_t = 1 - t,  s_t = t  (diffusers' FlowMatchEulerDiscreteScheduler)
    p_t = sum_k w_k N( a_t mu_k, (a_t^2 s_k^2 + s_t^2) I )            (exact, any t)
    eps* = -s_t grad log p_t,   x0* = (x_t - s_t eps*) / a_t,   v* = eps* - x0*

The target does not depend on the path: ``p* ∝ p_0 exp(r / beta)``, the same closed-form mixture as
in ``toy2d``, and so are the evaluation (energy distance to exact ``p*`` samples, histogram KL, exact
``log p_0``, HDR share), the floor and the TOST margins: ``world`` reuses ``toy2d.world`` and swaps
the model and the schedule. It adds one metric the energy distance cannot see, the within-mode spread
(``spread``: ``E ||x - mu*_k||^2 / (d s*_k^2)`` with ``k`` the nearest component of ``p*``; 0.99 for
exact samples): the stochastic flow sampler shrinks it.

The noise knob. Every kernel takes the DDIM-form step
``x_prev = a_prev x0_hat + sqrt(s_prev^2 - sigma_t^2) eps_hat + sigma_t eta_t``; ``flow_schedule``
builds ``sigma_t = f s_prev`` (``f = noise`` in [0, 1]: 0 = the Euler ODE, where NTRK has nothing to
tilt and equals the base sampler; 1 = diffusers' ``stochastic_sampling=True``) or the DDPM posterior
variance of this path (``noise="ddpm"``, ``ddpm_sigma``). What we measured (``results/flow2d.md``):

* a *fixed fraction* ``f > 0`` injects O(1) noise per step, and the Gaussian reverse kernel is then
  wrong by O(1) per step however many steps one takes: with the exact model the within-mode variance
  of the samples is ~0.5x ``p_0``'s at ``f = 1`` (T = 25 and T = 400 alike) and ~0.92x at ``f = 0.5``;
  the DDPM variance (O(step) noise per step) converges (0.84x at T = 25, 0.975x at T = 400), like the ODE.
* NTRK moves ``sigma_t kappa_t <= f s_prev sqrt(d)`` along ``W(g)`` per step (``rho_t <= 1``); DPS's
  ``lambda_t`` has no such ceiling. NTRK's *reach* (the largest reward on its front) is not monotone in
  ``f``: it vanishes at the ODE, peaks near ``f = 0.25-0.5`` and is smallest at ``f = 1``, where every
  step re-draws the state around ``a_prev x0_hat`` (the ``eps_hat`` term is 0) and a tilt of the noise
  survives only through ``x0_hat``; with ``f < 1`` the deterministic ``sqrt(s_prev^2 - sigma^2) eps_hat``
  term carries it forward.

Two exact facts about guidance on this path (``tests/test_flow2d.py``):

* **The first step has nothing to tilt.** At ``t = 1`` (``a_t = 0``) ``x_t`` carries no signal, so the
  exact ``x0* = E[x_0]`` is constant and ``g_t = grad r(x0*) = 0``; ``W(0) = 0`` and NTRK's
  ``eta_t = sqrt(1 - rho_t) eps`` would inject *less* noise than the base kernel (none at ``rho = 1``).
  ``signal_rho`` sets ``rho_t = 0`` where ``a_t = 0``: the step is the base step.
* **The exact tilt of the DDIM-form mean.** ``p*_t`` is ``p*`` pushed along the same path, and
  ``grad log p*_t = grad log p_t + grad V_t / beta`` (``V_t = beta log E[exp(r(x_0)/beta) | x_t]``).
  Putting the p* model into the step gives ``mu*_t = mu_t + lambda*_t grad V_t`` with
  ``lambda*_t = s_t (a_prev s_t / a_t - sqrt(s_prev^2 - sigma_t^2)) / beta`` (``tilt_lambda``): DPS with
  ``lambda*_t`` and ``g_t = grad V_t`` *is* the base sampler of ``p*``, at any T and any sigma, including
  the ODE (``sigma = 0``, where ``lambda = sigma^2 / beta`` is 0). For the DDPM variance and for
  ``f = 1`` alike, ``sigma_t^2 / (beta lambda*_t) = (a_t / a_prev) (s_prev / s_t)^2``: it tends to 1 as T
  grows, so ``lambda = sigma^2 / beta`` is the T -> infinity limit there (at T = 25 it is 0.5-0.8 of
  ``lambda*`` mid-trajectory); at a fixed ``0 < f < 1`` the ratio tends to ``f^2 / (1 - sqrt(1 - f^2))``
  instead (1.87 at ``f = 0.5``), so the sigma^2 rule does not converge. DPS's ``g_t = grad r(x0_hat)``
  equals ``grad V_t`` exactly when ``p_0`` is Gaussian and ``r`` linear.

``python -m ntrk_minimal.bench --task flow2d`` runs ``run_benchmark``: the protocol at ``f = 1`` with
every method (``main``), then a sweep over ``f`` (and the DDPM variance) with base, DPS (both
coefficients) and NTRK, verdicts per noise level and across noise levels; ``results/flow2d.{json,md,png}``
and ``results/flow2d_sweep.png``.
"""
from __future__ import annotations

import dataclasses
import time
from functools import partial
from pathlib import Path

import torch

from . import paths, bench as P
from . import toy2d
from .bench import methods as M
from .kernels import tweedie
from .sampling import signal_rho, tilt_lambda          # noqa: F401 (this world's two rules, defined in sampling)
from .schedules import Schedule, make_flow_schedule

__all__ = ["ddpm_sigma", "flow_schedule", "FlowMixtureDenoiser", "tilt_lambda", "signal_rho", "flow_problem",
           "world", "methods", "levels", "comparisons", "SWEEP", "SWEEP_METHODS", "sweep_comparisons",
           "across_noise", "spread", "run_benchmark", "report", "sweep_table", "sweep_figure",
           "noise_label", "SPREAD_MARGIN", "RESULTS", "load_results", "COLORS", "MAIN_PANELS", "write"]

RESULTS = paths.RESULTS / "flow2d.json"
SWEEP = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, "ddpm")      # noise levels of the sweep (f, or the DDPM variance)
MAIN_NOISE = 1.0                                 # the main study: diffusers' stochastic sampler
# TOST margin of the spread error |spread - 1|, stated before any method was run: the seed-to-seed SD
# of the spread of 1000 exact p* samples is 0.030 (20 seeds; mean 0.994).
SPREAD_MARGIN = (0.1, "about 3x the seed-to-seed SD (0.030) of the spread of 1000 exact p* samples")


# ---- the path and its noise -----------------------------------------------------------------------------
def ddpm_sigma(schedule: Schedule, eta: float = 1.0) -> torch.Tensor:
    """The DDPM posterior standard deviation of ``q(x_prev | x_t, x_0)`` on the schedule's path:

        sigma_t = eta s_prev sqrt(1 - (a_t s_prev / (a_prev s_t))^2)

    (VP: DDIM's ``eta = 1`` variance). It is O(sqrt(step)): a consistent SDE as T grows. At ``t = 1``
    (``a_t = 0``) it is ``s_prev`` (x_t says nothing about x_prev); at the last step (``s_prev = 0``) 0.
    """
    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta!r}")
    s, a, sp, ap = schedule.s_t, schedule.a_t, schedule.s_prev, schedule.a_prev
    ratio = torch.where(sp > 0, a * sp / (ap * s), torch.zeros_like(s))     # a_t s_prev / (a_prev s_t)
    return float(eta) * sp * (1 - ratio ** 2).clamp_min(0).sqrt()


def flow_schedule(num_steps: int = 25, noise=1.0, shift: float = 1.0) -> Schedule:
    """The rectified-flow grid of ``FlowMatchEulerDiscreteScheduler`` (``shift``) with its noise:
    ``noise = f`` in [0, 1]: ``sigma_t = f s_prev`` (0 = Euler ODE, 1 = ``stochastic_sampling=True``);
    ``noise = "ddpm"``: ``sigma_t = ddpm_sigma`` (the schedule's ``noise`` field is then None)."""
    if noise == "ddpm":
        sched = make_flow_schedule(num_steps, noise=0.0, shift=shift)
        return dataclasses.replace(sched, sigma_t=ddpm_sigma(sched), noise=None)
    if isinstance(noise, str) or not isinstance(noise, (int, float)):
        raise ValueError(f"noise must be a number in [0, 1] or 'ddpm', got {noise!r}")
    return make_flow_schedule(num_steps, noise=float(noise), shift=shift)


def noise_label(noise) -> str:
    """``"f = 0.5"``, ``"DDPM variance"``: how tables name a noise level."""
    return "DDPM variance" if noise == "ddpm" else f"f = {float(noise):g}"


class FlowMixtureDenoiser(toy2d.IsotropicMixtureDenoiser):
    """``toy2d.IsotropicMixtureDenoiser`` (the exact ``eps*`` of an isotropic mixture on any path) with
    ``predict`` and ``velocity``, so it serves the first flow step (``a_t = 0``) too:

        predict: (eps*, x0*),  x0* = (x_t - s_t eps*) / a_t,  and x0* = E[x_0] where a_t = 0
        velocity: v* = eps* - x0*
    """

    def __init__(self, mixture, path):
        super().__init__(mixture, path)
        self.mean = mixture.mean

    def predict(self, x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        a, s = self.coefficients(t)
        eps = self(x_t, t)                                   # eps* = -s_t grad log p_t
        if a == 0.0:           # no signal: the posterior mean is the prior mean (0 * x_t keeps the graph)
            return eps, self.mean.to(x_t.dtype) + 0.0 * x_t
        return eps, tweedie(x_t, eps, a, s)

    def velocity(self, x_t: torch.Tensor, t) -> torch.Tensor:
        eps, x0 = self.predict(x_t, t)
        return eps - x0                                      # v* = eps* - x0*


# ---- guidance strengths on this path ----------------------------------------------------------------------
# ---- the world ----------------------------------------------------------------------------------------------
def flow_problem(noise=1.0, num_steps: int = 25, shift: float = 1.0, **toy_kw) -> toy2d.ToyProblem:
    """``toy2d.toy_problem(**toy_kw)`` (mixture, reward, beta, exact ``p*``) on the flow schedule
    ``flow_schedule(num_steps, noise, shift)`` with the exact ``FlowMixtureDenoiser``."""
    pb = toy2d.toy_problem(num_steps=num_steps, **toy_kw)
    sched = flow_schedule(num_steps, noise, shift)
    return dataclasses.replace(pb, schedule=sched, model=FlowMixtureDenoiser(pb.mixture, sched))


def spread(x0: torch.Tensor, target) -> float:
    """Within-mode spread against ``target``: ``mean ||x - mu_k||^2 / (d s_k^2)``, ``k = argmax_k P(k | x)``
    under ``target`` (isotropic components ``s_k^2 I``). Exact samples: ~0.99 (the hard assignment)."""
    k = target.responsibilities(x0).argmax(1)
    s2 = target.covs[:, 0, 0][k]
    return float((((x0 - target.means[k]) ** 2).sum(1) / (x0.shape[1] * s2)).mean())


def world(noise=MAIN_NOISE, num_steps: int = 25, shift: float = 1.0, n_ref: int = 2000) -> P.World:
    """The flow world at one noise level: ``toy2d.world(n_ref)`` (evaluation, floor, margins, ``r*``)
    with the flow problem as ``context``, its exact model, and two more metrics: ``spread`` (a
    diagnostic) and ``spread_err = |spread - 1|`` (lower is better; margin ``SPREAD_MARGIN``)."""
    base = toy2d.world(n_ref=n_ref, num_steps=num_steps)
    pb = flow_problem(noise, num_steps, shift)
    target = pb.target

    def evaluate(x0, seed):
        out = base.evaluate(x0, seed)
        sp = spread(x0.to(torch.float64), target)
        return {**out, "spread": sp, "spread_err": abs(sp - 1.0)}

    def floor(n, seed):                 # the same exact p* draw as toy2d's floor
        return evaluate(target.sample(n, torch.Generator().manual_seed(30_000 + int(seed))), seed)

    ms = {**base.metrics, "spread": P.Metric("within-mode spread vs p* (exact 0.99)", None),
          "spread_err": P.Metric("|spread - 1|", False)}
    margins = {**base.margins, "spread_err": SPREAD_MARGIN[0]}
    notes = {**base.margin_notes, "spread_err": SPREAD_MARGIN[1]}
    cfg = {**base.config, "path": "rectified flow a_t = 1 - t, s_t = t (FlowMatchEulerDiscreteScheduler, "
           f"shift {shift:g})", "noise": noise, "noise_label": noise_label(noise), "num_steps": num_steps}
    return dataclasses.replace(base, name=f"2-D ring on the rectified-flow path, {noise_label(noise)} (exact p*)",
                               model=pb.model, context=pb, evaluate=evaluate, floor=floor, metrics=ms,
                               margins=margins, margin_notes=notes, config=cfg)


# ---- methods --------------------------------------------------------------------------------------------------
def _ntrk_methods(whiten="W"):
    """NTRK (linear kappa_t), NTRK with W off (norm matching), NTRK with a constant kappa_t; ``whiten``:
    the ``W`` of the first and the last ("W" or "norm_match": in d = 2 they agree to ~1e-15)."""
    lim, kappas = toy2d.NTRK_LIMIT, [toy2d.NTRK_LIMIT * 2 ** (-j / 2) for j in range(7, -1, -1)]
    notes = ("(the base sampler)", "(rho = 1 at the first tilted step)")
    ntrk = partial(M.ntrk, skip_pure_noise=True, diagnostics=toy2d.DIAGNOSTICS, record=True)   # rho_t = 0 at a_t = 0
    return [P.Method("ntrk", ntrk, "kappa", kappas, budget=25, limit=(0.0, lim), limit_notes=notes,
                     fixed={"whiten": whiten}),
            P.Method("ntrk (W off)", ntrk, "kappa", kappas, budget=25, limit=(0.0, lim), limit_notes=notes,
                     fixed={"whiten": "norm_match"}),
            P.Method("ntrk (constant)", ntrk, "kappa", kappas, budget=25, limit=(0.0, lim),
                     limit_notes=("(the base sampler)", "(rho_t = 1)"), fixed={"decay": "constant", "whiten": whiten})]


def _dps_tilt_method():
    return P.Method("dps (tilt)", partial(M.dps, lam="tilt", diagnostics=toy2d.DIAGNOSTICS, record=True), "scale",
                    P.geometric_grid(1 / 16, 8, 8), budget=25, limit=(0.0, None), limit_notes=("(the base sampler)", ""))


def methods(noise=MAIN_NOISE, names=None, whiten="W") -> list:
    """toy2d's methods on this world, NTRK with ``signal_rho`` (``rho_t = 0`` at ``a_t = 0``), plus
    ``dps (tilt)`` (``lambda_t = scale lambda*_t``, ``tilt_lambda``; scale = 1: the exact tilt of the
    step for ``g = grad V``). At ``noise = 0`` (the ODE) only base, ``dps (tilt)`` and best-of-N remain:
    NTRK needs ``sigma_t > 0``, and DPS (``lambda = scale sigma^2 / beta``), SVDD and SMC are the base
    sampler there. ``names``: keep only these (in this order). ``whiten="norm_match"`` runs "ntrk" and
    "ntrk (constant)" with the norm-matched gradient: in d = 2, ``W(g) = g sqrt(d) / ||g||`` to ~1e-15
    (``tests/test_flow2d.py``) at 1/25 of the cost (the sweep uses it; the main study runs W)."""
    ms = [m for m in toy2d.methods() if not m.name.startswith("ntrk")]
    ms = ms[:2] + [_dps_tilt_method()] + _ntrk_methods(whiten) + ms[2:]
    if noise == 0 or noise == 0.0:
        ms = [m for m in ms if m.name in ("base", "dps (tilt)", "best-of-N", "best-of-20")]
    if names is not None:
        by = {m.name: m for m in ms}
        ms = [by[nm] for nm in names if nm in by]
    return ms


def levels(w: P.World) -> list:
    """toy2d's levels (best ED, r*, p*'s distance to p_0, matched effective step, NTRK's wall time)."""
    return toy2d.levels(w)


def comparisons() -> list:
    """toy2d's comparisons plus the exact-tilt DPS against DPS and against NTRK, and the spread error."""
    C = P.Comparison
    return toy2d.comparisons() + [
        C("closest to p*: dps (tilt) vs dps", "best", "ed_pstar", "dps (tilt)", "dps"),
        C("closest to p*: NTRK vs dps (tilt)", "best", "ed_pstar", "ntrk", "dps (tilt)"),
        C("spread at best: NTRK vs DPS", "best", "spread_err", "ntrk", "dps"),
        C("spread at r*: NTRK vs DPS", "r*", "spread_err", "ntrk", "dps"),
    ]


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


def _reach_rows(data: dict) -> list:
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


def report(data: dict) -> str:
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
                               "seeds reaching r*"], _reach_rows(data)), "",
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
    import numpy as np

    from .plotting import DPI, STYLE

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


COLORS = {**toy2d.COLORS, "dps (tilt)": "tab:olive"}
POINT_KEYS = toy2d.POINT_KEYS + ["spread"]
MAIN_PANELS = [{"x": "reward", "y": "ed_pstar", "yscale": "symlog", "ylinthresh": 1e-2,
                "title": "distance to p* vs reward (symlog, linear below 0.01)"},
               {"x": "reward", "y": "ed_pstar", "xlim": (-1.2, -0.1), "ylim": (-0.005, 0.08),
                "title": "zoom: near the target's reward r* (dotted)"},
               {"x": "reward", "y": "spread", "xlim": (-2.0, 0.0), "ylim": (0.0, 2.0),
                "title": "within-mode spread vs reward (exact p*: 0.99)"},
               {"x": "ed_p0", "y": "reward", "title": "reward vs distance to p_0"}]


def write(data: dict, stem) -> str:
    """``stem.json`` (everything), ``stem.md`` (``report``), ``stem.png`` (the main study's fronts) and
    ``stem_sweep.png`` (``sweep_figure``; ``flow2d_sweep_quick.png`` for ``flow2d_quick``), all rendered from
    the stored json; returns the markdown."""
    import matplotlib.pyplot as plt

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    P.write_json(data, stem.with_suffix(".json"))
    data = P.load_json(stem.with_suffix(".json"))
    text = report(data)
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
