"""Analytic Gaussian-mixture diffusion: exact ``eps_hat``, score and log-density for every t.

A mixture ``p_0 = sum_k w_k N(mu_k, Sigma_k)`` diffused by the VP forward process
``x_t = sqrt(ab) x_0 + sqrt(1 - ab) eps`` stays a mixture:

    p_t = sum_k w_k N( sqrt(ab) mu_k,  ab Sigma_k + (1 - ab) I )

so the score ``grad log p_t`` and the optimal denoiser ``eps_hat = -sqrt(1 - ab) grad log p_t``
are exact. ``GaussianMixture`` holds ``p_0``; ``MixtureDenoiser`` is the model protocol the sampler
calls, ``eps_hat(x_t, t)`` with ``t`` a training timestep.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["GaussianMixture", "MixtureDenoiser", "ring_mixture"]


def _check_x(x: torch.Tensor, dim: int, like: torch.Tensor, name: str = "x") -> None:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{name} must have shape (batch, {dim}), got {tuple(x.shape)}")
    if x.device != like.device:
        raise ValueError(f"{name} is on {x.device} but the mixture is on {like.device}")


@dataclass
class GaussianMixture:
    """``p_0(x) = sum_k weights[k] N(x; means[k], covs[k])``.

    Args:
        weights: (K,) positive, normalised on construction.
        means:   (K, d).
        covs:    (K, d, d) symmetric positive definite.
    """

    weights: torch.Tensor
    means: torch.Tensor
    covs: torch.Tensor

    def __post_init__(self):
        w, m, c = self.weights, self.means, self.covs
        if m.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(m.shape)}")
        K, d = m.shape
        if w.shape != (K,):
            raise ValueError(f"weights must have shape ({K},), got {tuple(w.shape)}")
        if c.shape != (K, d, d):
            raise ValueError(f"covs must have shape ({K}, {d}, {d}), got {tuple(c.shape)}")
        if len({w.device, m.device, c.device}) != 1:
            raise ValueError("weights, means and covs must live on one device")
        if (w <= 0).any() or not torch.isfinite(w).all():
            raise ValueError("weights must be finite and positive")
        self.weights = w / w.sum()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def to(self, dtype=None, device=None) -> "GaussianMixture":
        f = lambda a: a.to(dtype=dtype, device=device)
        return GaussianMixture(f(self.weights), f(self.means), f(self.covs))

    # ---- the diffused mixture p_t -------------------------------------------------------------
    def diffused(self, ab: float | torch.Tensor) -> "GaussianMixture":
        """``p_t``: means ``sqrt(ab) mu_k``, covariances ``ab Sigma_k + (1 - ab) I``."""
        ab = torch.as_tensor(ab, dtype=self.means.dtype, device=self.means.device)
        eye = torch.eye(self.dim, dtype=self.means.dtype, device=self.means.device)
        return GaussianMixture(self.weights, ab.sqrt() * self.means, ab * self.covs + (1 - ab) * eye)

    def _component_terms(self, x: torch.Tensor):
        """Per-component log N(x; m_k, C_k) (B, K) and C_k^{-1}(x - m_k) (B, K, d)."""
        _check_x(x, self.dim, self.means)
        L = torch.linalg.cholesky(self.covs)                        # (K, d, d)
        diff = x[:, None, :] - self.means[None]                     # (B, K, d)
        z = torch.linalg.solve_triangular(L[None], diff[..., None], upper=False)[..., 0]
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)   # (K,)
        logn = -0.5 * (z ** 2).sum(-1) - 0.5 * logdet - 0.5 * self.dim * math.log(2 * math.pi)
        prec_diff = torch.cholesky_solve(diff[..., None], L[None], upper=False)[..., 0]
        return logn, prec_diff

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)`` (B,) for ``x`` of shape (B, d)."""
        logn, _ = self._component_terms(x)
        return torch.logsumexp(logn + self.weights.log(), dim=-1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities ``P(k | x)`` (B, K)."""
        logn, _ = self._component_terms(x)
        return torch.softmax(logn + self.weights.log(), dim=-1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``grad_x log p(x) = -sum_k P(k|x) C_k^{-1} (x - m_k)`` (B, d)."""
        logn, prec_diff = self._component_terms(x)
        resp = torch.softmax(logn + self.weights.log(), dim=-1)
        return -(resp[..., None] * prec_diff).sum(1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact samples (n, d); draws the components, then ``m_k + L_k z``."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        dev, dt = self.means.device, self.means.dtype
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=dt, device=dev)
        L = torch.linalg.cholesky(self.covs)
        return self.means[k] + (L[k] @ z[..., None])[..., 0]


class MixtureDenoiser:
    """Exact denoiser of a diffused mixture: ``eps_hat(x_t, t) = -sqrt(1 - ab_t) grad log p_t(x_t)``.

    Args:
        mixture: ``p_0``.
        alphas_cumprod: (num_train_timesteps,) alpha-bar indexed by training timestep
            (``Schedule.alphas_cumprod``).
    """

    def __init__(self, mixture: GaussianMixture, alphas_cumprod: torch.Tensor):
        self.mixture = mixture
        self.alphas_cumprod = alphas_cumprod.to(dtype=torch.float64, device="cpu")

    def ab(self, t) -> float:
        return float(self.alphas_cumprod[int(t)])

    def eps_hat(self, x_t: torch.Tensor, t) -> torch.Tensor:
        ab = self.ab(t)
        p_t = self.mixture.to(dtype=x_t.dtype).diffused(ab)
        return -math.sqrt(1 - ab) * p_t.score(x_t)

    __call__ = eps_hat

    def log_prob_t(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """Exact ``log p_t(x_t)`` (B,)."""
        return self.mixture.to(dtype=x_t.dtype).diffused(self.ab(t)).log_prob(x_t)


def ring_mixture(num_modes: int = 8, radius: float = 2.0, std: float = 0.25,
                 dtype=torch.float64) -> GaussianMixture:
    """The 2-D toy: ``num_modes`` isotropic Gaussians evenly spaced on a circle."""
    ang = torch.arange(num_modes, dtype=dtype) * (2 * math.pi / num_modes)
    means = radius * torch.stack([ang.cos(), ang.sin()], -1)
    covs = (std ** 2) * torch.eye(2, dtype=dtype).expand(num_modes, 2, 2).clone()
    return GaussianMixture(torch.full((num_modes,), 1.0 / num_modes, dtype=dtype), means, covs)
