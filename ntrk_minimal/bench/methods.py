r"""The one table of sampling methods every world uses.

Each entry is the protocol's ``Method.run``: ``run(world, x_T, generator, <knob>, **settings) ->
(SampleResult, diagnostics)``. It samples with ``world.model`` (the model the protocol counts) on
``world.context.schedule`` with ``world.context.reward``; a world binds its settings once with
``functools.partial`` and keeps the knob's grid in its ``Method``. What a knob means is stated here,
and only here (``beta``: the world's KL temperature, ``context.beta`` or ``config["beta"]``; ``N``:
the entries of one sample)::

    method        knob           meaning
    base          –              the pretrained sampler, eta_t = eps
    dps           scale          lambda_t = scale sigma_t^2 / beta      (per_beta=True; scale = 1: the
                                                                         first-order step of the exact tilt)
                                 lambda_t = scale sigma_t^2             (per_beta=False: no stated beta)
                                 lambda_t = scale lambda*_t / beta      (lam="tilt": the exact-tilt
                                                                         coefficient of any path, tilt_lambda)
                                 normalise=True: the reward's gradient at x0_hat rescaled to length
                                 sqrt(N) before it flows back to x_t (latent rewards: NormalisedReward)
    ntrk          kappa          rho_t = kappa_t^2 / N; kappa_t = kappa (decay="constant") or falling
                                 linearly to 0 over the steps (decay="linear"; no default: every world
                                 states it); whiten="W" (the world's W: context.whiten where the problem
                                 defines one, else whitening.whiten), "norm_match" (W switched off; the
                                 flag w_off=True says the same) or a map; skip_pure_noise: rho_t = 0 where
                                 a_t = 0 (a flow's first step: g_t = 0 there)
    ntrk_matched  scale          rho_t from TiltMatched(scale, beta, rho_max): sqrt(rho_t) = scale sigma_t
                                 ||g_t|| / (beta <W(g_t), g_t / ||g_t||>), i.e. kappa_t = scale sigma_t
                                 ||g_t|| / beta under norm matching (strength.py)
    svdd          temp           mode="soft": k ∝ exp(r_k / (temp beta)) (per_beta) or exp(r_k / temp);
                                 mode="argmax": the best of num_candidates (no knob)
    smc           temp           potentials exp(r / (temp beta)) (per_beta) or exp(r / temp); a fixed
                                 beta=b instead: exp(r / b) (then temp must stay 1: it would do nothing)
                  num_particles  the particles per output (P x the base NFEs), usually fixed
                  knob           the proposal's own strength: proposal="ntrk": kappa (linear decay);
                                 "matched": scale; "dps": scale (per beta); "base": none.
                                 correct=False drops the p/q weight (``Uncorrected``)
    best_of_n     num_samples    the best r(x_0) of num_samples independent base trajectories; kernel="ntrk":
                                 NTRK trajectories with kappa and decay (the paper's NTRK†)

A setting bound with ``functools.partial`` is part of the method's definition but is not written to a
study's json (only ``Method.fixed`` is); the world module that binds it is part of the point cache's key.
``grad`` ("full" or "cheap", ``kernels.reward_grad``) is taken by every method that follows a reward
gradient (dps, ntrk, ntrk_matched, smc's guided proposals, best_of_n with kernel="ntrk"). A world whose
``config["micro_batch"]`` is set runs every method in micro-batches of that many rows, one after
another with the same generator.

Diagnostics (``diagnostics=(...)``: the keys a world records, in its order; each method reports those
it can measure, under that name, as one number per run):

    eta_energy    E||eta_t||^2 / N per step (metrics.eta_energy), mean over the steps with sigma_t > 0
    eta_lag1      the spatial lag-1 correlation of eta_t relative to its energy, same steps (images)
    cos_wg, cos_wg_min, w_norm2, wnorm, eff_step, kappa_mean, lag1_g, lag1_w
                  what W does to the gradient (``WRecorder``; ntrk), summarised per ``w_summary``
                  (``kappa_mean``: the rule's kappa_t averaged over all steps)
    cost          (forward rows + (c - 1) backward rows) / n, c = config["guided_step_cost"]
    ess           SMC's mean ESS / P over the steps
    kappa_mean, clipped   the matched strength's realised kappa_t (batch mean) and share clipped at
                  rho_max, averaged over the steps with sigma_t > 0 (ntrk_matched)
    diverged_run  1 when the reward gradient stopped being finite (on_diverge="nan"), else 0
    peak_gib      peak allocated GPU memory of the run (CUDA only)

``on_diverge="nan"`` (dps, ntrk, ntrk_matched): a run whose reward gradient stops being finite
(``FloatingPointError``) returns NaN samples and NaN diagnostics instead of stopping the study; the
world's evaluation then reports a missing point, which the protocol treats as a level not reached.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .. import metrics, whitening
from ..kernels import Base, Kernel, MeanShift, NoiseTilt, Search
from ..rewards import NormalisedReward
from ..sampling import (NFECounter, SampleResult, best_of_n as _best_of_n, grouped_starts, rho_from_kappa,
                        sample_iter, sigma2_scaled, signal_rho, smc as _smc, tilt_lambda)
from ..strength import TiltMatched
from .spec import CostCounter

__all__ = ["base", "dps", "ntrk", "ntrk_matched", "svdd", "smc", "best_of_n", "METHODS", "WRecorder", "lag1",
           "Uncorrected", "world_beta", "DIAGNOSTICS"]

DIAGNOSTICS = ("eta_energy", "eta_lag1", "cos_wg", "cos_wg_min", "w_norm2", "wnorm", "eff_step", "kappa_mean",
               "lag1_g", "lag1_w", "cost", "ess", "clipped", "diverged_run", "peak_gib")
ETA_KEYS = ("eta_energy", "eta_lag1")
W_KEYS = ("cos_wg", "cos_wg_min", "w_norm2", "wnorm", "eff_step", "kappa_mean", "lag1_g", "lag1_w")


# ---- what W does to the gradient -------------------------------------------------------------------------
def lag1(x: torch.Tensor) -> torch.Tensor:
    """Spatial lag-1 autocorrelation per sample of (B, C, H, W) (mean removed, both axes pooled)."""
    x = x - x.mean((-1, -2), keepdim=True)
    num = (x[..., 1:] * x[..., :-1]).flatten(1).sum(1) + (x[..., 1:, :] * x[..., :-1, :]).flatten(1).sum(1)
    den = 2 * (x * x).flatten(1).sum(1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(den))


class WRecorder:
    """Wraps a map ``W`` inside NTRK and records, at every call (one per reverse step), per sample:
    ``cos(W(g), g)``, ``||W(g)|| / sqrt(N)``, ``||W(g)||^2 / N`` and the step factor
    ``c = <W(g), g / ||g||> / sqrt(N)`` (1 for norm matching: with ``rho_t = kappa_t^2 / N`` NTRK moves
    ``sigma_t kappa_t c_t`` along ``g``); ``lag1=True`` also the spatial lag-1 correlation of ``g``
    and ``W(g)`` (images). ``summary`` turns the record into the diagnostics above."""

    def __init__(self, whiten, lag1: bool = False):
        self.whiten, self.lag1, self.rows = whiten, lag1, []

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        w = self.whiten(g)
        gf, wf = g.reshape(len(g), -1).to(torch.float64), w.reshape(len(w), -1).to(torch.float64)
        N = gf.shape[1]
        norm = gf.norm(dim=1)
        along = torch.where(norm > 0, (wf * gf).sum(1) / norm.clamp_min(1e-300), torch.zeros_like(norm))
        row = {"cos": metrics.cosine(w, g), "factor": float(along.mean()) / math.sqrt(N),
               "wnorm": float((wf.norm(dim=1) / math.sqrt(N)).mean()), "w_norm2": float(((wf ** 2).sum(1) / N).mean())}
        if self.lag1:
            row["lag1_g"], row["lag1_w"] = float(lag1(g).mean()), float(lag1(w).mean())
        self.rows.append(row)
        return w

    def summary(self, keys, how: str, kappa: float, weights=None, kappa_t=None) -> dict:
        """The W diagnostics among ``keys`` from the record (one call per step, micro-batch after micro-batch).

        ``how="nominal"`` (every step; ``weights``: the decay's ``d_t``, per step): ``cos_wg`` the mean
        over steps of the batch-mean cosine, ``cos_wg_min`` the smallest cosine, ``w_norm2`` the mean
        ``||W(g)||^2 / N``, and ``eff_step = kappa sum_t d_t c_t / sum_t d_t``: the knob kappa shrunk by
        W's factor, averaged with the decay's weights (exactly kappa for norm matching).
        ``how="per_step"`` (the tilted steps, ``kappa_t > 0``; ``kappa_t``: the rule's kappa per step):
        ``cos_wg``, ``wnorm``, ``lag1_g``, ``lag1_w`` their means over those steps, ``kappa_mean`` the mean
        kappa_t over all steps and ``eff_step = (1 / T) sum_t kappa_t cos_t ||W(g)||_t / sqrt(N)``: the mean
        step along g per reverse step (mean kappa_t for norm matching).
        """
        rows = self.rows
        T = len(weights if how == "nominal" else kappa_t)
        if how == "nominal":
            d = [weights[j % T] for j in range(len(rows))]
            cos = [float(r["cos"].mean()) for r in rows]
            vals = {"cos_wg": lambda: sum(cos) / len(cos),
                    "cos_wg_min": lambda: float(torch.cat([r["cos"] for r in rows]).min()),
                    "w_norm2": lambda: sum(r["w_norm2"] for r in rows) / len(rows),
                    "eff_step": lambda: kappa * sum(a * r["factor"] for a, r in zip(d, rows)) / sum(d)}
        elif how == "per_step":
            ks = [kappa_t[j % T] for j in range(len(rows))]
            tilted = [(k, r) for k, r in zip(ks, rows) if k > 0]
            stat = lambda r, key: float(r["cos"].mean()) if key == "cos" else r[key]
            mean = lambda key: float(np.mean([stat(r, key) for _, r in tilted])) if tilted else float("nan")
            vals = {"eff_step": lambda: (float(np.mean([k * stat(r, "cos") * r["wnorm"] for k, r in tilted]))
                                         * len(tilted) / len(ks)) if tilted else 0.0,
                    "kappa_mean": lambda: float(np.mean(kappa_t)), "cos_wg": lambda: mean("cos"),
                    "wnorm": lambda: mean("wnorm"), "lag1_g": lambda: mean("lag1_g"), "lag1_w": lambda: mean("lag1_w")}
        else:
            raise ValueError(f"how must be 'nominal' or 'per_step', got {how!r}")
        return {k: vals[k]() for k in keys if k in vals}


# ---- what every method shares --------------------------------------------------------------------------------
def world_beta(world) -> float:
    """The world's KL temperature: ``context.beta``, else ``config["beta"]``, else 1 (no stated beta:
    a knob's scale then absorbs it)."""
    b = getattr(world.context, "beta", None)
    return float(world.config.get("beta", 1.0) if b is None else b)


def _chunks(world, x_T: torch.Tensor):
    mb = (getattr(world, "config", None) or {}).get("micro_batch") or x_T.shape[0]
    return x_T.split(int(mb))


def _chain(world, x, kernel, g, reward, etas, trace):
    """``x -> x_0`` through ``sample_iter`` with ``world.model``; the eta_t of the steps with
    ``sigma_t > 0`` go to ``etas`` (when a list), every step to ``trace`` (when a list). Returns
    ``(x_0, NFE per row)``."""
    counter = NFECounter(world.model)
    x0 = x
    for step in sample_iter(counter, world.context.schedule, x, kernel, g, reward):
        if etas is not None and step.sigma_t > 0:
            etas.append(step.eta_t.detach())
        if trace is not None:
            trace.append(step)
        x0 = step.x_prev
    return x0.detach(), counter.nfe(x.shape[0])


def _eta_stats(keys, etas: list) -> dict:
    """``eta_energy`` and ``eta_lag1`` (see the module docstring) from the recorded eta_t (T', B, *shape)."""
    out = {}
    if not etas:
        return out
    eta = torch.stack(etas)
    if "eta_energy" in keys:
        out["eta_energy"] = float(metrics.eta_energy(eta).mean())
    if "eta_lag1" in keys:
        e = eta.double()
        dims = tuple(range(2, e.ndim))
        e2 = (e ** 2).mean(dim=dims)
        lag = ((e[..., 1:] * e[..., :-1]).mean(dim=dims) + (e[..., 1:, :] * e[..., :-1, :]).mean(dim=dims)) / 2
        out["eta_lag1"] = float((lag / e2).mean())
    return out


def _merge(parts: list) -> dict:
    """Diagnostics of the micro-batches of one run: each key's mean weighted by the batch size."""
    if len(parts) == 1:
        return parts[0][1]
    n = sum(size for size, _ in parts)
    return {k: sum(size * d[k] for size, d in parts) / n for k in parts[0][1]}


def _trajectories(world, x_T, g, kernel, reward, keys, record=False, after_chunk=None):
    """The sampler with ``kernel`` on every micro-batch of ``x_T``: ``(SampleResult, eta diagnostics)``;
    ``after_chunk(rows)`` is called after each micro-batch (a kernel's own record is read there)."""
    want_eta = any(k in keys for k in ETA_KEYS)
    x0s, parts, nfes, trace = [], [], [], [] if record else None
    for x in _chunks(world, x_T):
        etas = [] if want_eta else None
        x0, f = _chain(world, x, kernel, g, reward, etas, trace)
        if after_chunk is not None:
            after_chunk(len(x))
        x0s.append(x0)
        nfes.append((len(x), f))
        parts.append((len(x), _eta_stats(keys, etas or [])))
    nfe = nfes[0][1] if len(nfes) == 1 else sum(n * f for n, f in nfes) / len(x_T)
    return SampleResult(x0s[0] if len(x0s) == 1 else torch.cat(x0s), nfe, trace or []), _merge(parts)


def _per_chunk(world, x_T, fn):
    """``fn(x)`` (a ``SampleResult``) on every micro-batch, concatenated."""
    res = [fn(x) for x in _chunks(world, x_T)]
    if len(res) == 1:
        return res[0]
    return SampleResult(torch.cat([r.x0 for r in res]), sum(r.nfe * len(r.x0) for r in res) / len(x_T), [])


def _finish(world, x_T, keys, res, diag: dict, guarded: bool = False):
    """Adds ``cost`` and ``diverged_run`` (when asked for) and orders the diagnostics as ``keys``."""
    if "cost" in keys and isinstance(world.model, CostCounter):
        m = world.model
        diag["cost"] = (m.forward_rows + (world.config["guided_step_cost"] - 1) * m.backward_rows) / len(x_T)
    if guarded and "diverged_run" in keys:
        diag["diverged_run"] = 0.0
    return res, {k: diag[k] for k in keys if k in diag}


def _guard(world, x_T, keys, measures, fn):
    """``fn()``, or NaN samples and NaN ``measures`` (with ``diverged_run = 1``) when the reward
    gradient stops being finite."""
    try:
        return fn()
    except FloatingPointError:
        nan = float("nan")
        diag = {k: (1.0 if k == "diverged_run" else nan) for k in keys if k in measures or k == "diverged_run"}
        return SampleResult(torch.full_like(x_T, nan), nan, []), diag


def _peak(world, keys, fn):
    """``fn()`` with ``peak_gib`` (peak allocated GPU memory of the run) added on CUDA."""
    dev = torch.device(getattr(world, "device", "cpu"))
    if "peak_gib" in keys and dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        res, diag = fn()
        return res, {**diag, "peak_gib": torch.cuda.max_memory_allocated(dev) / 2 ** 30}
    return fn()


def _whiten(world, whiten, w_off: bool):
    if w_off or whiten == "norm_match":
        return whitening.norm_match
    if whiten in (None, "W"):
        return getattr(world.context, "whiten", None) or whitening.whiten
    if callable(whiten):
        return whiten
    raise ValueError(f"whiten must be 'W', 'norm_match' or a map, got {whiten!r}")


# ---- the table ----------------------------------------------------------------------------------------------
def base(world, x_T, g, *, diagnostics=(), record=False):
    """The pretrained sampler: ``x_{t-1} = mu_t + sigma_t eps``."""
    keys = tuple(diagnostics)
    return _peak(world, keys, lambda: _finish(world, x_T, keys, *_trajectories(world, x_T, g, Base(), None, keys,
                                                                                  record)))


def dps(world, x_T, g, scale, *, per_beta=True, lam="sigma2", normalise=False, grad="full", diagnostics=(),
        on_diverge="raise", record=False):
    """DPS: ``x_{t-1} = mu_t + lambda_t g_t + sigma_t eps`` with ``lambda_t`` as the table says."""
    keys, pb = tuple(diagnostics), world.context
    c = scale / world_beta(world) if per_beta else scale
    if lam == "sigma2":
        lam_t = sigma2_scaled(c)                         # lambda_t = c sigma_t^2
    elif lam == "tilt":
        lam_t = tilt_lambda(c)                           # lambda_t = c lambda*_t
    else:
        raise ValueError(f"lam must be 'sigma2' or 'tilt', got {lam!r}")
    reward = NormalisedReward(pb.reward) if normalise else pb.reward
    run = lambda: _finish(world, x_T, keys, *_trajectories(world, x_T, g, MeanShift(lam_t, grad=grad), reward, keys,
                                                           record), guarded=on_diverge == "nan")
    return _peak(world, keys, (lambda: _guard(world, x_T, keys, ETA_KEYS + ("cost",), run)) if on_diverge == "nan" else run)


def ntrk(world, x_T, g, kappa, *, decay, whiten="W", w_off=False, grad="full", skip_pure_noise=False,
         w_summary="nominal", diagnostics=(), on_diverge="raise", record=False):
    """NTRK: ``eta_t = sqrt(rho_t) W(g_t) + sqrt(1 - rho_t) eps`` with ``rho_t = kappa_t^2 / N``."""
    if w_off and whiten not in ("W", "norm_match"):
        raise ValueError(f"w_off=True switches W off; it cannot be combined with whiten={whiten!r}")
    keys, pb = tuple(diagnostics), world.context
    N = int(x_T[0].numel())
    rho_t = (signal_rho if skip_pure_noise else rho_from_kappa)(kappa, N, decay)
    W = _whiten(world, whiten, w_off)
    rec = None
    if any(k in keys for k in W_KEYS):
        rec = W = WRecorder(W, lag1="lag1_g" in keys or "lag1_w" in keys)

    def run():
        res, diag = _trajectories(world, x_T, g, NoiseTilt(rho_t, whiten=W, grad=grad), pb.reward, keys, record)
        if rec is not None:
            T, sched = pb.schedule.num_steps, pb.schedule
            if w_summary == "nominal":
                d = [1.0 if decay == "constant" else 1 - i / max(T - 1, 1) for i in range(T)]
                diag.update(rec.summary(keys, "nominal", kappa, weights=d))
            else:                                   # the kappa_t of the rule that ran, per step
                diag.update(rec.summary(keys, w_summary, kappa, kappa_t=[math.sqrt(rho_t(i, sched) * N) for i in range(T)]))
        return _finish(world, x_T, keys, res, diag, guarded=on_diverge == "nan")

    return _peak(world, keys, (lambda: _guard(world, x_T, keys, ETA_KEYS + W_KEYS + ("cost",), run))
                 if on_diverge == "nan" else run)


def ntrk_matched(world, x_T, g, scale, *, whiten="W", rho_max=0.5, grad="full", diagnostics=(), on_diverge="raise",
                 record=False):
    """NTRK with the matched strength ``TiltMatched(scale, beta, rho_max)`` (``ntrk_minimal.strength``)."""
    keys, pb = tuple(diagnostics), world.context
    st = TiltMatched(scale, world_beta(world), rho_max)

    last = pb.schedule.num_steps - 1
    parts = []

    def after_chunk(n):                        # TiltMatched restarts its history at every trajectory's step 0
        h = [s for s in st.history if s["i"] < last] or st.history       # the steps with sigma_t > 0
        parts.append((n, {"kappa_mean": sum(s["kappa"] for s in h) / len(h),
                          "clipped": sum(s["clipped"] for s in h) / len(h)}))

    def run():
        res, diag = _trajectories(world, x_T, g, NoiseTilt(st, whiten=_whiten(world, whiten, False), grad=grad),
                                  pb.reward, keys, record, after_chunk)
        diag.update(_merge(parts))
        return _finish(world, x_T, keys, res, diag, guarded=on_diverge == "nan")

    return _peak(world, keys, (lambda: _guard(world, x_T, keys, ETA_KEYS + ("kappa_mean", "clipped", "cost"), run))
                 if on_diverge == "nan" else run)


def svdd(world, x_T, g, temp=1.0, *, num_candidates, mode="soft", per_beta=True, diagnostics=(), record=False):
    """SVDD-style search: ``num_candidates`` draws per step scored by ``r(x0_hat)``, soft or argmax."""
    keys, pb = tuple(diagnostics), world.context
    beta = temp * world_beta(world) if per_beta else temp
    kern = Search(int(num_candidates), mode, beta)
    return _peak(world, keys, lambda: _finish(world, x_T, keys,
                                              *_trajectories(world, x_T, g, kern, pb.reward, keys, record)))


class Uncorrected(Kernel):
    """A proposal kernel whose SMC weight is *not* corrected (``log_ratio = 0``): what ``smc()`` did
    with a non-base kernel before the fix (``smc(..., correct=False)``). Its target is
    ``q-path exp(r / beta)``, not ``p*``: kept only to show that difference (``studies.beyond``)."""

    needs_reward = True

    def __init__(self, inner: Kernel):
        self.inner, self.grad, self.name = inner, inner.grad, f"{inner.name} (uncorrected)"

    def step(self, *args, **kwargs):
        return self.inner.step(*args, **kwargs)

    def log_ratio(self, out):
        return torch.zeros(out.x_prev.shape[0], dtype=torch.float64, device=out.x_prev.device)


def _proposal(world, proposal: str, knob, grad: str, N: int):
    if proposal == "base":
        return Base()
    if proposal == "ntrk":
        return NoiseTilt(rho_from_kappa(knob, N, "linear"), whiten=_whiten(world, "W", False), grad=grad)
    if proposal == "matched":
        return NoiseTilt(TiltMatched(knob, world_beta(world)), whiten=_whiten(world, "W", False), grad=grad)
    if proposal == "dps":
        return MeanShift(sigma2_scaled(knob / world_beta(world)), grad=grad)
    raise ValueError(f"proposal must be 'base', 'ntrk', 'matched' or 'dps', got {proposal!r}")


def smc(world, x_T, g, temp=1.0, num_particles=None, *, per_beta=True, beta=None, proposal="base", knob=None,
        correct=True, grad="full", diagnostics=()):
    """SMC / FK steering (``sampling.smc``) with ``num_particles`` per output at the table's temperature."""
    keys, pb = tuple(diagnostics), world.context
    if beta is not None and temp != 1.0:
        raise ValueError(f"smc takes either a fixed beta ({beta!r}) or a temperature knob temp ({temp!r}), not both")
    b = beta if beta is not None else (temp * world_beta(world) if per_beta else temp)
    P = int(num_particles)
    ess = []

    def one(x):
        kern = _proposal(world, proposal, knob, grad, int(x[0].numel()))
        res = _smc(world.model, pb.schedule, grouped_starts(x, P, g), P, pb.reward, b, g,
                   kernel=kern if correct else Uncorrected(kern))
        ess.append(sum(res.ess) / max(len(res.ess), 1))
        return res

    def run():
        res = _per_chunk(world, x_T, one)
        return _finish(world, x_T, keys, res, {"ess": sum(ess) / len(ess)})

    return _peak(world, keys, run)


def best_of_n(world, x_T, g, num_samples, *, kernel="base", kappa=None, decay=None, grad="full", diagnostics=()):
    """Best-of-N: ``num_samples`` independent trajectories per output (``x_T`` first, then fresh starts:
    ``grouped_starts``), the best final reward kept; ``kernel="ntrk"``: NTRK trajectories with
    ``rho_t = kappa_t^2 / N`` (``kappa``, ``decay``: as for ``ntrk``; the paper's NTRK†)."""
    keys, pb, n = tuple(diagnostics), world.context, int(num_samples)
    if kernel == "ntrk":
        if kappa is None or decay is None:
            raise ValueError("best_of_n with kernel='ntrk' needs kappa and decay (as ntrk)")
        kern = NoiseTilt(rho_from_kappa(kappa, int(x_T[0].numel()), decay), whiten=_whiten(world, "W", False),
                         grad=grad)
    elif kernel == "base":
        kern = "base"
    else:
        raise ValueError(f"kernel must be 'base' or 'ntrk', got {kernel!r}")
    run = lambda: _finish(world, x_T, keys, _per_chunk(world, x_T, lambda x: _best_of_n(
        world.model, pb.schedule, grouped_starts(x, n, g), n, pb.reward, kern, g)), {})
    return _peak(world, keys, run)


#: the table by name
METHODS = {"base": base, "dps": dps, "ntrk": ntrk, "ntrk_matched": ntrk_matched, "svdd": svdd, "smc": smc,
           "best_of_n": best_of_n}
