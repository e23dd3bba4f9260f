"""The cheap guided step: ``g_t ≈ grad_{x0} r(x0_hat) / a_t``, no backward pass through the denoiser."""
from __future__ import annotations

import math

import pytest
import torch

import ntrk_minimal as nt
from ntrk_minimal.kernels import guided_eval, reward_grad
from ntrk_minimal.bench import CostCounter


class IsoGaussian:
    """Exact eps_hat of p_0 = N(m, v I) on the VP path: x0_hat = m + k (x - a m), k = a v / (a^2 v + s^2)."""

    def __init__(self, ac, m, v):
        self.ac, self.m, self.v = ac, torch.as_tensor(m, dtype=torch.float64), v

    def coef(self, t):
        ab = float(self.ac[int(t)])
        return math.sqrt(ab), math.sqrt(1 - ab)

    def __call__(self, x_t, t):
        a, s = self.coef(t)
        x0 = self.m + a * self.v / (a * a * self.v + s * s) * (x_t - a * self.m)
        return (x_t - a * x0) / s


@pytest.fixture(scope="module")
def iso():
    sched = nt.make_schedule(10)
    return sched, IsoGaussian(sched.alphas_cumprod, [0.3, -0.2, 0.1], 0.5), nt.QuadraticReward([1.0, 0.0, -1.0], 0.6)


def test_default_is_the_full_gradient(iso):
    sched, model, r = iso
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = reward_grad(model, r, x, 3, sched)
    b = reward_grad(model, r, x, 3, sched, grad="full")
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert nt.NoiseTilt().grad == "full" and nt.MeanShift().grad == "full"


def test_cheap_over_full_is_the_jacobian_ratio_on_a_gaussian(iso):
    """Known answer: for N(m, v I) the denoiser's Jacobian is d x0_hat / d x_t = k I with
    k = a v / (a^2 v + s^2), so full = k grad r and cheap = grad r / a: cheap / full = (a^2 v + s^2) / (a^2 v)
    entry by entry (same direction, a length error that grows with the noise level)."""
    sched, model, r = iso
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for i in (0, 5, 9):
        a, s = float(sched.a_t[i]), float(sched.s_t[i])
        _, x0_f, g_full = reward_grad(model, r, x, i, sched, "full")
        _, x0_c, g_cheap = reward_grad(model, r, x, i, sched, "cheap")
        assert torch.equal(x0_f, x0_c)
        ratio = (a * a * model.v + s * s) / (a * a * model.v)
        torch.testing.assert_close(g_cheap, ratio * g_full, rtol=1e-10, atol=1e-12)


def test_cheap_equals_full_when_eps_hat_ignores_x_t():
    """With eps_hat independent of x_t the approximation d x0_hat / d x_t = I / a_t is exact."""
    sched = nt.make_schedule(8)
    const = torch.tensor([0.2, -0.4], dtype=torch.float64)
    model = lambda x_t, t: const.expand_as(x_t) + 0 * x_t
    r = nt.QuadraticReward([0.5, 0.5], 1.0)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for i in (0, 4, 7):
        torch.testing.assert_close(reward_grad(model, r, x, i, sched, "cheap")[2],
                                   reward_grad(model, r, x, i, sched, "full")[2], rtol=1e-12, atol=1e-14)


def test_cheap_step_has_no_backward_through_the_model(iso):
    sched, model, r = iso
    x = torch.randn(5, 3, dtype=torch.float64)
    for mode, rows in (("full", 5), ("cheap", 0)):
        c = CostCounter(model)
        guided_eval(c, r, x, 2, sched, mode)
        assert c.forward_rows == 5 and c.backward_rows == rows


def test_guided_eval_returns_the_reward_of_x0_hat(iso):
    sched, model, r = iso
    x = torch.randn(5, 3, dtype=torch.float64)
    for mode in ("full", "cheap"):
        _, x0, _, rt = guided_eval(model, r, x, 4, sched, mode)
        torch.testing.assert_close(rt, r(x0))


def test_cheap_refuses_a_t_zero_and_bad_modes():
    flow = nt.make_flow_schedule(6, noise=1.0)
    assert float(flow.a_t[0]) == 0.0
    mix = nt.ring_mixture()
    model = nt.MixtureDenoiser(mix, flow)
    r = nt.QuadraticReward([1.0, 1.0], 1.0)
    x = torch.randn(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="a_t = 0"):
        reward_grad(model, r, x, 0, flow, "cheap")
    reward_grad(model, r, x, 1, flow, "cheap")                        # a_t > 0: fine
    with pytest.raises(ValueError, match="grad must be one of"):
        nt.NoiseTilt(grad="approx")
    with pytest.raises(ValueError, match="grad must be one of"):
        reward_grad(model, r, x, 1, flow, "fast")


def test_cheap_kernels_sample_and_move_toward_the_reward():
    """The cheap NTRK and DPS kernels run in the sampler, differ from the full ones (a learned-free but
    x_t-dependent denoiser), and still raise the mean reward over the base sampler."""
    sched = nt.make_schedule(15)
    mix = nt.ring_mixture()
    model = nt.MixtureDenoiser(mix, sched.alphas_cumprod)
    r = nt.QuadraticReward([0.0, 2.5], 1.0)
    x = torch.randn(400, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    run = lambda k, **kw: nt.sample(model, sched, x, k, torch.Generator().manual_seed(4), r, **kw).x0
    base = run("base")
    for kernel, kw in (("ntrk", dict(rho_t=nt.rho_from_kappa(1.0, 2))), ("dps", dict(lambda_t=nt.sigma2_scaled(0.5)))):
        full, cheap = run(kernel, **kw), run(kernel, grad="cheap", **kw)
        assert not torch.equal(full, cheap)
        assert r(cheap).mean() > r(base).mean() + 0.5
