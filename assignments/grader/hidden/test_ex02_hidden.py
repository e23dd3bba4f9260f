"""Hidden tests for exercise sheet 2, whitening (instructor-only: never shipped with the student release):
other tile shapes, levels alpha, inputs and dtypes than the notebook and the public tests, and a Monte
Carlo check of what the bounds mean. Each test function is one rubric criterion (rubric.py).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special

from ntrk_minimal import whitening as wh

from checks import close, gen


@pytest.fixture
def sheet2(isolate, student_module):
    def only(name):
        if not hasattr(student_module, name):
            pytest.skip(f"{name} is not part of this student module (sheet 2 not generated)")
        return isolate(name)
    return only


def _structured(B, M, D, seed, dtype=torch.float64):
    """Inputs far from typical noise: a ramp, a constant with a spike, a checkerboard, heavy tails."""
    N = M * D
    g = gen(seed)
    ramp = torch.linspace(-3, 3, N, dtype=dtype)
    spike = torch.full((N,), 0.5, dtype=dtype)
    spike[N // 3] = 25.0
    checker = 3.0 * (-1.0) ** torch.arange(N, dtype=dtype)
    heavy = torch.randn(N, generator=g, dtype=dtype) ** 3
    rows = [ramp, spike, checker, heavy]
    return torch.stack([rows[b % 4] for b in range(B)]).reshape(B, M, D)


# ---- E2.1 2OS bounds ------------------------------------------------------------------------------
def test_E2_1_bounds_recorded(sheet2):
    st = sheet2("order_stat_bounds_np")
    L, U = st.order_stat_bounds_np(256, 64, 1e-4)
    L, U = np.asarray(L), np.asarray(U)
    assert L.shape == (256, 64) and U.shape == (256, 64), f"L, U must have shape (M, D) = (256, 64), got {L.shape}, {U.shape}"
    recorded = {(0, 0): -5.813892, (255, 0): -1.646468, (0, 63): 0.791038, (128, 32): -0.027296}
    for (r, j), val in recorded.items():
        assert abs(L[r, j] - val) < 2e-6, (f"L[{r}, {j}] at M=256, D=64, alpha=1e-4: got {L[r, j]:.6f}, expected "
                                           f"{val} (Beta(r, M-r+1) first, at alpha/2; then Beta(j, D-j+1) at that value)")


@pytest.mark.parametrize("M,D,alpha", [(1, 1, 0.01), (3, 2, 0.05), (5, 7, 1e-4)], ids=["1x1", "3x2", "5x7"])
def test_E2_1_bounds_symmetry_and_order(sheet2, M, D, alpha):
    st = sheet2("order_stat_bounds_np")
    L, U = (np.asarray(a, dtype=np.float64) for a in st.order_stat_bounds_np(M, D, alpha))
    assert L.shape == (M, D) and U.shape == (M, D), f"shape ({M}, {D}) expected, got {L.shape}, {U.shape}"
    assert np.isfinite(L).all() and np.isfinite(U).all(), "bounds must be finite"
    err = np.abs(U + L[::-1, ::-1]).max()
    assert err < 1e-12, (f"U must be -L[::-1, ::-1] (symmetry of N(0, 1): the largest order statistic mirrors the "
                         f"smallest): max |U + L[::-1, ::-1]| = {err:.3g}")
    assert (L < U).all(), "every lower bound must lie below its upper bound"
    if M > 1:
        assert (np.diff(L, axis=0) > 0).all(), "L must increase with the rank r over the tiles"
    if D > 1:
        assert (np.diff(L, axis=1) > 0).all(), "L must increase with the order j within a tile"
    if M == 1 and D == 1:
        assert abs(L[0, 0] - special.ndtri(alpha / 2)) < 1e-12, "for M = D = 1, L = Phi^-1(alpha / 2)"


def test_E2_1_bounds_coverage(sheet2):
    """Each Z[r, j] of N(0, I) tiles falls below L[r, j] with probability alpha / 2 (Monte Carlo)."""
    st = sheet2("order_stat_bounds_np")
    M, D, alpha, n = 4, 3, 0.2, 20000
    L, U = (torch.as_tensor(np.asarray(a, dtype=np.float64).copy()) for a in st.order_stat_bounds_np(M, D, alpha))
    Z = torch.randn(n, M, D, generator=gen(5), dtype=torch.float64).sort(-1).values.sort(-2).values
    low, high = (Z < L).double().mean(0), (Z > U).double().mean(0)
    worst = max((low - alpha / 2).abs().max().item(), (high - alpha / 2).abs().max().item())
    assert worst < 0.015, (f"per-entry tail frequencies over {n} N(0, I) samples: got up to {worst:.3f} away from "
                           f"alpha/2 = {alpha / 2}, expected within 0.015 (lower tail worst "
                           f"{low.sub(alpha / 2).abs().max().item():.3f}, upper {high.sub(alpha / 2).abs().max().item():.3f})")


# ---- E2.2 sort-clip-unsort projection ----------------------------------------------------------------
SHAPES = [(4, 6, 5), (2, 1, 9), (4, 16, 8)]


@pytest.mark.parametrize("B,M,D", SHAPES, ids=["6x5", "1x9", "16x8"])
def test_E2_2_projection_matches_reference(sheet2, B, M, D):
    st = sheet2("project_tiles")
    Y = _structured(B, M, D, seed=11)
    out, passes = st.project_tiles(Y.clone(), 1e-3, 100)
    assert out.shape == Y.shape, f"output shape {tuple(out.shape)}, expected {tuple(Y.shape)}"
    inside = wh.in_2os_set(out, 1e-3, tol=1e-12)
    assert inside.all(), (f"{int((~inside).sum())} of {B} projected tile matrices are outside the set: after "
                          f"clipping, undo the column sort and then the row sort (scatter along the sorted dims)")
    ref_out, ref_passes = wh.project_tiles(Y.clone(), 1e-3, 100)
    close(out, ref_out, f"projection of structured {M}x{D} inputs (stable sorts, clip into [L, U])", scale=100)
    assert torch.equal(passes, ref_passes), f"passes {passes.tolist()}, expected {ref_passes.tolist()}"


def test_E2_2_points_of_set_unchanged(sheet2):
    st = sheet2("project_tiles")
    Y = torch.randn(8, 12, 6, generator=gen(12), dtype=torch.float64)
    assert wh.in_2os_set(Y, 1e-4).all()
    out, passes = st.project_tiles(Y.clone(), 1e-4, 100)
    assert torch.equal(out, Y), ("a point already in the set must come back unchanged, bit for bit "
                                 f"(max difference {(out - Y).abs().max().item():.3g})")
    assert (passes == 0).all(), f"no clipping pass should be counted for points already in the set: {passes.tolist()}"


def test_E2_2_float32_and_equivariant(sheet2):
    st = sheet2("project_tiles")
    Y = _structured(3, 5, 4, seed=13, dtype=torch.float32)
    out, _ = st.project_tiles(Y.clone(), 1e-2, 100)
    assert out.dtype == torch.float32, f"float32 in, float32 out (got {out.dtype})"
    ref_out, _ = wh.project_tiles(Y.clone(), 1e-2, 100)
    close(out, ref_out, "float32 projection", torch.float32, scale=10)
    Y = 2.0 * torch.randn(3, 5, 4, generator=gen(14)) ** 3            # no ties: stable sorts are then equivariant
    out, _ = st.project_tiles(Y.clone(), 1e-2, 100)
    perm = torch.tensor([2, 0, 4, 1, 3])
    out_p, _ = st.project_tiles(Y[:, perm].clone(), 1e-2, 100)
    assert torch.allclose(out_p, out[:, perm], atol=1e-5), ("permuting the tiles must permute the output "
                                                            "the same way (the set is permutation-symmetric)")


def test_E2_2_single_pass(sheet2):
    st = sheet2("project_tiles")
    Y = _structured(4, 8, 6, seed=15)
    out, passes = st.project_tiles(Y.clone(), 1e-3, 100, repeat=False)
    ref_out, ref_passes = wh.project_tiles(Y.clone(), 1e-3, 100, repeat=False)
    close(out, ref_out, "repeat=False (the paper's single pass: sort, clip, unsort both)", scale=100)
    assert torch.equal(passes, ref_passes), f"passes {passes.tolist()}, expected {ref_passes.tolist()}"


# ---- E2.3 tile-means projection -----------------------------------------------------------------------
def test_E2_3_three_kinds_of_atypical_means(sheet2):
    st = sheet2("stage_means")
    B, M, D, alpha = 3, 10, 6, 1e-3
    T = torch.randn(B, M, D, generator=gen(21), dtype=torch.float64)
    T[0, 3] += 4.0                       # one tile with an atypical mean
    T[1] += 1.5                          # every tile shifted
    T[2, :, 0] -= 6.0                    # one outlier per tile
    out = st.stage_means(T.clone(), alpha, 100)
    assert out.shape == T.shape, f"output shape {tuple(out.shape)}, expected {tuple(T.shape)}"
    ref = wh.stage_means(T.clone(), alpha, 100)
    m = out.mean(-1) * math.sqrt(D)
    inside = wh.in_2os_set(m[:, None, :], alpha, tol=1e-9)
    assert inside.all(), (f"the tile means * sqrt(D) of {int((~inside).sum())} of {B} samples are outside the "
                          f"one-tile order-statistics set after the stage")
    dev_in, dev_out = T - T.mean(-1, keepdim=True), out - out.mean(-1, keepdim=True)
    err = (dev_in - dev_out).abs().max().item()
    assert err < 1e-12, f"the stage must shift whole tiles, not change their shape (deviations changed by {err:.3g})"
    close(out, ref, "the tiles after the stage", mistakes={
        "a tile shift of m_new - m, not divided by sqrt(D)": T + (ref - T) * math.sqrt(D)})


def test_E2_3_typical_tiles_bit_for_bit(sheet2):
    st = sheet2("stage_means")
    T = torch.randn(5, 16, 4, generator=gen(22), dtype=torch.float64)
    T[0, 7] += 9.0                        # only this tile (of sample 0) should move
    out = st.stage_means(T.clone(), 1e-4, 100)
    same = (out == T).all(-1)
    assert same[1:].all(), "samples whose tile means are already typical must come back bit for bit"
    assert not same[0, 7], "the tile with an atypical mean must move"
