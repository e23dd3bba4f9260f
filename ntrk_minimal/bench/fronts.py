"""Fronts: a method over its knob grid on a seed set, extended until it brackets a level, and read there
(the protocol, sections 1-3: ``ntrk_minimal.bench``).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .spec import TIMING_KEYS, CostCounter, Method, World
from .store import clean, nan_to_none

__all__ = ["Front", "run_point", "front", "extend_front", "crossings", "Matched", "at_level", "at_knob",
           "knob_at_level", "pick", "knob_stability"]


@dataclass
class Front:
    """One method on one seed set: ``values[i][key][s]`` is metric ``key`` at ``knobs[i]`` on ``seeds[s]``."""

    method: str
    knob: str | None
    budget: Any
    seeds: list
    n: int
    knobs: list
    values: list
    limit: tuple = (None, None)
    notes: list = field(default_factory=list)
    ends: dict = field(default_factory=dict)      # "lo"/"hi" -> why that end cannot be extended

    def keys(self) -> list[str]:
        return list(self.values[0]) if self.values else []

    def array(self, key: str) -> np.ndarray:
        """(points, seeds) float array of ``key`` (NaN where missing)."""
        if self.values and key not in self.values[0]:
            raise KeyError(f"front of {self.method!r} has no metric {key!r}; it has {self.keys()}")
        return np.asarray([v[key] for v in self.values], dtype=float).reshape(len(self.values), len(self.seeds))

    def mean(self, key: str) -> np.ndarray:
        return np.nanmean(self.array(key), axis=1)

    def sd(self, key: str) -> np.ndarray:
        a = self.array(key)
        return a.std(axis=1, ddof=1) if a.shape[1] > 1 else np.zeros(a.shape[0])

    def index(self, knob) -> int:
        for i, k in enumerate(self.knobs):
            if (k is None and knob is None) or (k is not None and knob is not None
                                                 and math.isclose(k, knob, rel_tol=1e-9)):
                return i
        raise KeyError(f"knob {knob!r} is not a point of the front of {self.method!r} ({self.knobs})")

    def to_dict(self) -> dict:
        return {"method": self.method, "knob": self.knob, "budget": self.budget, "seeds": list(self.seeds),
                "n": self.n, "knobs": list(self.knobs), "values": self.values,
                "limit": [None if v is None else "inf" if math.isinf(v) else v for v in self.limit],
                "notes": list(self.notes), "ends": dict(self.ends)}

    @classmethod
    def from_dict(cls, d: dict) -> "Front":
        vals = [{k: [float("nan") if v is None else v for v in vs] for k, vs in p.items()} for p in d["values"]]
        limit = tuple(float("inf") if v == "inf" else v for v in d["limit"])
        return cls(d["method"], d["knob"], d["budget"], list(d["seeds"]), d["n"], list(d["knobs"]), vals,
                   limit, list(d["notes"]), dict(d.get("ends", {})))


def run_point(world: World, method: Method, knob_value, seed: int, n: int, cache=None) -> dict:
    """One method at one knob on one seed: ``world.evaluate`` of its samples plus extras and cost.
    ``cache`` (a ``store.PointCache``): reuse a stored result of this point, or store this one."""
    if cache is not None:
        return cache.point(world, method, knob_value, seed, n, lambda: run_point(world, method, knob_value, seed, n))
    sync = getattr(world, "sync", None)
    counter = CostCounter(world.model, sync)
    try:
        w = dataclasses.replace(world, model=counter)
    except TypeError:                       # a duck-typed world
        w = copy.copy(world)
        w.model = counter
    x_T, g = world.start(seed, n)
    kw = dict(method.fixed)
    if method.knob is not None:
        kw[method.knob] = int(knob_value) if method.integer else float(knob_value)
    if sync is not None:
        sync()
    t0 = time.perf_counter()
    out = method.run(w, x_T, g, **kw)
    if sync is not None:
        sync()
    wall = time.perf_counter() - t0
    res, extra = out if isinstance(out, tuple) else (out, {})
    if counter.forward_rows == 0:
        raise RuntimeError(f"method {method.name!r} never called world.model: call the model the protocol "
                           f"passes in (world.model), or its cost cannot be counted")
    vals = {k: float(v) for k, v in world.evaluate(res.x0, seed).items()}
    vals.update({k: float(v) for k, v in extra.items()})
    vals.update(nfe=counter.forward_rows / n, backward=counter.backward_rows / n, wall_s=wall / n,
                model_s=counter.model_s / n)
    return vals


def _eval_point(world, method, knob, seeds, n, bar=None, cache=None) -> dict:
    per_seed = []
    for s in seeds:
        per_seed.append(run_point(world, method, knob, s, n, cache))
        if bar is not None:
            bar.update()
    keys = list(per_seed[0])
    return {k: [p.get(k, float("nan")) for p in per_seed] for k in keys}


def front(world: World, method: Method, seeds, n: int, grid=None, x_key: str | None = None, level=None,
          max_extend: int = 8, pad: int = 1, progress: bool = False, cache=None) -> Front:
    """Evaluate ``method`` at every knob of ``grid`` (default ``method.grid``) on every seed; with a
    ``level`` (a number, or ``"min"``/``"max"``) on ``x_key`` (default ``world.fidelity``), extend the
    grid until it brackets the level (see the module docstring, section 1)."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must not be empty")
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n (samples per run) must be an int >= 2, got {n!r}")
    knobs = [None] if method.knob is None else sorted(method.grid if grid is None else grid)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(knobs) * len(seeds), desc=method.name, leave=False)
    values = [_eval_point(world, method, k, seeds, n, bar, cache) for k in knobs]
    if bar is not None:
        bar.close()
    fr = Front(method.name, method.knob, method.budget, seeds, int(n), knobs, values, tuple(method.limit))
    if level is not None and method.knob is not None:
        extend_front(fr, world, method, x_key or world.fidelity, level, max_extend, pad, cache)
    return fr


def crossings(x: np.ndarray, L: float) -> list[int]:
    """Segments ``i`` (between points i and i+1) where ``x`` crosses or touches ``L``."""
    out = []
    for i in range(len(x) - 1):
        a, b = x[i] - L, x[i + 1] - L
        if np.isfinite(a) and np.isfinite(b) and a * b <= 0:
            out.append(i)
    return out


def _best_index(m: np.ndarray, mode: str) -> int:
    return int(np.nanargmin(m) if mode == "min" else np.nanargmax(m))


def _needs(fr: Front, x_key: str, level, pad: int):
    """``(end to extend, why)`` for ``level`` to be bracketed, or ``(None, "")``. ``why``: ``"level"``
    (not reached / optimum on the edge), ``"pad"`` (no spare point beyond), ``"seed"`` (a seed misses)."""
    m, P = fr.mean(x_key), len(fr.knobs)
    if isinstance(level, str):
        i = _best_index(m, level)
        if i == 0 or i == P - 1:
            return ("lo" if i == 0 else "hi"), "level"
        return ("lo", "pad") if i - pad < 0 else ("hi", "pad") if i + pad > P - 1 else (None, "")
    cross = crossings(m, level)
    if not cross:
        return ("lo" if abs(m[0] - level) <= abs(m[-1] - level) else "hi"), "level"
    i = cross[0]
    if i - pad < 0:
        return "lo", "pad"
    if i + 1 + pad > P - 1:
        return "hi", "pad"
    if x_key in TIMING_KEYS:                                   # read along the mean front (at_level)
        return None, ""
    low_end = "lo" if m[0] < m[-1] else "hi"                   # the end with the smaller x
    for s in range(len(fr.seeds)):
        xs = fr.array(x_key)[:, s]
        if not crossings(xs, level):
            above = np.nanmin(xs) > level
            return (low_end if above else ("hi" if low_end == "lo" else "lo")), "seed"
    return None, ""


def _next_knob(fr: Front, method: Method, side: str):
    """The next grid value at ``side``, or ``(None, reason)`` when a natural limit is reached."""
    lo, hi = method.limit
    r = method.ratio
    if side == "hi":
        edge = fr.knobs[-1]
        new = edge * r
        if method.integer:
            new = max(int(math.ceil(new)), int(edge) + 1)
        if hi is not None and math.isfinite(hi) and new >= hi * (1 - 1e-12):
            if edge >= hi * (1 - 1e-12):
                return None, f"at the natural limit {method.knob} = {hi:g} {method.limit_notes[1]}".rstrip()
            new = int(hi) if method.integer else float(hi)
        return float(f"{new:.12g}") if not method.integer else new, ""
    edge = fr.knobs[0]
    new = edge / r
    if method.integer:
        new = min(int(math.floor(new)), int(edge) - 1)
        if new < 1:
            return None, f"at the smallest integer {method.knob} = {edge}"
    if lo is not None and lo > 0 and new <= lo * (1 + 1e-12):
        if edge <= lo * (1 + 1e-12):
            return None, f"at the natural limit {method.knob} = {lo:g} {method.limit_notes[0]}".rstrip()
        new = int(lo) if method.integer else float(lo)
    return float(f"{new:.12g}") if not method.integer else new, ""


def extend_front(fr: Front, world: World, method: Method, x_key: str, level, max_extend: int = 8,
                 pad: int = 1, cache=None) -> str:
    """Add grid points to ``fr`` (in place) until ``level`` on ``x_key`` is bracketed; returns and
    records (in ``fr.notes``) what happened: ``"bracketed"``, or why not."""
    if isinstance(level, str) and level not in ("min", "max"):
        raise ValueError(f"level must be a number, 'min' or 'max', got {level!r}")
    tag = f"{x_key} {'at its ' + level if isinstance(level, str) else '= %.6g' % level}"
    blocked, added = {}, 0
    while True:
        side, why = _needs(fr, x_key, level, pad)
        if side is None:
            status = "bracketed"
            break
        if side in blocked:
            reason, end = blocked[side], "lower" if side == "lo" else "upper"
            natural = "natural limit" in reason or "saturated" in reason
            if why == "pad":
                status = f"bracketed, without a spare point beyond it at the {end} end ({reason})"
            elif why == "seed":
                status = f"bracketed by the mean front but not on every seed ({end} end: {reason})"
            elif isinstance(level, str) and natural:
                status = f"optimum at the {end} edge, {reason}: allowed"
            else:
                status = f"NOT bracketed ({end} end: {reason})"
            break
        if added >= max_extend:
            status = f"NOT bracketed after {added} added points (max_extend)"
            break
        new, reason = _next_knob(fr, method, side)
        if new is None:
            blocked[side] = fr.ends[side] = reason
            continue
        m_before = fr.mean(x_key)                       # noqa: the front before this point
        edge_i = 0 if side == "lo" else -1
        vals = _eval_point(world, method, new, fr.seeds, fr.n, cache=cache)
        if side == "lo":
            fr.knobs.insert(0, new)
            fr.values.insert(0, vals)
        else:
            fr.knobs.append(new)
            fr.values.append(vals)
        added += 1
        fr.notes.append(f"extended {'down' if side == 'lo' else 'up'} to {method.knob} = {new:g} for {tag}")
        m_new, sd = fr.mean(x_key), fr.sd(x_key)
        new_i, old_i = (0, 1) if side == "lo" else (-1, -2)
        se = math.sqrt((sd[new_i] ** 2 + sd[old_i] ** 2) / len(fr.seeds))
        lim = method.limit[0 if side == "lo" else 1]
        asymptotic = lim is not None and (lim == 0 or math.isinf(lim))
        if asymptotic and abs(m_new[new_i] - m_new[old_i]) <= se:
            blocked[side] = fr.ends[side] = (f"saturated toward the natural limit {method.knob} -> {lim:g} "
                             f"{method.limit_notes[0 if side == 'lo' else 1]}").rstrip()
        elif (not isinstance(level, str) and not crossings(m_new, level)
              and abs(m_new[new_i] - level) > abs(m_before[edge_i] - level) + se):
            blocked[side] = "the front moves away from the level there"
    fr.notes.append(f"{tag}: {status}")
    return status


# ---- matched comparison --------------------------------------------------------------------------------
@dataclass
class Matched:
    """Per-seed values at a level: ``values[s]`` (NaN = missing), ``knobs[s]``, ``flags[s]`` ('' = clean)."""

    values: np.ndarray
    knobs: np.ndarray
    flags: list
    seeds: list

    @property
    def missing(self) -> int:
        return int(np.isnan(self.values).sum())

    def to_dict(self) -> dict:
        return {"values": clean(self.values.tolist()), "knobs": clean(self.knobs.tolist()),
                "flags": list(self.flags), "seeds": list(self.seeds)}


def _interp(x, y, logk, L, i):
    dx = x[i + 1] - x[i]
    frac = 0.0 if dx == 0 else (L - x[i]) / dx
    return y[i] + frac * (y[i + 1] - y[i]), logk[i] + frac * (logk[i + 1] - logk[i])


def at_level(fr: Front, x_key: str, level: float, y_key: str, shared_x: bool | None = None) -> Matched:
    """Per-seed ``y_key`` at ``x_key = level``, piecewise linear in x along the knob-sorted front;
    NaN with a ``"refused: ..."`` flag where a seed's front does not reach the level (no extrapolation).

    ``shared_x``: read every seed along the *mean* x front (default for timing keys: a wall time is
    a property of the method and knob; its seed-to-seed differences are machine noise)."""
    if fr.knob is None:
        raise ValueError(f"{fr.method!r} has no knob: there is no front to interpolate; use its own values")
    if len(fr.knobs) < 2:
        raise ValueError(f"front of {fr.method!r} has {len(fr.knobs)} point(s): cannot interpolate")
    X, Y = fr.array(x_key), fr.array(y_key)
    if shared_x if shared_x is not None else x_key in TIMING_KEYS:
        X = np.repeat(np.nanmean(X, axis=1, keepdims=True), X.shape[1], axis=1)
    logk = np.log(np.asarray(fr.knobs, dtype=float))
    m = np.nanmean(X, axis=1)
    mc = crossings(m, level)
    ref = _interp(m, m, logk, level, mc[0])[1] if mc else None
    vals, ks, flags = [], [], []
    for s in range(len(fr.seeds)):
        x, y = X[:, s], Y[:, s]
        cross = crossings(x, level)
        if not cross:
            lo, hi = np.nanmin(x), np.nanmax(x)
            vals.append(np.nan)
            ks.append(np.nan)
            flags.append(f"refused: {x_key} = {level:.6g} outside this seed's range [{lo:.6g}, {hi:.6g}]")
            continue
        cands = [_interp(x, y, logk, level, i) for i in cross]
        flag = ""
        if len({round(c[1], 12) for c in cands}) > 1:
            j = int(np.argmin([abs(c[1] - ref) for c in cands])) if ref is not None else 0
            flag = f"{len(cands)} crossings: the one nearest the mean front's"
        else:
            j = 0
        vals.append(cands[j][0])
        ks.append(math.exp(cands[j][1]))
        flags.append(flag)
    return Matched(np.asarray(vals, float), np.asarray(ks, float), flags, list(fr.seeds))


def at_knob(fr: Front, knob, y_key: str) -> np.ndarray:
    """Per-seed ``y_key`` at ``knob``: a grid point's values, or linear in ``log knob`` between two."""
    if knob is None or fr.knob is None:
        return fr.array(y_key)[fr.index(knob)]
    try:
        return fr.array(y_key)[fr.index(knob)]
    except KeyError:
        pass
    k = np.asarray(fr.knobs, dtype=float)
    if not k[0] <= knob <= k[-1]:
        raise ValueError(f"knob {knob!r} outside the front of {fr.method!r} [{k[0]}, {k[-1]}]: no extrapolation")
    i = int(np.searchsorted(k, knob)) - 1
    f = (math.log(knob) - math.log(k[i])) / (math.log(k[i + 1]) - math.log(k[i]))
    Y = fr.array(y_key)
    return Y[i] + f * (Y[i + 1] - Y[i])


def knob_at_level(fr: Front, x_key: str, level: float) -> tuple[float, np.ndarray]:
    """``(knob where the mean front crosses the level, per-seed knobs)``; NaN where not reached."""
    logk = np.log(np.asarray(fr.knobs, dtype=float))
    m = fr.mean(x_key)
    mc = crossings(m, level)
    mean_knob = math.exp(_interp(m, m, logk, level, mc[0])[1]) if mc else float("nan")
    return mean_knob, at_level(fr, x_key, level, x_key).knobs


def pick(fr: Front, key: str, mode: str = "min", pad: int = 1) -> tuple[Any, str]:
    """The knob of the best mean ``key`` (``mode`` ``"min"``/``"max"``) and where it sits:
    ``"interior"``, ``"natural limit ..."`` or ``"grid edge (not bracketed)"``."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if fr.knob is None:
        return None, "no knob"
    i = _best_index(fr.mean(key), mode)
    if pad <= i <= len(fr.knobs) - 1 - pad:
        return fr.knobs[i], "interior"
    side = "lo" if i < pad else "hi"
    lim, edge = fr.limit[0 if side == "lo" else 1], fr.knobs[i]
    why = fr.ends.get(side, "")
    if (lim is not None and math.isclose(edge, lim, rel_tol=1e-9)) or "natural limit" in why or "saturated" in why:
        return edge, f"{'lower' if side == 'lo' else 'upper'} end: {why or 'the natural limit'}"
    return edge, "grid edge (not bracketed)"


def knob_stability(fr: Front, x_key: str, level, factor: float = 1.5) -> dict:
    """The knob at ``level`` (number, or ``"min"``/``"max"`` of ``x_key``) on each seed of ``fr`` (the
    tuning seeds) and whether it is stable: flagged when per-seed knobs differ by more than
    ``factor``, or when the mean of ``x_key`` changes by less than its per-seed SD between the
    grid points around the level (or the optimum)."""
    if fr.knob is None:
        return {"stable": True, "flags": [], "per_seed_knob": [], "note": "no knob"}
    X, k = fr.array(x_key), np.asarray(fr.knobs, dtype=float)
    m, sd = fr.mean(x_key), fr.sd(x_key)
    flags = []
    if isinstance(level, str):
        per_seed = [float(k[_best_index(X[:, s], level)]) for s in range(X.shape[1])]
        i = _best_index(m, level)
        nb = [j for j in (i - 1, i + 1) if 0 <= j < len(k)]
        delta = float(min(abs(m[j] - m[i]) for j in nb)) if nb else float("nan")
        noise = float(np.mean([sd[i]] + [sd[j] for j in nb]))
        what = "the optimum is flat: neighbouring knobs differ by less than the per-seed SD"
    else:
        per_seed = at_level(fr, x_key, level, x_key).knobs.tolist()
        mc = crossings(m, level)
        if mc:
            i = mc[0]
            delta, noise = float(abs(m[i + 1] - m[i])), float((sd[i] + sd[i + 1]) / 2)
        else:
            delta, noise = float("nan"), float("nan")
            flags.append("the mean front does not reach the level")
        what = "adjacent knobs around the level differ by less than the per-seed SD"
    ok = [v for v in per_seed if np.isfinite(v)]
    ratio = float(max(ok) / min(ok)) if len(ok) >= 1 and min(ok) > 0 else float("nan")
    if len(ok) < len(per_seed):
        flags.append(f"{len(per_seed) - len(ok)} tuning seed(s) do not reach the level")
    if np.isfinite(ratio) and ratio > factor:
        flags.append(f"per-seed knobs differ by x{ratio:.2f} (> x{factor:g})")
    if np.isfinite(delta) and np.isfinite(noise) and delta < noise:
        flags.append(f"{what} ({delta:.3g} < {noise:.3g})")
    return {"stable": not flags, "flags": flags, "per_seed_knob": clean(per_seed), "ratio": nan_to_none(ratio),
            "delta": nan_to_none(delta), "sd": nan_to_none(noise), "factor": factor}
