"""Public tests for exercise sheet 1, reverse kernels: one basic case per exercise (the points they carry
are in rubric.py; the instructor's hidden tests check other seeds, shapes, paths and edge cases).

    python -m pytest tests -q              # from the folder that holds ntrk_student.py
    python -m pytest tests -q -k E1_3      # one exercise
"""
from __future__ import annotations

import math

import torch

import ntrk_minimal as nt
from ntrk_minimal import kernels as ref, metrics

from checks import close, dps_problem, gen, randn, toy_model


# ---- E1.1 tweedie -------------------------------------------------------------------------------------
def test_E1_1_tweedie_vp(isolate):
    st = isolate("tweedie")
    a_t, s_t = math.sqrt(0.5), math.sqrt(0.5)
    x0, eps = randn((3, 2), 1), randn((3, 2), 2)
    x_t = a_t * x0 + s_t * eps
    close(st.tweedie(x_t, eps, a_t, s_t), x0,
          f"tweedie(x_t, eps, a_t={a_t:.4f}, s_t={s_t:.4f}) must recover x_0 when eps_hat is the true noise",
          mistakes={"x_t - s_t eps_hat, without the division by a_t": x_t - s_t * eps,
                    "(x_t + s_t eps_hat) / a_t: the sign of the noise term": (x_t + s_t * eps) / a_t})


# ---- E1.2 ddim_mean -----------------------------------------------------------------------------------
def test_E1_2_ddim_mean_deterministic_vp(isolate):
    st = isolate("ddim_mean")
    a_prev, s_prev = math.sqrt(0.37), math.sqrt(0.63)
    x0, eps = randn((4, 6), 3), randn((4, 6), 4)
    close(st.ddim_mean(x0, eps, a_prev, s_prev, 0.0), a_prev * x0 + s_prev * eps,
          "with sigma_t = 0 (deterministic DDIM), mu_t must be the forward point a_prev x0_hat + s_prev eps_hat",
          mistakes={"a_prev x0_hat + (s_prev^2 - sigma_t^2) eps_hat: the variance, not its square root "
                    "(missing square root)": a_prev * x0 + s_prev ** 2 * eps})


# ---- E1.3 Base.step -----------------------------------------------------------------------------------
def test_E1_3_base_step_vp(isolate):
    st = isolate("Base")
    sched, i = nt.make_schedule(7, eta=0.6), 3
    x_t = randn((4, 2), 5)
    out = st.Base().step(toy_model, x_t, i, sched, gen(6))
    assert isinstance(out, ref.StepResult), f"Base.step must return a StepResult, got {type(out).__name__}"
    t, a_t, s_t = sched.timesteps[i], float(sched.a_t[i]), float(sched.s_t[i])
    a_prev, s_prev, sigma_t = float(sched.a_prev[i]), float(sched.s_prev[i]), float(sched.sigma_t[i])
    eps_hat = toy_model(x_t, t)
    x0_hat = ref.tweedie(x_t, eps_hat, a_t, s_t)
    mu_t = ref.ddim_mean(x0_hat, eps_hat, a_prev, s_prev, sigma_t)
    eps = randn((4, 2), 6)
    close(out.eta_t, eps, "eta_t must be the fresh draw noise_like(mu_t, generator)")
    close(out.mu_t, mu_t, f"mu_t at step {i} (ddim_mean of this step's x0_hat, eps_hat, a_prev, s_prev, sigma_t)")
    close(out.x0_hat, x0_hat, "x0_hat must be passed through unchanged")
    close(out.x_prev, mu_t + sigma_t * eps, f"x_prev = mu_t + sigma_t * eta_t at step {i}",
          mistakes={"mu_t + eta_t: the noise is not scaled by sigma_t": mu_t + eps})


# ---- E1.4 MeanShift.step (DPS) --------------------------------------------------------------------------
def test_E1_4_dps_step_vp(isolate):
    st = isolate("MeanShift")
    sched, model, reward = dps_problem()
    i, lam = 0, 0.6
    x_t = randn((6, 3), 7)
    out = st.MeanShift(lam).step(model, x_t, i, sched, gen(8), reward)
    a_prev, s_prev, sigma_t = float(sched.a_prev[i]), float(sched.s_prev[i]), float(sched.sigma_t[i])
    eps_hat, x0_hat, g = ref.reward_grad(model, reward, x_t, i, sched)
    mu_t = ref.ddim_mean(x0_hat, eps_hat, a_prev, s_prev, sigma_t)
    eps = randn((6, 3), 8)
    close(out.x_prev, mu_t + lam * g + sigma_t * eps, "x_prev = mu_t + lambda_t g_t + sigma_t eps",
          mistakes={"mu_t - lambda_t g_t + sigma_t eps: the shift has the wrong sign (guidance climbs the "
                    "reward)": mu_t - lam * g + sigma_t * eps,
                    "mu_t + sigma_t eps: the shift lambda_t g_t is missing": mu_t + sigma_t * eps})
    close(out.mu_t, mu_t, "mu_t must be the unguided DDIM mean (the shift goes into x_prev, not mu_t)")
    close(out.mu_t + sigma_t * out.eta_t, out.x_prev,
          "the reported eta_t must satisfy x_prev == mu_t + sigma_t * eta_t")


# ---- E1.5 NoiseTilt.step (NTRK) -------------------------------------------------------------------------
class RecordingWhiten:
    """A whitening map that returns a fixed unit-variance pattern (whatever g it is given)."""

    def __init__(self, seed):
        self.seed = seed

    def __call__(self, g):
        return torch.randn(g.shape, generator=gen(self.seed), dtype=g.dtype)


def test_E1_5_ntrk_mixing_rho_half(isolate):
    st = isolate("NoiseTilt")
    sched, model, reward = dps_problem(d=4)
    x_t, i, rho = randn((5, 4), 9), 2, 0.5
    out = st.NoiseTilt(rho, whiten=RecordingWhiten(99)).step(model, x_t, i, sched, gen(10), reward)
    w, eps = randn((5, 4), 99), randn((5, 4), 10)
    close(out.eta_t, math.sqrt(rho) * w + math.sqrt(1 - rho) * eps,
          f"eta_t at rho_t = {rho} (mix self.whiten's output w_t with the drawn eps)",
          mistakes={"rho w_t + (1 - rho) eps: weights rho and 1 - rho instead of their square roots, so "
                    "their squares do not sum to 1": rho * w + (1 - rho) * eps})
    close(out.x_prev, out.mu_t + float(sched.sigma_t[i]) * out.eta_t, "x_prev = mu_t + sigma_t * eta_t")


# ---- E1.6 eta_energy_per_step (notebook) ----------------------------------------------------------------
def test_E1_6_eta_energy_flat(isolate):
    st = isolate("eta_energy_per_step")
    sched, model, reward = dps_problem(d=3, steps=6)
    res = nt.sample(model, sched, randn((50, 3), 11), "dps", gen(12), reward, record=True, lambda_t=0.5)
    got = torch.as_tensor(st.eta_energy_per_step(res.trace))
    close(got.to(torch.float64), metrics.eta_energy(res.eta), "E||eta_t||^2/d per step (compared with "
          "metrics.eta_energy)")
