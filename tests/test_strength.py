"""The gradient-aware noise-tilt strength ``TiltMatched`` (ntrk_minimal/strength.py)."""
from __future__ import annotations

import math

import pytest
import torch

import ntrk_minimal as nt
from ntrk_minimal.kernels import reward_grad
from ntrk_minimal.strength import TiltMatched


@pytest.fixture(scope="module")
def ring():
    sched = nt.make_schedule(12)
    model = nt.MixtureDenoiser(nt.ring_mixture(), sched.alphas_cumprod)
    return sched, model, nt.QuadraticReward([0.0, 2.5], 1.0)


def test_matched_shift_equals_the_exact_tilt_first_order_step(ring):
    """With norm matching, NTRK's mean shift sigma sqrt(rho) w equals DPS's lambda g at
    lambda = c sigma^2 / beta (the first-order exact tilt), sample by sample (unclipped)."""
    sched, model, r = ring
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c, beta = 0.2, 0.5
    for i in (2, 6, 10):
        sigma = float(sched.sigma_t[i])
        ntrk = nt.NoiseTilt(TiltMatched(c, beta, rho_max=0.99), whiten=nt.norm_match)
        out = ntrk.step(model, x, i, sched, torch.Generator().manual_seed(1), r)
        eps = torch.randn(out.mu_t.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        assert ntrk.rho_t.history[-1]["clipped"] == 0.0
        _, _, g = reward_grad(model, r, x, i, sched)
        lam = c * sigma ** 2 / beta
        k = (c * sigma * g.norm(dim=1) / beta) ** 2 / 2          # rho per sample, N = 2
        shift_ntrk = out.x_prev - out.mu_t - sigma * (1 - k)[:, None].sqrt() * eps
        torch.testing.assert_close(shift_ntrk, lam * g, rtol=1e-9, atol=1e-10)


def test_component_along_g_matches_with_w_on():
    """With the default W (16x16 image, which rescales and turns the gradient), the component of the
    mean shift along g_hat is still c sigma^2 ||g|| / beta."""
    g = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    g[0] *= 0.1
    w = nt.whiten(g)
    sched = nt.make_schedule(10)
    i, c, beta = 3, 1.3, 2.0
    sigma = float(sched.sigma_t[i])
    rho = TiltMatched(c, beta, rho_max=0.9).per_sample(i, sched, g, w)
    gf, wf = g.flatten(1), w.flatten(1)
    along = sigma * rho.sqrt() * (wf * gf).sum(1) / gf.norm(dim=1)
    torch.testing.assert_close(along, c * sigma ** 2 * gf.norm(dim=1) / beta, rtol=1e-9, atol=0)


def test_it_stops_where_the_gradient_vanishes(ring):
    """A flat reward (zero gradient) gives rho = 0: NTRK is the base kernel bit for bit; a larger
    gradient gives a larger step (the constant-kappa kernel moves the same in both cases)."""
    sched, model, _ = ring
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    flat = lambda z: 0.0 * z.sum(1)
    out = nt.NoiseTilt(TiltMatched(), whiten=nt.norm_match).step(model, x, 4, sched, torch.Generator().manual_seed(5), flat)
    base = nt.Base().step(model, x, 4, sched, torch.Generator().manual_seed(5))
    assert torch.equal(out.x_prev, base.x_prev)
    s = TiltMatched(1.0, 1.0, rho_max=0.9)
    g = torch.tensor([[1e-3, 0.0], [1.0, 0.0]], dtype=torch.float64)
    rho = s.per_sample(4, sched, g, nt.norm_match(g))
    assert rho[0] < 1e-5 * rho[1]


def test_clip_and_direction_guard():
    sched = nt.make_schedule(10)
    g = torch.tensor([[100.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    rho = TiltMatched(1.0, 0.1, rho_max=0.3).per_sample(2, sched, g, nt.norm_match(g))
    assert rho[0] == 0.3
    rho = TiltMatched().per_sample(2, sched, g, -nt.norm_match(g))      # W pointing against g
    assert torch.equal(rho, torch.zeros(2, dtype=torch.float64))


def test_bad_arguments_are_named():
    for kw, name in ((dict(scale=0.0), "scale"), (dict(beta=-1.0), "beta"), (dict(rho_max=1.0), "rho_max"),
                     (dict(scale=float("nan")), "scale")):
        with pytest.raises(ValueError, match=name):
            TiltMatched(**kw)


def test_bad_per_sample_rho_is_refused(ring):
    sched, model, r = ring

    class Wrong:
        def per_sample(self, i, schedule, g, w):
            return torch.full((g.shape[0],), 1.5, dtype=torch.float64)

    x = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"rho_t must lie in \[0, 1\]"):
        nt.NoiseTilt(Wrong(), whiten=nt.norm_match).step(model, x, 2, sched, torch.Generator(), r)


def test_history_records_kappa_per_step(ring):
    sched, model, r = ring
    s = TiltMatched(1.0, 0.5)
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    nt.sample(model, sched, x, nt.NoiseTilt(s, whiten=nt.norm_match), torch.Generator().manual_seed(4), r)
    assert [h["i"] for h in s.history] == list(range(sched.num_steps))
    assert s.history[-1]["kappa"] == 0.0                 # sigma = 0 on the last DDPM step
    assert all(math.isfinite(h["kappa"]) and h["kappa"] >= 0 for h in s.history)
