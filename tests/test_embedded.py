"""The learned-versus-exact world (issue 10, item 2): exact math against independent references,
the loader's checks, and the tile count that lets W act."""
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from ntrk_minimal import paths
from ntrk_minimal.worlds import embedded as E
from ntrk_minimal.models import GaussianMixture
from ntrk_minimal.rewards import LinearReward, QuadraticReward, tilted_mixture
from ntrk_minimal.schedules import make_schedule
from ntrk_minimal.whitening import tile_layout, whiten
from ntrk_minimal.studies import learned_vs_exact


def small_instance(seed=0, N=12, r=3, K=3, tau=0.3):
    """A random ``U x + tau e`` world small enough for dense N x N formulas."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(K, r, r, generator=g, dtype=torch.float64)
    covs = A @ A.transpose(-1, -2) + 0.1 * torch.eye(r, dtype=torch.float64)
    mix = GaussianMixture(torch.rand(K, generator=g, dtype=torch.float64) + 0.2,
                          torch.randn(K, r, generator=g, dtype=torch.float64), covs)
    U = torch.randn(N, r, generator=g, dtype=torch.float64)
    return mix, U, tau, E.embed(mix, U, tau)


def dense_p0(mix, U, tau):
    """The same law written densely: N(U m_k, U S_k U^T + tau^2 I), no factorisation."""
    eye = torch.eye(U.shape[0], dtype=torch.float64)
    return GaussianMixture(mix.weights, mix.means @ U.T, U @ mix.covs @ U.T + tau ** 2 * eye)


@pytest.fixture(scope="module")
def p0():
    return E.embedded_mixture()


@pytest.fixture(scope="module")
def ab():
    return make_schedule(25).alphas_cumprod


# ---- the embedding -------------------------------------------------------------------------------
def test_upsample_matrix_is_bilinear_interpolation():
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    U = E.upsample_matrix()
    ref = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).reshape(3, -1)
    assert U.shape == (1024, 64)
    torch.testing.assert_close(x.reshape(3, 64) @ U.T, ref)
    assert torch.linalg.matrix_rank(U) == 64                    # the embedding loses nothing


def test_p0_is_the_digits_mixture_embedded(p0):
    from ntrk_minimal.worlds.digits import load_mixture

    mix = load_mixture()
    U = E.upsample_matrix()
    torch.testing.assert_close(p0.means, mix.means @ U.T)
    assert p0.dim == 1024 and p0.rank == 64 and p0.num_components == 16
    torch.testing.assert_close(p0.Q.T @ p0.Q, torch.eye(64, dtype=torch.float64))
    assert torch.allclose(p0.v_perp, torch.full((16,), E.TAU ** 2, dtype=torch.float64))
    # the covariance of component k along U's columns: U S_k U^T + tau^2 I, checked on 3 directions
    u = torch.randn(3, 1024, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for k in (0, 7):
        ref = (u @ U) @ mix.covs[k] @ (u @ U).T + E.TAU ** 2 * u @ u.T
        got = torch.stack([p0.cov_matvec(ui)[k] for ui in u]) @ u.T
        torch.testing.assert_close(got, ref)


# ---- exact densities and scores against dense references ----------------------------------------
def test_log_prob_matches_scipy_multivariate_normal():
    mix, U, tau, lr = small_instance()
    dense = dense_p0(mix, U, tau)
    x = lr.sample(50, torch.Generator().manual_seed(2))
    ref = np.log(sum(float(w) * stats.multivariate_normal(m.numpy(), C.numpy()).pdf(x.numpy())
                     for w, m, C in zip(dense.weights, dense.means, dense.covs)))
    np.testing.assert_allclose(lr.log_prob(x).numpy(), ref, rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(lr.dense_covs(), dense.covs)


@pytest.mark.parametrize("a,s", [(1.0, 0.0), (0.8, 0.6), (0.1, 0.995)])
def test_diffused_score_and_log_prob_match_dense_mixture(a, s):
    mix, U, tau, lr = small_instance(seed=3)
    dense = dense_p0(mix, U, tau)
    eye = torch.eye(U.shape[0], dtype=torch.float64)
    dense_t = GaussianMixture(dense.weights, a * dense.means, a * a * dense.covs + s * s * eye)
    x = 2 * torch.randn(40, U.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    p_t = lr.diffused(a, s)
    torch.testing.assert_close(p_t.log_prob(x), dense_t.log_prob(x))
    torch.testing.assert_close(p_t.score(x), dense_t.score(x))          # Cholesky-based, no Woodbury


@pytest.mark.parametrize("t", [999, 500, 100, 10, 0])
def test_eps_star_is_minus_s_times_autograd_of_log_p_t(p0, ab, t):
    model = E.ExactDenoiser(p0, ab)
    a, s = model.a_s(t)
    g = torch.Generator().manual_seed(t)
    x_t = (a * p0.sample(6, g) + s * torch.randn(6, 1024, generator=g, dtype=torch.float64))
    x_t = x_t.reshape(6, 1, 32, 32).requires_grad_(True)
    (grad,) = torch.autograd.grad(model.log_prob_t(x_t, t).sum(), x_t)
    eps = model(x_t.detach(), t)
    assert eps.shape == (6, 1, 32, 32)
    torch.testing.assert_close(eps, -s * grad, rtol=1e-9, atol=1e-9)
    assert math.isclose(a * a, float(ab[t]), rel_tol=1e-12)


def test_eps_star_is_the_posterior_mean_of_the_noise():
    """One Gaussian component: E[eps | x_t] = s Sigma_t^{-1} (x_t - a mu), the textbook formula."""
    mix, U, tau, lr = small_instance(seed=5, K=1)
    ab = torch.linspace(0.999, 0.01, 1000, dtype=torch.float64)
    model = E.ExactDenoiser(lr, ab)
    t = 400
    a, s = model.a_s(t)
    dense = dense_p0(mix, U, tau)
    Sig_t = a * a * dense.covs[0] + s * s * torch.eye(12, dtype=torch.float64)
    x_t = torch.randn(7, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    ref = s * torch.linalg.solve(Sig_t, (x_t - a * dense.means[0]).T).T
    torch.testing.assert_close(model(x_t, t), ref)


def test_typicality_of_genuine_draws_is_one(p0):
    x = p0.sample(2000, torch.Generator().manual_seed(7))
    ty = p0.typicality(x)
    assert abs(float(ty["perp_ratio"].mean()) - 1) < 0.01          # chi2(960)/960, sd 0.046/sqrt(2000)
    assert abs(float(ty["maha_in"].mean()) - 1) < 0.05              # nearest component: chi2(64)/64-ish
    torch.testing.assert_close(ty["log_prob"], p0.log_prob(x))
    # a draw with twice the noise in the complement is far from typical
    x2 = x + E.TAU * (torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(8)))
    assert float(p0.typicality(x2)["perp_ratio"].mean()) > 1.8


# ---- sampling ------------------------------------------------------------------------------------
def _mixture_moments(m):
    mean = (m.weights[:, None] * m.means).sum(0)
    return mean


def test_exact_samples_have_the_mixture_moments(p0):
    """Mean and variance along fixed directions against sum_k w_k (u^T Sigma_k u + (u^T mu_k)^2)."""
    n = 40000
    x = p0.sample(n, torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(10)
    u = torch.randn(4, 1024, dtype=torch.float64, generator=g)
    u = torch.cat([u, p0.Q[:, :2].T, E.template()[None] / E.template().norm()])   # random, subspace, reward
    proj = x @ u.T
    mu_u = p0.means @ u.T                                             # (K, 7)
    var_k = torch.stack([(p0.cov_matvec(ui) * ui).sum(1) for ui in u], 1)   # (K, 7)
    mean = (p0.weights[:, None] * mu_u).sum(0)
    var = (p0.weights[:, None] * (var_k + mu_u ** 2)).sum(0) - mean ** 2
    se = (var / n).sqrt()
    assert ((proj.mean(0) - mean).abs() < 5 * se).all()
    torch.testing.assert_close(proj.var(0), var, rtol=0.05, atol=0)


# ---- the exact tilted target ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["quadratic", "linear"])
def test_tilt_matches_the_dense_formula(kind):
    mix, U, tau, lr = small_instance(seed=11)
    dense = dense_p0(mix, U, tau)
    g = torch.Generator().manual_seed(12)
    reward = (QuadraticReward(torch.randn(12, generator=g, dtype=torch.float64), 1.3) if kind == "quadratic"
              else LinearReward(torch.randn(12, generator=g, dtype=torch.float64)))
    got, ref = E.tilted(lr, reward, 0.7), tilted_mixture(dense, reward, 0.7)   # rewards.py: dense inverses
    torch.testing.assert_close(got.weights, ref.weights)
    torch.testing.assert_close(got.means, ref.means)
    torch.testing.assert_close(got.dense_covs(), ref.covs)


def test_tilt_in_one_dimension_by_hand():
    """N = 2, r = 1, K = 1: every coordinate is a 1-D Gaussian tilted by a quadratic."""
    mix = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.tensor([[0.5]], dtype=torch.float64),
                          torch.tensor([[[2.0]]], dtype=torch.float64))
    U = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    lr = E.embed(mix, U, 0.5)                       # x_1 ~ N(0.5, 2 + 0.25), x_2 ~ N(0, 0.25)
    c, sc, beta = torch.tensor([3.0, -1.0], dtype=torch.float64), 0.8, 2.0
    T = sc ** 2 * beta
    p = E.tilted(lr, QuadraticReward(c, sc), beta)
    for var0, mu0, ci, coord in ((2.25, 0.5, 3.0, 0), (0.25, 0.0, -1.0, 1)):
        var = 1 / (1 / var0 + 1 / T)
        assert math.isclose(float(p.means[0, coord]), var * (mu0 / var0 + ci / T), rel_tol=1e-12)
        assert math.isclose(float(p.dense_covs()[0, coord, coord]), var, rel_tol=1e-12)
    # linear reward: the mean moves by Sigma a / beta, the covariance stays
    a = torch.tensor([1.0, 2.0], dtype=torch.float64)
    pl = E.tilted(lr, LinearReward(a), beta)
    torch.testing.assert_close(pl.means[0], torch.tensor([0.5 + 2.25 / beta, 0.25 * 2 / beta], dtype=torch.float64))


def test_tilt_against_importance_weighted_p0_samples():
    """E_{p*}[f] = E_{p_0}[f e^{r/beta}] / E_{p_0}[e^{r/beta}] on a 2-D reduction (self-normalised IS)."""
    mix, U, tau, lr = small_instance(seed=13, N=2, r=1, K=3, tau=0.4)
    reward = QuadraticReward(torch.tensor([1.0, -0.5], dtype=torch.float64), 1.0)
    beta = 1.5
    x = lr.sample(400000, torch.Generator().manual_seed(14))
    w = torch.softmax(reward(x) / beta, 0)
    ps = E.tilted(lr, reward, beta)
    y = ps.sample(400000, torch.Generator().manual_seed(15))
    for f in (lambda z: z[:, 0], lambda z: z[:, 1], lambda z: z[:, 0] ** 2, lambda z: z[:, 0] * z[:, 1]):
        assert abs(float((w * f(x)).sum()) - float(f(y).mean())) < 0.02
    # and the exact density: log p* - log p_0 - r / beta is a constant
    d = ps.log_prob(x[:100]) - lr.log_prob(x[:100]) - reward(x[:100]) / beta
    assert float(d.std()) < 1e-9


def test_world_target_is_a_digit_three(p0):
    r = E.target_reward()
    ps = E.tilted(p0, r, E.BETA)
    g = torch.Generator().manual_seed(16)
    x0, xs = p0.sample(2000, g), ps.sample(2000, g)
    assert float(r(xs).mean()) > float(r(x0).mean()) + 3            # p* is much closer to the template
    # components whose mean image is closest to the template get the weight
    near = (p0.means - E.template()).norm(dim=1).argsort()[:2]
    assert float(ps.weights[near].sum()) > 0.6 > float(p0.weights[near].sum())
    # the template gradient is a spatially structured image (what W can act on): strong lag-1 correlation
    c = E.template().reshape(32, 32) - E.template().mean()
    assert float((c[:, 1:] * c[:, :-1]).sum() / (c * c).sum()) > 0.8


# ---- W can act on this sample shape ----------------------------------------------------------------
def test_W_sees_many_tiles_at_32x32():
    for domain in ("pixel", "dct"):
        assert tile_layout(E.SAMPLE_SHAPE, domain).shape == (16, 64)            # default: 16 tiles of 64
        assert tile_layout(E.SAMPLE_SHAPE, domain, tile_size=16).shape == (64, 16)
        assert tile_layout((1, 8, 8), domain).shape == (1, 64)                  # the 8x8 world: one tile


def _lag1(x):
    x = x - x.mean((-1, -2), keepdim=True)
    return float(((x[..., 1:] * x[..., :-1]).sum() + (x[..., 1:, :] * x[..., :-1, :]).sum()) / (2 * (x * x).sum()))


@pytest.mark.parametrize("n,acts", [(8, False), (32, True)])
def test_W_removes_correlation_at_32x32_but_not_at_8x8(n, acts):
    """A correlated field with a Gaussian marginal (lag-1 ~ 0.55-0.65): with one tile per domain (8x8) W
    keeps the correlation (it cannot see it); with 16 tiles (32x32) it removes most of it."""
    e = torch.randn(100, 1, n + 2, n + 2, generator=torch.Generator().manual_seed(17))
    k = torch.tensor([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]).reshape(1, 1, 3, 3)
    f = F.conv2d(e, k)
    f = f / f.std()
    w = whiten(f)
    assert _lag1(f) > 0.5
    if acts:
        assert _lag1(w) < 0.3
    else:
        assert _lag1(w) > 0.9 * _lag1(f)


# ---- the learned model and its loader -------------------------------------------------------------
W_NAME = "unet/diffusion_pytorch_model.safetensors"


def test_recorded_hash_matches_the_committed_weights():
    assert E.SHA256[W_NAME] is not None, "record the sha256 printed by scripts/train_embedded_unet.py"
    assert E.paths.sha256(E.UNET_DIR / W_NAME) == E.SHA256[W_NAME]


def test_corrupt_weights_are_a_clear_error(tmp_path):
    shutil.copytree(E.UNET_DIR, tmp_path / "m")
    bad = tmp_path / "m" / W_NAME
    with open(bad, "r+b") as f:
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(RuntimeError) as e:
        E.load_unet(tmp_path / "m")
    msg = str(e.value)
    assert "checksum mismatch" in msg and E.SHA256[W_NAME] in msg and "train_embedded_unet.py" in msg


def test_missing_weights_name_the_script(tmp_path):
    for check in (True, False):
        with pytest.raises(FileNotFoundError, match="train_embedded_unet.py"):
            E.load_unet(tmp_path, check=check)


def test_learned_denoiser_is_close_to_the_exact_one(p0):
    """Catches wrong weights, a wrong schedule or a wrong input scaling: at mid noise levels the UNet's
    error is a small fraction of ||eps*||^2 (what predicting zero would cost)."""
    sched = E.load_scheduler()
    exact = E.ExactDenoiser(p0, sched.alphas_cumprod)
    torch.testing.assert_close(exact.alphas_cumprod, make_schedule(25).alphas_cumprod)
    unet = E.load_unet()
    g = torch.Generator().manual_seed(18)
    x0 = p0.sample(64, g).reshape(64, 1, 32, 32)
    for t in (100, 400, 800):
        a, s = exact.a_s(t)
        x_t = a * x0 + s * torch.randn(x0.shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            e_hat, e_star = unet(x_t, t), exact(x_t, t)
        assert e_hat.shape == x_t.shape and e_hat.dtype == torch.float64
        gap, zero = float(((e_hat - e_star) ** 2).mean()), float((e_star ** 2).mean())
        assert gap < 0.2 * zero, (t, gap, zero)
    with pytest.raises(ValueError, match="x_t must have shape"):
        unet(torch.zeros(2, 1, 16, 16), 10)


# ---- the benchmark's instruments (world, methods, probes) ------------------------------------------
@pytest.fixture(scope="module")
def pb_exact():
    return E.embedded_problem(load_learned=False)


def test_expected_reward_is_exact(p0):
    r = E.target_reward()
    ps = E.tilted(p0, r, E.BETA)
    x = ps.sample(20000, torch.Generator().manual_seed(19))
    v = r(x)
    assert abs(float(v.mean()) - E.expected_reward(ps, r)) < 4 * float(v.std()) / math.sqrt(len(v))


def test_step_recorder_effective_step():
    """Norm matching moves exactly kappa along g (cos 1, norm sqrt(N)); W moves less: cos < 1."""
    from ntrk_minimal.whitening import norm_match

    g = F.conv2d(torch.randn(4, 1, 34, 34, generator=torch.Generator().manual_seed(20)),
                 torch.ones(1, 1, 3, 3) / 9).double()
    from ntrk_minimal.bench.methods import WRecorder

    kappas = [2.0, 1.0, 0.0]
    off, on = WRecorder(norm_match, lag1=True), WRecorder(whiten, lag1=True)
    for _ in kappas:
        off(g), on(g)
    s_off, s_on = (r.summary(E.DIAGNOSTICS, "per_step", 2.0, kappa_t=kappas) for r in (off, on))
    assert math.isclose(s_off["eff_step"], 1.0, rel_tol=1e-9) and math.isclose(s_off["kappa_mean"], 1.0)
    assert math.isclose(s_off["cos_wg"], 1.0, rel_tol=1e-9)
    assert s_on["cos_wg"] < 0.95 and s_on["eff_step"] < 0.95
    assert s_on["lag1_w"] < 0.5 * s_on["lag1_g"]                   # W removed most of the correlation


def test_probe_of_the_exact_model_on_genuine_draws(pb_exact):
    """eps* against itself: zero error; genuine p_t draws are typical at every timestep."""
    prof = learned_vs_exact.reference_profile(pb_exact, pb_exact.exact, n=64)
    assert len(prof) == 25 and [r["t"] for r in prof] == sorted([r["t"] for r in prof], reverse=True)
    assert max(r["gap"] for r in prof) == 0.0
    assert all(abs(r["perp_ratio"] - 1) < 0.03 for r in prof)


def test_evaluator_floor_and_separation(pb_exact):
    """Exact p* samples sit near the exact-vs-exact floor; exact p_0 samples are far from p*."""
    ev = E.Evaluator(pb_exact, n_ref=512)
    fl = ev.floor(128, 0)
    far = ev(pb_exact.p0.sample(128, torch.Generator().manual_seed(21)), 0)
    assert abs(fl["perp"] - 1) < 0.02 and far["ed_pstar"] > 10 * abs(fl["ed_pstar"])
    assert far["target"] < fl["target"] - 3
    assert ev(pb_exact.p0.sample(8, torch.Generator().manual_seed(22)), 5)["ed_pstar"] == \
        ev(pb_exact.p0.sample(8, torch.Generator().manual_seed(22)), 5)["ed_pstar"]       # per-seed reference, cached


@pytest.mark.parametrize("name", ["base", "dps", "ntrk (W)", "ntrk (W off)", "svdd-4", "smc-4", "best-of-4"])
def test_methods_run_within_budget_and_deterministically(pb_exact, name):
    from ntrk_minimal import bench as P

    world = E.make_world(pb_exact, "exact")
    m = {m.name: m for m in E.methods()}[name]
    knob = None if m.knob is None else m.grid[3]
    a = P.run_point(world, m, knob, 3, 4)
    b = P.run_point(world, m, knob, 3, 4)
    assert a["nfe"] <= m.budget and (a["backward"] > 0) == (name in ("dps", "ntrk (W)", "ntrk (W off)"))
    assert {k: v for k, v in a.items() if k not in P.TIMING_KEYS} == \
        {k: v for k, v in b.items() if k not in P.TIMING_KEYS}


def test_world_margins_are_stated_from_exact_quantities(pb_exact):
    world = E.make_world(pb_exact, "exact")
    gap = E.expected_reward(pb_exact.pstar, pb_exact.reward) - E.expected_reward(pb_exact.p0, pb_exact.reward)
    assert math.isclose(world.margins["target"], 0.05 * gap) and gap > 5
    assert set(world.margins) <= set(world.metrics) and world.fidelity == "ed_pstar"
    with pytest.raises(ValueError, match="without the UNet"):
        E.make_world(pb_exact, "unet")
    with pytest.raises(ValueError, match="model must be"):
        E.make_world(pb_exact, "learned")


def test_evaluator_distances_equal_the_metrics_module(pb_exact):
    """The cached reference terms give exactly metrics.energy_distance(unbiased) and metrics.kid."""
    from ntrk_minimal import metrics

    ev = E.Evaluator(pb_exact, n_ref=300)
    x = pb_exact.p0.sample(40, torch.Generator().manual_seed(23))
    ed, kd = ev.distances(x, 4)
    ref = ev.reference(4)
    assert math.isclose(ed, metrics.energy_distance(x, ref, unbiased=True), rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(kd, metrics.kid(x, ref), rel_tol=1e-9, abs_tol=1e-12)


# ---- the committed benchmark output --------------------------------------------------------------
def test_committed_results_hold_the_protocol_evidence_and_render_from_their_json():
    """results/embedded.{json,md}: fronts with per-seed values for both models, levels, margins,
    verdicts from the protocol's labels, the mechanism for every method; the md is exactly what the
    json renders to (no hand edits, not stale)."""
    from ntrk_minimal import bench as P

    stem = paths.RESULTS / "embedded"
    data = P.load_json(stem.with_suffix(".json"))
    assert not data["quick"]
    for model in ("unet", "exact"):
        st = data["studies"][model]
        assert set(st["levels"]) == {"p* reward", "closest to p*", "matched effective step"}
        assert st["world"]["margins"] and st["comparisons"]
        for c in st["comparisons"]:
            assert c["verdict"]["label"] in P.LABELS
        for name, fr in st["fronts"]["eval"].items():
            assert len(fr["seeds"]) == 5 and all(len(v) == 5 for p in fr["values"] for v in p.values())
        assert all(len(fr["knobs"]) >= 8 for fr in st["fronts"]["tuning"].values() if fr["knob"])
        assert set(data["mechanism"][model]) >= {"base", "ntrk (W)", "ntrk (W off)", "svdd-4", "smc-4", "best-of-4"}
    assert len(data["ablation"]) >= 8 and len(data["gradients"]) == 25
    assert learned_vs_exact.report(data) == stem.with_suffix(".md").read_text()
    learned_vs_exact.figure(data)


def test_run_benchmark_refuses_an_unknown_stage(tmp_path):
    """``only`` names later stages; a typo must fail before any compute, not silently skip a stage."""
    with pytest.raises(ValueError, match="only must name"):
        learned_vs_exact.run_benchmark(tmp_path, quick=True, only=("ablations",))
    assert not any(tmp_path.iterdir())
