"""Metrics: each one separates what it should and rejects bad input."""
import numpy as np
import pytest
import torch

import ntrk_minimal as nt
from ntrk_minimal import metrics


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_energy_distance_zero_on_same_law_and_grows_with_shift():
    x = torch.randn(800, 3, generator=_g(0), dtype=torch.float64)
    y = torch.randn(800, 3, generator=_g(1), dtype=torch.float64)
    assert metrics.energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    same = metrics.energy_distance(x, y)
    shifted = [metrics.energy_distance(x, y + s) for s in (0.25, 0.5, 1.0)]
    assert same < 0.02 < shifted[0] < shifted[1] < shifted[2]
    with pytest.raises(ValueError, match="same dimension"):
        metrics.energy_distance(x, y[:, :2])


def test_histogram_kl_small_for_exact_samples_large_for_missing_modes():
    mix = nt.ring_mixture()
    exact = mix.sample(4000, _g(0))
    one_mode = exact[torch.cdist(exact, mix.means).argmin(1) == 0]
    kl_exact = metrics.histogram_kl(exact, mix.log_prob)
    kl_one = metrics.histogram_kl(one_mode, mix.log_prob)
    assert kl_exact < 0.2 and kl_one > 1.5
    with pytest.raises(ValueError, match="2-D"):
        metrics.histogram_kl(torch.zeros(10, 3), mix.log_prob)


def test_hdr_share():
    mix = nt.ring_mixture()
    thr = metrics.hdr_threshold(mix.log_prob, mix.sample(20000, _g(0)), 0.99)
    assert metrics.share_in_hdr(mix.sample(5000, _g(1)), mix.log_prob, thr) == pytest.approx(0.99, abs=0.01)
    assert metrics.share_in_hdr(torch.zeros(10, 2, dtype=torch.float64), mix.log_prob, thr) == 0.0
    with pytest.raises(ValueError, match="level"):
        metrics.hdr_threshold(mix.log_prob, torch.zeros(3, 2), 1.5)


def test_eta_statistics_tell_noise_from_a_fixed_direction():
    T, B, d = 4, 500, 16
    noise = torch.randn(T, B, d, generator=_g(0), dtype=torch.float64)
    direction = torch.ones(T, B, d, dtype=torch.float64)          # energy 1, but not Gaussian
    assert torch.allclose(metrics.eta_energy(noise), torch.ones(T, dtype=torch.float64), atol=0.05)
    assert torch.allclose(metrics.eta_energy(direction), torch.ones(T, dtype=torch.float64))
    assert (metrics.eta_normality(noise) > 1e-3).all()
    assert (metrics.eta_normality(direction) < 1e-10).all()


def test_cosine_and_diversity():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = torch.tensor([[2.0, 0.0], [-1.0, -1.0], [1.0, 0.0]])
    assert torch.allclose(metrics.cosine(a, b), torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64))
    assert metrics.mean_pairwise_distance(torch.tensor([[0.0, 0.0], [3.0, 4.0]])) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="at least 2"):
        metrics.mean_pairwise_distance(torch.zeros(1, 2))


# ---- fidelity on features: KID, FD, FD-infinity --------------------------------------------------
def _gauss(n, d, seed, mean=0.0, scale=None):
    z = torch.randn(n, d, generator=_g(seed), dtype=torch.float64)
    return mean + (z if scale is None else z * torch.as_tensor(scale, dtype=torch.float64))


def test_kid_matches_a_brute_force_double_loop():
    """Catches a wrong normalisation, gamma default (1/d) or diagonal handling."""
    x, y = _gauss(7, 3, 0), _gauss(9, 3, 1, mean=0.5)
    k = lambda a, b: (float(a @ b) / 3 + 1) ** 3
    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    xy = sum(k(x[i], y[j]) for i in range(7) for j in range(9)) / 63
    assert metrics.kid(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    vx = sum(k(x[i], x[j]) for i in range(7) for j in range(7)) / 49
    vy = sum(k(y[i], y[j]) for i in range(9) for j in range(9)) / 81
    assert metrics.kid(x, y, unbiased=False) == pytest.approx(vx + vy - 2 * xy, rel=1e-10)
    with pytest.raises(ValueError, match="feature dimension"):
        metrics.kid(x, y[:, :2])
    assert metrics.KID(y)(x) == pytest.approx(metrics.kid(x, y), rel=1e-12)        # cached reference term


def test_kid_is_unbiased_real_vs_real_and_the_v_statistic_is_not():
    """Catches a biased KID (diagonal kept): at n = 16 its bias would dwarf real differences."""
    u, v = [], []
    for s in range(300):
        a, b = _gauss(16, 4, 2 * s), _gauss(16, 4, 2 * s + 1)
        u.append(metrics.kid(a, b))
        v.append(metrics.kid(a, b, unbiased=False))
    u, v = np.asarray(u), np.asarray(v)
    se_u, se_v = u.std(ddof=1) / np.sqrt(len(u)), v.std(ddof=1) / np.sqrt(len(v))
    assert abs(u.mean()) < 3 * se_u
    assert v.mean() > 10 * se_v and v.mean() > 5 * abs(u.mean())
    mean, sd = metrics.kid(_gauss(400, 4, 0), _gauss(400, 4, 1), subsets=20, subset_size=100)
    assert abs(mean) < 3 * sd / np.sqrt(20) + 1e-3 and sd > 0


def test_kid_and_fd_react_to_a_mean_shift_and_to_a_covariance_change():
    """Catches metrics blind to covariance (e.g. FD comparing only means, or only traces)."""
    d, n = 4, 2000
    ref = _gauss(n, d, 0)
    same = _gauss(n, d, 1)
    shifted = _gauss(n, d, 2, mean=0.3)
    reshaped = _gauss(n, d, 3, scale=[1.6, 0.2, 1.0, 1.0])      # trace 3.8 vs 4 (almost equal)
    for metric in (metrics.kid, metrics.frechet_distance):
        m_same, m_shift, m_cov = metric(same, ref), metric(shifted, ref), metric(reshaped, ref)
        assert m_shift > 10 * abs(m_same) and m_cov > 10 * abs(m_same), metric.__name__
    # equal variances, only the correlation changes: blind to anything but the full covariance
    corr = torch.linalg.cholesky(torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64))
    correlated = torch.cat([_gauss(n, 2, 4) @ corr.T, _gauss(n, d - 2, 5)], 1)
    for metric in (metrics.kid, metrics.frechet_distance):
        assert metric(correlated, ref) > 10 * abs(metric(same, ref)), metric.__name__
    s_corr = np.eye(d)
    s_corr[0, 1] = s_corr[1, 0] = 0.8
    exact_corr = 4 - 2 * (np.sqrt(1.8) + np.sqrt(0.2))               # eigenvalues 1.8 and 0.2
    assert metrics.gaussian_frechet(np.zeros(d), s_corr, np.zeros(d), np.eye(d)) == pytest.approx(exact_corr)
    assert metrics.frechet_distance(correlated, ref) == pytest.approx(exact_corr, abs=0.03)
    exact = metrics.gaussian_frechet(np.zeros(d), np.eye(d), np.zeros(d), np.diag([1.6, 0.2, 1, 1]) ** 2)
    assert exact == pytest.approx((0.6 ** 2 + 0.8 ** 2), rel=1e-12)        # sum (sqrt(a) - sqrt(b))^2
    assert metrics.frechet_distance(reshaped, ref) == pytest.approx(exact, abs=0.05)


def test_frechet_distance_moved_but_importable_from_trained():
    """Catches a broken import path for callers of metrics.frechet_distance."""
    from ntrk_minimal.worlds import trained

    assert metrics.frechet_distance is metrics.frechet_distance


def test_fd_infinity_recovers_a_known_fd_on_gaussians():
    """Catches a wrong extrapolation (fit in n instead of 1/n, intercept and slope swapped): over
    independent generated sets, FD_inf is centred on the closed-form FD while FD at n = 200 is not."""
    d = 8
    scale = torch.linspace(0.5, 1.5, d)
    ref = _gauss(100_000, d, 11)
    fd_true = metrics.gaussian_frechet(0.2 * np.ones(d), np.diag(scale.numpy() ** 2), np.zeros(d), np.eye(d))
    inf_err, small_err = [], []
    for s in range(8):
        gen = _gauss(10_000, d, 100 + s, mean=0.2, scale=scale)
        out = metrics.fd_infinity(gen, ref, ns=[200, 250, 333, 500, 1000], generator=_g(s), reps=5)
        assert out["slope"] > 0 and out["ns"] == [200, 250, 333, 500, 1000]
        inf_err.append(out["fd_inf"] - fd_true)
        small_err.append(out["fd"][0] - fd_true)
    inf_err, small_err = np.asarray(inf_err), np.asarray(small_err)
    assert abs(inf_err.mean()) < 3 * inf_err.std(ddof=1) / np.sqrt(8)
    assert small_err.mean() > 3 * small_err.std(ddof=1) / np.sqrt(8)     # FD at n = 200: biased upward
    print("FD_inf error", inf_err.mean(), "FD(200) error", small_err.mean())
    assert abs(inf_err.mean()) < 0.3 * small_err.mean()
    default = metrics.fd_infinity(_gauss(400, d, 1), ref)              # default ns: 8 sizes in [N/4, N]
    assert len(default["ns"]) == 8 and default["ns"][0] == 100 and default["ns"][-1] == 400


def test_unbiased_energy_distance_and_the_real_vs_real_floor():
    """Catches a floor computed on overlapping sets, or an energy distance biased by each set's spread."""
    pool = _gauss(4000, 2, 20)
    u = [metrics.real_vs_real(lambda a, b: metrics.energy_distance(a, b, unbiased=True), pool, 50, _g(s))
         for s in range(100)]
    v = [metrics.real_vs_real(metrics.energy_distance, pool, 50, _g(s)) for s in range(100)]
    assert abs(np.mean(u)) < 3 * np.std(u, ddof=1) / np.sqrt(100) and np.mean(v) > 0.02
    same = metrics.real_vs_real(lambda a, b: float((a[:, None] == b[None]).all(-1).any()), pool, 500, _g(0))
    assert same == 0.0                                               # the two sets are disjoint
    with pytest.raises(ValueError, match="2n"):
        metrics.real_vs_real(metrics.energy_distance, pool, 3000, _g(0))
