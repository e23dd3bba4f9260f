r"""The evaluation protocol: one way to compare samplers, for every world (2-D, digits, trained, SD).

A *world* says how to build a problem (start noise, a model, an evaluator, metric descriptions,
equivalence margins); a *method* says how to sample with one strength knob. This module knows
nothing about any world. Data flow: world -> sampler -> ``front`` -> ``run_study`` -> json ->
``report`` / ``verdict_table`` / ``fronts_figure`` (rendered from the json alone).

1. Fronts
---------
A method is run over a *geometric* knob grid (>= 8 points) on every seed of a seed set, paired:
seed ``s`` gives the same ``x_T`` and generator to every method (``World.start``). Every point keeps
its *per-seed* values of every metric plus its cost (``nfe``, ``backward``, ``wall_s``, ``model_s``
per sample, from ``CostCounter``). Given a level, the grid is extended geometrically at one end at a
time until the front *brackets* the level:

* numeric level ``L`` on ``x_key``: the mean front (over seeds) crosses ``L`` with ``pad`` points to
  spare on each side, and every seed's own front crosses it;
* optimum (``"min"``/``"max"`` of ``x_key``): the best mean point has ``pad`` points on each side.

Extension stops at a method's *natural limit* ``Method.limit = (lo, hi)``: a finite value is added
as the last grid point (NTRK ``kappa = sqrt(d)``: ``rho_t = 1``; best-of-N ``N = 1``: the base
sampler); ``0`` or ``inf`` are asymptotic (``kappa -> 0``: base; SVDD ``temp -> 0``: argmax): extension
stops once the front has *saturated* (the new edge differs from the old by less than its standard
error). It also stops when the front moves away from the level, or after ``max_extend`` points. A
front that still does not bracket says so (``Front.notes``); a pick on a grid edge is only allowed
on a natural limit, and a level a front cannot reach gives missing values (never extrapolation).

2. Matched comparison
---------------------
``at_level(front, x_key, L, y_key)``: per seed, ``y`` interpolated at ``x = L``, *piecewise linearly
in x* along the points sorted by knob (exact on a linear front); the knob at the level is
interpolated linearly in ``log knob`` on the same segment. When a seed's front crosses ``L`` more
than once, the crossing nearest (in log knob) to the mean front's crossing is used (flagged). A seed
whose front does not reach ``L`` gets NaN and the flag ``"refused: ..."``: no extrapolation.
``x_key`` can be the fidelity metric (reward at matched fidelity), the target (fidelity at matched
reward), an effective step (W on vs off) or ``wall_s`` (wall-time-matched comparison; timing keys
are read along the mean-over-seeds front: wall time belongs to the knob, its seed noise is the machine's).
Optimum levels use the knob chosen on the *tuning* seeds and read the evaluation seeds there.
Numeric levels are matched on each *evaluation* seed by interpolation: the front itself is compared.

3. Seeds
--------
Tuning seeds (e.g. 1000, 1001, 1002) fix the grids, the levels, the knobs at optimum levels and
the best baseline; evaluation seeds (0 .. S-1) decide. ``knob_stability`` reports the knob at the
level on each tuning seed and flags ``unstable`` when they differ by more than ``factor`` (default
1.5) or when the mean fidelity changes by less than its per-seed SD between the two grid points
that bracket the level (adjacent knobs are then indistinguishable on one seed).

4. Statistics (``d_s = a_s - b_s`` over the n paired seeds, ``dbar`` its mean, ``se = sd(d) / sqrt(n)``)
---------------------------------------------------------------------------------------------------
* paired t interval: ``dbar ± t_{n-1, 1 - (1 - level)/2} se``; bootstrap: percentile interval of the
  mean of ``n`` seeds resampled with replacement (``n_boot`` draws, fixed seed).
* TOST (two one-sided t tests, margin ``delta > 0`` stated in advance)::

      t_lo = (dbar + delta) / se,  p_lo = 1 - F_{n-1}(t_lo)     # H0: mu <= -delta
      t_hi = (dbar - delta) / se,  p_hi = F_{n-1}(t_hi)         # H0: mu >= +delta
      p_TOST = max(p_lo, p_hi);  equivalent at alpha iff p_TOST < alpha
                                 (= the 1 - 2 alpha t interval lies inside (-delta, delta))

* ``verdict(a, b, margin, higher_is_better)``: **win** if the paired 95% interval excludes 0 on the
  good side, **lose** if on the bad side, **equivalent** if TOST passes, else **undecided**.
  Never "tie": an interval that covers 0 is only evidence of too few seeds. A method that does not
  reach the level on every evaluation seed gets **undecided** (the reachable seeds are a selection).

5. Fidelity metrics (``ntrk_minimal.metrics``; equations in its docstring)
-------------------------------------------------------------------------
* KID: ``1/(m(m-1)) sum_{i!=j} k(x_i,x_j) + 1/(n(n-1)) sum_{i!=j} k(y_i,y_j) - 2/(mn) sum k(x_i,y_j)``
  with ``k(x, y) = (x.y / d + 1)^3``; unbiased (``E = 0`` for equal laws at any n): prefer it at small n.
* FD with >= 256 samples against the *full* reference, and FD-infinity: FD at several n, least
  squares ``FD(n) = FD_inf + k / n``, intercept ``FD_inf`` (Chong & Forsyth 2020).
* exact worlds: exact ``log p_0`` and the (unbiased) energy distance to exact ``p*`` samples.
* ``World.floor(n, seed)``: the same metrics for real (or exact) samples at the same n: report it.

6. Cost
-------
``CostCounter(model)`` wraps ``eps_hat(x_t, t)``: forward rows, *backward rows* (rows evaluated with
grad enabled on an input that requires grad: the rows a backward pass goes through) and seconds
spent in the forward calls. Every front point stores per sample: ``nfe`` (forward rows),
``backward``, ``wall_s`` (the whole ``run`` call: model, backward, reward, W, Python) and
``model_s``. ``cost_summary`` says how much a guided NFE costs relative to a base NFE.

How to add a world
------------------
A world is data plus three callables; a method is a sampler call with one knob. This runs as is
(``tests/test_protocol.py`` executes it); a digits / trained-UNet / SD world differs only in what
``evaluate`` measures (features -> ``metrics.kid`` / ``metrics.frechet_distance`` against the full
reference set, a held-out reward under ``World.heldout``) and in its grids::

    import torch
    from ntrk_minimal import metrics, protocol as P, toy2d
    from ntrk_minimal.sampling import rho_from_kappa, sample

    pb = toy2d.toy_problem()                             # anything the methods need: schedule, reward
    ref = pb.target.sample(2000, torch.Generator().manual_seed(0))      # the full reference set
    kid = metrics.KID(ref)                               # kid(x) = metrics.kid(x, ref), ref term cached

    def base(world, x_T, g):                             # always world.model: the protocol counts it
        return sample(world.model, world.context.schedule, x_T, "base", g)

    def ntrk(world, x_T, g, kappa):
        pb = world.context
        return sample(world.model, pb.schedule, x_T, "ntrk", g, pb.reward,
                      rho_t=rho_from_kappa(kappa, x_T[0].numel(), "constant"))

    world = P.World(
        name="ring, KID to p*", sample_shape=(2,), model=pb.model, context=pb, dtype=torch.float64,
        evaluate=lambda x0, seed: {"reward": float(pb.reward(x0).mean()), "kid": kid(x0)},
        floor=lambda n, seed: {"kid": kid(pb.target.sample(n, torch.Generator().manual_seed(seed)))},
        metrics={"reward": P.Metric("mean reward", True), "kid": P.Metric("KID to p*", False, 4)},
        fidelity="kid", target="reward", margins={"kid": 0.01, "reward": 0.05},
        margin_notes={"kid": "illustration only", "reward": "0.1 beta: 0.1 nats of the tilt exp(r / beta)"})
    methods = [P.Method("base", base, budget=25),
               P.Method("ntrk", ntrk, "kappa", P.geometric_grid(0.1, 1.0, 8), budget=25,
                        limit=(0.0, 2 ** 0.5), limit_notes=("(base)", "(rho = 1)"))]
    levels = [P.Level("best", "kid", "min", "each method at its own lowest KID (tuning seeds)"),
              P.Level("base KID", "kid", lambda st: 0.5 * st.value_at("base", None, "kid"),
                      "half the base sampler's KID on the tuning seeds")]
    comparisons = [P.Comparison("lowest KID: NTRK vs base", "best", "kid", "ntrk", "base"),
                   P.Comparison("reward at half the base KID", "base KID", "reward", "ntrk", "base")]
    data = P.run_study(world, methods, levels, comparisons, n=200, tuning_seeds=(1000, 1001),
                       eval_seeds=range(3))
    print(P.verdict_table(data))
    P.write_results(data, "results/my_world", "my world", figure_panels=[("reward", "kid")])

The API in one breath: ``World``, ``Metric``, ``Method`` describe; ``front`` / ``extend_front`` /
``run_point`` measure; ``at_level``, ``at_knob``, ``knob_at_level``, ``pick``, ``knob_stability``
read fronts; ``mean_ci``, ``paired_ci``, ``tost``, ``verdict`` decide; ``Level``, ``Comparison``,
``run_study`` do all of it; ``write_results`` (``to_json``/``report``/``verdict_table``/``points_table``/
``fronts_figure``) writes ``results/``; ``CostCounter`` and ``cost_summary`` account for cost.

Determinism: the same seeds give the same json, except the timing fields (``TIMING_KEYS``) and
comparisons whose level is a wall time (``strip_timing`` removes the former for comparisons).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

__all__ = ["Metric", "World", "Method", "CostCounter", "geometric_grid", "Front", "run_point", "front",
           "extend_front", "Matched", "at_level", "at_knob", "knob_at_level", "pick", "knob_stability",
           "mean_ci", "fmt_ci", "paired_ci", "tost", "Verdict", "verdict", "Level", "Comparison",
           "TuningState", "run_study", "cost_summary", "to_json", "write_json", "load_json",
           "strip_timing", "markdown_table", "verdict_table", "points_table", "report",
           "fronts_figure", "write_results", "TIMING_KEYS", "COST_KEYS", "LABELS"]

COST_KEYS = ("nfe", "backward", "wall_s", "model_s")
TIMING_KEYS = ("wall_s", "model_s", "wall_time_s", "wall_per_nfe", "wall_per_nfe_vs_ref")
LABELS = ("win", "lose", "equivalent", "undecided")


# ---- what a world and a method are ------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """How to read one metric key: ``label``, direction (None: a diagnostic, no verdicts), table digits."""

    label: str
    higher_is_better: bool | None
    digits: int = 3


@dataclass
class World:
    """A problem, described once; the protocol calls only what is listed here.

    Attributes:
        name, sample_shape: shown in the json; ``x_T`` has shape ``(n, *sample_shape)``.
        model: ``eps_hat(x_t, t)``. Each run sees ``world.model`` wrapped in a ``CostCounter``
            (``dataclasses.replace``), so methods must call ``world.model``, never a captured copy.
        evaluate: ``(x0, seed) -> {key: float}``: target reward, fidelity metric(s), held-out reward
            where there is one, exact quantities where exact. ``seed`` (the evaluation seed) lets a
            world draw a reference set per seed, the same for every method (paired).
        metrics: ``{key: Metric}`` for every key that tables/verdicts use.
        fidelity, target: the keys of the fidelity axis and of the target reward.
        margins, margin_notes: TOST margins per key, stated in advance, each with a one-line reason.
        floor: ``(n, seed) -> {key: float}``: real-vs-real (or exact-vs-exact) values at the same n.
        heldout: key of a held-out reward, if any. context: world-specific problem object.
        dtype, device: of ``x_T``; the generator lives on ``device``. config: stored in the json.
        sync: called before every clock reading on an asynchronous device (e.g.
            ``torch.cuda.synchronize``), so wall and model seconds are real; None on the CPU.
    """

    name: str
    sample_shape: tuple
    model: Callable
    evaluate: Callable[[torch.Tensor, int], dict]
    metrics: dict
    fidelity: str
    target: str
    margins: dict
    margin_notes: dict
    floor: Callable[[int, int], dict] | None = None
    heldout: str | None = None
    context: Any = None
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    config: dict = field(default_factory=dict)
    sync: Callable | None = None

    def __post_init__(self):
        self.sample_shape = tuple(int(s) for s in self.sample_shape)
        for role in ("fidelity", "target", "heldout"):
            key = getattr(self, role)
            if key is not None and key not in self.metrics:
                raise ValueError(f"World.{role}={key!r} is not a key of World.metrics {sorted(self.metrics)}")
        for key, m in self.margins.items():
            if key not in self.metrics:
                raise ValueError(f"margin for unknown metric {key!r}; metrics are {sorted(self.metrics)}")
            if not (isinstance(m, (int, float)) and m > 0 and math.isfinite(m)):
                raise ValueError(f"margins[{key!r}] must be a finite number > 0, got {m!r}")
            if not str(self.margin_notes.get(key, "")).strip():
                raise ValueError(f"margins[{key!r}] needs a one-line justification in margin_notes[{key!r}]")

    def start(self, seed: int, n: int):
        """``(x_T, generator)``: ``generator = Generator(device).manual_seed(seed)``, ``x_T`` its first draw."""
        g = torch.Generator(device=self.device).manual_seed(int(seed))
        x_T = torch.randn((int(n),) + self.sample_shape, generator=g, dtype=self.dtype, device=self.device)
        return x_T, g

    def describe(self) -> dict:
        return {"name": self.name, "sample_shape": list(self.sample_shape), "fidelity": self.fidelity,
                "target": self.target, "heldout": self.heldout,
                "metrics": {k: dataclasses.asdict(m) for k, m in self.metrics.items()},
                "margins": dict(self.margins), "margin_notes": dict(self.margin_notes),
                "config": self.config}


def geometric_grid(lo: float, hi: float, num: int = 8) -> list[float]:
    """``num`` points ``lo * (hi / lo)^(j / (num - 1))``: equal ratios, both ends included."""
    if not (0 < lo < hi) or not isinstance(num, int) or num < 2:
        raise ValueError(f"geometric_grid needs 0 < lo < hi and an int num >= 2, got {lo!r}, {hi!r}, {num!r}")
    return [float(v) for v in np.geomspace(lo, hi, num)]


@dataclass
class Method:
    """A sampler with (at most) one strength knob.

    ``run(world, x_T, generator, **{knob: value}, **fixed)`` returns a ``SampleResult`` (or
    ``(SampleResult, {extra key: float})`` for diagnostics such as an effective step).
    ``knob=None`` (base, best-of-20): a single point, ``grid`` empty. Otherwise ``grid`` is geometric
    with >= ``min_points`` points; ``limit = (lo, hi)`` are the natural limits (None: none; 0 / inf:
    asymptotic; finite: reachable, added as a point), ``limit_notes`` say what they mean.
    ``integer``: the knob is an int (best-of-N's N); ``budget``: nominal NFE per sample (for tables).
    """

    name: str
    run: Callable
    knob: str | None = None
    grid: Sequence[float] = ()
    budget: Any = None
    limit: tuple = (None, None)
    limit_notes: tuple = ("", "")
    fixed: dict = field(default_factory=dict)
    integer: bool = False
    min_points: int = 8

    def __post_init__(self):
        self.grid = [int(v) if self.integer else float(v) for v in self.grid]
        if self.knob is None:
            if self.grid:
                raise ValueError(f"method {self.name!r} has no knob but a grid {self.grid}")
            return
        g = np.asarray(self.grid, dtype=float)
        if len(g) < self.min_points:
            raise ValueError(f"method {self.name!r}: grid needs >= {self.min_points} points, got {len(g)}")
        if not (g > 0).all() or not (np.diff(g) > 0).all():
            raise ValueError(f"method {self.name!r}: grid must be positive and increasing, got {self.grid}")
        steps = np.diff(np.log(g))
        if not self.integer and not np.allclose(steps, steps[0], rtol=1e-3):
            raise ValueError(f"method {self.name!r}: grid must be geometric (equal ratios), got {self.grid}")
        lo, hi = self.limit
        if (lo is not None and g[0] < lo * (1 - 1e-12)) or (hi is not None and g[-1] > hi * (1 + 1e-12)):
            raise ValueError(f"method {self.name!r}: grid {self.grid} leaves the natural limits {self.limit}")

    @property
    def ratio(self) -> float:
        """Geometric step used to extend the grid."""
        g = self.grid
        return float(np.exp(np.mean(np.diff(np.log(g))))) if len(g) > 1 else 2.0


# ---- cost ---------------------------------------------------------------------------------------------
class CostCounter:
    """Wraps ``eps_hat(x_t, t)``; counts forward rows, backward rows and forward seconds.

    A row counts as *backward* when it is evaluated with grad enabled on an ``x_t`` that requires
    grad: the reverse pass of ``autograd.grad`` goes through exactly those rows. A model's
    ``predict(x_t, t) -> (eps_hat, x0_hat)`` (one evaluation; the samplers prefer it where it exists)
    is counted the same way; other attribute access is forwarded to the wrapped model. ``sync`` (e.g.
    ``torch.cuda.synchronize``) is called before each clock reading so that asynchronous devices are
    timed, not queued.
    """

    def __init__(self, model, sync: Callable | None = None):
        self.model, self.sync = model, sync
        self.forward_rows = 0
        self.backward_rows = 0
        self.model_s = 0.0
        if hasattr(model, "predict"):
            self.predict = lambda x_t, t: self._timed(model.predict, x_t, t)

    def __call__(self, x_t, t):
        return self._timed(self.model, x_t, t)

    def _timed(self, fn, x_t, t):
        rows = int(x_t.shape[0])
        self.forward_rows += rows
        if torch.is_grad_enabled() and x_t.requires_grad:
            self.backward_rows += rows
        if self.sync is not None:
            self.sync()
        t0 = time.perf_counter()
        out = fn(x_t, t)
        if self.sync is not None:
            self.sync()
        self.model_s += time.perf_counter() - t0
        return out

    def __getattr__(self, name):
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)


# ---- fronts ------------------------------------------------------------------------------------------
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


def run_point(world: World, method: Method, knob_value, seed: int, n: int) -> dict:
    """One method at one knob on one seed: ``world.evaluate`` of its samples plus extras and cost."""
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


def _eval_point(world, method, knob, seeds, n, bar=None) -> dict:
    per_seed = []
    for s in seeds:
        per_seed.append(run_point(world, method, knob, s, n))
        if bar is not None:
            bar.update()
    keys = list(per_seed[0])
    return {k: [p.get(k, float("nan")) for p in per_seed] for k in keys}


def front(world: World, method: Method, seeds, n: int, grid=None, x_key: str | None = None, level=None,
          max_extend: int = 8, pad: int = 1, progress: bool = False) -> Front:
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
    values = [_eval_point(world, method, k, seeds, n, bar) for k in knobs]
    if bar is not None:
        bar.close()
    fr = Front(method.name, method.knob, method.budget, seeds, int(n), knobs, values, tuple(method.limit))
    if level is not None and method.knob is not None:
        extend_front(fr, world, method, x_key or world.fidelity, level, max_extend, pad)
    return fr


def _crossings(x: np.ndarray, L: float) -> list[int]:
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
    cross = _crossings(m, level)
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
        if not _crossings(xs, level):
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
                 pad: int = 1) -> str:
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
        vals = _eval_point(world, method, new, fr.seeds, fr.n)
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
        elif (not isinstance(level, str) and not _crossings(m_new, level)
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
        return {"values": _clean(self.values.tolist()), "knobs": _clean(self.knobs.tolist()),
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
    mc = _crossings(m, level)
    ref = _interp(m, m, logk, level, mc[0])[1] if mc else None
    vals, ks, flags = [], [], []
    for s in range(len(fr.seeds)):
        x, y = X[:, s], Y[:, s]
        cross = _crossings(x, level)
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
    mc = _crossings(m, level)
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
        mc = _crossings(m, level)
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
    return {"stable": not flags, "flags": flags, "per_seed_knob": _clean(per_seed), "ratio": _nan(ratio),
            "delta": _nan(delta), "sd": _nan(noise), "factor": factor}


# ---- statistics ------------------------------------------------------------------------------------------
def _finite(values) -> np.ndarray:
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
    d = _diffs(a, b)
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


def _diffs(a, b) -> np.ndarray:
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
    d = _finite(diffs)
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
        return _clean(dataclasses.asdict(self))


def verdict(a, b, margin: float, higher_is_better: bool, level: float = 0.95, ci: str = "t",
            alpha: float = 0.05, names=("A", "B"), key: str = "", min_coverage: float = 1.0) -> Verdict:
    """Paired verdict of ``a`` against ``b`` (one value per seed, NaN = missing on that seed).

    A seed is missing when a method does not reach the level there. Unless at least ``min_coverage``
    of the seeds are paired (default: all), the label is ``undecided``: a verdict on the seeds that
    happen to reach the level would select seeds. The numbers on the paired seeds are still given."""
    if level <= 0 or level >= 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    a_, b_ = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    d = _diffs(a_, b_)
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


# ---- the study: levels, comparisons, one call -----------------------------------------------------
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
        return float(np.nanmean(_values_at(self.fronts[method], self.levels.get(level), self.picks.get(level, {})
                                           .get(method), key)[0]))


def _values_at(fr: Front, lev: dict | None, knob, y_key: str):
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
              progress: bool = False, config: dict | None = None) -> dict:
    """The whole protocol; returns the json-ready dict (``write_results`` stores it and its renders).

    1. the floor on the evaluation (and tuning) seeds; 2. tuning fronts on the initial grids;
    3. each level in order: resolve its value, extend the fronts that must bracket it, pick knobs
    (optimum levels), knob stability; 4. evaluation fronts on the final grids (``eval_grid="all"``)
    or only where needed (``"needed"``: points around each level and pick, for expensive worlds);
    5. each comparison: per-seed values at its level(s) -> ``verdict``.
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
    fronts_t = {m.name: front(world, m, tuning_seeds, n, progress=progress) for m in methods}
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
            extend_front(fr, world, m, lv.x_key, value, max_extend, pad)
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
        fronts_e[m.name] = front(world, m, eval_seeds, n, grid=grid, progress=progress)

    results = []
    for c in comparisons:
        margin = float(c.margin if c.margin is not None else world.margins[c.y_key])
        hib = world.metrics[c.y_key].higher_is_better
        cands = list(c.b) if isinstance(c.b, (tuple, list)) else [c.b]
        b_note = ""
        if len(cands) > 1:
            lv = state.levels[c.level]
            score = {b: np.nanmean(_values_at(fronts_t[b], lv, state.picks[c.level].get(b), c.y_key)[0])
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
            vals, knobs, flags = _values_at(fronts_e[nm], lv, state.picks[lvname].get(nm), c.y_key)
            sides[side] = {"method": nm, "level": lvname, "values": _clean(list(vals)),
                           "knobs": _clean(list(knobs)), "flags": list(flags)}
        v = verdict(np.asarray(sides["a"]["values"], float), np.asarray(sides["b"]["values"], float), margin, hib, names=(c.a, b_name), key=c.y_key)
        results.append({"name": c.name, "level": c.level, "a_level": c.a_level or c.level, "y_key": c.y_key,
                        "margin": margin, "b_choice": b_note, **{k: sides[k] for k in ("a", "b")},
                        "verdict": v.to_dict()})

    methods_info = {m.name: {"knob": m.knob, "grid": list(m.grid), "budget": m.budget,
                             "limit": [None if v is None else (str(v) if math.isinf(v) else v) for v in m.limit],
                             "limit_notes": list(m.limit_notes), "fixed": _clean(m.fixed)} for m in methods}
    data = {"protocol": "ntrk_minimal.protocol v1", "world": world.describe(), "n": int(n),
            "seeds": {"tuning": tuning_seeds, "eval": eval_seeds}, "methods": methods_info,
            "floor": {"tuning": floor_tune, "eval": floor_eval},
            "levels": {k: dict(v) for k, v in state.levels.items()},
            "picks": {k: dict(v) for k, v in state.picks.items()}, "where": where, "stability": stability,
            "fronts": {"tuning": {k: f.to_dict() for k, f in fronts_t.items()},
                       "eval": {k: f.to_dict() for k, f in fronts_e.items()}},
            "comparisons": results,
            "settings": {"max_extend": max_extend, "pad": pad, "stability_factor": stability_factor,
                         "eval_grid": eval_grid, "verdict": "paired 95% t CI; TOST alpha = 0.05"},
            "config": _clean(config or {}),
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}}
    data["cost"] = cost_summary(data, cost_reference)
    data["wall_time_s"] = time.perf_counter() - t_start
    return _clean(data)


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
            for i in _crossings(fr.mean(lv["x_key"]), lv["value"]):
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


# ---- json -----------------------------------------------------------------------------------------------
def _nan(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _clean(obj):
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return _nan(float(obj))
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def to_json(data: dict) -> str:
    return json.dumps(_clean(data), indent=1, allow_nan=False)


def write_json(data: dict, path) -> Path:
    path = Path(path)
    path.write_text(to_json(data) + "\n")
    return path


def load_json(path) -> dict:
    return json.loads(Path(path).read_text())


def strip_timing(obj):
    """A copy without the timing fields (``TIMING_KEYS``): what must be identical for equal seeds."""
    if isinstance(obj, dict):
        return {k: strip_timing(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [strip_timing(v) for v in obj]
    return obj


# ---- renders (from the json alone) -----------------------------------------------------------------
def markdown_table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def _digits(data, key):
    return data["world"]["metrics"].get(key, {}).get("digits", 3)


def _fmt_vals(values, digits):
    v = _finite(values)
    if not v.size:
        return "–"
    m, h = mean_ci(v)
    return f"{m:.{digits}f} ± {h:.{digits}f}" if v.size > 1 else f"{m:.{digits}f}"


def _level_text(lv: dict) -> str:
    return f"{lv['x_key']} at its {lv['value']}" if isinstance(lv["value"], str) else f"{lv['x_key']} = {lv['value']:.4g}"


def verdict_table(data: dict) -> str:
    """Markdown: one row per comparison, the verdict and its numbers (from ``run_study``'s json)."""
    rows = []
    for c in data["comparisons"]:
        v, dg = c["verdict"], _digits(data, c["y_key"]) + 1
        lab = data["world"]["metrics"].get(c["y_key"], {}).get("label", c["y_key"])
        direction = "↑" if v["higher_is_better"] else "↓"
        at = data["levels"][c["level"]]
        where = _level_text(at) if c["a_level"] == c["level"] else \
            f"A: {_level_text(data['levels'][c['a_level']])}; B: {_level_text(at)}"
        f = lambda x: "–" if x is None else f"{x:+.{dg}f}"
        rows.append([c["name"], f"{lab} {direction}", where, f"{v['a']} vs {v['b']}",
                     f"{_fmt_vals(c['a']['values'], dg)} vs {_fmt_vals(c['b']['values'], dg)}",
                     f"{f(v['mean'])} [{f(v['lo'])}, {f(v['hi'])}]",
                     "–" if v["p_tost"] is None else f"{v['p_tost']:.3f} (±{v['margin']:g})",
                     f"**{v['label']}**", v["n_seeds"]])
    return markdown_table(["comparison", "metric", "matched at", "A vs B", "A vs B (mean ± 95% CI)",
                           "paired A − B [95% CI]", "TOST p (margin)", "verdict", "seeds"], rows)


def points_table(data: dict, level: str, keys: Sequence[str] | None = None, methods=None,
                 seeds: str = "eval") -> str:
    """Markdown: every method at ``level`` (knob, then mean ± 95% CI of ``keys`` over ``seeds``)."""
    lv = data["levels"][level]
    keys = list(keys) if keys is not None else [k for k in data["world"]["metrics"]]
    names = methods or lv.get("methods") or list(data["fronts"][seeds])
    rows = []
    for nm in names:
        fr = Front.from_dict(data["fronts"][seeds][nm])
        knob = data["picks"].get(level, {}).get(nm)
        try:
            vals, knobs, flags = _values_at(fr, lv, knob, lv["x_key"] if lv["x_key"] in fr.keys() else fr.keys()[0])
            cols = [_fmt_vals(_values_at(fr, lv, knob, k)[0], _digits(data, k)) if k in fr.keys() else "–"
                    for k in keys]
        except (KeyError, ValueError):
            continue
        if fr.knob is None:
            kt = "–"
        elif isinstance(lv["value"], str):
            at = data["where"][level].get(nm, "")
            kt = f"{fr.knob} = {knob:.4g}" + ("" if at == "interior" else f" ({at})")
        else:
            ks = _finite(knobs)
            kt = f"{fr.knob} ≈ {np.mean(ks):.4g}" if ks.size else "not reached"
            if 0 < ks.size < len(knobs):
                kt += f" (reached on {ks.size} of {len(knobs)} seeds)"
        budget = data["methods"][nm]["budget"]
        rows.append([nm, "–" if budget is None else budget, kt] + cols)
    labels = [data["world"]["metrics"].get(k, {}).get("label", k) for k in keys]
    return markdown_table(["method", "NFE", "knob"] + labels, rows)


def report(data: dict, title: str = "", points_keys=None) -> str:
    """The whole markdown report of a study: settings, floor, levels, picks with stability, operating
    points per level, verdicts, cost. Everything comes from ``data`` (the json)."""
    w = data["world"]
    lines = [f"# {title or w['name']}", "",
             f"{data['n']} samples per run; tuning seeds {data['seeds']['tuning']}, evaluation seeds "
             f"{data['seeds']['eval']}; mean ± 95% t CI over evaluation seeds; verdicts from paired "
             f"differences (win/lose: the 95% CI excludes 0; equivalent: TOST at the stated margin; "
             f"otherwise undecided). Wall time of the run: {data.get('wall_time_s', float('nan')):.0f} s.", ""]
    lines += ["## Margins (stated in advance)", ""]
    lines += [f"- {k}: ±{v:g} — {w['margin_notes'][k]}" for k, v in w["margins"].items()] + [""]
    if data["floor"]["eval"]:
        lines += [f"## Floor: real/exact samples against the reference at n = {data['n']}", ""]
        fl = data["floor"]["eval"]
        lines += [markdown_table(["metric", "floor (mean ± 95% CI)"],
                                 [[w["metrics"].get(k, {}).get("label", k), _fmt_vals(v, _digits(data, k) + 1)]
                                  for k, v in fl.items()]), ""]
    lines += ["## Levels", ""]
    lines += [f"- **{k}**: {_level_text(v)} — {v['how']}" for k, v in data["levels"].items()] + [""]
    lines += ["## Knob stability across tuning seeds", ""]
    rows = []
    for lvname, per in data["stability"].items():
        for nm, st in per.items():
            ks = ", ".join("–" if k is None else f"{k:.3g}" for k in st["per_seed_knob"])
            rows.append([lvname, nm, ks, "stable" if st["stable"] else "**unstable**: " + "; ".join(st["flags"])])
    lines += [markdown_table(["level", "method", "knob per tuning seed", "stability"], rows), ""]
    notes = [(nm, n) for nm, f in data["fronts"]["tuning"].items() for n in f["notes"] if ":" in n and "extended" not in n]
    if notes:
        lines += ["## Grid brackets (tuning fronts)", ""] + [f"- {nm}: {n}" for nm, n in notes] + [""]
    for lvname in data["levels"]:
        lines += [f"## Operating points at level '{lvname}'", "",
                  points_table(data, lvname, points_keys), ""]
    lines += ["## Verdicts", "", verdict_table(data), ""]
    for c in data["comparisons"]:
        if c["b_choice"]:
            lines.append(f"- {c['name']}: {c['b_choice']}")
        for side in ("a", "b"):
            fl = [f for f in c[side]["flags"] if f and "no knob" not in f]
            if fl:
                lines.append(f"- {c['name']}, {c[side]['method']}: " + "; ".join(sorted(set(fl))))
        if c["verdict"]["note"]:
            lines.append(f"- {c['name']}: {c['verdict']['note']}")
    cost = data["cost"]["methods"]
    lines += ["", f"## Cost (per sample, evaluation fronts; wall per NFE relative to {data['cost']['reference']})", ""]
    lines += [markdown_table(["method", "NFE", "backward rows", "wall ms", "model ms", "wall per NFE vs ref"],
                             [[nm, f"{r['nfe']:.0f}", f"{r['backward']:.0f}", f"{1e3 * r['wall_s']:.3f}",
                               f"{1e3 * r['model_s']:.3f}",
                               f"{r.get('wall_per_nfe_vs_ref') or float('nan'):.2f}"] for nm, r in cost.items()])]
    return "\n".join(lines) + "\n"


def fronts_figure(data: dict, panels=None, methods=None, colors: dict | None = None, seeds: str = "eval",
                  ncols: int | None = None, linestyles: dict | None = None):
    """Fronts from the json: per method the mean over ``seeds`` with 95% CI bars on both axes, points
    in knob order; knob-less methods as single markers; levels on the panel's axes as dotted lines and
    the matched values of the comparisons as stars. ``panels``: ``(x_key, y_key)`` or dicts with
    ``x``, ``y``, ``xscale``, ``yscale`` (``"symlog"`` with ``xlinthresh``/``ylinthresh`` for metrics that
    can be negative: unbiased KID or energy distance), ``methods``, ``title``, ``xlim``, ``ylim`` (a
    zoom). ``ncols``: panels per row; ``linestyles``: per method (e.g. dashed for an ablation that may
    coincide with its method). Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from .plotting import DPI, STYLE

    w = data["world"]
    panels = panels or [(w["target"], w["fidelity"])]
    panels = [p if isinstance(p, dict) else {"x": p[0], "y": p[1]} for p in panels]
    names = list(methods or data["fronts"][seeds])
    cmap = plt.get_cmap("tab10")
    colors = {**{nm: cmap(i % 10) for i, nm in enumerate(names)}, **(colors or {})}
    label = lambda k: w["metrics"].get(k, {}).get("label", k)
    with plt.rc_context(STYLE):                           # the collection's figure style (plotting.py)
        ncols = ncols or len(panels)
        nrows = math.ceil(len(panels) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.9 * nrows + 0.5), dpi=DPI, squeeze=False)
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        for ax, p in zip(axes.flat, panels):
            xk, yk = p["x"], p["y"]
            for nm in p.get("methods", names):
                fr = Front.from_dict(data["fronts"][seeds][nm])
                if xk not in fr.keys() or yk not in fr.keys():
                    continue
                X, Y = fr.array(xk), fr.array(yk)
                ci = [(mean_ci(_finite(X[i])), mean_ci(_finite(Y[i]))) for i in range(len(fr.knobs))]
                xs, xh = [c[0][0] for c in ci], [c[0][1] for c in ci]
                ys, yh = [c[1][0] for c in ci], [c[1][1] for c in ci]
                single = fr.knob is None
                ax.errorbar(xs, ys, xerr=xh, yerr=yh, color=colors[nm], marker="s" if single else "o",
                            ms=5 if single else 3, lw=1.0, elinewidth=0.7, capsize=1.5,
                            ls="none" if single else (linestyles or {}).get(nm, "-"), label=nm)
            for lvname, lv in data["levels"].items():
                if isinstance(lv["value"], str):
                    continue
                if lv["x_key"] == xk:
                    ax.axvline(lv["value"], color="grey", ls=":", lw=1)
                if lv["x_key"] == yk:
                    ax.axhline(lv["value"], color="grey", ls=":", lw=1)
            for c in data["comparisons"]:
                lv = data["levels"][c["level"]]
                if c["y_key"] != yk:
                    continue
                for side in ("a", "b"):
                    s = c[side]
                    if s["method"] not in p.get("methods", names):
                        continue
                    slv = data["levels"][s["level"]]
                    yv = _finite(s["values"])
                    if not yv.size:
                        continue
                    if not isinstance(slv["value"], str) and slv["x_key"] == xk:
                        xv = slv["value"]
                    elif isinstance(slv["value"], str):
                        fr = Front.from_dict(data["fronts"][seeds][s["method"]])
                        if xk not in fr.keys():
                            continue
                        xv = float(np.nanmean(_values_at(fr, slv, data["picks"][s["level"]].get(s["method"]), xk)[0]))
                    else:
                        continue
                    ax.plot([xv], [yv.mean()], marker="*", ms=11, color=colors[s["method"]], mec="k", mew=0.6,
                            ls="none", zorder=5)
            for axis, setter in (("x", ax.set_xscale), ("y", ax.set_yscale)):
                scale = p.get(axis + "scale", "linear")
                setter(scale, **({"linthresh": p.get(axis + "linthresh", 1e-3)} if scale == "symlog" else {}))
                if scale == "log":  # ticks at 1, 2, 5 x 10^k as plain numbers; minor labels would collide
                    a = getattr(ax, axis + "axis")
                    a.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                    a.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
                    a.set_minor_formatter(matplotlib.ticker.NullFormatter())
            if "xlim" in p:
                ax.set_xlim(*p["xlim"])
            if "ylim" in p:
                ax.set_ylim(*p["ylim"])
            ax.set_xlabel(label(xk))
            ax.set_ylabel(label(yk))
            ax.set_title(p.get("title", f"{label(yk)} vs {label(xk)}"))
            ax.grid(alpha=0.25)
        handles, labs = axes[0][0].get_legend_handles_labels()
        per_row = min(len(labs), 3 * ncols)
        fig.legend(handles, labs, loc="lower center", ncol=per_row, frameon=False)
        rows = math.ceil(len(labs) / per_row)
        fig.tight_layout(rect=(0, (0.25 + 0.22 * rows) / fig.get_size_inches()[1], 1, 1))
    return fig


def write_results(data: dict, stem, title: str = "", figure_panels=None, figure_methods=None,
                  points_keys=None, colors=None, ncols: int | None = None, linestyles=None) -> str:
    """Write ``stem.json``, ``stem.md`` (``report``) and ``stem.png`` (``fronts_figure``); return the md."""
    import matplotlib.pyplot as plt

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_json(data, stem.with_suffix(".json"))
    data = load_json(stem.with_suffix(".json"))          # render from what was stored
    text = report(data, title, points_keys)
    stem.with_suffix(".md").write_text(text)
    fig = fronts_figure(data, figure_panels, figure_methods, colors, ncols=ncols, linestyles=linestyles)
    fig.savefig(stem.with_suffix(".png"))
    plt.close(fig)
    return text
