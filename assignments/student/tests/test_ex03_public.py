"""Public tests for exercise sheet 3, measuring honestly: one basic case per exercise (points in rubric.py;
the instructor's hidden tests add block sizes, kernel parameters, unbiasedness, CI duality, directions).

    python -m pytest tests -q -k E3        # from the folder that holds ntrk_student.py
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ntrk_minimal.bench import stats as protocol

from checks import gen


@pytest.fixture
def sheet3(isolate, student_module):
    def only(name):
        if not hasattr(student_module, name):
            pytest.skip(f"{name} is not part of this student module (sheet 3 not generated)")
        return isolate(name)
    return only


def brute_kernel(a, b, gamma, coef0, degree):
    return torch.tensor([[(gamma * float(a[i] @ b[j]) + coef0) ** degree for j in range(len(b))]
                         for i in range(len(a))], dtype=torch.float64)


def _num_close(got, expected, what, tol=1e-9, mistakes=None):
    assert isinstance(got, (float, int, np.floating)) or (torch.is_tensor(got) and got.numel() == 1), \
        f"{what}: expected a number (float), got {type(got).__name__}"
    got = float(got)
    if abs(got - expected) <= tol * max(1.0, abs(expected)):
        return
    msg = f"{what}: got {got:.10g}, expected {expected:.10g}"
    for desc, wrong in (mistakes or {}).items():
        if abs(got - wrong) <= tol * max(1.0, abs(wrong)):
            msg += f"; your result matches {desc}"
            break
    raise AssertionError(msg)


# ---- E3.1 polynomial-kernel sum ---------------------------------------------------------------------
def test_E3_1_poly_sum_small(sheet3):
    st = sheet3("poly_kernel_sum")
    a = torch.randn(5, 4, generator=gen(1), dtype=torch.float64)
    b = torch.randn(6, 4, generator=gen(2), dtype=torch.float64)
    K = brute_kernel(a, b, 0.25, 1.0, 3)
    _num_close(st.poly_kernel_sum(a, b, 0.25, 1.0, 3, False), float(K.sum()), "sum over all i, j of (a_i.b_j / 4 + 1)^3")
    Kaa = brute_kernel(a, a, 0.25, 1.0, 3)
    _num_close(st.poly_kernel_sum(a, a, 0.25, 1.0, 3, True), float(Kaa.sum() - Kaa.diagonal().sum()),
               "the same sum of a against itself without the terms i = j (drop_diagonal=True)",
               mistakes={"the sum with the diagonal": float(Kaa.sum())})


# ---- E3.2 MMD^2 -------------------------------------------------------------------------------------
def unbiased_mmd2(x, y, gamma=None, coef0=1.0, degree=3):
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    m, n = len(x), len(y)
    Kxx, Kyy, Kxy = (brute_kernel(p, q, gamma, coef0, degree) for p, q in [(x, x), (y, y), (x, y)])
    return float((Kxx.sum() - Kxx.diagonal().sum()) / (m * (m - 1)) + (Kyy.sum() - Kyy.diagonal().sum()) / (n * (n - 1))
                 - 2 * Kxy.mean())


def biased_mmd2(x, y, gamma=None, coef0=1.0, degree=3):
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    Kxx, Kyy, Kxy = (brute_kernel(p, q, gamma, coef0, degree) for p, q in [(x, x), (y, y), (x, y)])
    return float(Kxx.mean() + Kyy.mean() - 2 * Kxy.mean())


def test_E3_2_mmd2_small(sheet3):
    st = sheet3("mmd2_poly")
    x = torch.randn(8, 3, generator=gen(3), dtype=torch.float64)
    y = torch.randn(8, 3, generator=gen(4), dtype=torch.float64) + 0.5
    _num_close(st.mmd2_poly(x, y, 1 / 3, 1.0, 3, True), unbiased_mmd2(x, y), "unbiased MMD^2 (KID) of 8 vs 8 points",
               mistakes={"the V-statistic (diagonal kept, divided by m^2): biased upward; unbiased means "
                         "pairs i != j, m (m - 1) of them": biased_mmd2(x, y)})


# ---- E3.3 TOST -------------------------------------------------------------------------------------
def test_E3_3_tost_against_the_library(sheet3):
    st = sheet3("tost")
    for seed, shift, margin in [(5, 0.02, 0.3), (6, 0.25, 0.3)]:
        d = np.random.default_rng(seed).normal(shift, 0.2, size=10)
        p, passed = st.tost(d, margin)
        p_ref, passed_ref = protocol.tost(d, margin)
        _num_close(p, p_ref, f"TOST p-value for 10 paired differences with mean {d.mean():.3f}, margin {margin}")
        assert bool(passed) == passed_ref, f"passed = {passed}, expected {passed_ref} (p < alpha)"


# ---- E3.4 verdict ----------------------------------------------------------------------------------
def cases(higher_is_better: bool):
    """(a, b, margin, label): 8 seeds each; the sign of the difference is flipped when lower is better."""
    rng = np.random.default_rng(7)
    b = rng.normal(1.0, 0.1, size=8)
    noise = rng.normal(0, 0.01, size=8)
    sgn = 1.0 if higher_is_better else -1.0
    return [(b + sgn * (0.5 + noise), b, 0.1, "win"),
            (b - sgn * (0.5 + noise), b, 0.1, "lose"),
            (b + noise, b, 0.1, "equivalent"),
            (b + np.array([0.3, -0.3] * 4) + noise, b, 0.1, "undecided")]


def test_E3_4_verdict_four_labels(sheet3):
    st = sheet3("verdict")
    for a, b, margin, label in cases(True):
        v = st.verdict(a, b, margin, higher_is_better=True)
        assert v.label == label, (f"A - B = {v.mean:+.3f} with 95% CI [{v.lo:+.3f}, {v.hi:+.3f}], TOST p = {v.p_tost:.3g} "
                                  f"at margin {margin}, higher is better: got {v.label!r}, expected {label!r}")
