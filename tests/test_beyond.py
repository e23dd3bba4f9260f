"""The study module of issue 14 (``ntrk_minimal.studies.beyond``): every method runs on the protocol, the
uncorrected kernel really is uncorrected, the cost split measures what it says."""
from __future__ import annotations

import math

import pytest
import torch

from ntrk_minimal.studies import beyond as B
from ntrk_minimal import bench as P
from ntrk_minimal.kernels import NoiseTilt
from ntrk_minimal.whitening import norm_match


@pytest.fixture(scope="module")
def world():
    return B.make_world("2d")


def test_every_method_runs_one_point_on_the_protocol(world):
    """One knob value per method through ``protocol.run_point`` (counts every model call; raises if a
    method bypasses world.model)."""
    knobs = {"ntrk": 0.5, "matched": 0.5, "dps": 0.5}
    methods = (B.smc_methods(knobs) + B.strength_methods(2) + B.cheap_methods(2))
    seen = set()
    for m in methods:
        if m.name in seen:
            continue
        seen.add(m.name)
        k = None if m.knob is None else m.grid[len(m.grid) // 2]
        if m.knob in ("num_particles", "num_candidates"):
            k = 2
        v = P.run_point(world, m, k, 0, 24)
        assert math.isfinite(v["ed_pstar"]) and v["nfe"] > 0, m.name
        if m.name.startswith("smc"):
            assert v["nfe"] == pytest.approx(2 * 25) and 0 < v["ess"] <= 1
        if " cheap" in m.name:
            assert v["backward"] == 0, m.name
        elif m.name != "base" and not m.name.startswith(("smc (base)", "svdd")):
            assert v["backward"] > 0, m.name


def test_uncorrected_kernel_reports_zero_ratio(world):
    pb = world.context
    x = torch.randn(5, 2, dtype=torch.float64)
    inner = NoiseTilt(0.3, whiten=norm_match)
    out = inner.step(pb.model, x, 3, pb.schedule, torch.Generator().manual_seed(0), pb.reward)
    assert inner.log_ratio(out).abs().max() > 0
    assert torch.equal(B.Uncorrected(inner).log_ratio(out), torch.zeros(5, dtype=torch.float64))


def test_cost_split_pieces(world):
    pb = world.context
    res = B.cost_split(pb.model, pb.reward, pb.schedule, torch.randn(64, 2, dtype=torch.float64), reps=3)
    keys = {"base_step", "den_fwd", "den_fwd_graph", "den_bwd", "rew_fb", "guided_full", "guided_cheap", "w"}
    assert set(res["seconds"]) == keys and all(v > 0 for v in res["seconds"].values())
    assert res["vs_base"]["base_step"] == 1.0 and res["batch"] == 64
    assert set(res["share_of_full"]) == {"denoiser forward", "denoiser backward", "reward forward + backward"}


def test_unknown_world_and_proposal_are_named():
    with pytest.raises(ValueError, match="unknown world"):
        B.make_world("3d")
    w = B.make_world("2d")
    x_T, g = w.start(0, 4)
    with pytest.raises(ValueError, match="proposal must be"):
        B.run_smc(w, x_T, g, num_particles=2, proposal="svdd")


def test_interleaved_wall_runs_every_entry_with_its_knob(world):
    """Each entry runs with its own keyword arguments (a knob left out or misnamed raises here) and gets
    one positive per-sample median; reps + 1 rounds run (the first, a warm-up, is not timed)."""
    calls = []

    def run(w, x_T, g, kappa, decay):
        calls.append((kappa, decay, x_T.shape[0]))
        return B.run_ntrk(w, x_T, g, kappa=kappa, decay=decay)

    res = B.interleaved_wall(world, {"a": (run, {"kappa": 0.5, "decay": "linear"}),
                                     "b": (run, {"kappa": 1.0, "decay": "constant"})}, n=8, reps=2)
    assert set(res) == {"a", "b"} and all(v > 0 for v in res.values())
    assert sorted(calls) == sorted([(0.5, "linear", 8)] * 3 + [(1.0, "constant", 8)] * 3)


def test_study_spec_records_its_sizes():
    spec = B.study_spec("2d", "smc", n=10, seeds=2, tuning=1, particles=[1, 2, 3, 4, 6, 8, 12, 16], tuning_points=8)
    assert spec["config"]["particles"] == [1, 2, 3, 4, 6, 8, 12, 16] and spec["config"]["tuning_points"] == 8
    spec = B.study_spec("2d", "cheap", n=10, ratio_log2=0.5)
    assert spec["config"]["grid_ratio"] == "2^0.5" and len(spec["config"]["grids"]["kappas"]) == 9
    with pytest.raises(ValueError, match="unknown study"):
        B.study_spec("2d", "nope")
