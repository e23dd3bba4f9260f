r"""A noise-tilt strength that knows when to stop: ``kappa_t`` from the gradient, matched to the exact tilt.

NTRK's step is ``x_{t-1} = mu_t + sigma_t (sqrt(rho_t) w_t + sqrt(1 - rho_t) eps)`` with
``w_t = W(g_t)``, ``||w_t|| ≈ sqrt(N)``. With the usual ``rho_t = kappa_t^2 / N`` (``rho_from_kappa``)
its mean moves ``sigma_t kappa_t`` along ``W(g)`` *whatever the size of the gradient*: near the
reward's optimum (``g_t -> 0``) it keeps pushing, and it overshoots a mode that sits on the optimum.

The kernel NTRK approximates is the base kernel tilted by the value,
``p*(x_{t-1} | x_t) ∝ N(x_{t-1}; mu_t, sigma_t^2 I) exp(V_{t-1}(x_{t-1}) / beta)``. With ``V`` linearised
at ``mu_t`` (gradient ``g_t``, the same first-order step DPS takes at ``lambda_t = sigma_t^2 / beta``)
that is ``N(mu_t + sigma_t^2 g_t / beta, sigma_t^2 I)``: a mean shift of length ``sigma_t^2 ||g_t|| / beta``
along ``g_hat = g_t / ||g_t||``. NTRK's mean shift ``sigma_t sqrt(rho_t) w_t`` has the component
``sigma_t sqrt(rho_t) <w_t, g_hat>`` along ``g_hat``. Equating the two (times a scale ``c``, 1 = matched)::

    sqrt(rho_t) = c sigma_t ||g_t|| / (beta <w_t, g_hat>)            per sample
    kappa_t     = sqrt(N rho_t) = c sigma_t ||g_t|| sqrt(N) / (beta <w_t, g_hat>)
                = c sigma_t ||g_t|| / beta                            (norm matching: <w, g_hat> = sqrt(N))

so the step shrinks with the gradient (it stops at the optimum), grows with the noise level, and is
dimension-aware through ``rho = kappa^2 / N`` (no hand-set ``1/N``). The remaining
``sqrt(1 - rho_t)`` keeps ``E||eta_t||^2 = N``: the noise shrinks by exactly what the tilt adds, which
is what separates this kernel from DPS at the same mean (DPS adds the shift on top of full noise).
``rho_t`` is clipped to ``[0, rho_max]`` (an SMC proposal needs ``rho_t < 1``); a sample whose ``W(g)``
does not point along ``g`` (``<w, g_hat> <= 0``) gets ``rho_t = 0``. Unknown ``beta`` (a learned reward
without a stated temperature): fold it into ``c`` and treat ``c`` as the knob.

Use: ``NoiseTilt(rho_t=TiltMatched(scale, beta))`` (``ntrk_minimal.kernels``). ``TiltMatched`` records
the per-step mean ``kappa_t`` and ``rho_t`` of its last run (``history``) for pictures.
"""
from __future__ import annotations

import math

import torch

__all__ = ["TiltMatched"]


class TiltMatched:
    """Per-sample ``rho_t`` whose mean shift along ``g_t`` equals the exact tilted kernel's, times ``scale``.

    ``sqrt(rho_t) = scale * sigma_t ||g_t|| / (beta <w_t, g_t / ||g_t||>)``, clipped to ``[0, rho_max]``.

    Args:
        scale: ``c`` (1: matched to the first-order exact tilt; the front's knob).
        beta: the KL temperature of the target ``p* ∝ p_0 exp(r / beta)``.
        rho_max: upper clip, in (0, 1).
    """

    def __init__(self, scale: float = 1.0, beta: float = 1.0, rho_max: float = 0.5):
        for name, v in (("scale", scale), ("beta", beta)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if not (isinstance(rho_max, (int, float)) and 0.0 < rho_max < 1.0):
            raise ValueError(f"rho_max must lie in (0, 1), got {rho_max!r}")
        self.scale, self.beta, self.rho_max = float(scale), float(beta), float(rho_max)
        self.history: list[dict] = []

    def reset(self) -> None:
        self.history = []

    def per_sample(self, i: int, schedule, g_t: torch.Tensor, w_t: torch.Tensor) -> torch.Tensor:
        """``rho_t`` (B,) float64 for step ``i`` from the gradient ``g_t`` and its whitened ``w_t`` (B, *shape)."""
        if i == 0:
            self.reset()
        sigma_t = float(schedule.sigma_t[i])
        g = g_t.reshape(g_t.shape[0], -1).to(torch.float64)
        w = w_t.reshape(w_t.shape[0], -1).to(torch.float64)
        g_norm = g.norm(dim=1)                                            # ||g_t||
        along = (w * g).sum(1) / g_norm.clamp_min(1e-300)                 # <w_t, g_hat>
        sqrt_rho = self.scale * sigma_t * g_norm / (self.beta * along.clamp_min(1e-300))
        sqrt_rho = torch.where((along > 0) & (g_norm > 0), sqrt_rho, torch.zeros_like(sqrt_rho))
        rho = sqrt_rho.pow(2).clamp(0.0, self.rho_max)
        N = g.shape[1]
        self.history.append({"i": i, "kappa": float((rho * N).sqrt().mean()), "rho": float(rho.mean()),
                             "clipped": float((sqrt_rho.pow(2) > self.rho_max).double().mean())})
        return rho

    def __repr__(self):
        return f"TiltMatched(scale={self.scale!r}, beta={self.beta!r}, rho_max={self.rho_max!r})"
