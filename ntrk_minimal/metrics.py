"""How we measure samplers (docs/METHOD.md section 7): reward, distance to the exact target, fidelity, eta.

All functions take torch tensors (B, *shape) and return Python floats or 1-D tensors.

Fidelity metrics with known small-sample behaviour (docs/METHOD.md section 7; the protocol in
``ntrk_minimal.bench`` uses them; its docstring states when to use which):

* ``kid``: the kernel inception distance of Binkowski et al. (2018), the *unbiased* MMD^2 with the
  cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3`` on features (n, d)::

      KID = 1/(m(m-1)) sum_{i!=j} k(x_i, x_j) + 1/(n(n-1)) sum_{i!=j} k(y_i, y_j)
            - 2/(mn) sum_{i,j} k(x_i, y_j)

  ``E[KID] = MMD^2`` exactly, so two samples of one law score 0 on average at any n (a single
  estimate can be negative). The V-statistic (diagonal terms kept, ``unbiased=False``) is biased
  upward by about ``(E k(x,x) - E k(x,x')) (1/m + 1/n)``. ``KID(f_ref)`` caches the reference term.
* ``frechet_distance``: ``||m_1 - m_2||^2 + tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2})``
  of the two feature sets' means and covariances; biased upward by ``~ k / n`` (Chong & Forsyth 2020:
  the bias depends on the generator's own covariance, so FD at small n can rank models wrongly).
* ``fd_infinity``: FD at several subsample sizes ``n_j``, the least-squares line
  ``FD(n) = FD_inf + k / n`` and its intercept ``FD_inf`` (Chong & Forsyth 2020, "Effectively Unbiased
  FID and Inception Score and where to find them").
* ``energy_distance``: ``2 E||X - Y|| - E||X - X'|| - E||Y - Y'||`` to exact ``p*`` samples (2-D toys);
  ``unbiased=True`` drops the zero diagonal terms (U-statistic, mean 0 for equal laws).
* ``real_vs_real``: any of these between two disjoint real (or exact) sets of the same size: the floor
  a generated set is compared with.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["energy_distance", "histogram_kl", "hdr_threshold", "share_in_hdr", "eta_energy",
           "eta_normality", "cosine", "mean_pairwise_distance", "kid", "KID", "frechet_distance",
           "gaussian_frechet", "fd_infinity", "real_vs_real", "poly_kernel_sum", "mmd2_poly"]


def _flat(x: torch.Tensor, name: str) -> torch.Tensor:
    if not torch.is_tensor(x) or x.ndim < 2:
        raise ValueError(f"{name} must be a tensor of shape (n, ...), got {getattr(x, 'shape', type(x))}")
    return x.reshape(x.shape[0], -1).to(torch.float64)


def energy_distance(x: torch.Tensor, y: torch.Tensor, unbiased: bool = False) -> float:
    """``2 E||X - Y|| - E||X - X'|| - E||Y - Y'||`` (0 iff the laws agree).

    ``unbiased=False``: the V-statistic (means over all pairs, zero diagonal included: >= 0, biased
    upward by ``~ (E||X - X'|| / m + E||Y - Y'|| / n)``, which depends on each set's spread).
    ``unbiased=True``: the U-statistic (within-set means over ``i != j``): mean 0 for equal laws.
    """
    x, y = _flat(x, "x"), _flat(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    m, n = x.shape[0], y.shape[0]
    if unbiased and min(m, n) < 2:
        raise ValueError(f"the unbiased energy distance needs >= 2 samples per set, got {m} and {n}")
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).sum() / (m * (m - 1) if unbiased else m * m)
    yy = torch.cdist(y, y).sum() / (n * (n - 1) if unbiased else n * n)
    return float(2 * xy - xx - yy)


def histogram_kl(x: torch.Tensor, log_density, lim: float = 4.0, bins: int = 20,
                 pseudo_count: float = 0.1) -> float:
    """``KL(p || q)`` on a ``bins x bins`` grid over ``[-lim, lim]^2`` (2-D only).

    ``p``: the exact density (``log_density`` of (n, 2) points) integrated by the midpoint rule;
    ``q``: the histogram of ``x`` with ``pseudo_count`` added to every bin (so missing modes cost a
    finite, large amount). Mass outside the box is ignored.
    """
    x = _flat(x, "x")
    if x.shape[1] != 2:
        raise ValueError(f"histogram_kl is defined for 2-D samples, got dimension {x.shape[1]}")
    edges = torch.linspace(-lim, lim, bins + 1, dtype=torch.float64)
    mid = 0.5 * (edges[1:] + edges[:-1])
    gx, gy = torch.meshgrid(mid, mid, indexing="ij")
    logp = log_density(torch.stack([gx.flatten(), gy.flatten()], -1).to(x.dtype)).to(torch.float64)
    p = torch.softmax(logp, 0)
    H, _, _ = np.histogram2d(x[:, 0].numpy(), x[:, 1].numpy(), bins=[edges.numpy(), edges.numpy()])
    q = torch.as_tensor(H.flatten()) + pseudo_count
    q = q / q.sum()
    return float((p * (p.clamp_min(1e-300).log() - q.log())).sum())


def hdr_threshold(log_density, base_samples: torch.Tensor, level: float = 0.99) -> float:
    """Log-density level above which a fraction ``level`` of the base model's mass lies."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    lp = log_density(base_samples)
    return float(torch.quantile(lp.to(torch.float64), 1 - level))


def share_in_hdr(x: torch.Tensor, log_density, threshold: float) -> float:
    """Share of samples inside the base model's high-density region ``{log p_0 >= threshold}``."""
    return float((log_density(x) >= threshold).to(torch.float64).mean())


def eta_energy(eta: torch.Tensor) -> torch.Tensor:
    """``E||eta_t||^2 / d`` per step for ``eta`` of shape (T, B, *shape): 1 for white noise."""
    T, B = eta.shape[:2]
    return (eta.reshape(T, B, -1).to(torch.float64) ** 2).mean(dim=(1, 2))


def eta_normality(eta: torch.Tensor, max_values: int = 20000) -> torch.Tensor:
    """Per-step Kolmogorov-Smirnov p-value of the entries of ``eta_t`` against N(0, 1).

    Small p-values mean the step's perturbation does not look like white Gaussian noise.
    At most ``max_values`` entries per step are tested (the first ones, deterministic).
    """
    from scipy import stats

    T = eta.shape[0]
    flat = eta.reshape(T, -1).to(torch.float64).numpy()[:, :max_values]
    return torch.tensor([stats.kstest(v, "norm").pvalue for v in flat], dtype=torch.float64)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine similarity of two (B, *shape) tensors (0 where either is zero)."""
    a, b = _flat(a, "a"), _flat(b, "b")
    den = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(den > 0, (a * b).sum(1) / den.clamp_min(1e-300), torch.zeros_like(den))


def mean_pairwise_distance(x: torch.Tensor) -> float:
    """Diversity: mean Euclidean distance between distinct samples."""
    x = _flat(x, "x")
    n = x.shape[0]
    if n < 2:
        raise ValueError("mean_pairwise_distance needs at least 2 samples")
    return float(torch.cdist(x, x).sum() / (n * (n - 1)))


# ---- fidelity on features: KID, FD, FD-infinity, the real-vs-real floor ---------------------------
def _features(f, name: str) -> torch.Tensor:
    if not torch.is_tensor(f) or f.ndim != 2:
        raise ValueError(f"{name} must be a feature tensor of shape (n, d), got {getattr(f, 'shape', type(f))}")
    if not torch.isfinite(f).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return f.detach().to("cpu", torch.float64)


def poly_kernel_sum(a: torch.Tensor, b: torch.Tensor, gamma: float, coef0: float, degree: int,
              drop_diagonal: bool, block: int = 2048) -> float:
    """``sum_{i,j} (gamma a_i.b_j + coef0)^degree`` in row blocks (``i != j`` when ``drop_diagonal``)."""
    total = 0.0
    for s in range(0, a.shape[0], block):
        ### BEGIN SOLUTION
        k = (gamma * a[s:s + block] @ b.T + coef0) ** degree
        total += float(k.sum())
        if drop_diagonal:
            rows = torch.arange(s, min(s + block, a.shape[0]))
            total -= float(k[rows - s, rows].sum())
        ### END SOLUTION
    return total


def mmd2_poly(x, y, gamma, coef0, degree, unbiased) -> float:
    """MMD^2 between feature sets ``x`` (m, d) and ``y`` (n, d) with the polynomial kernel
    ``(gamma x.y + coef0)^degree``: the U-statistic (``unbiased``) or the V-statistic (see ``kid``)."""
    m, n = x.shape[0], y.shape[0]
    ### BEGIN SOLUTION
    kxx = poly_kernel_sum(x, x, gamma, coef0, degree, unbiased) / (m * (m - 1) if unbiased else m * m)
    kyy = poly_kernel_sum(y, y, gamma, coef0, degree, unbiased) / (n * (n - 1) if unbiased else n * n)
    kxy = poly_kernel_sum(x, y, gamma, coef0, degree, False) / (m * n)
    return kxx + kyy - 2 * kxy
    ### END SOLUTION


def kid(f_x: torch.Tensor, f_y: torch.Tensor, degree: int = 3, gamma: float | None = None,
        coef0: float = 1.0, subsets: int | None = None, subset_size: int | None = None,
        generator: torch.Generator | None = None, unbiased: bool = True):
    """Kernel inception distance: the unbiased MMD^2 with ``k(x, y) = (gamma x.y + coef0)^degree``.

    Args:
        f_x, f_y: features (m, d) and (n, d) (e.g. generated and reference).
        degree, gamma, coef0: the polynomial kernel; ``gamma=None`` means ``1 / d`` (Binkowski et al.).
        subsets, subset_size: if ``subsets`` is given, the estimate is averaged over that many random
            subsets of ``subset_size`` rows of each set (drawn without replacement with ``generator``),
            as in the reference implementation; then ``(mean, sd over subsets)`` is returned.
        unbiased: ``False`` gives the V-statistic (diagonal kept), only for comparison.

    Returns: the estimate (float), or ``(mean, sd)`` with ``subsets``. Can be negative (unbiased).
    """
    x, y = _features(f_x, "f_x"), _features(f_y, "f_y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"f_x and f_y must have the same feature dimension, got {x.shape[1]} and {y.shape[1]}")
    if not isinstance(degree, int) or degree < 1:
        raise ValueError(f"degree must be a positive int, got {degree!r}")
    gamma = 1.0 / x.shape[1] if gamma is None else float(gamma)
    if subsets is None:
        if min(len(x), len(y)) < 2:
            raise ValueError(f"kid needs >= 2 samples per set, got {len(x)} and {len(y)}")
        return mmd2_poly(x, y, gamma, float(coef0), degree, unbiased)
    if not isinstance(subsets, int) or subsets < 1:
        raise ValueError(f"subsets must be a positive int, got {subsets!r}")
    size = min(len(x), len(y)) if subset_size is None else int(subset_size)
    if not 2 <= size <= min(len(x), len(y)):
        raise ValueError(f"subset_size must lie in [2, {min(len(x), len(y))}], got {subset_size!r}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    vals = []
    for _ in range(subsets):
        ix = torch.randperm(len(x), generator=g)[:size]
        iy = torch.randperm(len(y), generator=g)[:size]
        vals.append(mmd2_poly(x[ix], y[iy], gamma, float(coef0), degree, unbiased))
    v = np.asarray(vals)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


class KID:
    """``KID(f_ref)(f_x) == kid(f_x, f_ref)`` with the reference's own kernel term computed once:
    for a world that scores many generated sets against one fixed (large) reference set."""

    def __init__(self, f_ref: torch.Tensor, degree: int = 3, gamma: float | None = None, coef0: float = 1.0):
        self.ref = _features(f_ref, "f_ref")
        if len(self.ref) < 2:
            raise ValueError("KID needs >= 2 reference samples")
        self.degree, self.coef0 = int(degree), float(coef0)
        self.gamma = 1.0 / self.ref.shape[1] if gamma is None else float(gamma)
        n = len(self.ref)
        self.kyy = poly_kernel_sum(self.ref, self.ref, self.gamma, self.coef0, self.degree, True) / (n * (n - 1))

    def __call__(self, f_x: torch.Tensor) -> float:
        x = _features(f_x, "f_x")
        if x.shape[1] != self.ref.shape[1] or len(x) < 2:
            raise ValueError(f"f_x must be (>= 2, {self.ref.shape[1]}), got {tuple(x.shape)}")
        m, n = len(x), len(self.ref)
        kxx = poly_kernel_sum(x, x, self.gamma, self.coef0, self.degree, True) / (m * (m - 1))
        kxy = poly_kernel_sum(x, self.ref, self.gamma, self.coef0, self.degree, False) / (m * n)
        return kxx + self.kyy - 2 * kxy


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def gaussian_frechet(m1, s1, m2, s2) -> float:
    """Closed form ``||m1 - m2||^2 + tr(S1 + S2 - 2 (S1^{1/2} S2 S1^{1/2})^{1/2})`` (the 2-Wasserstein
    distance squared between two Gaussians); ``(S1 S2)^{1/2}`` and the symmetric form have equal trace,
    the symmetric one is computed by ``eigh`` (no complex round-off on near-singular covariances)."""
    m1, m2 = np.asarray(m1, dtype=float), np.asarray(m2, dtype=float)
    s1, s2 = np.atleast_2d(np.asarray(s1, dtype=float)), np.atleast_2d(np.asarray(s2, dtype=float))
    r1 = _sqrt_psd(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross)


def frechet_distance(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """``||m1 - m2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})`` between two feature sets (n, d)
    (sample means and unbiased covariances; ``gaussian_frechet`` of them). Biased upward ~ k/n."""
    if not torch.is_tensor(f1) or not torch.is_tensor(f2) or f1.ndim != 2 or f2.ndim != 2 \
            or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"features must be (n, d) with equal d, got {tuple(getattr(f1, 'shape', ()))} "
                         f"and {tuple(getattr(f2, 'shape', ()))}")
    if len(f1) < 2 or len(f2) < 2:
        raise ValueError("frechet_distance needs at least 2 samples per set")
    a, b = _features(f1, "f1").numpy(), _features(f2, "f2").numpy()
    return gaussian_frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def fd_infinity(f_gen: torch.Tensor, f_ref: torch.Tensor, ns=None, generator: torch.Generator | None = None,
                reps: int = 1) -> dict:
    """FD extrapolated to infinitely many generated samples (Chong & Forsyth 2020).

    For each ``n_j`` in ``ns`` (default: 8 sizes evenly spaced in ``1/n`` between ``len(f_gen) / 4`` and
    ``len(f_gen)``), FD of ``reps`` random subsets of ``n_j`` generated rows (without replacement)
    against the full ``f_ref``; then least squares ``FD(n) = FD_inf + k / n``.
    The reference set's own bias is *not* removed: keep ``f_ref`` large (the full reference).

    Returns ``{"fd_inf", "slope" (k), "ns", "fd" (mean FD per n), "residual_sd"}``.
    """
    x = _features(f_gen, "f_gen")
    N = len(x)
    if ns is None:
        lo = max(N // 4, 2)
        ns = sorted({int(round(1 / v)) for v in np.linspace(1 / lo, 1 / N, 8)})
    ns = [int(v) for v in ns]
    if len(ns) < 2 or min(ns) < 2 or max(ns) > N:
        raise ValueError(f"ns must hold >= 2 sizes in [2, {N}], got {ns}")
    if not isinstance(reps, int) or reps < 1:
        raise ValueError(f"reps must be a positive int, got {reps!r}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    r = _features(f_ref, "f_ref").numpy()
    if r.shape[1] != x.shape[1] or len(r) < 2:
        raise ValueError(f"f_ref must be (>= 2, {x.shape[1]}), got {tuple(r.shape)}")
    m_ref, s_ref = r.mean(0), np.cov(r, rowvar=False)                 # the reference's moments, once
    fds = []
    for n in ns:
        vals = []
        for _ in range(reps):
            a = x[torch.randperm(N, generator=g)[:n]].numpy()
            vals.append(gaussian_frechet(a.mean(0), np.cov(a, rowvar=False), m_ref, s_ref))
        fds.append(float(np.mean(vals)))
    A = np.stack([np.ones(len(ns)), 1.0 / np.asarray(ns, dtype=float)], 1)
    coef, *_ = np.linalg.lstsq(A, np.asarray(fds), rcond=None)
    resid = np.asarray(fds) - A @ coef
    return {"fd_inf": float(coef[0]), "slope": float(coef[1]), "ns": ns, "fd": fds,
            "residual_sd": float(resid.std(ddof=min(2, len(ns) - 1))) if len(ns) > 2 else 0.0}


def real_vs_real(metric, real: torch.Tensor, n: int, generator: torch.Generator,
                 reference: torch.Tensor | None = None) -> float:
    """The floor of a fidelity ``metric(a, b)`` at sample size ``n``: with ``reference``, ``metric`` of
    ``n`` real rows (drawn without replacement; they must not be part of ``reference``) against it;
    without, ``metric`` between two disjoint random sets of ``n`` rows of ``real``."""
    if not torch.is_tensor(real) or real.ndim < 2:
        raise ValueError(f"real must be a tensor of shape (N, ...), got {getattr(real, 'shape', type(real))}")
    need = n if reference is not None else 2 * n
    if not isinstance(n, int) or n < 2 or need > len(real):
        raise ValueError(f"n must be an int with 2 <= n and {'n' if reference is not None else '2n'} <= "
                         f"len(real) = {len(real)}, got {n!r}")
    idx = torch.randperm(len(real), generator=generator)
    a = real[idx[:n]]
    b = reference if reference is not None else real[idx[n:2 * n]]
    return float(metric(a, b))
