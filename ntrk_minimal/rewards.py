"""Differentiable rewards ``r(x) -> (B,)`` and the exact tilted target for the analytic toys.

Target of reward alignment (docs/METHOD.md section 2):  ``p*(x) ∝ p_0(x) exp(r(x) / beta)``.
For a Gaussian mixture ``p_0`` and a quadratic or linear reward, ``p*`` is again a mixture.
Every reward takes samples of shape (B, *sample_shape) and flattens them.
"""
from __future__ import annotations

import torch

from .models import GaussianMixture
from .whitening import norm_match

__all__ = ["QuadraticReward", "LinearReward", "ModesReward", "NormalisedReward", "tilted_mixture"]


class _FlatReward:
    """Base: flattens (B, *shape) -> (B, d) and checks dimension and device."""

    dim: int

    def _flat(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(x) or x.ndim < 2:
            raise ValueError(f"x must be a tensor of shape (batch, ...), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise ValueError(f"x has {flat.shape[1]} features per sample but this reward expects {self.dim}")
        if x.device != ref.device:
            raise ValueError(f"x is on {x.device} but the reward's parameters are on {ref.device}")
        return flat


class QuadraticReward(_FlatReward):
    """``r(x) = -||x - c||^2 / (2 s^2)``: pull toward ``center`` with length scale ``scale``."""

    def __init__(self, center, scale: float = 1.0):
        self.center = torch.as_tensor(center, dtype=torch.float64).flatten()
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        self.scale = float(scale)
        self.dim = self.center.numel()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        c = self.center.to(device=x.device, dtype=x.dtype)
        flat = self._flat(x, c)
        return -((flat - c) ** 2).sum(-1) / (2 * self.scale ** 2)


class LinearReward(_FlatReward):
    """``r(x) = <a, x>``: an unbounded push along ``direction``."""

    def __init__(self, direction):
        self.direction = torch.as_tensor(direction, dtype=torch.float64).flatten()
        self.dim = self.direction.numel()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        a = self.direction.to(device=x.device, dtype=x.dtype)
        return self._flat(x, a) @ a


class ModesReward(_FlatReward):
    """"Reach these modes": ``r(x) = s^2 log sum_k exp(-||x - c_k||^2 / (2 s^2))``.

    Near one centre it behaves like ``QuadraticReward(c_k, s)``; its maximisers are the centres.
    """

    def __init__(self, centers, scale: float = 0.5):
        self.centers = torch.as_tensor(centers, dtype=torch.float64)
        if self.centers.ndim != 2:
            raise ValueError(f"centers must have shape (K, d), got {tuple(self.centers.shape)}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        self.scale = float(scale)
        self.dim = self.centers.shape[1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        c = self.centers.to(device=x.device, dtype=x.dtype)
        flat = self._flat(x, c)
        s2 = self.scale ** 2
        return s2 * torch.logsumexp(-torch.cdist(flat, c) ** 2 / (2 * s2), dim=-1)


class NormalisedReward:
    """``r`` in value; in the backward pass ``d r / d x`` is rescaled per sample to length ``sqrt(N)``
    (``norm_match``: the direction kept) before autograd carries it on (through Tweedie and the
    denoiser, for a reward of ``x0_hat``).

    For rewards whose raw gradient has no meaningful scale (an aesthetic score through a VAE decoder
    and CLIP): with the gradient at ``x0_hat`` at the length NTRK's W uses, DPS's ``lambda_t = c
    sigma_t^2`` means the same on every model (the ``normalise`` setting of ``bench.methods.dps``).
    """

    def __init__(self, reward):
        self.reward = reward

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.reward(_GradNorm.apply(x))


class _GradNorm(torch.autograd.Function):
    """Identity forward; ``norm_match`` of the incoming gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return norm_match(g)


def tilted_mixture(mixture: GaussianMixture, reward, beta: float) -> GaussianMixture:
    """Exact ``p* ∝ p_0 exp(r / beta)`` for a quadratic or linear reward.

    Quadratic ``r = -||x - c||^2 / (2 s^2)``: with ``tau = s^2 beta`` each component becomes
        ``Sigma_k* = (Sigma_k^{-1} + I / tau)^{-1}``,
        ``mu_k*    = Sigma_k* (Sigma_k^{-1} mu_k + c / tau)``,
        ``w_k*    ∝ w_k N(c; mu_k, Sigma_k + tau I)``.
    Linear ``r = <a, x>``: ``Sigma_k* = Sigma_k``, ``mu_k* = mu_k + Sigma_k a / beta``,
        ``w_k* ∝ w_k exp(<a, mu_k>/beta + a^T Sigma_k a / (2 beta^2))``.
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    w, mu, S = mixture.weights, mixture.means, mixture.covs
    d = mixture.dim
    eye = torch.eye(d, dtype=mu.dtype, device=mu.device)
    if isinstance(reward, QuadraticReward):
        if reward.dim != d:
            raise ValueError(f"reward has dimension {reward.dim}, mixture has {d}")
        c = reward.center.to(dtype=mu.dtype, device=mu.device)
        tau = reward.scale ** 2 * beta
        P = torch.linalg.inv(S) + eye / tau
        S_new = torch.linalg.inv(P)
        S_new = 0.5 * (S_new + S_new.transpose(-1, -2))
        mu_new = (S_new @ (torch.linalg.solve(S, mu[..., None])[..., 0] + c / tau)[..., None])[..., 0]
        log_n_c = GaussianMixture(w, mu, S + tau * eye).component_log_prob(c[None])[0]      # (K,)
        logw = w.log() + log_n_c
        return GaussianMixture(torch.softmax(logw, 0), mu_new, S_new)
    if isinstance(reward, LinearReward):
        if reward.dim != d:
            raise ValueError(f"reward has dimension {reward.dim}, mixture has {d}")
        a = reward.direction.to(dtype=mu.dtype, device=mu.device)
        Sa = S @ a
        logw = w.log() + mu @ a / beta + (Sa @ a) / (2 * beta ** 2)
        return GaussianMixture(torch.softmax(logw, 0), mu + Sa / beta, S.clone())
    raise TypeError(f"tilted_mixture has a closed form only for QuadraticReward or LinearReward, "
                    f"got {type(reward).__name__}")
