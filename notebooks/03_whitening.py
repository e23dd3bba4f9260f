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
# This notebook builds $W$ one picture at a time, then shows, with a trained UNet, why a denoiser cares.
#
# **What you will learn**
# - the *typical set* of $\mathcal N(0, I_N)$ and four diagnostics that test it: norm, lag-1 correlation, spectral flatness, KS distance;
# - order statistics and their Beta laws; the one-tile confidence envelope as a QQ plot; the **2OS** set (two levels of order statistics) with its bounds $L, U$;
# - the projection *sort → clip → unsort*, entry by entry — and a place where we checked the paper and found a gap (one pass can leave the set; repeating fixes it);
# - how often a genuine noise draw lies in the set (far less often than $1-\alpha$) and why $W(\epsilon) \approx \epsilon$ holds anyway;
# - tile means and energies, the tile layouts (pixel patches, radial DCT bands), and $W$ stage by stage;
# - the honest trade-off (whitening a smooth gradient costs most of its direction), the artefacts $W$ leaves, and what a **trained UNet** does with raw versus whitened gradients fed in as noise.
#
# **Prerequisites**: notebooks 01–02 (the four kernels and the $\eta_t$ lens). The method in our words, with the
# choices we made: [`docs/METHOD.md`](../docs/METHOD.md), section 4. About 2 minutes on 2 CPU cores.

# %%
import math, time
import numpy as np
import torch
import matplotlib.pyplot as plt
from scipy import special, stats
from IPython.display import Markdown, display
import ntrk_minimal as nt
from ntrk_minimal import plotting, whitening as wh
from ntrk_minimal.kernels import reward_grad
from ntrk_minimal.whitening import norm_match

FAST = True                          # False: more draws everywhere (same conclusions, tighter intervals)
SEED = 0
torch.manual_seed(SEED)
torch.set_num_threads(1)             # a shared 2-core machine: one thread is faster than two contending
gen = lambda s=SEED: torch.Generator().manual_seed(s)
plotting.use_style()                 # the shared figure style: 110 dpi, fonts >= 9 pt
STEPS = plt.get_cmap("RdBu_r", 21)   # 21 colour steps (zero = the white middle one): smaller PNGs, same picture

def sym(*arrays, **kw):               # imshow keywords: one symmetric scale for the panels given, zero = white,
    return {**plotting.signed_scale(*arrays, cmap=STEPS, **kw), "interpolation": "nearest"}   # pixels drawn as they are
show = lambda m: display(Markdown(m))   # markdown rendered from computed numbers
print("default W:", wh.DEFAULTS)

# %% [markdown]
# ## 1. The typical set, and four ways to test for it
# For $\epsilon \sim \mathcal N(0, I_N)$, $\|\epsilon\|^2 \sim \chi^2_N$: mean $N$, standard deviation $\sqrt{2N}$. So $\|\epsilon\|/\sqrt N$ concentrates at 1 with spread $\approx 1/\sqrt{2N}$.
# In 2-D the "shell" is the whole disc; for a Stable Diffusion latent ($N = 4\cdot64\cdot64 = 16384$) it is a shell of relative width 0.6%.

# %%
dims = [2, 16, 64, 1024, 16384]
fig, ax = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
for d in dims:
    r = torch.randn(2000, d, generator=gen(d)).norm(dim=1) / math.sqrt(d)
    ax[0].hist(r.numpy(), bins=60, range=(0, 2.2), density=True, histtype="step", label=f"N={d}")
    print(f"N={d:6d}: ||eps||/sqrt(N) = {r.mean():.3f} ± {r.std():.3f} (theory spread {1 / math.sqrt(2 * d):.3f})")
ax[0].set_xlabel(r"$\|\epsilon\|/\sqrt{N}$"); ax[0].legend(); ax[0].set_title("norm concentrates")
x = torch.randn(1, 1, 64, 64, generator=gen(1))
ax[1].imshow(x[0, 0], **sym(x)); ax[1].axis("off"); ax[1].set_title("a typical draw (64 x 64): no structure at all")
plotting.colorbar(ax[1])
plt.show()

# %% [markdown]
# A typical draw has more than the right norm. Four diagnostics (`nt.whiteness`) test the other properties, and we use
# them throughout the collection:
# - **norm²/N** $= \|x\|^2/N$: 1 for white noise.
# - **lag-1 correlation** $\langle x_i x_{i+1}\rangle / \langle x^2\rangle$ between horizontal and vertical neighbours: 0 for white noise (±$1/\sqrt N$).
# - **spectral flatness**: the geometric mean of the power spectrum $|X_k|^2$ divided by its arithmetic mean. A perfectly flat spectrum gives 1,
#   but white noise does **not**: each $|X_k|^2$ of Gaussian noise is an exponential random variable around the common mean, and
#   $\mathbb E[\log E] = \log \mathbb E[E] - \gamma$ for an exponential $E$ ($\gamma = 0.5772$, Euler's constant), so the ratio tends to
#   $e^{-\gamma} = 0.561$. A smooth field (power at low frequencies only) gives nearly 0.
# - **KS distance**: $\sup_x |F_n(x) - \Phi(x)|$, the largest gap between the empirical distribution of the values (scaled to unit RMS) and the
#   standard normal CDF $\Phi$: the *shape* of the marginal. For $N$ noise values it is about $0.87/\sqrt N$ on average.

# %%
C, H, Wd = 4, 64, 64
fy = torch.fft.fftfreq(H)[:, None] ** 2 + torch.fft.fftfreq(Wd)[None, :] ** 2
lowpass = lambda s: (lambda v: v / v.std())(torch.fft.ifft2(torch.fft.fft2(
    torch.randn(1, C, H, Wd, generator=gen(s), dtype=torch.float64)) * torch.exp(-fy / (2 * 0.03 ** 2))).real)
white = torch.randn(200, C, H, Wd, generator=gen(2), dtype=torch.float64)
diag_noise = {k: v.mean().item() for k, v in nt.whiteness(white).items()}
diag_smooth = {k: v.item() for k, v in nt.whiteness(lowpass(11)).items()}
print(f"{'':22s} {'norm2/N':>8s} {'lag-1':>7s} {'flatness':>9s} {'KS':>7s}")
for name, d in (("white noise (mean of 200)", diag_noise), ("smooth field", diag_smooth)):
    print(f"{name:22s} {d['norm2']:8.3f} {d['lag1']:+7.3f} {d['flatness']:9.3f} {d['ks']:7.4f}")
print(f"e^-gamma = {math.exp(-np.euler_gamma):.4f};  0.87/sqrt(N) = {0.87 / math.sqrt(C * H * Wd):.4f}")

# %% [markdown]
# ## 2. Order statistics and their Beta laws
# Sort $D$ i.i.d. $\mathcal N(0,1)$ values. The $j$-th smallest, mapped to uniform space by $\Phi$, is $\mathrm{Beta}(j, D-j+1)$
# (the $j$-th smallest of $D$ uniforms). That law turns "looks Gaussian" into a *confidence interval per rank*.

# %%
D = 8
vals = torch.randn(20000, D, generator=gen(2), dtype=torch.float64).sort(-1).values
u = torch.special.ndtr(vals).numpy()
fig, ax = plt.subplots(1, 3, figsize=(10.5, 3.0), layout="constrained")
grid = np.linspace(0, 1, 200)
for a, j in zip(ax, (1, 4, 8)):
    a.hist(u[:, j - 1], bins=50, density=True, alpha=0.6, label="20000 draws")
    a.plot(grid, stats.beta(j, D - j + 1).pdf(grid), "k-", label="Beta law")
    a.set_title(f"$\\Phi$(j={j} of D={D}) vs Beta({j},{D - j + 1})"); a.set_xlabel("uniform scale")
ax[0].legend()
plt.show()
ks = [stats.kstest(u[:, j - 1], stats.beta(j, D - j + 1).cdf).pvalue for j in (1, 4, 8)]
print("KS p-values against the Beta laws:", [round(float(p), 2) for p in ks])

# %% [markdown]
# ## 3. One tile: a QQ plot with its envelope
# Take one tile of $D = 64$ values. Its sorted values against the normal quantiles form a **QQ plot**; noise lies near the
# diagonal. The bounds $L_j = \Phi^{-1}(I^{-1}_{j,D-j+1}(\alpha/2))$ and $U_j$ (with $1-\alpha/2$; $I^{-1}$ is the inverse
# regularised incomplete beta function) form an **envelope** around it: each sorted value stays inside with probability $1-\alpha$.
#
# **Projecting** onto the set $\{L_j \le \text{j-th smallest} \le U_j\ \forall j\}$ is a picture: push each point of the QQ plot
# vertically into the envelope, then put every value back in the position it came from (*unsort*). For one tile this one pass is the exact
# nearest point of the set (sorting is the only order that matters). Below: a noise tile (inside), a ramp (inside too: one tile only sees
# the *values*, not where they sit) and a heavy-tailed tile (cubed noise, like a gradient concentrated on a few pixels), before and after.

# %%
D1 = 64
L1, U1 = (b[0] for b in nt.order_stat_bounds(1, D1))          # alpha = 1e-4
j = np.arange(1, D1 + 1)
q = special.ndtri(special.betaincinv(j, D1 - j + 1, 0.5))     # the median of each order statistic
unit = lambda v: v / v.pow(2).mean().sqrt()
yy8, xx8 = torch.meshgrid(torch.arange(8.), torch.arange(8.), indexing="ij")
tiles = {"noise": unit(torch.randn(D1, generator=gen(30), dtype=torch.float64)),
         "ramp": unit((xx8 - 3.5).flatten().double()),
         "heavy-tailed": unit(torch.randn(D1, generator=gen(31), dtype=torch.float64) ** 3)}
proj = nt.project_2os(tiles["heavy-tailed"][None, None], repeat=False)[0, 0]
fig = plt.figure(figsize=(12, 4.2), layout="constrained")
axq, axt = fig.subfigures(1, 2, width_ratios=[1.25, 1])
aq = axq.subplots(1, 1)
aq.fill_between(q, L1, U1, color="0.85", label=r"envelope $[L_j, U_j]$, $\alpha=10^{-4}$")
aq.plot(q, q, "k:", lw=0.8)
for (name, t), c in zip(tiles.items(), ("C0", "C2", "C3")):
    aq.plot(q, t.sort().values, "o", ms=3.5, color=c, label=name)
ys = tiles["heavy-tailed"].sort().values
aq.plot(q, proj.sort().values, "o", ms=3.5, mfc="none", color="k", label="heavy-tailed, projected")
for k in np.flatnonzero((ys < L1).numpy() | (ys > U1).numpy()):
    aq.annotate("", (q[k], float(proj.sort().values[k])), (q[k], float(ys[k])),
                arrowprops=dict(arrowstyle="->", lw=0.8, color="C3"))
aq.set_xlabel("normal quantile (median of the j-th of 64)"); aq.set_ylabel("j-th smallest value")
aq.set_ylim(-8, 8); aq.legend(loc="upper left"); aq.set_title("one tile of 64 values: QQ plot and envelope")
at = axt.subplots(1, 3)
pair = (tiles["heavy-tailed"].reshape(8, 8), proj.reshape(8, 8))
for a, m, t in zip(at, (*pair, pair[1] - pair[0]), ("heavy-tailed tile", "projected", "change")):
    a.imshow(m, **sym(*pair)); a.set_title(t); a.set_xticks([]); a.set_yticks([])
plotting.colorbar(at, label="value (one scale)")
plt.show()
outside1 = int(((ys < L1) | (ys > U1)).sum())
print(f"heavy-tailed tile: {outside1} of 64 sorted values outside the envelope; after the pass: "
      f"{int(((proj.sort().values < L1 - 1e-12) | (proj.sort().values > U1 + 1e-12)).sum())}; "
      f"distance moved {float((proj - tiles['heavy-tailed']).norm()):.3f} (norm 8); "
      f"cosine {float(torch.nn.functional.cosine_similarity(proj, tiles['heavy-tailed'], 0)):.4f}")
print("inside the envelope:", {k: bool(nt.in_2os_set(t[None, None])) for k, t in tiles.items()})

# %% [markdown]
# ## 4. Many tiles: the 2OS matrix and its bounds
# One envelope is wide (the ramp passed). With many tiles there is a second level: reshape $x \in \mathbb R^N$ into $M$ tiles of $D$
# entries, sort within each tile, then sort each column over the tiles: $Z = \mathrm{sort}_{\text{tiles}}(\mathrm{sort}_{\text{within}}(Y))$,
# so $Z_{rj}$ is the $r$-th smallest, over the $M$ tiles, of their $j$-th smallest entry. For noise, each tile's $j$-th smallest value,
# mapped through $\Phi$ and then through the Beta$(j, D-j+1)$ CDF, is uniform; the $r$-th smallest of $M$ such uniforms is
# $\mathrm{Beta}(r, M-r+1)$. Hence
# $$L_{rj} = \Phi^{-1}\big(I^{-1}_{j,D-j+1}(I^{-1}_{r,M-r+1}(\alpha/2))\big),\qquad U = -L[{::}{-1}, {::}{-1}],$$
# and each single $Z_{rj}$ falls outside $[L_{rj}, U_{rj}]$ with probability $\alpha = 10^{-4}$. The bands are narrow: with 256 tiles
# there is little room for any column. Four columns $j$ of $Z$ for a noise sample and for a smooth field:

# %%
M, D = 256, 64
L, U = nt.order_stat_bounds(M, D)
print("L[0,0], L[255,0], L[0,63], L[128,32] =", [round(float(L[i]), 6) for i in [(0, 0), (255, 0), (0, 63), (128, 32)]])
noise = torch.randn(M, D, generator=gen(3), dtype=torch.float64)
k2 = torch.fft.fftfreq(128)[:, None] ** 2 + torch.fft.fftfreq(128)[None, :] ** 2
smooth = torch.fft.ifft2(torch.fft.fft2(torch.randn(128, 128, generator=gen(4), dtype=torch.float64)) * torch.exp(-k2 / (2 * 0.03 ** 2))).real
smooth = (smooth / smooth.std()).reshape(M, D)

def violations(Y, L=L, U=U):
    Z = nt.sort_2os(Y)
    return int(((Z < L) | (Z > U)).sum()), float(torch.maximum(L - Z, Z - U).clamp_min(0).max())

fig, ax = plt.subplots(1, 2, figsize=(10.5, 3.8), sharey=True, layout="constrained")
for a, Y, name in zip(ax, (noise, smooth), ("N(0, I) sample", "smooth field")):
    Z = nt.sort_2os(Y)
    for jj, c in zip((0, 21, 42, 63), ("C0", "C1", "C2", "C3")):
        a.fill_between(range(M), L[:, jj], U[:, jj], color=c, alpha=0.25)
        a.plot(Z[:, jj], c, lw=1, label=f"j={jj}")
    n_out, worst = violations(Y)
    a.set_title(f"{name}: {n_out} of {M * D} entries outside\n(largest excess {worst:.3f})"); a.set_xlabel("rank r over tiles")
ax[0].set_ylabel("$Z_{rj}$ and its band"); ax[0].legend()
plt.show()

# %% [markdown]
# Look at the left title: even the genuine noise sample need not be inside — a bound can fail at one or a few of its 16,384 entries, by a tiny
# margin. That is no accident: section 7 measures how often a genuine draw lies in the whole set.
#
# ## 5. Sort → clip → unsort, entry by entry
# The projection onto the set: sort within tiles, sort over tiles, clip $Z$ into $[L, U]$, and put every value back where it came from.
# A small example ($M = 4$ tiles of $D = 6$, $\alpha = 0.05$ so that the bands are wide enough to see). Top: the five matrices with their
# values (framed: the entries the clip changed). Bottom: each entry $Z_{rj}$ (red) in its band $[L_{rj}, U_{rj}]$ (grey), and where the clip puts it (blue).

# %%
M4, D4, a4 = 4, 6, 0.05
Y = torch.randn(M4, D4, generator=gen(5), dtype=torch.float64) * 2.2
S, i_row = Y.sort(-1)
Z, i_col = S.sort(-2)
L4, U4 = nt.order_stat_bounds(M4, D4, a4)
Zc = Z.clamp(L4, U4)
S_back = torch.empty_like(Zc).scatter_(-2, i_col, Zc)
Y_back = torch.empty_like(S_back).scatter_(-1, i_row, S_back)
clipped = Zc != Z
panels = [(Y, "Y (tiles = rows)", None), (S, "1. sort within tiles", None), (Z, "2. sort over tiles = Z", clipped),
          (Zc, "3. clip Z into [L, U]", clipped), (Y_back, "4. unsort both", Y_back != Y)]
fig, axd = plt.subplot_mosaic([[f"p{k}" for k in range(5)], ["band"] * 5], figsize=(12.5, 5.8),
                              height_ratios=[1, 1.15], layout="constrained")
vmax = float(Y.abs().max())
for k, (m, t, mark) in enumerate(panels):
    a = axd[f"p{k}"]
    a.imshow(m, **sym(vmax=vmax)); plotting.annotate(a, m, mark=mark); a.set_title(t)
    a.set_xticks(range(D4)); a.set_yticks(range(M4)); a.set_xlabel("entry j" if k >= 2 else "position in tile")
axd["p0"].set_ylabel("tile / rank r")
plotting.colorbar([axd[f"p{k}"] for k in range(5)], label="value")
b = axd["band"]
pos = np.array([jj * (M4 + 1) + r for jj in range(D4) for r in range(M4)])
b.vlines(pos, L4.T.flatten(), U4.T.flatten(), color="0.7", lw=6, label="band $[L_{rj}, U_{rj}]$")
b.plot(pos, Z.T.flatten(), "x", color="C3", ms=7, label="$Z_{rj}$")
b.plot(pos, Zc.T.flatten(), "o", color="C0", ms=4, label="after the clip")
b.set_xticks([jj * (M4 + 1) + 1.5 for jj in range(D4)], [f"column j={jj}\n(r = 0..3)" for jj in range(D4)])
b.axhline(0, color="k", lw=0.5); b.set_ylabel("value"); b.legend(ncol=3, loc="upper left")
plt.show()
print("entries clipped:", int(clipped.sum()), "of", Z.numel(), "| distance moved:", round(float((Y_back - Y).norm()), 3))
print("library agrees:", torch.allclose(nt.project_2os(Y, a4, repeat=False), Y_back))

# %% [markdown]
# ## 6. The two-level gap: one pass can leave the set
# The paper states that one sort–clip–unsort pass *is* the Euclidean projection onto $\{L \le Z(Y) \le U\}$. That holds for one level ($M = 1$, section 3):
# sorting is then the only permutation. With two levels a tile's entries sit at **different ranks in different columns**, so clipping can reverse two
# entries of a tile; after unsorting, the result can fail the very bounds it was clipped to.
#
# `project_2os` therefore re-sorts each tile's new values into the tile's own order (never farther: same values, best arrangement) and repeats the
# pass until the output is in the set. We check all three against a brute-force solver (one small quadratic program per ordering pattern) on $M = 2, D = 3$:

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
fig, ax = plt.subplots(1, 4, figsize=(11, 2.6), layout="constrained")
for a, (m, t) in zip(ax, [(X, "input"), (nt.project_2os(X, a2, repeat=False), "one pass (leaves set)"),
                          (nt.project_2os(X, a2), "repeated (in set)"), (nt.nearest_2os_brute_force(X, a2), "brute force")]):
    a.imshow(m, **sym(vmax=3)); plotting.annotate(a, m)
    a.set_title(t); a.set_xticks([]); a.set_yticks([])
plotting.colorbar(ax, label="value")
plt.show()

# %% [markdown]
# The single pass is *closer* than the optimum — it is a lower bound (rearrangement inequality) — but infeasible; the repeated pass is feasible and
# here equals the brute-force optimum. Not always: `scripts/bench_whitening.py` counts, over more hard cases, how often it matches and how far off it is
# otherwise (Exercise 3). At realistic sizes ($M = D = 64$) one pass leaves the set for almost every structured input:

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
# ## 7. How often is genuine noise inside? Coverage, measured
# $\alpha$ bounds each entry $Z_{rj}$ separately. The set asks *all* $M D$ bounds to hold at once, so a genuine draw lies in it far less often than
# $1 - \alpha$: there are $\alpha M D$ violations per draw on average (exactly: each entry fails with probability $\alpha$). They come in clusters —
# neighbouring ranks of a column are nearly equal and have nearly equal bands, so one unusual region of a draw pushes several of them out together —
# which is why the coverage is much better than $(1-\alpha)^{MD}$. We measure $P[\epsilon \in \text{set}]$ for the tile shapes this collection uses.

# %%
n_cov = 400 if FAST else 2000
shapes = [(1, 64), (4, 64), (16, 64), (64, 64), (256, 64)]
coverage = {}
for (Mc, Dc) in shapes:
    e = torch.randn(n_cov, Mc, Dc, generator=gen(40 + Mc), dtype=torch.float64)
    p = float(nt.in_2os_set(e).double().mean())
    coverage[Mc, Dc] = (p, 1.96 * math.sqrt(max(p * (1 - p), 1 / n_cov) / n_cov))
fig, ax = plt.subplots(figsize=(9, 3.6), layout="constrained")
mds = [Mc * Dc for Mc, Dc in shapes]
ax.errorbar(mds, [coverage[s][0] for s in shapes], yerr=[coverage[s][1] for s in shapes], fmt="o-", capsize=3,
            label=f"measured $P[\\epsilon \\in$ 2OS set$]$ ({n_cov} draws, 95% CI)")
ax.plot(mds, [1 - 1e-4] * len(mds), "k--", lw=0.8, label=r"$1-\alpha$ (what 'level $1-\alpha$' suggests)")
ax.plot(mds, [(1 - 1e-4) ** n for n in mds], "k:", lw=0.8, label=r"$(1-\alpha)^{MD}$ (if violations were independent)")
for s, x_ in zip(shapes, mds):
    ax.annotate(f"{s[0]} tile{'s' if s[0] > 1 else ''}\nof {s[1]}", (x_, coverage[s][0]), textcoords="offset points", xytext=(0, -30), ha="center",
                fontsize=plotting.FONT_SMALL)
ax.set_xscale("log"); ax.set_xlabel("entries M·D"); ax.set_ylabel("coverage"); ax.set_ylim(0, 1.05); ax.legend(loc="lower left")
ax.set_title(r"the 2OS value set holds a genuine draw less often than $1-\alpha$ ($\alpha = 10^{-4}$ per entry)")
plt.show()
for s in shapes:
    print(f"M={s[0]:4d} x D={s[1]}: expected violations per draw alpha*M*D = {1e-4 * s[0] * s[1]:.3f}, "
          f"P[in set] = {coverage[s][0]:.3f} ± {coverage[s][1]:.3f}")

# %% [markdown]
# $W$ is several such sets (tile means, tile energies and values, in the DCT and in the pixel domain). `wh.in_confidence_sets` tests a sample
# against each set $W$ projects onto; over genuine draws it gives the coverage of each set and of all of them together, for the sample shapes of this
# collection (the 2-D toy, the 64-D digits, the 16×16 trained UNet, a 4×64×64 latent):

# %%
cov_rows = []
for shape, n in [((2,), 2000), ((64,), 2000), ((1, 16, 16), 2000), ((4, 64, 64), n_cov)]:
    e = torch.randn((n,) + shape, generator=gen(50), dtype=torch.float64)
    sets = wh.in_confidence_sets(e)
    Dl = nt.tile_layout(shape).shape
    cov_rows.append((shape, Dl, {k: float(v.double().mean()) for k, v in sets.items()}))
keys = list(cov_rows[0][2])
print(f"{'sample shape':13s} {'tiles':>9s} " + " ".join(f"{k:>14s}" for k in keys))
for shape, Dl, c in cov_rows:
    print(f"{str(shape):13s} {Dl[0]:4d} x {Dl[1]:2d} " + " ".join(f"{c[k]:14.3f}" for k in keys))
cov_latent = cov_rows[-1][2]["all"]

# %% [markdown]
# What this means for $W(\epsilon) \approx \epsilon$: a draw inside every set comes out of $W$ only rescaled to $\|\epsilon\| = \sqrt N$ (cosine 1).
# A draw outside some set is clipped — but only at the few entries that broke a bound, by the small amount they broke it. Below, how far each map moves
# genuine 4×64×64 noise. WGNC (*whitened gradient with norm constraints*, NTRK's predecessor, section 11), by contrast, forces *equalities* (every block exactly at the mean modulus and energy), so it moves every draw.

# %%
n_draws = 100 if FAST else 300
eps = torch.randn(n_draws, 4, 64, 64, generator=gen(10), dtype=torch.float64)
inside = wh.in_confidence_sets(eps)["all"]
cos = {name: nt.whiteness(f(eps), eps)["cosine"] for name, f in
       (("W", nt.whiten), ("WGNC", nt.wgnc_project), ("standardize", nt.standardize), ("norm match", norm_match))}
for name, c in cos.items():
    print(f"{name:12s} min cosine over {n_draws} draws: {c.min().item():.7f}")
fig, ax = plt.subplots(figsize=(9, 3.6), layout="constrained")
groups = {"W, draw outside some set": cos["W"][~inside], "WGNC": cos["WGNC"], "standardize": cos["standardize"]}
for name, c in groups.items():
    gap = (1 - c.double()).numpy()
    ax.hist(np.log10(np.maximum(gap, 1e-16)), bins=60, range=(-16.5, -1), histtype="step", lw=1.5, label=f"{name} ({len(gap)} draws)")
ax.axvline(-16, color="0.5", ls=":", lw=0.8)
ax.text(-15.9, ax.get_ylim()[1] * 0.9, "cosine = 1\n(to float64 rounding)", fontsize=plotting.FONT_SMALL, va="top")
ax.set_xlabel("log10(1 - cosine)  (values below 1e-16 drawn at -16)"); ax.legend(loc="upper right")
ax.set_title(f"how far each map moves genuine noise: {int(inside.sum())} of {n_draws} draws lie in every set of W and are only rescaled")
plt.show()
show(f"So both statements hold: a genuine 4×64×64 draw lies in every set of $W$ only **{cov_latent:.0%}** of the time (not $1-\\alpha$), and yet "
     f"$W$ moves it by almost nothing — the smallest cosine over {n_draws} draws is **{cos['W'].min().item():.7f}** (WGNC: "
     f"{cos['WGNC'].min().item():.4f}). Norm matching and $W$ on in-set draws give cosine 1 to rounding.")


# %% [markdown]
# ## 8. Tile statistics, and where the tiles are
# Value bands alone miss structure that lives in whole tiles: a tile whose values are all slightly positive, or a tile with twice the energy of its
# neighbours. For noise, tile means $\times\sqrt D$ are $\mathcal N(0,1)$ and tile energies about the mean are $\chi^2_{D-1}$ (mapped to
# $\mathcal N(0,1)$ by the $\chi^2$ CDF and $\Phi^{-1}$). Each vector of $M$ summaries gets the one-tile projection of section 3; then every tile
# is shifted (means) or rescaled about its mean (energies).
#
# Which entries form a tile? In the **pixel** domain, $8\times8$ patches of each channel; in the **DCT** domain (section 9), *radial frequency bands*:
# the DCT coefficients sorted by $\sqrt{u^2+v^2}$ and cut into runs of 64. Each colour below is one tile (`nt.tile_layout`):

# %%
def tile_map(shape, domain):
    lay = nt.tile_layout(shape, domain)
    m = torch.empty(lay.numel(), dtype=torch.long)
    m[lay.flatten()] = torch.arange(lay.shape[0]).repeat_interleave(lay.shape[1])
    return m.reshape(shape)[0]

def draw_borders(ax, m):
    """Black lines between neighbouring entries of the map m that belong to different tiles."""
    for i, j in (m[:, 1:] != m[:, :-1]).nonzero().tolist():
        ax.plot([j + 0.5, j + 0.5], [i - 0.5, i + 0.5], "k-", lw=0.6)
    for i, j in (m[1:, :] != m[:-1, :]).nonzero().tolist():
        ax.plot([j - 0.5, j + 0.5], [i + 0.5, i + 0.5], "k-", lw=0.6)

pix, dct_t = tile_map((1, 64, 64), "pixel"), tile_map((1, 64, 64), "dct")
radius = torch.stack([(dct_t == k).nonzero().float().norm(dim=1).mean() for k in range(int(dct_t.max()) + 1)])
band_rank = torch.argsort(radius.argsort())[dct_t]               # colour DCT tiles by their frequency, low to high
fig, ax = plt.subplots(1, 2, figsize=(10, 4.5), layout="constrained")
ax[0].imshow(pix % 20, cmap="tab20", interpolation="nearest"); draw_borders(ax[0], pix)
ax[0].set_title("pixel domain: 64 patches of 8 x 8"); ax[0].set_xlabel("column"); ax[0].set_ylabel("row")
im = ax[1].imshow(band_rank, cmap="viridis", interpolation="nearest"); draw_borders(ax[1], dct_t)
ax[1].set_title("DCT domain: 64 radial bands of 64 coefficients"); ax[1].set_xlabel("horizontal frequency u"); ax[1].set_ylabel("vertical frequency v")
plotting.colorbar(ax[1], im, label="band (low to high frequency)")
plt.show()

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
    return m, torch.as_tensor(wh.chi2_to_normal(e.numpy(), 63.0))
after = nt.whiten(bx, domains=("pixel",), stages=("means", "energies"))
Lm, Um = nt.order_stat_bounds(1, 64)
fig, ax = plt.subplots(1, 4, figsize=(12, 3.2), layout="constrained")
ax[0].imshow(bx[0, 0], **sym(bx, after)); ax[0].set_title("blob x noise"); ax[0].axis("off")
ax[1].imshow(after[0, 0], **sym(bx, after)); ax[1].set_title("after means + energies"); ax[1].axis("off")
plotting.colorbar(ax[:2], label="value")
for a, k, name in ((ax[2], 0, "tile means x sqrt(D)"), (ax[3], 1, "tile energies (normal scores)")):
    a.fill_between(range(64), Lm[0], Um[0], color="gray", alpha=0.3, label="band")
    a.plot(tile_scores(bx)[k].sort().values, "r.", ms=4, label="before")
    a.plot(tile_scores(after)[k].sort().values, "b.", ms=4, label="after")
    a.set_title(name); a.set_xlabel("rank of the tile")
ax[3].legend()
plt.show()
outside = lambda v: int(((v.sort().values < Lm[0] - 1e-9) | (v.sort().values > Um[0] + 1e-9)).sum())   # 1e-9: rounding
print("tile energy scores outside the band: before", outside(tile_scores(bx)[1]), "after", outside(tile_scores(after)[1]),
      "| largest before/after:", round(float(tile_scores(bx)[1].max()), 2), "/", round(float(tile_scores(after)[1].max()), 2))

# %% [markdown]
# ## 9. The DCT view: correlation is a non-flat spectrum
# An orthonormal transform maps $\mathcal N(0, I)$ to $\mathcal N(0, I)$, so the same projections can run in a second domain where pixel-space checks
# are blind: spatial correlation is a *non-flat spectrum*. $W$ works in the orthonormal 2-D DCT per channel (`wh.dct_matrix`: $C X C^\top$) with
# the radial bands above as tiles, then in pixel space. Below: the DCT coefficients of a smooth field, before and after $W$ (one colour
# scale: all its energy sits in the low-frequency corner, then in every band), and the radially averaged power spectra.

# %%
sm = lowpass(7)
sm_noise = sm + 0.5 * torch.randn(1, 4, 64, 64, generator=gen(8), dtype=torch.float64)
sm_noise = sm_noise / sm_noise.norm() * 128
w_sm = nt.whiten(sm_noise)
Cd = wh.dct_matrix(64)
dct = lambda v: Cd @ v[0, 0] @ Cd.T
sm_unit = sm / sm.norm() * 128
logc = [torch.log10(dct(v).abs().clamp_min(1e-6)) for v in (sm_unit, nt.whiten(sm_unit))]

def radial_power(x):
    P = torch.fft.fft2(x.double()).abs().pow(2).mean(dim=tuple(range(x.ndim - 2)))
    f = (torch.fft.fftfreq(x.shape[-2])[:, None] ** 2 + torch.fft.fftfreq(x.shape[-1])[None, :] ** 2).sqrt()
    bins = torch.bucketize(f.flatten(), torch.linspace(0, 0.71, 25))
    return torch.stack([P.flatten()[bins == b].mean() for b in range(1, 25)]) / x[0].numel()

fig, ax = plt.subplots(1, 3, figsize=(12.5, 3.7), layout="constrained")
for a, lc, t in zip(ax[:2], logc, ("DCT of a smooth field", "DCT of W(smooth field)")):
    im = a.imshow(lc, cmap=plt.get_cmap("magma", 16), vmin=-3, vmax=float(max(c.max() for c in logc)), interpolation="nearest")
    a.set_title(t); a.set_xlabel("u"); a.set_ylabel("v")
plotting.colorbar(ax[:2], im, label="log10 |coefficient|")
fr = torch.linspace(0, 0.71, 25)[1:].numpy()
noise_img = torch.randn(1, 4, 64, 64, generator=gen(9), dtype=torch.float64)
for name, x0_ in (("smooth", sm_unit), ("smooth + noise", sm_noise), ("noise", noise_img / noise_img.norm() * 128)):
    ax[2].semilogy(fr, radial_power(x0_).numpy(), label=f"{name}")
    ax[2].semilogy(fr, radial_power(nt.whiten(x0_)).numpy(), "--", label=f"W({name})")
ax[2].set_xlabel("radial frequency (cycles / pixel)"); ax[2].set_ylabel("power"); ax[2].set_title("radially averaged power spectrum"); ax[2].legend()
plt.show()

# %% [markdown]
# ## 10. $W$ stage by stage
# The default $W$ (`wh.DEFAULTS`): scale to $\|x\| = \sqrt N$, then DCT domain: tile means → tile energies → values, then pixel domain: the same
# three stages. `wh.whiten_stages` yields the sample after each stage (it ends exactly where `nt.whiten` ends). Each panel: channel 0 after that
# stage, with its diagnostics; white noise for reference.

# %%
stages = list(wh.whiten_stages(sm_noise))
assert torch.allclose(stages[-1][1], w_sm, atol=1e-10)
shown = [s for s in stages if s[0] != "normalize"] + [("white noise (reference)", noise_img / noise_img.norm() * 128)]
diag = {lab: {k: float(v) for k, v in nt.whiteness(y, sm_noise).items()} for lab, y in shown}
fig, ax = plt.subplots(2, 4, figsize=(11.5, 6.5), layout="constrained")
for a, (lab, y) in zip(ax.flat, shown):
    d = diag[lab]
    a.imshow(y[0, 0], **sym(vmax=4)); a.set_xticks([]); a.set_yticks([])
    a.set_title(f"{lab}\nlag-1 {d['lag1']:+.2f} · flat {d['flatness']:.2f}\nKS {d['ks']:.3f} · cos {d['cosine']:.2f}")
plotting.colorbar(ax, extend="both", label="value (one scale)")
plt.show()
labs = [lab for lab, _ in stages]
trace = {k: [float(nt.whiteness(y, sm_noise)[k]) for _, y in stages] for k in ("lag1", "flatness", "ks", "cosine")}
names_ = {"lag1": "lag-1", "flatness": "flatness", "ks": "KS", "cosine": "cosine"}
biggest = {k: max(range(1, len(labs)), key=lambda s_: abs(v[s_] - v[s_ - 1])) for k, v in trace.items()}
show("Read it left to right. The largest single change of each diagnostic: " + "; ".join(
    f"{names_[k]} at **{labs[b_]}** ({trace[k][b_ - 1]:.3f} → {trace[k][b_]:.3f})" for k, b_ in biggest.items())
    + f". After all six stages: lag-1 {trace['lag1'][-1]:+.3f}, flatness {trace['flatness'][-1]:.3f} (noise 0.561), KS "
    f"{trace['ks'][-1]:.4f} (noise ≈ {0.87 / 128:.4f}), cosine {trace['cosine'][-1]:.2f}. The DCT energies stage gives the nearly empty "
    "high-frequency bands their noise energy and tames the low ones; stages whose set already holds the sample leave it alone (a projection "
    "does not move a point inside its set).")

# %% [markdown]
# ## 11. Structured inputs and the honest trade-off
# Six structured inputs (shape 4×64×64). Diagnostics per output. "pixel values only" is a single value-stage projection in pixel space;
# **norm match** is $g\sqrt N/\|g\|$ (what NTRK does with $W$ switched off); **standardize** removes the mean and scales to unit variance;
# **WGNC** (*whitened gradient with norm constraints*, the predecessor of NTRK: J. Hwang, M. Sung, arXiv 2602.08646) projects blocks of 16 Fourier
# coefficients onto exactly the mean modulus and energy of complex Gaussian noise.

# %%
spike = torch.zeros(1, C, H, Wd, dtype=torch.float64); spike[0, 1, 10, 30] = 1
inputs = {"smooth": lowpass(11), "constant": torch.ones(1, C, H, Wd, dtype=torch.float64), "spike": spike,
          "checkerboard": ((yy + xx) % 2 * 2 - 1).double().expand(1, C, H, Wd).clone(),
          "blob x noise": blob * torch.randn(1, C, H, Wd, generator=gen(12), dtype=torch.float64),
          "smooth + noise": lowpass(13) + 0.5 * torch.randn(1, C, H, Wd, generator=gen(14), dtype=torch.float64)}
channel = {"spike": 1}                                     # the spike sits in channel 1; show that channel
methods = {"W": nt.whiten, "pixel values only": lambda x: nt.whiten(x, domains=("pixel",), stages=("values",)),
           "norm match": norm_match, "standardize": nt.standardize, "WGNC": nt.wgnc_project}
outputs = {(i, m): f(x0_) for i, x0_ in inputs.items() for m, f in methods.items()}
table = {k: {s: float(v) for s, v in nt.whiteness(out, inputs[k[0]]).items()} for k, out in outputs.items()}
print(f"{'input':15s} {'method':18s} {'norm2':>6s} {'lag1':>6s} {'flat':>6s} {'KS':>6s} {'cos':>6s}")
for (iname, mname), d in table.items():
    print(f"{iname:15s} {mname:18s} {d['norm2']:6.3f} {d['lag1']:+6.3f} {d['flatness']:6.3f} {d['ks']:6.3f} {d['cosine']:+6.3f}")

# %%
cols = ["input (unit RMS)", "W", "pixel values only", "WGNC"]
fig, ax = plt.subplots(len(inputs), 4, figsize=(8.2, 12.8), layout="constrained")
for r, (iname, x0_) in enumerate(inputs.items()):
    c_ = channel.get(iname, 0)
    imgs = [norm_match(x0_)] + [outputs[iname, m] for m in cols[1:]]
    for c, (t, img) in enumerate(zip(cols, imgs)):
        a = ax[r, c]
        a.imshow(img[0, c_], **sym(vmax=3)); a.set_xticks([]); a.set_yticks([])
        sub = "" if c == 0 else f"cos {table[iname, t]['cosine']:+.2f} · flat {table[iname, t]['flatness']:.2f}"
        a.set_title(f"{t}\n{sub}" if r == 0 else sub)
    ax[r, 0].set_ylabel(f"{iname}\n(channel {c_})" + ("\n±1 pattern too fine to see" if iname == "checkerboard" else ""))
ax[2, 0].add_patch(plt.Circle((30, 10), 4, fill=False, color="k", lw=1.2))   # where the spike is
plotting.colorbar(ax, extend="both", label="value (one scale for all panels: white noise lies within ±3)")
plt.show()

# %%
wrow = {i: table[i, "W"] for i in inputs}
worst_flat = min(wrow, key=lambda i: wrow[i]["flatness"])
best_flat = max(wrow, key=lambda i: wrow[i]["flatness"])
show(f"""Read the table row by row:
- **W** brings every input's lag-1 correlation to within ±{max(abs(d['lag1']) for d in wrow.values()):.2f} of 0 and its norm²/N to
  {min(d['norm2'] for d in wrow.values()):.2f}–{max(d['norm2'] for d in wrow.values()):.2f}; its spectral flatness ranges from
  {min(d['flatness'] for d in wrow.values()):.3f} ({worst_flat}) to {max(d['flatness'] for d in wrow.values()):.3f} ({best_flat}; white noise: 0.561), so
  "white" holds only approximately: smooth {wrow['smooth']['flatness']:.3f}, checkerboard {wrow['checkerboard']['flatness']:.3f}
  (lag-1 {wrow['checkerboard']['lag1']:+.3f}), constant {wrow['constant']['flatness']:.3f}. And for a *purely smooth* field W keeps only cosine
  {wrow['smooth']['cosine']:.2f}: such a field is nowhere near any typical noise, and the nearest typical point is mostly new noise. Where the input
  has a noise-like part (blob × noise, smooth + noise) W keeps cosine {wrow['blob x noise']['cosine']:.2f} and {wrow['smooth + noise']['cosine']:.2f}.
- **pixel values only** keeps more direction (smooth: {table['smooth', 'pixel values only']['cosine']:.2f}) but leaves the correlation
  (lag-1 {table['smooth', 'pixel values only']['lag1']:+.2f}, flatness {table['smooth', 'pixel values only']['flatness']:.3f}): the values *look*
  Gaussian one at a time, the picture does not. This is the trade-off at the heart of W.
- **norm match** and **standardize** only fix the scale: structure passes through untouched.
- **WGNC** fixes the spectrum block by block, but its marginals are off for structured inputs (KS up to
  {max(table[i, 'WGNC']['ks'] for i in inputs):.2f}) and it distorts genuine noise (section 7).""")


# %% [markdown]
# ## 12. The artefacts $W$ leaves: a patch grid, a cross, bright borders
# Look again at the $W$ column: blob × noise comes out with lines on an 8-pixel grid, the spike as a cross through where it was, the smooth field and
# the checkerboard with bright rows and columns at the image border. None of this is noise-like, and the four diagnostics above do not see it. Each
# comes from how the sets are built:
# - **The grid** (pixel stages). Far from the blob an 8×8 patch has almost no energy, and most of what it has sits in the row or column nearest the
#   blob (the envelope decays fast). The energies stage multiplies the whole patch by one factor, the value stage pushes its sorted values out into
#   the bands (a single value stage does it too: see "pixel values only"); both keep the arrangement inside the patch. The sets cannot object: they are unchanged by permuting the entries inside a tile, so *where* in its patch the energy sits is invisible
#   to them (one tile sees no correlation), and the DCT stage, which would see it, ran before.
# - **The cross** (DCT stages). The DCT of a spike at $(i_0, j_0)$ is a product, $\cos(\pi(i_0+\frac12)v/64)\cos(\pi(j_0+\frac12)u/64)$. The value stage
#   clips the largest coefficients to their bounds and keeps their signs — still (nearly) a product of a row pattern and a column pattern — and the inverse
#   DCT of a product is a product: energy along the row and the column through the spike. (With the pixel domain alone there is no cross.)
# - **The border** (DCT stages). The DCT treats the image as mirrored at its edges. A smooth field that is not flat at the border has a kink there, whose
#   energy sits at high frequencies; the energies stage raises those nearly empty bands to noise level, and what it amplifies lives at the border.
#
# Three statistics measure them (white noise for reference): the mean energy at each of the 64 positions inside a patch, max/min (**grid**); the most
# energetic row or column over the median one (**lines**) — both away from the border — and the energy of the outermost rows and columns over the
# interior (**border**).

# %%
def artefacts(y):
    """(grid, lines, border) of one unit-RMS sample (1, C, H, W); grid and lines use the interior only (the
    border has its own statistic): 6 x 6 patches, rows and columns 8..55."""
    e = y[0].pow(2)                                              # (C, H, W)
    inner = e[:, 8:-8, 8:-8]
    pos = inner.reshape(C, 6, 8, 6, 8).mean((0, 1, 3))           # (row in patch, column in patch)
    lines = torch.cat([inner.mean(-1).flatten(), inner.mean(-2).flatten()])
    em = e.mean(0)
    edge = torch.cat([em[0], em[-1], em[1:-1, 0], em[1:-1, -1]])
    return {"grid": float(pos.max() / pos.min()), "lines": float(lines.max() / lines.median()),
            "border": float(edge.mean() / em[4:-4, 4:-4].mean())}, pos

white_u = noise_img / noise_img.norm() * 128
art = {"white noise": artefacts(white_u)[0], **{i: artefacts(outputs[i, "W"])[0] for i in inputs}}
variants = {"white noise": white_u, "W(blob x noise)": outputs["blob x noise", "W"],
            "W, 4 x 4 patches": nt.whiten(inputs["blob x noise"], tile_size=(4, 4)),
            "W, 2 cycles": nt.whiten(inputs["blob x noise"], cycles=2)}
var_art = {k: artefacts(v) for k, v in variants.items()}
fig = plt.figure(figsize=(13, 6.4), layout="constrained")
top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1])
ax = top.subplots(1, 4)
vmax = max(float(p.max()) for _, p in var_art.values())
for a, (k, (st, p)) in zip(ax, var_art.items()):
    im = a.imshow(p, cmap="viridis", vmin=0, vmax=vmax); a.set_xticks([]); a.set_yticks([])
    a.set_title(f"{k}\ngrid (max/min) {st['grid']:.1f}")
top.colorbar(im, ax=ax, label="mean energy at that\nposition of the 8x8 patch", fraction=0.02)
ax = bottom.subplots(1, 3, sharey=True)
names = list(art)
for a, k in zip(ax, ("grid", "lines", "border")):
    v = [art[n][k] for n in names]
    a.barh(names, v, color=["0.6" if n == "white noise" else "C0" for n in names])
    a.axvline(art["white noise"][k], color="k", lw=0.8, ls="--")
    a.set_title(f"{k} after W (dashed: white noise)")
plt.show()
print(f"{'':15s} {'grid':>6s} {'lines':>6s} {'border':>7s}")
for n, d in art.items():
    print(f"{n:15s} {d['grid']:6.2f} {d['lines']:6.2f} {d['border']:7.2f}")
print("blob x noise variants, grid:", {k: round(st["grid"], 2) for k, (st, _) in var_art.items()})

# %%
c4, c2, c1 = (var_art[k][0]["grid"] for k in ("W, 4 x 4 patches", "W, 2 cycles", "W(blob x noise)"))
wn = art["white noise"]
show(f"""Measured against white noise (grid {wn['grid']:.1f}, lines {wn['lines']:.1f}, border {wn['border']:.2f}): blob × noise's grid is
**{art['blob x noise']['grid']:.1f}**, the spike's lines **{art['spike']['lines']:.1f}**, the borders of the smooth field and the checkerboard
**{art['smooth']['border']:.1f}** and **{art['checkerboard']['border']:.1f}** (blob × noise's border is *dim*, {art['blob x noise']['border']:.2f}: its
energy sits in the grid lines instead). Smaller patches (4×4: more, smaller tiles) shrink the grid to {c4:.1f}; a second cycle
{'does not' if c2 > 0.8 * c1 else 'does too'} ({c2:.1f}). We leave the default as it is: these are what the confidence sets allow, and whether they
matter is a question for a denoiser — the next section.""")

# %% [markdown]
# ## 13. Why atypical noise hurts: a trained UNet fed raw versus whitened gradients
# Everything so far was geometry. Here is the reason NTRK whitens. A trained denoiser has only ever seen $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,n$
# with $n \sim \mathcal N(0, I)$. We take real 16×16 test digits $x_0$, the diffusers UNet of notebook 05 (`ntrk_minimal.worlds.trained`), and a reward gradient
# $g = \nabla_{x_t} r(\hat x_0(x_t))$ (the log-odds of "3" under a trained classifier), and build $x_t$ with three kinds of $n$, all of norm $\approx\sqrt N$:
# genuine noise $\epsilon$, the **raw** gradient (norm-matched: $W$ off) and the **whitened** gradient $W(g)$. This is NTRK's $\eta_t$ at $\rho = 1$ — an
# exaggeration that makes the effect visible ($\rho$ is far smaller in practice) — and we also mix, $n = \sqrt\rho\,w + \sqrt{1-\rho}\,\epsilon$.
# We measure how well the UNet recovers $n$: $\mathbb E\|\hat\epsilon(x_t) - n\|^2/N$, then let the base sampler finish from $x_t$.

# %%
from ntrk_minimal.worlds import trained
from ntrk_minimal import metrics
from ntrk_minimal.worlds import digits_data
tp = trained.trained_problem(target_class=3)                   # UNet, 25-step DDPM grid, classifier rewards (sha256-checked)
unet, tsched = tp.model, tp.schedule
x_test, _ = digits_data.load_digits16("test")
x0 = x_test[:32 if FAST else 128].double()
print("tiles of W on a 1 x 16 x 16 sample:", tuple(nt.tile_layout((1, 16, 16)).shape), "(few tiles: the sets are loose, section 7)")

def grad_at(x_t, i):
    """g_t = grad_{x_t} r(x0_hat(x_t)) at sampling step i (one UNet forward + backward)."""
    return reward_grad(unet, tp.reward, x_t, i, tsched)[2]

def noised(i, n):
    """x_t = a_t x_0 + s_t n with a_t = sqrt(ab_t), s_t = sqrt(1 - ab_t): the forward process, with n in place of eps."""
    return float(tsched.a_t[i]) * x0 + float(tsched.s_t[i]) * n

def eps_error(i, n):
    with torch.no_grad():
        return float((unet(noised(i, n), tsched.timesteps[i]) - n).pow(2).mean())

err, kinds = {}, ("genuine noise", "raw g (norm-matched)", "W(g)")
for i in (4, 8, 12, 16):
    e_i = torch.randn(x0.shape, generator=gen(60 + i), dtype=x0.dtype)
    gi = grad_at(noised(i, e_i), i)
    for kind, n in zip(kinds, (e_i, norm_match(gi), nt.whiten(gi))):
        err[kind, i] = eps_error(i, n)
    err["cos", i] = float(nt.whiteness(nt.whiten(gi), gi)["cosine"].mean())
i_demo = 8
e8 = torch.randn(x0.shape, generator=gen(60 + i_demo), dtype=x0.dtype)
g8 = grad_at(noised(i_demo, e8), i_demo)
w8 = {"raw g (norm-matched)": norm_match(g8), "W(g)": nt.whiten(g8)}
rhos = [0.0, 0.05, 0.1, 0.25, 0.5, 1.0]
err_rho = {k: [eps_error(i_demo, math.sqrt(r) * w + math.sqrt(1 - r) * e8) for r in rhos] for k, w in w8.items()}
steps = (4, 8, 12, 16)
fig, ax = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
for kind in kinds:
    ax[0].semilogy([int(tsched.timesteps[i]) for i in steps], [err[kind, i] for i in steps], "o-", label=kind)
ax[0].set_xlabel("timestep t of x_t (noisier to the left)"); ax[0].invert_xaxis(); ax[0].set_ylabel(r"$E\|\hat\epsilon - n\|^2/N$")
ax[0].set_title(r"the UNet's error at recovering $n$, $\rho = 1$"); ax[0].legend()
for k, v in err_rho.items():
    ax[1].plot(rhos, v, "o-", label=k, color="C1" if k.startswith("raw") else "C2")
ax[1].axhline(err["genuine noise", i_demo], color="C0", ls="--", lw=0.8, label="genuine noise")
ax[1].set_xlabel(r"$\rho$ in $n = \sqrt{\rho}\,w + \sqrt{1-\rho}\,\epsilon$"); ax[1].set_title(f"mixing, t = {int(tsched.timesteps[i_demo])}"); ax[1].legend()
plt.show()
for i in steps:
    print(f"t={int(tsched.timesteps[i]):3d}: error genuine {err[kinds[0], i]:.4f} | raw g {err[kinds[1], i]:.4f} | W(g) {err[kinds[2], i]:.4f}"
          f"   (cos(W(g), g) {err['cos', i]:.2f})")


# %% [markdown]
# And the resulting samples: from each of the three $x_t$ at the demo step (`i_demo`, the second noise level above), the base sampler finishes
# the remaining steps with the same fresh noise.
# Left to right: the $n$ that was put in, $x_t$, the UNet's $\hat x_0$, the finished samples (8 digits).

# %%
def finish(x_t, i, seed=70):
    """The remaining base-kernel steps i, ..., T-1 from x_t (same generator seed for every kind of n)."""
    g_ = gen(seed)
    with torch.no_grad():
        for k in range(i, tsched.num_steps):
            x_t = nt.Base().step(unet, x_t, k, tsched, g_).x_prev
    return x_t

ns = {"genuine noise": e8, **w8}
fig, ax = plt.subplots(3, 4, figsize=(12.5, 6.4), layout="constrained", width_ratios=[1, 1, 1, 4])
final = {}
for r, (kind, n) in enumerate(ns.items()):
    xt = noised(i_demo, n)
    with torch.no_grad():
        x0_hat = nt.tweedie(xt, unet(xt, tsched.timesteps[i_demo]), float(tsched.a_t[i_demo]), float(tsched.s_t[i_demo]))
    final[kind] = finish(xt, i_demo)
    ax[r, 0].imshow(n[0, 0], **sym(vmax=3.5)); ax[r, 1].imshow(xt[0, 0], cmap="gray", vmin=-2, vmax=2)
    ax[r, 2].imshow(x0_hat[0, 0], cmap="gray", vmin=-1, vmax=1)
    plotting.image_grid(ax[r, 3], final[kind][:8].clamp(-1, 1), nrow=8)
    ax[r, 3].images[-1].set_clim(-1, 1)
    for a in ax[r, :3]:
        a.set_xticks([]); a.set_yticks([])
    ax[r, 0].set_ylabel(kind)
for a, t in zip(ax[0], ("n put in", "$x_t$", r"UNet's $\hat x_0$", "finished samples (8 digits)")):
    a.set_title(t)
plotting.colorbar(ax[2, 0], ax[0, 0].images[-1], location="bottom", label="n (one scale)")
plotting.colorbar(ax[:, 3], ax[0, 3].images[-1], label="pixel value")
plt.show()
with torch.no_grad():
    fin = {k: (float(tp.reward(v).mean()), float(metrics.frechet_distance(tp.scorers.feats(v.float()), tp.all_feats)),
               float((v - x0).pow(2).mean())) for k, v in final.items()}
for k, (rw, fd, d) in fin.items():
    print(f"{k:22s} reward (log-odds of 3) {rw:+6.2f} | Frechet distance to test digits {fd:7.1f} | mean sq. distance to its x_0 {d:.3f}")

# %%
show(f"""At every noise level the UNet recovers genuine noise best, and the **raw gradient worst**: at t = {int(tsched.timesteps[i_demo])} its error is
{err[kinds[1], i_demo] / err[kinds[0], i_demo]:.1f}× that of genuine noise, the whitened gradient's {err[kinds[2], i_demo] / err[kinds[0], i_demo]:.1f}×,
while $W(g)$ keeps cosine {err['cos', i_demo]:.2f} with $g$. The denoiser reads the structured part of the raw gradient as *image content* (see its
$\\hat x_0$): that is the mechanism NTRK's $W$ targets. The finished samples show the price and the gain together: both gradients buy reward
({fin[kinds[1]][0]:+.1f} raw, {fin[kinds[2]][0]:+.1f} whitened, {fin[kinds[0]][0]:+.1f} without) and both move the digits away from the test
set (Fréchet distance {fin[kinds[1]][1]:.0f} raw, {fin[kinds[2]][1]:.0f} whitened, {fin[kinds[0]][1]:.0f} without; 32 samples, so only the order is
meaningful). $W$ does not make the error vanish: on a 16×16 image it has only 4 tiles per domain. Whether this pays off at a matched reward is a
benchmark question (notebook 05, `results/headline.md`), not something one picture decides.""")

# %% [markdown]
# ## 14. Real reward gradients: the 64-D digits and a 64×64 image
# The 64-D digits problem (notebook 04): an exact Gaussian-mixture denoiser fitted to 8×8 digits, reward = log-probability of class 3 under a trained
# classifier. We take $g_t = \nabla_{x_t} r(\hat x_0(x_t))$ at three noise levels. Then a 64×64 image reward with a smooth gradient, $r(x) = \langle b, x\rangle$
# for a blob template $b$.

# %%
from ntrk_minimal.worlds.digits import digits_problem
pb = digits_problem()
sched = pb.schedule
x0d = pb.mixture.sample(8, generator=gen(15))
grads, cos_d, lag_d = {}, {}, {}
for i in (3, 12, 21):
    t, ab = sched.timesteps[i], float(sched.ab_t[i])
    x_t = math.sqrt(ab) * x0d + math.sqrt(1 - ab) * torch.randn(x0d.shape, generator=gen(16 + i), dtype=x0d.dtype)
    _, _, g = reward_grad(pb.model, pb.reward, x_t, i, sched)
    grads[i] = g
    cos_d[i] = nt.whiteness(nt.whiten(g), g)["cosine"]
    raw = nt.whiteness(g.reshape(-1, 1, 8, 8))
    lag_d[i] = float(raw["lag1"].mean())
    print(f"step {i:2d} (t={int(t):3d}): cos(W(g), g) min {cos_d[i].min():.4f} | raw lag-1 (8x8 neighbours) {lag_d[i]:+.3f}, KS {raw['ks'].mean():.3f}")
print("tiles of W on a 64-D sample:", tuple(nt.tile_layout((64,)).shape))
fig, ax = plt.subplots(3, 1, figsize=(9, 4.8), layout="constrained")
g = grads[12]
unit_ = (nt.whiten(g), norm_match(g))                    # both unit RMS: one colour scale
for a, (img, t, scale) in zip(ax, [(g, "g_t (step 12), 8 digits", sym(g)), (unit_[0], "W(g_t)", sym(*unit_)),
                                   (unit_[1], "norm match(g_t)", sym(*unit_))]):
    a.imshow(torch.cat([im.reshape(8, 8) for im in img], 1), **scale); a.set_title(t); a.axis("off")
    plotting.colorbar(a)
plt.show()

# %%
show(f"""$W$ leaves the digits gradients essentially untouched (smallest cosine {min(float(c.min()) for c in cos_d.values()):.4f}) — **not**
because they are white: their lag-1 correlation between 8×8 neighbours is {min(lag_d.values()):+.2f} to {max(lag_d.values()):+.2f} (noise: 0 ± 0.13)
and their marginals are far from Gaussian. A 64-D sample with tiles of 64 is **one tile** per domain, and one tile's sets are unchanged by permuting its
entries (section 3): $W$ cannot see correlation there and acts like norm matching, unless a value breaks the (wide) one-tile envelope. That is why,
in the 64-D benchmark, $W$ and plain norm matching give the same numbers.""")

# %%
template = (blob / blob.norm() * 64)[None, None].float()
reward = nt.LinearReward(template.flatten())
xg = torch.randn(1, 1, 64, 64, generator=gen(17)).requires_grad_(True)
(g_img,) = torch.autograd.grad(reward(xg).sum(), xg)         # grad r = b: smooth
noisy_g = g_img + 1.0 * torch.randn(1, 1, 64, 64, generator=gen(18))   # a gradient with a noise-like part
fig, ax = plt.subplots(1, 4, figsize=(12, 3.1), layout="constrained")
res = {}
panels = [(g_img, "smooth gradient b"), (nt.whiten(g_img), "W(b)"), (noisy_g, "b + noise"), (nt.whiten(noisy_g), "W(b + noise)")]
for a, (img, t) in zip(ax, panels):
    a.imshow(img[0, 0], **sym(*(p for p, _ in panels))); a.axis("off"); a.set_title(t)   # one scale for all four
plotting.colorbar(ax, label="value")
plt.show()
res["smooth"] = float(nt.whiteness(nt.whiten(g_img), g_img)["cosine"])
res["smooth+noise"] = float(nt.whiteness(nt.whiten(noisy_g), noisy_g)["cosine"])
res["smooth+noise vs b"] = float(nt.whiteness(nt.whiten(noisy_g), g_img)["cosine"])
print({k: round(v, 3) for k, v in res.items()})

# %%
show(f"""The 64×64 image gradient is the other extreme (64 tiles per domain: $W$ sees everything). Whitening the smooth gradient $b$ keeps cosine
{res['smooth']:.2f} with it. With a noise-like part added, $W(b + \\text{{noise}})$ keeps cosine
{res['smooth+noise']:.2f} with *its input* but only {res['smooth+noise vs b']:.2f} with $b$ itself: $W$ keeps the noise, not the signal. What NTRK gains
from $W$ must therefore come from the learned denoiser staying on-distribution (section 13), not from a better direction.""")

# %% [markdown]
# ## 15. Why $W$ does little in 2-D
# With $N = 2$ there is no thin shell (section 1) and one tile of two values. Its value bands bound the smaller entry to $[L_{00}, U_{00}]$ and the larger to
# $[L_{01}, U_{01}]$; a unit-RMS vector ($a^2 + b^2 = 2$) always has its smaller entry in $[-\sqrt2, 1]$ and its larger in $[-1, \sqrt2]$, inside both bands.
# The means stage is as loose. So $W$ = norm matching, except in a sliver where the two coordinates nearly coincide (the energy bound $\chi^2_1 \ge 4\cdot10^{-9}$).

# %%
g2 = torch.randn(2000, 2, generator=gen(19), dtype=torch.float64) * torch.tensor([3.0, 0.5], dtype=torch.float64)
diff = (nt.whiten(g2) - norm_match(g2)).abs().amax(1)
L2, U2 = nt.order_stat_bounds(1, 2)
print(f"2-D, one tile of 2: smaller entry must lie in [{float(L2[0, 0]):.2f}, {float(U2[0, 0]):.2f}], larger in "
      f"[{float(L2[0, 1]):.2f}, {float(U2[0, 1]):.2f}]; a unit-RMS vector has smaller in [-1.41, 1.00], larger in [-1.00, 1.41]")
print("share of 2000 gradients where W differs from norm matching by > 1e-9:", float((diff > 1e-9).double().mean()))
theta = torch.linspace(0, 2 * math.pi, 400, dtype=torch.float64)
ring = torch.stack([theta.cos(), theta.sin()], 1) * 1.3
fig, ax = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
e2 = torch.randn(1000, 2, generator=gen(20))
ax[0].scatter(*e2.T.numpy(), s=2, alpha=0.4, label="N(0, I) draws"); ax[0].plot(*nt.whiten(ring).T.numpy(), "r", label="W(any direction)")
ax[0].set_aspect("equal"); ax[0].legend(); ax[0].set_title("2-D: W maps every direction\nto the circle r = sqrt(2)")
ax[1].hist(e2.norm(dim=1).numpy(), bins=50, density=True); ax[1].axvline(math.sqrt(2), color="r"); ax[1].set_title("|eps| in 2-D: no shell")
ax[1].set_xlabel("|eps|")
plt.show()


# %% [markdown]
# ## 16. Play with $\alpha$, the tile size and the input
# With a live kernel and `ipywidgets`, the sliders re-run $W$; without them (or in a static view), the grid below shows the same controls at
# a few settings: blob × noise, where the patch size matters most.

# %%
# NBVAL_IGNORE_OUTPUT
def play(input_name="blob x noise", alpha=1e-4, tile=8, ax=None):
    x = inputs[input_name]
    w = nt.whiten(x, alpha=alpha, tile_size=(tile, tile))
    d = {k: float(v) for k, v in nt.whiteness(w, x).items()}
    own = ax is None
    if own:
        fig, ax = plt.subplots(1, 2, figsize=(9, 4.2), layout="constrained")
        ax[0].imshow(norm_match(x)[0, channel.get(input_name, 0)], **sym(vmax=3)); ax[0].set_title(f"{input_name} (unit RMS)")
        ax, a0 = ax[1], ax[0]
    ax.imshow(w[0, channel.get(input_name, 0)], **sym(vmax=3)); ax.set_xticks([]); ax.set_yticks([])
    ax.set_title(f"alpha={alpha:.0e}, {tile}x{tile} patches\ncos {d['cosine']:+.2f} · lag-1 {d['lag1']:+.2f} · flat {d['flatness']:.2f}")
    if own:
        a0.set_xticks([]); a0.set_yticks([]); plotting.colorbar([a0, ax], label="value"); plt.show()

try:
    import ipywidgets as widgets
    widgets.interact(play, input_name=widgets.Dropdown(options=list(inputs), value="blob x noise"),
                     alpha=widgets.FloatLogSlider(value=1e-4, base=10, min=-8, max=-1, step=1),
                     tile=widgets.Dropdown(options=[2, 4, 8, 16], value=8), ax=widgets.fixed(None))
except ImportError:
    print("ipywidgets not installed: see the static grid below")

# %%
fig, ax = plt.subplots(1, 4, figsize=(12.5, 3.6), layout="constrained")
for a, (alpha, tile) in zip(ax, [(1e-4, 4), (1e-4, 8), (1e-4, 16), (1e-2, 8)]):
    play("blob x noise", alpha, tile, ax=a)
plotting.colorbar(ax, label="value (one scale)")
plt.show()

# %% [markdown]
# ## 17. Cost
# $W$ runs once per sampling step; it must be negligible next to a denoiser forward + backward. (CPU, one thread; timings vary by machine.)

# %%
# NBVAL_IGNORE_OUTPUT
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
assert abs(diag_noise["flatness"] - math.exp(-np.euler_gamma)) < 0.01 and diag_smooth["flatness"] < 0.05  # flatness of white noise = e^-gamma
assert outside1 > 0 and bool(nt.in_2os_set(tiles["ramp"][None, None]))               # one tile: tails fail, a ramp passes
assert all(db - 1e-6 <= dr <= 1.05 * db and d1 <= db + 1e-6 for d1, dr, db in rows)    # brute force brackets
assert coverage[256, 64][0] < 0.95 < 0.99 < coverage[1, 64][0]                         # alpha is per entry, not per set
assert cos["W"].min() > 0.99999 and cos["WGNC"].min() < cos["W"].min()                # ... yet W(eps) ~ eps
for iname in inputs:
    d = table[iname, "W"]
    assert abs(d["lag1"]) < 0.2 and d["flatness"] > 0.35 and 0.85 < d["norm2"] < 1.05, iname
assert table["smooth", "pixel values only"]["lag1"] > 0.5 > table["smooth", "W"]["cosine"]  # the trade-off
assert art["blob x noise"]["grid"] > 3 * wn["grid"] and c4 < 0.6 * c1                  # the grid, measured; smaller patches shrink it
assert art["spike"]["lines"] > 2.5 * wn["lines"] and art["smooth"]["border"] > 2 > 1.5 > wn["border"]   # the cross and the borders
assert all(err[kinds[0], i] < err[kinds[2], i] < err[kinds[1], i] for i in steps)      # the UNet: genuine < W(g) < raw g
assert min(float(c.min()) for c in cos_d.values()) > 0.99                              # digits gradients: one tile, W ~ norm match
assert res["smooth"] < 0.5 < res["smooth+noise"] + 0.3
assert outside(tile_scores(bx)[1]) > 10 and outside(tile_scores(after)[1]) == 0          # energies stage lands in its band
assert float((diff > 1e-9).double().mean()) < 0.01                                     # 2-D: W = norm matching
print("all checks passed")

# %% [markdown]
# ## Summary
# - A Gaussian sample in high dimension is **typical**: norm $\approx\sqrt N$, Gaussian values (KS distance $\approx 0.87/\sqrt N$), no correlation
#   (lag-1 ≈ 0), a flat spectrum (flatness $e^{-\gamma} = 0.561$). $W$ projects onto confidence sets that encode these properties.
# - One tile: a QQ plot with an envelope; projecting = pushing the points into it and unsorting. Many tiles: the **2OS set** bounds every two-level
#   order statistic $Z_{rj}$ by nested Beta quantiles; the projection is sort → clip → unsort.
# - **We checked the paper's claim** that one pass is the exact projection: false at two levels (a clip can reverse two entries of a tile). One pass is a
#   lower bound on the distance; repeating (with tiles re-sorted into their own order) lands in the set and matched brute force in our small cases.
# - $\alpha$ is **per entry, not per set**: a genuine draw lies in a large 2OS set markedly less often than $1-\alpha$ (section 7 measures it).
#   $W(\epsilon)\approx\epsilon$ holds anyway, because the few violations are tiny clips (cosine > 0.99999, checked above).
# - Tile means and energies catch block structure; the DCT domain (radial bands) catches correlation; $W$ = DCT-domain then pixel-domain stages.
#   Structured inputs come out close to white — approximately, and **at a price**: a smooth gradient keeps only a small part of its direction; value-only
#   whitening keeps more direction but leaves the correlation. $W$ leaves artefacts the sets cannot see: a patch grid, a cross through a spike,
#   bright borders.
# - A trained UNet recovers genuine noise far better than a raw gradient injected as noise, and a whitened gradient in between: the reason for $W$.
# - With one tile per domain (the 64-D digits, $N = 64$) $W$ cannot see correlation and acts like norm matching — the digits gradients are *not* white,
#   $W$ is blind to it; in 2-D $W$ is norm matching.
#
# ## Exercises
# 1. Set `alpha=0.01` in `nt.whiten`: how do pass-through (section 7) and the structured-input diagnostics (section 11) change? Measure the coverage at
#    `alpha=0.01` with `wh.in_confidence_sets`. Is there an $\alpha$ that whitens the smooth field's lag-1 to 0.01 while keeping pass-through > 0.99999?
# 2. Run `wh.whiten_stages(x, cycles=2)` and `stages=("values",)` with both domains: which stage buys which diagnostic?
# 3. Find an $M=3, D=2$ input where the repeated pass is *not* the brute-force optimum (`nt.nearest_2os_brute_force`). How large is the gap?
# 4. Replace the 8×8 pixel patches by 16×4 patches (`tile_size=(16, 4)`): what happens to a vertically striped input, and to the grid of section 12?
# 5. In section 13, use 4×4 patches (`tile_size=(4, 4)`: 16 tiles on 16×16). Does the UNet's error on $W(g)$ come closer to genuine noise? What
#    happens to the cosine?
# 6. (Harder) The confidence sets treat each $Z_{rj}$ separately: a sample can sit at $L$ in every entry at once. Propose a test statistic that would
#    catch that, and check whether $W$'s outputs pass it.
