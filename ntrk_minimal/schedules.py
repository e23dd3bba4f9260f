"""Noise paths ``x_t = a_t x_0 + s_t eps`` and their T-step sampling grids, read from diffusers.

We do not re-derive schedules: the grid comes from a diffusers scheduler's ``set_timesteps``. A
``Schedule`` exposes, per sampling step ``i`` (from noise to data):

    t       = timesteps[i]                    # the model timestep (what the pipeline passes the network)
    a_t, s_t                                  # x_t = a_t x_0 + s_t eps
    a_prev, s_prev                            # the same at the next (less noisy) grid point
    sigma_t                                   # the step's noise scale, 0 <= sigma_t <= s_prev

and every kernel takes the DDIM-form step (docs/METHOD.md section 6)

    x0_hat = (x_t - s_t eps_hat) / a_t
    x_prev = a_prev x0_hat + sqrt(s_prev^2 - sigma_t^2) eps_hat + sigma_t eta_t .

Two paths:

* **variance preserving** (``DDIMScheduler``): ``a = sqrt(ab)``, ``s = sqrt(1 - ab)`` with
  ``ab = \\bar\\alpha``; ``sigma_t = eta sqrt((1 - ab_prev)/(1 - ab_t)) sqrt(1 - ab_t/ab_prev)`` (DDIM
  eq. 16): ``eta = 1`` is the DDPM posterior, ``eta = 0`` deterministic DDIM.
* **rectified flow** (``FlowMatchEulerDiscreteScheduler``: FLUX, SD3, Wan): ``a = 1 - t``, ``s = t``
  with ``t`` the scheduler's sigma (shift included); ``sigma_t = noise * s_prev``: ``noise = 0`` is
  the Euler ODE step ``x_t + (s_prev - s_t) v``, ``noise = 1`` is the scheduler's
  ``stochastic_sampling=True`` step. ``VelocityModel`` turns a velocity network ``v = eps - x_0`` into
  the ``eps_hat(x_t, t)`` model protocol.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import torch

__all__ = ["Schedule", "make_schedule", "make_scheduler", "make_flow_scheduler", "make_flow_schedule",
           "VelocityModel"]


@dataclass(frozen=True)
class Schedule:
    """The sampling grid of a path ``x_t = a_t x_0 + s_t eps``.

    Attributes (float64 CPU tensors of length ``num_steps`` unless noted):
        timesteps:  (num_steps,) model timesteps ``t_i``, decreasing (VP: long training timesteps;
                    flow: the scheduler's float timesteps, ``1000 * sigma``).
        a_t, s_t:   the path at ``t_i``.
        a_prev, s_prev: the path at the next grid point (the data end: ``a = 1, s = 0`` for a flow,
                    the scheduler's ``final_alpha_cumprod`` for VP).
        sigma_t:    the step's noise scale, ``0 <= sigma_t <= s_prev``.
        kind:       ``"vp"`` or ``"flow"``.
        eta:        VP only: DDIM eta (1.0 = DDPM variance).
        noise:      flow only: ``sigma_t / s_prev`` (0 = Euler ODE, 1 = the stochastic sampler).
        alphas_cumprod: VP only: (num_train_timesteps,) the full training alpha-bar.
        num_train_timesteps: the scheduler's training horizon.
        compute_dtype: ``None``: a step computes in the state's dtype (as ``DDIMScheduler.step``);
                    ``torch.float32`` (flows): float16/bfloat16 states are upcast for the step and
                    its noise and the result cast back (as ``FlowMatchEulerDiscreteScheduler.step``).
    VP schedules also carry ``ab_t`` and ``ab_prev`` (alpha-bar at ``t_i`` and at the next point).
    """

    timesteps: torch.Tensor
    a_t: torch.Tensor
    s_t: torch.Tensor
    a_prev: torch.Tensor
    s_prev: torch.Tensor
    sigma_t: torch.Tensor
    kind: str = "vp"
    eta: float | None = None
    noise: float | None = None
    alphas_cumprod: torch.Tensor | None = None
    num_train_timesteps: int = 1000
    compute_dtype: torch.dtype | None = None
    _ab_t: torch.Tensor | None = None
    _ab_prev: torch.Tensor | None = None

    def __post_init__(self):
        if self.kind not in ("vp", "flow"):
            raise ValueError(f"kind must be 'vp' or 'flow', got {self.kind!r}")
        T = len(self.timesteps)
        for name in ("a_t", "s_t", "a_prev", "s_prev", "sigma_t"):
            v = getattr(self, name)
            if not torch.is_tensor(v) or v.shape != (T,):
                raise ValueError(f"{name} must be a tensor of shape ({T},), got "
                                 f"{tuple(v.shape) if torch.is_tensor(v) else type(v).__name__}")
        if (self.sigma_t < 0).any() or (self.sigma_t > self.s_prev * (1 + 1e-12) + 1e-15).any():
            raise ValueError("sigma_t must lie in [0, s_prev] at every step")
        if (self.a_prev <= 0).any():
            raise ValueError("a_prev must be > 0 at every step (the next grid point must carry signal)")

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def __len__(self) -> int:
        return self.num_steps

    @property
    def ab_t(self) -> torch.Tensor:
        """VP: ``\\bar\\alpha`` at ``t_i`` (``a_t^2``, exact as the scheduler's)."""
        if self._ab_t is None:
            raise AttributeError("a flow schedule has no alpha-bar: use a_t, s_t (x_t = a_t x_0 + s_t eps)")
        return self._ab_t

    @property
    def ab_prev(self) -> torch.Tensor:
        """VP: ``\\bar\\alpha`` at the next grid point."""
        if self._ab_prev is None:
            raise AttributeError("a flow schedule has no alpha-bar: use a_prev, s_prev")
        return self._ab_prev

    # ---- the path at a model timestep ---------------------------------------------------------
    @cached_property
    def _grid(self) -> dict:
        return {float(t): i for i, t in enumerate(self.timesteps)}

    def coefficients(self, t) -> tuple[float, float]:
        """``(a, s)`` at model timestep ``t``: the grid's values when ``t`` is on the grid; off it,
        VP: ``(sqrt(ab), sqrt(1 - ab))`` at training timestep ``int(t)``; flow: ``s = t / N_train``."""
        if torch.is_tensor(t):
            flat = t.detach().reshape(-1).cpu()
            if flat.numel() == 0 or (flat != flat[0]).any():
                raise ValueError(f"one timestep per call expected, got {flat.tolist()[:8]}")
            t = flat[0].item()
        t = float(t)
        if self.kind == "vp":
            ab = float(self.alphas_cumprod[int(t)])
            return math.sqrt(ab), math.sqrt(1 - ab)
        i = self._grid.get(t)
        if i is not None:
            return float(self.a_t[i]), float(self.s_t[i])
        s = t / self.num_train_timesteps
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"flow timestep {t} lies outside [0, {self.num_train_timesteps}]")
        return 1.0 - s, s

    # ---- construction from diffusers ------------------------------------------------------------
    @classmethod
    def from_scheduler(cls, scheduler, num_steps: int = 25, eta: float | None = None,
                       noise: float | None = None, **set_timesteps_kwargs) -> "Schedule":
        """Read a diffusers scheduler after ``scheduler.set_timesteps(num_steps, ...)``.

        A VP scheduler (``DDIMScheduler`` or any with ``alphas_cumprod``) uses DDIM ``eta`` (default
        1.0); a ``FlowMatchEulerDiscreteScheduler`` goes to ``from_flow_scheduler`` with ``noise``
        (default: 1 if the scheduler samples stochastically, else 0).
        """
        _check_steps(num_steps)
        if not hasattr(scheduler, "alphas_cumprod") and hasattr(scheduler, "sigmas"):
            if eta is not None:
                raise ValueError("eta is the VP (DDIM) knob; a flow schedule takes noise in [0, 1]")
            if noise is None:
                noise = 1.0 if getattr(scheduler.config, "stochastic_sampling", False) else 0.0
            return cls.from_flow_scheduler(scheduler, num_steps, noise, **set_timesteps_kwargs)
        if noise is not None:
            raise ValueError("noise is the flow schedules' knob; a VP schedule takes DDIM eta")
        eta = 1.0 if eta is None else eta
        if not (0.0 <= float(eta) <= 1.0):
            raise ValueError(f"eta must lie in [0, 1], got {eta!r}")
        scheduler.set_timesteps(num_steps, **set_timesteps_kwargs)
        ac = scheduler.alphas_cumprod.to(torch.float64)
        ts = scheduler.timesteps.to(torch.long).cpu()
        n_train = scheduler.config.num_train_timesteps
        prev = ts - n_train // num_steps
        final = getattr(scheduler, "final_alpha_cumprod", ac[0])
        final = torch.as_tensor(final, dtype=torch.float64)
        ab_t = ac[ts]                                                # \bar\alpha_t
        ab_prev = torch.where(prev >= 0, ac[prev.clamp_min(0)], final)
        var = (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)     # DDPM posterior variance
        sigma_t = float(eta) * var.clamp_min(0).sqrt()
        return cls(timesteps=ts, a_t=ab_t.sqrt(), s_t=(1 - ab_t).sqrt(), a_prev=ab_prev.sqrt(),
                   s_prev=(1 - ab_prev).sqrt(), sigma_t=sigma_t, kind="vp", eta=float(eta),
                   alphas_cumprod=ac, num_train_timesteps=int(n_train), _ab_t=ab_t, _ab_prev=ab_prev)

    @classmethod
    def from_flow_scheduler(cls, scheduler, num_steps: int = 25, noise: float = 1.0,
                            **set_timesteps_kwargs) -> "Schedule":
        """Read a ``FlowMatchEulerDiscreteScheduler`` (rectified flow ``a = 1 - t, s = t``).

        Calls ``scheduler.set_timesteps(num_steps, **set_timesteps_kwargs)`` (pass ``sigmas=``, ``mu=``
        as the pipeline does) and reads its ``sigmas`` (shift included, terminal 0 appended) and
        ``timesteps`` (what the pipeline passes the transformer). ``sigma_t = noise * s_prev``.
        """
        _check_steps(num_steps)
        if not (0.0 <= float(noise) <= 1.0):
            raise ValueError(f"noise must lie in [0, 1] (0 = Euler ODE, 1 = stochastic sampler), got {noise!r}")
        if getattr(scheduler.config, "invert_sigmas", False):
            raise ValueError("schedulers with invert_sigmas=True (noise at sigma = 0) are not supported")
        scheduler.set_timesteps(num_steps, **set_timesteps_kwargs)
        sig = scheduler.sigmas.detach().to(device="cpu", dtype=torch.float64)   # (T + 1,), last = 0
        ts = scheduler.timesteps.detach().cpu()
        if len(sig) != len(ts) + 1:
            raise ValueError(f"expected len(sigmas) = len(timesteps) + 1, got {len(sig)} and {len(ts)}")
        s_t, s_prev = sig[:-1], sig[1:]
        if not (s_prev < s_t).all():
            raise ValueError("the scheduler's sigmas must decrease strictly")
        return cls(timesteps=ts, a_t=1 - s_t, s_t=s_t, a_prev=1 - s_prev, s_prev=s_prev,
                   sigma_t=float(noise) * s_prev, kind="flow", noise=float(noise),
                   num_train_timesteps=int(scheduler.config.num_train_timesteps),
                   compute_dtype=torch.float32)


def _check_steps(num_steps) -> None:
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")


def make_scheduler(num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                   beta_start: float = 1e-4, beta_end: float = 0.02):
    """The diffusers ``DDIMScheduler`` our toys use (no clipping, ``set_alpha_to_one=True``)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                         beta_start=beta_start, beta_end=beta_end, clip_sample=False,
                         set_alpha_to_one=True, prediction_type="epsilon",
                         timestep_spacing="leading")


def make_schedule(num_steps: int = 25, eta: float = 1.0, **scheduler_kwargs) -> Schedule:
    """``T = num_steps`` sampling steps on a 1000-step linear VP schedule (diffusers' DDIM grid)."""
    return Schedule.from_scheduler(make_scheduler(**scheduler_kwargs), num_steps=num_steps, eta=eta)


def make_flow_scheduler(shift: float = 1.0, stochastic_sampling: bool = False,
                        num_train_timesteps: int = 1000):
    """A diffusers ``FlowMatchEulerDiscreteScheduler`` (static ``shift``; FLUX-dev uses dynamic shift)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=shift,
                                           stochastic_sampling=stochastic_sampling)


def make_flow_schedule(num_steps: int = 25, noise: float = 1.0, shift: float = 1.0,
                       **set_timesteps_kwargs) -> Schedule:
    """``T = num_steps`` rectified-flow steps (diffusers' flow-matching grid), ``sigma_t = noise s_prev``."""
    return Schedule.from_flow_scheduler(make_flow_scheduler(shift), num_steps, noise, **set_timesteps_kwargs)


class VelocityModel:
    """A rectified-flow velocity model ``v(x_t, t)`` as the model protocol ``eps_hat(x_t, t)``.

    On ``x_t = (1 - s) x_0 + s eps`` a velocity ``v = eps - x_0`` gives

        x0_hat  = x_t - s v
        eps_hat = x_t + (1 - s) v

    with ``s = s_t`` the schedule's noise level at model timestep ``t``. ``predict`` returns both,
    so that kernels never divide by ``a_t = 1 - s`` (zero at the first FLUX step, ``s = 1``).
    Computed in the schedule's working precision (float32 for float16/bfloat16 states) as
    ``FlowMatchEulerDiscreteScheduler.step`` does, ``s`` kept as a float64 Python number: in float32
    our stochastic step equals the scheduler's bit for bit; in float16/bfloat16 diffusers rounds the
    0-dim ``sigma`` tensor to the model dtype inside ``sigma * v`` and we do not (tests/test_flows.py).

    Args:
        velocity: ``v(x_t, t) -> (B, *shape)``, ``t`` the model timestep (``schedule.timesteps[i]``).
        schedule: a flow ``Schedule`` (maps ``t`` to ``s``).
    """

    def __init__(self, velocity: Callable, schedule: Schedule):
        if schedule.kind != "flow":
            raise ValueError(f"VelocityModel needs a flow schedule (a = 1 - t, s = t), got kind={schedule.kind!r}")
        self.velocity, self.schedule = velocity, schedule

    def predict(self, x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``(eps_hat, x0_hat)`` at ``x_t``: one velocity evaluation."""
        a, s = self.schedule.coefficients(t)
        v = self.velocity(x_t, t)
        cd = self.schedule.compute_dtype
        x = x_t.to(x_t.dtype if cd is None else torch.promote_types(x_t.dtype, cd))
        return x + a * v, x - s * v       # eps_hat = x_t + (1 - s) v,  x0_hat = x_t - s v

    def __call__(self, x_t: torch.Tensor, t) -> torch.Tensor:
        return self.predict(x_t, t)[0]
