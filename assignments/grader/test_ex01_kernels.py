"""Grader for exercise sheet 1, reverse kernels (``ex_01_reverse_kernels.ipynb``).

Hidden cases: other seeds, shapes, dtypes, schedules and edge cases than the notebook shows. Each test
name starts with its exercise id (``test_E1_3_...`` grades ``Base.step``).
"""
from __future__ import annotations

import math

import pytest
import torch

import ntrk_minimal as nt
from ntrk_minimal import kernels as ref

SHAPES = [(3, 2), (2, 3, 5, 4), (1, 64)]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randn(shape, seed, dtype=torch.float64):
    return torch.randn(shape, generator=_gen(seed), dtype=dtype)


def _close(a, b, what, dtype=torch.float64, scale=1.0):
    tol = (1e-10 if dtype == torch.float64 else 2e-5) * scale
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)}, expected {tuple(b.shape)}"
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype}, expected {b.dtype} (keep the input's dtype)"
    err = (a - b).abs().max().item()
    assert torch.allclose(a, b, rtol=tol, atol=tol), f"{what}: max abs error {err:.3g} (tolerance {tol:.1g})"


def _mixture(d=3, seed=7):
    """A 2-component Gaussian mixture in d dimensions (not the notebook's ring)."""
    g = _gen(seed)
    means = torch.randn(2, d, generator=g, dtype=torch.float64) * 1.5
    a = torch.randn(2, d, d, generator=g, dtype=torch.float64) * 0.3
    covs = a @ a.transpose(1, 2) + 0.1 * torch.eye(d, dtype=torch.float64)
    return nt.GaussianMixture(torch.tensor([0.3, 0.7], dtype=torch.float64), means, covs)


def _toy_model(x_t, t):
    """Any callable eps_hat(x_t, t) will do for one step: a smooth, shape-agnostic stand-in."""
    return 0.4 * torch.tanh(x_t) + 1e-4 * float(t)


# ---- E1.1 tweedie ---------------------------------------------------------------------------------
# (a_t, s_t) points: variance preserving (a^2 + s^2 = 1), rectified flow (a + s = 1), and neither
PATH_POINTS = [(math.sqrt(0.9999), math.sqrt(0.0001)), (math.sqrt(0.5), math.sqrt(0.5)), (math.sqrt(0.02), math.sqrt(0.98)),
               (0.98, 0.02), (0.5, 0.5), (0.03, 0.97), (0.8, 1.3)]
PATH_IDS = ["vp-low", "vp-mid", "vp-high", "flow-low", "flow-mid", "flow-high", "other"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("a_t,s_t", PATH_POINTS, ids=PATH_IDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_E1_1_tweedie_inverts_the_forward_process(isolate, shape, a_t, s_t, dtype):
    st = isolate("tweedie")
    x0, eps = _randn(shape, 11, dtype), _randn(shape, 12, dtype)
    x_t = a_t * x0 + s_t * eps
    x_t_before = x_t.clone()
    out = st.tweedie(x_t, eps, a_t, s_t)
    assert torch.is_tensor(out), f"tweedie must return a tensor, got {type(out).__name__}"
    _close(out, x0, f"tweedie(x_t, eps, a_t={a_t:.4g}, s_t={s_t:.4g}) must recover x_0 from x_t = a_t x_0 + "
           f"s_t eps when eps_hat is the true noise (any path: do not assume s_t = sqrt(1 - a_t^2))",
           dtype, scale=max(1.0, s_t) / a_t)
    assert torch.equal(x_t, x_t_before), "tweedie must not modify x_t in place"


# ---- E1.2 ddim_mean --------------------------------------------------------------------------------
def _posterior_cases():
    vp, flow = nt.make_schedule(10, eta=1.0), nt.make_flow_schedule(10, noise=1.0, shift=3.0)
    out = [("vp", float(vp.ab_t[i]), float(vp.ab_prev[i])) for i in (0, 4, 8)]
    return out + [("flow", float(flow.s_t[i]), float(flow.s_prev[i])) for i in (1, 5, 8)]


@pytest.mark.parametrize("path,p_t,p_prev", _posterior_cases(),
                         ids=["vp-early", "vp-middle", "vp-late", "flow-early", "flow-middle", "flow-late"])
def test_E1_2_ddim_mean_with_ddpm_variance_is_the_posterior_mean(isolate, path, p_t, p_prev):
    st = isolate("ddim_mean")
    x0, eps = _randn((5, 2, 3), 21), _randn((5, 2, 3), 22)
    if path == "vp":                  # p = alpha-bar; the DDPM paper's posterior (its eqs. 6-7)
        ab_t, ab_prev = p_t, p_prev
        a_t, s_t, a_prev, s_prev = math.sqrt(ab_t), math.sqrt(1 - ab_t), math.sqrt(ab_prev), math.sqrt(1 - ab_prev)
        x_t = a_t * x0 + s_t * eps
        alpha = ab_t / ab_prev
        sigma_t = math.sqrt((1 - ab_prev) / (1 - ab_t) * (1 - alpha))           # DDPM posterior std
        post = (math.sqrt(ab_prev) * (1 - alpha) / (1 - ab_t)) * x0 + (math.sqrt(alpha) * (1 - ab_prev) / (1 - ab_t)) * x_t
    else:                             # p = the flow time t: a = 1 - t, s = t; Gaussian conditioning
        a_t, s_t, a_prev, s_prev = 1 - p_t, p_t, 1 - p_prev, p_prev
        x_t = a_t * x0 + s_t * eps
        r = a_t / a_prev                                   # x_t = r x_prev + sqrt(s_t^2 - r^2 s_prev^2) z
        cov, var = r * s_prev ** 2, s_t ** 2               # Cov(x_prev, x_t | x_0), Var(x_t | x_0)
        sigma_t = math.sqrt(s_prev ** 2 - cov ** 2 / var)
        post = a_prev * x0 + (cov / var) * (x_t - a_t * x0)
    _close(st.ddim_mean(x0, eps, a_prev, s_prev, sigma_t), post,
           f"with sigma_t^2 = the posterior variance ({path} path, a_prev={a_prev:.4f}, s_prev={s_prev:.4f}), "
           f"mu_t must equal the posterior mean of q(x_prev | x_t, x_0)")


@pytest.mark.parametrize("a_prev,s_prev", [(math.sqrt(0.37), math.sqrt(0.63)), (0.63, 0.37)], ids=["vp", "flow"])
def test_E1_2_ddim_mean_deterministic_step_lands_on_the_forward_point(isolate, a_prev, s_prev):
    st = isolate("ddim_mean")
    x0, eps = _randn((4, 6), 31, torch.float32), _randn((4, 6), 32, torch.float32)
    expect = a_prev * x0 + s_prev * eps
    _close(st.ddim_mean(x0, eps, a_prev, s_prev, 0.0), expect,
           "with sigma_t = 0 (deterministic DDIM), mu_t = a_prev x0_hat + s_prev eps_hat: the forward point "
           "(use s_prev, do not assume s_prev = sqrt(1 - a_prev^2))", torch.float32)


@pytest.mark.parametrize("a_prev,s_prev,excess", [(math.sqrt(0.999), math.sqrt(0.001), 1e-12), (1.0, 0.0, 0.0)],
                         ids=["rounding", "last-step"])
def test_E1_2_ddim_mean_clamps_the_eps_coefficient(isolate, a_prev, s_prev, excess):
    st = isolate("ddim_mean")
    x0, eps = _randn((3, 4), 41), _randn((3, 4), 42)
    sigma_t = math.sqrt(s_prev ** 2 + excess)               # s_prev^2 - sigma_t^2 = -excess <= 0
    gap = s_prev ** 2 - sigma_t ** 2
    try:
        out = st.ddim_mean(x0, eps, a_prev, s_prev, sigma_t)
    except ValueError as e:                    # math.sqrt of a negative number
        pytest.fail(f"ddim_mean raised {e!r} for s_prev^2 - sigma_t^2 = {gap:.1e} <= 0 (a rounding "
                    f"artefact at the last step): clamp it at 0 before the square root", pytrace=False)
    assert torch.isfinite(out).all(), (f"ddim_mean returned NaN/inf for s_prev^2 - sigma_t^2 = "
                                       f"{gap:.1e} <= 0: clamp it at 0 before the square root")
    _close(out, a_prev * x0, "when s_prev^2 - sigma_t^2 <= 0 the eps_hat term must vanish")


# ---- E1.3 Base.step --------------------------------------------------------------------------------
def _base_schedule(path):
    return nt.make_schedule(7, eta=0.6) if path == "vp" else nt.make_flow_schedule(7, noise=0.6, shift=2.0)


@pytest.mark.parametrize("path,i", [("vp", 0), ("vp", 3), ("vp", 6), ("flow", 3), ("flow", 6)])
def test_E1_3_base_step_is_mu_plus_sigma_times_one_fresh_draw(isolate, path, i):
    st = isolate("Base")
    sched = _base_schedule(path)
    x_t = _randn((4, 2, 3, 3), 51)
    g_student, g_copy = _gen(52), _gen(52)
    out = st.Base().step(_toy_model, x_t, i, sched, g_student)
    assert isinstance(out, ref.StepResult), f"Base.step must return a StepResult, got {type(out).__name__}"
    t, a_t, s_t = sched.timesteps[i], float(sched.a_t[i]), float(sched.s_t[i])
    a_prev, s_prev, sigma_t = float(sched.a_prev[i]), float(sched.s_prev[i]), float(sched.sigma_t[i])
    eps_hat = _toy_model(x_t, t)
    x0_hat = ref.tweedie(x_t, eps_hat, a_t, s_t)
    mu_t = ref.ddim_mean(x0_hat, eps_hat, a_prev, s_prev, sigma_t)
    eps = torch.randn(x_t.shape, generator=g_copy, dtype=x_t.dtype)
    assert torch.equal(out.eta_t, eps), ("eta_t must be exactly one fresh draw _noise(mu_t, generator) "
                                         "(same generator, same shape, nothing drawn before it)")
    assert torch.equal(g_student.get_state(), g_copy.get_state()), \
        "Base.step must draw from the generator exactly once (other kernels rely on the same draws)"
    _close(out.mu_t, mu_t, f"mu_t at step {i} of the {path} schedule "
           f"(use ddim_mean(x0_hat, eps_hat, a_prev, s_prev, sigma_t))")
    _close(out.x0_hat, x0_hat, "x0_hat must be passed through unchanged")
    _close(out.x_prev, mu_t + sigma_t * eps, f"x_prev = mu_t + sigma_t * eta_t at step {i}")


@pytest.mark.parametrize("path,num_steps,knob", [("vp", 1, 1.0), ("vp", 9, 0.3), ("flow", 9, 0.5)])
def test_E1_3_base_sampler_matches_the_reference(isolate, path, num_steps, knob):
    st = isolate("Base")
    if path == "vp":
        sched = nt.make_schedule(num_steps, eta=knob)
    else:
        sched = nt.make_flow_schedule(num_steps, noise=knob, shift=3.0)
    model = nt.MixtureDenoiser(_mixture(3), sched)
    x_T = _randn((64, 3), 53)
    mine = nt.sample(model, sched, x_T, st.Base(), _gen(54))
    theirs = nt.sample(model, sched, x_T, "base", _gen(54))
    what = f"DDIM eta={knob}" if path == "vp" else f"rectified flow, noise={knob}"
    _close(mine.x0, theirs.x0, f"x_0 of a full {num_steps}-step sampler ({what}) with your Base")
    assert mine.nfe == num_steps, f"Base must cost one NFE per step ({num_steps}), used {mine.nfe}"


# ---- E1.4 MeanShift.step (DPS) -----------------------------------------------------------------------
def _dps_problem(d=3):
    sched = nt.make_schedule(8, eta=1.0)
    model = nt.MixtureDenoiser(_mixture(d, seed=8), sched.alphas_cumprod)
    reward = nt.QuadraticReward(torch.linspace(-1, 1, d), 0.7)
    return sched, model, reward


@pytest.mark.parametrize("i", [0, 5])
def test_E1_4_dps_step_shifts_the_mean_by_lambda_g(isolate, i):
    st = isolate("MeanShift")
    sched, model, reward = _dps_problem()
    lams = torch.linspace(0.9, 0.1, sched.num_steps, dtype=torch.float64)       # per-step sequence
    x_t = _randn((6, 3), 61)
    out = st.MeanShift(lams).step(model, x_t, i, sched, _gen(62), reward)
    a_prev, s_prev, sigma_t = float(sched.a_prev[i]), float(sched.s_prev[i]), float(sched.sigma_t[i])
    eps_hat, x0_hat, g = ref.reward_grad(model, reward, x_t, i, sched)
    mu_t = ref.ddim_mean(x0_hat, eps_hat, a_prev, s_prev, sigma_t)
    eps = _randn((6, 3), 62)
    lam = float(lams[i])
    _close(out.x_prev, mu_t + lam * g + sigma_t * eps, f"x_prev = mu_t + lambda_t g_t + sigma_t eps at step {i}")
    _close(out.mu_t, mu_t, "mu_t must be the unguided DDIM mean (the shift goes into x_prev, not mu_t)")
    _close(out.mu_t + sigma_t * out.eta_t, out.x_prev,
           "the reported eta_t must satisfy x_prev == mu_t + sigma_t * eta_t (eta_t = eps + lambda_t/sigma_t g_t)")


def test_E1_4_dps_with_lambda_zero_is_base_bit_for_bit(isolate):
    st = isolate("MeanShift")
    sched, model, reward = _dps_problem()
    x_T = _randn((32, 3), 63)
    mine = nt.sample(model, sched, x_T, st.MeanShift(0.0), _gen(64), reward)
    base = nt.sample(model, sched, x_T, "base", _gen(64))
    assert torch.equal(mine.x0, base.x0), ("lambda_t = 0 must reproduce the base sampler bit for bit "
                                           f"(max difference {(mine.x0 - base.x0).abs().max().item():.3g})")


def test_E1_4_dps_survives_a_deterministic_step(isolate):
    st = isolate("MeanShift")
    sched = nt.make_schedule(5, eta=0.0)                                         # sigma_t = 0 everywhere
    model = nt.MixtureDenoiser(_mixture(3, seed=8), sched.alphas_cumprod)
    reward = nt.QuadraticReward([0.5, -0.5, 1.0], 0.7)
    x_t = _randn((5, 3), 65)
    out = st.MeanShift(0.4).step(model, x_t, 2, sched, _gen(66), reward)
    assert torch.isfinite(out.eta_t).all(), ("with sigma_t = 0 your eta_t is not finite: there is no noise "
                                             "to standardize by, report eta_t = eps")
    assert torch.equal(out.eta_t, _randn((5, 3), 66)), "with sigma_t = 0, eta_t must be the drawn eps"
    _, _, g = ref.reward_grad(model, reward, x_t, 2, sched)
    _close(out.x_prev, out.mu_t + 0.4 * g, "with sigma_t = 0, x_prev = mu_t + lambda_t g_t")


def test_E1_4_dps_raises_the_reward(isolate):
    st = isolate("MeanShift")
    sched = nt.make_schedule(25, eta=1.0)
    model = nt.MixtureDenoiser(nt.ring_mixture(6, 2.0, 0.3), sched.alphas_cumprod)
    reward = nt.QuadraticReward([-1.0, 2.0], 1.0)
    x_T = _randn((400, 2), 67)
    guided = nt.sample(model, sched, x_T, st.MeanShift(nt.sigma2_scaled(2.0)), _gen(68), reward)
    base = nt.sample(model, sched, x_T, "base", _gen(68))
    rg, rb = reward(guided.x0).mean().item(), reward(base.x0).mean().item()
    assert rg > rb + 0.5, (f"DPS should raise the mean reward clearly above the base sampler's: got "
                           f"{rg:.3f} vs base {rb:.3f} (did you add +lambda_t g_t, with the right sign?)")


# ---- E1.5 NoiseTilt.step (NTRK) ------------------------------------------------------------------------
class _RecordingWhiten:
    """A whitening map that returns a fixed unit-variance pattern and records what it was given."""

    def __init__(self, seed):
        self.seed, self.seen = seed, []

    def __call__(self, g):
        self.seen.append(g.clone())
        return torch.randn(g.shape, generator=_gen(self.seed), dtype=g.dtype)


@pytest.mark.parametrize("rho", [0.3, 1.0])
def test_E1_5_ntrk_mixing_identity(isolate, rho):
    st = isolate("NoiseTilt")
    sched, model, reward = _dps_problem(d=4)
    x_t, i = _randn((5, 4), 71), 2
    W = _RecordingWhiten(99)
    out = st.NoiseTilt(rho, whiten=W).step(model, x_t, i, sched, _gen(72), reward)
    w, eps = W(torch.zeros(5, 4, dtype=torch.float64)), _randn((5, 4), 72)
    _close(out.eta_t, math.sqrt(rho) * w + math.sqrt(1 - rho) * eps,
           f"eta_t = sqrt(rho_t) W(g_t) + sqrt(1 - rho_t) eps at rho_t = {rho} (use self.whiten's output)")
    sigma_t = float(sched.sigma_t[i])
    _close(out.x_prev, out.mu_t + sigma_t * out.eta_t, "x_prev = mu_t + sigma_t * eta_t")


def test_E1_5_ntrk_rho_zero_is_base_bit_for_bit(isolate):
    st = isolate("NoiseTilt")
    sched, model, reward = _dps_problem(d=3)
    x_T = _randn((32, 3), 73)
    mine = nt.sample(model, sched, x_T, st.NoiseTilt(0.0, whiten=ref.norm_match), _gen(74), reward)
    base = nt.sample(model, sched, x_T, "base", _gen(74))
    assert torch.equal(mine.x0, base.x0), ("rho_t = 0 must reproduce the base sampler bit for bit "
                                           f"(max difference {(mine.x0 - base.x0).abs().max().item():.3g})")


@pytest.mark.parametrize("rho", [0.2, 0.8])
def test_E1_5_ntrk_keeps_unit_variance(isolate, rho):
    """If W(g) is itself white noise, eta_t is exactly N(0, I) for every rho: E||eta||^2/d = 1."""
    st = isolate("NoiseTilt")
    sched, model, reward = _dps_problem(d=4)
    g_w = _gen(75)
    white = lambda g: torch.randn(g.shape, generator=g_w, dtype=g.dtype)
    x_t = _randn((4000, 4), 76)
    out = st.NoiseTilt(rho, whiten=white).step(model, x_t, 1, sched, _gen(77), reward)
    energy = (out.eta_t ** 2).mean().item()
    assert abs(energy - 1.0) < 0.05, (f"E||eta_t||^2/d = {energy:.3f} at rho_t = {rho}, expected 1: the "
                                      f"weights must be sqrt(rho) and sqrt(1 - rho), so that their squares sum to 1")
