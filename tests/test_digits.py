"""The analytic 64-D digits model: loaders, exactness, rewards, exact p*, the world on the protocol,
and what W can (not) do on a single tile."""
import shutil

import numpy as np
import pytest
import torch

from ntrk_minimal import MixtureDenoiser, metrics, bench as P
from ntrk_minimal.worlds import digits as D
from ntrk_minimal.kernels import reward_grad
from ntrk_minimal.whitening import norm_match
from ntrk_minimal.sampling import rho_from_kappa, sample
from ntrk_minimal.whitening import tile_layout, whiten, whiteness
from ntrk_minimal import paths
from ntrk_minimal.worlds import digits_data

RESULTS = D.DATA_DIR.parent / "results"


@pytest.fixture(scope="module")
def pb():
    return D.digits_problem()


@pytest.fixture(scope="module")
def world():
    torch.set_num_threads(1)
    return D.world(n_ref=500)


# ---- loaders -----------------------------------------------------------------------------------
def test_mixture_loads_with_recorded_shape(pb):
    mix = pb.mixture
    assert mix.weights.shape == (16,) and mix.means.shape == (16, 64) and mix.covs.shape == (16, 64, 64)
    assert mix.weights.dtype == torch.float64
    assert abs(float(mix.weights.sum()) - 1) < 1e-12
    # reg_covar = 0.01 floors every eigenvalue: no degenerate component
    assert float(torch.linalg.eigvalsh(mix.covs).min()) >= 0.01 - 1e-9
    # pixel range of the data the mixture was fitted to
    assert -1.01 <= float(mix.means.min()) and float(mix.means.max()) <= 1.01


@pytest.mark.parametrize("name", ["digits_gmm.npz", "digits64_scorers.npz"])
def test_checksum_mismatch_is_a_clear_error(tmp_path, name):
    bad = tmp_path / name
    shutil.copy(D.DATA_DIR / name, bad)
    with open(bad, "r+b") as f:
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0xFF]))
    expected = D.SHA256[name]
    loader = D.load_mixture if name == "digits_gmm.npz" else (lambda p: D.Classifier.load("target", p))
    with pytest.raises(RuntimeError) as e:
        loader(bad)
    msg = str(e.value)
    assert name in msg and expected in msg and paths.sha256(bad) in msg and "checksum mismatch" in msg


def test_missing_file_names_the_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="fit_digits_gmm.py"):
        D.load_mixture(tmp_path / "digits_gmm.npz")


def test_recorded_hashes_match_the_committed_files():
    for name, h in D.SHA256.items():
        assert paths.sha256(D.DATA_DIR / name) == h


# ---- the exact model ---------------------------------------------------------------------------
def test_fast_denoiser_equals_mixture_denoiser(pb):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 64, generator=g, dtype=torch.float64)
    ref = MixtureDenoiser(pb.mixture, pb.schedule.alphas_cumprod)
    for t in (999, 600, 200, 20, 0):
        assert torch.allclose(pb.model(x, t), ref(x, t), atol=1e-10, rtol=0)
    x0 = pb.mixture.sample(20, g)
    assert torch.allclose(pb.model.eig.log_prob(x0), pb.mixture.log_prob(x0), atol=1e-9, rtol=0)


# ---- rewards -----------------------------------------------------------------------------------
def test_classifiers_reach_stated_accuracy():
    """Held-out test digits (never seen in training): target MLP >= 0.97, logistic regression >= 0.92."""
    x, y = digits_data.load_digits64("test")
    for kind, floor in (("target", 0.97), ("heldout", 0.92)):
        acc = float((D.Classifier.load(kind).logits(x).argmax(1) == y).double().mean())
        assert acc >= floor, (kind, acc)


def test_both_digit_benchmarks_hold_out_the_same_images():
    from ntrk_minimal.worlds import trained as T

    sizes = {s: len(digits_data.split_indices(s, 1797)) for s in ("train", "test", "all")}
    assert sizes == {"train": 1438, "test": 359, "all": 1797}
    x64, y64 = digits_data.load_digits64("test")
    x16, y16 = digits_data.load_digits16("test")
    assert torch.equal(y64, y16)
    down = torch.nn.functional.avg_pool2d(x16, 2).reshape(-1, 64).double()   # 16x16 -> 8x8 roughly
    assert float(torch.corrcoef(torch.stack([down.flatten(), x64.flatten()]))[0, 1]) > 0.9
    with pytest.raises(ValueError, match="split"):
        digits_data.split_indices("val", 10)


def test_rewards_differentiable_and_finite(pb):
    g = torch.Generator().manual_seed(1)
    x = (3 * torch.randn(8, 8, 8, generator=g, dtype=torch.float64)).requires_grad_(True)  # (B, 8, 8)
    for r in (pb.reward, pb.heldout, D.brightness()):
        out = r(x)
        assert out.shape == (8,) and torch.isfinite(out).all()
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    x_test, y_test = digits_data.load_digits64("test")
    r = pb.reward(x_test)
    assert (r <= 0).all()                                             # a log-probability
    assert (r[y_test == 3] > -0.69).double().mean() > 0.9           # ... of the class 3: p(3|x) > 1/2 on real 3s
    assert r[y_test != 3].mean() < -3                                # and small on the other digits


def test_reward_bad_input_names_argument(pb):
    with pytest.raises(ValueError, match="x must have shape"):
        pb.reward(torch.zeros(3, 10, dtype=torch.float64))
    with pytest.raises(ValueError, match="target_class"):
        D.ClassLogProb(pb.reward.classifier, 10)
    with pytest.raises(ValueError, match="kind"):
        D.Classifier.load("mlp")


def test_ntrk_and_dps_move_toward_the_exact_brightness_tilt(pb):
    """For the linear brightness reward the tilted target is an exact mixture (``tilted_mixture``).
    DPS at the exact tilt's step (lambda = sigma^2 / beta) and NTRK (kappa = 0.5) must each raise the
    mean reward from the base sampler's toward p*'s and cut the energy distance to p* by more than
    half; NTRK at kappa = 1 overshoots p*'s reward (its step ignores the size of the gradient).
    Measured (400 samples): ED to p* base 0.32, DPS 0.11, NTRK 0.05; reward base -0.391, DPS -0.332
    (25 steps under-tilt: O(1/T)), NTRK -0.296, p* -0.277, NTRK at kappa = 1 -0.188. Catches a sign
    flip of the tilt, a kernel that ignores the gradient, or a step scaled wrongly. (The old version
    of this test only compared p* with p_0 and never ran a sampler.)"""
    from ntrk_minimal import sigma2_scaled, tilted_mixture

    r, beta = D.brightness(), 0.05
    target = tilted_mixture(pb.mixture, r, beta)
    exact = target.sample(2000, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(4)
    x_T = torch.randn(400, 1, 8, 8, generator=g, dtype=torch.float64)
    run = lambda kernel, **kw: sample(pb.model, pb.schedule, x_T, kernel, torch.Generator().manual_seed(5),
                                      None if kernel == "base" else r, **kw).x0.reshape(400, 64)
    runs = {"base": run("base"), "dps": run("dps", lambda_t=sigma2_scaled(1 / beta)),
            "ntrk": run("ntrk", rho_t=rho_from_kappa(0.5, 64)), "ntrk k=1": run("ntrk", rho_t=rho_from_kappa(1.0, 64))}
    mean_r = {k: float(r(v).mean()) for k, v in runs.items()}
    r_star, gap = float(r(exact).mean()), float(r(exact).mean()) - mean_r["base"]
    ed = {k: metrics.energy_distance(v, exact, unbiased=True) for k, v in runs.items()}
    assert gap > 0.05
    for k in ("dps", "ntrk"):
        assert 0.3 * gap < mean_r[k] - mean_r["base"] < 1.5 * gap, (k, mean_r, r_star)
        assert ed[k] < 0.5 * ed["base"], (k, ed)
    assert mean_r["ntrk k=1"] > r_star + 0.5 * gap and ed["ntrk k=1"] > 2 * ed["ntrk"], (mean_r, ed)


# ---- exact p* ----------------------------------------------------------------------------------
def test_pstar_rejection_sampler_matches_importance_weights(pb):
    """p* ∝ p_0 p(3 | x): the rejection sampler's mean image equals the self-normalised importance
    estimate E_p0[x p(3|x)] / E_p0[p(3|x)] from independent p_0 draws, and its samples are 3s."""
    ps = D.PStar(pb.mixture, pb.reward)
    x = ps.sample(3000, torch.Generator().manual_seed(0))
    y = pb.mixture.sample(60000, torch.Generator().manual_seed(1))
    with torch.no_grad():
        w = torch.exp(pb.reward(y))
    snis = (w[:, None] * y).sum(0) / w.sum()
    se = x.std(0) / 3000 ** 0.5
    assert ((x.mean(0) - snis).abs() < 5 * se + 0.01).all()
    assert float((pb.heldout.classifier.logits(x).argmax(1) == 3).double().mean()) > 0.8
    with pytest.raises(ValueError, match="beta"):
        D.PStar(pb.mixture, pb.reward, beta=0)


def test_world_floor_is_zero_for_exact_samples_and_base_is_far(world):
    fl = [world.floor(200, s) for s in range(3)]
    ed = np.array([f["ed_pstar"] for f in fl])
    assert abs(ed.mean()) < 3 * ed.std(ddof=1) / np.sqrt(3) + 0.005, ed       # unbiased: ~0 for exact p*
    base = [mm for mm in D.methods() if mm.name == "base"][0]
    v = P.run_point(world, base, None, 0, 200)
    assert v["ed_pstar"] > 0.2 and abs(v["ed_p0"]) < 0.02 and v["target"] < world.config["r_star"] - 1
    assert world.config["w_tiles"] == {"pixel": [1, 64], "dct": [1, 64]}


# ---- W on a single tile ------------------------------------------------------------------------
def test_w_on_one_tile_is_norm_matching_and_keeps_correlation_where_many_tiles_remove_it(pb):
    """On 1x8x8 W has one 64-entry tile per domain: along NTRK trajectories W(g) is norm matching up to
    rounding (cos >= 0.9999) and keeps g's lag-1 correlation. The same gradients upsampled to 1x32x32
    (16 tiles) are changed by W (cos < 0.99) and lose most of their correlation: W is not broken, it is
    blind on one tile, so the digits world cannot test W (the reason its W on/off rows are a check)."""
    assert tuple(tile_layout((1, 8, 8), "pixel").shape) == (1, 64)
    g0 = torch.Generator().manual_seed(0)
    x_T = torch.randn(32, 1, 8, 8, generator=g0, dtype=torch.float64)
    tr = sample(pb.model, pb.schedule, x_T, "ntrk", g0, pb.reward, rho_t=rho_from_kappa(2.0, 64), record=True).trace
    grads = torch.cat([reward_grad(pb.model, pb.reward, s.x_t, s.i, pb.schedule)[2] for s in tr[2:20:4]])
    w = whiten(grads)
    assert float(metrics.cosine(w, grads).min()) > 0.9999
    assert torch.allclose(w, norm_match(grads), atol=0.02 * 8)
    lag_g, lag_w = whiteness(grads)["lag1"], whiteness(w)["lag1"]
    assert float(lag_g.mean()) > 0.2 and torch.allclose(lag_w, lag_g, atol=0.02)
    big = torch.nn.functional.interpolate(grads.float(), size=(32, 32), mode="bilinear", align_corners=False).double()
    wb = whiten(big)
    assert float(metrics.cosine(wb, big).mean()) < 0.99
    assert float(whiteness(wb)["lag1"].mean()) < 0.5 * float(whiteness(big)["lag1"].mean())


# ---- the world on the protocol ------------------------------------------------------------------
@pytest.mark.parametrize("name", [m.name for m in D.methods()])
def test_no_method_exceeds_its_budget(world, name):
    m = {mm.name: mm for mm in D.methods()}[name]
    knob = None if m.knob is None else m.grid[3]
    v = P.run_point(world, m, knob, 0, 4)
    budget = 25 * knob if m.budget == "25 N" else m.budget
    assert 0.9 * budget <= v["nfe"] <= budget, (name, v["nfe"])      # uses (almost) all of it: fair
    again = P.run_point(world, m, knob, 0, 4)
    assert P.strip_timing(again) == P.strip_timing(v)                 # same seed, same numbers


def test_tuning_uses_only_the_tuning_seeds(world):
    """Knob picks, level values and the best baseline come from the tuning seeds: two studies that
    differ only in their evaluation seeds agree on all of them (and differ in the verdict values),
    and overlapping seed sets are refused. (The old test only checked that the constant
    TUNING_SEEDS was disjoint from range(100), not that tuning used it.)"""
    ms = [m for m in D.methods() if m.name in ("base", "dps", "best-of-N")]
    lv = [P.Level("best", "ed_pstar", "min", "test"), P.Level("r*", "target", world.config["r_star"], "test")]
    cs = [P.Comparison("c", "r*", "ed_pstar", "dps", ("best-of-N",)), P.Comparison("b", "best", "ed_pstar", "dps", ("base", "best-of-N"))]
    run = lambda ev: P.run_study(world, ms, lv, cs, n=40, tuning_seeds=(1000, 1001), eval_seeds=ev, eval_grid="needed")
    a, b = run(range(2)), run(range(2, 4))
    assert a["picks"] == b["picks"] and a["levels"] == b["levels"]
    assert [c["b_choice"] for c in a["comparisons"]] == [c["b_choice"] for c in b["comparisons"]]
    assert P.strip_timing(a["fronts"]["tuning"]) == P.strip_timing(b["fronts"]["tuning"])
    assert a["comparisons"][0]["a"]["values"] != b["comparisons"][0]["a"]["values"]
    with pytest.raises(ValueError, match="must differ"):
        P.run_study(world, ms, lv, cs, n=40, tuning_seeds=(1, 1000), eval_seeds=range(2))


def test_ntrk_zero_strength_is_base(pb):
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    x_T = torch.randn(4, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = sample(pb.model, pb.schedule, x_T, "base", g1)
    b = sample(pb.model, pb.schedule, x_T, "ntrk", g2, pb.reward, rho_t=0.0)
    assert torch.equal(a.x0, b.x0)
