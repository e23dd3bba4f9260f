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
(``expected_reward``). The world (``make_world``: on the UNet or on ``eps*``; ``methods``,
``levels_and_comparisons``) runs base, DPS, NTRK (W), NTRK (W off), SVDD-4, SMC-4 and best-of-4
through the protocol; fidelity = the energy distance (and KID) to exact ``p*`` samples, the exact
``log p_0`` and the complement energy; levels: the p* reward, each method's closest point to p*, and
NTRK's effective step. The study ``studies.learned_vs_exact`` (``python -m ntrk_minimal.bench --task
embedded``) runs it on both models, probes every state where a sampler queries the denoiser, compares
the reward gradients and ablates W.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import bench as P, paths
from ..bench import methods as M
from ..metrics import energy_distance
from ..rewards import LinearReward, QuadraticReward
from .digits import load_mixture
from .digits_data import load_digits64
from .trained import (UNetDenoiser, load_schedule as trained_load_schedule, load_scheduler as trained_load_scheduler,
                      scheduler_config as trained_scheduler_config)

__all__ = ["DATA_DIR", "UNET_DIR", "SHA256", "SAMPLE_SHAPE", "N", "TAU", "upsample_matrix",
           "LowRankMixture", "embed", "embedded_mixture", "ExactDenoiser", "tilted", "unet_config",
           "scheduler_config", "EmbeddedUNet", "load_unet", "load_scheduler", "load_schedule", "verify",
           "TARGET_CLASS", "REWARD_SCALE", "BETA", "template", "target_reward", "expected_reward",
           "EmbeddedProblem", "embedded_problem", "DECAY", "DIAGNOSTICS", "run_base", "run_dps", "run_ntrk",
           "run_ntrk_off", "run_svdd", "run_smc", "run_bon", "methods", "N_REF", "Evaluator", "exact_distance",
           "make_world", "levels_and_comparisons"]

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
                            recorded_in="ntrk_minimal/worlds/embedded.py SHA256")


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
    return trained_scheduler_config()


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
    """The DDIM scheduler built from the saved DDPM training config (``trained.load_scheduler`` of this folder)."""
    return trained_load_scheduler(path)


def load_schedule(num_steps: int = 25, eta: float = 1.0, path: Path | str = UNET_DIR):
    """``Schedule.from_scheduler(scheduler, num_steps, eta)`` for this world (``trained.load_schedule``)."""
    return trained_load_schedule(num_steps, eta, path)


# ---- the problem: reward and exact target --------------------------------------------------------
def template(target_class: int = TARGET_CLASS) -> torch.Tensor:
    """``c = U x_c`` (N,): the mean 8x8 training image of ``target_class``, upsampled to 32x32."""
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
        self.reference(seed)                                            # draw (and cache) this seed's reference
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
    g = torch.Generator().manual_seed(seed)
    return energy_distance(pb.p0.sample(n, g), pb.pstar.sample(n, g), unbiased=True)


def make_world(pb: EmbeddedProblem, model: str = "unet"):
    """The protocol ``World`` of this problem with ``model = "unet"`` (the learned denoiser) or
    ``"exact"`` (``eps*``): the same samplers, the same evaluator, two models."""
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
