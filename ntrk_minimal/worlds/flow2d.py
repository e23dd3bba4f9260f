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

``python -m ntrk_minimal.bench --task flow2d`` runs the study ``studies.flow_noise``: the protocol at
``f = 1`` with every method, then a sweep over ``f`` (and the DDPM variance) with base, DPS (both
coefficients) and NTRK, verdicts per noise level and across noise levels; ``results/flow2d.{json,md,png}``
and ``results/flow2d_sweep.png``.
"""
from __future__ import annotations

import dataclasses
from functools import partial

import torch

from .. import bench as P
from ..bench import methods as M
from ..kernels import tweedie
from ..sampling import signal_rho, tilt_lambda          # noqa: F401 (this world's two rules, defined in sampling)
from ..schedules import Schedule, make_flow_schedule
from . import toy2d

__all__ = ["ddpm_sigma", "flow_schedule", "FlowMixtureDenoiser", "tilt_lambda", "signal_rho", "flow_problem",
           "world", "methods", "levels", "comparisons", "spread", "noise_label", "SPREAD_MARGIN", "MAIN_NOISE",
           "COLORS", "POINT_KEYS", "MAIN_PANELS"]
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
    ntrk = partial(M.ntrk, decay="linear", skip_pure_noise=True, diagnostics=toy2d.DIAGNOSTICS,  # rho_t = 0 at a_t = 0
                   record=True)
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


# ---- how its results are drawn (studies.flow_noise, notebook 07) ------------------------------------------
COLORS = {**toy2d.COLORS, "dps (tilt)": "tab:olive"}
POINT_KEYS = toy2d.POINT_KEYS + ["spread"]
MAIN_PANELS = [{"x": "reward", "y": "ed_pstar", "yscale": "symlog", "ylinthresh": 1e-2,
                "title": "distance to p* vs reward (symlog, linear below 0.01)"},
               {"x": "reward", "y": "ed_pstar", "xlim": (-1.2, -0.1), "ylim": (-0.005, 0.08),
                "title": "zoom: near the target's reward r* (dotted)"},
               {"x": "reward", "y": "spread", "xlim": (-2.0, 0.0), "ylim": (0.0, 2.0),
                "title": "within-mode spread vs reward (exact p*: 0.99)"},
               {"x": "ed_p0", "y": "reward", "title": "reward vs distance to p_0"}]
