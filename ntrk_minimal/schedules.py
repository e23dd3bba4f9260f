"""Noise schedules: the VP alpha-bar and the T-step sampling subsequence.

We do not re-derive schedules: alpha-bar and the timestep subsequence come from diffusers'
``DDIMScheduler``. This module only reads them and exposes, per sampling step ``i``:

    t      = timesteps[i]                        # training timestep of x_t
    ab_t   = \\bar\\alpha_t,  ab_prev = \\bar\\alpha_{t_prev}
    sigma_t = eta * sqrt((1 - ab_prev) / (1 - ab_t)) * sqrt(1 - ab_t / ab_prev)   # DDIM, eq. (16)

``eta = 1`` gives the DDPM posterior variance; ``eta = 0`` is deterministic DDIM (no noise to tilt).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Schedule", "make_schedule"]


@dataclass(frozen=True)
class Schedule:
    """The sampling grid of a VP diffusion.

    Attributes (all float64 CPU tensors of length ``num_steps`` unless noted):
        alphas_cumprod: (num_train_timesteps,) the full training alpha-bar.
        timesteps:      (num_steps,) long, decreasing training timesteps ``t_i``.
        ab_t:           alpha-bar at ``t_i``.
        ab_prev:        alpha-bar at the next (less noisy) timestep; the last entry is the
                        scheduler's ``final_alpha_cumprod``.
        eta:            DDIM eta (1.0 = DDPM variance).
    """

    alphas_cumprod: torch.Tensor
    timesteps: torch.Tensor
    ab_t: torch.Tensor
    ab_prev: torch.Tensor
    eta: float

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def __len__(self) -> int:
        return self.num_steps

    @property
    def sigma_t(self) -> torch.Tensor:
        """DDIM noise scale per step: ``eta sqrt((1-ab_prev)/(1-ab_t)) sqrt(1 - ab_t/ab_prev)``."""
        var = (1 - self.ab_prev) / (1 - self.ab_t) * (1 - self.ab_t / self.ab_prev)
        return self.eta * var.clamp_min(0).sqrt()

    @classmethod
    def from_scheduler(cls, scheduler, num_steps: int = 25, eta: float = 1.0) -> "Schedule":
        """Read a diffusers ``DDIMScheduler`` (or any scheduler with ``alphas_cumprod``).

        Uses ``scheduler.set_timesteps(num_steps)`` so the grid is exactly the pipeline's.
        """
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        if not (0.0 <= float(eta) <= 1.0):
            raise ValueError(f"eta must lie in [0, 1], got {eta!r}")
        scheduler.set_timesteps(num_steps)
        ac = scheduler.alphas_cumprod.to(torch.float64)
        ts = scheduler.timesteps.to(torch.long).cpu()
        n_train = scheduler.config.num_train_timesteps
        prev = ts - n_train // num_steps
        final = getattr(scheduler, "final_alpha_cumprod", ac[0])
        final = torch.as_tensor(final, dtype=torch.float64)
        ab_prev = torch.where(prev >= 0, ac[prev.clamp_min(0)], final)
        return cls(alphas_cumprod=ac, timesteps=ts, ab_t=ac[ts], ab_prev=ab_prev, eta=float(eta))


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
