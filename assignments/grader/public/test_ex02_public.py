"""Public tests for exercise sheet 2, whitening: one basic case per exercise (points in rubric.py; the
instructor's hidden tests check other tile shapes, levels, inputs and dtypes).

    python -m pytest tests -q -k E2        # from the folder that holds ntrk_student.py
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


# ---- E2.1 2OS bounds --------------------------------------------------------------------------------
def test_E2_1_bounds_small(sheet2):
    st = sheet2("order_stat_bounds_np")
    L, U = (np.asarray(a, dtype=np.float64) for a in st.order_stat_bounds_np(1, 1, 0.01))
    assert L.shape == (1, 1) and U.shape == (1, 1), f"M = D = 1: shape (1, 1) expected, got {L.shape}, {U.shape}"
    expected = special.ndtri(0.005)
    assert abs(L[0, 0] - expected) < 1e-12, (f"M = D = 1, alpha = 0.01: L[0, 0] = {L[0, 0]:.6f}, expected "
                                             f"Phi^-1(alpha/2) = {expected:.6f}")
    assert abs(U[0, 0] + expected) < 1e-12, f"M = D = 1: U[0, 0] = {U[0, 0]:.6f}, expected {-expected:.6f}"
    L, U = (np.asarray(a, dtype=np.float64) for a in st.order_stat_bounds_np(3, 2, 0.05))
    assert L.shape == (3, 2) and U.shape == (3, 2), f"M = 3, D = 2: shape (3, 2) expected, got {L.shape}, {U.shape}"
    assert np.isfinite(L).all() and np.isfinite(U).all(), "bounds must be finite"


# ---- E2.2 sort-clip-unsort ---------------------------------------------------------------------------
def test_E2_2_projection_small(sheet2):
    st = sheet2("project_tiles")
    alpha = 0.01
    L, U = wh.order_stat_bounds(1, 3, alpha)
    Y = torch.tensor([[[9.0, 0.1, -9.0]]], dtype=torch.float64)          # one tile: the projection is a clip
    out, passes = st.project_tiles(Y.clone(), alpha, 100)
    expected = torch.stack([U[0, 2], torch.tensor(0.1, dtype=torch.float64), L[0, 0]]).reshape(1, 1, 3)
    close(out, expected, "one tile [9, 0.1, -9]: the clip into [L, U], in the input's order",
          mistakes={"every entry on its lower bound L: the clip's bounds are swapped (clip with min L, max U)":
                    L[0].flip(0).reshape(1, 1, 3),
                    "the clipped values left in sorted order: undo the sorts": torch.stack(
                        [L[0, 0], torch.tensor(0.1, dtype=torch.float64), U[0, 2]]).reshape(1, 1, 3)})
    g = gen(1)
    Y = torch.randn(4, 6, 5, generator=g, dtype=torch.float64) ** 3 * 2
    out, _ = st.project_tiles(Y.clone(), 1e-3, 100)
    inside = wh.in_2os_set(out, 1e-3, tol=1e-12)
    assert inside.all(), (f"{int((~inside).sum())} of 4 projected 6x5 tile matrices are outside the set: after "
                          f"clipping, undo the column sort and then the row sort (scatter along the sorted dims)")


# ---- E2.3 tile-means stage -------------------------------------------------------------------------
def test_E2_3_one_atypical_tile(sheet2):
    st = sheet2("stage_means")
    D, alpha = 4, 1e-4
    T = torch.randn(1, 16, D, generator=gen(2), dtype=torch.float64)
    T[0, 7] += 9.0
    out = st.stage_means(T.clone(), alpha, 100)
    ref = wh.stage_means(T.clone(), alpha, 100)
    assert out.shape == T.shape, f"output shape {tuple(out.shape)}, expected {tuple(T.shape)}"
    same = (out == T).all(-1)[0]
    assert same[torch.arange(16) != 7].all(), "tiles with typical means must come back bit for bit"
    m = out.mean(-1) * math.sqrt(D)
    close(out, ref, "the stage on one atypical tile (tile 7, mean + 9)",
          mistakes={"a tile shift of m_new - m, not divided by sqrt(D) (m is the tile mean times sqrt(D))":
                    T + (ref - T) * math.sqrt(D)})
    assert wh.in_2os_set(m[:, None, :], alpha, tol=1e-9).all(), \
        "the tile means * sqrt(D) after the stage must lie in the one-tile order-statistics set"
