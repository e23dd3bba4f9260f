"""Hidden tests for exercise sheet 3, measuring honestly (instructor-only: never shipped with the student
release): block sizes, kernel parameters, unbiasedness by Monte Carlo, the TOST-CI duality, both metric
directions, win-before-equivalent, missing seeds. Each test function is one rubric criterion."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ntrk_minimal.bench import stats as protocol

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "public"))   # the public tests' helpers

from checks import gen  # noqa: E402
from test_ex03_public import _num_close, biased_mmd2, brute_kernel, cases, unbiased_mmd2  # noqa: E402


@pytest.fixture
def sheet3(isolate, student_module):
    def only(name):
        if not hasattr(student_module, name):
            pytest.skip(f"{name} is not part of this student module (sheet 3 not generated)")
        return isolate(name)
    return only


# ---- E3.1 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("drop", [False, True], ids=["all-pairs", "no-diagonal"])
def test_E3_1_poly_sum_blocks(sheet3, drop):
    st = sheet3("poly_kernel_sum")
    a = torch.randn(10, 3, generator=gen(11), dtype=torch.float64)
    K = brute_kernel(a, a, 1 / 3, 1.0, 3)
    expected = float(K.sum() - (K.diagonal().sum() if drop else 0))
    try:
        got = st.poly_kernel_sum(a, a, 1 / 3, 1.0, 3, drop, block=3)
    except IndexError as e:
        pytest.fail(f"IndexError({e}) with blocks of 3 rows: inside block s, row i of the block's kernel matrix is "
                    f"a's row s + i, so a's diagonal entry (s + i, s + i) sits at [i, s + i]", pytrace=False)
    _num_close(got, expected, f"the sum over 10 rows in blocks of 3 ({'without' if drop else 'with'} the diagonal)",
               mistakes={"the sum with the diagonal": float(K.sum())})


@pytest.mark.parametrize("degree,gamma,coef0,dtype", [(2, 0.3, 0.5, torch.float64), (3, 0.125, 1.0, torch.float32)],
                         ids=["degree2", "float32"])
def test_E3_1_poly_sum_kernel_parameters(sheet3, degree, gamma, coef0, dtype):
    st = sheet3("poly_kernel_sum")
    a = torch.randn(7, 8, generator=gen(12), dtype=torch.float64)
    b = torch.randn(5, 8, generator=gen(13), dtype=torch.float64)
    expected = float(brute_kernel(a, b, gamma, coef0, degree).sum())
    _num_close(st.poly_kernel_sum(a.to(dtype), b.to(dtype), gamma, coef0, degree, False), expected,
               f"(gamma a.b + coef0)^degree summed, degree={degree}, gamma={gamma}, coef0={coef0}, {dtype}",
               tol=1e-9 if dtype == torch.float64 else 1e-4)


# ---- E3.2 ----------------------------------------------------------------------------------------
def test_E3_2_mmd2_unbiased_on_equal_laws(sheet3):
    st = sheet3("mmd2_poly")
    g = gen(21)
    vals = []
    for _ in range(200):
        x = torch.randn(20, 5, generator=g, dtype=torch.float64)
        y = torch.randn(20, 5, generator=g, dtype=torch.float64)
        vals.append(float(st.mmd2_poly(x, y, 0.2, 1.0, 3, True)))
    v = np.asarray(vals)
    se = v.std(ddof=1) / math.sqrt(v.size)
    assert abs(v.mean()) < 3 * se, (f"two sets from the same law: mean of your MMD^2 over 200 pairs = {v.mean():.4g}, "
                                    f"expected 0 within 3 standard errors ({3 * se:.2g}): an unbiased estimate "
                                    f"averages k over pairs i != j")


@pytest.mark.parametrize("unbiased,m,n", [(False, 7, 7), (True, 6, 11)], ids=["V-statistic", "m-neq-n"])
def test_E3_2_mmd2_biased_option_and_sizes(sheet3, unbiased, m, n):
    st = sheet3("mmd2_poly")
    x = torch.randn(m, 4, generator=gen(22), dtype=torch.float64)
    y = torch.randn(n, 4, generator=gen(23), dtype=torch.float64) * 1.3
    expected = unbiased_mmd2(x, y) if unbiased else biased_mmd2(x, y)
    _num_close(st.mmd2_poly(x, y, 0.25, 1.0, 3, unbiased), expected,
               f"MMD^2 ({'unbiased' if unbiased else 'V-statistic'}) of {m} vs {n} points",
               mistakes={"the V-statistic (diagonal kept, divided by m^2)": biased_mmd2(x, y)})


# ---- E3.3 ----------------------------------------------------------------------------------------
def _one_sided(d, margin):
    m, se, df = d.mean(), d.std(ddof=1) / math.sqrt(d.size), d.size - 1
    return stats.t.sf((m + margin) / se, df), stats.t.cdf((m - margin) / se, df)


TOST_CASES = [(5, 0.0, 0.1, 0.2), (5, 0.15, 0.1, 0.2), (12, -0.05, 0.3, 0.4), (30, 0.1, 0.5, 0.2),
              (8, 0.19, 0.02, 0.2), (3, 0.0, 1.0, 0.5), (20, -0.3, 0.2, 0.25), (50, 0.01, 0.05, 0.03)]


@pytest.mark.parametrize("n,mean,sd,margin", TOST_CASES)
def test_E3_3_tost_matches_reference(sheet3, n, mean, sd, margin):
    st = sheet3("tost")
    d = np.random.default_rng(n).normal(mean, sd, size=n)
    p, passed = st.tost(d, margin)
    p_lo, p_hi = _one_sided(d, margin)
    _num_close(p, max(p_lo, p_hi), f"TOST p for {n} differences (mean {d.mean():.3f}, sd {d.std(ddof=1):.3f}, "
               f"margin {margin})", mistakes={
                   "the smaller of the two one-sided p-values: equivalence needs BOTH tests to reject, so the "
                   "TOST p is the larger one": min(p_lo, p_hi),
                   "a two-sided test of mean = 0": float(stats.ttest_1samp(d, 0.0).pvalue)})
    assert bool(passed) == (max(p_lo, p_hi) < 0.05), f"passed = {passed}, expected p < alpha = 0.05"


def test_E3_3_tost_ci_duality(sheet3):
    """TOST at alpha rejects both one-sided nulls iff the (1 - 2 alpha) t interval lies inside the margin."""
    st = sheet3("tost")
    rng = np.random.default_rng(31)
    wrong = []
    for k in range(40):
        d = rng.normal(rng.uniform(-0.2, 0.2), rng.uniform(0.05, 0.3), size=int(rng.integers(4, 25)))
        mu, half = protocol.mean_ci(d, 0.90)
        inside = -0.25 < mu - half and mu + half < 0.25
        if bool(st.tost(d, 0.25)[1]) != inside:
            wrong.append(k)
    assert not wrong, (f"{len(wrong)} of 40 cases disagree with the 90% CI rule (TOST passes iff the 90% CI lies "
                       f"inside (-margin, margin)): cases {wrong[:5]}")


def test_E3_3_tost_edge_cases(sheet3):
    st = sheet3("tost")
    for value, margin, expect in [(0.05, 0.1, True), (0.2, 0.1, False)]:
        p, passed = st.tost(np.full(6, value), margin)
        assert bool(passed) == expect and math.isfinite(float(p)), (
            f"all 6 differences = {value} (sd 0), margin {margin}: got p = {p}, passed = {passed}; expected "
            f"passed = {expect} (with no spread, equivalence is |mean| < margin)")
    d = np.random.default_rng(32).normal(0.05, 0.1, size=9)
    _num_close(st.tost(-d, 0.2)[0], float(st.tost(d, 0.2)[0]), "p(-d) must equal p(d): the test is symmetric")


# ---- E3.4 ----------------------------------------------------------------------------------------
def _explain(v, label):
    return (f"A - B = {v.mean:+.3f} with 95% CI [{v.lo:+.3f}, {v.hi:+.3f}], TOST p = {v.p_tost:.3g}, "
            f"{'higher' if v.higher_is_better else 'lower'} is better: got {v.label!r}, expected {label!r}")


def test_E3_4_verdict_lower_is_better(sheet3):
    st = sheet3("verdict")
    for a, b, margin, label in cases(False):
        v = st.verdict(a, b, margin, higher_is_better=False)
        msg = _explain(v, label)
        if {v.label, label} == {"win", "lose"}:
            msg += " (when lower is better, e.g. KID or a distance, a CI below 0 is a win)"
        assert v.label == label, msg


@pytest.mark.parametrize("higher", [True, False], ids=["higher-better", "lower-better"])
def test_E3_4_verdict_win_before_equivalent(sheet3, higher):
    st = sheet3("verdict")
    b = np.random.default_rng(41).normal(1.0, 0.1, size=10)
    a = b + (0.02 if higher else -0.02) + np.random.default_rng(42).normal(0, 0.002, size=10)
    v = st.verdict(a, b, 0.1, higher_is_better=higher)
    assert v.label == "win", _explain(v, "win") + " (the CI excludes 0 on the good side: that decides before TOST)"


def test_E3_4_verdict_missing_seeds(sheet3):
    st = sheet3("verdict")
    a = np.array([1.5, 1.6, np.nan, 1.55, 1.52, 1.58])
    b = np.ones(6)
    v = st.verdict(a, b, 0.1, higher_is_better=True)
    assert v.label == "undecided", (_explain(v, "undecided") + " (one of 6 seeds is missing: the given coverage "
                                    "rule decides; continue its if/elif chain with elif, not a new if)")
    assert v.n_seeds == 5 and abs(v.mean - np.nanmean(a - b)) < 1e-12, "the numbers on the paired seeds are kept"
