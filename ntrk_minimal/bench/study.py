"""The study: levels stated in advance, comparisons, and ``run_study``, the whole protocol in one call
(``ntrk_minimal.bench``). Its result is the json-ready dict every ``results/*.json`` holds.
"""
from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .fronts import Front, at_knob, at_level, crossings, extend_front, front, knob_stability, pick
from .spec import COST_KEYS, Method, World
from .stats import verdict
from .store import clean

__all__ = ["Level", "Comparison", "TuningState", "values_at", "run_study", "cost_summary", "FORMAT"]

#: the format tag of every study's json (its name from when the protocol was one module, ntrk_minimal.protocol)
FORMAT = "ntrk_minimal.protocol v1"


@dataclass
class Level:
    """A stated operating point on ``x_key``.

    ``value``: a number; ``"min"``/``"max"`` (each method at its own optimum of ``x_key``, knob chosen
    on the tuning seeds); or ``f(state: TuningState) -> number`` (e.g. another method's value on the
    tuning seeds). ``how``: one line for the json/report. ``methods``: fronts that must bracket it
    (default: every method compared at this level).
    """

    name: str
    x_key: str
    value: Any
    how: str
    methods: Sequence[str] | None = None


@dataclass
class Comparison:
    """One verdict: ``a`` against ``b`` on ``y_key`` at level ``level``.

    ``b`` may be a tuple of method names: the best of them on the *tuning* seeds at that level (the
    best baseline). ``a_level`` puts ``a`` at another level (e.g. NTRK at its optimum against
    best-of-N at NTRK's wall time). ``margin`` defaults to ``world.margins[y_key]``.
    """

    name: str
    level: str
    y_key: str
    a: str
    b: Any
    a_level: str | None = None
    margin: float | None = None


@dataclass
class TuningState:
    """What a callable ``Level.value`` can look at: tuning fronts, resolved levels, picks, floor."""

    fronts: dict
    levels: dict
    picks: dict
    floor: dict

    def value_at(self, method: str, level: str | None, key: str) -> float:
        """Mean over tuning seeds of ``key`` for ``method`` at a resolved ``level`` (None: its only point)."""
        return float(np.nanmean(values_at(self.fronts[method], self.levels.get(level), self.picks.get(level, {})
                                           .get(method), key)[0]))


def values_at(fr: Front, lev: dict | None, knob, y_key: str):
    """(per-seed values, per-seed knobs, flags, how) of ``fr`` at a resolved level."""
    S = len(fr.seeds)
    if fr.knob is None:
        return fr.array(y_key)[0], [None] * S, ["no knob: its own operating point"] * S
    if lev is None:
        raise ValueError(f"{fr.method!r} has a knob: a level is needed to read it")
    if isinstance(lev["value"], str):
        return at_knob(fr, knob, y_key), [knob] * S, [""] * S
    mt = at_level(fr, lev["x_key"], lev["value"], y_key)
    return mt.values, mt.knobs.tolist(), mt.flags


def run_study(world: World, methods: Sequence[Method], levels: Sequence[Level], comparisons: Sequence[Comparison],
              n: int, tuning_seeds=(1000, 1001, 1002), eval_seeds=range(5), max_extend: int = 8, pad: int = 1,
              stability_factor: float = 1.5, eval_grid: str = "all", cost_reference: str | None = "base",
              progress: bool = False, config: dict | None = None, cache=None) -> dict:
    """The whole protocol; returns the json-ready dict (``write_results`` stores it and its renders).

    1. the floor on the evaluation (and tuning) seeds; 2. tuning fronts on the initial grids;
    3. each level in order: resolve its value, extend the fronts that must bracket it, pick knobs
    (optimum levels), knob stability; 4. evaluation fronts on the final grids (``eval_grid="all"``)
    or only where needed (``"needed"``: points around each level and pick, for expensive worlds);
    5. each comparison: per-seed values at its level(s) -> ``verdict``.
    ``cache``: a ``store.PointCache`` that every point goes through (a resumable, shareable run).
    """
    t_start = time.perf_counter()
    tuning_seeds, eval_seeds = [int(s) for s in tuning_seeds], [int(s) for s in eval_seeds]
    if set(tuning_seeds) & set(eval_seeds):
        raise ValueError(f"tuning and evaluation seeds must differ, both hold {sorted(set(tuning_seeds) & set(eval_seeds))}")
    by_name = {m.name: m for m in methods}
    if len(by_name) != len(methods):
        raise ValueError("method names must be unique")
    lev_by = {lv.name: lv for lv in levels}
    for c in comparisons:
        for nm in ([c.a] + (list(c.b) if isinstance(c.b, (tuple, list)) else [c.b])):
            if nm not in by_name:
                raise ValueError(f"comparison {c.name!r} names unknown method {nm!r}; methods: {list(by_name)}")
        for lv in (c.level, c.a_level):
            if lv is not None and lv not in lev_by:
                raise ValueError(f"comparison {c.name!r} names unknown level {lv!r}; levels: {list(lev_by)}")
        if c.y_key not in world.metrics or world.metrics[c.y_key].higher_is_better is None:
            raise ValueError(f"comparison {c.name!r}: {c.y_key!r} needs a World.metrics entry with a direction")
        if (c.margin if c.margin is not None else world.margins.get(c.y_key)) is None:
            raise ValueError(f"comparison {c.name!r}: no TOST margin for {c.y_key!r}: state it in World.margins")

    def floor_on(seeds):
        if world.floor is None:
            return {}
        rows = [world.floor(n, s) for s in seeds]
        return {k: [float(r[k]) for r in rows] for k in rows[0]}

    floor_tune, floor_eval = floor_on(tuning_seeds), floor_on(eval_seeds)
    fronts_t = {m.name: front(world, m, tuning_seeds, n, progress=progress, cache=cache) for m in methods}
    state = TuningState(fronts_t, {}, {}, floor_tune)
    stability, where = {}, {}
    for lv in levels:
        value = lv.value(state) if callable(lv.value) else lv.value
        if not isinstance(value, str):
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"level {lv.name!r} resolved to {value}")
        state.levels[lv.name] = {"x_key": lv.x_key, "value": value, "how": lv.how}
        users = lv.methods if lv.methods is not None else sorted(
            {c.a for c in comparisons if (c.a_level or c.level) == lv.name}
            | {b for c in comparisons if c.level == lv.name
               for b in (c.b if isinstance(c.b, (tuple, list)) else [c.b])}, key=list(by_name).index)
        state.levels[lv.name]["methods"] = list(users)
        state.picks[lv.name], stability[lv.name], where[lv.name] = {}, {}, {}
        for nm in users:
            m, fr = by_name[nm], fronts_t[nm]
            if m.knob is None:
                continue
            extend_front(fr, world, m, lv.x_key, value, max_extend, pad, cache)
            if isinstance(value, str):
                state.picks[lv.name][nm], where[lv.name][nm] = pick(fr, lv.x_key, value, pad)
            stability[lv.name][nm] = knob_stability(fr, lv.x_key, value, stability_factor)
    for lvname, picks in state.picks.items():       # later extensions do not move earlier picks: say so
        lv = state.levels[lvname]
        for nm, knob in picks.items():
            k2, _ = pick(fronts_t[nm], lv["x_key"], lv["value"], pad)
            if k2 != knob:
                stability[lvname][nm]["stable"] = False
                stability[lvname][nm]["flags"].append(
                    f"a point added later for another level has a better {lv['x_key']} ({by_name[nm].knob} = "
                    f"{k2:g}); the pick stays {knob:g} because levels resolve in order")

    fronts_e = {}
    for m in methods:
        fr = fronts_t[m.name]
        grid = None if m.knob is None else (fr.knobs if eval_grid == "all" else _needed(fr, state, m.name, pad))
        fronts_e[m.name] = front(world, m, eval_seeds, n, grid=grid, progress=progress, cache=cache)

    results = []
    for c in comparisons:
        margin = float(c.margin if c.margin is not None else world.margins[c.y_key])
        hib = world.metrics[c.y_key].higher_is_better
        cands = list(c.b) if isinstance(c.b, (tuple, list)) else [c.b]
        b_note = ""
        if len(cands) > 1:
            lv = state.levels[c.level]
            score = {b: np.nanmean(values_at(fronts_t[b], lv, state.picks[c.level].get(b), c.y_key)[0])
                     for b in cands}
            finite = {b: v for b, v in score.items() if np.isfinite(v)}
            b_name = (max if hib else min)(finite, key=finite.get) if finite else cands[0]
            b_note = (f"best of {cands} on the tuning seeds: {b_name} "
                      f"({', '.join(f'{k} {v:.4g}' for k, v in score.items())})")
        else:
            b_name = cands[0]
        sides = {}
        for side, nm, lvname in (("a", c.a, c.a_level or c.level), ("b", b_name, c.level)):
            lv = state.levels[lvname]
            vals, knobs, flags = values_at(fronts_e[nm], lv, state.picks[lvname].get(nm), c.y_key)
            sides[side] = {"method": nm, "level": lvname, "values": clean(list(vals)),
                           "knobs": clean(list(knobs)), "flags": list(flags)}
        v = verdict(np.asarray(sides["a"]["values"], float), np.asarray(sides["b"]["values"], float), margin, hib, names=(c.a, b_name), key=c.y_key)
        results.append({"name": c.name, "level": c.level, "a_level": c.a_level or c.level, "y_key": c.y_key,
                        "margin": margin, "b_choice": b_note, **{k: sides[k] for k in ("a", "b")},
                        "verdict": v.to_dict()})

    methods_info = {m.name: {"knob": m.knob, "grid": list(m.grid), "budget": m.budget,
                             "limit": [None if v is None else (str(v) if math.isinf(v) else v) for v in m.limit],
                             "limit_notes": list(m.limit_notes), "fixed": clean(m.fixed)} for m in methods}
    data = {"protocol": FORMAT, "world": world.describe(), "n": int(n),
            "seeds": {"tuning": tuning_seeds, "eval": eval_seeds}, "methods": methods_info,
            "floor": {"tuning": floor_tune, "eval": floor_eval},
            "levels": {k: dict(v) for k, v in state.levels.items()},
            "picks": {k: dict(v) for k, v in state.picks.items()}, "where": where, "stability": stability,
            "fronts": {"tuning": {k: f.to_dict() for k, f in fronts_t.items()},
                       "eval": {k: f.to_dict() for k, f in fronts_e.items()}},
            "comparisons": results,
            "settings": {"max_extend": max_extend, "pad": pad, "stability_factor": stability_factor,
                         "eval_grid": eval_grid, "verdict": "paired 95% t CI; TOST alpha = 0.05"},
            "config": clean(config or {}),
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}}
    data["cost"] = cost_summary(data, cost_reference)
    data["wall_time_s"] = time.perf_counter() - t_start
    return clean(data)


def _needed(fr: Front, state: TuningState, name: str, pad: int) -> list:
    keep = set()
    P = len(fr.knobs)
    for lvname, lv in state.levels.items():
        if name not in lv["methods"]:
            continue
        if isinstance(lv["value"], str):
            i = fr.index(state.picks[lvname][name])
            keep.update(range(max(i - pad, 0), min(i + pad, P - 1) + 1))
        else:
            for i in crossings(fr.mean(lv["x_key"]), lv["value"]):
                keep.update(range(max(i - pad, 0), min(i + 1 + pad, P - 1) + 1))
    return [fr.knobs[i] for i in sorted(keep)] or list(fr.knobs)


def cost_summary(data: dict, reference: str | None = "base") -> dict:
    """Per method (evaluation fronts, all points): mean NFE, backward rows, wall and model seconds per
    sample, wall seconds per NFE, and that ratio relative to ``reference`` (how much dearer an NFE is)."""
    out = {}
    for name, f in data["fronts"]["eval"].items():
        fr = Front.from_dict(f)
        row = {k: float(np.nanmean(fr.array(k))) for k in COST_KEYS}
        row["wall_per_nfe"] = row["wall_s"] / row["nfe"] if row["nfe"] else float("nan")
        out[name] = row
    if reference in out:
        base = out[reference]["wall_per_nfe"]
        for row in out.values():
            row["wall_per_nfe_vs_ref"] = row["wall_per_nfe"] / base if base else float("nan")
    return {"reference": reference, "methods": out}
