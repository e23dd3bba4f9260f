"""The trained-UNet world (issue 10): loaders, checksums, rewards, fidelity features, the methods on the
protocol, and the committed headline holding its own verdicts."""
import dataclasses
import json
import math
import os
import shutil

import numpy as np
import pytest
import torch

from ntrk_minimal import bench as P
from ntrk_minimal.worlds import trained as T
from ntrk_minimal.whitening import tile_layout
from ntrk_minimal import metrics, paths
from ntrk_minimal.studies import headline as H
from ntrk_minimal.worlds import digits_data

RESULTS = T.DATA_DIR.parent / "results"


@pytest.fixture(scope="module")
def pb():
    torch.set_num_threads(1)
    return T.trained_problem(target_class=3)


@pytest.fixture(scope="module")
def world():
    torch.set_num_threads(1)
    return T.world()


def test_digits16_split():
    x, y = digits_data.load_digits16("train")
    xt, yt = digits_data.load_digits16("test")
    assert x.shape[1:] == (1, 16, 16) and len(x) + len(xt) == 1797 and len(xt) == 359
    assert x.min() >= -1 and x.max() <= 1 and set(y.tolist()) == set(range(10))
    with pytest.raises(ValueError, match="split"):
        digits_data.load_digits16("validation")


def test_checksum_mismatch_is_a_clear_error(tmp_path):
    shutil.copytree(T.UNET_DIR, tmp_path / "unet_digits")
    w = tmp_path / "unet_digits" / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 1
    w.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="checksum mismatch.*diffusion_pytorch_model.safetensors"):
        T.load_unet(tmp_path / "unet_digits")
    bad = tmp_path / "scorers.pt"
    bad.write_bytes(T.SCORER_FILE.read_bytes() + b"x")
    with pytest.raises(RuntimeError, match="checksum mismatch.*scorers.pt"):
        T.load_scorers(bad)
    with pytest.raises(FileNotFoundError, match="missing"):
        T.load_unet(tmp_path / "nowhere")


def test_recorded_checksums_match_the_files():
    for name, h in T.SHA256.items():
        path = T.DATA_DIR / name if not name.startswith("unet/") else T.UNET_DIR / name
        assert paths.sha256(path) == h, name


def test_model_wrapper_gives_finite_eps(pb):
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    for t in (pb.schedule.timesteps[0], int(pb.schedule.timesteps[-1]), torch.tensor([5, 500, 999])):
        eps = pb.model(x, t)
        assert eps.shape == x.shape and eps.dtype == x.dtype and torch.isfinite(eps).all()
    # near t = 0 the UNet must predict (most of) the noise it is given on a real image
    x0, _ = digits_data.load_digits16("test")
    e = torch.randn(x0[:64].shape, generator=torch.Generator().manual_seed(1))
    ab = float(pb.schedule.alphas_cumprod[200])
    x_t = ab ** 0.5 * x0[:64] + (1 - ab) ** 0.5 * e
    mse = float(((pb.model(x_t, 200) - e) ** 2).mean())
    assert mse < 0.2, mse
    with pytest.raises(ValueError, match="x_t must have shape"):
        pb.model(torch.randn(2, 16, 16), 10)


def test_scorers_reach_stated_accuracy(pb):
    x, y = digits_data.load_digits16("test")
    with torch.no_grad():
        for name in ("target", "heldout", "features"):
            acc = float((getattr(pb.scorers, name)(x).argmax(1) == y).float().mean())
            assert acc >= 0.95, (name, acc)
            assert abs(acc - pb.scorers.accuracy[name]) < 1e-6
    with pytest.raises(ValueError, match="target_class"):
        T.ClassLogProb(pb.scorers.target, 10)
    assert torch.allclose(T.Brightness()(x[:4]), x[:4].mean(dim=(1, 2, 3)))


def test_log_odds_rewards_separate_the_class_and_equal_logit_p(pb):
    """The rewards are log(p / (1 - p)) of class 3 (checked against torch.logit of the softmax, an
    independent formula), positive on real 3s and negative on other digits, for both networks. (The
    old check ``r <= 0`` on 8 test images passed only because none of them was a 3.)"""
    x, y = digits_data.load_digits16("test")
    with torch.no_grad():
        for reward, net in ((pb.reward, pb.scorers.target), (pb.heldout, pb.scorers.heldout)):
            r = reward(x)
            p = torch.softmax(net(x).double(), -1)[:, 3]
            assert torch.allclose(r.double(), torch.logit(p), atol=1e-3, rtol=1e-4)
            assert (r[y == 3] > 0).double().mean() > 0.9 and (r[y != 3] < 0).double().mean() > 0.95
            assert r[y == 3].mean() > 5 and r[y != 3].mean() < -5


def test_frechet_distance():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 4, generator=g, dtype=torch.float64)
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = torch.tensor([1.0, 2.0, 0.0, 0.0], dtype=torch.float64)
    assert metrics.frechet_distance(a, a + shift) == pytest.approx(5.0, rel=1e-6)
    with pytest.raises(ValueError, match="features"):
        metrics.frechet_distance(a, a[:, :3])


def test_feature_kid_references(pb):
    """Standardised features; KID to real 3s is small for real 3s and large for other real digits;
    KID to all digits is ~0 for real digits (unbiased) and large for 3s only. Catches a swapped
    reference, unstandardised features (KID ~1e7) or a wrong class."""
    fk = T.FeatureKID(pb)
    xt, yt = digits_data.load_digits16("test")
    z = fk.z(xt)
    assert torch.allclose(z.mean(0), torch.zeros(16, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(z.std(0), torch.ones(16, dtype=torch.float64), atol=1e-6)
    assert (fk.n_ref_c, fk.n_ref_all) == (36, 359)
    xr, yr = digits_data.load_digits16("train")
    k3, k_other = fk.kid_c(fk.z(xr[yr == 3])), fk.kid_c(fk.z(xr[yr != 3][:300]))
    assert k3 < 0.2 and k_other > 2, (k3, k_other)
    ka, ka3 = fk.kid_all(fk.z(xr)), fk.kid_all(fk.z(xr[yr == 3]))          # all 1438 training digits
    assert abs(ka) < 0.03 and ka3 > 2, (ka, ka3)


def test_world_floor_and_bad_n(world):
    fl = world.floor(32, 0)
    assert set(fl) == {"target", "heldout", "heldout_share", "kid_c", "kid_all", "diversity", "out_of_range"}
    assert fl["out_of_range"] == 0                                     # real images live in [-1, 1]
    assert fl["target"] > 5 and fl["heldout_share"] > 0.9 and fl["kid_c"] < 0.4 and fl["kid_all"] > 2
    assert fl == world.floor(32, 0) and fl != world.floor(32, 1)
    with pytest.raises(ValueError, match="n <= 147"):
        world.floor(200, 0)
    cfg = world.config
    assert cfg["w_tiles"] == {"pixel": [4, 64], "dct": [4, 64]}
    assert 10 < cfg["r_real"] < 14 and cfg["n_ref_c"] == 36


def _mid(m):
    return None if m.knob is None else m.grid[len(m.grid) // 2]


ALL_METHODS = {m.name: m for m in T.methods() + T.methods(quick=True)}


def test_full_and_quick_method_sets():
    """The committed run has the 500-NFE baselines, the demo the 100-NFE ones; both share the 25-NFE methods."""
    full, quick = [m.name for m in T.methods()], [m.name for m in T.methods(quick=True)]
    assert set(T.B500) <= set(full) and not set(T.B100) & set(full)
    assert set(T.B100) <= set(quick) and not set(T.B500) & set(quick)
    assert all(len(m.grid) == T.SIZES["quick"]["grid_points"] for m in T.methods(quick=True) if m.knob)
    assert all(len(m.grid) >= 6 for m in T.methods() if m.knob)


@pytest.mark.parametrize("name", list(ALL_METHODS))
def test_every_method_on_the_protocol_stays_within_budget_and_reports_cost(world, name):
    m = ALL_METHODS[name]
    v = P.run_point(world, m, _mid(m), 7, 2)
    nfe, bwd = v["nfe"], v["backward"]
    budget = 25 * _mid(m) if m.budget == "25 N" else m.budget
    assert 0.9 * budget <= nfe <= budget, (name, nfe)
    assert v["cost"] == pytest.approx(nfe + (T.GUIDED_STEP_COST - 1) * bwd)
    assert bwd == (25 if name in ("dps", "ntrk", "ntrk (W off)") else 0), (name, bwd)
    assert all(math.isfinite(x) for x in v.values())


def test_effective_step_w_off_is_kappa_and_w_shortens_it(world):
    """NTRK moves sigma_t kappa c_t along g_t with c_t = cos(W(g), g) ||W(g)|| / sqrt(N): 1 for norm
    matching, below 1 for W on this model (the review measured ~0.84). Same seed, same numbers."""
    ms = {m.name: m for m in T.methods()}
    on = P.run_point(world, ms["ntrk"], 1.5, 3, 4)
    off = P.run_point(world, ms["ntrk (W off)"], 1.5, 3, 4)
    assert off["eff_step"] == pytest.approx(1.5, rel=1e-6) and off["cos_wg"] == pytest.approx(1.0, abs=1e-6)
    assert 0.5 < on["eff_step"] / 1.5 < 0.99 and 0.5 < on["cos_wg"] < 0.99, on
    assert 0.8 < on["w_norm2"] < 1.05
    again = P.run_point(world, ms["ntrk"], 1.5, 3, 4)
    assert P.strip_timing(again) == P.strip_timing(on)
    assert P.strip_timing(P.run_point(world, ms["ntrk"], 1.5, 4, 4)) != P.strip_timing(on)


def test_knob_instability_is_reported_on_the_real_world(world):
    """The review's finding 1 on the real model: with 8 samples per run, the knob of lowest KID to
    real 3s is not stable across the two tuning seeds, and the protocol says so (flags), while the
    target-reward level at the same size is read consistently."""
    dps = next(m for m in T.methods() if m.name == "dps")
    m = dataclasses.replace(dps, grid=P.geometric_grid(0.12, 0.48, 4), min_points=4)
    fr = P.front(world, m, (1000, 1001), 8)
    st = P.knob_stability(fr, "kid_c", "min")
    assert not st["stable"] and st["flags"], st
    assert len(st["per_seed_knob"]) == 2


# ---- the committed headline --------------------------------------------------------------------
@pytest.fixture(scope="module")
def headline():
    path = RESULTS / "headline.json"
    if not path.is_file():
        pytest.fail("results/headline.json is missing: run `make bench-full`")
    return P.load_json(path)


def test_committed_headline_has_the_protocol_sizes(headline):
    d = headline
    assert d["protocol"].startswith("ntrk_minimal.protocol") and not d["config"]["quick"]
    assert d["n"] == T.SIZES["full"]["n"] and len(d["seeds"]["eval"]) >= 5 and len(d["seeds"]["tuning"]) >= 2
    assert not set(d["seeds"]["eval"]) & set(d["seeds"]["tuning"])
    for name, f in d["fronts"]["tuning"].items():
        if f["knob"] is not None:
            assert len(f["knobs"]) >= len(d["methods"][name]["grid"]) >= 6, name   # fronts of >= 6 points
            assert all(len(v) == len(f["seeds"]) for p in f["values"] for v in p.values())   # per-seed values
    assert d["world"]["config"]["w_tiles"] == {dom: list(tile_layout((1, 16, 16), dom).shape) for dom in ("pixel", "dct")}
    assert d["wall_time_s"] > 0
    for lvname, picks in d["where"].items():                          # no pick on a grid edge
        for nm, where in picks.items():
            assert where == "interior" or "natural limit" in where or "saturated" in where, (lvname, nm, where)


def test_committed_headline_holds_its_own_verdicts(headline, tmp_path):
    """Every verdict recomputed from the stored per-seed values with the margin stated in code
    (``trained.MARGINS``), and the markdown is exactly what the json renders to (``trained.render``): a
    hand edit of the json or the md, or a change of the verdict rule, fails here."""
    d = headline
    assert d["world"]["margins"] == {k: v[0] for k, v in T.MARGINS.items()}
    for c in d["comparisons"]:
        v = c["verdict"]
        assert c["margin"] == T.MARGINS[c["y_key"]][0]
        again = P.verdict(np.asarray(c["a"]["values"], float), np.asarray(c["b"]["values"], float), c["margin"],
                          v["higher_is_better"], names=(v["a"], v["b"]))
        assert again.label == v["label"] and again.label in P.LABELS, c["name"]
        if v["mean"] is not None:
            assert again.mean == pytest.approx(v["mean"]) and again.lo == pytest.approx(v["lo"])
    md = (RESULTS / "headline.md").read_text()
    assert md == H.render(d, tmp_path / "headline")
    labels = [next(c for c in d["comparisons"] if c["name"] == n)["verdict"]["label"] for n in H.HEADLINE]
    for lab in set(labels):
        assert f"{lab} on {labels.count(lab)} of 4" in md


def test_findings_summary_follows_the_verdicts(headline):
    """The review re-examination is read from the verdicts, not written once: flipping a W-on-vs-off verdict
    at a matched level to "win" turns finding 4 from "does not hold" into "holds in part", and making every
    headline verdict "equivalent" turns finding 3 into "holds". Catches a summary with a fixed conclusion."""
    import copy

    text = H.findings_summary(headline)
    d = copy.deepcopy(headline)
    labels = {c["name"]: c["verdict"]["label"] for c in d["comparisons"]}
    w4 = "holds in part" if any(labels[n] == "win" for n in H.W_LINES[:3]) else "does not hold"
    w3 = "holds" if all(labels[n] == "equivalent" for n in H.HEADLINE) else "does not hold"
    assert f'"W on beats W off" — {w4}' in text and f'baseline@500" — {w3}.' in text
    for c in d["comparisons"]:
        if c["name"] == H.W_LINES[0]:
            c["verdict"]["label"] = "win"
        if c["name"] in H.HEADLINE:
            c["verdict"]["label"] = "equivalent"
    flipped = H.findings_summary(d)
    assert '"W on beats W off" — holds in part' in flipped and 'baseline@500" — holds.' in flipped
