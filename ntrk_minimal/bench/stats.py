"""Statistics and verdicts over paired seeds (the protocol, section 4: ``ntrk_minimal.bench``).

``d_s = a_s - b_s`` over the n paired seeds: the paired t interval (and a percentile bootstrap), TOST
at a margin stated in advance, and the verdict win / lose / equivalent / undecided.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .store import clean

__all__ = ["LABELS", "finite_values", "paired_diffs", "mean_ci", "fmt_ci", "paired_ci", "tost", "Verdict", "verdict"]

#: the four verdicts (never "tie": an interval that covers 0 is only evidence of too few seeds)
LABELS = ("win", "lose", "equivalent", "undecided")


def finite_values(values) -> np.ndarray:
    v = np.asarray(values, dtype=float).ravel()
    return v[np.isfinite(v)]


def mean_ci(values, level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t ``level`` interval over seeds (NaN half-width for n < 2)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return float(v.mean()) if v.size else float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return float(v.mean()), float(half)


def fmt_ci(values, digits: int = 3) -> str:
    m, h = mean_ci(values)
    return f"{m:.{digits}f} ± {h:.{digits}f}"


def paired_ci(a, b, level: float = 0.95, method: str = "t", n_boot: int = 10000,
              seed: int = 0) -> tuple[float, float, float]:
    """``(mean, lo, hi)`` of the paired difference ``a - b`` (seeds where both are finite):
    Student t, or the percentile bootstrap of the mean (``n_boot`` resamples, fixed ``seed``)."""
    d = paired_diffs(a, b)
    if method not in ("t", "bootstrap"):
        raise ValueError(f"method must be 't' or 'bootstrap', got {method!r}")
    if d.size < 2:
        return (float(d.mean()) if d.size else float("nan")), float("nan"), float("nan")
    if method == "t":
        m, h = mean_ci(d, level)
        return m, m - h, m + h
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return float(d.mean()), float(lo), float(hi)


def paired_diffs(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths (one per seed), got {a.size} and {b.size}")
    ok = np.isfinite(a) & np.isfinite(b)
    return a[ok] - b[ok]


def tost(diffs, margin: float, alpha: float = 0.05) -> tuple[float, bool]:
    """Two one-sided t tests of ``|mean(diffs)| < margin``: ``(p, p < alpha)``; see the module docstring."""
    from scipy import stats

    if not (isinstance(margin, (int, float)) and margin > 0 and math.isfinite(margin)):
        raise ValueError(f"margin must be a finite number > 0 stated in advance, got {margin!r}")
    d = finite_values(diffs)
    if d.size < 2:
        return float("nan"), False
    ### BEGIN SOLUTION
    m, se, df = d.mean(), d.std(ddof=1) / math.sqrt(d.size), d.size - 1
    if se == 0:
        p = 0.0 if abs(m) < margin else 1.0
    else:
        p_lo = stats.t.sf((m + margin) / se, df)         # H0: mu <= -margin
        p_hi = stats.t.cdf((m - margin) / se, df)        # H0: mu >= +margin
        p = float(max(p_lo, p_hi))
    ### END SOLUTION
    return p, bool(p < alpha)


@dataclass
class Verdict:
    """``label`` in win / lose / equivalent / undecided for ``a`` against ``b`` (paired ``a - b``)."""

    label: str
    mean: float
    lo: float
    hi: float
    p_tost: float
    n_seeds: int
    margin: float
    higher_is_better: bool
    a: str = "A"
    b: str = "B"
    key: str = ""
    a_mean: float = float("nan")
    b_mean: float = float("nan")
    ci: str = "t"
    level: float = 0.95
    boot_lo: float = float("nan")
    boot_hi: float = float("nan")
    note: str = ""

    def __str__(self):
        direction = "higher is better" if self.higher_is_better else "lower is better"
        s = (f"{self.label}: {self.a} - {self.b} = {self.mean:+.4g} [{self.lo:+.4g}, {self.hi:+.4g}] "
             f"({self.level:.0%} paired {self.ci} CI, {self.n_seeds} seeds; {direction}); TOST p = "
             f"{self.p_tost:.3g} at margin ±{self.margin:g}")
        return s + (f"; {self.note}" if self.note else "")

    def to_dict(self) -> dict:
        return clean(dataclasses.asdict(self))


def verdict(a, b, margin: float, higher_is_better: bool, level: float = 0.95, ci: str = "t",
            alpha: float = 0.05, names=("A", "B"), key: str = "", min_coverage: float = 1.0) -> Verdict:
    """Paired verdict of ``a`` against ``b`` (one value per seed, NaN = missing on that seed).

    A seed is missing when a method does not reach the level there. Unless at least ``min_coverage``
    of the seeds are paired (default: all), the label is ``undecided``: a verdict on the seeds that
    happen to reach the level would select seeds. The numbers on the paired seeds are still given."""
    if level <= 0 or level >= 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    a_, b_ = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    d = paired_diffs(a_, b_)
    p, passed = tost(d, margin, alpha)
    m, lo, hi = paired_ci(a_, b_, level, ci)
    _, blo, bhi = paired_ci(a_, b_, level, "bootstrap")
    notes = []
    if d.size < a_.size:
        notes.append(f"{a_.size - d.size} of {a_.size} seeds missing (level not reached)")
    good = (lambda x: x > 0) if higher_is_better else (lambda x: x < 0)
    if d.size < 2:
        label = "undecided"
        notes.append("fewer than 2 paired seeds")
    elif d.size < min_coverage * a_.size:
        label = "undecided"
        notes.append(f"undecided because the level is missing on some seeds (required: {min_coverage:.0%} of them)")
    ### BEGIN SOLUTION
    elif good(lo) and good(hi):
        label = "win"
    elif good(-lo) and good(-hi):
        label = "lose"
    elif passed:
        label = "equivalent"
    else:
        label = "undecided"
    ### END SOLUTION
    if label in ("win", "lose") and passed:
        notes.append("the difference is also within the equivalence margin")
    ok = np.isfinite(a_) & np.isfinite(b_)
    return Verdict(label, m, lo, hi, p, int(d.size), float(margin), bool(higher_is_better), names[0], names[1],
                   key, float(a_[ok].mean()) if ok.any() else float("nan"),
                   float(b_[ok].mean()) if ok.any() else float("nan"), ci, level, blo, bhi, "; ".join(notes))
