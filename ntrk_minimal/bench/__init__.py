r"""The benchmark layer: one evaluation protocol for every world (``ntrk_minimal.worlds``), and one
table of methods.

A *world* says how to build a problem (start noise, a model, an evaluator, metric descriptions,
equivalence margins); a *method* says how to sample with one strength knob. This package knows
nothing about any world. Data flow: world -> method (``methods``) -> sampler -> ``front`` ->
``run_study`` -> json -> ``report`` / ``verdict_table`` / ``fronts_figure`` (rendered from the json alone).

One module per idea; every public name of the protocol's modules is re-exported here (``from
ntrk_minimal import bench as P``); the table of methods is imported as itself (``bench.methods``):

    spec       World, Metric, Method, geometric_grid, CostCounter: what a world and a method are
    fronts     Front, run_point, front, extend_front, at_level, at_knob, knob_at_level, pick, knob_stability
    stats      mean_ci, paired_ci, tost, Verdict, verdict: statistics and verdicts
    study      Level, Comparison, run_study, cost_summary: the whole protocol in one call
    store      write_json, load_json, strip_timing, PointCache: the json, and a resumable point cache
    report     markdown_table, verdict_table, verdict_line, points_table, report, fronts_figure, write_results
    methods    the one table of sampling methods every world uses (each knob's meaning stated there)
    __main__   ``python -m ntrk_minimal.bench --task ...``: the benchmarks, one task each

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
A world is data plus three callables; its methods are rows of the table (``bench.methods``) with the
world's settings. This runs as is (``tests/test_protocol.py`` executes it); a digits / trained-UNet /
SD world differs only in what ``evaluate`` measures (features -> ``metrics.kid`` /
``metrics.frechet_distance`` against the full reference set, a held-out reward under
``World.heldout``) and in its grids::

    import torch
    from functools import partial
    from ntrk_minimal import bench as P, metrics
    from ntrk_minimal.bench import methods as M
    from ntrk_minimal.worlds import toy2d

    pb = toy2d.toy_problem()                             # anything the methods need: schedule, reward
    ref = pb.target.sample(2000, torch.Generator().manual_seed(0))      # the full reference set
    kid = metrics.KID(ref)                               # kid(x) = metrics.kid(x, ref), ref term cached
    base, ntrk = M.base, partial(M.ntrk, decay="constant")   # rho_t = kappa^2 / d on every step

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
``run_study`` do all of it (``cache=PointCache(...)``: resumable); ``write_results`` (``to_json``/``report``/``verdict_table``/``points_table``/
``fronts_figure``) writes ``results/``; ``CostCounter`` and ``cost_summary`` account for cost.

Determinism: the same seeds give the same json, except the timing fields (``TIMING_KEYS``) and
comparisons whose level is a wall time (``strip_timing`` removes the former for comparisons).
"""
from .spec import COST_KEYS, TIMING_KEYS, CostCounter, Method, Metric, World, geometric_grid
from .store import PointCache, clean, code_hash, load_json, strip_timing, to_json, write_json
from .stats import LABELS, Verdict, finite_values, fmt_ci, mean_ci, paired_ci, paired_diffs, tost, verdict
from .fronts import (Front, Matched, at_knob, at_level, crossings, extend_front, front, knob_at_level, knob_stability,
                     pick, run_point)
from .study import FORMAT, Comparison, Level, TuningState, cost_summary, run_study, values_at
from .report import (find_comparison, fronts_figure, markdown_table, points_table, report, verdict_line,
                     verdict_table, write_results)

__all__ = ["Metric", "World", "Method", "CostCounter", "geometric_grid", "Front", "run_point", "front",
           "extend_front", "crossings", "Matched", "at_level", "at_knob", "knob_at_level", "pick", "knob_stability",
           "mean_ci", "fmt_ci", "paired_ci", "paired_diffs", "finite_values", "tost", "Verdict", "verdict", "Level",
           "Comparison", "TuningState", "values_at", "run_study", "cost_summary", "clean", "to_json", "write_json",
           "load_json", "strip_timing", "code_hash", "PointCache", "markdown_table", "verdict_table", "verdict_line",
           "find_comparison", "points_table", "report", "fronts_figure", "write_results", "TIMING_KEYS", "COST_KEYS",
           "LABELS", "FORMAT"]
