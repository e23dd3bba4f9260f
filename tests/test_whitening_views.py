"""The teaching views of W that notebook 03 draws: ``whiten_stages`` (W one stage at a time) and
``in_confidence_sets`` (does a sample already lie in each set W projects onto; its mean over N(0, I)
draws is the measured coverage)."""
import math

import pytest
import torch

import ntrk_minimal as nt
from ntrk_minimal import whitening as wh


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape, kw", [((3, 4, 32, 32), {}), ((4, 256), {}), ((5, 2), {}),
                                       ((2, 1, 16, 16), {"cycles": 2}),
                                       ((2, 4, 32, 32), {"domains": ("pixel",), "stages": ("energies", "values"),
                                                         "tile_size": (4, 4)})])
def test_whiten_stages_ends_where_whiten_ends(shape, kw):
    """Catches a stage picture that drifts from W (a stage skipped, run twice, or in another order/tiling)."""
    x = torch.randn(shape, generator=_gen(0), dtype=torch.float64).cumsum(-1)     # structured: stages bite
    steps = list(wh.whiten_stages(x, **kw))
    w = nt.whiten(x, **kw)
    scale = float(w.abs().max())
    assert float((steps[-1][1] - w).abs().max()) < 1e-11 * scale
    domains, stages = kw.get("domains", ("dct", "pixel")), kw.get("stages", ("means", "energies", "values"))
    per_cycle = [f"{d} {s}" for d in domains for s in stages]
    labels = [lab.split(": ")[-1] for lab, _ in steps]
    assert labels == ["input", "normalize"] + per_cycle * kw.get("cycles", 1)
    assert torch.equal(steps[0][1], x) and all(y.shape == x.shape and y.dtype == x.dtype for _, y in steps)


def test_each_stage_lands_in_its_set():
    """After a stage runs, the sample lies in that stage's set (the stages really are the projections)."""
    x = torch.randn(2, 4, 32, 32, generator=_gen(1), dtype=torch.float64).cumsum(-1).cumsum(-2)
    for label, y in wh.whiten_stages(x):
        if label in ("input", "normalize"):
            continue
        domain, stage = label.split()
        inside = wh.in_confidence_sets(y, domains=(domain,), stages=(stage,), normalize=False,
                                        tol=1e-9)[label]      # 1e-9: the DCT round trip's rounding
        assert inside.all(), label


def test_a_draw_in_every_set_is_only_rescaled_and_one_outside_is_moved():
    """``all`` agrees with what W does: catches a membership test on a different tiling than W's."""
    x = torch.randn(300, 4, 32, 32, generator=_gen(2), dtype=torch.float64)
    inside = wh.in_confidence_sets(x)
    assert 0.5 < float(inside["all"].double().mean()) < 1.0          # both cases occur
    rescaled = x / x.flatten(1).norm(dim=1)[:, None, None, None] * math.sqrt(x[0].numel())
    moved = (nt.whiten(x) - rescaled).flatten(1).abs().amax(1)
    assert float(moved[inside["all"]].max()) < 1e-12
    assert float(moved[~inside["all"]].min()) > 1e-9


def test_values_set_is_the_2os_set_of_the_tiles():
    """Flat samples, pixel values: the set is the M x D 2OS set of consecutive runs (tile order irrelevant)."""
    M, D = 32, 16
    x = torch.randn(400, M * D, generator=_gen(3), dtype=torch.float64)
    got = wh.in_confidence_sets(x, domains=("pixel",), stages=("values",), tile_size=D, normalize=False)
    want = nt.in_2os_set(x.reshape(-1, M, D))
    assert torch.equal(got["pixel values"], want) and torch.equal(got["all"], want)
    assert 0 < int((~want).sum())            # at alpha = 1e-4 per entry some draws leave a 32 x 16 set


def test_coverage_falls_below_one_minus_alpha_per_set():
    """alpha bounds each order statistic, not the set: a 64 x 64 value set holds clearly fewer than 1 - alpha."""
    x = torch.randn(600, 64 * 64, generator=_gen(4), dtype=torch.float64)
    cov = float(wh.in_confidence_sets(x, domains=("pixel",), stages=("values",), normalize=False)["all"]
                .double().mean())
    assert 0.85 < cov < 0.97          # measured ~0.91; 1 - alpha would be 0.9999


def test_views_reject_bad_input():
    with pytest.raises(ValueError, match="all-zero"):
        list(wh.whiten_stages(torch.zeros(2, 64)))
    with pytest.raises(ValueError, match="domains"):
        wh.in_confidence_sets(torch.randn(2, 64), domains=("fourier",))
    with pytest.raises(ValueError, match="NaN"):
        wh.in_confidence_sets(torch.full((1, 64), float("nan")))
