# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercise sheet 3 · Measuring honestly: KID, paired comparisons, TOST and the four verdicts
#
# **What you will learn** (by writing it)
# - the kernel inception distance (KID): the *unbiased* MMD$^2$ with the cubic polynomial kernel, and why the biased
#   estimate cannot be compared across sample sizes (E3.1, E3.2);
# - equivalence testing: two one-sided t tests (TOST) with a margin stated in advance (E3.3);
# - the four verdicts of a paired comparison over seeds — win, lose, equivalent, undecided — never "tie" (E3.4).
#
# **Prerequisites**: sheets 1–2; notebook `02_reward_tilting_2d` (the 2-D benchmark); a one-sample t test.
#
# **How this sheet works.** You implement the `TODO`s of sheet 3 in `ntrk_student.py` (next to this notebook): two pieces
# of `ntrk_minimal.metrics.kid` and two of `ntrk_minimal.bench.verdict`. Each part shows a **reference figure** from
# the library, then a **your result** cell; each check re-reads `ntrk_student.py` (`importlib.reload`: save the file,
# re-run the cell, no kernel restart) and uses your code only for its own exercise. Public tests:
# `python -m pytest tests -q -k E3` (in the folder that holds `ntrk_student.py`); the instructor's grader adds hidden cases.

# %% [markdown] tags=["solution-only"]
# *This is the solution notebook (`notebooks/`, run by CI); `make assignments` generates the student version in `assignments/student/` (this cell is dropped there).*

# %%
import importlib
import json
import math
import types

import numpy as np
import torch
import matplotlib.pyplot as plt
import ntrk_minimal as nt
from ntrk_minimal import kernels, metrics, paths, plotting, whitening
from ntrk_minimal.bench import stats as protocol

IMPL = "ntrk_minimal.bench.stats"        # the exercised functions: the library (solution) or your ntrk_student.py
LIBRARY = (metrics, protocol, kernels, whitening)

FAST = True           # fewer Monte Carlo repetitions; the thresholds hold either way
REPS = 30 if FAST else 200
SEED = 0
torch.manual_seed(SEED)
plotting.use_style()  # the shared figure style: 110 dpi, fonts >= 9 pt
gen = lambda seed: torch.Generator().manual_seed(seed)
results = {}          # exercise -> measured numbers, filled by the "your result" cells


def attempt(exercise, fn, *own):
    """Check one exercise: fn(impl) with your latest ntrk_student.py (re-read at every check), in which only the
    names in `own` are yours and every other exercised function is the library's. A stub is reported, not raised."""
    if IMPL == "ntrk_student":
        impl = importlib.reload(importlib.import_module(IMPL))    # your saved edits take effect here
        for name in impl.__all__:
            if name not in own and not isinstance(getattr(impl, name), type):
                setattr(impl, name, next(getattr(m, name) for m in LIBRARY if hasattr(m, name)))
    else:
        impl = types.SimpleNamespace(**{**vars(metrics), **vars(protocol)})
    try:
        return fn(impl)
    except NotImplementedError as e:
        print(f"[{exercise}] waiting for your code: {str(e)[:120]}...")
        return None


# %% [markdown]
# ## 1. KID: an unbiased MMD$^2$ (E3.1, E3.2)
# For features $x_1..x_m$ (generated) and $y_1..y_n$ (reference) in $\mathbb R^d$, KID (Bińkowski et al. 2018) is the
# squared maximum mean discrepancy with the cubic polynomial kernel $k(x, y) = (\gamma\, x\cdot y + c)^3$, $\gamma = 1/d$, $c = 1$:
# $$\widehat{\mathrm{MMD}}{}^2_u = \frac{1}{m(m-1)}\sum_{i\ne j} k(x_i, x_j) + \frac{1}{n(n-1)}\sum_{i\ne j} k(y_i, y_j)
#   - \frac{2}{mn}\sum_{i,j} k(x_i, y_j).$$
# Dropping the terms $i = j$ makes the estimate **unbiased**: its mean is the population MMD$^2$, 0 when both sets come
# from the same law, whatever $m, n$ (it can be negative). The V-statistic (all pairs, $1/m^2$) is biased upward by about
# $(\mathbb E\,k(x,x) - \mathbb E\,k(x,x'))/m + (\dots)/n$: it shrinks with $n$, so two methods evaluated at different $n$, or
# a method against a real-vs-real floor at another $n$, are not comparable. `metrics.kid` computes the sums in row blocks
# (`poly_kernel_sum`, E3.1) and combines them (`mmd2_poly`, E3.2). **Reference**: both estimates for two sets from one 8-D
# mixture (left) and for a shifted law (right), over the sample size $n$; mean ± sd over repetitions.

# %% tags=["reference"]
d_feat = 8
g0 = gen(0)
means = torch.randn(3, d_feat, generator=g0, dtype=torch.float64) * 1.5
covs = torch.eye(d_feat, dtype=torch.float64).expand(3, d_feat, d_feat) * 0.5
law = nt.GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), means, covs)
shifted = nt.GaussianMixture(law.weights, means + 0.4, covs)
sizes = [10, 20, 50, 100, 200]
curves = {}
for name, other in [("same law", law), ("shifted law", shifted)]:
    for unbiased in (True, False):
        vals = np.array([[metrics.kid(law.sample(n, gen(1000 * n + r)), other.sample(n, gen(5000 * n + r)), unbiased=unbiased)
                          for r in range(REPS)] for n in sizes])
        curves[name, unbiased] = vals
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
for ax, name in zip(axes, ["same law", "shifted law"]):
    for unbiased, c in [(True, "tab:blue"), (False, "tab:red")]:
        v = curves[name, unbiased]
        ax.errorbar(sizes, v.mean(1), yerr=v.std(1), color=c, marker="o", ms=4, capsize=3,
                    label="unbiased (i != j)" if unbiased else "V-statistic (all pairs)")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xscale("log"); ax.set_xlabel("n per set"); ax.set_title(f"reference: KID, {name}")
axes[0].set_ylabel("estimate"); axes[0].legend()
plt.show()
for name in ["same law", "shifted law"]:
    u, b = curves[name, True].mean(1), curves[name, False].mean(1)
    print(f"{name}: unbiased mean at n = 10 / 200: {u[0]:.4f} / {u[-1]:.4f};  V-statistic: {b[0]:.4f} / {b[-1]:.4f}")


# %%
# your result (E3.1): your poly_kernel_sum against the kernel matrix built entry by entry, in blocks of 7 rows
def check_poly_sum(impl):
    a = torch.randn(20, 5, generator=gen(1), dtype=torch.float64)
    b = torch.randn(13, 5, generator=gen(2), dtype=torch.float64)
    K_ab = (a @ b.T / 5 + 1) ** 3
    K_aa = (a @ a.T / 5 + 1) ** 3
    err_all = abs(impl.poly_kernel_sum(a, b, 0.2, 1.0, 3, False, block=7) - float(K_ab.sum()))
    err_diag = abs(impl.poly_kernel_sum(a, a, 0.2, 1.0, 3, True, block=7) - float(K_aa.sum() - K_aa.diagonal().sum()))
    return err_all / float(K_ab.sum()), err_diag / float(K_aa.sum())

out = attempt("E3.1", check_poly_sum, "poly_kernel_sum")
if out is not None:
    results["E3.1"] = {"rel_err_all": out[0], "rel_err_diag": out[1]}
    print(f"relative error, all pairs: {out[0]:.1e};  without the diagonal: {out[1]:.1e}  (threshold 1e-12)")


# %%
# your result (E3.2): your mmd2_poly equals metrics.kid on the same sets, and has mean 0 on two sets from one law
def check_mmd2(impl):
    x, y = law.sample(50, gen(3)), shifted.sample(60, gen(4))
    err = abs(impl.mmd2_poly(x, y, 1 / d_feat, 1.0, 3, True) - metrics.kid(x, y))
    same = np.array([impl.mmd2_poly(law.sample(20, gen(7000 + r)), law.sample(20, gen(8000 + r)), 1 / d_feat, 1.0, 3, True)
                     for r in range(4 * REPS)])
    return err, same.mean(), same.std(ddof=1) / math.sqrt(same.size)

out = attempt("E3.2", check_mmd2, "mmd2_poly")
if out is not None:
    results["E3.2"] = {"err": out[0], "mean_same": out[1], "se_same": out[2]}
    print(f"|yours - metrics.kid| = {out[0]:.1e} (threshold 1e-12);  same law, n = 20: mean {out[1]:+.4f} ± {out[2]:.4f} "
          f"(1 SE; threshold |mean| < 3 SE)")

# %% [markdown]
# ## 2. Paired comparisons, TOST and the four verdicts (E3.3, E3.4)
# The evaluation protocol (`ntrk_minimal.bench`) compares two methods **at a matched fidelity level** (e.g. each at
# its own best energy distance to $p^*$, or at the reward of $p^*$), **paired by seed**: the same $x_T$ and generator for
# both. With per-seed values $a_s, b_s$ and differences $d_s = a_s - b_s$, $s = 1..S$:
# - the paired 95% t interval $\bar d \pm t_{0.975, S-1}\,\mathrm{sd}(d)/\sqrt S$ decides **win** (it lies on the good side of
#   0) or **lose** (on the bad side); "good" is positive when higher is better and negative when lower is better (KID, FD,
#   a distance);
# - otherwise **equivalent** needs a test: TOST with a margin $\delta > 0$ stated *in advance* rejects both
#   $H_0^-: \mu \le -\delta$ (p-value $P(T_{S-1} \ge (\bar d + \delta)/\mathrm{se})$) and $H_0^+: \mu \ge \delta$
#   ($P(T_{S-1} \le (\bar d - \delta)/\mathrm{se})$); equivalent iff TOST's p $< \alpha = 0.05$. Equivalently, the
#   **90%** interval lies inside $(-\delta, \delta)$;
# - else **undecided**: the seeds do not tell. Never "tie": a wide interval that covers 0 is not evidence of equality.
#
# **Reference**: the 18 comparisons of the committed 2-D benchmark (`results/toy2d.json`, 5 evaluation seeds): the paired
# difference and its 95% interval in units of the margin (right = A better), coloured by the verdict the json records.

# %% tags=["reference"]
bench = json.loads((paths.RESULTS / "toy2d.json").read_text())
comps = bench["comparisons"]
direction = {k: (1.0 if m["higher_is_better"] else -1.0) for k, m in bench["world"]["metrics"].items()}
colours = {"win": "tab:green", "lose": "tab:red", "equivalent": "tab:blue", "undecided": "tab:gray"}
fig, ax = plt.subplots(figsize=(10, 6.8), layout="constrained")
num = lambda x: math.nan if x is None else x          # json null: not computable (fewer than 2 paired seeds)
for k, c in enumerate(comps):
    v, sgn = c["verdict"], direction[c["y_key"]]
    lo, hi = sorted([sgn * num(v["lo"]) / c["margin"], sgn * num(v["hi"]) / c["margin"]])
    ax.plot([lo, hi], [k, k], color=colours[v["label"]], lw=2.5)
    ax.plot(sgn * num(v["mean"]) / c["margin"], k, "o", color=colours[v["label"]], ms=5)
ax.axvspan(-1, 1, color="tab:blue", alpha=0.08, label="inside the margin")
ax.axvline(0, color="k", lw=0.6)
ax.set_yticks(range(len(comps)), [c["name"] for c in comps], fontsize=9)
ax.invert_yaxis()
for label, col in colours.items():
    ax.plot([], [], color=col, lw=2.5, label=label)
ax.set_xscale("symlog", linthresh=2)
ax.set_xlabel("paired difference A - B / margin, 95% CI (right = A better; symlog beyond ±2)")
ax.set_title("reference: verdicts of results/toy2d.json")
ax.legend(loc="upper center", bbox_to_anchor=(0.4, -0.09), ncols=5, fontsize=9)
plt.show()
print("verdicts:", {lab: sum(c["verdict"]["label"] == lab for c in comps) for lab in colours})


# %%
# your result (E3.3): your tost on every comparison's paired differences, against the p-values stored in the json
def paired(c):
    a, b = (np.array([np.nan if v is None else v for v in c[s]["values"]], dtype=float) for s in ("a", "b"))
    return a, b


def check_tost(impl):
    worst = 0.0
    for c in comps:
        a, b = paired(c)
        d = (a - b)[np.isfinite(a - b)]
        p, _ = impl.tost(d, c["margin"])
        stored = c["verdict"]["p_tost"]
        stored = math.nan if stored is None else stored
        if not (math.isnan(p) and math.isnan(stored)):
            worst = max(worst, abs(p - stored))
    return worst

out = attempt("E3.3", check_tost, "tost")
if out is not None:
    results["E3.3"] = {"max_p_err": out}
    print(f"max |your TOST p - stored p| over {len(comps)} comparisons: {out:.1e} (threshold 1e-12)")


# %%
# your result (E3.4): your verdict on every comparison, against the labels stored in the json
def check_verdict(impl):
    agree = 0
    for c in comps:
        a, b = paired(c)
        v = impl.verdict(a, b, c["margin"], bench["world"]["metrics"][c["y_key"]]["higher_is_better"])
        agree += v.label == c["verdict"]["label"]
    return agree

out = attempt("E3.4", check_verdict, "verdict")
if out is not None:
    results["E3.4"] = {"agree": out}
    print(f"your verdict agrees with the stored one on {out} of {len(comps)} comparisons")

# %% [markdown]
# ## Check
# Thresholds on the numbers above, per exercise: an implemented exercise must pass its own, whatever the others do.

# %%
THRESHOLDS = {   # exercise -> [(what, holds?)] on its measured numbers
    "E3.1": lambda r: [("kernel sums equal the entry-by-entry sums (rel. < 1e-12)", max(r.values()) < 1e-12)],
    "E3.2": lambda r: [("equal to metrics.kid (< 1e-12)", r["err"] < 1e-12),
                       ("mean 0 on one law (|mean| < 3 SE)", abs(r["mean_same"]) < 3 * r["se_same"])],
    "E3.3": lambda r: [("TOST p-values equal the stored ones (< 1e-12)", r["max_p_err"] < 1e-12)],
    "E3.4": lambda r: [(f"all {len(comps)} verdicts equal the stored ones", r["agree"] == len(comps))],
}
failed, missing = [], [ex for ex in THRESHOLDS if ex not in results]
for ex, rule in THRESHOLDS.items():
    for what, ok in (rule(results[ex]) if ex in results else [("waiting for your code", None)]):
        print(f"{ex}  {'PASS' if ok else 'waiting' if ok is None else 'FAIL'}  {what}")
        if ok is False:
            failed.append(f"{ex}: {what}")
same_u = curves["same law", True].mean(1)
assert np.all(np.abs(same_u) < 3 * curves["same law", True].std(1) / math.sqrt(REPS) + 1e-12), \
    "reference: the unbiased KID must average 0 on one law"
assert np.all(curves["same law", False].mean(1) > 0), "reference: the V-statistic is biased upward"
assert not failed, f"checks failed: {failed}"
print("checks skipped until implemented:", missing) if missing else print("all checks passed")

# %% [markdown]
# ## Summary
# - KID is an **unbiased** MMD$^2$: dropping the $i = j$ terms removes a bias that shrinks like $1/n$, so a value is
#   comparable across sample sizes and with the real-vs-real floor (mean 0); a single estimate can be negative.
# - A comparison is **paired by seed** and made at a **matched fidelity level**; its verdict comes from the paired 95%
#   interval (win / lose) or, failing that, from TOST with a margin fixed in advance (equivalent), else it is undecided.
#   The 2-D benchmark above shows all four: NTRK loses some comparisons, and the json says so with the numbers.
# - Equivalence is not "no significant difference": with 5 seeds most intervals are wide, and TOST is what turns a narrow
#   interval inside the margin into a claim.
#
# ## Exercises (beyond the graded ones)
# 1. Draw 5 seeds of $d_s \sim \mathcal N(0, \sigma^2)$ for $\sigma \in \{0.01, 0.05, 0.2\}$ with margin 0.1: how often is the
#    verdict equivalent, how often undecided? How many seeds does $\sigma = 0.05$ need for equivalent in 80% of draws?
# 2. The biased KID of a method at $n = 50$ against the real-vs-real floor at $n = 500$: which way does the comparison lean?
# 3. Why does `verdict` report undecided when a method misses the level on some seeds, instead of comparing the others?
