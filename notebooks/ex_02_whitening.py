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
# # Exercise sheet 2 · Whitening: order-statistics bounds and the projections behind $W$
#
# **What you will learn** (by writing it)
# - where the 2OS bounds $L, U$ come from: order statistics of uniforms are Beta-distributed (E2.1);
# - the sort–clip–unsort projection onto $\{Y : L \le Z(Y) \le U\}$, and why one pass is not always enough (E2.2);
# - a tile-statistic projection: tile means that look like those of white noise (E2.3).
#
# **Prerequisites**: sheet 1; the whitening notebook (docs/METHOD.md section 4: typical sets, 2OS); order statistics.
#
# **How this sheet works.** You implement the `TODO`s of sheet 2 in `ntrk_student.py` (next to this notebook). Each part shows a
# **reference figure** from the library, then a **your result** cell with a threshold; the notebook runs top to bottom before you
# write anything. Each check re-reads `ntrk_student.py` (`importlib.reload`: save the file, re-run the cell, no kernel
# restart) and uses your code only for its own exercise. Public tests: `python -m pytest tests -q -k E2` (in the folder
# that holds `ntrk_student.py`); the instructor's grader adds hidden cases.

# %% [markdown] tags=["solution-only"]
# *This is the solution notebook (`notebooks/`, run by CI); `make assignments` generates the student version in `assignments/student/` (this cell is dropped there).*

# %%
import importlib
import math
import numpy as np
import torch
import matplotlib.pyplot as plt
from ntrk_minimal import plotting, whitening as wh

from ntrk_minimal import kernels, metrics
from ntrk_minimal.bench import stats as protocol

IMPL = "ntrk_minimal.whitening"        # the exercised functions: the library (solution) or your ntrk_student.py
LIBRARY = (wh, kernels, metrics, protocol)          # where the reference of every exercise lives

FAST = True           # smaller Monte Carlo sizes; the thresholds hold either way
N_MC = 4000 if FAST else 20000
plotting.use_style()  # the shared figure style: 110 dpi, fonts >= 9 pt
gen = lambda seed: torch.Generator().manual_seed(seed)
results = {}          # exercise -> measured number, filled by the "your result" cells


def attempt(exercise, fn, *own):
    """Check one exercise: fn(impl) with your latest ntrk_student.py (re-read at every check), in which only the
    names in `own` are yours and every other exercised function is the library's. A stub is reported, not raised."""
    impl = importlib.import_module(IMPL)
    if IMPL == "ntrk_student":
        impl = importlib.reload(impl)                   # your saved edits take effect here
        for name in impl.__all__:
            if name not in own and not isinstance(getattr(impl, name), type):
                setattr(impl, name, next(getattr(m, name) for m in LIBRARY if hasattr(m, name)))
    try:
        return fn(impl)
    except NotImplementedError as e:
        print(f"[{exercise}] waiting for your code: {str(e)[:120]}...")
        return None


# %% [markdown]
# ## 1. The 2OS bounds (E2.1)
# Cut a vector into $M$ tiles of $D$ entries, $Y \in \mathbb R^{M\times D}$; sort each tile, then sort each column over the tiles:
# $Z = \text{sort}_{\text{tiles}}(\text{sort}_{\text{within}}(Y))$. For white noise, in uniform space the $j$-th smallest of $D$ values is
# $\text{Beta}(j, D-j+1)$, its CDF value is uniform for every tile, so the $r$-th smallest of those $M$ values is $\text{Beta}(r, M-r+1)$:
# $$L[r,j] = \Phi^{-1}\Big(I^{-1}_{j,\,D-j+1}\big(I^{-1}_{r,\,M-r+1}(\alpha/2)\big)\Big), \qquad U = -L[::-1, ::-1].$$
# Each $Z[r, j]$ falls below $L[r,j]$ with probability exactly $\alpha/2$. **Reference**: bounds (lines) for three ranks $r$ against the
# empirical $\alpha/2$ and $1-\alpha/2$ quantiles of $Z$ over white-noise samples (dots), $M = 16$, $D = 8$, $\alpha = 0.05$.

# %% tags=["reference"]
M, D, ALPHA = 16, 8, 0.05
L_ref, U_ref = wh.order_stat_bounds(M, D, ALPHA)
Z = wh.sort_2os(torch.randn(N_MC, M, D, generator=gen(0), dtype=torch.float64))
q_lo, q_hi = Z.quantile(ALPHA / 2, dim=0), Z.quantile(1 - ALPHA / 2, dim=0)
fig, ax = plt.subplots(figsize=(9, 4.0), layout="constrained")
for r, c in zip([0, 7, 15], ["tab:blue", "tab:green", "tab:red"]):
    j = np.arange(1, D + 1)
    ax.fill_between(j, L_ref[r].numpy(), U_ref[r].numpy(), color=c, alpha=0.15)
    ax.plot(j, q_lo[r].numpy(), "o", color=c, ms=3); ax.plot(j, q_hi[r].numpy(), "o", color=c, ms=3, label=f"r = {r + 1}")
ax.set_xlabel("order j within a tile"); ax.set_ylabel("Z[r, j]"); ax.legend()
ax.set_title("reference: [L, U] bands vs empirical quantiles")
plt.show()
print("largest gap between bound and empirical quantile:",
      round(max((q_lo - L_ref).abs().max().item(), (q_hi - U_ref).abs().max().item()), 2))


# %%
# your result: your bounds against the library's, and their coverage on fresh white noise
def check_bounds(impl):
    L, U = (torch.as_tensor(np.asarray(a, dtype=np.float64).copy()) for a in impl.order_stat_bounds_np(M, D, ALPHA))
    L_big, _ = impl.order_stat_bounds_np(256, 64, 1e-4)
    err = max((L - L_ref).abs().max().item(), (U - U_ref).abs().max().item(),
              float(np.abs(np.asarray(L_big) - wh.order_stat_bounds(256, 64, 1e-4)[0].numpy()).max()))
    Zf = wh.sort_2os(torch.randn(N_MC, M, D, generator=gen(1), dtype=torch.float64))
    tail = torch.stack([(Zf < L).double().mean(0), (Zf > U).double().mean(0)])
    return err, (tail - ALPHA / 2).abs().mean().item()

out = attempt("E2.1", check_bounds, "order_stat_bounds_np")
if out is not None:
    results["E2.1"] = {"bounds_err": out[0], "tail_dev": out[1]}
    print("max |L - L_ref| < 1e-9:", out[0] < 1e-9,
          "  mean |tail frequency - alpha/2| < 0.01:", out[1] < 0.01)

# %% [markdown]
# ## 2. Sort, clip, unsort — until the point is in the set (E2.2)
# Projecting onto $\{Y : L \le Z(Y) \le U\}$: sort (within tiles, then over tiles), clip $Z$ into $[L, U]$, undo the column sort, undo the
# row sort. The paper calls one such pass the exact projection. **It is not always**: the bounds are monotone, so the clipped $Z$ is
# doubly sorted, but one tile's entries sit at different ranks in different columns; clipping can reverse their order inside the
# tile, and after unsorting the point can leave the set (`project_2os(..., repeat=False)` is the paper's single pass). The library
# instead re-sorts each tile's new values into the tile's own order (never farther from the input: rearrangement inequality) and
# repeats the pass until $Z$ is inside $[L, U]$; you write the sorts, the clip and the unsorts, the repetition is given.
# **Reference**: a smooth ramp cut into $8 \times 8$ tiles before and after the projection, and how often the paper's single pass
# leaves the set on structured inputs.

# %% tags=["reference"]
A = 1e-3
ramp = torch.linspace(-3, 3, 64, dtype=torch.float64).reshape(1, 8, 8)
proj, passes = wh.project_2os(ramp, A, return_passes=True)
fig, ax = plt.subplots(1, 2, figsize=(8.5, 3.9), layout="constrained")
for a, img, title in [(ax[0], ramp[0], "input (a ramp)"), (ax[1], proj[0], f"projected (passes: {int(passes[0])})")]:
    a.imshow(img.numpy(), **plotting.signed_scale(vmax=3)); a.set_title(title); a.axis("off")   # one scale, zero = white
plotting.colorbar(ax)
plt.show()
structured = torch.randn(200, 16, 8, generator=gen(2), dtype=torch.float64) ** 3 \
    + torch.linspace(-2, 2, 128, dtype=torch.float64).reshape(1, 16, 8)
one_pass = wh.project_2os(structured, A, repeat=False)
repeated, passes_s = wh.project_2os(structured, A, return_passes=True)
print("ramp in the set after projection:", bool(wh.in_2os_set(proj, A).all()))
print("paper's single pass outside the set:", int((~wh.in_2os_set(one_pass, A)).sum()), "of 200 structured inputs;",
      "repeated passes outside:", int((~wh.in_2os_set(repeated, A)).sum()), f"(max passes {int(passes_s.max())})")


# %%
# your result: your project_tiles on the same inputs: in the set, equal to the reference, points of the set untouched
def check_project(impl):
    out, p = impl.project_tiles(structured.clone(), A, 100)
    ref, p_ref = wh.project_tiles(structured.clone(), A, 100)
    noise = torch.randn(50, 16, 8, generator=gen(3), dtype=torch.float64)
    noise = noise[wh.in_2os_set(noise, A)]
    fixed, _ = impl.project_tiles(noise.clone(), A, 100)
    return (bool(wh.in_2os_set(out, A, tol=1e-12).all()), (out - ref).abs().max().item(),
            bool(torch.equal(p, p_ref)), bool(torch.equal(fixed, noise)))

out = attempt("E2.2", check_project, "project_tiles")
if out is not None:
    results["E2.2"] = dict(zip(["proj_in_set", "proj_err", "proj_passes", "proj_fixed"], out))
    print("all outputs in the set:", out[0], "  max |yours - reference| < 1e-12:", out[1] < 1e-12,
          "  same pass counts:", out[2], "  points of the set unchanged:", out[3])

# %% [markdown]
# ## 3. A tile-statistic projection: tile means (E2.3)
# For white noise, each tile mean times $\sqrt D$ is $\mathcal N(0, 1)$, so the $M$ scaled means form one "tile" of $M$ values whose
# order statistics have the (one-level) bounds `order_stat_bounds(1, M)`. The stage projects them (`project_vector`) and shifts each
# tile by its change of mean, leaving the tile's shape alone. **Reference**: scaled tile means of a sample with three atypical tiles,
# sorted, before and after, inside the band $[L, U]$.

# %% tags=["reference"]
Mt, Dt, At = 32, 8, 1e-3
T = torch.randn(1, Mt, Dt, generator=gen(4), dtype=torch.float64)
T[0, [3, 11, 20]] += torch.tensor([3.0, -2.5, 4.0], dtype=torch.float64)[:, None]
T_ref = wh.stage_means(T.clone(), At, 100)
Lm, Um = wh.order_stat_bounds(1, Mt, At)
fig, ax = plt.subplots(figsize=(9, 3.8), layout="constrained")
r = np.arange(1, Mt + 1)
ax.fill_between(r, Lm[0].numpy(), Um[0].numpy(), color="tab:gray", alpha=0.25, label="[L, U]")
ax.plot(r, (T.mean(-1) * math.sqrt(Dt)).sort(-1).values[0].numpy(), "o", ms=3, label="before")
ax.plot(r, (T_ref.mean(-1) * math.sqrt(Dt)).sort(-1).values[0].numpy(), "x", ms=4, label="after")
ax.set_xlabel("rank among the tile means"); ax.legend()
ax.set_title("reference: sorted tile means * sqrt(D)")
plt.show()
moved = int((T_ref != T).any(-1).sum())
print("tiles moved:", moved, "of", Mt)


# %%
# your result: your stage_means on the same input
def check_means(impl):
    out = impl.stage_means(T.clone(), At, 100)
    dev = lambda x: x - x.mean(-1, keepdim=True)
    in_set = bool(wh.in_2os_set((out.mean(-1) * math.sqrt(Dt))[:, None, :], At, tol=1e-9).all())
    return in_set, (out - T_ref).abs().max().item(), (dev(out) - dev(T)).abs().max().item()

out = attempt("E2.3", check_means, "stage_means")
if out is not None:
    results["E2.3"] = dict(zip(["means_in_set", "means_err", "means_shape_err"], out))
    print("tile means in their set:", out[0], "  max |yours - reference| < 1e-12:", out[1] < 1e-12,
          "  tile shapes kept:", out[2] < 1e-12)

# %% [markdown]
# ## Check
# Thresholds on the numbers above, per exercise: an implemented exercise must pass its own, whatever the others do.

# %%
THRESHOLDS = {   # exercise -> [(what, holds?)] on its measured numbers
    "E2.1": lambda r: [("max |L - L_ref| < 1e-9", r["bounds_err"] < 1e-9),
                       ("mean |tail frequency - alpha/2| < 0.01", r["tail_dev"] < 0.01)],
    "E2.2": lambda r: [("outputs in the set", r["proj_in_set"]), ("equal to the reference (< 1e-12)", r["proj_err"] < 1e-12),
                       ("same pass counts", r["proj_passes"]), ("points of the set unchanged", r["proj_fixed"])],
    "E2.3": lambda r: [("tile means in their set", r["means_in_set"]), ("equal to the reference (< 1e-12)", r["means_err"] < 1e-12),
                       ("tile shapes kept (< 1e-12)", r["means_shape_err"] < 1e-12)],
}
failed, missing = [], [ex for ex in THRESHOLDS if ex not in results]
for ex, rule in THRESHOLDS.items():
    for what, ok in (rule(results[ex]) if ex in results else [("waiting for your code", None)]):
        print(f"{ex}  {'PASS' if ok else 'waiting' if ok is None else 'FAIL'}  {what}")
        if ok is False:
            failed.append(f"{ex}: {what}")
assert bool(wh.in_2os_set(proj, A).all()) and bool(wh.in_2os_set(repeated, A).all()) and moved >= 1, \
    "reference: the projections do their job"
assert not failed, f"checks failed: {failed}"
print("checks skipped until implemented:", missing) if missing else print("all checks passed")

# %% [markdown]
# ## Summary
# - The 2OS bounds are two nested Beta quantiles mapped through $\Phi^{-1}$; each entry of $Z$ leaves its interval with probability
#   exactly $\alpha$ — a Monte Carlo check verifies an implementation without trusting a reference.
# - Sort–clip–unsort is the projection's building block, but the paper's single pass can leave the set when clipping reverses an
#   order inside a tile (the count above is measured, not assumed); re-sorting and repeating until the point is feasible fixes that.
# - Tile statistics (means, energies) are projected with the same machinery, one level down; a stage moves only atypical tiles and
#   leaves typical ones bit for bit.
#
# ## Exercises (beyond the graded ones)
# 1. Write the energies stage by analogy with E2.3: tile energies about the mean are $\chi^2_{D-1}$; map them to $\mathcal N(0,1)$ with
#    the chi-square CDF and $\Phi^{-1}$, project, map back, rescale. Compare with `wh.stage_energies`.
# 2. Find (by random search at $M = 2$, $D = 3$, $\alpha = 0.05$) an input for which the single pass (`repeat=False`) leaves the set.
#    How far is the repeated-pass output from the input, compared with the one-pass point?
# 3. How does the share of multi-pass inputs in part 2 change with $\alpha$ and with the tile size $D$?
