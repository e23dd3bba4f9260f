"""Metrics: each one separates what it should and rejects bad input."""
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
