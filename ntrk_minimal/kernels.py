"""Reverse kernels: one step ``x_t -> x_{t-1}`` of the stochastic sampler, four ways.

On any path ``x_t = a_t x_0 + s_t eps`` (``schedules``: VP ``a = sqrt(ab), s = sqrt(1 - ab)``; rectified
flow ``a = 1 - t, s = t``) every kernel writes its update as ``x_{t-1} = mu_t + sigma_t * eta_t``
(spec sections 3 and 10) where

    x0_hat  = (x_t - s_t eps_hat) / a_t                                   # Tweedie
    mu_t    = a_prev x0_hat + sqrt(s_prev^2 - sigma_t^2) eps_hat          # DDIM-form mean

and differs only in the standardized perturbation ``eta_t``:

    base        eta_t = eps
    mean shift  eta_t = eps + (lambda_t / sigma_t) g_t          (DPS-style, g_t = grad r(x0_hat))
    search      eta_t = eps^(k*),  k* = argmax_k r(x0_hat(mu_t + sigma_t eps^(k)))   (SVDD-style)
    noise tilt  eta_t = sqrt(rho_t) W(g_t) + sqrt(1 - rho_t) eps                      (NTRK)

All kernels draw ``eps`` from the same generator in the same order, so ``rho = 0``,
``lambda = 0`` and ``K = 1`` reproduce the base sampler bit for bit.

Model protocol: ``model(x_t, t) -> eps_hat``; a model that also has ``predict(x_t, t) -> (eps_hat,
x0_hat)`` (``VelocityModel``, ``MixtureDenoiser``) gives ``x0_hat`` itself, which is needed where
``a_t = 0`` (a flow's first step, ``t = 1``). Precision: a step computes in the state's dtype, or in
``schedule.compute_dtype`` where that is wider (flows: float32 for float16/bfloat16 states, as
diffusers' flow scheduler); the sampling loop keeps the state in ``x_T``'s dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["StepResult", "Base", "MeanShift", "Search", "NoiseTilt", "make_kernel",
           "norm_match", "tweedie", "ddim_mean", "denoise", "work_dtype", "reward_grad", "per_step",
           "KERNELS"]


# ---- shared pieces ----------------------------------------------------------------------------
def tweedie(x_t: torch.Tensor, eps_hat: torch.Tensor, a_t: float, s_t: float) -> torch.Tensor:
    """``x0_hat = (x_t - s_t eps_hat) / a_t``: the forward process ``x_t = a_t x_0 + s_t eps`` inverted."""
    ### BEGIN SOLUTION
    return (x_t - s_t * eps_hat) / a_t
    ### END SOLUTION


def ddim_mean(x0_hat: torch.Tensor, eps_hat: torch.Tensor, a_prev: float, s_prev: float,
              sigma_t: float) -> torch.Tensor:
    """``mu_t = a_prev x0_hat + sqrt(s_prev^2 - sigma_t^2) eps_hat`` (DDIM eq. 12 on ``a_t x_0 + s_t eps``)."""
    ### BEGIN SOLUTION
    return a_prev * x0_hat + math.sqrt(max(s_prev ** 2 - sigma_t ** 2, 0.0)) * eps_hat
    ### END SOLUTION


def work_dtype(x: torch.Tensor, schedule) -> torch.dtype:
    """The dtype a step computes in: ``x``'s, or ``schedule.compute_dtype`` where that is wider."""
    cd = getattr(schedule, "compute_dtype", None)
    return x.dtype if cd is None else torch.promote_types(x.dtype, cd)


def _fmt_t(t) -> str:
    t = t.item() if torch.is_tensor(t) and t.numel() == 1 else t
    return f"{t:g}" if isinstance(t, float) else str(t)


def denoise(model, x_t: torch.Tensor, i: int, schedule, eps_hat=None, x0_hat=None):
    """``(eps_hat, x0_hat)`` at step ``i``, in the step's working dtype: one NFE unless given.

    ``model.predict(x_t, t)`` where the model has it (it knows ``x0_hat`` without dividing by
    ``a_t``), else ``eps_hat = model(x_t, t)`` and Tweedie. A reused ``eps_hat`` without its
    ``x0_hat`` goes through Tweedie too.
    """
    t = schedule.timesteps[i]
    a_t, s_t = float(schedule.a_t[i]), float(schedule.s_t[i])
    if eps_hat is None:
        if hasattr(model, "predict"):
            eps_hat, x0_hat = model.predict(x_t, t)
        else:
            eps_hat = model(x_t, t)
    wd = work_dtype(x_t, schedule)
    eps_hat = eps_hat.to(wd)
    if x0_hat is None:
        if a_t == 0.0:
            raise ValueError(f"a_t = 0 at step {i} (t={_fmt_t(t)}): x0_hat cannot be recovered from "
                             f"eps_hat; give the model a predict(x_t, t) -> (eps_hat, x0_hat) method "
                             f"(e.g. wrap a velocity network in VelocityModel)")
        x0_hat = tweedie(x_t.to(wd), eps_hat, a_t, s_t)
    return eps_hat, x0_hat.to(wd)


def per_step(value, i: int, schedule, name: str) -> float:
    """A strength given as a number, a length-T sequence, or a callable ``f(i, schedule)``."""
    if callable(value):
        v = value(i, schedule)
    elif isinstance(value, (int, float)):
        v = value
    else:
        seq = torch.as_tensor(value)
        if seq.ndim != 1 or len(seq) != schedule.num_steps:
            raise ValueError(f"{name} as a sequence must have length num_steps={schedule.num_steps}, "
                             f"got shape {tuple(seq.shape)}")
        v = seq[i]
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v} at step {i}")
    return v


def norm_match(g: torch.Tensor) -> torch.Tensor:
    """``g / ||g|| * sqrt(N)`` per sample: the noise norm, the gradient's direction (W switched off).

    An all-zero sample maps to zero (no direction to keep).
    """
    flat = g.reshape(g.shape[0], -1)
    norm = flat.norm(dim=1, keepdim=True)
    out = torch.where(norm > 0, flat / norm.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    return (out * math.sqrt(flat.shape[1])).reshape(g.shape)


def reward_grad(model, reward, x_t: torch.Tensor, i: int, schedule):
    """One guided evaluation at step ``i``: ``eps_hat``, ``x0_hat`` and ``g_t = grad_{x_t} r(x0_hat(x_t))``.

    Costs one NFE plus one backward pass. ``g_t`` has ``x_t``'s dtype; ``eps_hat``, ``x0_hat`` the
    step's working dtype (``denoise``). Raises if the gradient is not finite (naming the step).
    """
    if reward is None:
        raise ValueError("this kernel needs a reward: pass reward=... to the sampler")
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        eps_hat, x0_hat = denoise(model, x, i, schedule)
        r = reward(x0_hat)
        (g,) = torch.autograd.grad(r.sum(), x)
    if not torch.isfinite(g).all():
        bad = (~torch.isfinite(g.reshape(g.shape[0], -1))).any(1).nonzero().flatten().tolist()
        raise FloatingPointError(f"reward gradient is not finite at sampling step {i} "
                                 f"(t={_fmt_t(schedule.timesteps[i])}) for samples {bad[:10]}")
    return eps_hat.detach(), x0_hat.detach(), g.detach()


@dataclass
class StepResult:
    """What one reverse step produced (all tensors of shape (B, *sample_shape), the step's dtype)."""

    x_prev: torch.Tensor
    x0_hat: torch.Tensor
    mu_t: torch.Tensor
    eta_t: torch.Tensor
    eps_hat_next: torch.Tensor | None = None   # eps_hat(x_prev) when a kernel already paid for it
    x0_hat_next: torch.Tensor | None = None    # and its x0_hat


def _noise(like: torch.Tensor, generator) -> torch.Tensor:
    """A fresh N(0, I) draw shaped like ``like``, in its dtype, on its device."""
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)


def _step_scalars(schedule, i: int) -> tuple[float, float, float]:
    """``(a_prev, s_prev, sigma_t)`` of step ``i`` as Python floats (float64, never rounded to x's dtype)."""
    return float(schedule.a_prev[i]), float(schedule.s_prev[i]), float(schedule.sigma_t[i])


class Kernel:
    """Protocol: ``step(model, x_t, i, schedule, generator, reward, eps_hat=None, x0_hat=None) -> StepResult``."""

    name = "kernel"
    needs_reward = False

    def _plain(self, model, x_t, i, schedule, eps_hat, x0_hat=None):
        return denoise(model, x_t, i, schedule, eps_hat, x0_hat)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Base(Kernel):
    """The pretrained kernel: ``x_{t-1} = mu_t + sigma_t eps``."""

    name = "base"

    def step(self, model, x_t, i, schedule, generator, reward=None, eps_hat=None, x0_hat=None):
        a_prev, s_prev, sigma_t = _step_scalars(schedule, i)
        eps_hat, x0_hat = self._plain(model, x_t, i, schedule, eps_hat, x0_hat)
        ### BEGIN SOLUTION
        mu_t = ddim_mean(x0_hat, eps_hat, a_prev, s_prev, sigma_t)
        eta_t = _noise(mu_t, generator)
        return StepResult(mu_t + sigma_t * eta_t, x0_hat, mu_t, eta_t)
        ### END SOLUTION


class MeanShift(Kernel):
    """DPS-style guidance: ``x_{t-1} = mu_t + lambda_t g_t + sigma_t eps``.

    ``lambda_t``: number, length-T sequence or ``f(i, schedule)``; see ``sigma2_scaled``.
    """

    name = "dps"
    needs_reward = True

    def __init__(self, lambda_t=1.0):
        self.lambda_t = lambda_t

    def step(self, model, x_t, i, schedule, generator, reward=None, eps_hat=None, x0_hat=None):
        a_prev, s_prev, sigma_t = _step_scalars(schedule, i)
        lam = per_step(self.lambda_t, i, schedule, "lambda_t")
        eps_hat, x0_hat, g = reward_grad(model, reward, x_t, i, schedule)
        mu_t = ddim_mean(x0_hat, eps_hat, a_prev, s_prev, sigma_t)
        eps = _noise(mu_t, generator)
        ### BEGIN SOLUTION
        x_prev = mu_t + lam * g + sigma_t * eps
        eta_t = eps + (lam / sigma_t) * g if sigma_t > 0 else eps
        ### END SOLUTION
        return StepResult(x_prev, x0_hat, mu_t, eta_t)


class Search(Kernel):
    """SVDD-style search: K candidates ``mu_t + sigma_t eps^(k)``, scored by ``r(x0_hat(.))``.

    ``mode="argmax"`` keeps the best; ``mode="soft"`` samples ``k ∝ exp(r_k / beta)``.
    Scoring costs K NFEs per step; the chosen candidate's ``eps_hat`` (and ``x0_hat``) is reused next step.
    """

    name = "svdd"
    needs_reward = True

    def __init__(self, num_candidates: int = 4, mode: str = "argmax", beta: float = 1.0):
        if not isinstance(num_candidates, int) or num_candidates < 1:
            raise ValueError(f"num_candidates must be a positive int, got {num_candidates!r}")
        if mode not in ("argmax", "soft"):
            raise ValueError(f"mode must be 'argmax' or 'soft', got {mode!r}")
        if mode == "soft" and not beta > 0:
            raise ValueError(f"beta must be > 0 for mode='soft', got {beta!r}")
        self.num_candidates, self.mode, self.beta = num_candidates, mode, beta

    def step(self, model, x_t, i, schedule, generator, reward=None, eps_hat=None, x0_hat=None):
        if reward is None:
            raise ValueError("search needs a reward: pass reward=... to the sampler")
        K, B = self.num_candidates, x_t.shape[0]
        a_prev, s_prev, sigma_t = _step_scalars(schedule, i)
        eps_hat, x0_hat = self._plain(model, x_t, i, schedule, eps_hat, x0_hat)
        mu_t = ddim_mean(x0_hat, eps_hat, a_prev, s_prev, sigma_t)
        eps = torch.randn((K,) + tuple(mu_t.shape), generator=generator, dtype=mu_t.dtype, device=mu_t.device)
        cand = (mu_t[None] + sigma_t * eps).reshape((K * B,) + tuple(x_t.shape[1:]))
        last = i == schedule.num_steps - 1
        if last:                         # candidates are x_0 themselves
            eps_next = x0_next = None
            x0_cand = cand.to(x_t.dtype)
        else:                            # score each candidate as the state the loop would keep
            eps_next, x0_next = denoise(model, cand.to(x_t.dtype), i + 1, schedule)
            x0_cand = x0_next
        scores = reward(x0_cand).reshape(K, B)
        if self.mode == "argmax":
            k = scores.argmax(0)
        else:
            probs = torch.softmax(scores / self.beta, 0).T            # (B, K)
            k = torch.multinomial(probs, 1, generator=generator)[:, 0]
        cols = torch.arange(B, device=x_t.device)
        pick = lambda a: a.reshape((K, B) + tuple(x_t.shape[1:]))[k, cols]
        eta_t = eps[k, cols]
        x_prev = mu_t + sigma_t * eta_t
        if last:
            return StepResult(x_prev, x0_hat, mu_t, eta_t)
        return StepResult(x_prev, x0_hat, mu_t, eta_t, pick(eps_next), pick(x0_next))


class NoiseTilt(Kernel):
    """NTRK: ``eta_t = sqrt(rho_t) W(g_t) + sqrt(1 - rho_t) eps``, ``x_{t-1} = mu_t + sigma_t eta_t``.

    ``rho_t`` in [0, 1]: number, length-T sequence or ``f(i, schedule)``; see ``rho_from_kappa``.
    ``whiten``: the map ``W`` applied per sample to ``g_t`` (default: ``ntrk_minimal.whitening.whiten``
    where available, else norm matching). Needs ``sigma_t > 0`` wherever ``rho_t > 0``; the final
    step of a schedule with ``sigma = 0`` there (``x_0 = mu``) tilts nothing.
    """

    name = "ntrk"
    needs_reward = True

    def __init__(self, rho_t=0.1, whiten: Callable | None = None):
        if isinstance(rho_t, (int, float)) and not 0.0 <= rho_t <= 1.0:
            raise ValueError(f"rho_t must lie in [0, 1], got {rho_t!r}")
        self.rho_t = rho_t
        self.whiten = whiten if whiten is not None else default_whiten()

    def step(self, model, x_t, i, schedule, generator, reward=None, eps_hat=None, x0_hat=None):
        a_prev, s_prev, sigma_t = _step_scalars(schedule, i)
        rho = per_step(self.rho_t, i, schedule, "rho_t")
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"rho_t must lie in [0, 1], got {rho} at step {i}")
        last = i == schedule.num_steps - 1
        if sigma_t == 0.0 and rho > 0 and not last:
            fix = "a flow schedule with noise > 0" if schedule.kind == "flow" else "DDIM eta > 0 or DDPM"
            raise ValueError(f"the noise-tilted kernel needs sigma_t > 0, but step {i} "
                             f"(t={_fmt_t(schedule.timesteps[i])}) has sigma_t = 0: use a stochastic "
                             f"schedule ({fix})")
        eps_hat, x0_hat, g = reward_grad(model, reward, x_t, i, schedule)
        mu_t = ddim_mean(x0_hat, eps_hat, a_prev, s_prev, sigma_t)
        eps = _noise(mu_t, generator)
        w_t = self.whiten(g)
        ### BEGIN SOLUTION
        eta_t = math.sqrt(rho) * w_t + math.sqrt(1.0 - rho) * eps
        ### END SOLUTION
        return StepResult(mu_t + sigma_t * eta_t, x0_hat, mu_t, eta_t)


def default_whiten() -> Callable:
    """``ntrk_minimal.whitening.whiten`` when that module is present, else ``norm_match``."""
    try:
        from .whitening import whiten
    except ImportError:
        return norm_match
    return whiten


KERNELS = {"base": Base, "dps": MeanShift, "mean_shift": MeanShift, "svdd": Search,
           "search": Search, "ntrk": NoiseTilt, "noise_tilt": NoiseTilt}


def make_kernel(kernel, **kwargs) -> Kernel:
    """A kernel instance from a name (``base``, ``dps``, ``svdd``, ``ntrk`` and aliases) or itself."""
    if isinstance(kernel, Kernel):
        if kwargs:
            raise ValueError("pass options either to the kernel instance or by name, not both")
        return kernel
    if not isinstance(kernel, str) or kernel.lower() not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {sorted(KERNELS)}")
    return KERNELS[kernel.lower()](**kwargs)
