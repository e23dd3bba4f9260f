"""How we measure samplers (spec section 7): reward, distance to the exact target, fidelity, eta.

All functions take torch tensors (B, *shape) and return Python floats or 1-D tensors.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["energy_distance", "histogram_kl", "hdr_threshold", "share_in_hdr", "eta_energy",
           "eta_normality", "cosine", "mean_pairwise_distance"]


def _flat(x: torch.Tensor, name: str) -> torch.Tensor:
    if not torch.is_tensor(x) or x.ndim < 2:
        raise ValueError(f"{name} must be a tensor of shape (n, ...), got {getattr(x, 'shape', type(x))}")
    return x.reshape(x.shape[0], -1).to(torch.float64)


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """``2 E||X - Y|| - E||X - X'|| - E||Y - Y'||`` (V-statistic; 0 iff the laws agree)."""
    x, y = _flat(x, "x"), _flat(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).mean()
    yy = torch.cdist(y, y).mean()
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
