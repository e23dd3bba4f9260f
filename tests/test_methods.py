"""The one table of methods (``bench.methods``): each test names the bug it would catch."""
import dataclasses
import math

import pytest
import torch

from ntrk_minimal.bench import methods as M
from ntrk_minimal.sampling import signal_rho
from ntrk_minimal.worlds import flow2d, toy2d


@pytest.fixture(scope="module")
def world():
    return toy2d.world(n_ref=200)


def test_zero_strength_is_the_base_sampler_bit_for_bit(world):
    """DPS at scale 0 and NTRK at kappa 0 (both decays, W on and off) reproduce the base sampler: catches a
    method that draws extra randomness, or moves the state, when its knob says "no guidance"."""
    x_T, g = world.start(5, 64)
    base = M.base(world, x_T, g)[0].x0
    for fn, kw in ((M.dps, dict(scale=0.0)), (M.ntrk, dict(kappa=0.0, decay="linear")),
                   (M.ntrk, dict(kappa=0.0, decay="constant", whiten="norm_match"))):
        x_T, g = world.start(5, 64)
        assert torch.equal(fn(world, x_T, g, **kw)[0].x0, base), (fn.__name__, kw)


def test_knob_meanings_per_beta(world):
    """DPS's scale is per beta unless per_beta=False: at beta = 0.5, scale 1 with per_beta equals scale 2
    without. Catches the drift the table exists to prevent (one world reading scale as lambda / sigma^2,
    another as lambda beta / sigma^2, silently)."""
    assert world.context.beta == 0.5
    runs = []
    for kw in (dict(scale=1.0), dict(scale=2.0, per_beta=False)):
        x_T, g = world.start(6, 32)
        runs.append(M.dps(world, x_T, g, **kw)[0].x0)
    assert torch.equal(*runs)


def test_settings_that_contradict_each_other_are_refused(world):
    """Catches a silent pick between two settings: W off together with a map for W, a fixed SMC
    temperature together with a temperature knob, NTRK+BoN without its decay, NTRK without a decay."""
    x_T, g = world.start(0, 8)
    with pytest.raises(ValueError, match="w_off"):
        M.ntrk(world, x_T, g, 1.0, decay="linear", w_off=True, whiten=lambda v: v)
    with pytest.raises(ValueError, match="either a fixed beta"):
        M.smc(world, x_T, g, temp=2.0, num_particles=2, beta=0.3)
    with pytest.raises(ValueError, match="kappa and decay"):
        M.best_of_n(world, x_T, g, 2, kernel="ntrk", kappa=1.0)
    with pytest.raises(TypeError, match="decay"):
        M.ntrk(world, x_T, g, 1.0)


def test_micro_batches_are_the_batches_run_one_after_another(world):
    """A world with ``config["micro_batch"]`` runs every method chunk after chunk with one generator: the
    samples equal two separate calls, and the matched strength's diagnostics are the size-weighted mean of
    the chunks' (not the last chunk's: TiltMatched restarts its record at every trajectory's step 0)."""
    mb = dataclasses.replace(world, config={**world.config, "micro_batch": 16})
    keys = ("kappa_mean", "clipped")
    x_T, g = mb.start(7, 32)
    res, diag = M.ntrk_matched(mb, x_T, g, 1.0, diagnostics=keys)
    x_T, g = world.start(7, 32)
    (r1, d1), (r2, d2) = (M.ntrk_matched(world, x, g, 1.0, diagnostics=keys) for x in (x_T[:16], x_T[16:]))
    assert torch.equal(res.x0, torch.cat([r1.x0, r2.x0]))
    assert d1["kappa_mean"] != d2["kappa_mean"]
    assert diag["kappa_mean"] == pytest.approx((d1["kappa_mean"] + d2["kappa_mean"]) / 2, rel=1e-12)


def test_per_step_summary_reads_the_rule_that_ran():
    """``w_summary="per_step"`` averages kappa_t of the rule that actually ran: with ``skip_pure_noise`` the
    flow's first step (a_t = 0) has kappa_t = 0. Catches a summary that rebuilds kappa_t from another rule."""
    w = flow2d.world(1.0, n_ref=200)
    x_T, g = w.start(1, 32)
    _, d = M.ntrk(w, x_T, g, 1.0, decay="linear", skip_pure_noise=True, w_summary="per_step",
                  diagnostics=("kappa_mean", "eff_step"))
    sched, rho = w.context.schedule, signal_rho(1.0, 2, "linear")
    kappa_t = [math.sqrt(rho(i, sched) * 2) for i in range(sched.num_steps)]
    assert kappa_t[0] == 0.0 and d["kappa_mean"] == pytest.approx(sum(kappa_t) / len(kappa_t), rel=1e-12)
    assert 0 < d["eff_step"] <= d["kappa_mean"] * (1 + 1e-12)       # W never lengthens the step along g


def test_every_method_reports_only_what_it_can_measure(world):
    """Each method returns the requested diagnostics it measures and nothing else (best-of-N and SMC keep
    no trace, so no eta statistics; SMC reports its ESS). Catches a method that invents or drops keys."""
    keys = ("eta_energy", "cos_wg", "eff_step", "ess")
    got = {}
    for name, fn, kw in (("base", M.base, {}), ("dps", M.dps, dict(scale=1.0)),
                         ("ntrk", M.ntrk, dict(kappa=1.0, decay="linear")),
                         ("svdd", M.svdd, dict(num_candidates=2)), ("smc", M.smc, dict(num_particles=2)),
                         ("bon", M.best_of_n, dict(num_samples=2))):
        x_T, g = world.start(2, 16)
        got[name] = list(fn(world, x_T, g, diagnostics=keys, **kw)[1])
    assert got == {"base": ["eta_energy"], "dps": ["eta_energy"], "ntrk": ["eta_energy", "cos_wg", "eff_step"],
                   "svdd": ["eta_energy"], "smc": ["ess"], "bon": []}
