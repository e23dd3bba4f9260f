"""Kernel-level exactness (issue 10, item 5): each test compares a kernel with a closed form or an
exact law, and carries a negative control that a broken kernel would fail.

* DPS with ``lambda_t = sigma_t^2 / beta`` approaches the exact tilt as T grows (Gaussian prior,
  linear reward: ``p* = N(m + S a / beta, S)``);
* soft search picks candidate ``k`` with probability ``softmax(r_k / beta)`` (randomised PIT,
  chi-square over 20000 draws);
* W on an image shape where it can act (1x32x32: 16 tiles per domain) keeps ``eta_t`` close to
  N(0, I) along real NTRK trajectories (norm, KS, lag-1 correlation), while norm matching does not.
"""
import math

import numpy as np
import pytest
import torch
from scipy import stats

import ntrk_minimal as nt
from ntrk_minimal.kernels import denoise
from ntrk_minimal.whitening import norm_match
from ntrk_minimal.worlds.toy2d import IsotropicMixtureDenoiser


def _gaussian(mean, s2):
    d = len(mean)
    return nt.GaussianMixture(torch.ones(1, dtype=torch.float64), torch.as_tensor(mean, dtype=torch.float64)[None],
                              s2 * torch.eye(d, dtype=torch.float64)[None])


def test_dps_with_lambda_sigma2_over_beta_approaches_the_exact_tilt():
    """p_0 = N(m, s^2 I), r(x) = <a, x>: p* = N(m + s^2 a / beta, s^2 I) exactly. DPS's step
    sigma_t^2 grad r(x0_hat(x_t)) / beta is the exact tilted kernel's shift up to replacing
    E[x_0 | x_{t-1}] by E[x_0 | x_t], an O(1/T) error: the mean error must fall with T. Catches a
    wrong lambda_t scaling, a gradient taken w.r.t. x0_hat instead of x_t, or a missing sigma_t^2."""
    m, s2, beta = [0.5, -0.3], 0.36, 0.5
    a = torch.tensor([1.0, 0.5], dtype=torch.float64)
    mix, r = _gaussian(m, s2), nt.LinearReward(a)
    exact_mean = torch.tensor(m, dtype=torch.float64) + s2 * a / beta

    def run(T, scale):
        sched = nt.make_schedule(T, eta=1.0)
        g = torch.Generator().manual_seed(0)
        x_T = torch.randn(4000, 2, generator=g, dtype=torch.float64)
        return nt.sample(IsotropicMixtureDenoiser(mix, sched), sched, x_T, "dps", g, r,
                         lambda_t=nt.sigma2_scaled(scale)).x0

    errs, var_errs = [], []
    for T in (10, 50, 250):
        x0 = run(T, 1 / beta)
        errs.append(float((x0.mean(0) - exact_mean).norm()))
        var_errs.append(float((x0.var(0) - s2).abs().max()))
    assert errs[0] > errs[1] > errs[2], errs                 # converges as the steps shrink
    assert errs[2] < 0.08 and errs[0] > 4 * errs[2], errs     # measured: 0.56, 0.21, 0.045
    assert var_errs[2] < 0.03, var_errs                       # the tilt of a linear reward keeps S
    wrong = float((run(250, 2 / beta).mean(0) - exact_mean).norm())
    assert wrong > 0.5, wrong                                 # twice the step lands elsewhere (~0.8)


def _pit_chi2(probs: np.ndarray, chosen: np.ndarray, rng: np.random.Generator, bins: int = 10) -> float:
    """Randomised probability integral transform of categorical draws: ``u = F(k - 1) + V p_k`` is
    Uniform(0, 1) iff ``k ~ probs`` row by row; chi-square p-value of ``u`` in ``bins`` equal bins."""
    cdf = np.cumsum(probs, 1)
    rows = np.arange(len(chosen))
    below = np.where(chosen > 0, cdf[rows, np.maximum(chosen - 1, 0)], 0.0)
    u = below + rng.random(len(chosen)) * probs[rows, chosen]
    counts = np.histogram(u, bins=bins, range=(0, 1))[0]
    return float(stats.chisquare(counts).pvalue)


def test_soft_search_picks_candidates_in_proportion_to_exp_r_over_beta():
    """One soft-search step over 20000 states: the candidates (and their scores r(x0_hat(candidate)))
    are rebuilt from a copy of the generator, and the chosen index must follow softmax(r / beta)
    (chi-square of the randomised PIT). The same draws tested against softmax(r / (2 beta)) and
    against the argmax must be rejected: the test sees a wrong temperature."""
    mix = _gaussian([0.3, -0.2], 0.5)
    sched = nt.make_schedule(10, eta=1.0)
    model = IsotropicMixtureDenoiser(mix, sched)
    reward = nt.QuadraticReward([1.0, 0.5], 0.5)        # scores spread ~0.7 within a row at step 4
    K, B, beta, i = 6, 20000, 0.7, 4
    x_t = torch.randn(B, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    g_copy = torch.Generator().manual_seed(2)
    out = nt.Search(num_candidates=K, mode="soft", beta=beta).step(model, x_t, i, sched, g, reward)
    sigma_t = float(sched.sigma_t[i])
    eps = torch.randn((K, B, 2), generator=g_copy, dtype=torch.float64)         # the step's candidate draws
    cand = (out.mu_t[None] + sigma_t * eps).reshape(K * B, 2)
    _, x0_next = denoise(model, cand, i + 1, sched)
    scores = reward(x0_next).reshape(K, B).T.numpy()                            # (B, K)
    chosen = (eps - out.eta_t[None]).abs().sum(-1).argmin(0).numpy()             # which candidate became eta_t
    assert np.allclose(eps.numpy()[chosen, np.arange(B)], out.eta_t.numpy())
    soft = lambda z: np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)
    rng = np.random.default_rng(0)
    p_right = _pit_chi2(soft(scores / beta), chosen, rng)
    p_wrong = _pit_chi2(soft(scores / (2 * beta)), chosen, rng)
    p_argmax = _pit_chi2(soft(scores / 1e-6), chosen, rng)
    assert p_right > 1e-3, p_right
    assert p_wrong < 1e-6 and p_argmax < 1e-6, (p_wrong, p_argmax)


class _ImageMixture:
    """``IsotropicMixtureDenoiser`` on (B, 1, H, W) images (it works on flat (B, d) rows)."""

    def __init__(self, den):
        self.den = den

    def __call__(self, x_t, t):
        return self.den(x_t.reshape(len(x_t), -1), t).reshape(x_t.shape)


def test_w_keeps_eta_white_along_trajectories_where_it_can_act():
    """1x32x32 samples (W has 16 tiles of 64 per domain), an isotropic 4-component mixture and a
    linear reward along a smooth blob: g_t is smooth, so injecting it with rho = 0.49 makes eta_t
    strongly correlated unless W whitens it. Measured (25 steps, 16 samples): W on mean lag-1 0.07,
    KS 0.046, ||eta||^2/d 0.98 (white noise: 0.00, 0.027, 0.98); W off (norm matching) lag-1 0.46,
    KS 0.18. Catches a W that does nothing, a W that loses the norm, and a W that is not applied."""
    H, d = 32, 1024
    g = torch.Generator().manual_seed(0)
    mix = nt.GaussianMixture(torch.ones(4, dtype=torch.float64), 0.5 * torch.randn(4, d, generator=g, dtype=torch.float64),
                             0.25 * torch.eye(d, dtype=torch.float64).expand(4, d, d).clone())
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(H, dtype=torch.float64), indexing="ij")
    blob = torch.exp(-((yy - 12) ** 2 + (xx - 20) ** 2) / (2 * 6.0 ** 2)).flatten()
    reward = nt.LinearReward(5 * blob / blob.norm())
    sched = nt.make_schedule(25, eta=1.0)
    model = _ImageMixture(IsotropicMixtureDenoiser(mix, sched))
    assert tuple(nt.tile_layout((1, H, H), "pixel").shape) == (16, 64)
    stats_ = {}
    for name, w in (("W", None), ("off", norm_match)):
        gg = torch.Generator().manual_seed(1)
        x_T = torch.randn(16, 1, H, H, generator=gg, dtype=torch.float64)
        res = nt.sample(model, sched, x_T, "ntrk", gg, reward, record=True, whiten=w,
                        rho_t=nt.rho_from_kappa(0.7 * math.sqrt(d), d))          # rho_t = 0.49
        per_step = [nt.whiteness(e) for e in res.eta[:-1]]                       # the last step has sigma = 0
        stats_[name] = {k: float(torch.stack([s[k] for s in per_step]).mean()) for k in ("norm2", "lag1", "ks")}
        stats_[name]["lag1_max"] = float(torch.stack([s["lag1"].abs() for s in per_step]).max())
    on, off = stats_["W"], stats_["off"]
    assert 0.9 < on["norm2"] < 1.1 and 0.9 < off["norm2"] < 1.1, stats_
    assert abs(on["lag1"]) < 0.12 and on["lag1_max"] < 0.25 and on["ks"] < 0.07, stats_
    assert off["lag1"] > 0.3 and off["ks"] > 0.12, stats_                     # without W: correlated
