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
# # 03 · Whitening: what $W$ does to a reward gradient, and why
#
# NTRK injects the reward gradient *as noise*: $\eta_t = \sqrt{\rho_t}\,W(g_t) + \sqrt{1-\rho_t}\,\epsilon$.
# The whitening operator $W$ maps $g_t$ to a nearby vector that looks like a draw of $\mathcal N(0, I)$.
# This notebook builds the intuition for $W$ one picture at a time.
#
# **What you will learn**
# - the *typical set*: in high dimension a Gaussian sample has norm $\approx\sqrt N$, Gaussian values, no correlation and a flat spectrum;
# - order statistics and their Beta laws, and the **2OS** confidence set (two levels of order statistics) with its bounds $L, U$;
# - the projection *sort → clip → unsort*, step by step — and a place where we checked the paper and found a gap: one pass can leave the set at two levels; repeating it fixes that;
# - tile means and energies, the DCT domain, and the full $W$ = DCT-domain then pixel-domain projections;
# - what $W$ does to genuine noise (almost nothing), to structured inputs, to a real reward gradient, and why it does little in 2-D;
# - the comparison points: norm matching, per-sample standardization and WGNC — and the honest trade-off: whitening a smooth gradient costs most of its direction.
#
# **Prerequisites**: notebooks 01–02 (the four kernels and the $\eta_t$ lens). Spec: `NTRK_SPEC.md`, section 4.

# %%
import math, time
import numpy as np
import torch
import matplotlib.pyplot as plt
from scipy import stats
import ntrk_minimal as nt
from ntrk_minimal import plotting, whitening as wh
from ntrk_minimal.kernels import norm_match, reward_grad

FAST = True                          # False: more draws everywhere
SEED = 0
torch.manual_seed(SEED)
gen = lambda s=SEED: torch.Generator().manual_seed(s)
plotting.use_style()                 # the shared figure style: 110 dpi, fonts >= 9 pt
sym = plotting.signed_scale          # imshow keywords: one symmetric scale for the panels given, zero = white
print("default W:", wh.DEFAULTS)

# %% [markdown]
# ## 1. The typical set: norm concentration
# For $\epsilon \sim \mathcal N(0, I_N)$, $\|\epsilon\|^2 \sim \chi^2_N$: mean $N$, standard deviation $\sqrt{2N}$. So $\|\epsilon\|/\sqrt N$ concentrates at 1 with spread $\approx 1/\sqrt{2N}$.
# In 2-D the "shell" is the whole disc; for an SD latent ($N = 4\cdot64\cdot64 = 16384$) it is a shell of relative width 0.6%.

# %%
dims = [2, 16, 64, 1024, 16384]
fig, ax = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
for d in dims:
    r = torch.randn(2000, d, generator=gen(d)).norm(dim=1) / math.sqrt(d)
    ax[0].hist(r.numpy(), bins=60, range=(0, 2.2), density=True, histtype="step", label=f"N={d}")
    print(f"N={d:6d}: ||eps||/sqrt(N) = {r.mean():.3f} ± {r.std():.3f} (theory spread {1 / math.sqrt(2 * d):.3f})")
ax[0].set_xlabel(r"$\|\epsilon\|/\sqrt{N}$"); ax[0].legend(); ax[0].set_title("norm concentrates")
x = torch.randn(1, 1, 64, 64, generator=gen(1))
ax[1].imshow(x[0, 0], **sym(x)); ax[1].axis("off"); ax[1].set_title("a typical draw: no structure at all"); plotting.colorbar(ax[1])
plt.show()

# %% [markdown]
# ## 2. Order statistics and their Beta laws
# Sort $D$ i.i.d. $\mathcal N(0,1)$ values; the $j$-th smallest, mapped to uniform space by $\Phi$, is $\mathrm{Beta}(j, D-j+1)$. That law is what turns "looks Gaussian" into a *confidence interval per rank*.

# %%
D = 8
vals = torch.randn(20000, D, generator=gen(2), dtype=torch.float64).sort(-1).values
u = torch.special.ndtr(vals).numpy()
fig, ax = plt.subplots(1, 3, figsize=(10.5, 3.0), layout="constrained")
grid = np.linspace(0, 1, 200)
for a, j in zip(ax, (1, 4, 8)):
    a.hist(u[:, j - 1], bins=50, density=True, alpha=0.6)
    a.plot(grid, stats.beta(j, D - j + 1).pdf(grid), "k-")
    a.set_title(f"$\\Phi$(j={j} of D={D}) vs Beta({j},{D - j + 1})")
plt.show()
ks = [stats.kstest(u[:, j - 1], stats.beta(j, D - j + 1).cdf).pvalue for j in (1, 4, 8)]
print("KS p-values against the Beta laws:", [round(float(p), 2) for p in ks])

# %% [markdown]
# ## 3. The 2OS matrix and its bounds
# Reshape $x \in \mathbb R^N$ into $M$ tiles of $D$ entries, sort within each tile, then sort each column over the tiles:
# $Z = \mathrm{sort}_{\text{tiles}}(\mathrm{sort}_{\text{within}}(Y))$. The $\Phi$-value of a tile's $j$-th order statistic is uniform, so the $r$-th smallest of $M$ of them is $\mathrm{Beta}(r, M-r+1)$:
# $$L_{rj} = \Phi^{-1}\big(I^{-1}_{j,D-j+1}(I^{-1}_{r,M-r+1}(\alpha/2))\big),\qquad U = -L[{::}{-1}, {::}{-1}].$$
# Each $Z_{rj}$ falls outside $[L_{rj}, U_{rj}]$ with probability $\alpha$ ($10^{-4}$). Below, four columns $j$ of $Z$ for a noise sample (inside its bands) and for a smooth field (far outside).

# %%
M, D = 256, 64
L, U = nt.order_stat_bounds(M, D)
print("L[0,0], L[255,0], L[0,63], L[128,32] =", [round(float(L[i]), 6) for i in [(0, 0), (255, 0), (0, 63), (128, 32)]])
noise = torch.randn(M, D, generator=gen(3), dtype=torch.float64)
k2 = torch.fft.fftfreq(128)[:, None] ** 2 + torch.fft.fftfreq(128)[None, :] ** 2
smooth = torch.fft.ifft2(torch.fft.fft2(torch.randn(128, 128, generator=gen(4), dtype=torch.float64)) * torch.exp(-k2 / (2 * 0.03 ** 2))).real
smooth = (smooth / smooth.std()).reshape(M, D)
fig, ax = plt.subplots(1, 2, figsize=(10.5, 3.8), sharey=True, layout="constrained")
for a, Y, name in zip(ax, (noise, smooth), ("N(0, I) sample", "smooth field")):
    Z = nt.sort_2os(Y)
    for j, c in zip((0, 21, 42, 63), ("C0", "C1", "C2", "C3")):
        a.fill_between(range(M), L[:, j], U[:, j], color=c, alpha=0.25)
        a.plot(Z[:, j], c, lw=1, label=f"j={j}")
    a.set_title(f"{name}: in set = {bool(nt.in_2os_set(Y))}"); a.set_xlabel("rank r over tiles")
ax[0].set_ylabel("$Z_{rj}$ and its band"); ax[0].legend()
plt.show()

# %% [markdown]
# ## 4. Sort → clip → unsort, step by step
# The projection onto the set: sort, clip $Z$ into $[L, U]$, and put every value back where it came from. A small example ($M = 4$ tiles of $D = 6$, $\alpha = 0.05$ so that the bands are visible):

# %%
M4, D4, a4 = 4, 6, 0.05
Y = torch.randn(M4, D4, generator=gen(5), dtype=torch.float64) * 2.2
S, i_row = Y.sort(-1)
Z, i_col = S.sort(-2)
L4, U4 = nt.order_stat_bounds(M4, D4, a4)
Zc = Z.clamp(L4, U4)
S_back = torch.empty_like(Zc).scatter_(-2, i_col, Zc)
Y_back = torch.empty_like(S_back).scatter_(-1, i_row, S_back)
panels = [(Y, "Y (tiles = rows)"), (S, "sort within tiles"), (Z, "sort over tiles = Z"), (Zc, "clip into [L, U]"), (Y_back, "unsort both")]
fig, ax = plt.subplots(1, 5, figsize=(11, 2.3), layout="constrained")
for a, (m, t) in zip(ax, panels):
    a.imshow(m, **sym(vmax=4)); a.set_title(t); a.set_xticks([]); a.set_yticks([])
plotting.colorbar(ax)
plt.show()
print("entries clipped:", int((Zc != Z).sum()), "of", Z.numel(), "| distance moved:", round(float((Y_back - Y).norm()), 3))
print("library agrees:", torch.allclose(nt.project_2os(Y, a4, repeat=False), Y_back))

# %% [markdown]
# ## 5. The two-level gap: one pass can leave the set
# The paper states that one sort–clip–unsort pass *is* the Euclidean projection onto $\{L \le Z(Y) \le U\}$. That holds for one level ($M = 1$): sorting is then the only permutation. With two levels a tile's entries sit at **different ranks in different columns**, so clipping can reverse two entries of a tile; after unsorting, the result can fail the very bounds it was clipped to.
#
# `project_2os` therefore re-sorts each tile's new values into the tile's own order (never farther: same values, best arrangement) and repeats the pass until the output is in the set. We check all three against a brute-force solver (one small QP per ordering pattern) on $M = 2, D = 3$:

# %%
M2, D2, a2 = 2, 3, 0.05
g = gen(5)
found = []
while len(found) < 3:
    X = torch.randn(M2, D2, generator=g, dtype=torch.float64) * 3 * torch.rand(1, generator=g).item() + torch.randn(M2, 1, generator=g, dtype=torch.float64)
    one = nt.project_2os(X, a2, repeat=False)
    if not nt.in_2os_set(one, a2, tol=1e-12):
        found.append(X)
rows = []
for X in found:
    one, (rep, passes) = nt.project_2os(X, a2, repeat=False), nt.project_2os(X, a2, return_passes=True)
    best = nt.nearest_2os_brute_force(X, a2)
    d1, dr, db = (float((p - X).norm()) for p in (one, rep, best))
    rows.append((d1, dr, db))
    print(f"one pass: dist {d1:.4f} in set {bool(nt.in_2os_set(one, a2))} | repeated ({int(passes)} passes): dist {dr:.4f} "
          f"in set {bool(nt.in_2os_set(rep, a2))} | brute force optimum: {db:.4f}")
X = found[0]
fig, ax = plt.subplots(1, 4, figsize=(11, 2.4), layout="constrained")
for a, (m, t) in zip(ax, [(X, "input"), (nt.project_2os(X, a2, repeat=False), "one pass (leaves set)"),
                          (nt.project_2os(X, a2), "repeated (in set)"), (nt.nearest_2os_brute_force(X, a2), "brute force")]):
    a.imshow(m, **sym(vmax=3))
    for (i, j), v in np.ndenumerate(m.numpy()):
        a.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=plotting.FONT_SMALL)
    a.set_title(t); a.set_xticks([]); a.set_yticks([])
plotting.colorbar(ax)
plt.show()

# %% [markdown]
# The single pass is *closer* than the optimum — it is a lower bound (rearrangement inequality) — but infeasible; the repeated pass is feasible and here equals the brute-force optimum. Not always: `scripts/bench_whitening.py` counts, over more hard cases, how often it matches and how far off it is otherwise (Exercise 3). At realistic sizes ($M = D = 64$) one pass leaves the set for almost every structured input:

# %%
ins = {"smooth field": smooth.reshape(1, M, D), "smooth + noise": (smooth + 0.5 * noise).reshape(1, M, D),
       "1/f-ish (cumsum)": noise.cumsum(-1).reshape(1, M, D) / 4, "noise": noise.reshape(1, M, D)}
for name, Y in ins.items():
    Y = Y.reshape(-1, 64, 64)
    one = nt.project_2os(Y, repeat=False)
    rep, passes = nt.project_2os(Y, return_passes=True)
    d1, dr = (one - Y).flatten(1).norm(dim=1), (rep - Y).flatten(1).norm(dim=1)
    extra = max(0.0, float(((dr / d1.clamp_min(1e-12) - 1) * (d1 > 0)).max() * 100))
    print(f"{name:17s}: one pass in set {int(nt.in_2os_set(one).sum())}/{len(Y)}, passes needed <= {int(passes.max())}, extra distance <= {extra:.2f}%")

# %% [markdown]
# ## 6. Tile statistics: means and energies
# Value bands alone miss structure that lives in whole tiles: a tile whose values are all slightly positive, or a tile with twice the energy of its neighbours. For noise, tile means $\times\sqrt D$ are $\mathcal N(0,1)$ and tile energies about the mean are $\chi^2_{D-1}$ (mapped to $\mathcal N(0,1)$ by its CDF and $\Phi^{-1}$). Each vector of $M$ summaries gets the same order-statistics projection; then every tile is shifted (means) or rescaled about its mean (energies). Here: a blob times noise, 8×8 patches.

# %%
yy, xx = torch.meshgrid(torch.arange(64.), torch.arange(64.), indexing="ij")
blob = torch.exp(-((yy - 20) ** 2 + (xx - 40) ** 2) / (2 * 8.0 ** 2)).double()
bx = (blob * torch.randn(64, 64, generator=gen(6), dtype=torch.float64))[None, None]
bx = bx / bx.norm() * 64
lay = nt.tile_layout((1, 64, 64), "pixel")                  # (64 tiles, 64 entries) = 8x8 patches
def tile_scores(x):
    T = x.reshape(-1)[lay]
    m = T.mean(1) * 8
    e = (T - T.mean(1, keepdim=True)).pow(2).sum(1)
    return m, torch.as_tensor(wh._chi2_to_normal(e.numpy(), 63.0))
after = nt.whiten(bx, domains=("pixel",), stages=("means", "energies"))
Lm, Um = nt.order_stat_bounds(1, 64)
fig, ax = plt.subplots(1, 4, figsize=(11.5, 3.0), layout="constrained")
ax[0].imshow(bx[0, 0], **sym(bx, after)); ax[0].set_title("blob x noise"); ax[0].axis("off")
ax[1].imshow(after[0, 0], **sym(bx, after)); ax[1].set_title("after means + energies"); ax[1].axis("off")
plotting.colorbar(ax[:2])
for a, k, name in ((ax[2], 0, "tile means x sqrt(D)"), (ax[3], 1, "tile energies (normal scores)")):
    a.fill_between(range(64), Lm[0], Um[0], color="gray", alpha=0.3, label="band")
    a.plot(tile_scores(bx)[k].sort().values, "r.", ms=3, label="before")
    a.plot(tile_scores(after)[k].sort().values, "b.", ms=3, label="after")
    a.set_title(name); a.set_xlabel("rank")
ax[3].legend()
plt.show()
outside = lambda v: int(((v.sort().values < Lm[0] - 1e-9) | (v.sort().values > Um[0] + 1e-9)).sum())   # 1e-9: rounding
print("tile energy scores outside the band: before", outside(tile_scores(bx)[1]), "after", outside(tile_scores(after)[1]),
      "| largest before/after:", round(float(tile_scores(bx)[1].max()), 2), "/", round(float(tile_scores(after)[1].max()), 2))


# %% [markdown]
# ## 7. The DCT view: spectra before and after $W$
# An orthonormal transform maps $\mathcal N(0, I)$ to $\mathcal N(0, I)$, so the same projections can run in a second domain where pixel-space checks are blind: spatial correlation is a *non-flat spectrum*. $W$ works in the 2-D DCT per channel (tiles = radial frequency bands of 64 coefficients), then in pixel space (8×8 patches): means → energies → values in each. Radially averaged power spectra:

# %%
def radial_power(x):
    P = torch.fft.fft2(x.double()).abs().pow(2).mean(dim=tuple(range(x.ndim - 2)))
    f = (torch.fft.fftfreq(x.shape[-2])[:, None] ** 2 + torch.fft.fftfreq(x.shape[-1])[None, :] ** 2).sqrt()
    bins = torch.bucketize(f.flatten(), torch.linspace(0, 0.71, 25))
    return torch.stack([P.flatten()[bins == b].mean() for b in range(1, 25)]) / x[0].numel()
sm = torch.fft.ifft2(torch.fft.fft2(torch.randn(1, 4, 64, 64, generator=gen(7), dtype=torch.float64)) * torch.exp(-(torch.fft.fftfreq(64)[:, None] ** 2 + torch.fft.fftfreq(64)[None, :] ** 2) / (2 * 0.03 ** 2))).real
sm_noise = sm / sm.std() + 0.5 * torch.randn(1, 4, 64, 64, generator=gen(8), dtype=torch.float64)
fig, ax = plt.subplots(1, 3, figsize=(11, 3.3), layout="constrained")
for name, x0 in (("smooth + noise", sm_noise), ("noise", torch.randn(1, 4, 64, 64, generator=gen(9), dtype=torch.float64))):
    x0 = x0 / x0.norm() * 128
    ax[0].semilogy(radial_power(x0).numpy(), label=f"{name}, before")
    ax[0].semilogy(radial_power(nt.whiten(x0)).numpy(), "--", label=f"{name}, after W")
ax[0].set_xlabel("radial frequency bin"); ax[0].set_title("power spectrum"); ax[0].legend()
pair = (sm_noise[0, 0], nt.whiten(sm_noise)[0, 0])         # one colour scale for input and output
ax[1].imshow(pair[0], **sym(*pair)); ax[1].set_title("smooth + noise"); ax[1].axis("off")
ax[2].imshow(pair[1], **sym(*pair)); ax[2].set_title("W(smooth + noise)"); ax[2].axis("off")
plotting.colorbar(ax[1:])
plt.show()
for k, v in nt.whiteness(nt.whiten(sm_noise), sm_noise).items():
    print(f"W(smooth + noise) {k:8s} {float(v):+.3f}   (input: {float(nt.whiteness(sm_noise)[k]) if k != 'cosine' else 1.0:+.3f})")

# %% [markdown]
# ## 8. Pass-through: genuine noise is (almost) untouched
# A projection leaves points inside its set unchanged; an $\mathcal N(0, I)$ draw is inside every set with probability about $1 - \alpha$ per set, and when a bound does bite the move is tiny. WGNC, by contrast, forces *equalities* (every block exactly at the mean modulus and energy), so it moves every noise sample a little.

# %%
n_draws = 100 if FAST else 300
eps = torch.randn(n_draws, 4, 64, 64, generator=gen(10))
cos = {name: nt.whiteness(f(eps), eps)["cosine"] for name, f in
       (("W", nt.whiten), ("WGNC", nt.wgnc_project), ("standardize", nt.standardize), ("norm match", norm_match))}
for name, c in cos.items():
    print(f"{name:12s} min cosine over {n_draws} draws: {c.min().item():.7f}")
fig, ax = plt.subplots(figsize=(9, 3.6), layout="constrained")
for name, c in cos.items():
    gap = (1 - c.double()).numpy()
    moved = gap > 0                  # a cosine of exactly 1 has no logarithm: counted, not drawn
    zeros = int((~moved).sum())
    ax.hist(np.log10(gap[moved]), bins=50, range=(-16, -1), histtype="step",   # -16: float64 rounding
            label=name + (f" ({zeros} of {len(gap)} draws: cosine = 1, not drawn)" if zeros else ""))
ax.set_xlabel("log10(1 - cosine)"); ax.legend(); ax.set_title("how far each map moves genuine noise")
plt.show()

# %% [markdown]
# ## 9. Structured inputs and the honest trade-off
# Six structured inputs (shape 4×64×64). Diagnostics per output — white noise has norm²/N = 1, lag-1 = 0, spectral flatness 0.561 and a KS distance to $\mathcal N(0,1)$ of about 0.007. "pixel values only" is one value-stage projection in pixel space.

# %%
C, H, Wd = 4, 64, 64
fy = torch.fft.fftfreq(H)[:, None] ** 2 + torch.fft.fftfreq(Wd)[None, :] ** 2
lowpass = lambda s: (lambda v: v / v.std())(torch.fft.ifft2(torch.fft.fft2(torch.randn(1, C, H, Wd, generator=gen(s), dtype=torch.float64)) * torch.exp(-fy / (2 * 0.03 ** 2))).real)
spike = torch.zeros(1, C, H, Wd, dtype=torch.float64); spike[0, 1, 10, 30] = 1
inputs = {"smooth": lowpass(11), "constant": torch.ones(1, C, H, Wd, dtype=torch.float64), "spike": spike,
          "checkerboard": ((yy + xx) % 2 * 2 - 1).double().expand(1, C, H, Wd).clone(),
          "blob x noise": blob * torch.randn(1, C, H, Wd, generator=gen(12), dtype=torch.float64),
          "smooth + noise": lowpass(13) + 0.5 * torch.randn(1, C, H, Wd, generator=gen(14), dtype=torch.float64)}
methods = {"W": nt.whiten, "pixel values only": lambda x: nt.whiten(x, domains=("pixel",), stages=("values",)),
           "norm match": norm_match, "standardize": nt.standardize, "WGNC": nt.wgnc_project}
table = {}
print(f"{'input':15s} {'method':18s} {'norm2':>6s} {'lag1':>6s} {'flat':>6s} {'KS':>6s} {'cos':>6s}")
for iname, x0 in inputs.items():
    for mname, f in methods.items():
        d = {k: float(v) for k, v in nt.whiteness(f(x0), x0).items()}
        table[iname, mname] = d
        print(f"{iname:15s} {mname:18s} {d['norm2']:6.3f} {d['lag1']:+6.3f} {d['flatness']:6.3f} {d['ks']:6.3f} {d['cosine']:+6.3f}")
fig, ax = plt.subplots(len(inputs), 4, figsize=(8.5, 11.5), layout="constrained")
for r, (iname, x0) in enumerate(inputs.items()):
    row = [("input", x0), ("W", nt.whiten(x0)), ("pixel values only", methods["pixel values only"](x0)), ("WGNC", nt.wgnc_project(x0))]
    for c, (t, img) in enumerate(row):
        ax[r, c].imshow(img[0, 0, :32, :32], **sym(vmax=3)); ax[r, c].set_xticks([]); ax[r, c].set_yticks([])
        if r == 0: ax[r, c].set_title(t)
    ax[r, 0].set_ylabel(iname)
plotting.colorbar(ax, extend="both", label="value (one scale for all panels: white noise lies within ±3)")
plt.show()

# %% [markdown]
# Read the table row by row:
# - **W** turns every input into something close to white (lag-1 near 0, flatness near 0.56, norm²/N 0.9–1) — but for a *purely smooth* field it keeps only a small cosine: such a field is nowhere near any typical noise, and the nearest typical point is mostly new noise. Where the input has a noise-like component (blob × noise, smooth + noise) $W$ keeps cosine ≈ 0.5–0.6.
# - **pixel values only** keeps more direction but leaves the correlation (lag-1 large, flatness low): the values *look* Gaussian one at a time, the picture does not. This is the trade-off at the heart of $W$.
# - **norm match** and **standardize** only fix the scale: structure passes through untouched.
# - **WGNC** fixes the spectrum per block but its marginals are off for structured inputs (large KS) and it distorts genuine noise (section 8).

# %% [markdown]
# ## 10. A real reward gradient before and after $W$
# The 64-D digits problem (notebook 04): an exact Gaussian-mixture denoiser fitted to 8×8 digits, reward = log-probability of class 3 under a trained classifier. We take $g_t = \nabla_{x_t} r(\hat x_0(x_t))$ at three noise levels. Then a 64×64 image reward with a smooth gradient, $r(x) = \langle b, x\rangle$ for a blob template $b$.

# %%
from ntrk_minimal.digits import digits_problem
pb = nt.digits.digits_problem()
sched = pb.schedule
x0 = pb.mixture.sample(8, generator=gen(15))
grads, cos_d = {}, {}
for i in (3, 12, 21):
    t, ab = sched.timesteps[i], float(sched.ab_t[i])
    x_t = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * torch.randn(x0.shape, generator=gen(16 + i), dtype=x0.dtype)
    _, _, g = reward_grad(pb.model, pb.reward, x_t, t, ab, i)
    grads[i] = g
    cos_d[i] = nt.whiteness(nt.whiten(g), g)["cosine"]
    raw = nt.whiteness(g)
    print(f"step {i:2d} (t={int(t):3d}): cos(W(g), g) min {cos_d[i].min():.4f} | raw lag-1 {raw['lag1'].mean():+.3f}, KS {raw['ks'].mean():.3f}")
fig, ax = plt.subplots(3, 1, figsize=(9, 4.8), layout="constrained")
g = grads[12]
unit = (nt.whiten(g), norm_match(g))                    # both unit RMS: one colour scale
for a, (img, t, scale) in zip(ax, [(g, "g_t (step 12), 8 digits", sym(g)), (unit[0], "W(g_t)", sym(*unit)),
                                   (unit[1], "norm match(g_t)", sym(*unit))]):
    a.imshow(torch.cat([im.reshape(8, 8) for im in img], 1), **scale); a.set_title(t); a.axis("off")
    plotting.colorbar(a)
plt.show()

# %%
template = (blob / blob.norm() * 64)[None, None].float()
reward = nt.LinearReward(template.flatten())
xg = torch.randn(1, 1, 64, 64, generator=gen(17)).requires_grad_(True)
(g_img,) = torch.autograd.grad(reward(xg).sum(), xg)         # grad r = b: smooth
noisy_g = g_img + 1.0 * torch.randn(1, 1, 64, 64, generator=gen(18))   # a gradient with a noise-like part
fig, ax = plt.subplots(1, 4, figsize=(11, 2.9), layout="constrained")
res = {}
panels = [(g_img, "smooth gradient b"), (nt.whiten(g_img), "W(b)"), (noisy_g, "b + noise"), (nt.whiten(noisy_g), "W(b + noise)")]
for a, (img, t) in zip(ax, panels):
    a.imshow(img[0, 0], **sym(*(p for p, _ in panels))); a.axis("off"); a.set_title(t)   # one scale for all four
plotting.colorbar(ax)
plt.show()
res["smooth"] = float(nt.whiteness(nt.whiten(g_img), g_img)["cosine"])
res["smooth+noise"] = float(nt.whiteness(nt.whiten(noisy_g), noisy_g)["cosine"])
res["smooth+noise vs b"] = float(nt.whiteness(nt.whiten(noisy_g), g_img)["cosine"])
print({k: round(v, 3) for k, v in res.items()})

# %% [markdown]
# $W$ leaves the digits gradients essentially untouched (cosine ≈ 1) — **not** because they are white: their lag-1 correlation is ≈ 0.4 (noise: 0 ± 0.13 at $N = 64$) and their marginals are far from Gaussian. At $N = 64$ with $\alpha = 10^{-4}$ the confidence sets are simply wide: a 64-D vector must be very atypical before any bound bites. That is why, in the 64-D benchmark, $W$ and plain norm matching give the same numbers.
#
# The 64×64 image gradient is the other extreme. Whitening the smooth gradient $b$ keeps only a small part of its direction. With a noise-like part added, $W(b + \text{noise})$ keeps most of the direction *of its input* — but little of the direction of $b$ itself: $W$ keeps the noise, not the signal. What NTRK gains from $W$ must therefore come from the *learned* denoiser staying on-distribution (notebooks 05–06), not from a better direction.

# %% [markdown]
# ## 11. Why $W$ does little in 2-D
# With $N = 2$ there is no thin shell (section 1) and one tile of two values: the confidence sets at $\alpha = 10^{-4}$ are wide enough to contain every unit-RMS vector. So $W$ = norm matching, except in a sliver where the two coordinates nearly coincide (the energy bound $\chi^2_1 \ge 4\cdot10^{-9}$).

# %%
g2 = torch.randn(2000, 2, generator=gen(19), dtype=torch.float64) * torch.tensor([3.0, 0.5], dtype=torch.float64)
diff = (nt.whiten(g2) - norm_match(g2)).abs().amax(1)
L2, U2 = nt.order_stat_bounds(1, 2)
print("2-D: value bands for [min, max] of one tile:", [[round(float(v), 2) for v in b[0]] for b in (L2, U2)], "vs |entries| <= sqrt(2) = 1.414")
print("share of 2000 gradients where W differs from norm matching by > 1e-9:", float((diff > 1e-9).double().mean()))
theta = torch.linspace(0, 2 * math.pi, 400, dtype=torch.float64)
ring = torch.stack([theta.cos(), theta.sin()], 1) * 1.3
fig, ax = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
e2 = torch.randn(2000, 2, generator=gen(20))
ax[0].scatter(*e2.T.numpy(), s=2, alpha=0.4, label="N(0, I) draws"); ax[0].plot(*nt.whiten(ring).T.numpy(), "r", label="W(any direction)")
ax[0].set_aspect("equal"); ax[0].legend(); ax[0].set_title("2-D: W maps every direction\nto the circle r=sqrt(2)")
ax[1].hist(e2.norm(dim=1).numpy(), bins=50, density=True); ax[1].axvline(math.sqrt(2), color="r"); ax[1].set_title("|eps| in 2-D: no shell")
plt.show()

# %% [markdown]
# ## 12. Cost
# $W$ runs once per sampling step; it must be negligible next to a denoiser forward + backward. (CPU, one thread; timings vary by machine.)

# %%
# NBVAL_IGNORE_OUTPUT
torch.set_num_threads(1)
for shape in [(1, 4, 64, 64), (500, 64), (2000, 2)]:
    x = torch.randn(shape)
    nt.whiten(x)
    ts = []
    for _ in range(5):
        t0 = time.perf_counter(); nt.whiten(x); ts.append(time.perf_counter() - t0)
    print(f"W on {shape}: {1e3 * sorted(ts)[2]:.1f} ms per call")

# %% [markdown]
# ## Check

# %%
assert abs(float(L[0, 0]) + 5.813892) < 1e-5 and abs(float(L[128, 32]) + 0.027296) < 1e-5
assert all(db - 1e-6 <= dr <= 1.05 * db and d1 <= db + 1e-6 for d1, dr, db in rows)    # brute force brackets
assert cos["W"].min() > 0.99999 and cos["WGNC"].min() < cos["W"].min()                # pass-through
for iname in inputs:
    d = table[iname, "W"]
    assert abs(d["lag1"]) < 0.2 and d["flatness"] > 0.35 and 0.85 < d["norm2"] < 1.05, iname
assert table["smooth", "pixel values only"]["lag1"] > 0.5 > table["smooth", "W"]["cosine"]  # the trade-off
assert table["smooth + noise", "W"]["cosine"] > 0.3
assert res["smooth"] < 0.5 < res["smooth+noise"] + 0.3
assert min(float(c.min()) for c in cos_d.values()) > 0.99                              # digits gradients: W ~ norm match
assert outside(tile_scores(bx)[1]) > 10 and outside(tile_scores(after)[1]) == 0          # energies stage lands in its band
assert float((diff > 1e-9).double().mean()) < 0.01                                     # 2-D: W = norm matching
print("all checks passed")

# %% [markdown]
# ## Summary
# - A Gaussian sample in high dimension is **typical**: norm $\approx\sqrt N$, Gaussian values, no correlation, flat spectrum. $W$ projects onto confidence sets (level $1-\alpha$, $\alpha = 10^{-4}$) that encode these properties.
# - The **2OS set** bounds every two-level order statistic $Z_{rj}$ by nested Beta quantiles; the projection is sort → clip → unsort.
# - **We checked the paper's claim** that one pass is the exact projection: false at two levels (a clip can reverse two entries of a tile). One pass is a lower bound on the distance; repeating (with tiles re-sorted into their own order) lands in the set and matched brute force in our small cases.
# - Tile means and energies catch block structure; the DCT domain catches correlation; $W$ = DCT-domain then pixel-domain projections.
# - Genuine noise passes through with cosine > 0.99999 (WGNC: ≈ 0.988). Structured inputs come out close to white — **at a price**: a smooth gradient keeps only a small part of its direction; value-only whitening keeps more direction but leaves the correlation.
# - In 2-D $W$ is norm matching; on the digits problem real gradients are already noise-like and $W \approx$ norm matching. $W$'s purpose can only show with a learned denoiser.
#
# ## Exercises
# 1. Set `alpha=0.01` in `nt.whiten`: how do pass-through (section 8) and the structured-input diagnostics (section 9) change? Is there an $\alpha$ that whitens the smooth field's lag-1 to 0.01 while keeping pass-through > 0.99999?
# 2. Run `nt.whiten(x, cycles=2)` and `stages=("values",)` with both domains: which stage buys which diagnostic?
# 3. Find an $M=3, D=2$ input where the repeated pass is *not* the brute-force optimum (`nt.nearest_2os_brute_force`). How large is the gap?
# 4. Replace the 8×8 pixel patches by 16×4 patches (`tile_size=(16, 4)`): what happens to a vertically striped input?
# 5. (Harder) The confidence sets treat each $Z_{rj}$ separately: a sample can sit at $L$ in every entry at once. Propose a test statistic that would catch that, and check whether $W$'s outputs pass it.
