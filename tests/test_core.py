"""Core math and the sampling loop: equivalences, exact formulas, error paths, determinism."""
import math

import pytest
import torch

import ntrk_minimal as nt
import ntrk_minimal.metrics
from ntrk_minimal.whitening import norm_match
from ntrk_minimal.sampling import NFECounter


@pytest.fixture(scope="module")
def toy():
    sched = nt.make_schedule(25, eta=1.0)
    mix = nt.ring_mixture(8, 2.0, 0.25)
    return sched, mix, nt.MixtureDenoiser(mix, sched.alphas_cumprod), nt.QuadraticReward([1.0, 2.0], 1.0)


def _x_T(n=64, d=2, seed=0, dtype=torch.float64):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _run(toy, kernel, seed=1, x_T=None, **kw):
    sched, mix, model, r = toy
    x_T = _x_T() if x_T is None else x_T
    return nt.sample(model, sched, x_T, kernel, torch.Generator().manual_seed(seed), r, record=True, **kw)


# ---- schedule and one step agree with diffusers ---------------------------------------------------
def test_schedule_matches_ddim_scheduler_step(toy):
    from ntrk_minimal.schedules import make_scheduler

    sched, mix, model, _ = toy
    ref = make_scheduler()
    ref.set_timesteps(25)
    assert torch.equal(ref.timesteps, sched.timesteps)
    x = _x_T(16)
    g = torch.Generator().manual_seed(3)
    for i, t in enumerate(sched.timesteps):
        eps_hat = model(x, t)
        noise = torch.randn(x.shape, generator=g, dtype=x.dtype)
        x0_hat = nt.tweedie(x, eps_hat, float(sched.a_t[i]), float(sched.s_t[i]))
        ours = nt.ddim_mean(x0_hat, eps_hat, float(sched.a_prev[i]), float(sched.s_prev[i]),
                            float(sched.sigma_t[i])) + float(sched.sigma_t[i]) * noise
        theirs = ref.step(eps_hat, t, x, eta=1.0, variance_noise=noise).prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
        x = theirs


def test_eta_one_gives_ddpm_posterior_variance(toy):
    sched = toy[0]
    # DDPM posterior variance between t and t_prev: (1-ab_prev)/(1-ab_t) * (1 - ab_t/ab_prev)
    beta_tilde = (1 - sched.ab_prev) / (1 - sched.ab_t) * (1 - sched.ab_t / sched.ab_prev)
    torch.testing.assert_close(sched.sigma_t ** 2, beta_tilde)
    assert (nt.make_schedule(25, eta=0.0).sigma_t == 0).all()


# ---- the analytic mixture -------------------------------------------------------------------------
@pytest.mark.parametrize("ab", [0.999, 0.5, 0.01])
def test_score_matches_autograd_of_log_density(ab):
    g = torch.Generator().manual_seed(0)
    d, K = 5, 3
    A = torch.randn(K, d, d, generator=g, dtype=torch.float64)
    mix = nt.GaussianMixture(torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64),
                             torch.randn(K, d, generator=g, dtype=torch.float64) * 2,
                             A @ A.transpose(-1, -2) / d + 0.1 * torch.eye(d, dtype=torch.float64))
    p_t = mix.diffused(ab)
    x = torch.randn(50, d, generator=g, dtype=torch.float64).requires_grad_(True)
    (auto,) = torch.autograd.grad(p_t.log_prob(x).sum(), x)
    torch.testing.assert_close(p_t.score(x.detach()), auto)


def test_eps_hat_is_scaled_score(toy):
    sched, mix, model, _ = toy
    t = int(sched.timesteps[5])
    ab = float(sched.alphas_cumprod[t])
    x = _x_T(32).requires_grad_(True)
    (auto,) = torch.autograd.grad(model.log_prob_t(x, t).sum(), x)
    torch.testing.assert_close(model(x.detach(), t), -math.sqrt(1 - ab) * auto)


def test_log_density_normalised_and_samples_match():
    mix = nt.ring_mixture(8, 2.0, 0.25)
    a = torch.linspace(-4, 4, 300, dtype=torch.float64)
    gx, gy = torch.meshgrid(a, a, indexing="ij")
    p = mix.log_prob(torch.stack([gx.flatten(), gy.flatten()], -1)).exp()
    assert abs(float(p.sum() * (a[1] - a[0]) ** 2) - 1) < 1e-3
    x = mix.sample(20000, torch.Generator().manual_seed(0))
    assert x.mean(0).abs().max() < 0.05 and abs(float((x ** 2).sum(1).mean()) - (4 + 2 * 0.0625)) < 0.05


@pytest.mark.parametrize("reward", [nt.QuadraticReward([1.0, 2.0], 0.8), nt.LinearReward([0.7, -0.4])])
def test_tilted_mixture_matches_grid_normalisation(reward):
    mix, beta = nt.ring_mixture(8, 2.0, 0.25), 0.5
    target = nt.tilted_mixture(mix, reward, beta)
    a = torch.linspace(-5, 5, 400, dtype=torch.float64)
    gx, gy = torch.meshgrid(a, a, indexing="ij")
    pts = torch.stack([gx.flatten(), gy.flatten()], -1)
    logq = mix.log_prob(pts) + reward(pts) / beta
    q = torch.softmax(logq, 0) / (a[1] - a[0]) ** 2          # numerically normalised p0 exp(r/beta)
    p = target.log_prob(pts).exp()
    assert float((p - q).abs().max()) < 1e-3 * float(q.max())


def test_tilted_mixture_errors():
    mix = nt.ring_mixture()
    with pytest.raises(ValueError, match="beta"):
        nt.tilted_mixture(mix, nt.QuadraticReward([0, 0]), 0.0)
    with pytest.raises(TypeError, match="closed form"):
        nt.tilted_mixture(mix, nt.ModesReward([[0.0, 0.0]]), 1.0)
    with pytest.raises(ValueError, match="dimension"):
        nt.tilted_mixture(mix, nt.QuadraticReward([0, 0, 0]), 1.0)


def test_rewards_values_and_gradients():
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(nt.QuadraticReward([1.0, 2.0], 2.0)(x), torch.tensor([0.0, -5 / 8], dtype=torch.float64))
    assert torch.allclose(nt.LinearReward([1.0, -1.0])(x), torch.tensor([-1.0, 0.0], dtype=torch.float64))
    m = nt.ModesReward([[1.0, 2.0], [5.0, 5.0]], 0.5)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(m(xg).sum(), xg)
    assert torch.isfinite(g).all() and g[0].abs().max() < 1e-6    # a centre is a maximiser
    with pytest.raises(ValueError, match="features"):
        nt.QuadraticReward([0.0, 0.0])(torch.zeros(3, 5))


# ---- the four kernels reduce to base at zero strength ----------------------------------------------
@pytest.mark.parametrize("kernel,kw", [("ntrk", {"rho_t": 0.0}), ("ntrk", {"rho_t": 0.0, "whiten": norm_match}),
                                       ("dps", {"lambda_t": 0.0}), ("svdd", {"num_candidates": 1})])
def test_zero_strength_reproduces_base_bit_for_bit(toy, kernel, kw):
    base = _run(toy, "base")
    other = _run(toy, kernel, **kw)
    assert torch.equal(base.x0, other.x0)
    assert torch.equal(base.path, other.path)
    assert torch.equal(base.eta, other.eta)


def test_zero_strength_bit_for_bit_float32(toy):
    x_T = _x_T(dtype=torch.float32)
    sched, mix, _, r = toy
    model = nt.MixtureDenoiser(mix.to(dtype=torch.float32), sched.alphas_cumprod)
    runs = [nt.sample(model, sched, x_T, k, torch.Generator().manual_seed(4), r, **kw).x0
            for k, kw in [("base", {}), ("ntrk", {"rho_t": 0.0})]]
    assert runs[0].dtype == torch.float32 and torch.equal(*runs)


def test_kernels_update_rule_is_mu_plus_sigma_eta(toy):
    for kernel, kw in [("base", {}), ("ntrk", {"rho_t": 0.3}), ("dps", {"lambda_t": nt.sigma2_scaled(1.0)}),
                       ("svdd", {"num_candidates": 3})]:
        res = _run(toy, kernel, **kw)
        for s in res.trace:
            torch.testing.assert_close(s.x_prev, s.mu_t + s.sigma_t * s.eta_t)


def test_ntrk_eta_mixes_whitened_gradient_and_noise(toy):
    """eta_t = sqrt(rho) W(g) + sqrt(1-rho) eps: with W = norm matching, E||eta||^2/d stays ~1."""
    sched, mix, model, r = toy
    res = _run(toy, "ntrk", x_T=_x_T(2000), rho_t=0.5, whiten=norm_match)
    e = nt.metrics.eta_energy(res.eta[:-1])
    assert (e - 1).abs().max() < 0.06
    dps = _run(toy, "dps", x_T=_x_T(2000), lambda_t=nt.sigma2_scaled(8.0))
    assert nt.metrics.eta_energy(dps.eta[:-1]).mean() > 1.1      # mean shift leaves the noise shell


def test_guidance_raises_reward(toy):
    base = _run(toy, "base", x_T=_x_T(500))
    r = toy[3]
    for kernel, kw in [("ntrk", {"rho_t": 0.3}), ("dps", {"lambda_t": nt.sigma2_scaled(2.0)}),
                       ("svdd", {"num_candidates": 4})]:
        assert r(_run(toy, kernel, x_T=_x_T(500), **kw).x0).mean() > r(base.x0).mean() + 1.0


# ---- error paths -----------------------------------------------------------------------------------
def test_rho_outside_unit_interval(toy):
    with pytest.raises(ValueError, match="rho_t must lie in"):
        nt.NoiseTilt(rho_t=1.5)
    with pytest.raises(ValueError, match="rho_t must lie in"):
        _run(toy, "ntrk", rho_t=lambda i, s: -0.1)
    with pytest.raises(ValueError, match="length num_steps"):
        _run(toy, "ntrk", rho_t=[0.1, 0.2])


def test_ntrk_needs_stochastic_schedule(toy):
    _, mix, model, r = toy
    det = nt.make_schedule(25, eta=0.0)
    with pytest.raises(ValueError, match="sigma_t > 0"):
        nt.sample(model, det, _x_T(), "ntrk", torch.Generator().manual_seed(0), r, rho_t=0.1)
    nt.sample(model, det, _x_T(), "ntrk", torch.Generator().manual_seed(0), r, rho_t=0.0)  # fine


def test_shape_and_device_mismatch(toy):
    sched, mix, model, r = toy
    with pytest.raises(ValueError, match=r"shape \(batch, 2\)"):
        nt.sample(model, sched, _x_T(d=3), "base", torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="x_T must be a tensor"):
        nt.sample(model, sched, torch.zeros(5), "base")
    meta = torch.empty(4, 2, device="meta", dtype=torch.float64)
    with pytest.raises(ValueError, match="generator is on cpu"):
        nt.sample(model, sched, meta, "base", torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="mixture is on cpu"):
        mix.log_prob(meta)


def test_non_finite_gradient_names_the_step(toy):
    sched, mix, model, _ = toy
    bad = lambda x: torch.sqrt(x[:, 0] - 100.0)          # NaN everywhere on the support
    with pytest.raises(FloatingPointError, match="step 0"):
        nt.sample(model, sched, _x_T(), "ntrk", torch.Generator().manual_seed(0), bad, rho_t=0.1)


def test_unknown_kernel_and_missing_reward(toy):
    with pytest.raises(ValueError, match="unknown kernel 'ntkr'"):
        _run(toy, "ntkr")
    sched, mix, model, _ = toy
    with pytest.raises(ValueError, match="needs a reward"):
        nt.sample(model, sched, _x_T(), "dps", torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="num_candidates"):
        nt.Search(num_candidates=0)


# ---- determinism and NFE accounting ----------------------------------------------------------------
@pytest.mark.parametrize("kernel,kw", [("ntrk", {"rho_t": 0.2}), ("svdd", {"num_candidates": 3, "mode": "soft"})])
def test_same_seed_same_numbers(toy, kernel, kw):
    a, b = _run(toy, kernel, seed=7, **kw), _run(toy, kernel, seed=7, **kw)
    c = _run(toy, kernel, seed=8, **kw)
    assert torch.equal(a.x0, b.x0) and not torch.equal(a.x0, c.x0)


def test_nfe_accounting(toy):
    sched, mix, model, r = toy
    T = sched.num_steps
    assert _run(toy, "base").nfe == T
    assert _run(toy, "ntrk", rho_t=0.1).nfe == T
    assert _run(toy, "svdd", num_candidates=4).nfe == 1 + 4 * (T - 1)      # candidates' eps reused
    g = torch.Generator().manual_seed(0)
    bon = nt.best_of_n(model, sched, _x_T(5 * 8), 5, r, generator=g)
    assert bon.nfe == 5 * T and bon.x0.shape == (8, 2)
    s = nt.smc(model, sched, _x_T(6 * 8), 6, r, beta=1.0, generator=g)
    assert s.nfe == 6 * T and s.x0.shape == (8, 2)
    for res, budget in [(bon, 5 * T), (s, 6 * T)]:
        assert res.nfe <= budget


def test_nfe_counter_counts_rows():
    c = NFECounter(lambda x, t: x)
    c(torch.zeros(6, 2), 0)
    c(torch.zeros(3, 2), 0)
    assert c.nfe(3) == 3.0


def test_best_of_n_keeps_the_best(toy):
    sched, mix, model, r = toy
    x_T = _x_T(4 * 10)
    all_ = nt.sample(model, sched, x_T, "base", torch.Generator().manual_seed(2)).x0
    bon = nt.best_of_n(model, sched, x_T, 4, r, generator=torch.Generator().manual_seed(2))
    best = r(all_).reshape(4, 10).max(0).values
    torch.testing.assert_close(r(bon.x0), best)


def test_grouped_starts_keep_x_T_as_copy_zero():
    x_T = _x_T(5)
    starts = nt.grouped_starts(x_T, 3, torch.Generator().manual_seed(1))
    assert starts.shape == (15, 2) and starts.dtype == x_T.dtype
    groups = starts.reshape(3, 5, 2)                       # [copy][output], as best_of_n reads it
    assert torch.equal(groups[0], x_T)
    assert not torch.equal(groups[1], groups[2])
    torch.testing.assert_close(starts, nt.grouped_starts(x_T, 3, torch.Generator().manual_seed(1)),
                               rtol=0, atol=0)
    assert torch.equal(nt.grouped_starts(x_T, 1), x_T)


def test_smc_targets_the_tilted_law():
    """Single Gaussian, linear reward. The 25-step sampler is itself over-concentrated (its law is
    N(0, v I) with v < Sigma), so SMC must match the tilt of the *sampler's* law, p_0^T exp(r/beta),
    estimated here by self-normalised importance weights on a large independent base run. A wrong
    weight or temperature fails this; the untilted base mean is far away."""
    sched = nt.make_schedule(25)
    d = 2
    mix = nt.GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, d, dtype=torch.float64),
                             (0.5 * torch.eye(d, dtype=torch.float64))[None])
    model = nt.MixtureDenoiser(mix, sched.alphas_cumprod)
    r, beta = nt.LinearReward([1.0, -0.5]), 1.0
    g = torch.Generator().manual_seed(0)
    base = nt.sample(model, sched, torch.randn(50_000, d, generator=g, dtype=torch.float64), "base", g).x0
    w = torch.softmax(r(base) / beta, 0)
    target_mean = (w[:, None] * base).sum(0)
    P, B = 32, 1000
    out = nt.smc(model, sched, torch.randn(P * B, d, generator=g, dtype=torch.float64), P, r, beta, g)
    se = out.x0.std(0) / B ** 0.5
    assert ((out.x0.mean(0) - target_mean).abs() < 4 * se + 0.01).all(), (out.x0.mean(0), target_mean)
    assert ((base.mean(0) - target_mean).abs() > 10 * se).any()


def test_rho_from_kappa_scales_like_one_over_dim(toy):
    sched = toy[0]
    f2, f64 = nt.rho_from_kappa(0.5, 2), nt.rho_from_kappa(0.5, 64)
    assert f2(0, sched) == pytest.approx(0.125) and f64(0, sched) == pytest.approx(0.25 / 64)
    lin = nt.rho_from_kappa(1.0, 4, "linear")
    assert lin(0, sched) == pytest.approx(0.25) and lin(sched.num_steps - 1, sched) == 0.0
    with pytest.raises(ValueError, match="decay"):
        nt.rho_from_kappa(1.0, 4, "cosine")


# ---- devices and dtypes ------------------------------------------------------------------------------
def test_grouped_starts_draw_on_x_T_device_with_its_generator():
    """The extra starts come from ``generator`` on x_T's device (a CPU-only draw beside a CUDA x_T was
    the bug; the meta device stands in for a GPU here: mixing a CPU draw into it fails)."""
    meta = torch.empty(5, 2, device="meta", dtype=torch.float16)
    starts = nt.grouped_starts(meta, 3)
    assert starts.device.type == "meta" and starts.shape == (15, 2) and starts.dtype == torch.float16
    with pytest.raises(ValueError, match="generator is on cpu but x_T is on meta"):
        nt.grouped_starts(meta, 3, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="n must be a positive int"):
        nt.grouped_starts(_x_T(5), 0)


def test_samplers_draw_everything_on_the_state_device():
    """Base, SVDD and best-of-N on a non-CPU device (meta): every draw and every tensor stays there."""
    sched = nt.make_schedule(5)
    model = lambda x, t: 0.3 * x
    reward = lambda x: -(x ** 2).sum(-1)
    x_T = torch.empty(12, 2, device="meta", dtype=torch.float64)
    assert nt.sample(model, sched, x_T, "base").x0.device.type == "meta"
    assert nt.sample(model, sched, x_T, "svdd", None, reward, num_candidates=3).x0.device.type == "meta"
    bon = nt.best_of_n(model, sched, nt.grouped_starts(x_T, 3), 3, reward)
    assert bon.x0.device.type == "meta" and bon.x0.shape == (12, 2)


def _half_model(x, t):
    return (0.8 * torch.tanh(x.double() + 1e-3 * float(t))).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_vp_half_precision_steps(dtype):
    """A float16/bfloat16 state stays in its dtype, its noise is drawn in that dtype (as DDIMScheduler
    does), the scalars enter as float64 Python numbers (never rounded to the state dtype), and each
    step is within a few roundings of the exact step on the same inputs; compute_dtype=float32 makes
    it one rounding. rho = 0 is still base bit for bit."""
    import dataclasses

    sched = nt.make_schedule(25, eta=1.0)
    upcast = dataclasses.replace(sched, compute_dtype=torch.float32)
    for s, max_ulps in [(sched, 4.0), (upcast, 1.0)]:
        worst = 0.0
        for i in range(25):
            x = (1.5 * torch.randn(256, 8, generator=torch.Generator().manual_seed(i), dtype=torch.float64)).to(dtype)
            out = nt.Base().step(_half_model, x, i, s, torch.Generator().manual_seed(7))
            noise_dtype = dtype if s.compute_dtype is None else torch.float32
            assert out.eta_t.dtype == noise_dtype and out.x_prev.dtype == noise_dtype
            assert torch.equal(out.eta_t, torch.randn(x.shape, generator=torch.Generator().manual_seed(7),
                                                      dtype=noise_dtype))
            e, xd = _half_model(x, s.timesteps[i]).double(), x.double()
            x0 = (xd - float(s.s_t[i]) * e) / float(s.a_t[i])
            c = math.sqrt(max(float(s.s_prev[i]) ** 2 - float(s.sigma_t[i]) ** 2, 0.0))
            exact = float(s.a_prev[i]) * x0 + c * e + float(s.sigma_t[i]) * out.eta_t.double()
            ulp = exact.abs().clamp_min(1.0) * torch.finfo(dtype).eps
            worst = max(worst, float(((out.x_prev.to(dtype).double() - exact).abs() / ulp).max()))
        assert worst <= max_ulps, (s.compute_dtype, worst)
    reward = lambda x: -(x.double() ** 2).sum(-1)
    x_T = torch.randn(32, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(dtype)
    runs = [nt.sample(_half_model, sched, x_T, k, torch.Generator().manual_seed(4), reward, record=True, **kw)
            for k, kw in [("base", {}), ("ntrk", {"rho_t": 0.0}), ("dps", {"lambda_t": 0.0})]]
    assert all(r.x0.dtype == dtype and all(s.x_prev.dtype == dtype for s in r.trace) for r in runs)
    assert torch.isfinite(runs[0].x0.float()).all()
    assert torch.equal(runs[0].x0, runs[1].x0) and torch.equal(runs[0].x0, runs[2].x0)
