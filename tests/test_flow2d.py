"""The exact 2-D flow world (ntrk_minimal.worlds.flow2d): each test names the bug it would catch.

Independent references: the VP path at the same signal-to-noise ratio (a flow state is a VP state
scaled by sqrt(a^2 + s^2)), the continuity equation (the velocity field transports p_t), DDIM's eta = 1
variance from diffusers, the exact tilted Gaussian, and the exact p*-model.
"""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import ntrk_minimal as nt
from ntrk_minimal import metrics, bench as P
from ntrk_minimal.worlds import flow2d, toy2d
from ntrk_minimal.kernels import reward_grad
from ntrk_minimal.studies import flow_noise

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ring():
    return nt.ring_mixture(8, 2.0, 0.25)


def _x(n, seed=0, scale=1.0):
    return scale * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _gaussian():
    """A single anisotropic Gaussian p_0 and a linear reward: there grad r(x0_hat) = grad V_t exactly."""
    mix = nt.GaussianMixture(torch.ones(1, dtype=torch.float64), torch.tensor([[0.5, -0.3]], dtype=torch.float64),
                             torch.tensor([[[0.3, 0.1], [0.1, 0.2]]], dtype=torch.float64))
    return mix, nt.LinearReward([1.0, 0.5]), 0.5


# ---- the exact model on the flow path ---------------------------------------------------------------------
def test_flow_eps_is_the_vp_eps_at_the_same_signal_to_noise_ratio(ring):
    """x = a x_0 + s eps is c times the VP state sqrt(ab) x_0 + sqrt(1 - ab) eps with c = sqrt(a^2 + s^2),
    ab = a^2 / c^2, and the noise is the same: eps*_flow(x) = eps*_VP(x / c). Reference built from
    GaussianMixture.diffused (the VP code path). Catches a wrong p_t on the flow path (a^2 S + s^2 I),
    swapped a/s, or a wrong sign or scale of eps*; checks the fast model and MixtureDenoiser alike."""
    sched = flow2d.flow_schedule(25, 1.0)
    fast, slow = flow2d.FlowMixtureDenoiser(ring, sched), nt.MixtureDenoiser(ring, sched)
    x = _x(200, 1, 2.0)
    for i in (0, 1, 7, 15, 24):
        t = sched.timesteps[i]
        a, s = float(sched.a_t[i]), float(sched.s_t[i])
        c = math.hypot(a, s)
        ab = a * a / (c * c)
        eps_vp = -math.sqrt(1 - ab) * ring.diffused(ab).score(x / c)
        torch.testing.assert_close(fast(x, t), eps_vp, rtol=0, atol=1e-11)
        torch.testing.assert_close(slow(x, t), eps_vp, rtol=0, atol=1e-11)
        eps, x0 = fast.predict(x, t)
        torch.testing.assert_close(a * x0 + s * eps, x, rtol=0, atol=1e-12)       # the path itself
        torch.testing.assert_close(x0, slow.predict(x, t)[1], rtol=0, atol=1e-10)


def test_velocity_satisfies_the_continuity_equation(ring):
    """The rectified-flow velocity transports p_t: d/dt log p_t + div v + v . grad log p_t = 0, with
    d/dt by central differences of the exact log p_t (GaussianMixture.along) and div v by autograd.
    Catches v = x0 - eps (the sign convention), a velocity of another path, or an x0* that is not the
    posterior mean (the residual is then O(1))."""
    sched = flow2d.flow_schedule(25, 1.0)
    model = flow2d.FlowMixtureDenoiser(ring, sched)
    x = _x(200, 2, 1.5)
    h = 1e-5
    for t in (0.15, 0.4, 0.7, 0.93):
        logp = lambda tt, y: ring.along(1 - tt, tt).log_prob(y)
        dlogp_dt = (logp(t + h, x) - logp(t - h, x)) / (2 * h)
        xg = x.clone().requires_grad_(True)
        v = model.velocity(xg, 1000 * t)                       # model timestep = 1000 t off the grid
        div = sum(torch.autograd.grad(v[:, j].sum(), xg, retain_graph=True)[0][:, j] for j in range(2))
        score = ring.along(1 - t, t).score(x)
        resid = dlogp_dt + div.detach() + (v.detach() * score).sum(1)
        assert float(resid.abs().max()) < 1e-5, (t, float(resid.abs().max()))
        wrong = dlogp_dt - div.detach() - (v.detach() * score).sum(1)          # v with the other sign
        assert float(wrong.abs().max()) > 0.1


def test_ode_transports_noise_to_p0_and_a_fixed_noise_fraction_does_not(ring):
    """sigma = 0 (Euler ODE, 100 steps) carries N(0, I) to p_0: energy distance and within-mode spread at
    the exact-vs-exact level. A fixed fraction sigma = f s_prev injects O(1) noise per step and its
    Gaussian reverse kernel is wrong by O(1) per step: at f = 1 (diffusers' stochastic sampler) the
    within-mode spread is ~0.5x p_0's however many steps; the DDPM variance converges like the ODE.
    Catches a broken ODE step, and a 'fix' that hides the fixed-fraction bias."""
    n = 2000
    ref = ring.sample(4000, torch.Generator().manual_seed(9))
    exact = ring.sample(n, torch.Generator().manual_seed(3))
    floor_ed, floor_spread = metrics.energy_distance(exact, ref), flow2d.spread(exact, ring)
    x_T = _x(n, 1)

    def run(noise, T):
        s = flow2d.flow_schedule(T, noise)
        return nt.sample(flow2d.FlowMixtureDenoiser(ring, s), s, x_T, "base", torch.Generator().manual_seed(2)).x0

    ode = run(0.0, 100)
    assert metrics.energy_distance(ode, ref) < floor_ed + 0.003
    assert abs(flow2d.spread(ode, ring) - floor_spread) < 0.05
    for T in (25, 200):
        assert flow2d.spread(run(1.0, T), ring) < 0.6 * floor_spread            # ~0.48x at any T
    sp25, sp200 = (flow2d.spread(run("ddpm", T), ring) for T in (25, 200))
    assert sp25 < sp200 and abs(sp200 - floor_spread) < 0.05


# ---- the noise schedules -------------------------------------------------------------------------------------
def test_ddpm_sigma_is_ddims_eta_one_variance_on_the_vp_path_and_flow_limits():
    """ddpm_sigma is path-generic: on diffusers' VP DDIM grid it is the eta = 1 sigma_t the schedule
    reads from DDIMScheduler; on the flow grid it is s_prev at t = 1 and 0 at the last step, and lies
    below s_prev. Catches a wrong posterior-variance formula (e.g. a_t/a_prev and s_t/s_prev swapped)."""
    vp = nt.make_schedule(25, eta=1.0)
    torch.testing.assert_close(flow2d.ddpm_sigma(vp), vp.sigma_t, rtol=1e-10, atol=1e-12)
    fl = flow2d.flow_schedule(25, "ddpm")
    assert fl.noise is None and fl.kind == "flow"
    assert float(fl.sigma_t[0]) == float(fl.s_prev[0]) and float(fl.sigma_t[-1]) == 0.0
    assert (fl.sigma_t[1:-1] < fl.s_prev[1:-1]).all() and (fl.sigma_t[1:-1] > 0).all()
    assert torch.equal(flow2d.flow_schedule(25, 0.3).sigma_t, 0.3 * fl.s_prev)
    with pytest.raises(ValueError, match="noise must be"):
        flow2d.flow_schedule(25, "sde")
    with pytest.raises(ValueError, match="noise must lie"):
        flow2d.flow_schedule(25, 1.5)


def test_tilt_lambda_against_sigma_squared():
    """lambda* = s (a_prev s / a - sqrt(s_prev^2 - sigma^2)) against the DPS rule sigma^2: their ratio
    tends to 1 as O(1/T) with the DDPM variance (t in [0.1, 0.9]), to (1 - sqrt(1 - f^2)) / f^2 at a fixed
    fraction f, and lambda* stays > 0 at the ODE (where sigma^2 = 0). Catches a wrong coefficient."""
    lam = flow2d.tilt_lambda(1.0)

    def worst(T):
        dd = flow2d.flow_schedule(T, "ddpm")
        return max(abs(lam(i, dd) / float(dd.sigma_t[i]) ** 2 - 1) for i in range(T // 10, 9 * T // 10, T // 20))

    e1000, e4000 = worst(1000), worst(4000)
    assert e4000 < e1000 / 3 < 0.01                  # measured 0.0147 and 0.0036
    f, T = 0.5, 10_000                               # the O(step / s) correction is ~0.03 at T = 1000
    fx = flow2d.flow_schedule(T, f)
    want = (1 - math.sqrt(1 - f * f)) / (f * f)      # 0.536: sigma^2 / beta is 1.87x lambda*
    assert all(abs(lam(i, fx) / float(fx.sigma_t[i]) ** 2 - want) < 0.01 for i in range(T // 10, 9 * T // 10, T // 20))
    ode = flow2d.flow_schedule(25, 0.0)
    assert lam(0, ode) == 0.0 and all(lam(i, ode) > 0 for i in range(1, 25))
    for s_ in (flow2d.flow_schedule(25, "ddpm"), flow2d.flow_schedule(25, 1.0)):   # an exact identity for both
        for i in range(1, 24):
            want = float(s_.a_t[i] / s_.a_prev[i] * (s_.s_prev[i] / s_.s_t[i]) ** 2)
            assert float(s_.sigma_t[i]) ** 2 / lam(i, s_) == pytest.approx(want, rel=1e-12)


# ---- guidance: exactness on this path ---------------------------------------------------------------------
@pytest.mark.parametrize("noise", [0.0, 0.5, 1.0, "ddpm"])
def test_dps_with_the_tilt_coefficient_is_the_p_star_sampler_step_by_step(noise):
    """For a Gaussian p_0 and a linear reward, grad r(x0_hat) = grad V_t; DPS with lambda* then takes
    exactly the DDIM-form step of the exact p* model (same state, same noise), at every step with
    a_t > 0 and at every noise level, the ODE included. At t = 1 (a_t = 0) g = 0 and the p* step is the
    base step shifted by a_prev (E_p*[x_0] - E_p0[x_0]): no gradient at x_t carries it.
    Catches a wrong lambda*, a wrong DDIM-form mean, or a reward gradient through the wrong x0_hat."""
    mix, reward, beta = _gaussian()
    target = nt.tilted_mixture(mix, reward, beta)
    sched = flow2d.flow_schedule(12, noise)
    base_m, star_m = nt.MixtureDenoiser(mix, sched), nt.MixtureDenoiser(target, sched)
    traj = nt.sample(base_m, sched, _x(64, 4), "base", torch.Generator().manual_seed(5), record=True).trace
    dps, base = nt.MeanShift(flow2d.tilt_lambda(1 / beta)), nt.Base()
    for i, st in enumerate(traj):
        g = lambda: torch.Generator().manual_seed(100 + i)
        ours = dps.step(base_m, st.x_t, i, sched, g(), reward).x_prev
        star = base.step(star_m, st.x_t, i, sched, g()).x_prev
        if i == 0:
            shift = float(sched.a_prev[0]) * (target.mean - mix.mean)
            torch.testing.assert_close(star - ours, shift.expand_as(ours), rtol=0, atol=1e-12)
        else:
            torch.testing.assert_close(ours, star, rtol=0, atol=1e-10)


def test_dps_sigma_squared_rule_converges_to_p_star_with_the_ddpm_variance_only():
    """The exactness statement for DPS's lambda = sigma^2 / beta on this path (Gaussian p_0, linear
    reward, so g = grad V_t): with the DDPM variance its samples approach p* as T grows (mean error
    O(1/T), covariance too); with a fixed fraction f = 1 the covariance stays ~50% off at any T, and with
    f = 0.5 the mean does not converge (sigma^2 over-weights the tilt ~1.9x). Catches a sampler or a
    coefficient that silently stops converging."""
    mix, reward, beta = _gaussian()
    target = nt.tilted_mixture(mix, reward, beta)
    m_star, S_star = target.means[0], target.covs[0]
    x_T = _x(3000, 1)

    def errors(noise, T):
        s = flow2d.flow_schedule(T, noise)
        x0 = nt.sample(nt.MixtureDenoiser(mix, s), s, x_T, "dps", torch.Generator().manual_seed(2), reward,
                       lambda_t=nt.sigma2_scaled(1 / beta)).x0
        return float((x0.mean(0) - m_star).norm()), float((torch.cov(x0.T) - S_star).norm() / S_star.norm())

    (me10, ce10), (me200, ce200) = errors("ddpm", 10), errors("ddpm", 200)
    assert me200 < 0.05 < 0.3 < me10 and ce200 < 0.08 < 0.3 < ce10
    assert errors(1.0, 200)[1] > 0.4
    assert errors(0.5, 200)[0] > 0.2


# ---- NTRK on the flow path ---------------------------------------------------------------------------------
def test_first_flow_step_has_zero_gradient_and_signal_rho_keeps_the_base_step(ring):
    """At t = 1 the exact x0* is the prior mean, so g = 0 exactly and W(0) = 0. Plain rho_from_kappa at
    rho = 1 then makes eta_0 = 0: every sample lands on the same point after the first step. signal_rho
    sets rho_0 = 0: the first step is the base step bit for bit, and later steps still tilt.
    Catches an NTRK whose first flow step deflates (or collapses) the noise."""
    w = flow2d.world(1.0, n_ref=200)
    pb = w.context
    x_T, g = w.start(0, 256)
    _, _, grad = reward_grad(pb.model, pb.reward, x_T, 0, pb.schedule)
    assert torch.equal(grad, torch.zeros_like(grad)) and torch.equal(nt.whiten(grad), grad)
    run = lambda **kw: nt.sample(pb.model, pb.schedule, x_T, "ntrk", w.start(0, 256)[1], pb.reward, record=True, **kw)
    plain = run(rho_t=nt.rho_from_kappa(math.sqrt(2), 2, "constant"))
    assert torch.equal(plain.trace[0].eta_t, torch.zeros_like(x_T))
    assert float(plain.trace[0].x_prev.std(0).max()) == 0.0                  # collapsed onto one point
    guarded = run(rho_t=flow2d.signal_rho(math.sqrt(2), 2, "constant"))
    base = nt.sample(pb.model, pb.schedule, x_T, "base", w.start(0, 256)[1], record=True)
    assert torch.equal(guarded.trace[0].eta_t, base.trace[0].eta_t)
    assert torch.equal(guarded.trace[0].x_prev, base.trace[0].x_prev)
    assert not torch.equal(guarded.trace[1].x_prev, base.trace[1].x_prev)
    assert abs(float(metrics.eta_energy(guarded.eta[:-1]).mean()) - 1) < 0.05


@pytest.mark.parametrize("noise", [1.0, 0.5, "ddpm"])
def test_zero_strength_is_base_bit_for_bit_in_the_flow_world(noise):
    """The world's own methods at zero strength (NTRK kappa = 0 with W on and off, DPS scale 0 for both
    coefficients) reproduce its base sampler bit for bit: the same x_T, noise draws and path.
    Catches a method that draws extra randomness or perturbs the state at zero strength."""
    w = flow2d.world(noise, n_ref=200)
    ms = {m.name: m for m in flow2d.methods(noise)}
    x_T, g = w.start(3, 128)
    base = ms["base"].run(w, x_T, g)[0]
    for name, knob in [("ntrk", {"kappa": 0.0}), ("ntrk (W off)", {"kappa": 0.0}),
                       ("ntrk (constant)", {"kappa": 0.0}), ("dps", {"scale": 0.0}), ("dps (tilt)", {"scale": 0.0})]:
        x_T, g = w.start(3, 128)
        res = ms[name].run(w, x_T, g, **knob, **ms[name].fixed)[0]
        assert torch.equal(res.x0, base.x0) and torch.equal(res.path, base.path), name


def test_w_is_norm_matching_in_2d_on_flow_gradients():
    """The sweep runs NTRK with the norm-matched gradient because in d = 2 W(g) = g sqrt(d)/||g|| to
    rounding (W is 25x dearer). Catches a change in W (or in the gradients) that would make the sweep's
    NTRK a different method from the main study's."""
    w = flow2d.world(1.0, n_ref=200)
    pb = w.context
    res = nt.sample(pb.model, pb.schedule, w.start(1, 300)[0], "base", w.start(1, 300)[1], record=True)
    for i in (1, 8, 16, 23):
        _, _, grad = reward_grad(pb.model, pb.reward, res.trace[i].x_t, i, pb.schedule)
        assert float((nt.whiten(grad) - nt.norm_match(grad)).abs().max()) < 1e-12


def test_ntrk_on_the_ode_is_refused_and_methods_say_what_runs():
    """sigma = 0: nothing to tilt; the kernel refuses rho > 0 with a message naming the fix, and the
    ODE world offers only base, the exact-tilt DPS and best-of-N. Catches a silent NTRK = base on the ODE."""
    w = flow2d.world(0.0, n_ref=200)
    pb = w.context
    x_T, g = w.start(0, 16)
    with pytest.raises(ValueError, match="noise > 0"):
        nt.sample(pb.model, pb.schedule, x_T, "ntrk", g, pb.reward, rho_t=flow2d.signal_rho(1.0, 2))
    assert [m.name for m in flow2d.methods(0.0)] == ["base", "dps (tilt)", "best-of-N", "best-of-20"]
    guided = flow2d.methods(0.0, ["dps (tilt)"])[0].run(w, x_T, g, scale=1.0)[0]
    assert float(pb.reward(guided.x0).mean()) > float(pb.reward(nt.sample(pb.model, pb.schedule, x_T, "base",
                                                                         w.start(0, 16)[1]).x0).mean()) + 1


# ---- the world on the protocol ------------------------------------------------------------------------------
def test_world_is_toy2ds_problem_on_the_flow_path_and_costs_are_counted():
    """The flow world evaluates against the same exact p* as toy2d (the target does not depend on the
    path), its floor has spread ~1 and ED ~0, and the protocol counts NFE and backward rows through the
    model's predict. Catches a world built on another target, or a model the cost counter cannot see."""
    w, vp = flow2d.world(1.0, n_ref=300), toy2d.world(n_ref=300)
    assert w.context.schedule.kind == "flow" and vp.context.schedule.kind == "vp"
    torch.testing.assert_close(w.context.target.means, vp.context.target.means)
    assert w.config["r_star"] == vp.config["r_star"] and w.margins["spread_err"] == flow2d.SPREAD_MARGIN[0]
    fl = w.floor(1000, 0)
    assert abs(fl["spread"] - 1) < 0.1 and abs(fl["ed_pstar"]) < 0.01
    ms = {m.name: m for m in flow2d.methods(1.0)}
    T = w.context.schedule.num_steps
    base, ntrk = P.run_point(w, ms["base"], None, 0, 64), P.run_point(w, ms["ntrk (W off)"], 1.0, 0, 64)
    assert (base["nfe"], base["backward"]) == (T, 0) and (ntrk["nfe"], ntrk["backward"]) == (T, T)
    assert ntrk["reward"] > base["reward"] + 1
    again = P.run_point(w, ms["ntrk (W off)"], 1.0, 0, 64)
    assert P.strip_timing(again) == P.strip_timing(ntrk)                     # same seed, same numbers


def test_committed_flow2d_results_hold_their_own_verdicts():
    """Catches a results file whose verdicts do not follow from its stored per-seed values, a sweep that
    is missing a noise level, or a markdown that is not rendered from the json."""
    data = P.load_json(ROOT / "results" / "flow2d.json")
    main = data["main"]
    assert not data["config"]["quick"] and main["n"] >= 1000 and len(main["seeds"]["eval"]) >= 5
    assert [str(s) for s in flow_noise.SWEEP] == list(data["sweep"])
    studies = [main] + list(data["sweep"].values())
    for st in studies:
        assert set(st["world"]["margins"]) >= {"ed_pstar", "reward", "spread_err"}
        for c in st["comparisons"]:
            redo = P.verdict(np.asarray(c["a"]["values"], float), np.asarray(c["b"]["values"], float), c["margin"],
                             st["world"]["metrics"][c["y_key"]]["higher_is_better"])
            assert redo.label == c["verdict"]["label"] in P.LABELS
        for name, f in st["fronts"]["eval"].items():
            fr = P.Front.from_dict(f)
            if fr.knob is not None:
                assert len(fr.knobs) >= 8
                if name.startswith("ntrk"):
                    assert max(fr.knobs) <= math.sqrt(2) + 1e-9               # rho <= 1
    redo = flow_noise.across_noise(data["sweep"], "ntrk", "ed_pstar")
    assert [r["verdict"] for r in redo] == [c["verdict"] for c in data["across"]
                                            if c["method"] == "ntrk" and c["key"] == "ed_pstar"]
    assert (ROOT / "results" / "flow2d.md").read_text() == flow_noise.markdown(data)
    assert "tie" not in flow_noise.markdown(data).lower().replace("tied", "")
