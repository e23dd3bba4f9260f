"""Analytic Gaussian-mixture diffusion: exact ``eps_hat``, ``x0_hat``, velocity, score and log-density.

A mixture ``p_0 = sum_k w_k N(m_k, S_k)`` pushed along any path ``x_t = a_t x_0 + s_t eps`` stays a
mixture:

    p_t = sum_k w_k N( a_t m_k,  a_t^2 S_k + s_t^2 I )

(VP: ``a = sqrt(ab), s = sqrt(1 - ab)``; rectified flow: ``a = 1 - t, s = t``), so the score
``grad log p_t`` and the optimal predictions are exact:

    eps*  = -s_t grad log p_t(x_t)              x0* = E[x_0 | x_t] = (x_t - s_t eps*) / a_t
    v*    = eps* - x0*                          (the rectified-flow velocity)

``GaussianMixture`` holds ``p_0``; ``MixtureDenoiser`` is the model protocol the sampler calls,
``eps_hat(x_t, t)`` with ``t`` a model timestep, plus ``predict`` (exact ``x0*`` also at ``a_t = 0``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .kernels import tweedie

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

    @property
    def mean(self) -> torch.Tensor:
        """``E[x] = sum_k w_k m_k`` (d,)."""
        return self.weights @ self.means

    # ---- the diffused mixture p_t -------------------------------------------------------------
    def diffused(self, ab: float | torch.Tensor) -> "GaussianMixture":
        """VP ``p_t``: means ``sqrt(ab) m_k``, covariances ``ab S_k + (1 - ab) I``."""
        ab = torch.as_tensor(ab, dtype=self.means.dtype, device=self.means.device)
        eye = torch.eye(self.dim, dtype=self.means.dtype, device=self.means.device)
        return GaussianMixture(self.weights, ab.sqrt() * self.means, ab * self.covs + (1 - ab) * eye)

    def along(self, a: float, s: float) -> "GaussianMixture":
        """``p_t`` on the path ``x_t = a x_0 + s eps``: means ``a m_k``, covariances ``a^2 S_k + s^2 I``."""
        if not (math.isfinite(a) and math.isfinite(s)) or a < 0 or s < 0 or a == s == 0:
            raise ValueError(f"need a, s >= 0, not both 0; got a={a}, s={s}")
        eye = torch.eye(self.dim, dtype=self.means.dtype, device=self.means.device)
        return GaussianMixture(self.weights, a * self.means, a * a * self.covs + s * s * eye)

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

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log N(x; m_k, C_k)`` (B, K) of every component (weights not included)."""
        return self._component_terms(x)[0]

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
    """Exact denoiser of a mixture on a path: ``eps_hat(x_t, t) = -s_t grad log p_t(x_t)``.

    Args:
        mixture: ``p_0``.
        path: a ``Schedule`` (VP or flow; ``Schedule.coefficients`` maps ``t`` to ``(a_t, s_t)``), or
            a VP alpha-bar (num_train_timesteps,) indexed by training timestep (``Schedule.alphas_cumprod``).
    """

    def __init__(self, mixture: GaussianMixture, path):
        self.mixture = mixture
        if torch.is_tensor(path):
            self.schedule, self.alphas_cumprod = None, path.to(dtype=torch.float64, device="cpu")
        elif hasattr(path, "coefficients"):
            self.schedule = path
            ac = getattr(path, "alphas_cumprod", None) if path.kind == "vp" else None
            self.alphas_cumprod = None if ac is None else ac.to(dtype=torch.float64, device="cpu")
        else:
            raise TypeError(f"path must be a Schedule or an alphas_cumprod tensor, got {type(path).__name__}")

    def ab(self, t) -> float:
        """VP alpha-bar at training timestep ``t``."""
        if self.alphas_cumprod is None:
            raise AttributeError("a flow path has no alpha-bar: use coefficients(t)")
        return float(self.alphas_cumprod[int(t)])

    def coefficients(self, t) -> tuple[float, float]:
        """``(a_t, s_t)`` at model timestep ``t``."""
        if self.alphas_cumprod is not None:
            ab = self.ab(t)
            return math.sqrt(ab), math.sqrt(1 - ab)
        return self.schedule.coefficients(t)

    def p_t(self, t, dtype=torch.float64) -> GaussianMixture:
        """The mixture ``p_t`` at model timestep ``t``."""
        mix = self.mixture.to(dtype=dtype)
        if self.alphas_cumprod is not None:
            return mix.diffused(self.ab(t))
        return mix.along(*self.coefficients(t))

    def eps_hat(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """``eps* = -s_t grad log p_t(x_t)`` (B, d)."""
        _, s = self.coefficients(t)
        return -s * self.p_t(t, x_t.dtype).score(x_t)

    __call__ = eps_hat

    def predict(self, x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``(eps*, x0*)``: ``x0* = (x_t - s_t eps*) / a_t``, and ``E[x_0]`` where ``a_t = 0``."""
        a, s = self.coefficients(t)
        eps = self.eps_hat(x_t, t)
        if a == 0.0:                 # x_t carries no signal: the posterior mean is the prior mean
            # (0 * x_t keeps x0* on the autograd graph: grad_{x_t} r(x0*) = 0 there, exactly)
            return eps, self.mixture.mean.to(x_t.dtype) + 0.0 * x_t
        return eps, tweedie(x_t, eps, a, s)

    def velocity(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """Rectified flow: ``v* = eps* - x0*`` (B, d)."""
        if self.schedule is None or self.schedule.kind != "flow":
            raise ValueError("velocity is the rectified-flow parametrisation: build the denoiser on a flow schedule")
        eps, x0 = self.predict(x_t, t)
        return eps - x0

    def log_prob_t(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """Exact ``log p_t(x_t)`` (B,)."""
        return self.p_t(t, x_t.dtype).log_prob(x_t)


def ring_mixture(num_modes: int = 8, radius: float = 2.0, std: float = 0.25,
                 dtype=torch.float64) -> GaussianMixture:
    """The 2-D toy: ``num_modes`` isotropic Gaussians evenly spaced on a circle."""
    ang = torch.arange(num_modes, dtype=dtype) * (2 * math.pi / num_modes)
    means = radius * torch.stack([ang.cos(), ang.sin()], -1)
    covs = (std ** 2) * torch.eye(2, dtype=dtype).expand(num_modes, 2, 2).clone()
    return GaussianMixture(torch.full((num_modes,), 1.0 / num_modes, dtype=dtype), means, covs)
