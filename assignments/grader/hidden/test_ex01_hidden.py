"""Hidden tests for exercise sheet 1, reverse kernels (instructor-only: never shipped with the student
release). Other seeds, shapes, dtypes, paths, schedules and edge cases than the notebook and the public
tests; each test function is one rubric criterion (rubric.py), its points split over its cases.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

import ntrk_minimal as nt
from ntrk_minimal import kernels as ref, metrics

from checks import close, dps_problem, gen, mixture, randn, toy_model

SHAPES = [(3, 2), (2, 3, 5, 4), (1, 64)]


def _vp_only(x_t, eps, a_t):
    return (x_t - math.sqrt(max(1 - a_t ** 2, 0.0)) * eps) / a_t


# ---- E1.1 tweedie ---------------------------------------------------------------------------------------
# (a_t, s_t) points: rectified flow (a + s = 1) and one that is neither VP (a^2 + s^2 = 1) nor flow
PATH_POINTS = [(0.98, 0.02), (0.5, 0.5), (0.03, 0.97), (0.8, 1.3)]
PATH_IDS = ["flow-low", "flow-mid", "flow-high", "other"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("a_t,s_t", PATH_POINTS, ids=PATH_IDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_E1_1_tweedie_any_path(isolate, shape, a_t, s_t, dtype):
    st = isolate("tweedie")
    x0, eps = randn(shape, 11, dtype), randn(shape, 12, dtype)
    x_t = a_t * x0 + s_t * eps
    close(st.tweedie(x_t, eps, a_t, s_t), x0,
          f"tweedie(x_t, eps, a_t={a_t:.4g}, s_t={s_t:.4g}) must recover x_0 from x_t = a_t x_0 + s_t eps",
          dtype, scale=max(1.0, s_t) / a_t,
          mistakes={"the VP formula with s_t = sqrt(1 - a_t^2): do not assume a VP path, use s_t":
                    _vp_only(x_t, eps, a_t)})


def test_E1_1_tweedie_keeps_dtype_and_input(isolate):
    st = isolate("tweedie")
    a_t, s_t = math.sqrt(0.3), math.sqrt(0.7)
    x0, eps = randn((2, 3, 4), 13, torch.float32), randn((2, 3, 4), 14, torch.float32)
    x_t = a_t * x0 + s_t * eps
    before = x_t.clone()
    out = st.tweedie(x_t, eps, a_t, s_t)
    assert torch.is_tensor(out) and out.dtype == torch.float32, \
        f"float32 in, float32 out: got {getattr(out, 'dtype', type(out).__name__)}"
    assert torch.equal(x_t, before), "tweedie must not modify x_t in place"


# ---- E1.2 ddim_mean ---------------------------------------------------------------------------------------
def _posterior_cases():
    vp, flow = nt.make_schedule(10, eta=1.0), nt.make_flow_schedule(10, noise=1.0, shift=3.0)
    out = [("vp", float(vp.ab_t[i]), float(vp.ab_prev[i])) for i in (0, 4, 8)]
    return out + [("flow", float(flow.s_t[i]), float(flow.s_prev[i])) for i in (1, 5, 8)]


@pytest.mark.parametrize("path,p_t,p_prev", _posterior_cases(),
                         ids=["vp-early", "vp-middle", "vp-late", "flow-early", "flow-middle", "flow-late"])
def test_E1_2_ddim_mean_posterior_mean(isolate, path, p_t, p_prev):
    st = isolate("ddim_mean")
    x0, eps = randn((5, 2, 3), 21), randn((5, 2, 3), 22)
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
    gap = max(s_prev ** 2 - sigma_t ** 2, 0.0)
    close(st.ddim_mean(x0, eps, a_prev, s_prev, sigma_t), post,
          f"with sigma_t^2 = the posterior variance ({path} path, a_prev={a_prev:.4f}, s_prev={s_prev:.4f}), "
          f"mu_t must equal the posterior mean of q(x_prev | x_t, x_0)",
          mistakes={"a_prev x0_hat + (s_prev^2 - sigma_t^2) eps_hat: the variance, not its square root "
                    "(missing square root)": a_prev * x0 + gap * eps,
                    "a_prev x0_hat + s_prev eps_hat: sigma_t was ignored": a_prev * x0 + s_prev * eps})


def test_E1_2_ddim_mean_deterministic_flow(isolate):
    st = isolate("ddim_mean")
    a_prev, s_prev = 0.63, 0.37
    x0, eps = randn((4, 6), 31, torch.float32), randn((4, 6), 32, torch.float32)
    close(st.ddim_mean(x0, eps, a_prev, s_prev, 0.0), a_prev * x0 + s_prev * eps,
          "with sigma_t = 0 on a flow path, mu_t = a_prev x0_hat + s_prev eps_hat (use s_prev, do not assume "
          "s_prev = sqrt(1 - a_prev^2))", torch.float32,
          mistakes={"the VP formula sqrt(1 - a_prev^2) for s_prev": a_prev * x0 + math.sqrt(1 - a_prev ** 2) * eps,
                    "(s_prev^2 - sigma_t^2) without the square root": a_prev * x0 + s_prev ** 2 * eps})


@pytest.mark.parametrize("a_prev,s_prev,excess", [(math.sqrt(0.999), math.sqrt(0.001), 1e-12), (1.0, 0.0, 0.0)],
                         ids=["rounding", "last-step"])
def test_E1_2_ddim_mean_clamps(isolate, a_prev, s_prev, excess):
    st = isolate("ddim_mean")
    x0, eps = randn((3, 4), 41), randn((3, 4), 42)
    sigma_t = math.sqrt(s_prev ** 2 + excess)               # s_prev^2 - sigma_t^2 = -excess <= 0
    gap = s_prev ** 2 - sigma_t ** 2
    try:
        out = st.ddim_mean(x0, eps, a_prev, s_prev, sigma_t)
    except ValueError as e:                    # math.sqrt of a negative number
        pytest.fail(f"ddim_mean raised ValueError({e}) for s_prev^2 - sigma_t^2 = {gap:.1e} <= 0 (a rounding "
                    f"artefact at the last step): clamp it at 0 before the square root", pytrace=False)
    assert torch.isfinite(out).all(), (f"ddim_mean returned NaN/inf for s_prev^2 - sigma_t^2 = "
                                       f"{gap:.1e} <= 0: clamp it at 0 before the square root")
    close(out, a_prev * x0, "when s_prev^2 - sigma_t^2 <= 0 the eps_hat term must vanish")


# ---- E1.3 Base.step ---------------------------------------------------------------------------------------
def _base_schedule(path):
    return nt.make_schedule(7, eta=0.6) if path == "vp" else nt.make_flow_schedule(7, noise=0.6, shift=2.0)


CASES_13 = [("vp", 0), ("vp", 6), ("flow", 1), ("flow", 3), ("flow", 6)]


def _base_step(st, path, i, seed=52):
    sched = _base_schedule(path)
    x_t = randn((4, 2, 3, 3), 51)
    g = gen(seed)
    return sched, x_t, g, st.Base().step(toy_model, x_t, i, sched, g)


@pytest.mark.parametrize("path,i", CASES_13)
def test_E1_3_base_step_one_draw(isolate, path, i):
    st = isolate("Base")
    sched, x_t, g_student, out = _base_step(st, path, i)
    g_copy = gen(52)
    eps = torch.randn(x_t.shape, generator=g_copy, dtype=x_t.dtype)
    assert torch.equal(out.eta_t, eps), ("eta_t must be exactly one fresh draw noise_like(mu_t, generator) "
                                         "(same generator, same shape, nothing drawn before it)")
    assert torch.equal(g_student.get_state(), g_copy.get_state()), \
        "Base.step must draw from the generator exactly once (other kernels rely on the same draws)"


@pytest.mark.parametrize("path,i", CASES_13)
def test_E1_3_base_step_any_path(isolate, path, i):
    st = isolate("Base")
    sched, x_t, _, out = _base_step(st, path, i)
    assert isinstance(out, ref.StepResult), f"Base.step must return a StepResult, got {type(out).__name__}"
    t, a_t, s_t = sched.timesteps[i], float(sched.a_t[i]), float(sched.s_t[i])
    a_prev, s_prev, sigma_t = float(sched.a_prev[i]), float(sched.s_prev[i]), float(sched.sigma_t[i])
    eps_hat = toy_model(x_t, t)
    x0_hat = ref.tweedie(x_t, eps_hat, a_t, s_t) if a_t > 0 else out.x0_hat
    mu_t = ref.ddim_mean(x0_hat, eps_hat, a_prev, s_prev, sigma_t)
    close(out.mu_t, mu_t, f"mu_t at step {i} of the {path} schedule "
          f"(ddim_mean(x0_hat, eps_hat, a_prev, s_prev, sigma_t))")
    close(out.x0_hat, x0_hat, "x0_hat must be passed through unchanged")
    close(out.x_prev, out.mu_t + sigma_t * out.eta_t, f"x_prev = mu_t + sigma_t * eta_t at step {i}")


@pytest.mark.parametrize("path,num_steps,knob", [("vp", 1, 1.0), ("vp", 9, 0.3), ("flow", 9, 0.5)])
def test_E1_3_base_sampler_matches(isolate, path, num_steps, knob):
    st = isolate("Base")
    if path == "vp":
        sched = nt.make_schedule(num_steps, eta=knob)
    else:
        sched = nt.make_flow_schedule(num_steps, noise=knob, shift=3.0)
    model = nt.MixtureDenoiser(mixture(3), sched)
    x_T = randn((64, 3), 53)
    mine = nt.sample(model, sched, x_T, st.Base(), gen(54))
    theirs = nt.sample(model, sched, x_T, "base", gen(54))
    what = f"DDIM eta={knob}" if path == "vp" else f"rectified flow, noise={knob}"
    close(mine.x0, theirs.x0, f"x_0 of a full {num_steps}-step sampler ({what}) with your Base "
          f"(a difference here and not in one step: the generator is not drawn exactly once per step)")
    assert mine.nfe == num_steps, f"Base must cost one NFE per step ({num_steps}), used {mine.nfe}"


# ---- E1.4 MeanShift.step (DPS) ------------------------------------------------------------------------------
ZERO_SIGMA = ("your step divides by sigma_t, and sigma_t = 0 here (a deterministic step: DDIM eta = 0, or the "
              "last step of a DDPM grid): there is no noise to standardize by, so report eta_t = eps there")


def _guarded(fn):
    try:
        return fn()
    except ZeroDivisionError:
        pytest.fail(f"ZeroDivisionError: {ZERO_SIGMA}", pytrace=False)


@pytest.mark.parametrize("i", [2, 5])
def test_E1_4_dps_step_per_step_lambda(isolate, i):
    st = isolate("MeanShift")
    sched, model, reward = dps_problem()
    lams = torch.linspace(0.9, 0.1, sched.num_steps, dtype=torch.float64)       # per-step sequence
    x_t = randn((6, 3), 61)
    out = _guarded(lambda: st.MeanShift(lams).step(model, x_t, i, sched, gen(62), reward))
    a_prev, s_prev, sigma_t = float(sched.a_prev[i]), float(sched.s_prev[i]), float(sched.sigma_t[i])
    eps_hat, x0_hat, g = ref.reward_grad(model, reward, x_t, i, sched)
    mu_t = ref.ddim_mean(x0_hat, eps_hat, a_prev, s_prev, sigma_t)
    eps, lam = randn((6, 3), 62), float(lams[i])
    close(out.x_prev, mu_t + lam * g + sigma_t * eps, f"x_prev = mu_t + lambda_t g_t + sigma_t eps at step {i} "
          f"(lambda_t = the step's entry of the sequence, per_step(...) above)",
          mistakes={"the shift with the wrong sign": mu_t - lam * g + sigma_t * eps})
    close(out.mu_t + sigma_t * out.eta_t, out.x_prev, "x_prev == mu_t + sigma_t * eta_t")


def test_E1_4_dps_lambda_zero_is_base(isolate):
    st = isolate("MeanShift")
    sched, model, reward = dps_problem()
    x_T = randn((32, 3), 63)
    mine = _guarded(lambda: nt.sample(model, sched, x_T, st.MeanShift(0.0), gen(64), reward))
    base = nt.sample(model, sched, x_T, "base", gen(64))
    assert torch.equal(mine.x0, base.x0), ("lambda_t = 0 must reproduce the base sampler bit for bit "
                                           f"(max difference {(mine.x0 - base.x0).abs().max().item():.3g})")


def test_E1_4_dps_deterministic_step(isolate):
    st = isolate("MeanShift")
    sched = nt.make_schedule(5, eta=0.0)                                         # sigma_t = 0 everywhere
    model = nt.MixtureDenoiser(mixture(3, seed=8), sched.alphas_cumprod)
    reward = nt.QuadraticReward([0.5, -0.5, 1.0], 0.7)
    x_t = randn((5, 3), 65)
    out = _guarded(lambda: st.MeanShift(0.4).step(model, x_t, 2, sched, gen(66), reward))
    assert torch.isfinite(out.eta_t).all(), f"with sigma_t = 0 your eta_t is not finite: {ZERO_SIGMA}"
    close(out.eta_t, randn((5, 3), 66), "with sigma_t = 0, eta_t must be the drawn eps")
    _, _, g = ref.reward_grad(model, reward, x_t, 2, sched)
    close(out.x_prev, out.mu_t + 0.4 * g, "with sigma_t = 0, x_prev = mu_t + lambda_t g_t")


def test_E1_4_dps_raises_reward(isolate):
    st = isolate("MeanShift")
    sched = nt.make_schedule(25, eta=1.0)
    model = nt.MixtureDenoiser(nt.ring_mixture(6, 2.0, 0.3), sched.alphas_cumprod)
    reward = nt.QuadraticReward([-1.0, 2.0], 1.0)
    x_T = randn((400, 2), 67)
    guided = _guarded(lambda: nt.sample(model, sched, x_T, st.MeanShift(nt.sigma2_scaled(2.0)), gen(68), reward))
    base = nt.sample(model, sched, x_T, "base", gen(68))
    rg, rb = reward(guided.x0).mean().item(), reward(base.x0).mean().item()
    assert rg > rb + 0.5, (f"DPS should raise the mean reward clearly above the base sampler's: got "
                           f"{rg:.3f}, expected more than base {rb:.3f} + 0.5 (did you add +lambda_t g_t, "
                           f"with the right sign?)")


# ---- E1.5 NoiseTilt.step (NTRK) -------------------------------------------------------------------------------
class _FixedWhiten:
    def __init__(self, seed):
        self.seed = seed

    def __call__(self, g):
        return torch.randn(g.shape, generator=gen(self.seed), dtype=g.dtype)


SQUARES = "the weights must be sqrt(rho_t) and sqrt(1 - rho_t), so that their squares sum to 1"


@pytest.mark.parametrize("rho", [0.3, 1.0])
def test_E1_5_ntrk_mixing_identity(isolate, rho):
    st = isolate("NoiseTilt")
    sched, model, reward = dps_problem(d=4)
    x_t, i = randn((5, 4), 71), 2
    out = st.NoiseTilt(rho, whiten=_FixedWhiten(98)).step(model, x_t, i, sched, gen(72), reward)
    w, eps = randn((5, 4), 98), randn((5, 4), 72)
    close(out.eta_t, math.sqrt(rho) * w + math.sqrt(1 - rho) * eps,
          f"eta_t = sqrt(rho_t) w_t + sqrt(1 - rho_t) eps at rho_t = {rho} (use self.whiten's output)",
          mistakes={f"rho w_t + (1 - rho) eps: {SQUARES}": rho * w + (1 - rho) * eps})
    close(out.x_prev, out.mu_t + float(sched.sigma_t[i]) * out.eta_t, "x_prev = mu_t + sigma_t * eta_t")


def test_E1_5_ntrk_rho_zero_is_base(isolate):
    st = isolate("NoiseTilt")
    sched, model, reward = dps_problem(d=3)
    x_T = randn((32, 3), 73)
    mine = nt.sample(model, sched, x_T, st.NoiseTilt(0.0, whiten=nt.norm_match), gen(74), reward)
    base = nt.sample(model, sched, x_T, "base", gen(74))
    assert torch.equal(mine.x0, base.x0), ("rho_t = 0 must reproduce the base sampler bit for bit "
                                           f"(max difference {(mine.x0 - base.x0).abs().max().item():.3g})")


@pytest.mark.parametrize("rho", [0.2, 0.8])
def test_E1_5_ntrk_unit_variance(isolate, rho):
    """If W(g) is itself white noise, eta_t is exactly N(0, I) for every rho: E||eta||^2/d = 1."""
    st = isolate("NoiseTilt")
    sched, model, reward = dps_problem(d=4)
    g_w = gen(75)
    white = lambda g: torch.randn(g.shape, generator=g_w, dtype=g.dtype)
    x_t = randn((4000, 4), 76)
    out = st.NoiseTilt(rho, whiten=white).step(model, x_t, 1, sched, gen(77), reward)
    energy = (out.eta_t ** 2).mean().item()
    assert abs(energy - 1.0) < 0.05, (f"E||eta_t||^2/d at rho_t = {rho}: got {energy:.3f}, expected 1 +- 0.05: "
                                      f"{SQUARES}")


# ---- E1.6 eta_energy_per_step (notebook) ----------------------------------------------------------------------
@dataclass
class _Step:
    eta_t: torch.Tensor


@pytest.mark.parametrize("shape,T", [((7, 2, 3, 3), 4), ((5, 1, 8), 1), ((3, 10), 6)],
                         ids=["image-4-steps", "channels-1-step", "flat-6-steps"])
def test_E1_6_eta_energy_any_shape(isolate, shape, T):
    st = isolate("eta_energy_per_step")
    trace = [_Step(randn(shape, 80 + k) * (0.5 + k)) for k in range(T)]
    got = torch.as_tensor(st.eta_energy_per_step(trace))
    expected = torch.stack([(s.eta_t ** 2).mean() for s in trace])
    assert got.shape == (T,), (f"shape {tuple(got.shape)}, expected ({T},): one number per step, the average "
                               f"over the samples and every coordinate (flatten the sample shape {shape[1:]})")
    close(got.to(torch.float64), expected, f"E||eta_t||^2/d per step for samples of shape {shape[1:]}")
    close(got.to(torch.float64), metrics.eta_energy(torch.stack([s.eta_t for s in trace])),
          "compared with metrics.eta_energy")
