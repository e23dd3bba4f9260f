"""Reverse kernels: one step ``x_t -> x_{t-1}`` of the stochastic sampler, four ways.

On any path ``x_t = a_t x_0 + s_t eps`` (``schedules``: VP ``a = sqrt(ab), s = sqrt(1 - ab)``; rectified
flow ``a = 1 - t, s = t``) every kernel writes its update as ``x_{t-1} = mu_t + sigma_t * eta_t``
(docs/METHOD.md sections 3 and 6) where

    x0_hat  = (x_t - s_t eps_hat) / a_t                                   # Tweedie
    mu_t    = a_prev x0_hat + sqrt(s_prev^2 - sigma_t^2) eps_hat          # DDIM-form mean

and differs only in the standardized perturbation ``eta_t``:

    base        eta_t = eps
    mean shift  eta_t = eps + (lambda_t / sigma_t) g_t          (DPS-style, g_t = grad r(x0_hat))
    search      eta_t = eps^(k*),  k* = argmax_k r(x0_hat(mu_t + sigma_t eps^(k)))   (SVDD-style)
    noise tilt  eta_t = sqrt(rho_t) W(g_t) + sqrt(1 - rho_t) eps                      (NTRK)

All kernels draw ``eps`` from the same generator in the same order, so ``rho = 0``,
``lambda = 0`` and ``K = 1`` reproduce the base sampler bit for bit.

Proposal densities (docs/METHOD.md section B.1). Given ``x_t`` the base, mean-shift and noise-tilt kernels are
Gaussian, so each step also reports ``StepResult.log_ratio = log p_base(x_prev | x_t) - log q(x_prev | x_t)``
per sample (float64), the weight that keeps an SMC wrapper's target when it uses the kernel as its
proposal (``sampling.smc``). Written in the standardized noise (``x_prev = mu_t + sigma_t eta_t``)::

    base        q = p                                    log_ratio = 0
    mean shift  q = N(mu_t + lambda_t g_t, sigma_t^2 I)  log_ratio = (||eps||^2 - ||eta_t||^2) / 2
    noise tilt  q = N(mu_t + sigma_t sqrt(rho_t) w_t, sigma_t^2 (1 - rho_t) I)
                                     log_ratio = (||eps||^2 - ||eta_t||^2) / 2 + (N / 2) log(1 - rho_t)

(the Jacobian ``sigma_t^N`` cancels). A step with ``sigma_t = 0`` is deterministic: the ratio is 0
when the kernel lands on ``mu_t`` as the base does, and undefined otherwise (a DPS shift at
``sigma_t = 0``; NTRK with ``rho_t = 1``, a point mass): then ``log_ratio`` is None and
``ratio_note`` says why. The search kernel (SVDD) has no closed-form proposal density: None.

Guided evaluation (``reward_grad``): ``grad="full"`` back-propagates ``r(x0_hat(x_t))`` through the
reward *and* the denoiser; ``grad="cheap"`` takes the reward's gradient at ``x0_hat`` and skips the
denoiser's Jacobian, ``d x0_hat / d x_t ≈ I / a_t``, so ``g_t ≈ grad_{x0} r(x0_hat) / a_t`` (no
backward pass through the model; the direction is what W keeps, the length is exact only where
``eps_hat`` does not depend on ``x_t``).

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

from . import whitening

__all__ = ["StepResult", "Base", "MeanShift", "Search", "NoiseTilt", "make_kernel", "tweedie", "ddim_mean", "denoise",
           "work_dtype", "reward_grad", "guided_eval", "per_step", "gaussian_log_ratio", "noise_like", "step_scalars",
           "GRAD_MODES", "KERNELS"]


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


GRAD_MODES = ("full", "cheap")


def _check_grad_mode(grad) -> str:
    if grad not in GRAD_MODES:
        raise ValueError(f"grad must be one of {GRAD_MODES}, got {grad!r}")
    return grad


def guided_eval(model, reward, x_t: torch.Tensor, i: int, schedule, grad: str = "full"):
    """``(eps_hat, x0_hat, g_t, r_t)`` at step ``i``, with ``r_t = r(x0_hat(x_t))`` (B,) the reward the
    gradient was taken of (an SMC potential reuses it).

    ``grad="full"``: ``g_t = grad_{x_t} r(x0_hat(x_t))``, one NFE with a backward pass through the
    denoiser and the reward. ``grad="cheap"``: the denoiser runs without a graph and
    ``g_t = grad_{x0} r(x0)|_{x0 = x0_hat} / a_t`` (``d x0_hat / d x_t ≈ I / a_t``): one NFE, a backward
    pass through the reward only; refused where ``a_t = 0`` (a flow's first step). ``g_t`` has
    ``x_t``'s dtype; ``eps_hat``, ``x0_hat`` the step's working dtype (``denoise``). Raises if the
    gradient is not finite (naming the step).
    """
    if reward is None:
        raise ValueError("this kernel needs a reward: pass reward=... to the sampler")
    _check_grad_mode(grad)
    if grad == "full":
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            eps_hat, x0_hat = denoise(model, x, i, schedule)
            r = reward(x0_hat)
            (g,) = torch.autograd.grad(r.sum(), x)
    else:
        a_t = float(schedule.a_t[i])
        if a_t == 0.0:
            raise ValueError(f"grad='cheap' needs a_t > 0, but step {i} (t={_fmt_t(schedule.timesteps[i])}) "
                             f"has a_t = 0 (d x0_hat / d x_t ≈ I / a_t is undefined there): use grad='full' "
                             f"or a schedule that starts below t = 1")
        with torch.no_grad():
            eps_hat, x0_hat = denoise(model, x_t.detach(), i, schedule)
        with torch.enable_grad():
            x0 = x0_hat.detach().requires_grad_(True)
            r = reward(x0)
            (g0,) = torch.autograd.grad(r.sum(), x0)
        g = (g0 / a_t).to(x_t.dtype)               # g_t ≈ grad_{x0} r(x0_hat) / a_t
    if not torch.isfinite(g).all():
        bad = (~torch.isfinite(g.reshape(g.shape[0], -1))).any(1).nonzero().flatten().tolist()
        raise FloatingPointError(f"reward gradient is not finite at sampling step {i} "
                                 f"(t={_fmt_t(schedule.timesteps[i])}) for samples {bad[:10]}")
    return eps_hat.detach(), x0_hat.detach(), g.detach(), r.detach()


def reward_grad(model, reward, x_t: torch.Tensor, i: int, schedule, grad: str = "full"):
    """One guided evaluation at step ``i``: ``eps_hat``, ``x0_hat`` and ``g_t = grad_{x_t} r(x0_hat(x_t))``.

    Costs one NFE plus one backward pass (``grad="full"``, the default) or one NFE and a backward
    pass through the reward alone (``grad="cheap"``: ``g_t ≈ grad r(x0_hat) / a_t``; see
    ``guided_eval``). ``g_t`` has ``x_t``'s dtype; ``eps_hat``, ``x0_hat`` the step's working dtype
    (``denoise``). Raises if the gradient is not finite (naming the step).
    """
    eps_hat, x0_hat, g, _ = guided_eval(model, reward, x_t, i, schedule, grad)
    return eps_hat, x0_hat, g


def gaussian_log_ratio(eta_t: torch.Tensor, eps: torch.Tensor, rho=0.0) -> torch.Tensor:
    """``log N(x; mu, sigma^2 I) - log N(x; mu + sigma sqrt(rho) w, sigma^2 (1 - rho) I)`` at
    ``x = mu + sigma eta_t`` with ``eta_t = sqrt(rho) w + sqrt(1 - rho) eps`` (``rho = 0``: a pure mean
    shift, ``eta_t = eps + shift / sigma``), per sample, float64::

        (||eps||^2 - ||eta_t||^2) / 2 + (N / 2) log(1 - rho)

    ``rho``: a number or a (B,) tensor in [0, 1); ``N`` the entries per sample.
    """
    e2 = eps.reshape(eps.shape[0], -1).to(torch.float64).pow(2).sum(1)
    n2 = eta_t.reshape(eta_t.shape[0], -1).to(torch.float64).pow(2).sum(1)
    N = eta_t[0].numel()
    rho = torch.as_tensor(rho, dtype=torch.float64, device=e2.device)
    return 0.5 * (e2 - n2) + 0.5 * N * torch.log1p(-rho)


@dataclass
class StepResult:
    """What one reverse step produced (all tensors of shape (B, *sample_shape), the step's dtype)."""

    x_prev: torch.Tensor
    x0_hat: torch.Tensor
    mu_t: torch.Tensor
    eta_t: torch.Tensor
    eps_hat_next: torch.Tensor | None = None   # eps_hat(x_prev) when a kernel already paid for it
    x0_hat_next: torch.Tensor | None = None    # and its x0_hat
    log_ratio: torch.Tensor | None = None      # (B,) float64 log p_base(x_prev|x_t) - log q(x_prev|x_t)
    ratio_note: str = ""                       # why log_ratio is None (when it is)


def noise_like(like: torch.Tensor, generator) -> torch.Tensor:
    """A fresh N(0, I) draw shaped like ``like``, in its dtype, on its device."""
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)


def step_scalars(schedule, i: int) -> tuple[float, float, float]:
    """``(a_prev, s_prev, sigma_t)`` of step ``i`` as Python floats (float64, never rounded to x's dtype)."""
    return float(schedule.a_prev[i]), float(schedule.s_prev[i]), float(schedule.sigma_t[i])


class Kernel:
    """Protocol: ``step(model, x_t, i, schedule, generator, reward, eps_hat=None, x0_hat=None) -> StepResult``.

    ``log_ratio(out)``: ``log p_base(x_prev | x_t) - log q(x_prev | x_t)`` of the step that returned
    ``out``, per sample (B,) float64, or a ``ValueError`` saying why this kernel cannot report it.
    Guided kernels (``grad`` set: ``"full"`` or ``"cheap"``) also accept ``g_t`` with ``eps_hat`` and
    ``x0_hat``: a guided evaluation of ``x_t`` already paid for (SMC reuses its potential's).
    """

    name = "kernel"
    needs_reward = False
    grad = None                 # guided kernels: "full" or "cheap" (see reward_grad)

    def _plain(self, model, x_t, i, schedule, eps_hat, x0_hat=None):
        return denoise(model, x_t, i, schedule, eps_hat, x0_hat)

    def _guided(self, model, reward, x_t, i, schedule, eps_hat, x0_hat, g_t):
        """``(eps_hat, x0_hat, g_t)``: the given evaluation (all three), or a fresh ``reward_grad``."""
        if g_t is not None:
            if eps_hat is None or x0_hat is None:
                raise ValueError("g_t is reused only together with its eps_hat and x0_hat")
            return eps_hat, x0_hat, g_t
        return reward_grad(model, reward, x_t, i, schedule, self.grad)

    def log_ratio(self, out: StepResult) -> torch.Tensor:
        if out.log_ratio is None:
            raise ValueError(f"kernel {self.name!r} cannot report its proposal density ratio "
                             f"log p_base(x_prev|x_t) - log q(x_prev|x_t)"
                             + (f": {out.ratio_note}" if out.ratio_note else ""))
        return out.log_ratio

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Base(Kernel):
    """The pretrained kernel: ``x_{t-1} = mu_t + sigma_t eps``. Its proposal ratio is 0."""

    name = "base"

    def step(self, model, x_t, i, schedule, generator, reward=None, eps_hat=None, x0_hat=None):
        a_prev, s_prev, sigma_t = step_scalars(schedule, i)
        eps_hat, x0_hat = self._plain(model, x_t, i, schedule, eps_hat, x0_hat)
        ### BEGIN SOLUTION
        mu_t = ddim_mean(x0_hat, eps_hat, a_prev, s_prev, sigma_t)
        eta_t = noise_like(mu_t, generator)
        return StepResult(mu_t + sigma_t * eta_t, x0_hat, mu_t, eta_t)
        ### END SOLUTION

    def log_ratio(self, out: StepResult) -> torch.Tensor:
        """The proposal is the base kernel: ``log p / q = 0``."""
        return torch.zeros(out.x_prev.shape[0], dtype=torch.float64, device=out.x_prev.device)


def _zero_ratio(like: torch.Tensor) -> torch.Tensor:
    return torch.zeros(like.shape[0], dtype=torch.float64, device=like.device)


class MeanShift(Kernel):
    """DPS-style guidance: ``x_{t-1} = mu_t + lambda_t g_t + sigma_t eps``.

    ``lambda_t``: number, length-T sequence or ``f(i, schedule)``; see ``sigma2_scaled``.
    ``grad``: ``"full"`` (default) or ``"cheap"`` (``reward_grad``). Proposal ratio
    ``(||eps||^2 - ||eta_t||^2) / 2``; undefined at ``sigma_t = 0`` unless the shift is zero.
    """

    name = "dps"
    needs_reward = True

    def __init__(self, lambda_t=1.0, grad: str = "full"):
        self.lambda_t = lambda_t
        self.grad = _check_grad_mode(grad)

    def step(self, model, x_t, i, schedule, generator, reward=None, eps_hat=None, x0_hat=None, g_t=None):
        a_prev, s_prev, sigma_t = step_scalars(schedule, i)
        lam = per_step(self.lambda_t, i, schedule, "lambda_t")
        eps_hat, x0_hat, g = self._guided(model, reward, x_t, i, schedule, eps_hat, x0_hat, g_t)
        mu_t = ddim_mean(x0_hat, eps_hat, a_prev, s_prev, sigma_t)
        eps = noise_like(mu_t, generator)
        ### BEGIN SOLUTION
        x_prev = mu_t + lam * g + sigma_t * eps
        eta_t = eps + (lam / sigma_t) * g if sigma_t > 0 else eps
        ### END SOLUTION
        return self._with_ratio(StepResult(x_prev, x0_hat, mu_t, eta_t), i, sigma_t, lam, g, eps)

    @staticmethod
    def _with_ratio(out: StepResult, i, sigma_t, lam, g, eps) -> StepResult:
        """Fill ``out.log_ratio`` (or ``ratio_note``): ``q = N(mu_t + lam g, sigma_t^2 I)``."""
        if sigma_t > 0:
            out.log_ratio = gaussian_log_ratio(out.eta_t, eps)
        elif lam == 0.0 or not bool(g.ne(0).any()):  # both kernels land on mu_t
            out.log_ratio = _zero_ratio(out.x_prev)
        else:
            out.ratio_note = (f"step {i} has sigma_t = 0 and lambda_t = {lam:g}: the proposal is a point mass "
                              f"at mu_t + lambda_t g_t, the base kernel one at mu_t (no density ratio)")
        return out


class Search(Kernel):
    """SVDD-style search: K candidates ``mu_t + sigma_t eps^(k)``, scored by ``r(x0_hat(.))``.

    ``mode="argmax"`` keeps the best; ``mode="soft"`` samples ``k ∝ exp(r_k / beta)``.
    Scoring costs K NFEs per step; the chosen candidate's ``eps_hat`` (and ``x0_hat``) is reused next step.
    Its proposal density (a selection among K draws) has no closed form: no ``log_ratio``.
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

    def log_ratio(self, out: StepResult) -> torch.Tensor:
        raise ValueError("the search kernel (SVDD) has no closed-form proposal density: its step picks one "
                         "of K scored candidates, so an SMC weight p_base/q cannot be computed; use "
                         "kernel='base', 'dps' or 'ntrk' as the SMC proposal")

    def step(self, model, x_t, i, schedule, generator, reward=None, eps_hat=None, x0_hat=None):
        if reward is None:
            raise ValueError("search needs a reward: pass reward=... to the sampler")
        K, B = self.num_candidates, x_t.shape[0]
        a_prev, s_prev, sigma_t = step_scalars(schedule, i)
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
        note = "SVDD's selection among K candidates has no closed-form proposal density"
        if last:
            return StepResult(x_prev, x0_hat, mu_t, eta_t, ratio_note=note)
        return StepResult(x_prev, x0_hat, mu_t, eta_t, pick(eps_next), pick(x0_next), ratio_note=note)


class NoiseTilt(Kernel):
    """NTRK: ``eta_t = sqrt(rho_t) W(g_t) + sqrt(1 - rho_t) eps``, ``x_{t-1} = mu_t + sigma_t eta_t``.

    ``rho_t`` in [0, 1]: number, length-T sequence or ``f(i, schedule)`` (see ``rho_from_kappa``), or
    a per-sample strength: an object with ``per_sample(i, schedule, g_t, w_t) -> (B,)`` tensor (see
    ``ntrk_minimal.strength``), which may look at the gradient.
    ``whiten``: the map ``W`` applied per sample to ``g_t`` (default: ``ntrk_minimal.whitening.whiten``;
    ``norm_match`` switches W off). ``grad``: ``"full"`` (default) or ``"cheap"``
    (``reward_grad``). Needs ``sigma_t > 0`` wherever ``rho_t > 0``; the final step of a schedule with
    ``sigma = 0`` there (``x_0 = mu``) tilts nothing. Proposal ratio
    ``(||eps||^2 - ||eta_t||^2) / 2 + (N / 2) log(1 - rho_t)``; undefined at ``rho_t = 1``.
    """

    name = "ntrk"
    needs_reward = True

    def __init__(self, rho_t=0.1, whiten: Callable | None = None, grad: str = "full"):
        if isinstance(rho_t, (int, float)) and not 0.0 <= rho_t <= 1.0:
            raise ValueError(f"rho_t must lie in [0, 1], got {rho_t!r}")
        self.rho_t = rho_t
        self.whiten = whiten if whiten is not None else whitening.whiten
        self.grad = _check_grad_mode(grad)

    def _check_sigma(self, i, schedule, sigma_t, tilted: bool):
        if sigma_t == 0.0 and tilted and i != schedule.num_steps - 1:
            fix = "a flow schedule with noise > 0" if schedule.kind == "flow" else "DDIM eta > 0 or DDPM"
            raise ValueError(f"the noise-tilted kernel needs sigma_t > 0, but step {i} "
                             f"(t={_fmt_t(schedule.timesteps[i])}) has sigma_t = 0: use a stochastic "
                             f"schedule ({fix})")

    def _rho_before(self, i, schedule, sigma_t):
        """``rho_t`` of step ``i`` as a float (checked), or None for a per-sample strength (known only with g_t)."""
        if hasattr(self.rho_t, "per_sample"):
            return None
        rho = per_step(self.rho_t, i, schedule, "rho_t")
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"rho_t must lie in [0, 1], got {rho} at step {i}")
        self._check_sigma(i, schedule, sigma_t, rho > 0)
        return rho

    def _tilt_per_sample(self, i, schedule, sigma_t, g, w_t, eps):
        """``(rho, eta_t)`` for a per-sample strength: ``rho`` (B,) float64, broadcast over each sample."""
        rho = torch.as_tensor(self.rho_t.per_sample(i, schedule, g, w_t), dtype=torch.float64)
        if rho.shape != (g.shape[0],):
            raise ValueError(f"a per-sample rho_t must have shape ({g.shape[0]},), got {tuple(rho.shape)} at step {i}")
        if not (torch.isfinite(rho).all() and (rho >= 0).all() and (rho <= 1).all()):
            raise ValueError(f"rho_t must lie in [0, 1], got values in [{float(rho.min())}, {float(rho.max())}] "
                             f"at step {i}")
        self._check_sigma(i, schedule, sigma_t, bool((rho > 0).any()))
        r = rho.to(device=w_t.device, dtype=w_t.dtype).reshape((-1,) + (1,) * (w_t.ndim - 1))
        return rho, r.sqrt() * w_t + (1.0 - r).sqrt() * eps

    @staticmethod
    def _with_ratio(out: StepResult, i, sigma_t, rho, eps) -> StepResult:
        """Fill ``out.log_ratio`` (or ``ratio_note``): ``q = N(mu_t + sigma_t sqrt(rho) w_t, sigma_t^2 (1 - rho) I)``."""
        if sigma_t == 0.0:                           # x_prev = mu_t, as the base kernel's
            out.log_ratio = _zero_ratio(out.x_prev)
        elif bool((torch.as_tensor(rho) >= 1.0).any()):
            out.ratio_note = (f"rho_t = 1 at step {i}: the proposal mu_t + sigma_t W(g_t) is a point mass "
                              f"(no density); keep rho_t < 1")
        else:
            out.log_ratio = gaussian_log_ratio(out.eta_t, eps, rho)
        return out

    def step(self, model, x_t, i, schedule, generator, reward=None, eps_hat=None, x0_hat=None, g_t=None):
        a_prev, s_prev, sigma_t = step_scalars(schedule, i)
        rho = self._rho_before(i, schedule, sigma_t)
        eps_hat, x0_hat, g = self._guided(model, reward, x_t, i, schedule, eps_hat, x0_hat, g_t)
        mu_t = ddim_mean(x0_hat, eps_hat, a_prev, s_prev, sigma_t)
        eps = noise_like(mu_t, generator)
        w_t = self.whiten(g)
        if rho is None:                              # a per-sample strength (ntrk_minimal.strength)
            rho, eta_t = self._tilt_per_sample(i, schedule, sigma_t, g, w_t, eps)
        else:
            ### BEGIN SOLUTION
            eta_t = math.sqrt(rho) * w_t + math.sqrt(1.0 - rho) * eps
            ### END SOLUTION
        return self._with_ratio(StepResult(mu_t + sigma_t * eta_t, x0_hat, mu_t, eta_t), i, sigma_t, rho, eps)


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
