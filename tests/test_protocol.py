"""The evaluation protocol: each test names the bug it would catch.

Synthetic worlds have a known front (x = f(knob) + seed noise), so brackets, interpolation, picks
and stability have exact answers; the 2-D world checks cost counting and determinism on real samplers.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from ntrk_minimal import bench as P
from ntrk_minimal.worlds import toy2d
from ntrk_minimal.whitening import norm_match
from ntrk_minimal.models import GaussianMixture, MixtureDenoiser
from ntrk_minimal.schedules import make_flow_schedule
from ntrk_minimal.sampling import SampleResult, sample

ROOT = Path(__file__).resolve().parent.parent


# ---- a synthetic world: x0[:, 0] = f(knob) + noise * z, x0[:, 1] = g(knob) + noise * z' -------------
def synth_world():
    def evaluate(x0, seed):
        return {"x": float(x0[:, 0].mean()), "y": float(x0[:, 1].mean())}

    return P.World("synthetic", (2,), model=lambda x_t, t: torch.zeros_like(x_t), evaluate=evaluate,
                   metrics={"x": P.Metric("fidelity x", False), "y": P.Metric("reward y", True)},
                   fidelity="x", target="y", margins={"y": 0.05, "x": 0.05},
                   margin_notes={"y": "test", "x": "test"}, dtype=torch.float64)


def synth_method(name, fx, fy=None, noise=0.0, grid=None, limit=(None, None), **kw):
    fy = fy or (lambda k: 2 * fx(k) + 1)

    def run(world, x_T, g, k):
        world.model(x_T, 0)
        c, s = math.cos(3 * math.log(k)), math.sin(3 * math.log(k))   # seed noise that changes with k
        z = c * x_T[:, 0] + s * x_T[:, 1]
        x0 = torch.stack([fx(k) + noise * z, fy(k) + noise * (s * x_T[:, 0] - c * x_T[:, 1])], 1)
        return SampleResult(x0, 1.0)

    return P.Method(name, run, "k", grid or P.geometric_grid(1, 8, 8), budget=1, limit=limit, **kw)


SEEDS = [1000, 1001, 1002]


# ---- statistics ----------------------------------------------------------------------------------------
def test_tost_matches_a_hand_calculation_with_scipy_t():
    """Catches a wrong one-sided tail, a wrong df or SE (population SD), or max/min of the two p's."""
    d = np.array([0.02, -0.01, 0.015, 0.005, -0.004, 0.012])
    margin = 0.05
    m, se, df = d.mean(), d.std(ddof=1) / math.sqrt(len(d)), len(d) - 1
    p_lo = 1 - stats.t.cdf((m + margin) / se, df)
    p_hi = stats.t.cdf((m - margin) / se, df)
    p, passed = P.tost(d, margin)
    assert p == pytest.approx(max(p_lo, p_hi), rel=1e-10) and passed
    # equivalent iff the 90% t interval lies inside (-margin, margin)
    lo, hi = m + np.array([-1, 1]) * stats.t.ppf(0.95, df) * se
    assert passed == (-margin < lo and hi < margin)
    p2, passed2 = P.tost(d, 0.01)                  # margin inside the noise: not equivalent
    assert not passed2 and p2 > 0.05
    p3, passed3 = P.tost(d + 0.2, margin)          # a real difference: not equivalent
    assert not passed3 and p3 > 0.5
    with pytest.raises(ValueError, match="margin"):
        P.tost(d, 0.0)


def test_verdict_labels_on_constructed_paired_data():
    """Catches a verdict that ignores pairing, the direction of "better", or calls a wide CI a tie."""
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1.0, 8)                               # shared seed effect (pairing removes it)
    small = rng.normal(0, 0.01, 8)
    small -= small.mean()                                      # paired differences centred on 0
    win = P.verdict(base + 0.5 + small, base, margin=0.1, higher_is_better=True)
    assert win.label == "win" and win.lo > 0
    assert P.verdict(base + 0.5 + small, base, 0.1, higher_is_better=False).label == "lose"
    assert P.verdict(base - 0.5 + small, base, 0.1, higher_is_better=True).label == "lose"
    eq = P.verdict(base + small, base, margin=0.1, higher_is_better=True)
    assert eq.label == "equivalent" and eq.p_tost < 0.05 and eq.lo < 0 < eq.hi
    noisy = rng.normal(0, 1.0, 5)
    und = P.verdict(base[:5] + noisy, base[:5], margin=0.05, higher_is_better=True)
    assert und.lo < 0 < und.hi and und.p_tost > 0.05 and und.label == "undecided"
    assert und.label != "tie" and {win.label, eq.label, und.label} <= set(P.LABELS)
    # unpaired comparison would be undecided here (seed effect SD 1 >> 0.5): pairing matters
    assert stats.ttest_ind(base + 0.5 + small, base).pvalue > 0.05
    # missing seeds (level not reached) are dropped and counted
    a = base + 0.5 + small
    a[[1, 3]] = np.nan
    v = P.verdict(a, base, 0.1, True)
    assert v.n_seeds == 6 and "2 of 8 seeds missing" in v.note and v.label == "undecided" and v.lo > 0
    assert P.verdict(a, base, 0.1, True, min_coverage=0.75).label == "win"
    assert P.verdict([np.nan, 1.0], [0.0, 0.0], 0.1, True).label == "undecided"
    s = str(P.verdict(base - 0.5 + small, base, 0.1, higher_is_better=False, names=("ntrk", "dps")))
    assert s.startswith("win: ntrk - dps") and "lower is better" in s


def test_paired_ci_t_and_bootstrap():
    """Catches a CI on unpaired values, a non-deterministic bootstrap, or a bootstrap around the wrong mean."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(1, 1, 10), rng.normal(0, 1, 10)
    m, lo, hi = P.paired_ci(a, b)
    mm, h = P.mean_ci(a - b)
    assert (m, lo, hi) == pytest.approx((mm, mm - h, mm + h))
    bm, blo, bhi = P.paired_ci(a, b, method="bootstrap")
    assert bm == pytest.approx(mm) and blo < mm < bhi
    assert P.paired_ci(a, b, method="bootstrap") == (bm, blo, bhi)
    assert (bhi - blo) == pytest.approx(hi - lo, rel=0.35)        # both ~ 2 * 1.96 SE for n = 10
    with pytest.raises(ValueError, match="equal lengths"):
        P.paired_ci(a, b[:5])


# ---- fronts, brackets, interpolation ----------------------------------------------------------------
def test_interpolation_is_exact_on_a_linear_front_and_refuses_extrapolation():
    """Catches interpolation in the wrong variable (log knob instead of x: x = k is not linear in
    log k on a geometric grid), an off-by-one segment, or silent extrapolation."""
    w = synth_world()
    m = synth_method("lin", lambda k: k, lambda k: 3 * k + 2)
    fr = P.front(w, m, SEEDS, 50)
    for L in (1.0, 1.7, 3.3, 8.0 - 1e-9, 8.0):
        mt = P.at_level(fr, "x", L, "y")
        assert np.allclose(mt.values, 3 * L + 2, atol=1e-9) and all(f == "" for f in mt.flags)
    # the knob at the level is interpolated in log knob between the two bracketing points
    i = int(np.searchsorted(fr.knobs, 3.3)) - 1
    lo, hi = fr.knobs[i], fr.knobs[i + 1]
    expect = math.exp(math.log(lo) + (3.3 - lo) / (hi - lo) * (math.log(hi) - math.log(lo)))
    assert np.allclose(P.at_level(fr, "x", 3.3, "y").knobs, expect, rtol=1e-12)
    out = P.at_level(fr, "x", 8.5, "y")
    assert np.isnan(out.values).all() and all(f.startswith("refused") for f in out.flags)
    assert P.at_knob(fr, fr.knobs[3], "y") == pytest.approx(3 * fr.knobs[3] + 2)
    with pytest.raises(ValueError, match="no extrapolation"):
        P.at_knob(fr, 100.0, "y")


def test_wall_time_levels_are_read_along_the_mean_wall_front():
    """Catches wall-time matching decided by timing noise: a seed whose run happened to be slow
    would otherwise be read at another knob, or dropped as "not reached"."""
    knobs = [1, 2, 4, 8]
    wall = [[1.0, 1.5], [2.0, 2.6], [4.0, 3.5], [8.0, 9.0]]          # per seed: noisy, mean 1.25, 2.3, 3.75, 8.5
    vals = [{"wall_s": w, "y": [10 * k, 10 * k + 1]} for k, w in zip(knobs, wall)]
    fr = P.Front("bon", "N", None, [0, 1], 10, knobs, vals)
    mt = P.at_level(fr, "wall_s", 3.75, "y")
    assert np.allclose(mt.knobs, 4.0) and np.allclose(mt.values, [40, 41])
    assert np.isnan(P.at_level(fr, "wall_s", 1.1, "y").values).all()          # below the mean front
    per_seed = P.at_level(fr, "wall_s", 1.1, "y", shared_x=False)               # seed 0 reaches 1.1 alone
    assert np.isfinite(per_seed.values[0]) and np.isnan(per_seed.values[1])


def test_grid_extension_brackets_the_level_and_stays_geometric():
    """Catches picks on a grid edge: the level lies beyond the initial grid on either side."""
    w = synth_world()
    m = synth_method("mono", lambda k: math.log(k), noise=0.02)
    fr = P.front(w, m, SEEDS, 100, x_key="x", level=math.log(40))
    assert fr.knobs[-1] > 40 and sum(k > 40 for k in fr.knobs) >= 2      # pad: a spare point beyond
    assert np.allclose(np.diff(np.log(fr.knobs)), math.log(8) / 7, rtol=1e-6)   # same ratio
    assert "bracketed" in fr.notes[-1] and "NOT" not in fr.notes[-1]
    mt = P.at_level(fr, "x", math.log(40), "y")
    assert np.allclose(mt.values, 2 * math.log(40) + 1, atol=0.02)
    down = P.front(w, m, SEEDS, 100, x_key="x", level=math.log(0.1))        # extends the lower end
    assert down.knobs[0] < 0.1 and "bracketed" in down.notes[-1]


def test_grid_extension_brackets_the_level_on_every_tuning_seed():
    """Catches a bracket checked on the mean front only: a seed with a large seed effect then
    cannot be read at the level (the review's per-seed FD spread of 60-175)."""
    w = synth_world()

    def run(world, x_T, g, k):                  # x = log k + 0.5 z_s, one offset z_s ~ N(0, 1) per seed
        world.model(x_T, 0)
        z = x_T[:, 0].mean() * math.sqrt(len(x_T))
        return SampleResult(torch.stack([math.log(k) + 0.5 * z + 0 * x_T[:, 0], 0 * x_T[:, 1]], 1), 1.0)

    m = P.Method("offsets", run, "k", P.geometric_grid(1, 8, 8))
    fr = P.front(w, m, SEEDS, 100, x_key="x", level=math.log(40))
    offsets = [float(P.run_point(w, m, 1.0, s, 100)["x"]) for s in SEEDS]
    assert max(offsets) - min(offsets) > 0.6                       # seed effects of several grid steps
    assert not np.isnan(P.at_level(fr, "x", math.log(40), "y").values).any()
    assert "bracketed" in fr.notes[-1] and "NOT" not in fr.notes[-1]


def test_grid_extension_stops_at_a_natural_limit():
    """Catches grid points beyond the limit (rho > 1) and levels claimed reached when they are not."""
    w = synth_world()
    m = synth_method("capped", lambda k: math.log(k), limit=(None, 10.0))
    fr = P.front(w, m, SEEDS, 50, x_key="x", level=math.log(40))
    assert fr.knobs[-1] == 10.0 and all(k <= 10.0 for k in fr.knobs)
    assert "NOT bracketed" in fr.notes[-1] and "natural limit" in fr.notes[-1]
    assert np.isnan(P.at_level(fr, "x", math.log(40), "y").values).all()
    with pytest.raises(ValueError, match="natural limits"):
        synth_method("bad", lambda k: k, grid=P.geometric_grid(1, 20, 8), limit=(None, 10.0))


def test_optimum_pick_is_interior_or_on_a_natural_limit():
    """Catches an argmin taken on a grid edge that is not a limit (the review's SVDD temp 3.0)."""
    w = synth_world()
    u = synth_method("U", lambda k: (math.log(k) - math.log(30)) ** 2)
    fr = P.front(w, u, SEEDS, 50, x_key="x", level="min")
    knob, where = P.pick(fr, "x", "min")
    assert where == "interior" and knob == pytest.approx(30, rel=0.2)
    short = P.front(w, u, SEEDS, 50, x_key="x", level="min", max_extend=1)
    assert P.pick(short, "x", "min")[1] == "grid edge (not bracketed)" and "NOT" in short.notes[-1]
    # toward an asymptotic limit (k -> 0, like kappa -> 0 = base) the front saturates: allowed
    sat = synth_method("sat", lambda k: k ** 2, noise=0.3, limit=(0.0, None))
    fs = P.front(w, sat, SEEDS, 100, x_key="x", level="min")
    knob, where = P.pick(fs, "x", "min")
    assert "saturated" in where and knob == fs.knobs[0] and "allowed" in fs.notes[-1]


def test_knob_stability_flags_a_noisy_world_and_not_a_clean_one():
    """Catches a knob choice that is seed noise (adjacent knobs differ by less than the seed SD)."""
    w = synth_world()
    clean = P.front(w, synth_method("clean", lambda k: math.log(k), noise=0.01), SEEDS, 100)
    noisy = P.front(w, synth_method("noisy", lambda k: 0.05 * math.log(k), noise=3.0), SEEDS, 100)
    sc = P.knob_stability(clean, "x", math.log(3))
    sn = P.knob_stability(noisy, "x", 0.05 * math.log(3))
    assert sc["stable"] and not sc["flags"] and sc["ratio"] < 1.05
    assert not sn["stable"] and any("differ by" in f for f in sn["flags"])
    # each criterion on its own: adjacent knobs below the seed noise (with the knob-ratio test off)
    only_sd = P.knob_stability(noisy, "x", 0.05 * math.log(3), factor=1e9)
    assert not only_sd["stable"] and any("per-seed SD" in f for f in only_sd["flags"])
    assert P.knob_stability(clean, "x", math.log(3), factor=1e9)["stable"]


# ---- cost -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world2d():
    torch.set_num_threads(1)
    return toy2d.world(n_ref=200)


def test_cost_counter_counts_backward_rows_for_guided_kernels_only(world2d):
    """Catches cost accounting that calls a guided step as cheap as a base step (NFE hides cost)."""
    ms = {m.name: m for m in toy2d.methods()}
    T = world2d.context.schedule.num_steps
    base = P.run_point(world2d, ms["base"], None, 0, 32)
    dps = P.run_point(world2d, ms["dps"], 1.0, 0, 32)
    ntrk = P.run_point(world2d, ms["ntrk (W off)"], 1.0, 0, 32)
    svdd = P.run_point(world2d, ms["svdd-soft-20"], 1.0, 0, 32)
    bon = P.run_point(world2d, ms["best-of-N"], 4, 0, 32)
    assert (base["nfe"], base["backward"]) == (T, 0)
    assert (dps["nfe"], dps["backward"]) == (T, T) and (ntrk["nfe"], ntrk["backward"]) == (T, T)
    assert svdd["backward"] == 0 and svdd["nfe"] == 20 * (T - 1) + 1
    assert bon["nfe"] == 4 * T and bon["backward"] == 0
    assert all(v["wall_s"] > 0 and 0 < v["model_s"] <= v["wall_s"] for v in (base, dps, svdd))
    # a model with predict(x_t, t) (the samplers prefer it) is counted through it too
    pb = world2d.context
    assert hasattr(pb.model, "predict")
    exact = P.World("mixture", (2,), pb.model, world2d.evaluate, world2d.metrics, "ed_pstar", "reward", {}, {},
                    context=pb, dtype=torch.float64)
    via_predict = P.run_point(exact, ms["dps"], 1.0, 0, 32)
    assert (via_predict["nfe"], via_predict["backward"]) == (T, T)
    assert via_predict["ed_pstar"] == pytest.approx(dps["ed_pstar"], abs=1e-9)     # same samples, other model
    # a method that bypasses world.model cannot be costed: a clear error
    sneaky = P.Method("sneaky", lambda w, x, g: sample(pb.model, pb.schedule, x, "base", g))
    with pytest.raises(RuntimeError, match="world.model"):
        P.run_point(world2d, sneaky, None, 0, 8)


def test_isotropic_denoiser_matches_mixture_denoiser():
    """Catches a wrong closed form in the fast exact model the 2-D world samples with."""
    pb = toy2d.toy_problem()
    fast = toy2d.IsotropicMixtureDenoiser(pb.mixture, pb.schedule)
    x = 2 * torch.randn(300, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in (0, 40, 500, 999):
        assert torch.allclose(fast(x, t), pb.model(x, t), atol=1e-12)
    xg = x.clone().requires_grad_(True)
    g1, = torch.autograd.grad(fast(xg, 300).pow(2).sum(), xg)
    g2, = torch.autograd.grad(pb.model(xg, 300).pow(2).sum(), xg)
    assert torch.allclose(g1, g2, atol=1e-10)
    stretch = torch.tensor([[1.0, 1.0], [1.0, 2.0]], dtype=torch.float64)      # diag(s^2, 2 s^2)
    aniso = GaussianMixture(pb.mixture.weights, pb.mixture.means, pb.mixture.covs * stretch)
    flow = make_flow_schedule(25)                      # rectified flow: a_t = 1 - t, s_t = t
    mix_flow = MixtureDenoiser(pb.mixture, flow)
    for t in flow.timesteps[[0, 5, 20]]:
        assert torch.allclose(toy2d.IsotropicMixtureDenoiser(pb.mixture, flow)(x, t), mix_flow(x, t), atol=1e-10)
    assert torch.allclose(toy2d.IsotropicMixtureDenoiser(pb.mixture, pb.schedule.alphas_cumprod)(x, 300),
                          pb.model(x, 300), atol=1e-12)
    with pytest.raises(ValueError, match="isotropic"):
        toy2d.IsotropicMixtureDenoiser(aniso, pb.schedule.alphas_cumprod)


def test_effective_step_of_norm_matching_is_kappa():
    """Catches an effective-step factor that is not 1 for W off (matched-step comparisons would be off)."""
    from ntrk_minimal.bench.methods import WRecorder

    rec = WRecorder(norm_match)
    g = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for _ in range(25):
        rec(g)
    linear = [1 - i / 24 for i in range(25)]
    assert rec.summary(["eff_step"], "nominal", 0.7, weights=linear)["eff_step"] == pytest.approx(0.7, rel=1e-12)


# ---- the study: validation, determinism, json ----------------------------------------------------------
def test_world_and_method_validation():
    """Catches margins without a stated reason, coarse or non-geometric grids, unknown keys."""
    with pytest.raises(ValueError, match="justification"):
        P.World("w", (2,), None, None, {"y": P.Metric("y", True)}, "y", "y", {"y": 0.1}, {})
    with pytest.raises(ValueError, match="not a key"):
        P.World("w", (2,), None, None, {"y": P.Metric("y", True)}, "fid", "y", {}, {})
    with pytest.raises(ValueError, match=">= 8 points"):
        synth_method("m", math.log, grid=[1, 2, 4])
    with pytest.raises(ValueError, match="geometric"):
        synth_method("m", math.log, grid=[1, 2, 3, 4, 5, 6, 7, 8])
    with pytest.raises(ValueError, match="no knob"):
        P.Method("m", lambda *a: None, None, [1.0])


def _small_study(world, n=48):
    ms = {m.name: m for m in toy2d.methods()}
    levels = [P.Level("r*", "reward", world.config["r_star"], "exact p* reward"),
              P.Level("best", "ed_pstar", "min", "own optimum")]
    comps = [P.Comparison("ED at r*", "r*", "ed_pstar", "ntrk (W off)", "dps"),
             P.Comparison("best", "best", "ed_pstar", "ntrk (W off)", ("dps", "base"))]
    return P.run_study(world, [ms["base"], ms["dps"], ms["ntrk (W off)"]], levels, comps, n=n,
                       tuning_seeds=(1000, 1001), eval_seeds=(0, 1), max_extend=2)


def test_same_seed_same_json_and_renders_from_json(world2d, tmp_path):
    """Catches hidden global randomness (unseeded draws) and renders that need more than the json."""
    a, b = _small_study(world2d), _small_study(world2d)
    assert P.to_json(P.strip_timing(a)) == P.to_json(P.strip_timing(b))
    stem = tmp_path / "study"
    text = P.write_results(a, stem, figure_panels=[("reward", "ed_pstar")])
    data = P.load_json(stem.with_suffix(".json"))
    assert P.to_json(data) == P.to_json(P.load_json(stem.with_suffix(".json")))
    for part in ("Margins", "Verdicts", "Knob stability", "Cost", "ED at r*"):
        assert part in text
    assert stem.with_suffix(".png").stat().st_size > 10_000
    fr = P.Front.from_dict(data["fronts"]["eval"]["dps"])
    assert len(fr.knobs) >= 8 and fr.array("ed_pstar").shape == (len(fr.knobs), 2)
    c = data["comparisons"][1]
    assert c["b"]["method"] in ("dps", "base") and "on the tuning seeds" in c["b_choice"]


def test_committed_toy2d_results_hold_their_own_verdicts():
    """Catches a results file whose verdicts do not follow from its stored per-seed values, or that
    lacks what the issue requires (fronts with per-seed values, levels, margins, wall time)."""
    data = P.load_json(ROOT / "results" / "toy2d.json")
    assert len(data["seeds"]["eval"]) >= 5 and data["n"] >= 1000 and data["wall_time_s"] > 0
    assert set(data["world"]["margins"]) >= {"ed_pstar", "reward"} and data["levels"]
    for name, f in data["fronts"]["eval"].items():
        fr = P.Front.from_dict(f)
        assert fr.array(data["world"]["fidelity"]).shape[1] == len(data["seeds"]["eval"])
        if fr.knob is not None:
            assert len(fr.knobs) >= 8 and (name not in ("ntrk", "ntrk (W off)") or max(fr.knobs) <= math.sqrt(2) + 1e-9)
    for c in data["comparisons"]:
        v = c["verdict"]
        redo = P.verdict(np.asarray(c["a"]["values"], float), np.asarray(c["b"]["values"], float), c["margin"],
                         data["world"]["metrics"][c["y_key"]]["higher_is_better"])
        assert redo.label == v["label"] in P.LABELS
    table = P.verdict_table(data)
    assert table.count("\n") == len(data["comparisons"]) + 1 and "tie" not in table
    assert (ROOT / "results" / "toy2d.md").read_text() == P.report(
        data, "2-D ring, quadratic reward, exact p*: the protocol", toy2d.POINT_KEYS)


def test_the_docstring_example_runs(tmp_path):
    """Catches a "how to add a world" example that no longer matches the API."""
    doc = P.__doc__
    code = doc[doc.index("    import torch\n    from functools import partial"):doc.index("The API in one breath")]
    code = "\n".join(line[4:] for line in code.splitlines())
    code = code.replace('"results/my_world"', repr(str(tmp_path / "my_world"))).replace("n=200", "n=64")
    env = {}
    exec(compile(code, "protocol docstring", "exec"), env)
    data = P.load_json(tmp_path / "my_world.json")
    assert [c["verdict"]["label"] in P.LABELS for c in data["comparisons"]] == [True, True]
    assert (tmp_path / "my_world.png").is_file() and (tmp_path / "my_world.md").is_file()


def test_point_cache_reuses_points_is_keyed_by_code_and_takes_over_dead_claims(tmp_path):
    """Catches a resumable run that recomputes what it stored (or returns other values), a cache that
    survives a change of the code its numbers depend on, and a claim left by a dead process that
    blocks the run instead of being taken over."""
    import hashlib
    import json as json_

    from ntrk_minimal import kernels, sampling

    w = toy2d.world(n_ref=200)
    m = [mm for mm in toy2d.methods() if mm.name == "dps"][0]
    path = tmp_path / "points.jsonl"
    c1 = P.PointCache(path, modules=(kernels, sampling), poll_s=60)
    a = P.front(w, m, (0, 1), 20, grid=m.grid[:2], cache=c1)
    assert (c1.stats["misses"], c1.stats["hits"]) == (4, 0)
    c2 = P.PointCache(path, modules=(kernels, sampling), poll_s=60)
    b = P.front(w, m, (0, 1), 20, grid=m.grid[:2], cache=c2)
    assert (c2.stats["misses"], c2.stats["hits"]) == (0, 4) and a.values == b.values
    c3 = P.PointCache(path, modules=(kernels,), poll_s=60)       # other code: nothing is reused
    assert c3.code != c2.code
    # a point claimed by a process that no longer exists: taken over at once (poll_s = 60 would hang)
    key = json_.dumps([c3.code, w.name, m.name, P.clean(m.fixed), m.grid[0], 5, 20, torch.get_num_threads()])
    (c3.claims / hashlib.sha256(key.encode()).hexdigest()[:32]).write_text("999999999")
    P.run_point(w, m, m.grid[0], 5, 20, cache=c3)
    assert c3.stats == {**c3.stats, "misses": 1, "waited": 0}
