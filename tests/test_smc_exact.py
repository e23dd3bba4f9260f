"""NTRK (and DPS) as SMC proposals with exact weights (docs/METHOD.md section B.1).

Known answer: a diagonal Gaussian prior with its exact denoiser makes the 25-step DDPM sampler a
linear-Gaussian chain, so its own law N(M, V) is computed here by a recursion on (mean, variance)
independent of the library; a quadratic reward tilts it to a Gaussian in closed form. SMC with any
exact-weight proposal must reproduce that tilted law's mean and variance (self-normalised estimates
over all particles); the same proposal without the correction (today's silent bug) must not.
"""
from __future__ import annotations

import math

import pytest
import torch

import ntrk_minimal as nt
from ntrk_minimal.bench import CostCounter
from ntrk_minimal.kernels import Kernel, Search, gaussian_log_ratio, reward_grad
from ntrk_minimal.sampling import SMCResult
from ntrk_minimal.strength import TiltMatched

D = 2
PRIOR_MEAN = torch.tensor([0.5, -1.0], dtype=torch.float64)
PRIOR_VAR = torch.tensor([0.6, 0.3], dtype=torch.float64)
CENTER, SCALE, BETA = [1.5, 0.5], 0.7, 0.8          # r(x) = -||x - c||^2 / (2 * 0.7^2), beta = 0.8


class DiagGaussianDenoiser:
    """Exact eps_hat of p_0 = N(m, diag(v)) on the VP path, in closed form (fast; the library's
    MixtureDenoiser agrees, test_denoiser_matches_the_library)."""

    def __init__(self, alphas_cumprod):
        self.ac = alphas_cumprod

    def __call__(self, x_t, t):
        ab = float(self.ac[int(t)])
        a, s = math.sqrt(ab), math.sqrt(1 - ab)
        m, v = PRIOR_MEAN.to(x_t.dtype), PRIOR_VAR.to(x_t.dtype)
        x0 = m + a * v / (a * a * v + s * s) * (x_t - a * m)         # E[x_0 | x_t]
        return (x_t - a * x0) / s


def _gauss_world(num_steps=25):
    sched = nt.make_schedule(num_steps, eta=1.0)
    return sched, DiagGaussianDenoiser(sched.alphas_cumprod), nt.QuadraticReward(CENTER, SCALE)


def test_denoiser_matches_the_library():
    sched, model, _ = _gauss_world(5)
    mix = nt.GaussianMixture(torch.ones(1, dtype=torch.float64), PRIOR_MEAN[None], torch.diag(PRIOR_VAR)[None])
    lib = nt.MixtureDenoiser(mix, sched.alphas_cumprod)
    x = torch.randn(9, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in sched.timesteps[[0, 2, 4]]:
        torch.testing.assert_close(model(x, t), lib(x, t), rtol=1e-10, atol=1e-12)


def _sampler_law(sched):
    """Law of the DDPM sampler's x_0 with the exact Gaussian denoiser, per coordinate: the step
    x_prev = a_prev x0_hat + c eps_hat + sigma xi is affine in x_t (x0_hat = m + k (x - a m),
    k = a v / (a^2 v + s^2)), so mean and variance follow an exact recursion from N(0, 1)."""
    M, V = torch.zeros(D, dtype=torch.float64), torch.ones(D, dtype=torch.float64)
    m, v = PRIOR_MEAN, PRIOR_VAR
    for i in range(sched.num_steps):
        a, s = float(sched.a_t[i]), float(sched.s_t[i])
        ap, sp, sig = float(sched.a_prev[i]), float(sched.s_prev[i]), float(sched.sigma_t[i])
        c = math.sqrt(max(sp * sp - sig * sig, 0.0))
        k = a * v / (a * a * v + s * s)
        alpha = m * (1 - k * a)                          # x0_hat = alpha + k x
        A = ap * k + c * (1 - a * k) / s                 # x_prev = A x + b + sig xi
        b = ap * alpha - c * a * alpha / s
        M, V = A * M + b, A * A * V + sig * sig
    return M, V


def _tilted(M, V):
    """N(M, V) times exp(-(x - c)^2 / (2 s^2 beta)), per coordinate: a Gaussian."""
    c = torch.tensor(CENTER, dtype=torch.float64)
    prec = 1 / V + 1 / (SCALE ** 2 * BETA)
    return (M / V + c / (SCALE ** 2 * BETA)) / prec, 1 / prec


def _weighted_moments(res: SMCResult):
    """Per group: the self-normalised mean and variance of the final particles, (B, D) each."""
    w = res.log_weights.exp()[..., None]                 # (P, B, 1)
    x = res.particles                                   # (P, B, D)
    mean = (w * x).sum(0)
    var = (w * (x - mean) ** 2).sum(0)
    return mean, var


class Uncorrected(Kernel):
    """A proposal whose weights are NOT corrected: smc() before the fix (log_ratio taken as 0)."""

    def __init__(self, inner):
        self.inner, self.name, self.needs_reward, self.grad = inner, "uncorrected", True, inner.grad

    def step(self, *a, **kw):
        return self.inner.step(*a, **kw)

    def log_ratio(self, out):
        return torch.zeros(out.x_prev.shape[0], dtype=torch.float64)


PROPOSALS = {
    "base": lambda sched: nt.Base(),
    "ntrk": lambda sched: nt.NoiseTilt(rho_t=0.3, whiten=nt.norm_match),
    "ntrk-matched": lambda sched: nt.NoiseTilt(rho_t=TiltMatched(1.0, BETA, rho_max=0.6), whiten=nt.norm_match),
    "ntrk-cheap": lambda sched: nt.NoiseTilt(rho_t=0.3, whiten=nt.norm_match, grad="cheap"),
    "dps": lambda sched: nt.MeanShift(nt.sigma2_scaled(1.5 / BETA)),
}


@pytest.fixture(scope="module")
def gauss():
    sched, model, r = _gauss_world()
    M, V = _sampler_law(sched)
    return sched, model, r, (M, V), _tilted(M, V)


def test_sampler_law_recursion_matches_the_sampler(gauss):
    """The reference itself: the recursion's (M, V) agree with a large base run (else every check
    below compares against a wrong answer)."""
    sched, model, r, (M, V), _ = gauss
    g = torch.Generator().manual_seed(3)
    n = 20_000
    x0 = nt.sample(model, sched, torch.randn(n, D, generator=g, dtype=torch.float64), "base", g).x0
    se_m, se_v = (V / n).sqrt(), V * math.sqrt(2 / n)
    assert ((x0.mean(0) - M).abs() < 4 * se_m).all()
    assert ((x0.var(0) - V).abs() < 4 * se_v).all()
    assert ((V - PRIOR_VAR).abs() > 0.01).any()         # the 25-step law is not p_0: the test needs (M, V)


@pytest.mark.parametrize("name", list(PROPOSALS))
def test_smc_weighted_moments_match_the_exact_tilt(gauss, name):
    """Every exact-weight proposal targets p_sampler(x_0) exp(r / beta): the weighted particle mean
    and variance match the closed form within 4.5 standard errors (over 24 independent groups).
    Catches a wrong sign, a halved or missing quadratic term (every guided proposal), a missing potential,
    a wrong temperature; a missing (N/2) log(1 - rho) only where rho_t differs between particles (the
    matched strength: with one scalar rho_t it is a constant that self-normalisation cancels; the
    brute-force test below catches it there). Checked by mutating gaussian_log_ratio: a flipped sign, a halved
    ratio and a dropped quadratic term fail every guided proposal here; a dropped log term fails ntrk-matched."""
    sched, model, r, _, (m_star, v_star) = gauss
    P, B = 600, 24
    g = torch.Generator().manual_seed(11)
    res = nt.smc(model, sched, torch.randn(P * B, D, generator=g, dtype=torch.float64), P, r, BETA, g,
                 kernel=PROPOSALS[name](sched))
    mean, var = _weighted_moments(res)
    for est, true in ((mean, m_star), (var, v_star)):
        se = est.std(0) / math.sqrt(B)
        assert ((est.mean(0) - true).abs() < 4.5 * se + 1e-4).all(), (name, est.mean(0), true, se)


def test_uncorrected_proposal_misses_the_target(gauss):
    """The bug smc() had: NTRK as the proposal without the p_base / q factor targets another law
    (here: tilted twice), so the same check fails by many standard errors."""
    sched, model, r, _, (m_star, v_star) = gauss
    P, B = 600, 24
    g = torch.Generator().manual_seed(11)
    bad = Uncorrected(nt.NoiseTilt(rho_t=0.3, whiten=nt.norm_match))
    res = nt.smc(model, sched, torch.randn(P * B, D, generator=g, dtype=torch.float64), P, r, BETA, g, kernel=bad)
    mean, _ = _weighted_moments(res)
    se = mean.std(0) / math.sqrt(B)
    assert ((mean.mean(0) - m_star).abs() > 10 * se).any(), (mean.mean(0), m_star, se)


def test_proposal_alone_is_off_target(gauss):
    """Guards the test above from being vacuous: the NTRK sampler's own law is far from the tilt."""
    sched, model, r, _, (m_star, _) = gauss
    g = torch.Generator().manual_seed(5)
    x0 = nt.sample(model, sched, torch.randn(4000, D, generator=g, dtype=torch.float64), "ntrk", g, r,
                   rho_t=0.3, whiten=nt.norm_match).x0
    assert ((x0.mean(0) - m_star).abs() > 0.1).any()


def _brute_force(x_prev, mu, sigma, mean_q, std_q):
    """log N(x; mu, sigma^2 I) - log N(x; mean_q, std_q^2 I) by torch.distributions, per sample."""
    p = torch.distributions.Normal(mu, sigma).log_prob(x_prev).flatten(1).sum(1)
    q = torch.distributions.Normal(mean_q, std_q).log_prob(x_prev).flatten(1).sum(1)
    return p - q


@pytest.mark.parametrize("d", [2, 16])
def test_per_step_log_ratio_equals_brute_force_density_ratio(d):
    """Each kernel's reported log p_base - log q equals the ratio of the two Gaussian densities at the
    x_prev it drew (a mixture model, a non-Gaussian problem; several steps; N = 2 and 16, so the
    (N/2) log(1 - rho) term is checked at two sizes)."""
    sched = nt.make_schedule(10, eta=1.0)
    g0 = torch.Generator().manual_seed(0)
    means = torch.randn(3, d, generator=g0, dtype=torch.float64)
    mix = nt.GaussianMixture(torch.ones(3, dtype=torch.float64), means,
                             (0.3 * torch.eye(d, dtype=torch.float64)).expand(3, d, d).clone())
    model = nt.MixtureDenoiser(mix, sched.alphas_cumprod)
    r = nt.QuadraticReward(torch.ones(d), 0.8)
    x_t = torch.randn(7, d, generator=g0, dtype=torch.float64)
    W = nt.whiten if d == 16 else nt.norm_match
    for i in (0, 4, 8):
        sigma = float(sched.sigma_t[i])
        _, _, grad = reward_grad(model, r, x_t, i, sched)
        w = W(grad)
        for rho in (0.05, 0.4):
            out = nt.NoiseTilt(rho, whiten=W).step(model, x_t, i, sched, torch.Generator().manual_seed(i), r)
            ref = _brute_force(out.x_prev, out.mu_t, sigma, out.mu_t + sigma * math.sqrt(rho) * w,
                               sigma * math.sqrt(1 - rho))
            torch.testing.assert_close(out.log_ratio, ref, rtol=1e-9, atol=1e-8)
        strength = TiltMatched(2.0, 0.5, rho_max=0.9)
        out = nt.NoiseTilt(strength, whiten=W).step(model, x_t, i, sched, torch.Generator().manual_seed(i), r)
        rho = strength.per_sample(i, sched, grad, w)[:, None]
        ref = _brute_force(out.x_prev, out.mu_t, sigma, out.mu_t + sigma * rho.sqrt() * w, sigma * (1 - rho).sqrt())
        torch.testing.assert_close(out.log_ratio, ref, rtol=1e-9, atol=1e-8)
        lam = 0.3
        out = nt.MeanShift(lam).step(model, x_t, i, sched, torch.Generator().manual_seed(i), r)
        torch.testing.assert_close(out.log_ratio, _brute_force(out.x_prev, out.mu_t, sigma, out.mu_t + lam * grad,
                                                               sigma), rtol=1e-9, atol=1e-8)
        out = nt.Base().step(model, x_t, i, sched, torch.Generator().manual_seed(i))
        assert torch.equal(nt.Base().log_ratio(out), torch.zeros(7, dtype=torch.float64))


def test_gaussian_log_ratio_formula():
    """(||eps||^2 - ||eta||^2) / 2 + (N/2) log(1 - rho): zero when the draw is unchanged (rho = 0)."""
    eps = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.equal(gaussian_log_ratio(eps, eps), torch.zeros(4, dtype=torch.float64))
    assert gaussian_log_ratio(eps, eps, 0.5)[0].item() == pytest.approx(1.5 * math.log(0.5))


def test_smc_refuses_kernels_without_a_density():
    sched, model, r = _gauss_world(5)
    x = torch.randn(8, D, dtype=torch.float64)
    with pytest.raises(ValueError, match="no closed-form proposal density"):
        nt.smc(model, sched, x, 4, r, 1.0, torch.Generator(), kernel="svdd", num_candidates=3)
    with pytest.raises(ValueError, match="rho_t = 1"):             # NTRK with rho = 1: a point mass
        nt.smc(model, sched, x, 4, r, 1.0, torch.Generator(), kernel="ntrk", rho_t=1.0, whiten=nt.norm_match)
    with pytest.raises(ValueError, match="sigma_t = 0 and lambda_t"):   # DPS shift on the deterministic last step
        nt.smc(model, sched, x, 4, r, 1.0, torch.Generator(), kernel="dps", lambda_t=0.5)


def test_rho_zero_and_vanishing_dps_shift_are_the_base_proposal():
    """The deterministic last step (sigma_t = 0, DDPM) and rho = 0 report a zero ratio, and NTRK with
    rho = 0 reproduces base-proposal SMC bit for bit."""
    sched, model, r = _gauss_world(8)
    x = torch.randn(6 * 5, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a = nt.smc(model, sched, x, 6, r, 1.0, torch.Generator().manual_seed(4))
    b = nt.smc(model, sched, x, 6, r, 1.0, torch.Generator().manual_seed(4), kernel="ntrk", rho_t=0.0,
               whiten=nt.norm_match)
    assert torch.equal(a.x0, b.x0) and torch.equal(a.log_weights, b.log_weights)
    c = nt.smc(model, sched, x, 6, r, 1.0, torch.Generator().manual_seed(4), kernel="dps",
               lambda_t=nt.sigma2_scaled(0.0))
    assert torch.equal(a.x0, c.x0)


def _old_smc(model, schedule, x_T, P, reward, beta, generator, ess_threshold=0.5):
    """smc() with the base kernel as it was before the proposal correction (the reference)."""
    from ntrk_minimal.kernels import denoise
    B = x_T.shape[0] // P
    x_t, eps_hat, x0_hat = x_T, None, None
    logw = torch.zeros(P, B, dtype=torch.float64)
    r_prev = torch.zeros(P, B, dtype=torch.float64)
    cols = torch.arange(B)
    for i in range(schedule.num_steps):
        out = nt.Base().step(model, x_t, i, schedule, generator, reward, eps_hat=eps_hat, x0_hat=x0_hat)
        x_t = out.x_prev.detach().to(x_T.dtype)
        if i < schedule.num_steps - 1:
            eps_hat, x0_hat = denoise(model, x_t, i + 1, schedule)
            x0_next = x0_hat
        else:
            eps_hat, x0_hat, x0_next = None, None, x_t
        with torch.no_grad():
            r_new = reward(x0_next).reshape(P, B).to(torch.float64)
        logw = logw + (r_new - r_prev) / beta
        r_prev = r_new
        if i == schedule.num_steps - 1:
            break
        w = torch.softmax(logw, 0)
        redo = 1.0 / (w ** 2).sum(0) < ess_threshold * P
        if redo.any():
            idx = torch.multinomial(w.T, P, replacement=True, generator=generator).T
            idx = torch.where(redo[None], idx, torch.arange(P)[:, None])
            gather = lambda a: a.reshape((P, B) + a.shape[1:])[idx, cols[None]].reshape(a.shape)
            x_t, eps_hat, x0_hat = gather(x_t), gather(eps_hat), gather(x0_hat)
            r_prev = r_prev[idx, cols[None]]
            logw = torch.where(redo[None], torch.zeros_like(logw), logw)
    pick = torch.multinomial(torch.softmax(logw, 0).T, 1, generator=generator)[:, 0]
    return x_t.reshape((P, B) + tuple(x_T.shape[1:]))[pick, cols]


def test_base_proposal_smc_is_unchanged_bit_for_bit():
    sched = nt.make_schedule(12)
    mix = nt.ring_mixture()
    model = nt.MixtureDenoiser(mix, sched.alphas_cumprod)
    r = nt.QuadraticReward([1.0, 2.0], 1.0)
    x = torch.randn(5 * 9, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    new = nt.smc(model, sched, x, 5, r, 0.5, torch.Generator().manual_seed(9))
    old = _old_smc(model, sched, x, 5, r, 0.5, torch.Generator().manual_seed(9))
    assert torch.equal(new.x0, old)
    assert new.nfe == sched.num_steps * 5


def test_guided_smc_costs_one_evaluation_per_particle_and_step():
    """NTRK-SMC reuses the guided evaluation of each new state for its potential and the next step."""
    sched, model, r = _gauss_world(6)
    counter = CostCounter(model)
    x = torch.randn(4 * 3, D, dtype=torch.float64)
    res = nt.smc(counter, sched, x, 4, r, 1.0, torch.Generator().manual_seed(0), kernel="ntrk", rho_t=0.2,
                 whiten=nt.norm_match)
    assert res.nfe == 4 * sched.num_steps
    assert counter.backward_rows == counter.forward_rows == 12 * sched.num_steps
    assert len(res.ess) == sched.num_steps - 1 and all(0 < e <= 1 for e in res.ess)
