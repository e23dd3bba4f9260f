"""The learned-versus-exact world: the digits mixture embedded at 32x32, exact everywhere, and a UNet.

``p_0`` is the 64-D digits mixture (``digits.load_mixture()``: 16 full-covariance components, pixels
in [-1, 1]) pushed through a fixed linear map ``U`` (1024 x 64, bilinear upsampling 8x8 -> 32x32,
``F.interpolate(..., align_corners=False)``, the map ``trained.load_digits16`` uses for 16x16), plus an
isotropic floor ``tau^2 I`` so that ``p_0`` has full rank and a density:

    p_0 = sum_k w_k N(U m_k, U S_k U^T + tau^2 I)            on R^N, N = 1 x 32 x 32 = 1024.

Write ``U = Q R`` (``Q``: N x 64, orthonormal columns). Every component then has the
*low-rank-plus-isotropic* form this module works with,

    Sigma_k = Q V_k diag(lam_k) V_k^T Q^T + v_k (I - Q Q^T),

(``V_k`` the eigenvectors of ``R S_k R^T + tau^2 I`` in the 64 subspace coordinates, ``lam_k`` its
eigenvalues, ``v_k = tau^2``), and the form is closed under everything we need:

* diffusion ``x_t = a_t x_0 + s_t eps`` (VP: ``a_t = sqrt(ab_t)``, ``s_t = sqrt(1 - ab_t)``):
  means ``a mu_k``, ``lam -> a^2 lam + s^2``, ``v -> a^2 v + s^2`` (``LowRankMixture.diffused``);
* a quadratic reward ``r = -||x - c||^2 / (2 s_r^2)`` tilts ``p* ∝ p_0 exp(r / beta)`` to
  ``lam* = (1/lam + 1/T)^{-1}``, ``v* = (1/v + 1/T)^{-1}`` with ``T = s_r^2 beta``,
  ``mu* = mu + Sigma* (c - mu) / T`` and ``w* ∝ w N(c; mu, Sigma + T I)``;
* a linear reward ``r = <a, x>``: ``mu* = mu + Sigma a / beta``,
  ``w* ∝ w exp(<a, mu>/beta + a^T Sigma a / (2 beta^2))`` (``tilted``).

So ``log p_t``, the score, ``eps*(x_t, t) = -s_t grad log p_t(x_t)`` and exact samples of ``p_0``,
``p_t`` and ``p*`` cost O(B K N 64) (project on ``Q``, work in each component's eigenbasis; the
orthogonal complement is one number per component), never an N x N matrix.

Why 32x32: ``W`` (``whitening.whiten``) works on 64-entry tiles; at 32x32 that is 16 tiles per domain
(8x8 patches, 16 DCT bands), and tiles of 16 give 64. On the 8x8 digits world W sees a single tile
and cannot see correlation (docs/METHOD.md section 4).

The learned model: a small ``diffusers.UNet2DModel`` trained on fresh exact samples of ``p_0`` by
``scripts/train_embedded_unet.py`` (weights in ``data/unet_embedded/``, sha256 in ``SHA256``), wrapped
as the model protocol ``eps_hat(x_t, t)`` by ``load_unet``. The same sampler can run on the UNet or
on the exact ``ExactDenoiser``: the difference is the point of this world.

The problem: ``r(x) = -||x - c||^2 / (2 * 4^2)`` with ``c`` the mean training 3 upsampled (a digit-shaped,
spatially correlated gradient), ``beta = 1``; ``p*`` is exact (``tilted``), so is ``E_p*[r]``
(``expected_reward``). The benchmark (``run_benchmark``, ``python -m ntrk_minimal.bench --task
embedded``) runs base, DPS, NTRK (W), NTRK (W off), SVDD-4, SMC-4 and best-of-4 through
``ntrk_minimal.bench`` twice, on the UNet and on ``eps*``; fidelity = the energy distance (and KID) to
exact ``p*`` samples, the exact ``log p_0`` and the complement energy; levels: the p* reward, each
method's closest point to p*, and NTRK's effective step. Then it probes every state where a sampler
queries the denoiser (``TrajectoryProbe``: learned error, typicality under the true ``p_t``), compares
the reward gradient through the UNet with the one through ``eps*`` (``gradient_profile``) and ablates W
(``ablation``: tiles, domains, stages) at matched effective step.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import paths
from .bench import methods as M
from .rewards import LinearReward, QuadraticReward
from .trained import UNetDenoiser

__all__ = ["DATA_DIR", "UNET_DIR", "SHA256", "SAMPLE_SHAPE", "N", "TAU", "upsample_matrix",
           "LowRankMixture", "embed", "embedded_mixture", "ExactDenoiser", "tilted", "unet_config",
           "scheduler_config", "EmbeddedUNet", "load_unet", "load_scheduler", "load_schedule", "verify",
           "TARGET_CLASS", "REWARD_SCALE", "BETA", "template", "target_reward"]

DATA_DIR = paths.DATA
UNET_DIR = DATA_DIR / "unet_embedded"
SAMPLE_SHAPE = (1, 32, 32)
N = 1024                    # entries per sample
SRC = 8                     # the digits' side: U maps 8x8 -> 32x32
TAU = 0.1                   # isotropic floor: p_0 = U-embedded digits + N(0, tau^2 I)
TARGET_CLASS = 3            # the reward pulls toward the mean training image of this class
REWARD_SCALE = 4.0          # r(x) = -||x - c||^2 / (2 * 4^2): about -9 on p_0, -3 on p* (beta = 1)
BETA = 1.0                  # the KL temperature of the exact target p* ∝ p_0 exp(r / beta)
# sha256 of the files we load, recorded when scripts/train_embedded_unet.py wrote them (it prints it).
SHA256 = {
    "unet/diffusion_pytorch_model.safetensors": "62de423ec1aed23a8f65eef0625d531cd4f9a5993e05a0529f8892e2ca9e388e",
}


def verify(path, expected: str | None) -> Path:
    """Raise a clear error unless ``path`` exists and its sha256 equals ``expected``."""
    return paths.verify(path, expected, made_by="scripts/train_embedded_unet.py",
                            recorded_in="ntrk_minimal/embedded.py SHA256")


# ---- the embedding ------------------------------------------------------------------------------
def upsample_matrix(src: int = SRC, dst: int = 32, dtype=torch.float64) -> torch.Tensor:
    """``U`` (dst^2, src^2): column j = bilinear upsampling (``align_corners=False``) of pixel j.

    ``U @ x.flatten()`` equals ``F.interpolate(x[None, None], size=(dst, dst), mode="bilinear",
    align_corners=False).flatten()`` for an image ``x`` (src, src): interpolation is linear.
    """
    eye = torch.eye(src * src, dtype=dtype).reshape(src * src, 1, src, src)
    cols = F.interpolate(eye, size=(dst, dst), mode="bilinear", align_corners=False)
    return cols.reshape(src * src, dst * dst).T.contiguous()


# ---- low-rank-plus-isotropic mixtures ----------------------------------------------------------
def _flat(x: torch.Tensor, n: int) -> torch.Tensor:
    if not torch.is_tensor(x) or x.ndim < 2 or x[0].numel() != n:
        raise ValueError(f"x must have shape (batch, {n}) or (batch, *shape) with {n} entries per sample, "
                         f"got {getattr(x, 'shape', type(x).__name__)}")
    return x.reshape(x.shape[0], n)


@dataclass
class LowRankMixture:
    """``sum_k w_k N(mu_k, Q V_k diag(lam_k) V_k^T Q^T + v_k (I - Q Q^T))`` on R^N.

    Args (float tensors on one device):
        weights: (K,) positive (normalised on construction).
        means:   (K, N) means in pixel space (they may leave the subspace, e.g. after a tilt).
        Q:       (N, r) orthonormal columns: the shared subspace.
        V:       (K, r, r) orthonormal: each component's eigenvectors in subspace coordinates.
        lam:     (K, r) > 0: the eigenvalues inside the subspace.
        v_perp:  (K,) > 0: the variance of every direction orthogonal to the subspace.
    """

    weights: torch.Tensor
    means: torch.Tensor
    Q: torch.Tensor
    V: torch.Tensor
    lam: torch.Tensor
    v_perp: torch.Tensor

    def __post_init__(self):
        K, n = self.means.shape
        r = self.Q.shape[1]
        shapes = {"weights": (K,), "Q": (n, r), "V": (K, r, r), "lam": (K, r), "v_perp": (K,)}
        for name, shape in shapes.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(getattr(self, name).shape)}")
        if (self.weights <= 0).any() or (self.lam <= 0).any() or (self.v_perp <= 0).any():
            raise ValueError("weights, lam and v_perp must be positive")
        self.weights = self.weights / self.weights.sum()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def rank(self) -> int:
        return self.Q.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def to(self, dtype=None, device=None) -> "LowRankMixture":
        f = lambda a: a.to(dtype=dtype, device=device)
        return LowRankMixture(f(self.weights), f(self.means), f(self.Q), f(self.V), f(self.lam), f(self.v_perp))

    def diffused(self, a: float, s: float) -> "LowRankMixture":
        """The law of ``a x_0 + s eps``: means ``a mu``, ``lam -> a^2 lam + s^2``, ``v -> a^2 v + s^2``."""
        return LowRankMixture(self.weights, a * self.means, self.Q, self.V, a * a * self.lam + s * s,
                              a * a * self.v_perp + s * s)

    def dense_covs(self) -> torch.Tensor:
        """(K, N, N) covariances (tests and small instances only)."""
        QV = self.Q @ self.V                                              # (K, N, r)
        P = self.Q @ self.Q.T
        eye = torch.eye(self.dim, dtype=self.Q.dtype, device=self.Q.device)
        return (QV * self.lam[:, None, :]) @ QV.transpose(-1, -2) + self.v_perp[:, None, None] * (eye - P)

    def cov_matvec(self, u: torch.Tensor) -> torch.Tensor:
        """``Sigma_k u_k`` (K, N) for ``u`` (K, N) (one vector per component) or (N,) (the same for all)."""
        u = u.expand(self.num_components, self.dim)
        y = u @ self.Q                                                    # (K, r) subspace coordinates
        z = torch.einsum("kji,kj->ki", self.V, y) * self.lam              # diag(lam) V^T y
        inside = torch.einsum("kij,kj->ki", self.V, z) @ self.Q.T          # Q V diag(lam) V^T Q^T u
        return inside + self.v_perp[:, None] * (u - y @ self.Q.T)

    # -- per-component terms: log N(x; mu_k, Sigma_k) and what the score needs
    def _terms(self, x: torch.Tensor):
        x = _flat(x, self.dim).to(self.means.dtype)
        Q, V, lam, v = self.Q, self.V, self.lam, self.v_perp
        yx, ym = x @ Q, self.means @ Q                                    # (B, r), (K, r)
        x_perp = x - yx @ Q.T                                             # (B, N)
        m_perp = self.means - ym @ Q.T                                    # (K, N)
        K, r = V.shape[:2]
        Vcat = V.permute(1, 0, 2).reshape(r, K * r)                      # [V_1 ... V_K] (r, K r)
        z = (yx @ Vcat).reshape(-1, K, r) - torch.einsum("kj,kji->ki", ym, V)[None]   # V_k^T (y - y_k)
        e_perp = ((x_perp ** 2).sum(1)[:, None] - 2 * x_perp @ m_perp.T
                  + (m_perp ** 2).sum(1)[None]).clamp_min(0)              # ||(x - mu_k)_perp||^2 (B, K)
        n = self.dim
        logdet = lam.log().sum(1) + (n - r) * v.log()                     # (K,)
        maha_in = (z ** 2 / lam[None]).sum(-1)                            # (B, K)
        logn = -0.5 * (maha_in + e_perp / v[None] + logdet[None] + n * math.log(2 * math.pi))
        return logn + self.weights.log()[None], z, x_perp, m_perp, maha_in, e_perp

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)`` (B,) for ``x`` (B, N) or (B, *shape)."""
        return torch.logsumexp(self._terms(x)[0], -1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """``P(k | x)`` (B, K)."""
        return torch.softmax(self._terms(x)[0], -1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``grad log p(x) = -sum_k P(k|x) Sigma_k^{-1} (x - mu_k)`` in the shape of ``x``, where
        ``Sigma_k^{-1} d = Q V_k diag(1/lam_k) V_k^T Q^T d + d_perp / v_k``."""
        logits, z, x_perp, m_perp, _, _ = self._terms(x)
        P = torch.softmax(logits, -1)                                     # (B, K)
        K, r = self.V.shape[:2]
        u = (P[..., None] * z / self.lam[None]).reshape(-1, K * r)       # P(k|x) diag(1/lam_k) V_k^T (y - y_k)
        inside = (u @ self.V.transpose(1, 2).reshape(K * r, r)) @ self.Q.T   # sum_k Q V_k u_k
        pv = P / self.v_perp[None]                                        # (B, K)
        outside = pv.sum(1, keepdim=True) * x_perp - pv @ m_perp
        return -(inside + outside).reshape(x.shape)

    def typicality(self, x: torch.Tensor) -> dict:
        """How typical ``x`` is under this law, per sample (B,): ``log_prob``; ``maha_in`` /
        ``perp_ratio``: the in-subspace Mahalanobis distance^2 / r and the complement energy
        ``||(x - mu)_perp||^2 / (v (N - r))`` of the most responsible component (both ~1 for a
        genuine draw: chi-square(r)/r and chi-square(N - r)/(N - r))."""
        logits, _, _, _, maha_in, e_perp = self._terms(x)
        k = logits.argmax(-1)
        rows = torch.arange(len(k), device=k.device)
        n, r = self.dim, self.rank
        return {"log_prob": torch.logsumexp(logits, -1), "maha_in": maha_in[rows, k] / r,
                "perp_ratio": e_perp[rows, k] / (self.v_perp[k] * (n - r))}

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact draws (n, N): component k, then ``mu_k + Q V_k (sqrt(lam_k) z) + sqrt(v_k) e_perp``."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        dt, dev = self.means.dtype, self.means.device
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.rank, generator=generator, dtype=dt, device=dev)
        e = torch.randn(n, self.dim, generator=generator, dtype=dt, device=dev)
        inside = torch.einsum("bij,bj->bi", self.V[k], self.lam[k].sqrt() * z) @ self.Q.T
        e_perp = e - (e @ self.Q) @ self.Q.T
        return self.means[k] + inside + self.v_perp[k].sqrt()[:, None] * e_perp


def embed(mixture, U: torch.Tensor, tau: float) -> LowRankMixture:
    """The law of ``U x + tau e`` for ``x ~ mixture`` (a ``GaussianMixture`` on R^r) and ``e ~ N(0, I_N)``:
    ``sum_k w_k N(U m_k, U S_k U^T + tau^2 I)``, with ``U = Q R`` (``U``: (N, r), full column rank).

    In the subspace coordinates ``Q^T x`` the covariance is ``R S_k R^T + tau^2 I = V_k diag(lam_k) V_k^T``;
    every direction orthogonal to the columns of ``U`` has variance ``tau^2``.
    """
    if not tau > 0:
        raise ValueError(f"tau must be > 0 (the floor that gives p_0 a density), got {tau!r}")
    if U.ndim != 2 or U.shape[1] != mixture.dim or U.shape[0] <= U.shape[1]:
        raise ValueError(f"U must have shape (N, {mixture.dim}) with N > {mixture.dim}, got {tuple(U.shape)}")
    dt = mixture.means.dtype
    U = U.to(dt)
    Q, R = torch.linalg.qr(U)                                             # U = Q R
    C = R @ mixture.covs @ R.T                                            # U S U^T = Q C Q^T
    lam, V = torch.linalg.eigh(0.5 * (C + C.transpose(-1, -2)))
    if (lam <= -1e-12 * lam.abs().max()).any():
        raise ValueError("the mixture's covariances must be positive semi-definite")
    K = mixture.num_components
    return LowRankMixture(mixture.weights, mixture.means @ U.T, Q, V, lam.clamp_min(0) + tau ** 2,
                          torch.full((K,), tau ** 2, dtype=dt, device=U.device))


def embedded_mixture(tau: float = TAU, dtype=torch.float64) -> LowRankMixture:
    """``p_0``: the digits mixture embedded at 32x32 by bilinear upsampling (``upsample_matrix``),
    plus ``tau^2 I``."""
    from .digits import load_mixture

    return embed(load_mixture().to(dtype=dtype), upsample_matrix(dtype=dtype), tau)


def tilted(mixture: LowRankMixture, reward, beta: float) -> LowRankMixture:
    """Exact ``p* ∝ p_0 exp(r / beta)`` for a ``QuadraticReward`` or a ``LinearReward`` (see the module
    docstring for the formulas); the result keeps the low-rank-plus-isotropic form."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    m = mixture
    dt, dev = m.means.dtype, m.means.device
    if isinstance(reward, QuadraticReward):
        if reward.dim != m.dim:
            raise ValueError(f"reward has dimension {reward.dim}, the mixture {m.dim}")
        c = reward.center.to(dtype=dt, device=dev)
        T = reward.scale ** 2 * beta                                      # r / beta = -||x - c||^2 / (2 T)
        wide = LowRankMixture(m.weights, m.means, m.Q, m.V, m.lam + T, m.v_perp + T)
        logw = wide._terms(c[None])[0][0]                                 # log w_k + log N(c; mu_k, Sigma_k + T I)
        lam_s, v_s = 1 / (1 / m.lam + 1 / T), 1 / (1 / m.v_perp + 1 / T)  # Sigma* = (Sigma^-1 + I / T)^-1
        new = LowRankMixture(m.weights, m.means, m.Q, m.V, lam_s, v_s)
        shift = new.cov_matvec(c[None] - m.means) / T                    # Sigma* (c - mu) / T
        return LowRankMixture(torch.softmax(logw, 0), m.means + shift, m.Q, m.V, lam_s, v_s)
    if isinstance(reward, LinearReward):
        if reward.dim != m.dim:
            raise ValueError(f"reward has dimension {reward.dim}, the mixture {m.dim}")
        a = reward.direction.to(dtype=dt, device=dev)
        Sa = m.cov_matvec(a)                                              # (K, N)
        logw = m.weights.log() + m.means @ a / beta + (Sa @ a) / (2 * beta ** 2)
        return LowRankMixture(torch.softmax(logw, 0), m.means + Sa / beta, m.Q, m.V, m.lam.clone(),
                              m.v_perp.clone())
    raise TypeError(f"tilted has a closed form only for QuadraticReward or LinearReward, "
                    f"got {type(reward).__name__}")


# ---- the exact denoiser ------------------------------------------------------------------------
class ExactDenoiser:
    """``eps*(x_t, t) = -s_t grad log p_t(x_t)`` with ``p_t`` the law of ``a_t x_0 + s_t eps``.

    ``alphas_cumprod`` (num_train_timesteps,): the VP alpha-bar, indexed by training timestep
    (``a_t = sqrt(ab_t)``, ``s_t = sqrt(1 - ab_t)``). ``x_t`` (B, *shape) with N entries per sample;
    differentiable in ``x_t`` (the guided kernels need ``grad r(x0_hat(x_t))``).
    """

    def __init__(self, mixture: LowRankMixture, alphas_cumprod: torch.Tensor):
        self.mixture = mixture
        self.alphas_cumprod = torch.as_tensor(alphas_cumprod).to(dtype=torch.float64, device="cpu")

    def a_s(self, t) -> tuple[float, float]:
        ab = float(self.alphas_cumprod[int(t)])
        return math.sqrt(ab), math.sqrt(1.0 - ab)

    def marginal(self, t) -> LowRankMixture:
        """``p_t`` as a ``LowRankMixture``."""
        a, s = self.a_s(t)
        return self.mixture.diffused(a, s)

    def __call__(self, x_t: torch.Tensor, t) -> torch.Tensor:
        a, s = self.a_s(t)
        p_t = self.mixture.to(dtype=x_t.dtype, device=x_t.device).diffused(a, s)
        return -s * p_t.score(x_t)

    def log_prob_t(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """Exact ``log p_t(x_t)`` (B,)."""
        return self.marginal(t).log_prob(x_t)


# ---- the learned model -------------------------------------------------------------------------
def unet_config() -> dict:
    """A small ``UNet2DModel`` for 1x32x32: 32 -> 16 -> 8 -> 4, no attention."""
    return dict(sample_size=32, in_channels=1, out_channels=1, layers_per_block=1,
                block_out_channels=(16, 32, 64, 64), norm_num_groups=8,
                down_block_types=("DownBlock2D",) * 4, up_block_types=("UpBlock2D",) * 4)


def scheduler_config() -> dict:
    """The training noise schedule: 1000-step linear VP (DDPM), epsilon prediction (as ``trained``)."""
    from .trained import scheduler_config as cfg

    return cfg()


class EmbeddedUNet(UNetDenoiser):
    """The model protocol around a ``UNet2DModel`` (``trained.UNetDenoiser``) on (B, 1, 32, 32):
    ``eps_hat = unet(x_t, t)``, computed in the UNet's dtype (float32), returned in ``x_t``'s; gradients
    flow to ``x_t``, never to the frozen weights."""

    sample_shape = SAMPLE_SHAPE


def load_unet(path: Path | str = UNET_DIR, check: bool = True) -> EmbeddedUNet:
    """``UNet2DModel.from_pretrained(path / "unet")`` after a sha256 check of its weight file."""
    from diffusers import UNet2DModel

    path = Path(path)
    name = "unet/diffusion_pytorch_model.safetensors"
    if check:
        verify(path / name, SHA256[name])
    elif not (path / name).is_file():
        raise FileNotFoundError(f"data file {path / name} is missing: run scripts/train_embedded_unet.py")
    return EmbeddedUNet(UNet2DModel.from_pretrained(path / "unet", low_cpu_mem_usage=False))


def load_scheduler(path: Path | str = UNET_DIR):
    """The DDIM scheduler built from the saved DDPM training config (same alpha-bar)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_pretrained(Path(path) / "scheduler")


def load_schedule(num_steps: int = 25, eta: float = 1.0, path: Path | str = UNET_DIR):
    """``Schedule.from_scheduler(scheduler, num_steps, eta)`` for this world."""
    from .schedules import Schedule

    return Schedule.from_scheduler(load_scheduler(path), num_steps, eta=eta)


# ---- the problem: reward and exact target --------------------------------------------------------
def template(target_class: int = TARGET_CLASS) -> torch.Tensor:
    """``c = U x_c`` (N,): the mean 8x8 training image of ``target_class``, upsampled to 32x32."""
    from .digits import load_digits64

    if not (isinstance(target_class, int) and 0 <= target_class <= 9):
        raise ValueError(f"target_class must be an int in 0..9, got {target_class!r}")
    x, y = load_digits64("train")
    return upsample_matrix() @ x[y == target_class].mean(0)


def target_reward(target_class: int = TARGET_CLASS, scale: float = REWARD_SCALE) -> QuadraticReward:
    """``r(x) = -||x - c||^2 / (2 scale^2)`` with ``c = template(target_class)``: a spatially structured
    pull (its gradient ``(c - x) / scale^2`` is a digit-shaped image); ``tilted`` gives its exact ``p*``."""
    return QuadraticReward(template(target_class), scale)


def expected_reward(mixture: LowRankMixture, reward: QuadraticReward) -> float:
    """Exact ``E[r(x)]`` under ``mixture`` for ``r = -||x - c||^2 / (2 s^2)``:
    ``-sum_k w_k (||mu_k - c||^2 + tr Sigma_k) / (2 s^2)``, ``tr Sigma_k = sum(lam_k) + (N - r) v_k``."""
    if not isinstance(reward, QuadraticReward):
        raise TypeError(f"expected_reward needs a QuadraticReward, got {type(reward).__name__}")
    m = mixture
    c = reward.center.to(m.means.dtype)
    tr = m.lam.sum(1) + (m.dim - m.rank) * m.v_perp
    return float(-(m.weights * (((m.means - c) ** 2).sum(1) + tr)).sum() / (2 * reward.scale ** 2))


@dataclass
class EmbeddedProblem:
    """Everything a benchmark of this world needs: ``p_0``, the reward, the exact ``p*``, the 25-step
    DDPM-variance grid of the UNet's scheduler, the exact denoiser and (``load_learned``) the UNet."""

    p0: LowRankMixture
    reward: QuadraticReward
    beta: float
    pstar: LowRankMixture
    schedule: object
    exact: ExactDenoiser
    unet: EmbeddedUNet | None


def embedded_problem(load_learned: bool = True, num_steps: int = 25, beta: float = BETA) -> EmbeddedProblem:
    """The benchmark problem: pull ``p_0`` toward the class-3 template (``target_reward``) at ``beta``."""
    sched = load_schedule(num_steps, eta=1.0)
    p0 = embedded_mixture()
    reward = target_reward()
    return EmbeddedProblem(p0, reward, beta, tilted(p0, reward, beta), sched,
                           ExactDenoiser(p0, sched.alphas_cumprod), load_unet() if load_learned else None)


# ---- instruments: the effective step of NTRK, the denoiser error along trajectories ------------------
class TrajectoryProbe:
    """A model wrapper that measures, at every state ``x_t`` where a sampler queries the denoiser, the
    learned-vs-exact error ``||eps_hat(x_t) - eps*(x_t)||^2 / N`` and how typical ``x_t`` is under the
    true marginal ``p_t`` (``LowRankMixture.typicality``: ``log p_t``, in-subspace Mahalanobis / r,
    complement energy / (v (N - r))). Stores per timestep the sum over rows; ``table()`` gives means."""

    def __init__(self, model, exact: ExactDenoiser):
        self.model, self.exact, self.acc = model, exact, {}

    def __call__(self, x_t, t):
        out = self.model(x_t, t)
        with torch.no_grad():
            x = x_t.detach().to(torch.float64)
            e_star = self.exact(x, t)
            ty = self.exact.marginal(t).typicality(x)
            row = {"gap": ((out.detach().to(torch.float64) - e_star) ** 2).flatten(1).mean(1),
                   "log_p_t": ty["log_prob"], "maha_in": ty["maha_in"], "perp_ratio": ty["perp_ratio"]}
        a = self.acc.setdefault(int(t), {k: [] for k in row})
        for k, v in row.items():
            a[k].append(v)
        return out

    def table(self) -> list[dict]:
        """Per timestep (decreasing t): mean and median of each statistic over every queried row."""
        out = []
        for t, a in sorted(self.acc.items(), reverse=True):
            v = {k: torch.cat(vs) for k, vs in a.items()}
            row = {"t": t, "rows": int(len(v["gap"]))}
            for k, x in v.items():
                row[k], row[k + "_median"] = float(x.mean()), float(x.median())
            out.append(row)
        return out


def reference_profile(pb: EmbeddedProblem, model, n: int = 256, seed: int = 4242) -> list[dict]:
    """The same statistics on *genuine* draws of ``p_t`` (``x_t = a x_0 + s eps``, ``x_0 ~ p_0``) at
    every timestep of the schedule: what a denoiser is trained on, the yardstick for trajectories."""
    g = torch.Generator().manual_seed(seed)
    x0 = pb.p0.sample(n, g).reshape((n,) + SAMPLE_SHAPE)
    eps = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    probe = TrajectoryProbe(model, pb.exact)
    with torch.no_grad():
        for t in pb.schedule.timesteps.tolist():
            a, s = pb.exact.a_s(t)
            probe(a * x0 + s * eps, t)
    return probe.table()


def gradient_profile(pb: EmbeddedProblem, n: int = 32, seed: int = 4343) -> list[dict]:
    """The guidance signal itself, learned against exact, on genuine draws of ``p_t`` at every step of
    the schedule: ``g = grad_{x_t} r(x0_hat(x_t))`` through the UNet and through ``eps*``
    (``kernels.reward_grad``). Per step: median ``||g_theta|| / ||g*||``, mean ``cos(g_theta, g*)``,
    mean ``cos(W(g_theta), g*)`` (does W bring the learned direction closer?), and the RMS error of
    ``x0_hat``. At high noise ``x0_hat = (x_t - s_t eps_hat) / a_t`` divides the learned error by a
    small ``a_t``, and its Jacobian more so."""
    from .kernels import reward_grad
    from .whitening import whiten as W

    g = torch.Generator().manual_seed(seed)
    x0 = pb.p0.sample(n, g).reshape((n,) + SAMPLE_SHAPE)
    eps = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    cos = lambda u, v: torch.nn.functional.cosine_similarity(u.flatten(1), v.flatten(1))
    rows = []
    for i, t in enumerate(pb.schedule.timesteps.tolist()):
        a, s = pb.exact.a_s(t)
        x_t = a * x0 + s * eps
        _, x0_u, g_u = reward_grad(pb.unet, pb.reward, x_t, i, pb.schedule)
        _, x0_e, g_e = reward_grad(pb.exact, pb.reward, x_t, i, pb.schedule)
        ratio = g_u.flatten(1).norm(dim=1) / g_e.flatten(1).norm(dim=1)
        rows.append({"t": t, "a_t": a, "norm_ratio": float(ratio.median()), "cos": float(cos(g_u, g_e).mean()),
                     "cos_W": float(cos(W(g_u), g_e).mean()), "cos_W_exact": float(cos(W(g_e), g_e).mean()),
                     "x0_rms_err": float(((x0_u - x0_e) ** 2).mean().sqrt())})
    return rows


# ---- methods: the table's (bench.methods), with this world's settings ------------------------------------
DECAY = "linear"            # NTRK's kappa_t falls linearly to 0 (the digits benchmark's choice)
#: what NTRK runs record here: W's effect per tilted step (bench.methods.WRecorder, ``w_summary="per_step"``)
DIAGNOSTICS = ("eff_step", "kappa_mean", "cos_wg", "wnorm", "lag1_g", "lag1_w")

run_base = M.base
#: DPS, lambda_t = scale sigma_t^2 / beta (scale = 1: the step of the exact tilt); a diverged run is a missing point
run_dps = partial(M.dps, on_diverge="nan", diagnostics=DIAGNOSTICS)
#: NTRK, rho_t = kappa_t^2 / N (``DECAY``), with the effective step along g and W's diagnostics
run_ntrk = partial(M.ntrk, decay=DECAY, w_summary="per_step", on_diverge="nan", diagnostics=DIAGNOSTICS)
#: NTRK with W switched off: norm matching g / ||g|| sqrt(N)
run_ntrk_off = partial(run_ntrk, whiten="norm_match")
#: SVDD-style search, soft selection k ∝ exp(r_k / temp); SMC with potentials exp(r(x0_hat) / temp)
run_svdd, run_smc = partial(M.svdd, per_beta=False), partial(M.smc, per_beta=False)
run_bon = M.best_of_n


def methods(quick: bool = False, K: int = 4) -> list:
    """The compared methods: base, DPS, NTRK (W), NTRK (W off), SVDD-K, SMC-K, best-of-K.

    Grids are geometric with 8 points (4 with ``quick``); natural limits: NTRK ``kappa = sqrt(N)``
    (``rho = 1``) and ``kappa -> 0`` (base); DPS ``scale -> 0`` (base); SVDD/SMC ``temp -> 0``
    (argmax / greedy) and ``temp -> inf`` (no selection: the base sampler).
    """
    from . import bench as P

    num = 4 if quick else 8
    grid = lambda lo, hi: P.geometric_grid(lo, hi, num)
    mp = dict(min_points=num)
    return [
        P.Method("base", run_base, budget=25),
        P.Method("dps", run_dps, "scale", P.geometric_grid(0.01, 5.12, num + 2), budget=25, limit=(0.0, None),
                 limit_notes=("(the base sampler)", ""), min_points=num + 2),
        P.Method("ntrk (W)", run_ntrk, "kappa", grid(0.25, 8.0), budget=25, limit=(0.0, math.sqrt(N)),
                 limit_notes=("(the base sampler)", "(rho_0 = 1)"), **mp),
        P.Method("ntrk (W off)", run_ntrk_off, "kappa", grid(0.25, 8.0), budget=25, limit=(0.0, math.sqrt(N)),
                 limit_notes=("(the base sampler)", "(rho_0 = 1)"), **mp),
        P.Method(f"svdd-{K}", run_svdd, "temp", grid(0.01, 3.0), budget=25 * K, limit=(0.0, math.inf),
                 limit_notes=("(argmax search)", "(uniform choice: the base sampler)"),
                 fixed={"num_candidates": K}, **mp),
        P.Method(f"smc-{K}", run_smc, "temp", grid(0.03, 10.0), budget=25 * K, limit=(0.0, math.inf),
                 limit_notes=("(greedy resampling)", "(no resampling: the base sampler)"),
                 fixed={"num_particles": K}, **mp),
        P.Method(f"best-of-{K}", run_bon, budget=25 * K, fixed={"num_samples": K}),
    ]


# ---- the world (protocol client) -----------------------------------------------------------------
N_REF = 2048                # exact p* samples per evaluation seed: the reference of ED and KID


class Evaluator:
    """``evaluate(x0, seed)``: target reward, exact ``log p_0``, the complement energy ratio, and the
    (unbiased) energy distance and KID (cubic kernel on the 1024 pixels) to ``N_REF`` exact ``p*``
    samples drawn for that seed (the same reference for every method: paired). ``floor(n, seed)``: the
    same numbers for ``n`` fresh exact ``p*`` samples (the exact-vs-exact floor at the same n)."""

    def __init__(self, pb: EmbeddedProblem, n_ref: int = N_REF):
        self.pb, self.n_ref, self._refs = pb, n_ref, {}

    def reference(self, seed: int) -> torch.Tensor:
        """The ``n_ref`` exact p* samples of ``seed`` and their within-set terms (cached): the mean
        distance ``E||Y - Y'||`` and the mean kernel ``E k(Y, Y')`` over pairs ``i != j``."""
        if seed not in self._refs:
            g = torch.Generator().manual_seed(7_000_000 + int(seed))
            y = self.pb.pstar.sample(self.n_ref, g)
            n = len(y)
            yy = float(torch.cdist(y, y).sum()) / (n * (n - 1))
            k = self._kernel(y, y)
            kyy = float(k.sum() - k.diagonal().sum()) / (n * (n - 1))
            self._refs[seed] = (y, yy, kyy)
        return self._refs[seed][0]

    @staticmethod
    def _kernel(x, y):
        return (x @ y.T / x.shape[1] + 1.0) ** 3                          # KID's cubic kernel

    def distances(self, x: torch.Tensor, seed: int) -> tuple[float, float]:
        """``(ED, KID)`` of ``x`` (m, N) to the reference of ``seed``: the unbiased energy distance
        ``2 E||X - Y|| - E||X - X'|| - E||Y - Y'||`` and the unbiased KID (``metrics.energy_distance(
        unbiased=True)`` and ``metrics.kid``, with the reference's own terms computed once)."""
        y = self.reference(seed)
        _, yy, kyy = self._refs[seed]
        m = len(x)
        ed = 2 * float(torch.cdist(x, y).mean()) - float(torch.cdist(x, x).sum()) / (m * (m - 1)) - yy
        kx = self._kernel(x, x)
        kid = float(kx.sum() - kx.diagonal().sum()) / (m * (m - 1)) + kyy - 2 * float(self._kernel(x, y).mean())
        return ed, kid

    def __call__(self, x0: torch.Tensor, seed: int) -> dict:
        pb = self.pb
        x = x0.detach().reshape(x0.shape[0], N).to(torch.float64)
        ref = self.reference(seed)
        far = ~torch.isfinite(x).all(1) | (x.abs().amax(1) > 10)      # pixels live in about [-1.5, 1.5]
        if not torch.isfinite(x).all():
            nan = float("nan")
            return {"target": nan, "loglik": nan, "perp": nan, "ed_pstar": nan, "kid_pstar": nan,
                    "diverged": float(far.double().mean())}
        with torch.no_grad():
            ty = pb.p0.typicality(x)
            ed, kd = self.distances(x, seed)
            return {"target": float(pb.reward(x).mean()), "loglik": float(ty["log_prob"].mean()),
                    "perp": float(ty["perp_ratio"].mean()), "ed_pstar": ed, "kid_pstar": kd,
                    "diverged": float(far.double().mean())}

    def floor(self, n: int, seed: int) -> dict:
        g = torch.Generator().manual_seed(8_000_000 + int(seed))
        return self(self.pb.pstar.sample(int(n), g), seed)


def exact_distance(pb: EmbeddedProblem, n: int = 2048, seed: int = 9_000_000) -> float:
    """Unbiased energy distance between ``n`` exact ``p_0`` and ``n`` exact ``p*`` samples (fixed seed):
    how far the tilt moves the law, the scale of the energy-distance margin."""
    from .metrics import energy_distance

    g = torch.Generator().manual_seed(seed)
    return energy_distance(pb.p0.sample(n, g), pb.pstar.sample(n, g), unbiased=True)


def make_world(pb: EmbeddedProblem, model: str = "unet"):
    """The protocol ``World`` of this problem with ``model = "unet"`` (the learned denoiser) or
    ``"exact"`` (``eps*``): the same samplers, the same evaluator, two models."""
    from . import bench as P

    if model not in ("unet", "exact"):
        raise ValueError(f"model must be 'unet' or 'exact', got {model!r}")
    if model == "unet" and pb.unet is None:
        raise ValueError("this problem was built without the UNet: embedded_problem(load_learned=True)")
    ev = Evaluator(pb)
    r0, rs = expected_reward(pb.p0, pb.reward), expected_reward(pb.pstar, pb.reward)
    metrics = {"target": P.Metric("target reward -||x - c||^2 / 32", True, 3),
               "loglik": P.Metric("mean log p_0 (exact)", True, 1),
               "ed_pstar": P.Metric("energy distance to exact p*", False, 4),
               "kid_pstar": P.Metric("KID to exact p* (pixels)", False, 5),
               "perp": P.Metric("complement energy / tau^2 (p_0: 1)", False, 4),
               "eff_step": P.Metric("effective step along g", True, 3),
               "cos_wg": P.Metric("cos(W(g), g)", True, 4),
               "diverged": P.Metric("share of diverged samples (|x| > 10)", False, 3)}
    # TOST margins, stated in advance from exact properties of the world (no method's output):
    ed0 = exact_distance(pb)
    margins = {"target": 0.05 * (rs - r0), "loglik": 2.0, "ed_pstar": 0.1 * ed0}
    notes = {"target": f"5% of the exact gap E_p*[r] - E_p0[r] = {rs - r0:.3f} between the target and p_0",
             "loglik": "2 nats per sample: < 0.1 SD of log p_0 over exact p_0 samples (SD ~ 22)",
             "ed_pstar": f"10% of the energy distance between exact p_0 and exact p* ({ed0:.4f}, 2048 each)"}
    return P.World(name=f"embedded digits 1x32x32, {'learned UNet' if model == 'unet' else 'exact eps*'}",
                   sample_shape=SAMPLE_SHAPE, model=pb.unet if model == "unet" else pb.exact, evaluate=ev,
                   metrics=metrics, fidelity="ed_pstar", target="target", margins=margins, margin_notes=notes,
                   floor=ev.floor, context=pb, dtype=torch.float64,
                   config={"model": model, "tau": TAU, "beta": pb.beta, "reward_scale": pb.reward.scale,
                           "target_class": TARGET_CLASS, "num_steps": pb.schedule.num_steps, "eta": 1.0,
                           "n_ref": ev.n_ref, "E_p0[r]": r0, "E_p*[r]": rs, "ntrk_decay": DECAY})


def levels_and_comparisons(pb: EmbeddedProblem, K: int = 4):
    """The stated operating points and the verdicts asked of this world.

    Levels: *p\* reward* (x = target at the exact ``E_p*[r]``: every method at the reward the exact
    tilt has; ED to p\* and ``log p_0`` there say who gets that reward most faithfully); *closest to
    p\** (each method at its own minimum of the ED to p\*, knob chosen on the tuning seeds); *matched
    effective step* (NTRK (W)'s ``eff_step`` at the p\* reward: W on and off moved equally far along g).
    """
    from . import bench as P

    search = (f"svdd-{K}", f"smc-{K}")
    W, off = "ntrk (W)", "ntrk (W off)"
    levels = [
        P.Level("p* reward", "target", expected_reward(pb.pstar, pb.reward),
                "E_p*[r] (exact, closed form): the reward of the exact tilted target"),
        P.Level("closest to p*", "ed_pstar", "min", "each method at its own minimum of the energy distance "
                "to exact p* (knob chosen on the tuning seeds)"),
        P.Level("matched effective step", "eff_step", lambda st: st.value_at(W, "p* reward", "eff_step"),
                "NTRK (W)'s effective step along g at the p* reward (tuning seeds)", methods=[W, off]),
    ]
    C = P.Comparison
    comparisons = [
        C("ED to p* at the p* reward: NTRK vs DPS", "p* reward", "ed_pstar", W, "dps"),
        C("ED to p* at the p* reward: NTRK vs best search baseline", "p* reward", "ed_pstar", W, search),
        C("ED to p* at the p* reward: W on vs off", "p* reward", "ed_pstar", W, off),
        C("log p_0 at the p* reward: NTRK vs DPS", "p* reward", "loglik", W, "dps"),
        C("log p_0 at the p* reward: W on vs off", "p* reward", "loglik", W, off),
        C("closest ED to p*: NTRK vs DPS", "closest to p*", "ed_pstar", W, "dps"),
        C("closest ED to p*: NTRK vs best baseline", "closest to p*", "ed_pstar", W, search + (f"best-of-{K}",)),
        C("closest ED to p*: W on vs off", "closest to p*", "ed_pstar", W, off),
        C("reward at matched effective step: W on vs off", "matched effective step", "target", W, off),
        C("ED to p* at matched effective step: W on vs off", "matched effective step", "ed_pstar", W, off),
        C("log p_0 at matched effective step: W on vs off", "matched effective step", "loglik", W, off),
    ]
    return levels, comparisons


# ---- the benchmark: two studies, the mechanism, the W ablation -------------------------------------
def _knob_at(data: dict, method: str, level: str):
    """The knob of ``method`` at a level of a study, from its tuning fronts (mean front; None if no knob
    or the level is not reached)."""
    from . import bench as P

    fr = P.Front.from_dict(data["fronts"]["tuning"][method])
    if fr.knob is None:
        return None
    lv = data["levels"][level]
    if isinstance(lv["value"], str):
        return data["picks"][level][method]
    k, _ = P.knob_at_level(fr, lv["x_key"], lv["value"])
    return None if not math.isfinite(k) else float(k)


def mechanism(pb: EmbeddedProblem, world, method_list, knobs: dict, seeds, n: int) -> dict:
    """Per method at its knob (``knobs[name]``; skipped if missing): every state where the sampler
    queries the denoiser is probed (``TrajectoryProbe``), per timestep, pooled over ``seeds``; plus
    the final samples' metrics. ``world.model`` is the model that drives the sampler."""
    import dataclasses

    out = {}
    for m in method_list:
        if m.knob is not None and knobs.get(m.name) is None:
            continue
        probe = TrajectoryProbe(world.model, pb.exact)
        w = dataclasses.replace(world, model=probe)
        finals = []
        for s in seeds:
            x_T, g = world.start(s, n)
            kw = dict(m.fixed)
            if m.knob is not None:
                kw[m.knob] = knobs[m.name]
            res = m.run(w, x_T, g, **kw)
            res = res[0] if isinstance(res, tuple) else res
            finals.append(world.evaluate(res.x0, s))
        steps = probe.table()
        out[m.name] = {"knob": knobs.get(m.name), "steps": steps,
                       "final": {k: [f[k] for f in finals] for k in finals[0]},
                       "gap_mean": float(np.mean([r["gap"] for r in steps])),
                       "perp_mean": float(np.mean([r["perp_ratio"] for r in steps])),
                       "maha_mean": float(np.mean([r["maha_in"] for r in steps]))}
    return out


def ablation_variants() -> dict:
    """W variants for the ablation: tile count (1 to 64 tiles per domain), domains, stages; and W off."""
    from .whitening import norm_match

    v = {f"{M} tile{'s' if M > 1 else ''} ({32 // int(math.sqrt(M))}x{32 // int(math.sqrt(M))})":
         {"tile_size": (32 // int(math.sqrt(M)),) * 2} for M in (1, 4, 16, 64)}
    v["pixel domain only (16 tiles)"] = {"domains": ("pixel",)}
    v["DCT domain only (16 tiles)"] = {"domains": ("dct",)}
    v["values stage only (16 tiles)"] = {"stages": ("values",)}
    out = {}
    for name, kw in v.items():
        out[name] = kw
    out["W off (norm matching)"] = norm_match
    return out


def ablation(world, level_eff: float, seeds, n: int, grid, variants=None) -> dict:
    """NTRK fronts (kappa over ``grid``, on ``seeds``) for each W variant, read at the effective step
    ``level_eff`` (``protocol.at_level`` on ``eff_step``): target, ``log p_0``, ED to p*, cos(W(g), g),
    ``||W(g)||^2 / N``, lag-1 of g and of W(g), the knob there. Grids extend until they bracket."""
    import functools

    from . import bench as P
    from .whitening import tile_layout, whiten

    variants = ablation_variants() if variants is None else variants
    out = {}
    for name, kw in variants.items():
        wmap = kw if callable(kw) else functools.partial(whiten, **kw)
        if callable(kw):
            tiles = None
        else:
            tiles = {d: int(tile_layout(SAMPLE_SHAPE, d, kw.get("tile_size", "auto")).shape[0])
                     for d in kw.get("domains", ("dct", "pixel"))}
        m = P.Method(f"ntrk [{name}]", run_ntrk, "kappa", grid, budget=25, limit=(0.0, math.sqrt(N)),
                     fixed={"whiten": wmap}, min_points=len(grid))
        fr = P.front(world, m, seeds, n, x_key="eff_step", level=float(level_eff), max_extend=4)
        at = {k: P.at_level(fr, "eff_step", level_eff, k) for k in
              ("target", "loglik", "ed_pstar", "cos_wg", "wnorm", "lag1_g", "lag1_w", "perp")}
        out[name] = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in ({} if callable(kw) else kw).items()},
                     "tiles": tiles, "front": fr.to_dict(),
                     "at_level": {k: a.values.tolist() for k, a in at.items()},
                     "knob_at_level": at["target"].knobs.tolist(), "flags": at["target"].flags}
    return out


def learned_vs_exact(studies: dict, level: str = "p* reward", keys=("ed_pstar", "loglik", "perp")) -> dict:
    """Per method at ``level`` (a numeric level both studies share): per-seed values with the UNet and
    with ``eps*`` (evaluation fronts, same seeds, same x_T) and the paired verdict of UNet - exact."""
    from . import bench as P

    du, de = studies["unet"], studies["exact"]
    lv = du["levels"][level]
    out = {}
    for name in du["fronts"]["eval"]:
        row = {}
        for key in keys:
            vals = {}
            for tag, d in (("unet", du), ("exact", de)):
                fr = P.Front.from_dict(d["fronts"]["eval"][name])
                vals[tag] = (fr.array(key)[0] if fr.knob is None
                             else P.at_level(fr, lv["x_key"], lv["value"], key).values)
            hib = du["world"]["metrics"][key]["higher_is_better"]
            margin = du["world"]["margins"].get(key, 1e-9)
            v = P.verdict(vals["unet"], vals["exact"], margin, hib, names=("UNet", "exact"), key=key)
            row[key] = {"unet": [float(x) for x in vals["unet"]], "exact": [float(x) for x in vals["exact"]],
                        "verdict": v.to_dict()}
        out[name] = row
    return out


SIZES = {
    # the committed run, sized for ~35 minutes of one shared CPU core: 16 samples per run (a 32-sample
    # guided UNet run costs ~3x a 16-sample one here), 2 tuning + 5 evaluation seeds, 8-point geometric
    # grids (10 for DPS); the mechanism on 3 seeds; the ablation (8 variants) on 3 seeds over kappa in
    # {2, 4} (extended until it brackets the level)
    "full": dict(n=16, num_steps=25, tuning_seeds=(1000, 1001), eval_seeds=tuple(range(5)),
                 mech_seeds=(0, 1, 2), abl_seeds=(0, 1, 2), abl_grid=(2.0, 4.0), eval_grid="needed",
                 max_extend=3),
    # the CI smoke run (a few minutes on a busy machine): every code path, numbers not for reading
    "quick": dict(n=8, num_steps=8, tuning_seeds=(1000,), eval_seeds=(0, 1), mech_seeds=(0,),
                  abl_seeds=(0,), abl_grid=(1.0, 4.0), eval_grid="needed", max_extend=1),
}


STAGE_DIR = paths.BUILD / "embedded_stages"


def run_benchmark(out_dir, quick: bool = False, seeds: int = 5, resume: bool = False, only=None) -> str:
    """``python -m ntrk_minimal.bench --task embedded``: both studies (UNet, exact eps*), the learned-vs-
    exact table, the mechanism measurement and the W ablation; writes ``embedded.{json,md,png}``
    (``embedded_quick.*`` with ``quick``) into ``out_dir`` and returns the markdown.

    Each stage's output is also kept in ``build/embedded_stages/``; ``resume=True`` reuses the stages
    found there (same configuration) instead of recomputing them (their wall times are kept).
    ``only`` (e.g. ``("ablation",)``): compute just these of the later stages (``mechanism``, ``ablation``,
    ``gradients``; the studies they need are computed or loaded), so that two processes can share them;
    nothing is written to ``out_dir`` while a stage is missing. Rerun with ``resume=True`` to assemble.
    """
    if only is not None and not set(only) <= {"mechanism", "ablation", "gradients"}:
        raise ValueError(f"only must name some of 'mechanism', 'ablation', 'gradients', got {only!r}")
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                # same numbers on any machine; one core each on a shared box
    try:
        return _run(Path(out_dir), quick, seeds, t0, resume, only)
    finally:
        torch.set_num_threads(threads)


def _stage(name: str, tag: str, resume: bool, walls: dict, fn):
    """Run ``fn()`` (json-able result) or, with ``resume``, load it from ``STAGE_DIR / tag / name``."""
    from . import bench as P

    path = STAGE_DIR / tag / f"{name}.json"
    if resume and path.is_file():
        d = P.load_json(path)
        walls[name] = d["wall_s"]
        return d["result"]
    w0 = time.perf_counter()
    result = fn()
    walls[name] = time.perf_counter() - w0
    path.parent.mkdir(parents=True, exist_ok=True)
    P.write_json({"result": result, "wall_s": walls[name]}, path)
    return P.load_json(path)["result"]


def _run(out_dir: Path, quick, seeds, t0, resume, only=None):
    from . import bench as P

    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = dict(SIZES["quick" if quick else "full"])
    if not quick:
        cfg["eval_seeds"] = tuple(range(seeds))
    pb = embedded_problem(num_steps=cfg["num_steps"])
    ms = methods(quick)
    levels, comps = levels_and_comparisons(pb)
    tag = ("quick" if quick else "full") + f"_seeds{len(cfg['eval_seeds'])}"
    studies, walls = {}, {}
    for model in ("unet", "exact"):
        studies[model] = _stage(f"study_{model}", tag, resume, walls, lambda: P.run_study(
            make_world(pb, model), ms, levels, comps, n=cfg["n"], tuning_seeds=cfg["tuning_seeds"],
            eval_seeds=cfg["eval_seeds"], eval_grid=cfg["eval_grid"], max_extend=cfg["max_extend"],
            progress=not quick, config={"size": "quick" if quick else "full"}))

    def mech_stage():
        """Each method at its knob at the p* reward (or its closest point), on the UNet and on eps*."""
        out = {}
        for model in ("unet", "exact"):
            knobs, where = {}, {}
            for m in ms:
                k = _knob_at(studies[model], m.name, "p* reward")
                if k is None and m.knob is not None:          # the p* reward is out of reach
                    k, where[m.name] = _knob_at(studies[model], m.name, "closest to p*"), "closest to p*"
                knobs[m.name] = k
                where.setdefault(m.name, "p* reward" if m.knob is not None else "its only point")
            extra = [P.Method("dps @ exact-tilt step", run_dps, "scale", [0.5, 1.0], budget=25, min_points=2)]
            knobs["dps @ exact-tilt step"] = 1.0
            where["dps @ exact-tilt step"] = "scale = 1 (lambda_t = sigma_t^2 / beta)"
            out[model] = mechanism(pb, make_world(pb, model), ms + extra, knobs, cfg["mech_seeds"], cfg["n"])
            for name, entry in out[model].items():
                entry["where"] = where[name]
        return {"mech": out, "reference": reference_profile(pb, pb.unet, n=64 if quick else 256)}

    def later(name, fn):
        """A later stage, unless ``only`` leaves it out and it is not cached (then None)."""
        if only is not None and name not in only and not (resume and (STAGE_DIR / tag / f"{name}.json").is_file()):
            return None
        return _stage(name, tag, resume, walls, fn)

    mr = later("mechanism", mech_stage)

    def abl_stage():
        """The W ablation at NTRK (W)'s effective step at the p* reward (UNet world)."""
        variants = ablation_variants()
        if quick:
            variants = {k: variants[k] for k in list(variants)[:1] + ["W off (norm matching)"]}
        eff = studies["unet"]["levels"]["matched effective step"]["value"]
        return ablation(make_world(pb, "unet"), eff, cfg["abl_seeds"], cfg["n"], list(cfg["abl_grid"]), variants)

    abl = later("ablation", abl_stage)
    grads = later("gradients", lambda: gradient_profile(pb, n=8 if quick else 64))
    if mr is None or abl is None or grads is None:
        return f"stages computed: {sorted(walls)}; rerun with resume=True once every stage is cached"
    mech, ref = mr["mech"], mr["reference"]
    training = json.loads((UNET_DIR / "training.json").read_text()) if (UNET_DIR / "training.json").is_file() else {}
    data = {"quick": quick, "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
            "studies": studies, "learned_vs_exact": learned_vs_exact(studies), "mechanism": mech,
            "reference_profile": ref, "gradients": grads, "ablation": abl, "training": training, "walls": walls,
            "wall_time_s": float(sum(walls.values())), "wall_this_call_s": time.perf_counter() - t0}
    stem = out_dir / ("embedded_quick" if quick else "embedded")
    P.write_json(data, stem.with_suffix(".json"))
    return render(stem)


def render(stem) -> str:
    """``stem.md`` and ``stem.png`` from ``stem.json`` alone; returns the markdown."""
    import matplotlib.pyplot as plt

    from . import bench as P

    stem = Path(stem)
    data = P.load_json(stem.with_suffix(".json"))
    text = report(data)
    stem.with_suffix(".md").write_text(text)
    fig = figure(data)
    fig.savefig(stem.with_suffix(".png"))
    plt.close(fig)
    return text


# ---- rendering (from the json alone) ---------------------------------------------------------------
def _num(v, d=3, sign=False) -> str:
    """``v`` with ``d`` decimals, "–" for None/NaN (missing: a level a front did not reach)."""
    if v is None or not np.isfinite(v):
        return "–"
    return f"{v:+.{d}f}" if sign else f"{v:.{d}f}"


def _ci(v, d=3):
    from . import bench as P

    v = np.asarray([x for x in np.asarray([np.nan if x is None else x for x in np.ravel(v)], float)
                    if np.isfinite(x)])
    if v.size == 0:
        return "–"
    m, h = P.mean_ci(v)
    return f"{m:.{d}f} ± {h:.{d}f}" if np.isfinite(h) else f"{m:.{d}f}"


def mechanism_table(data: dict) -> str:
    """Per method and model: the denoiser error and typicality along its trajectories (matched reward)."""
    from . import bench as P

    ref = data["reference_profile"]
    ref_gap = float(np.mean([r["gap"] for r in ref]))
    g = lambda v: f"{v:.3g}"
    rows = []
    for model in ("unet", "exact"):
        for name, m in data["mechanism"][model].items():
            k = "–" if m["knob"] is None else f"{m['knob']:.3g}"
            steps = m["steps"]
            gap = (f"{g(m['gap_mean'])} (x{g(m['gap_mean'] / ref_gap)})" if model == "unet" else "0 (exact)")
            med = float(np.mean([r["gap_median"] for r in steps]))
            late = [r for r in steps if r["t"] <= 200]
            div = float(np.mean(m["final"].get("diverged", [0.0])))
            finals = ([f"diverged ({100 * div:.0f}% of samples with |x| > 10)", "–", "–"] if div > 0 else
                      [_ci(m["final"]["target"]), _ci(m["final"]["loglik"], 1), _ci(m["final"]["ed_pstar"], 4)])
            rows.append([model, name, m.get("where", ""), k, gap, "–" if model == "exact" else g(med),
                         g(np.mean([r["perp_ratio"] for r in late])), g(m["perp_mean"]), g(m["maha_mean"])] + finals)
    head = ["model", "method", "operating point", "knob",
            "E||eps_th - eps*||^2/N over queried x_t (x genuine p_t)", "its per-step median",
            "complement energy ratio, t <= 200", "complement ratio, all t", "in-subspace Mahalanobis/64",
            "final reward", "final log p_0", "final ED to p*"]
    note = (f"Genuine draws of p_t (the UNet's training distribution), averaged over the sampling timesteps: "
            f"E||eps_th - eps*||^2/N = {ref_gap:.4f}, complement energy ratio "
            f"{np.mean([r['perp_ratio'] for r in ref]):.3f} (t <= 200: "
            f"{np.mean([r['perp_ratio'] for r in ref if r['t'] <= 200]):.3f}), Mahalanobis/64 "
            f"{np.mean([r['maha_in'] for r in ref]):.2f}.")
    return P.markdown_table(head, rows) + "\n\n" + note


def gradient_table(data: dict) -> str:
    from . import bench as P

    rows = [[r["t"], f"{r['a_t']:.4f}", f"{r['norm_ratio']:.3g}", f"{r['cos']:.3f}", f"{r['cos_W']:.3f}",
             f"{r['cos_W_exact']:.3f}", f"{r['x0_rms_err']:.3f}"] for r in data.get("gradients", [])]
    return P.markdown_table(["t", "a_t", "median ||g_theta|| / ||g*||", "cos(g_theta, g*)", "cos(W(g_theta), g*)",
                             "cos(W(g*), g*)", "RMS error of x0_hat"], rows)


def ablation_table(data: dict) -> str:
    from . import bench as P

    rows = []
    for name, a in data["ablation"].items():
        at = a["at_level"]
        tiles = "–" if a["tiles"] is None else ", ".join(f"{d} {m}" for d, m in a["tiles"].items())
        kn = [k for k in a["knob_at_level"] if k is not None and np.isfinite(k)]
        rows.append([name, tiles, f"{np.mean(kn):.3g}" if kn else "–", _ci(at["cos_wg"], 4), _ci(at["wnorm"], 3),
                     _ci(at["lag1_g"], 3), _ci(at["lag1_w"], 3), _ci(at["target"]), _ci(at["loglik"], 1),
                     _ci(at["ed_pstar"], 4)])
    head = ["W variant", "tiles per domain", "kappa at the level", "cos(W(g), g)", "||W(g)||/sqrt(N)",
            "lag-1 of g", "lag-1 of W(g)", "reward", "log p_0", "ED to p*"]
    return P.markdown_table(head, rows)


def lve_table(data: dict) -> str:
    from . import bench as P

    rows = []
    for name, row in data["learned_vs_exact"].items():
        cells = [name]
        for key, d in (("ed_pstar", 4), ("loglik", 1), ("perp", 3)):
            v = row[key]["verdict"]
            # a label only where the metric's direction means "closer to the target": a higher log p_0 or
            # a complement ratio farther below 1 is over-concentration, not fidelity
            label = f" {v['label']}" if key == "ed_pstar" else ""
            cells += [_ci(row[key]["unet"], d), _ci(row[key]["exact"], d),
                      f"{_num(v['mean'], d, True)} [{_num(v['lo'], d, True)}, {_num(v['hi'], d, True)}]{label}"]
        rows.append(cells)
    head = ["method", "ED to p*: UNet", "exact", "UNet - exact", "log p_0: UNet", "exact", "UNet - exact",
            "complement ratio: UNet", "exact", "UNet - exact"]
    return P.markdown_table(head, rows)


def report(data: dict) -> str:
    """The markdown of ``results/embedded.md``: headline tables first, then each study's full report."""
    from . import bench as P

    su = data["studies"]["unet"]
    tr = data.get("training", {})
    cfg = su["world"]["config"]
    walls = data["walls"]
    lines = [f"# Learned versus exact: the digits mixture embedded at 1x32x32{' (QUICK smoke run)' if data['quick'] else ''}",
             "",
             f"p_0 = 16-component digits mixture, bilinearly upsampled 8x8 -> 32x32 plus N(0, {cfg['tau']}^2 I) "
             f"(N = 1024): exact eps*, exact log p_0, exact p* ∝ p_0 exp(r / beta) with r(x) = "
             f"-||x - c||^2 / (2 * {cfg['reward_scale']:g}^2), c = the mean training {cfg['target_class']}, "
             f"beta = {cfg['beta']:g} (E_p0[r] = {cfg['E_p0[r]']:.3f}, E_p*[r] = {cfg['E_p*[r]']:.3f}). "
             f"The same samplers run twice: on the learned UNet and on eps*. {su['n']} samples per run, "
             f"tuning seeds {su['seeds']['tuning']}, evaluation seeds {su['seeds']['eval']}; W sees 16 tiles "
             f"per domain (8x8 patches, 16 DCT bands).", ""]
    if tr:
        gap = {r["t"]: r["gap"] for r in tr["gap"]}
        lines += [f"UNet: {tr['parameters'] / 1e6:.2f} M parameters, {tr.get('stopped_at', tr['steps'])} steps (of a "
                  f"{tr['steps']}-step cosine schedule) x batch {tr['batch']} of fresh exact samples, training wall "
                  f"{tr['train_wall_s'] / 60:.0f} min on the shared machine; held-out "
                  f"E||eps_th - eps*||^2/N = " + ", ".join(f"{gap[t]:.4f} (t={t})" for t in (0, 40, 160, 480, 960) if t in gap)
                  + ".", ""]
    lines += ["Wall time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in walls.items())
              + f"; total {data['wall_time_s'] / 60:.1f} min.", ""]
    for model, title in (("unet", "learned UNet"), ("exact", "exact eps*")):
        lines += [f"## Verdicts, {title}", "", P.verdict_table(data["studies"][model]), ""]
    lines += ["## What learning costs each method (at the p* reward; paired over evaluation seeds)", "",
              "UNet minus exact, same seeds and start noise; a verdict only on the energy distance to p* (lower "
              "is better); for log p_0 and the complement ratio (1 for p_0) the difference alone: the 25-step "
              "samplers are over-concentrated on both models, so a higher log p_0 is not better fidelity.", "",
              lve_table(data), "",
              "## The mechanism: denoiser error and typicality along each method's trajectories (p* reward)", "",
              "Every state at which a sampler queries the denoiser (SVDD candidates and SMC particles "
              "included) is probed: the learned error against eps* there, and how typical the state is under "
              "the true marginal p_t (complement energy ratio: 1 for a genuine draw, SD 0.046).", "",
              mechanism_table(data), "",
              "## The guidance signal: the reward gradient through the UNet against the one through eps*", "",
              "On genuine draws of p_t at every sampling step: g = grad_{x_t} r(x0_hat(x_t)), through the UNet "
              "(g_theta) and through eps* (g*).", "",
              gradient_table(data), "",
              "## W ablation at matched effective step (UNet)", "",
              f"Every NTRK variant read at effective step {data['studies']['unet']['levels']['matched effective step']['value']:.3f} "
              f"along g (eff = kappa cos(W(g), g) ||W(g)|| / sqrt(N), averaged over steps), seeds {data['sizes']['abl_seeds']}.", "",
              ablation_table(data), ""]
    for model, title in (("unet", "learned UNet"), ("exact", "exact eps*")):
        body = P.report(data["studies"][model], f"Study: {title}").replace("\n# ", "\n### ").replace("\n## ", "\n### ")
        lines += ["---", "", body.replace("# Study", "## Study", 1), ""]
    return "\n".join(lines)


COLORS = {"base": "k", "dps": "tab:orange", "ntrk (W)": "tab:red", "ntrk (W off)": "tab:pink",
          "svdd-4": "tab:green", "smc-4": "tab:purple", "best-of-4": "tab:blue"}


def _front_xy(fr_d: dict, xk: str, yk: str):
    """Mean ± 95% CI over seeds of ``xk`` and ``yk`` per knob, leaving out knobs where any sample of any
    seed diverged (their values are astronomically far off; the tables list them)."""
    from . import bench as P

    fr = P.Front.from_dict(fr_d)
    X, Y = fr.array(xk), fr.array(yk)
    D = fr.array("diverged") if "diverged" in fr.keys() else np.zeros_like(X)
    keep = [i for i in range(len(fr.knobs)) if np.nansum(D[i]) == 0 and np.isfinite(X[i]).all()
            and np.isfinite(Y[i]).all()]
    cx = np.array([P.mean_ci(X[i]) for i in keep]).reshape(-1, 2)
    cy = np.array([P.mean_ci(Y[i]) for i in keep]).reshape(-1, 2)
    return fr, cx, cy


def figure(data: dict):
    """Fronts with 95% CIs for both models and the matched levels, the mechanism per timestep and the
    W ablation; everything from the json. Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    su, se = data["studies"]["unet"], data["studies"]["exact"]
    r_star = su["levels"]["p* reward"]["value"]
    r0 = su["world"]["config"]["E_p0[r]"]
    x_lo = r0 - 0.5 * (r_star - r0)                 # the view: from below p_0's reward to r = 0 (its max)

    def window(ax, pts, log=False):
        """y-limits from the plotted means whose x lies in the view (diverging knobs fall outside)."""
        ys = [y for x, y in pts if x_lo <= x <= 0 and np.isfinite(y) and (y > 0 or not log)]
        if ys:
            lo, hi = min(ys), max(ys)
            if log:
                ax.set_ylim(lo / 2, hi * 2)
            else:
                pad = 0.1 * (hi - lo + 1e-9)
                ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlim(x_lo, 0)

    with plt.rc_context({"font.size": 10, "axes.titlesize": 11, "legend.fontsize": 9, "xtick.labelsize": 9, "ytick.labelsize": 9}):
        fig, axes = plt.subplots(2, 4, figsize=(22, 10.5), dpi=110)
        for ax, d, title in ((axes[0, 0], su, "learned UNet"), (axes[0, 1], se, "exact eps*")):
            pts = []
            for name, fr_d in d["fronts"]["eval"].items():
                fr, cx, cy = _front_xy(fr_d, "target", "loglik")
                pts += list(zip(cx[:, 0], cy[:, 0]))
                single = fr.knob is None
                ax.errorbar(cx[:, 0], cy[:, 0], xerr=cx[:, 1], yerr=cy[:, 1], color=COLORS.get(name),
                            marker="s" if single else "o", ms=5 if single else 3, lw=1, capsize=1.5,
                            ls="none" if single else "-", label=name)
            fl = d["floor"]["eval"]
            window(ax, pts)
            ax.text(0.02, 0.98, f"exact p* samples: reward {np.mean(fl['target']):.2f}, log p_0 "
                    f"{np.mean(fl['loglik']):.0f}\n(off the chart: the 25-step samplers are over-concentrated)",
                    transform=ax.transAxes, ha="left", va="top", fontsize=9, color="0.3",
                    bbox=dict(fc="white", ec="none", alpha=0.8))
            ax.axvline(r_star, color="grey", ls=":", lw=1)
            ax.text(r_star, ax.get_ylim()[0], " E_p*[r]", rotation=90, va="bottom", fontsize=9, color="grey")
            ax.set(xlabel="target reward (mean)", ylabel="mean log p_0 (exact)", title=f"fronts, {title}")
            ax.grid(alpha=0.25)
        axes[0, 0].legend(loc="lower left")
        ax = axes[0, 2]
        pts = []
        for tag, d, ls in (("UNet", su, "-"), ("exact", se, "--")):
            for name, fr_d in d["fronts"]["eval"].items():
                fr, cx, cy = _front_xy(fr_d, "target", "ed_pstar")
                pts += list(zip(cx[:, 0], cy[:, 0]))
                ax.errorbar(cx[:, 0], cy[:, 0], xerr=cx[:, 1], yerr=cy[:, 1], color=COLORS.get(name),
                            marker="s" if fr.knob is None else "o", ms=3, lw=1, capsize=1.5,
                            ls="none" if fr.knob is None else ls, label=f"{name}" if tag == "UNet" else None)
        ed_floor = float(np.mean(su["floor"]["eval"]["ed_pstar"]))
        ax.axhline(ed_floor, color="gold", lw=1.5, label="exact p* floor")
        window(ax, pts + [(r_star, abs(ed_floor))], log=True)
        ax.axvline(r_star, color="grey", ls=":", lw=1)
        ax.set(xlabel="target reward (mean)", ylabel="energy distance to exact p* (lower = better)",
               yscale="log", title="distance to the exact target (solid: UNet, dashed: eps*)")
        ax.grid(alpha=0.25)
        ax.legend(loc="upper right", fontsize=9)
        ref = data["reference_profile"]
        for ax, key, lab in ((axes[1, 0], "gap", "median ||eps_theta - eps*||^2 / N at the queried x_t"),
                             (axes[1, 1], "perp_ratio", "median complement energy / (v_t (N - 64)) of x_t")):
            ref_y = [r[key + "_median"] for r in ref]
            ax.plot([r["t"] for r in ref], ref_y, "k--", lw=1.5, label="genuine p_t draws")
            cap = 1e3 * max(ref_y) if key == "gap" else 3.0       # curves beyond it would flatten the others
            shown = list(ref_y)
            for name, m in data["mechanism"]["unet"].items():
                ys = [r[key + "_median"] for r in m["steps"]]
                far = not all(np.isfinite(y) and y <= cap for y in ys)
                shown += [] if far else ys
                ax.plot([r["t"] for r in m["steps"]], ys, color=COLORS.get(name, "grey"), marker=".", lw=1,
                        label=f"{name} (off the chart: up to {np.nanmax(ys):.2g})" if far else name,
                        ls=":" if "exact-tilt" in name else "-")
            lo, hi = min(shown), max(shown)
            ax.set_ylim(*((lo / 2, hi * 2) if key == "gap" else (0, 1.1 * hi)))
            ax.set(xlabel="timestep t (sampling runs right to left)", ylabel=lab,
                   title="along the trajectories at the p* reward (UNet)")
            ax.invert_xaxis()
            ax.grid(alpha=0.25)
        axes[1, 0].set_yscale("log")
        axes[1, 1].axhspan(1 - 2 * 0.046, 1 + 2 * 0.046, color="gold", alpha=0.3, label="genuine ± 2 SD")
        axes[1, 1].legend(fontsize=9)
        ax = axes[1, 2]
        names = list(data["ablation"])
        vals = [data["ablation"][k]["at_level"]["target"] for k in names]
        from . import bench as P

        cis = [P.mean_ci([v for v in vs if v is not None and np.isfinite(v)]) if any(
            v is not None and np.isfinite(v) for v in vs) else (np.nan, np.nan) for vs in vals]
        y = np.arange(len(names))
        ax.errorbar([c[0] for c in cis], y, xerr=[0 if not np.isfinite(c[1]) else c[1] for c in cis], ls="none",
                    marker="o", color="tab:red", capsize=2)
        labels = []
        for k in names:
            cw = [v for v in data["ablation"][k]["at_level"]["cos_wg"] if v is not None and np.isfinite(v)]
            ed = [v for v in data["ablation"][k]["at_level"]["ed_pstar"] if v is not None and np.isfinite(v)]
            labels.append(f"{k}\ncos(W(g), g) {np.mean(cw):.2f}, ED to p* {np.mean(ed):.3f}" if cw and ed else k)
        ax.set_yticks(y, labels, fontsize=9)
        ax.invert_yaxis()
        ax.set(xlabel="target reward at matched effective step", title="W ablation (UNet)")
        ax.grid(alpha=0.25, axis="x")
        gr = data.get("gradients", [])
        if gr:
            ts = [r["t"] for r in gr]
            ax = axes[0, 3]
            ax.plot(ts, [r["norm_ratio"] for r in gr], "k.-", label="median ||g_theta|| / ||g*||")
            ax.plot(ts, [r["x0_rms_err"] for r in gr], ".-", color="tab:brown", label="RMS error of x0_hat")
            ax.axhline(1, color="grey", lw=0.8, ls=":")
            ax.set(yscale="log", xlabel="timestep t", title="reward gradient through the UNet vs through eps*")
            ax.invert_xaxis()
            ax.legend(fontsize=9)
            ax.grid(alpha=0.25)
            ax = axes[1, 3]
            ax.plot(ts, [r["cos"] for r in gr], "k.-", label="cos(g_theta, g*)")
            ax.plot(ts, [r["cos_W"] for r in gr], ".-", color="tab:red", label="cos(W(g_theta), g*)")
            ax.plot(ts, [r["cos_W_exact"] for r in gr], ".--", color="tab:pink", label="cos(W(g*), g*)")
            ax.set(ylim=(-0.05, 1.05), xlabel="timestep t", ylabel="cosine",
                   title="direction of the guidance signal (genuine p_t draws)")
            ax.invert_xaxis()
            ax.legend(fontsize=9)
            ax.grid(alpha=0.25)
        else:
            axes[0, 3].axis("off"), axes[1, 3].axis("off")
        fig.tight_layout()
    return fig
