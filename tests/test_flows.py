"""Rectified flows in the kernel form (docs/METHOD.md section 6): the schedule read from diffusers'
FlowMatchEulerDiscreteScheduler, the two scheduler equivalences, the velocity adapter, the exact
mixture on the flow path, and every kernel running unchanged on it."""
import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

import ntrk_minimal as nt
from ntrk_minimal import metrics
from ntrk_minimal.whitening import norm_match

D = 6
_W = torch.randn(D, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64) / math.sqrt(D)


def velocity(x, t):
    """A fixed, nonlinear, time-dependent velocity field v(x_t, t), in x's dtype."""
    s = float(t) / 1000
    xf = x.double()
    return (torch.tanh(xf @ _W) - 0.7 * s * xf + 0.3).to(x.dtype)


def _x_T(n=64, d=D, seed=1, dtype=torch.float32):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _diffusers_run(x_T, num_steps, shift, stochastic, seed=2):
    """diffusers' own loop: scheduler.step(v(x, t), t, x, generator) over scheduler.timesteps."""
    ref = FlowMatchEulerDiscreteScheduler(shift=shift, stochastic_sampling=stochastic)
    ref.set_timesteps(num_steps)
    g, x = torch.Generator().manual_seed(seed), x_T
    for t in ref.timesteps:
        x = ref.step(velocity(x, t), t, x, generator=g).prev_sample
    return x, g


# ---- the schedule is the scheduler's grid -------------------------------------------------------------
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_schedule_reads_the_scheduler(shift):
    ref = FlowMatchEulerDiscreteScheduler(shift=shift)
    ref.set_timesteps(10)
    s = nt.make_flow_schedule(10, noise=0.4, shift=shift)
    assert s.kind == "flow" and s.num_steps == 10
    assert torch.equal(s.timesteps, ref.timesteps)                        # what the pipeline passes the model
    assert torch.equal(s.s_t, ref.sigmas[:-1].double()) and torch.equal(s.s_prev, ref.sigmas[1:].double())
    assert torch.equal(s.a_t, 1 - s.s_t) and torch.equal(s.a_prev, 1 - s.s_prev)
    assert torch.equal(s.sigma_t, 0.4 * s.s_prev)
    assert s.s_t[0] == 1.0 and s.a_t[0] == 0.0 and s.s_prev[-1] == 0.0     # from pure noise to data
    if shift != 1.0:                                                        # the shift is in the grid
        assert not torch.equal(s.s_t, nt.make_flow_schedule(10, shift=1.0).s_t)


def test_flow_schedule_takes_the_pipelines_sigmas_and_mu():
    """FLUX passes sigmas = linspace(1, 1/N, N) and a resolution-dependent mu (dynamic shifting)."""
    N = 8
    sigmas = np.linspace(1.0, 1 / N, N)
    ref = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    ref.set_timesteps(N, sigmas=sigmas, mu=0.9)
    s = nt.Schedule.from_flow_scheduler(FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True), N, 1.0,
                                        sigmas=sigmas, mu=0.9)
    assert torch.equal(s.s_t, ref.sigmas[:-1].double()) and torch.equal(s.timesteps, ref.timesteps)


def test_from_scheduler_dispatches_and_errors():
    det = nt.Schedule.from_scheduler(FlowMatchEulerDiscreteScheduler(), 5)
    sto = nt.Schedule.from_scheduler(FlowMatchEulerDiscreteScheduler(stochastic_sampling=True), 5)
    assert det.noise == 0.0 and (det.sigma_t == 0).all()
    assert sto.noise == 1.0 and torch.equal(sto.sigma_t, sto.s_prev)
    with pytest.raises(ValueError, match="noise must lie in"):
        nt.make_flow_schedule(5, noise=1.5)
    with pytest.raises(ValueError, match="noise is the flow"):
        nt.Schedule.from_scheduler(nt.make_scheduler(), 5, noise=0.5)
    with pytest.raises(ValueError, match="eta is the VP"):
        nt.Schedule.from_scheduler(FlowMatchEulerDiscreteScheduler(), 5, eta=0.5)
    with pytest.raises(AttributeError, match="no alpha-bar"):
        det.ab_t
    with pytest.raises(ValueError, match="needs a flow schedule"):
        nt.VelocityModel(velocity, nt.make_schedule(5))
    with pytest.raises(ValueError, match="invert_sigmas"):
        nt.Schedule.from_flow_scheduler(FlowMatchEulerDiscreteScheduler(invert_sigmas=True), 5)


def test_vp_schedule_is_the_same_path_in_a_s_form():
    s = nt.make_schedule(25, eta=1.0)
    assert s.kind == "vp"
    torch.testing.assert_close(s.a_t ** 2, s.ab_t, rtol=0, atol=1e-15)
    torch.testing.assert_close(s.s_t ** 2, 1 - s.ab_t, rtol=0, atol=1e-15)
    torch.testing.assert_close(s.a_prev ** 2 + s.s_prev ** 2, torch.ones(25, dtype=torch.float64))
    assert s.coefficients(int(s.timesteps[3])) == (float(s.a_t[3]), float(s.s_t[3]))


# ---- sigma = 0: the Euler ODE step ---------------------------------------------------------------------
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_sigma_zero_is_the_euler_ode_step(shift):
    """Exact algebra (float64): a_prev x0_hat + s_prev eps_hat = x_t + (s_prev - s_t) v, every step."""
    sched = nt.make_flow_schedule(28, noise=0.0, shift=shift)
    x_T = _x_T(dtype=torch.float64)
    ours = nt.sample(nt.VelocityModel(velocity, sched), sched, x_T, "base", torch.Generator().manual_seed(0),
                     record=True)
    x = x_T
    for i, t in enumerate(sched.timesteps):
        x = x + float(sched.s_prev[i] - sched.s_t[i]) * velocity(x, t)       # Euler
        torch.testing.assert_close(ours.trace[i].x_prev, x, rtol=0, atol=1e-12)
    assert ours.nfe == 28


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_sigma_zero_matches_diffusers_euler_scheduler(shift):
    """float32, full 28-step trajectory against FlowMatchEulerDiscreteScheduler.step (deterministic).
    To float tolerance, not bit for bit: our step regroups x_t + dt v as a_prev x0_hat + s_prev eps_hat
    (three roundings instead of one); measured max |diff| ~4e-6 on states of size ~3."""
    sched = nt.make_flow_schedule(28, noise=0.0, shift=shift)
    x_T = _x_T()
    theirs, _ = _diffusers_run(x_T, 28, shift, stochastic=False)
    ours = nt.sample(nt.VelocityModel(velocity, sched), sched, x_T, "base", torch.Generator().manual_seed(2))
    assert ours.x0.dtype == torch.float32
    torch.testing.assert_close(ours.x0, theirs, rtol=0, atol=2e-5)


# ---- sigma = s_prev: the stochastic scheduler, bit for bit -----------------------------------------------
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_sigma_s_prev_is_diffusers_stochastic_sampler_bit_for_bit(shift):
    """float32: FlowMatchEulerDiscreteScheduler(stochastic_sampling=True) forms x0 = x_t - sigma v and
    (1 - sigma_next) x0 + sigma_next noise with noise drawn in float32 from the generator; our kernel
    forms the same products in the same order (the eps_hat term has coefficient sqrt(0) = 0) and draws
    the same noise, so the trajectories agree bit for bit, and the generators end in the same state."""
    sched = nt.make_flow_schedule(28, noise=1.0, shift=shift)
    x_T = _x_T()
    theirs, g_theirs = _diffusers_run(x_T, 28, shift, stochastic=True)
    g = torch.Generator().manual_seed(2)
    ours = nt.sample(nt.VelocityModel(velocity, sched), sched, x_T, "base", g)
    assert torch.equal(ours.x0, theirs), (ours.x0 - theirs).abs().max()
    assert torch.equal(g.get_state(), g_theirs.get_state())


class _DiffusersRounding(nt.VelocityModel):
    """diffusers multiplies the 0-dim float32 tensor sigma with the half-precision model output, and
    torch rounds that scalar to float16/bfloat16 first; this copy does the same."""

    def predict(self, x_t, t):
        a, s = self.schedule.coefficients(t)
        v = self.velocity(x_t, t)
        x = x_t.float()
        return x + torch.tensor(a) * v, x - torch.tensor(s) * v


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_stochastic_sampler(dtype):
    """Half-precision states: the step runs in float32 (noise included) and is cast back, as in
    diffusers. The one difference: diffusers rounds sigma to the model dtype inside sigma * v; with
    that rounding copied the trajectories agree bit for bit, and without it ours is closer to the
    exact (float64) step."""
    sched = nt.make_flow_schedule(28, noise=1.0, shift=3.0)
    x_T = _x_T(dtype=dtype)
    theirs, _ = _diffusers_run(x_T, 28, 3.0, stochastic=True)
    g = torch.Generator().manual_seed(2)
    mimic = nt.sample(_DiffusersRounding(velocity, sched), sched, x_T, "base", g)
    assert mimic.x0.dtype == dtype and torch.equal(mimic.x0, theirs)
    ours = nt.sample(nt.VelocityModel(velocity, sched), sched, x_T, "base", torch.Generator().manual_seed(2),
                     record=True)
    assert ours.x0.dtype == dtype and torch.isfinite(ours.x0.float()).all()
    assert all(s.x_prev.dtype == dtype and s.eta_t.dtype == torch.float32 for s in ours.trace)
    # one step from each recorded half-precision state, against the float64 step on the same inputs
    err_ours = err_theirs = 0.0
    for i, step in enumerate(ours.trace[:-1]):
        x, t = step.x_t, sched.timesteps[i]
        gen = lambda: torch.Generator().manual_seed(100 + i)                  # the same float32 noise
        noise = torch.randn(x.shape, generator=gen(), dtype=torch.float32).double()
        v = velocity(x, t).double()
        exact = (1 - float(sched.s_prev[i])) * (x.double() - float(sched.s_t[i]) * v) + float(sched.s_prev[i]) * noise
        ulp = exact.abs().clamp_min(1.0) * torch.finfo(dtype).eps
        ours_i = nt.Base().step(nt.VelocityModel(velocity, sched), x, i, sched, gen()).x_prev.to(dtype)
        ref = FlowMatchEulerDiscreteScheduler(shift=3.0, stochastic_sampling=True)
        ref.set_timesteps(28)
        ref.set_begin_index(i)
        theirs_i = ref.step(velocity(x, t), t, x, generator=gen()).prev_sample
        err_ours = max(err_ours, float(((ours_i.double() - exact).abs() / ulp).max()))
        err_theirs = max(err_theirs, float(((theirs_i.double() - exact).abs() / ulp).max()))
    assert err_ours <= 1.0, err_ours                 # one rounding to the state dtype, nothing else
    assert err_ours <= err_theirs, (err_ours, err_theirs)


# ---- the velocity adapter and the exact mixture on the flow path ------------------------------------------
def _mixture(d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(3, d, d, generator=g, dtype=torch.float64)
    return nt.GaussianMixture(torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64),
                              torch.randn(3, d, generator=g, dtype=torch.float64) * 2,
                              A @ A.transpose(-1, -2) / d + 0.1 * torch.eye(d, dtype=torch.float64))


def _posterior_mean(mix, x, a, s):
    """E[x_0 | x_t] = sum_k P(k | x_t) (m_k + a S_k (a^2 S_k + s^2 I)^{-1} (x_t - a m_k)): no Tweedie."""
    p_t = mix.along(a, s)
    resp = p_t.responsibilities(x)                                             # (B, K)
    C = p_t.covs                                                               # (K, d, d)
    diff = x[:, None, :] - a * mix.means[None]                                 # (B, K, d)
    gain = a * mix.covs @ torch.linalg.inv(C)                                  # (K, d, d)
    post_k = mix.means[None] + torch.einsum("kij,bkj->bki", gain, diff)
    return (resp[..., None] * post_k).sum(1)


@pytest.mark.parametrize("i", [1, 4, 9, 14])
def test_mixture_on_the_flow_path_is_exact(i):
    """eps* = -s grad log p_t (autograd of the exact log-density), x0* = the posterior mean (Gaussian
    conditioning, no Tweedie), v* = eps* - x0*; the adapter rebuilds eps* and x0* from v*."""
    sched = nt.make_flow_schedule(15, noise=0.5, shift=3.0)
    mix = _mixture()
    model = nt.MixtureDenoiser(mix, sched)
    t = sched.timesteps[i]
    a, s = float(sched.a_t[i]), float(sched.s_t[i])
    assert model.coefficients(t) == (a, s) and 0 < a < 1
    x = (a * mix.sample(40, torch.Generator().manual_seed(1))
         + s * torch.randn(40, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    xg = x.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(model.log_prob_t(xg, t).sum(), xg)
    torch.testing.assert_close(model(x, t), -s * score)
    eps, x0 = model.predict(x, t)
    torch.testing.assert_close(x0, _posterior_mean(mix, x, a, s))
    torch.testing.assert_close(x, a * x0 + s * eps)                              # the path itself
    v = model.velocity(x, t)
    torch.testing.assert_close(v, eps - x0)
    eps_v, x0_v = nt.VelocityModel(model.velocity, sched).predict(x, t)
    torch.testing.assert_close(eps_v, eps) and torch.testing.assert_close(x0_v, x0)


def test_first_flow_step_has_no_signal():
    """t = 1 (a_t = 0): x_t is pure noise, so eps* = x_t and x0* = E[x_0]; Tweedie would divide by 0."""
    sched = nt.make_flow_schedule(10)
    mix = _mixture()
    model = nt.MixtureDenoiser(mix, sched)
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    eps, x0 = model.predict(x, sched.timesteps[0])
    torch.testing.assert_close(eps, x)
    torch.testing.assert_close(x0, mix.mean.expand(7, 3))
    eps_only = lambda x_t, t: model(x_t, t)                                     # no predict: cannot work
    with pytest.raises(ValueError, match="a_t = 0 at step 0"):
        nt.sample(eps_only, sched, x, "base", torch.Generator().manual_seed(0))
    assert torch.isfinite(nt.sample(model, sched, x, "base", torch.Generator().manual_seed(0)).x0).all()


@pytest.mark.parametrize("noise", [0.0, 0.5, 1.0])
def test_flow_sampler_lands_on_the_modes_at_every_noise_level(noise):
    """With the exact model, every sigma between the ODE and the stochastic sampler puts its samples
    on p_0's modes with p_0's mode weights (25 steps): energy distance < 0.006, where two exact sample
    sets of this size differ by ~0.002 and a wrong eps_hat coefficient (e.g. s_prev - sigma instead of
    sqrt(s_prev^2 - sigma^2), or the VP sqrt(1 - a^2 - sigma^2)) gives 0.009 to 200.
    This is NOT a claim that the marginal is p_0: a fixed noise fraction sigma = f s_prev (f = 1 is
    diffusers' stochastic_sampling) under-disperses each mode at any number of steps (about 0.5x p_0's
    within-mode spread at f = 1), which the energy distance cannot see; tests/test_flow2d.py measures
    that bias with a within-mode spread metric."""
    mix = nt.ring_mixture(8, 2.0, 0.25)
    sched = nt.make_flow_schedule(25, noise=noise, shift=1.0)
    x_T = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x0 = nt.sample(nt.MixtureDenoiser(mix, sched), sched, x_T, "base", torch.Generator().manual_seed(2)).x0
    assert metrics.energy_distance(x0, mix.sample(2000, torch.Generator().manual_seed(9))) < 0.006


# ---- every kernel runs unchanged on the flow schedule ----------------------------------------------------
def _flow_toy(noise=0.7):
    sched = nt.make_flow_schedule(20, noise=noise, shift=3.0)
    mix = nt.ring_mixture(8, 2.0, 0.25)
    return sched, mix, nt.MixtureDenoiser(mix, sched), nt.QuadraticReward([1.0, 2.0], 1.0)


def _velocity_toy(noise=0.7, dtype=torch.float64):
    sched = nt.make_flow_schedule(20, noise=noise, shift=3.0)
    reward = lambda x: -((x.double() - 0.5) ** 2).sum(-1)
    return sched, nt.VelocityModel(velocity, sched), reward, _x_T(48, dtype=dtype)


@pytest.mark.parametrize("kernel,kw", [("ntrk", {"rho_t": 0.0}), ("ntrk", {"rho_t": 0.0, "whiten": norm_match}),
                                       ("dps", {"lambda_t": 0.0}), ("svdd", {"num_candidates": 1})])
@pytest.mark.parametrize("world", ["mixture", "velocity", "velocity-bf16"])
def test_zero_strength_is_base_bit_for_bit_on_flows(world, kernel, kw):
    if world == "mixture":
        sched, mix, model, reward = _flow_toy()
        x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    else:
        sched, model, reward, x_T = _velocity_toy(dtype=torch.bfloat16 if world.endswith("bf16") else torch.float64)
    run = lambda k, **o: nt.sample(model, sched, x_T, k, torch.Generator().manual_seed(5), reward, record=True, **o)
    base, other = run("base"), run(kernel, **kw)
    assert base.x0.dtype == x_T.dtype
    assert torch.equal(base.x0, other.x0) and torch.equal(base.path, other.path)
    assert torch.equal(base.eta, other.eta)


def test_all_kernels_run_and_guide_on_flows():
    sched, mix, model, r = _flow_toy(noise=1.0)
    T = sched.num_steps
    x_T = lambda n: torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = lambda: torch.Generator().manual_seed(1)
    base = nt.sample(model, sched, x_T(400), "base", g())
    for kernel, kw in [("ntrk", {"rho_t": 0.3}), ("dps", {"lambda_t": nt.sigma2_scaled(2.0)}),
                       ("svdd", {"num_candidates": 4})]:
        res = nt.sample(model, sched, x_T(400), kernel, g(), r, record=True, **kw)
        assert r(res.x0).mean() > r(base.x0).mean() + 1.0, kernel
        for s in res.trace:
            torch.testing.assert_close(s.x_prev, s.mu_t + s.sigma_t * s.eta_t)
    assert nt.sample(model, sched, x_T(40), "svdd", g(), r, num_candidates=4).nfe == 1 + 4 * (T - 1)
    bon = nt.best_of_n(model, sched, nt.grouped_starts(x_T(10), 4, g()), 4, r, "ntrk", g(), rho_t=0.2)
    assert bon.nfe == 4 * T and bon.x0.shape == (10, 2)
    s = nt.smc(model, sched, nt.grouped_starts(x_T(10), 6, g()), 6, r, beta=1.0, generator=g())
    assert s.nfe == 6 * T and s.x0.shape == (10, 2) and r(s.x0).mean() > r(base.x0).mean()


def test_ntrk_needs_noise_on_flows():
    sched, mix, model, r = _flow_toy(noise=0.0)
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ValueError, match="flow schedule with noise > 0"):
        nt.sample(model, sched, x_T, "ntrk", torch.Generator().manual_seed(0), r, rho_t=0.1)


def test_coefficients_lookup_and_errors():
    sched = nt.make_flow_schedule(10, shift=3.0)
    i = 4
    t = sched.timesteps[i]
    assert sched.coefficients(t) == (float(sched.a_t[i]), float(sched.s_t[i]))         # exact on the grid
    assert sched.coefficients(t.expand(3)) == sched.coefficients(t)                    # a batch of one t
    assert sched.coefficients(250.0) == (0.75, 0.25)                                    # off the grid: t / 1000
    with pytest.raises(ValueError, match="one timestep per call"):
        sched.coefficients(sched.timesteps[:2])
    with pytest.raises(ValueError, match="outside"):
        sched.coefficients(1500.0)
