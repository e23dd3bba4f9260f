"""The analytic 64-D digits model (issue 4A): loaders, exactness, rewards, NFE budgets, determinism."""
import shutil

import pytest
import torch

from ntrk_minimal import MixtureDenoiser, digits as D
from ntrk_minimal.sampling import sample


@pytest.fixture(scope="module")
def pb():
    return D.digits_problem()


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
    assert name in msg and expected in msg and D.sha256(bad) in msg and "checksum mismatch" in msg


def test_missing_file_names_the_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="fit_digits_gmm.py"):
        D.load_mixture(tmp_path / "digits_gmm.npz")


def test_recorded_hashes_match_the_committed_files():
    for name, h in D.SHA256.items():
        assert D.sha256(D.DATA_DIR / name) == h


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
    x, y = D.load_digits64("test")
    for kind, floor in (("target", 0.97), ("heldout", 0.92)):
        acc = float((D.Classifier.load(kind).logits(x).argmax(1) == y).double().mean())
        assert acc >= floor, (kind, acc)


def test_both_digit_benchmarks_hold_out_the_same_images():
    from ntrk_minimal import trained as T

    sizes = {s: len(D.split_indices(s, 1797)) for s in ("train", "test", "all")}
    assert sizes == {"train": 1438, "test": 359, "all": 1797}
    x64, y64 = D.load_digits64("test")
    x16, y16 = T.load_digits16("test")
    assert torch.equal(y64, y16)
    down = torch.nn.functional.avg_pool2d(x16, 2).reshape(-1, 64).double()   # 16x16 -> 8x8 roughly
    assert float(torch.corrcoef(torch.stack([down.flatten(), x64.flatten()]))[0, 1]) > 0.9
    with pytest.raises(ValueError, match="split"):
        D.split_indices("val", 10)


def test_rewards_differentiable_and_finite(pb):
    g = torch.Generator().manual_seed(1)
    x = (3 * torch.randn(8, 8, 8, generator=g, dtype=torch.float64)).requires_grad_(True)  # (B, 8, 8)
    for r in (pb.reward, pb.heldout, D.brightness()):
        out = r(x)
        assert out.shape == (8,) and torch.isfinite(out).all()
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert (pb.reward(x) <= 0).all()


def test_reward_bad_input_names_argument(pb):
    with pytest.raises(ValueError, match="x must have shape"):
        pb.reward(torch.zeros(3, 10, dtype=torch.float64))
    with pytest.raises(ValueError, match="target_class"):
        D.ClassLogProb(pb.reward.classifier, 10)
    with pytest.raises(ValueError, match="kind"):
        D.Classifier.load("mlp")


def test_brightness_tilt_has_exact_target(pb):
    """For the linear brightness reward, NTRK's mean reward moves toward the exact p*'s."""
    from ntrk_minimal import tilted_mixture

    r = D.brightness()
    target = tilted_mixture(pb.mixture, r, beta=0.05)
    g = torch.Generator().manual_seed(3)
    exact = float(r(target.sample(2000, g)).mean())
    base = float(r(pb.mixture.sample(2000, g)).mean())
    assert exact > base + 0.05


# ---- benchmark: NFE budgets and determinism ---------------------------------------------------
FAST_KNOBS = {"dps": {"scale": 1.0}, "ntrk": {"kappa": 1.0, "decay": "linear"},
              "ntrk (W off)": {"kappa": 1.0, "decay": "linear"}, "svdd-4": {"mode": "argmax"},
              "svdd-20": {"mode": "argmax"}, "smc-4": {"temp": 1.0}, "smc-20": {"temp": 1.0},
              "ntrk+bon-4": {"kappa": 1.0, "decay": "linear"},
              "ntrk+bon-20": {"kappa": 1.0, "decay": "linear"}}


@pytest.mark.parametrize("name", list(D.METHODS))
def test_no_method_exceeds_its_budget(pb, name):
    n = 2
    res, extra, _ = D.run_method(pb, name, 0, n, FAST_KNOBS.get(name, {}))
    budget = D.METHODS[name][1]
    assert res.x0.shape == (n, 1, 8, 8)
    assert res.nfe <= budget
    assert res.nfe >= 0.9 * budget        # and uses (almost) all of it: a fair comparison


def test_budget_overrun_is_caught(pb, monkeypatch):
    fn, _, fixed, grid = D.METHODS["best-of-4"]
    monkeypatch.setitem(D.METHODS, "best-of-4", (fn, 99, fixed, grid))
    with pytest.raises(RuntimeError, match="over its budget"):
        D.run_method(pb, "best-of-4", 0, 2, {})


def test_same_seed_same_numbers(pb):
    for name in ("ntrk", "smc-4", "svdd-4"):
        a, ea, _ = D.run_method(pb, name, 5, 8, FAST_KNOBS[name])
        b, eb, _ = D.run_method(pb, name, 5, 8, FAST_KNOBS[name])
        assert torch.equal(a.x0, b.x0) and ea == eb
        assert D.evaluate(pb, a.x0) == D.evaluate(pb, b.x0)
        c, _, _ = D.run_method(pb, name, 6, 8, FAST_KNOBS[name])
        assert not torch.equal(a.x0, c.x0)          # another seed, other numbers


def test_compare_is_deterministic_and_tunes_off_eval_seeds(pb):
    kw = dict(names=["base", "dps"], n=6, seeds=2)
    r1, r2 = D.compare(pb, **kw), D.compare(pb, **kw)
    strip = lambda r: {k: [{m: v for m, v in s.items() if m != "wall_s"} for s in e["seeds"]]
                       for k, e in r["methods"].items()}
    assert strip(r1) == strip(r2)
    assert r1["methods"]["dps"]["knob"] in D.DPS_GRID
    assert not set(D.TUNING_SEEDS) & set(range(100))


def test_ntrk_records_whitening_cosine(pb):
    res, extra, _ = D.run_method(pb, "ntrk", 0, 4, FAST_KNOBS["ntrk"])
    assert 0.9 <= extra["cos_wg_min"] <= extra["cos_wg"] <= 1 + 1e-9
    res, extra, _ = D.run_method(pb, "ntrk (W off)", 0, 4, FAST_KNOBS["ntrk"])
    assert extra["cos_wg"] == pytest.approx(1.0, abs=1e-9)


def test_ntrk_zero_strength_is_base(pb):
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    x_T = torch.randn(4, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = sample(pb.model, pb.schedule, x_T, "base", g1)
    b = sample(pb.model, pb.schedule, x_T, "ntrk", g2, pb.reward, rho_t=0.0)
    assert torch.equal(a.x0, b.x0)
