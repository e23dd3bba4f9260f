"""The whitening operator ``W`` (docs/METHOD.md section 4) and its comparison points.

NTRK injects ``w_t = W(g_t)`` as if it were a draw of N(0, I) noise. A raw reward gradient is
smooth and structured; ``W`` maps it to a nearby vector that *looks* like white Gaussian noise
(typical norm, Gaussian marginal, no correlation, flat spectrum) and leaves a genuine Gaussian sample
(almost) untouched. It is a composition of Euclidean projections onto confidence sets of level
``1 - alpha``:

**2OS (two-level order statistics).** Tiles ``Y in R^{M x D}``;
``Z = sort_over_tiles(sort_within_tile(Y))`` (``Z[r, j]`` = r-th smallest, over the M tiles, of
their j-th smallest entry). For N(0, I) input

    L[r, j] = Phi^{-1}( I^{-1}_{j, D-j+1}( I^{-1}_{r, M-r+1}(alpha / 2) ) ),   U = -L[::-1, ::-1]

bound ``Z[r, j]`` with probability ``1 - alpha`` each (``I^{-1}`` = ``scipy.special.betaincinv``).
The projection sorts, clips ``Z`` into ``[L, U]`` and undoes both sorts. One such pass is *not*
always the nearest point of the set (the paper says it is): clipping can reverse the order of two
entries of a tile, and the unsorted result can leave the set. ``project_2os`` therefore repeats the
pass until the output is in the set (it usually takes 1-3 passes; ``max_passes`` caps it). When the
first pass is already feasible it *is* the nearest point (rearrangement inequality).

**Tile statistics.** Tile means times ``sqrt(D)`` are N(0, 1); tile energies about the mean are
chi-square(D - 1), mapped to N(0, 1) by the chi-square CDF and ``Phi^{-1}``. Each vector of M
summaries is projected with the (one-level, exact) 2OS of a single tile, then every tile is shifted
(means) or its deviation from the mean rescaled (energies) to its projected value.

**Domains.** Any orthonormal transform maps N(0, I) to N(0, I); ``W`` repeats the stages in the
orthonormal DCT-II domain (per channel, 2-D for images, 1-D for flat samples; tiles = radial
frequency bands of ``D`` coefficients) and in the pixel domain (tiles = ``ph x pw`` patches per
channel for images, ``D`` consecutive entries for flat samples).

Default ``W`` (``whiten(x)``): scale each sample to ``||x|| = sqrt(N)`` (no mean removal), then
``cycles`` times: DCT domain (means -> energies -> values), pixel domain (means -> energies ->
values); alpha = 1e-4; tiles of 64 (8 x 8 patches) where the shape allows. See ``whiten``.

Comparison points: ``norm_match`` (``g / ||g|| sqrt(N)``: W switched off), ``standardize``
(per-sample zero mean, unit variance) and ``wgnc_project`` (the predecessor's closed-form l1/l2
projection of blocks of 16 complex Fourier coefficients).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
from scipy import special

__all__ = ["order_stat_bounds", "sort_2os", "in_2os_set", "project_2os", "nearest_2os_brute_force", "whiten",
           "whiten_stages", "in_confidence_sets", "tile_layout", "standardize", "norm_match", "wgnc_project",
           "dct_matrix", "whiteness", "DEFAULTS",
           # W's pieces, public for the exercise sheets and notebook 03: the 2OS bounds and projection
           # unchecked, the one-level projection, the three tile stages, the chi-square <-> normal maps
           "order_stat_bounds_np", "order_stat_bounds_cached", "project_tiles", "project_vector", "stage_means",
           "stage_energies", "stage_values", "chi2_to_normal", "normal_to_chi2", "SHRINK_AFTER", "SHRINK_RATE"]

#: the configuration of the default ``W`` (keyword arguments of ``whiten``)
DEFAULTS = dict(domains=("dct", "pixel"), stages=("means", "energies", "values"), tile_size="auto",
                alpha=1e-4, cycles=1, max_passes=100, normalize=True)

_DOMAINS = ("dct", "pixel")
_STAGES = ("means", "energies", "values")
_TIE_SEED = 20260606           # fixed seed of the tie-breaking order (W is deterministic)


# ---- input checks -----------------------------------------------------------------------------
def _check_alpha(alpha) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise TypeError(f"alpha must be a number in (0, 1), got {alpha!r}") from None
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha must lie in the open interval (0, 1), got {alpha!r}")
    return a


def _compute_dtype(x: torch.Tensor, name: str) -> torch.dtype:
    """float32/float64 compute in their own precision; float16/bfloat16 are computed in float32."""
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype in (torch.float32, torch.float64):
        return x.dtype
    if x.dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    raise TypeError(f"{name} must be a floating tensor (float16/bfloat16/float32/float64), got {x.dtype}")


def _check_finite(x: torch.Tensor, name: str) -> None:
    flat = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(1, -1)
    bad = ~torch.isfinite(flat).all(1)
    if bad.any():
        idx = bad.nonzero().flatten().tolist()
        raise ValueError(f"{name} contains NaN or Inf (samples {idx[:10]}{' ...' if len(idx) > 10 else ''})")


def _positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return int(v)


# ---- 2OS bounds and projection ----------------------------------------------------------------
@functools.lru_cache(maxsize=512)
def order_stat_bounds_np(M: int, D: int, alpha: float):
    """``(L, U)``, read-only float64 numpy arrays (M, D): the bounds of ``order_stat_bounds`` without its
    argument checks, cached per ``(M, D, alpha)``."""
    ### BEGIN SOLUTION
    r = np.arange(1, M + 1, dtype=np.float64)
    j = np.arange(1, D + 1, dtype=np.float64)
    u = special.betaincinv(r, M - r + 1, alpha / 2)                          # (M,)  r-th of M uniforms
    v = special.betaincinv(j[None, :], D - j[None, :] + 1, u[:, None])      # (M, D)
    L = special.ndtri(v)
    U = -L[::-1, ::-1]                                                       # symmetry, better numerics
    ### END SOLUTION
    L.setflags(write=False)
    U = np.ascontiguousarray(U)
    U.setflags(write=False)
    return L, U


@functools.lru_cache(maxsize=512)
def order_stat_bounds_cached(M: int, D: int, alpha: float, dtype: torch.dtype, device: str):
    """``order_stat_bounds_np`` as torch tensors of ``dtype`` on ``device`` (a string), cached."""
    L, U = order_stat_bounds_np(M, D, alpha)
    return (torch.tensor(L, dtype=dtype, device=device), torch.tensor(U, dtype=dtype, device=device))


def order_stat_bounds(M: int, D: int, alpha: float = 1e-4, dtype=torch.float64, device=None):
    """Bounds ``(L, U)``, each of shape (M, D), of the 2OS matrix ``Z`` of N(0, I) tiles.

    ``L[r, j] = Phi^{-1}(I^{-1}_{j+1, D-j}(I^{-1}_{r+1, M-r}(alpha/2)))`` (0-based r, j) and
    ``U = -L[::-1, ::-1]``: each ``Z[r, j]`` lies in ``[L[r, j], U[r, j]]`` with probability
    ``1 - alpha``. Computed once per ``(M, D, alpha)`` (float64, scipy) and cached.
    """
    M, D = _positive_int(M, "M"), _positive_int(D, "D")
    alpha = _check_alpha(alpha)
    dev = str(torch.device("cpu") if device is None else torch.device(device))
    return order_stat_bounds_cached(M, D, alpha, dtype, dev)


def sort_2os(tiles: torch.Tensor) -> torch.Tensor:
    """``Z = sort_over_tiles(sort_within_tile(tiles))`` for tiles of shape (..., M, D)."""
    return tiles.sort(-1).values.sort(-2).values


def in_2os_set(tiles: torch.Tensor, alpha: float = 1e-4, tol: float = 0.0) -> torch.Tensor:
    """Whether each (M, D) tile matrix of ``tiles`` (..., M, D) lies in ``{L - tol <= Z <= U + tol}``."""
    if tiles.ndim < 2:
        raise ValueError(f"tiles must have shape (..., M, D), got {tuple(tiles.shape)}")
    M, D = tiles.shape[-2:]
    L, U = order_stat_bounds(M, D, alpha, tiles.dtype, tiles.device)
    Z = sort_2os(tiles)
    return ((Z >= L - tol) & (Z <= U + tol)).flatten(-2).all(-1)


SHRINK_AFTER, SHRINK_RATE = 8, 0.02   # see project_tiles: breaks the rare non-converging cycles


def project_tiles(Y: torch.Tensor, alpha: float, max_passes: int, repeat: bool = True):
    """2OS projection of (B, M, D) ``Y`` (finite or ±inf, already in compute dtype).

    ``repeat=False``: the paper's single pass (sort rows, sort columns, clip, unsort both; the
    result can leave the set). ``repeat=True`` (ours): the same pass, but after undoing the column
    sort each tile's values are re-sorted into the tile's own order (by the rearrangement inequality
    this is never farther from ``Y`` than plain unsorting: same values per tile, best arrangement),
    and the pass is repeated until ``Z`` lies in ``[L, U]``. Rows stay sorted, so a repeat needs only
    the column sort. Plain repetition can cycle (e.g. a checkerboard's DCT); from pass
    ``SHRINK_AFTER`` on, the clip box shrinks toward its midline by ``SHRINK_RATE`` per pass
    (a point in the smaller box is in the set), which ends such cycles within a few passes.

    Returns ``(out, passes)`` with ``passes`` (B,) the number of clipping passes per sample.
    """
    B, M, D = Y.shape
    L, U = order_stat_bounds_cached(M, D, alpha, Y.dtype, str(Y.device))
    mid = (L + U) / 2
    passes = torch.zeros(B, dtype=torch.long, device=Y.device)
    ### BEGIN SOLUTION
    S_all, i_row = Y.sort(dim=-1, stable=True)                 # sort within each tile (once)
    ### END SOLUTION
    S_all = S_all.clone()
    active = torch.arange(B, device=Y.device)
    S = S_all
    for p in range(max_passes + 1):
        ### BEGIN SOLUTION
        Z, i_col = S.sort(dim=-2, stable=True)                  # each column over the tiles
        ### END SOLUTION
        changed = ((Z < L) | (Z > U)).flatten(1).any(1)
        if not changed.any():
            break
        if p == max_passes:
            raise RuntimeError(f"2OS projection did not reach its set in max_passes={max_passes} passes "
                               f"for {int(changed.sum())} of {B} tile matrices (M={M}, D={D}, "
                               f"alpha={alpha}); raise max_passes")
        s = min(1.0, max(0, p - SHRINK_AFTER) * SHRINK_RATE) if repeat else 0.0
        Lp, Up = (L, U) if s == 0 else (L + s * (mid - L), U - s * (U - mid))
        ### BEGIN SOLUTION
        Zc, i_col = torch.clamp(Z[changed], Lp, Up), i_col[changed]
        S_new = torch.empty_like(Zc).scatter_(-2, i_col, Zc)    # undo the column sort
        ### END SOLUTION
        active = active[changed]
        passes[active] += 1
        if not repeat:
            S_all[active] = S_new
            break
        crossed = (S_new[..., 1:] < S_new[..., :-1]).flatten(1).any(1)
        S = S_new.sort(dim=-1).values if crossed.any() else S_new
        S_all[active] = S
        # no clip reversed an order inside a tile: rows are still sorted, Z(S) = Zc is in the set
        active, S = active[crossed], S[crossed]
        if len(active) == 0:
            break
    ### BEGIN SOLUTION
    out = torch.empty_like(S_all).scatter_(-1, i_row, S_all)   # undo the row sort
    ### END SOLUTION
    return out, passes


def _fallback_2os(Y: torch.Tensor, alpha: float) -> torch.Tensor:
    """A point of the 2OS set that is guaranteed feasible (farther than the projection).

    Clip ``Z(Y)`` into ``[L, U]`` (doubly sorted), rank the tiles by their mean and give tile k row
    ``rank(k)`` of the clipped matrix, in the tile's own order: then ``Z(out)`` is that matrix exactly.
    """
    M, D = Y.shape[-2:]
    L, U = order_stat_bounds_cached(M, D, alpha, Y.dtype, str(Y.device))
    S, i_row = Y.sort(dim=-1, stable=True)
    Zc = torch.clamp(S.sort(dim=-2, stable=True).values, L, U)
    rank = S.mean(-1).argsort(-1).argsort(-1)
    S_new = Zc.gather(-2, rank[..., None].expand(-1, -1, D))
    return torch.empty_like(S_new).scatter_(-1, i_row, S_new)


def _project_safe(Y: torch.Tensor, alpha: float, max_passes: int) -> torch.Tensor:
    """``project_tiles`` for W, which must not fail: a sample that hits the pass cap gets ``_fallback_2os``."""
    try:
        return project_tiles(Y, alpha, max_passes)[0]
    except RuntimeError:                       # rare path: redo sample by sample
        out = torch.empty_like(Y)
        for b in range(Y.shape[0]):
            try:
                out[b] = project_tiles(Y[b:b + 1], alpha, max_passes)[0][0]
            except RuntimeError:
                out[b] = _fallback_2os(Y[b:b + 1], alpha)[0]
        return out


def project_2os(tiles: torch.Tensor, alpha: float = 1e-4, max_passes: int = 100,
                return_passes: bool = False, repeat: bool = True):
    """Project tile matrices (..., M, D) onto ``{Y : L <= sort_2os(Y) <= U}`` (batched).

    One pass = sort within tiles, sort over tiles, clip ``Z`` into ``[L, U]``, undo both sorts.
    ``repeat=False`` returns the paper's single pass, which can leave the set (a clip can reverse
    two entries of a tile). ``repeat=True`` (default) re-sorts each tile's new values into the tile's
    own order and repeats until the output is in the set (see ``project_tiles``); a point already in the
    set is returned unchanged, bit for bit. ``RuntimeError`` if ``max_passes`` is not enough.
    With ``return_passes`` also returns the number of clipping passes per tile matrix, shape (...).
    Ties are broken in index order. Computes in float32/float64 (float16/bfloat16 in float32) and
    returns the input dtype.
    """
    cdt = _compute_dtype(tiles, "tiles")
    if tiles.ndim < 2:
        raise ValueError(f"tiles must have shape (..., M, D), got {tuple(tiles.shape)}")
    if tiles.shape[-1] == 0 or tiles.shape[-2] == 0:
        raise ValueError(f"tiles must have M >= 1 and D >= 1, got shape {tuple(tiles.shape)}")
    alpha = _check_alpha(alpha)
    max_passes = _positive_int(max_passes, "max_passes")
    lead, (M, D) = tiles.shape[:-2], tiles.shape[-2:]
    Y = tiles.reshape(-1, M, D).to(cdt)
    if Y.shape[0] > 0:
        _check_finite(Y, "tiles")
    out, passes = project_tiles(Y, alpha, max_passes, bool(repeat))
    out = out.reshape(tiles.shape).to(tiles.dtype)
    return (out, passes.reshape(lead)) if return_passes else out


def nearest_2os_brute_force(tiles: torch.Tensor, alpha: float = 1e-4) -> torch.Tensor:
    """The exact nearest point of ``{L <= sort_2os(Y) <= U}`` to one small tile matrix (M, D).

    The set is a union of polyhedra, one per ordering pattern (the order inside every tile and the
    order of the tiles in every column: ``(D!)^M (M!)^D`` of them); on each, ``Z`` is linear and the
    nearest point is a small QP (scipy SLSQP). Only for tiny sizes (M D <= 6): a reference for tests.
    """
    import itertools
    from scipy.optimize import minimize

    if tiles.ndim != 2 or tiles.numel() > 6:
        raise ValueError(f"tiles must be one small (M, D) matrix with M*D <= 6, got {tuple(tiles.shape)}")
    M, D = tiles.shape
    L, U = (b.numpy() for b in order_stat_bounds(M, D, alpha))
    x0 = tiles.detach().double().cpu().numpy().ravel()
    best, best_y = math.inf, None
    at = lambda k, j: k * D + j
    for sig in itertools.product(itertools.permutations(range(D)), repeat=M):
        rows = []                                         # constraints a . y >= b
        for k in range(M):
            for j in range(D - 1):
                a = np.zeros(M * D); a[at(k, sig[k][j + 1])] += 1; a[at(k, sig[k][j])] -= 1
                rows.append((a, 0.0))
        for tau in itertools.product(itertools.permutations(range(M)), repeat=D):
            cons = list(rows)
            for j in range(D):
                for r in range(M):
                    e = np.zeros(M * D); e[at(tau[j][r], sig[tau[j][r]][j])] = 1
                    cons += [(e, L[r, j]), (-e, -U[r, j])]
                    if r + 1 < M:
                        a = np.zeros(M * D)
                        a[at(tau[j][r + 1], sig[tau[j][r + 1]][j])] += 1
                        a[at(tau[j][r], sig[tau[j][r]][j])] -= 1
                        cons.append((a, 0.0))
            A = np.array([c[0] for c in cons]); b = np.array([c[1] for c in cons])
            res = minimize(lambda y: ((y - x0) ** 2).sum(), np.clip(x0, L.min(), U.max()),
                           jac=lambda y: 2 * (y - x0), method="SLSQP",
                           constraints=[dict(type="ineq", fun=lambda y: A @ y - b, jac=lambda y: A)],
                           options=dict(ftol=1e-12, maxiter=200))
            if res.success and (A @ res.x - b).min() > -1e-7:
                d = float(((res.x - x0) ** 2).sum())
                if d < best:
                    best, best_y = d, res.x
    return torch.as_tensor(best_y.reshape(M, D), dtype=tiles.dtype)


# ---- tile statistics --------------------------------------------------------------------------
def project_vector(v: torch.Tensor, alpha: float, max_passes: int) -> torch.Tensor:
    """One-level order-statistics projection of (B, M) N(0, 1) summaries (a single tile: exact)."""
    return _project_safe(v[:, None, :], alpha, max_passes)[:, 0, :]


def chi2_to_normal(e: np.ndarray, k: float) -> np.ndarray:
    """The normal score ``Phi^{-1}(F_k(e))`` of chi-square(k) values ``e`` (the upper tail through the
    survival function, so large energies keep their precision)."""
    p, q = special.gammainc(k / 2, e / 2), special.gammaincc(k / 2, e / 2)
    return np.where(p < 0.5, special.ndtri(p), -special.ndtri(q))


def normal_to_chi2(z: np.ndarray, k: float) -> np.ndarray:
    """The inverse of ``chi2_to_normal``: chi-square(k) values with normal scores ``z``."""
    lo = 2 * special.gammaincinv(k / 2, special.ndtr(np.minimum(z, 0)))
    hi = 2 * special.gammainccinv(k / 2, special.ndtr(-np.maximum(z, 0)))
    return np.where(z < 0, lo, hi)


def stage_means(T: torch.Tensor, alpha: float, max_passes: int) -> torch.Tensor:
    """Tile means ``* sqrt(D)`` ~ N(0, 1): project them, shift each tile to its projected mean."""
    D = T.shape[-1]
    ### BEGIN SOLUTION
    m = T.mean(-1) * math.sqrt(D)                                   # (B, M)
    m_new = project_vector(m, alpha, max_passes)
    shift = (m_new - m) / math.sqrt(D)
    return torch.where((m_new != m)[..., None], T + shift[..., None], T)
    ### END SOLUTION


def stage_energies(T: torch.Tensor, alpha: float, max_passes: int) -> torch.Tensor:
    """Tile energies about the mean ~ chi2(D - 1): project their normal scores, rescale each tile.

    A tile with zero energy (constant) has no deviation to rescale and is left as it is.
    """
    D = T.shape[-1]
    if D < 2:
        return T
    mean = T.mean(-1, keepdim=True)
    dev = T - mean
    e = (dev * dev).sum(-1)                                         # (B, M)
    e_np = e.detach().double().cpu().numpy()
    z = chi2_to_normal(e_np, D - 1.0)
    z_t = torch.as_tensor(z, device=T.device)
    z_new = project_vector(z_t, alpha, max_passes)
    changed = (z_new != z_t) & (e > 0)
    if not changed.any():
        return T
    e_new = torch.as_tensor(normal_to_chi2(z_new.cpu().numpy(), D - 1.0), dtype=T.dtype, device=T.device)
    scale = torch.where(changed, torch.sqrt(e_new / e.clamp_min(torch.finfo(T.dtype).tiny)),
                        torch.ones_like(e))
    return torch.where(changed[..., None], mean + dev * scale[..., None], T)


def stage_values(T: torch.Tensor, alpha: float, max_passes: int) -> torch.Tensor:
    """The tile values themselves: the 2OS projection of the (B, M, D) tiles (never fails inside W)."""
    return _project_safe(T, alpha, max_passes)


_STAGE_FN = {"means": stage_means, "energies": stage_energies, "values": stage_values}


# ---- orthonormal domains ----------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _dct_matrix_cached(n: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    C = torch.cos(math.pi * (i + 0.5) * k / n) * math.sqrt(2.0 / n)
    C[0] /= math.sqrt(2.0)
    return C.to(dtype=dtype, device=device)


def dct_matrix(n: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``C`` (n, n): ``C[k, i] = s_k cos(pi (i + 1/2) k / n)``, ``C C^T = I``."""
    n = _positive_int(n, "n")
    return _dct_matrix_cached(n, dtype, str(torch.device("cpu") if device is None else torch.device(device)))


_DCT_MATMUL_MAX = 1024     # longer 1-D transforms use the FFT (Makhoul) instead of a dense matrix


def _dct_fft(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II along the last axis via one complex FFT (Makhoul 1980)."""
    n = x.shape[-1]
    v = torch.cat([x[..., ::2], x[..., 1::2].flip(-1)], -1)
    k = torch.arange(n, device=x.device, dtype=x.dtype)
    w = torch.exp(-1j * math.pi * k / (2 * n))
    X = 2 * (torch.fft.fft(v) * w).real
    scale = torch.full((n,), math.sqrt(1 / (2 * n)), dtype=x.dtype, device=x.device)
    scale[0] = math.sqrt(1 / (4 * n))
    return X * scale


def _idct_fft(X: torch.Tensor) -> torch.Tensor:
    """Inverse of ``_dct_fft`` (orthonormal DCT-III)."""
    n = X.shape[-1]
    scale = torch.full((n,), math.sqrt(1 / (2 * n)), dtype=X.dtype, device=X.device)
    scale[0] = math.sqrt(1 / (4 * n))
    Xu = X / scale                                                   # unnormalised DCT-II values
    Xr = torch.cat([torch.zeros_like(Xu[..., :1]), Xu[..., 1:].flip(-1)], -1)   # X_{n-k}, X_n = 0
    k = torch.arange(n, device=X.device, dtype=X.dtype)
    V = (Xu - 1j * Xr) / (2 * torch.exp(-1j * math.pi * k / (2 * n)))
    v = torch.fft.ifft(V).real
    h = (n + 1) // 2
    x = torch.empty_like(v)
    x[..., ::2] = v[..., :h]
    x[..., 1::2] = v[..., h:].flip(-1)
    return x


def _dct(x: torch.Tensor, image: bool) -> torch.Tensor:
    if image:                                           # (B, C, H, W): C_H X C_W^T per channel
        Ch = _dct_matrix_cached(x.shape[-2], x.dtype, str(x.device))
        Cw = _dct_matrix_cached(x.shape[-1], x.dtype, str(x.device))
        return Ch @ x @ Cw.T
    n = x.shape[-1]
    if n > _DCT_MATMUL_MAX:
        return _dct_fft(x)
    return x @ _dct_matrix_cached(n, x.dtype, str(x.device)).T


def _idct(y: torch.Tensor, image: bool) -> torch.Tensor:
    if image:
        Ch = _dct_matrix_cached(y.shape[-2], y.dtype, str(y.device))
        Cw = _dct_matrix_cached(y.shape[-1], y.dtype, str(y.device))
        return Ch.T @ y @ Cw
    n = y.shape[-1]
    if n > _DCT_MATMUL_MAX:
        return _idct_fft(y)
    return y @ _dct_matrix_cached(n, y.dtype, str(y.device))


# ---- tiling -----------------------------------------------------------------------------------
def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in _divisors(n) if d <= cap)


def _resolve_tiles(sample_shape: tuple, tile_size):
    """``(D, patch)``: tile size and, for images, the pixel patch ``(ph, pw)`` (``None`` for flat)."""
    N = math.prod(sample_shape)
    image = len(sample_shape) == 3
    if not image:
        if tile_size == "auto":
            return _largest_divisor_at_most(N, 64), None
        D = _positive_int(tile_size, "tile_size")
        if N % D:
            raise ValueError(f"tile_size={tile_size} does not divide a flat sample of N={N} entries; "
                             f"sizes that work: {_divisors(N)} (or pad the input explicitly)")
        return D, None
    C, H, W = sample_shape
    if tile_size == "auto":
        ph, pw = _largest_divisor_at_most(H, 8), _largest_divisor_at_most(W, 8)
        return ph * pw, (ph, pw)
    if isinstance(tile_size, (tuple, list)):
        if len(tile_size) != 2:
            raise ValueError(f"tile_size as a patch must be (ph, pw), got {tile_size!r}")
        ph, pw = (_positive_int(v, "tile_size") for v in tile_size)
        if H % ph or W % pw:
            raise ValueError(f"tile_size={tuple(tile_size)} does not tile images of H x W = {H} x {W}: "
                             f"ph must divide H (one of {_divisors(H)}) and pw must divide W "
                             f"(one of {_divisors(W)}), or pad the input explicitly")
        return ph * pw, (ph, pw)
    D = _positive_int(tile_size, "tile_size")
    pairs = [(ph, D // ph) for ph in _divisors(H) if D % ph == 0 and W % (D // ph) == 0]
    if not pairs:
        ok = sorted({a * b for a in _divisors(H) for b in _divisors(W)})
        raise ValueError(f"tile_size={D} cannot be made of ph x pw patches of images of H x W = "
                         f"{H} x {W} (ph | H, pw | W); sizes that work: {ok} (or pass (ph, pw), or pad "
                         f"the input explicitly)")
    ph, pw = min(pairs, key=lambda p: (abs(p[0] - p[1]), -p[0]))
    return D, (ph, pw)


@functools.lru_cache(maxsize=128)
def _layout(sample_shape: tuple, domain: str, D: int, patch, device: str):
    """Flat index ``perm`` (M, D) of each tile's entries, and its inverse (N,).

    pixel: patches (images) or consecutive runs (flat); dct: radial frequency bands. The tile order and
    the order inside each tile are shuffled by a fixed seed: this changes nothing but the tie-breaking
    of the sorts (the sets are permutation-symmetric), so degenerate inputs (a constant, zeros) come out
    noise-like instead of as ramps.
    """
    N = math.prod(sample_shape)
    M = N // D
    idx = torch.arange(N)
    if len(sample_shape) == 3:
        C, H, W = sample_shape
        if domain == "pixel":
            ph, pw = patch
            grid = idx.reshape(C, H // ph, ph, W // pw, pw).permute(0, 1, 3, 2, 4)
            perm = grid.reshape(M, D)
        else:
            fu = (torch.arange(H, dtype=torch.float64) / H)[:, None]
            fv = (torch.arange(W, dtype=torch.float64) / W)[None, :]
            radius = (fu ** 2 + fv ** 2).expand(H, W).reshape(1, H * W).expand(C, H * W).reshape(N)
            perm = torch.sort(radius, stable=True).indices.reshape(M, D)
    else:
        perm = idx.reshape(M, D)                      # consecutive entries = consecutive frequencies
    g = torch.Generator().manual_seed(_TIE_SEED)
    perm = perm[torch.randperm(M, generator=g)]
    perm = perm.gather(1, torch.argsort(torch.rand(M, D, generator=g), dim=1))
    perm = perm.reshape(N)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(N)
    return perm.to(device), inv.to(device)


def tile_layout(sample_shape, domain: str = "pixel", tile_size="auto") -> torch.Tensor:
    """Flat indices (M, D) of the entries of each tile ``W`` uses for one sample of ``sample_shape``.

    Row ``m`` lists the entries (into the flattened sample, or its flattened DCT for ``domain="dct"``)
    of tile ``m``; rows and entries inside a row are in a fixed shuffled order (tie-breaking only).
    """
    sample_shape = _sample_shape(tuple(sample_shape))
    if domain not in _DOMAINS:
        raise ValueError(f"domain must be one of {_DOMAINS}, got {domain!r}")
    D, patch = _resolve_tiles(sample_shape, tile_size)
    perm, _ = _layout(sample_shape, domain, D, patch, "cpu")
    return perm.reshape(-1, D)


def _sample_shape(shape: tuple) -> tuple:
    """(N,) for flat samples, (C, H, W) for images; (H, W) -> (1, H, W); (..., H, W) -> (prod, H, W)."""
    if len(shape) == 0:
        raise ValueError("x must have shape (batch, *sample_shape) with a non-empty sample_shape")
    if len(shape) == 1:
        return shape
    if len(shape) == 2:
        return (1,) + shape
    return (math.prod(shape[:-2]),) + shape[-2:]


# ---- W ----------------------------------------------------------------------------------------
def _w_args(x, domains, stages, tile_size, alpha, cycles, max_passes):
    """Checked arguments of ``whiten`` (and of its teaching views ``whiten_stages``, ``in_confidence_sets``)."""
    cdt = _compute_dtype(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (batch, *sample_shape), got {tuple(x.shape)}")
    domains = (domains,) if isinstance(domains, str) else tuple(domains)
    stages = (stages,) if isinstance(stages, str) else tuple(stages)
    for d in domains:
        if d not in _DOMAINS:
            raise ValueError(f"domains must be a sequence of {_DOMAINS}, got {domains!r}")
    for s in stages:
        if s not in _STAGES:
            raise ValueError(f"stages must be a sequence of {_STAGES}, got {stages!r}")
    alpha = _check_alpha(alpha)
    cycles = _positive_int(cycles, "cycles") if cycles != 0 else 0
    max_passes = _positive_int(max_passes, "max_passes")
    sample_shape = _sample_shape(tuple(x.shape[1:]))
    D, patch = _resolve_tiles(sample_shape, tile_size)
    return cdt, domains, stages, alpha, cycles, max_passes, sample_shape, D, patch


def whiten(x: torch.Tensor, *, domains=DEFAULTS["domains"], stages=DEFAULTS["stages"],
           tile_size=DEFAULTS["tile_size"], alpha: float = DEFAULTS["alpha"], cycles: int = DEFAULTS["cycles"],
           max_passes: int = DEFAULTS["max_passes"], normalize: bool = DEFAULTS["normalize"]) -> torch.Tensor:
    """``W(x)``: each sample of ``x`` (batch, *sample_shape) mapped to a nearby typical N(0, I) draw.

    Steps (per sample, batched): ``x <- x / ||x|| * sqrt(N)`` (``normalize``; no mean removal), then
    ``cycles`` times, for each domain in ``domains`` (``"dct"``, ``"pixel"``): transform, apply each
    stage in ``stages`` (``"means"``, ``"energies"``, ``"values"``; each a projection onto a
    confidence set of level ``1 - alpha``), transform back.

    Shapes: ``(B, N)`` flat samples use the 1-D DCT and tiles of ``D`` consecutive entries;
    ``(B, C, H, W)`` images use the 2-D DCT per channel (tiles = radial frequency bands) and
    ``ph x pw`` pixel patches per channel; ``(B, H, W)`` is one channel; more leading sample dims
    are folded into channels.
    ``tile_size``: ``"auto"`` (images: ``ph``, ``pw`` = largest divisors of H, W that are <= 8, so 8 x 8
    patches for 64 x 64 or 16 x 16 images; flat: the largest divisor of N that is <= 64, so N = 2 is a
    single tile of 2 and N = 64 a single tile of 64), an int ``D`` (must tile the sample, else a
    ``ValueError`` lists the sizes that work) or a patch ``(ph, pw)`` for images.

    Small N (the 2-D toys): the sets are then wide; with N = 2 every stage is inactive for any
    input that is not degenerate, so ``W`` reduces to norm matching (the notebook 03 shows why).

    ``max_passes`` caps the repeated 2OS passes of each value stage; a sample that needs more (not
    seen in our tests; the cap is far above the < 20 passes measured) gets a guaranteed-feasible
    fallback point instead of an error, so ``W`` never fails inside a sampler.

    Special inputs: an all-zero sample maps to zeros (no direction to keep; as ``norm_match``).
    NaN/Inf raise ``ValueError``. float32/float64 are computed in their own precision, float16 and
    bfloat16 in float32; the output has the input's dtype. Deterministic (no random numbers drawn).
    """
    cdt, domains, stages, alpha, cycles, max_passes, sample_shape, D, patch = _w_args(
        x, domains, stages, tile_size, alpha, cycles, max_passes)
    B, N = x.shape[0], math.prod(sample_shape)
    if B == 0 or N == 0:
        return x.clone()
    _check_finite(x, "x")
    image = len(sample_shape) == 3
    dev = str(x.device)

    y = x.reshape(B, N).to(cdt)
    norm = y.norm(dim=1, keepdim=True)
    nonzero = norm[:, 0] > 0
    if normalize:
        y = torch.where(nonzero[:, None], y / norm.clamp_min(torch.finfo(cdt).tiny) * math.sqrt(N),
                        torch.zeros_like(y))
    live = nonzero.nonzero().flatten()
    if len(live) < B:                                   # all-zero samples stay zero
        out = torch.zeros_like(y)
        if len(live):
            out[live] = whiten(x[live], domains=domains, stages=stages, tile_size=tile_size,
                               alpha=alpha, cycles=cycles, max_passes=max_passes,
                               normalize=normalize).reshape(len(live), N).to(cdt)
        return out.reshape(x.shape).to(x.dtype)

    shape = (B,) + sample_shape
    for _ in range(cycles):
        for domain in domains:
            perm, inv = _layout(sample_shape, domain, D, patch, dev)
            v = _dct(y.reshape(shape), image).reshape(B, N) if domain == "dct" else y
            T = v[:, perm].reshape(B, N // D, D)
            for stage in stages:
                T = _STAGE_FN[stage](T, alpha, max_passes)
            v = T.reshape(B, N)[:, inv]
            y = _idct(v.reshape(shape), image).reshape(B, N) if domain == "dct" else v
    return y.reshape(x.shape).to(x.dtype)


def whiten_stages(x: torch.Tensor, *, domains=DEFAULTS["domains"], stages=DEFAULTS["stages"],
                  tile_size=DEFAULTS["tile_size"], alpha: float = DEFAULTS["alpha"],
                  cycles: int = DEFAULTS["cycles"], max_passes: int = DEFAULTS["max_passes"],
                  normalize: bool = DEFAULTS["normalize"]):
    """``W`` one stage at a time, for pictures: yields ``(label, y)`` after each step of ``whiten``.

    ``label`` is ``"input"``, ``"normalize"`` (when ``normalize``), then ``"<domain> <stage>"``
    (``"dct means"``, ..., ``"pixel values"``; prefixed ``"cycle k: "`` when ``cycles > 1``); ``y`` has
    ``x``'s shape and dtype and is always in the pixel domain (a DCT stage is transformed back after it
    runs). The last ``y`` equals ``whiten(x, ...)`` up to the rounding of the extra DCT round trips
    (~1e-15 relative in float64). Samples must not be all zero (``whiten`` maps those to zero).
    """
    cdt, domains, stages, alpha, cycles, max_passes, sample_shape, D, patch = _w_args(
        x, domains, stages, tile_size, alpha, cycles, max_passes)
    _check_finite(x, "x")
    B, N = x.shape[0], math.prod(sample_shape)
    y = x.reshape(B, N).to(cdt)
    if (y.norm(dim=1) == 0).any():
        raise ValueError("whiten_stages: x has all-zero samples (whiten maps them to zero; drop them first)")
    out = lambda v: v.reshape(x.shape).to(x.dtype)
    yield "input", out(y)
    if normalize:
        y = y / y.norm(dim=1, keepdim=True) * math.sqrt(N)
        yield "normalize", out(y)
    image, shape, dev = len(sample_shape) == 3, (B,) + sample_shape, str(x.device)
    for c in range(cycles):
        for domain in domains:
            perm, inv = _layout(sample_shape, domain, D, patch, dev)
            for stage in stages:
                v = _dct(y.reshape(shape), image).reshape(B, N) if domain == "dct" else y
                T = _STAGE_FN[stage](v[:, perm].reshape(B, N // D, D), alpha, max_passes)
                v = T.reshape(B, N)[:, inv]
                y = _idct(v.reshape(shape), image).reshape(B, N) if domain == "dct" else v
                yield (f"cycle {c + 1}: " if cycles > 1 else "") + f"{domain} {stage}", out(y)


def in_confidence_sets(x: torch.Tensor, *, domains=DEFAULTS["domains"], stages=DEFAULTS["stages"],
                       tile_size=DEFAULTS["tile_size"], alpha: float = DEFAULTS["alpha"],
                       normalize: bool = DEFAULTS["normalize"], tol: float = 0.0) -> dict:
    """Whether each sample of ``x`` (B, *sample_shape) already lies in each confidence set ``W`` projects onto.

    Returns ``{"<domain> <stage>": (B,) bool, ..., "all": (B,) bool}``; each set is tested on ``x``
    itself (scaled to ``||x|| = sqrt(N)`` when ``normalize``, as ``W`` does first), in the tiling ``W``
    uses: ``means``: tile means ``* sqrt(D)`` within the one-tile order-statistic bounds of ``M`` values;
    ``energies``: the chi-square(D - 1) normal scores of the tile energies, likewise; ``values``: the
    ``M x D`` 2OS set. Averaged over genuine N(0, I) draws this is the *coverage* of each set: alpha
    bounds each order statistic separately, so a whole set holds a draw less often than ``1 - alpha``
    (notebook 03 measures it). A draw inside every set comes out of ``W`` as ``x / ||x|| sqrt(N)``.
    ``tol`` widens every bound (e.g. 1e-9 to test a point a stage just projected, then moved by rounding).
    """
    cdt, domains, stages, alpha, _, _, sample_shape, D, patch = _w_args(x, domains, stages, tile_size, alpha, 1, 1)
    _check_finite(x, "x")
    B, N = x.shape[0], math.prod(sample_shape)
    y = x.reshape(B, N).to(cdt)
    if normalize:
        n = y.norm(dim=1, keepdim=True)
        y = torch.where(n > 0, y / n.clamp_min(torch.finfo(cdt).tiny) * math.sqrt(N), y)
    image, shape = len(sample_shape) == 3, (B,) + sample_shape
    res = {}
    for domain in domains:
        perm, _ = _layout(sample_shape, domain, D, patch, str(x.device))
        v = _dct(y.reshape(shape), image).reshape(B, N) if domain == "dct" else y
        T = v[:, perm].reshape(B, N // D, D)
        for stage in stages:
            if stage == "values":
                ok = in_2os_set(T, alpha, tol)
            elif stage == "means":
                ok = in_2os_set((T.mean(-1) * math.sqrt(D))[:, None, :], alpha, tol)
            else:
                e = (T - T.mean(-1, keepdim=True)).pow(2).sum(-1).double().cpu().numpy()
                z = torch.as_tensor(chi2_to_normal(e, D - 1.0), device=T.device)
                ok = in_2os_set(z[:, None, :], alpha, tol) if D > 1 else torch.ones(B, dtype=torch.bool)
            res[f"{domain} {stage}"] = ok
    res["all"] = torch.stack(list(res.values())).all(0) if res else torch.ones(B, dtype=torch.bool)
    return res


# ---- comparison points ------------------------------------------------------------------------
def norm_match(g: torch.Tensor) -> torch.Tensor:
    """``g / ||g|| * sqrt(N)`` per sample: the noise norm, the gradient's direction (W switched off).

    An all-zero sample maps to zero (no direction to keep).
    """
    flat = g.reshape(g.shape[0], -1)
    norm = flat.norm(dim=1, keepdim=True)
    out = torch.where(norm > 0, flat / norm.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    return (out * math.sqrt(flat.shape[1])).reshape(g.shape)


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Per-sample standardization ``(x - mean) / std`` (population std): zero mean, unit variance.

    A constant (or all-zero) sample maps to zeros. Returns the input dtype.
    """
    cdt = _compute_dtype(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (batch, *sample_shape), got {tuple(x.shape)}")
    _check_finite(x, "x")
    flat = x.reshape(x.shape[0], -1).to(cdt)
    dev = flat - flat.mean(1, keepdim=True)
    std = dev.pow(2).mean(1, keepdim=True).sqrt()
    out = torch.where(std > 0, dev / std.clamp_min(torch.finfo(cdt).tiny), torch.zeros_like(dev))
    return out.reshape(x.shape).to(x.dtype)


def _wgnc_pack(flat: torch.Tensor) -> torch.Tensor:
    """R^N (N even) -> C^{N/2}: orthonormal rfft, DC and Nyquist packed into one coefficient."""
    N = flat.shape[1]
    X = torch.fft.rfft(flat, dim=1, norm="ortho")                    # (B, N/2 + 1)
    c0 = torch.complex(X[:, 0].real, X[:, -1].real) / math.sqrt(2)
    return torch.cat([c0[:, None], X[:, 1:N // 2]], 1)


def _wgnc_unpack(y: torch.Tensor, N: int) -> torch.Tensor:
    dc, ny = y[:, 0].real * math.sqrt(2), y[:, 0].imag * math.sqrt(2)
    X = torch.cat([torch.complex(dc, torch.zeros_like(dc))[:, None], y[:, 1:],
                   torch.complex(ny, torch.zeros_like(ny))[:, None]], 1)
    return torch.fft.irfft(X, n=N, dim=1, norm="ortho")


def _l1_l2_nonneg(m: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Nearest ``s >= 0`` with ``sum s = a``, ``sum s^2 = b`` to each row of ``m`` (..., n) (Hoyer 2004).

    Closed form on the support (``s = a/n + t (m - mean m)``); entries that come out negative are
    zeroed and the rest re-solved (at most n rounds). Rows with equal entries use a fixed spread.
    """
    n = m.shape[-1]
    tiny = torch.finfo(m.dtype).tiny
    fixed = torch.linspace(-1, 1, n, dtype=m.dtype, device=m.device)
    active = torch.ones_like(m, dtype=torch.bool)
    s = m + (a - m.sum(-1, keepdim=True)) / n
    for _ in range(n):
        k = active.sum(-1, keepdim=True).to(m.dtype)
        mid = torch.where(active, a / k, torch.zeros_like(s))
        d = torch.where(active, s - mid, torch.zeros_like(s))
        dn2 = d.pow(2).sum(-1, keepdim=True)
        f = torch.where(active, fixed - (fixed * active).sum(-1, keepdim=True) / k, torch.zeros_like(s))
        d = torch.where(dn2 > 0, d, f)
        dn2 = d.pow(2).sum(-1, keepdim=True).clamp_min(tiny)
        t = ((b - mid.pow(2).sum(-1, keepdim=True)).clamp_min(0) / dn2).sqrt()
        s = mid + t * d
        neg = s < 0
        if not neg.any():
            break
        active = active & ~neg
        s = torch.where(active, s, torch.zeros_like(s))
        k = active.sum(-1, keepdim=True).clamp_min(1).to(m.dtype)
        s = torch.where(active, s - (s.sum(-1, keepdim=True) - a) / k, torch.zeros_like(s))
    return s


def wgnc_project(x: torch.Tensor, block_size: int = 16) -> torch.Tensor:
    """WGNC (Hwang & Sung 2026): per-block l1/l2 equality projection in a compact Fourier domain.

    Each flattened sample (N even) goes to ``y in C^{N/2}`` (orthonormal real FFT; DC and Nyquist packed
    as one complex number), so N(0, I) gives i.i.d. CN(0, 1) coefficients. Each block of
    ``block_size`` coefficients gets moduli ``m`` projected (closed form) onto
    ``{m >= 0, sum m = (sqrt(pi)/2) B, sum m^2 = B}`` (the mean modulus and mean energy of
    CN(0, 1)): ``m' = a/B + t (m - mean m)`` with ``t`` fixing the energy, and where that asks for a
    negative modulus the entry is zeroed and the rest re-solved (Hoyer's l1/l2 projection); phases
    are kept. The inverse map returns to R^N. A block with equal moduli gets a fixed spread
    direction; an all-zero sample maps to zeros. Needs ``(N / 2) % block_size == 0``.
    """
    cdt = _compute_dtype(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (batch, *sample_shape), got {tuple(x.shape)}")
    Bs = _positive_int(block_size, "block_size")
    flat = x.reshape(x.shape[0], -1).to(cdt)
    N = flat.shape[1]
    if N % 2 or (N // 2) % Bs:
        ok = _divisors(N // 2) if N % 2 == 0 else []
        raise ValueError(f"wgnc_project needs an even sample size N with (N/2) % block_size == 0; got "
                         f"N={N}, block_size={block_size}; block sizes that work for this N: {ok}")
    _check_finite(x, "x")
    zero = flat.norm(dim=1) == 0
    y = _wgnc_pack(flat).reshape(flat.shape[0], -1, Bs)
    m = y.abs()
    phase = torch.where(m > 0, y / m.clamp_min(torch.finfo(cdt).tiny), torch.ones_like(y))
    m_new = _l1_l2_nonneg(m, math.sqrt(math.pi) / 2 * Bs, float(Bs))
    out = _wgnc_unpack((phase * m_new).reshape(flat.shape[0], -1), N)
    out = torch.where(zero[:, None], torch.zeros_like(out), out)
    return out.reshape(x.shape).to(x.dtype)


# ---- diagnostics ------------------------------------------------------------------------------
def whiteness(x: torch.Tensor, reference: torch.Tensor | None = None) -> dict:
    """Gaussian-noise diagnostics per sample of ``x`` (B, *shape); each value a (B,) float64 tensor.

    - ``norm2``: ``||x||^2 / N`` (1 for white noise);
    - ``lag1``: lag-1 autocorrelation ``<x_i x_{i+1}> / <x^2>`` (images: mean of rows and columns;
      ~0 for white noise);
    - ``flatness``: spectral flatness, geometric / arithmetic mean of the power spectrum (2-D FFT per
      channel for images, 1-D for flat samples; ``exp(-gamma) = 0.561`` for white noise);
    - ``ks``: Kolmogorov-Smirnov distance of the values, scaled to unit RMS, to N(0, 1) (the shape of
      the marginal; ``~0.87 / sqrt(N)`` for noise);
    - ``cosine``: cosine with ``reference`` (when given).
    """
    if not torch.is_tensor(x) or x.ndim < 2:
        raise ValueError(f"x must have shape (batch, *sample_shape), got {getattr(x, 'shape', type(x))}")
    B = x.shape[0]
    ss = _sample_shape(tuple(x.shape[1:]))
    v = x.reshape((B,) + ss).to(torch.float64)
    flat = v.reshape(B, -1)
    N = flat.shape[1]
    e = flat.pow(2).mean(1)
    den = e.clamp_min(1e-300)
    if len(ss) == 3:
        lag = ((v[..., 1:] * v[..., :-1]).mean((1, 2, 3)) + (v[..., 1:, :] * v[..., :-1, :]).mean((1, 2, 3))) / 2
        P = torch.fft.fft2(v).abs().pow(2).reshape(B, -1)
    else:
        lag = (flat[:, 1:] * flat[:, :-1]).mean(1)
        P = torch.fft.fft(flat).abs().pow(2)
    P = P.clamp_min(1e-300)
    flatness = torch.exp(P.log().mean(1)) / P.mean(1)
    srt = (flat / e.sqrt().clamp_min(1e-300)[:, None]).sort(1).values     # shape only: unit RMS
    cdf = torch.special.ndtr(srt)
    i = torch.arange(1, N + 1, dtype=torch.float64)
    ks = torch.maximum((i / N - cdf).abs().amax(1), (cdf - (i - 1) / N).abs().amax(1))
    out = dict(norm2=e, lag1=lag / den, flatness=flatness, ks=ks)
    if reference is not None:
        r = reference.reshape(B, -1).to(torch.float64)
        d = flat.norm(dim=1) * r.norm(dim=1)
        out["cosine"] = torch.where(d > 0, (flat * r).sum(1) / d.clamp_min(1e-300), torch.zeros_like(d))
    return out
