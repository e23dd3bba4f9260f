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
# # 01 · Diffusion on a 2-D Gaussian mixture, exactly
#
# **What you will learn**
# - the variance-preserving forward process $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$ and why a Gaussian mixture stays a Gaussian mixture under it;
# - the *exact* score $\nabla \log p_t$ and denoiser $\hat\varepsilon(x_t, t) = -\sqrt{1-\bar\alpha_t}\,\nabla\log p_t(x_t)$ — no network, no training error;
# - reverse sampling with a **stochastic reverse kernel** $x_{t-1} = \mu_t + \sigma_t\,\eta_t$, and the *standardized perturbation* $\eta_t$ that the whole collection uses as its lens;
# - how we compare two sets of samples (the **energy distance**), and why NTRK needs $\sigma_t > 0$.
#
# **Prerequisites**: Gaussian densities, the idea of a score function. Library: `ntrk_minimal` (`make lab` installs it).
# The method in our words: [`docs/METHOD.md`](../docs/METHOD.md). About 30 seconds on 2 CPU cores.

# %%
import math
import torch
import matplotlib.pyplot as plt
import ntrk_minimal as nt
from ntrk_minimal import metrics, plotting

FAST = True          # smaller sample sizes; the conclusions do not change
SEED = 0
N = 2000 if FAST else 10000
torch.manual_seed(SEED)
torch.set_num_threads(1)   # 2-D tensors are tiny: threads only add overhead
plotting.use_style()   # the shared figure style: 110 dpi, fonts >= 9 pt

# %% [markdown]
# ## 1. The data distribution $p_0$: eight Gaussians on a ring
# `ring_mixture` returns a `GaussianMixture` with weights $w_k$, means $\mu_k$ (radius 2) and covariances $\Sigma_k = 0.25^2 I$.
# Its log-density and samples are exact.

# %%
mix = nt.ring_mixture(num_modes=8, radius=2.0, std=0.25)
g = torch.Generator().manual_seed(SEED)
x0 = mix.sample(N, g)
fig, ax = plt.subplots(1, 2, figsize=(8.5, 4.0), layout="constrained")
plotting.plot_density(ax[0], mix.log_prob); ax[0].set_title("exact density $p_0$")
plotting.plot_samples(ax[1], x0, title=f"{N} exact samples")
plt.show()
print("components:", mix.num_components, " dimension:", mix.dim)

# %% [markdown]
# ## 2. The forward process and the schedule
# We take $\bar\alpha_t = \prod_{s \le t}(1 - \beta_s)$ from diffusers' `DDIMScheduler` (the noise variances $\beta_s$ rise linearly from
# $10^{-4}$ to $0.02$ over 1000 training steps — this $\beta_s$ is the *noise schedule*; notebook 02's $\beta$ is a different thing, the KL
# temperature of the reward target) and sample on a subsequence of $T = 25$ steps. Under the forward process
# $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$ each component diffuses on its own:
# $$p_t = \sum_k w_k\,\mathcal N\big(m_k, C_k\big),\qquad m_k = \sqrt{\bar\alpha_t}\,\mu_k,\quad C_k = \bar\alpha_t \Sigma_k + (1-\bar\alpha_t) I.$$
# The panels share one colour scale of $\log p_t$ (a linear density scale would show only $t = 0$: the peaks fall by two orders of magnitude).

# %%
sched = nt.make_schedule(num_steps=25, eta=1.0)
print("timesteps:", sched.timesteps[:4].tolist(), "...", sched.timesteps[-3:].tolist())
ts = [0, 100, 300, 600, 960]
grid = plotting.grid_2d()[0]
peak = max(float(mix.diffused(float(sched.alphas_cumprod[t])).log_prob(grid).max()) for t in ts)
levels = torch.linspace(-8, peak, 13).tolist()         # one log-density scale for all five panels
fig, axes = plt.subplots(1, 5, figsize=(12, 2.8), layout="constrained")
for ax, t in zip(axes, ts):
    ab = float(sched.alphas_cumprod[t])
    cs = plotting.plot_density(ax, mix.diffused(ab).log_prob, levels=levels, log=True, cmap="viridis", extend="min")
    ax.set_title(f"$p_t$, t={t}\n$\\bar\\alpha_t$={ab:.3f}")
plotting.colorbar(axes, cs, label="log density", format="%.1f")
plt.show()

# %% [markdown]
# ## 3. The exact score field and the exact denoiser
# The score of $p_t$ is $\nabla\log p_t(x) = -\sum_k P(k\mid x)\,C_k^{-1}(x - m_k)$, with $m_k, C_k$ the diffused means and covariances above and
# $P(k\mid x) = w_k\mathcal N(x; m_k, C_k) / p_t(x)$ the posterior probability that $x$ came from component $k$ (`mix.diffused(ab).score`).
# `MixtureDenoiser` turns it into the model protocol every sampler in this collection calls, `model(x_t, t) -> eps_hat`, with
# $\hat\varepsilon = -\sqrt{1-\bar\alpha_t}\,\nabla\log p_t$. We check it against autograd of the exact log-density. (Background contours: $p_t$, each panel
# on its own scale — they only locate the modes.)

# %%
model = nt.MixtureDenoiser(mix, sched.alphas_cumprod)
pts, gx, gy = plotting.grid_2d(3.5, 17)
fig, axes = plt.subplots(1, 3, figsize=(10, 3.5), layout="constrained")
for ax, t in zip(axes, [20, 300, 700]):
    s = mix.diffused(model.ab(t)).score(pts)
    plotting.plot_density(ax, mix.diffused(model.ab(t)).log_prob)
    ax.quiver(pts[:, 0], pts[:, 1], s[:, 0], s[:, 1], color="tab:red", angles="xy", scale=None, width=0.006)
    ax.set_title(f"score of $p_t$, t={t}")
plt.show()

t = 300
x = torch.randn(256, 2, generator=g, dtype=torch.float64).requires_grad_(True)
(auto,) = torch.autograd.grad(model.log_prob_t(x, t).sum(), x)
err = (model(x.detach(), t) + math.sqrt(1 - model.ab(t)) * auto).abs().max().item()
print("max |eps_hat + sqrt(1-ab) * autograd score| =", f"{err:.1e}")

# %% [markdown]
# ## 4. The stochastic reverse kernel
# One reverse step is Gaussian: $p(x_{t-1}\mid x_t) = \mathcal N(\mu_t, \sigma_t^2 I)$ with the Tweedie estimate
# $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)/\sqrt{\bar\alpha_t}$ and the DDIM mean
# $\mu_t = \sqrt{\bar\alpha_{t-1}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t-1}-\sigma_t^2}\,\hat\varepsilon$.
# DDIM has a knob, usually also called $\eta$; to keep the names apart we write it $\eta_{\rm DDIM}$ (the `eta=` argument of
# `make_schedule`): it scales $\sigma_t$, and $\eta_{\rm DDIM} = 1$ makes $\sigma_t^2$ exactly DDPM's posterior variance. We write the update as
# $$x_{t-1} = \mu_t + \sigma_t\,\eta_t, \qquad \eta_t \sim \mathcal N(0, I) \text{ for the base kernel,}$$
# and from here on $\eta_t$ always means this *standardized perturbation*, the lens of the whole collection.
# `nt.sample(..., record=True)` keeps every step: $x_t$, $\hat x_0$, $\mu_t$, $\sigma_t$, $\eta_t$.
#
# **Energy distance.** To compare the samples with exact ones we use the energy distance between two laws $P, Q$,
# $$\mathrm{ED}(P, Q) = 2\,\mathbb E\|X - Y\| - \mathbb E\|X - X'\| - \mathbb E\|Y - Y'\| \;\ge 0,\qquad X, X' \sim P,\ Y, Y' \sim Q,$$
# which is 0 exactly when $P = Q$. `metrics.energy_distance(x, y, unbiased=True)` estimates it from two sample sets (averaging over
# distinct pairs, so it is 0 *on average* for equal laws); its **noise floor** — the spread of the estimate between two exact sample sets — says how
# small a difference one run can see.

# %%
g = torch.Generator().manual_seed(SEED)
x_T = torch.randn(N, 2, generator=g, dtype=torch.float64)
res = nt.sample(model, sched, x_T, kernel="base", generator=g, record=True)
ref = mix.sample(N, torch.Generator().manual_seed(1))
ed_25 = metrics.energy_distance(res.x0, ref, unbiased=True)
floor = torch.tensor([metrics.energy_distance(mix.sample(N, torch.Generator().manual_seed(100 + 2 * k)),
                                              mix.sample(N, torch.Generator().manual_seed(101 + 2 * k)), unbiased=True)
                      for k in range(5)])          # two fresh exact sets, 5 times: the noise floor at this n

fig, ax = plt.subplots(1, 4, figsize=(11, 2.9), layout="constrained")
plotting.plot_density(ax[0], mix.log_prob, alpha=0.5)
plotting.plot_trajectories(ax[0], res.path, num=25, lim=3.5)
ax[0].set_title("25 reverse trajectories")
plotting.plot_samples(ax[1], res.x0, title=f"25-step samples, ED {ed_25:.4f}")
ax[2].plot(sched.sigma_t.numpy(), "o-", ms=3)                       # the schedule's noise scale at each step
ax[2].set_title("$\\sigma_t$ per step"); ax[2].set_xlabel("step i")
plotting.plot_eta_hist(ax[3], res.eta[:-1], title="$\\eta_t$ of the base kernel\n(steps 0-23)")
plt.show()
print("NFE per sample:", res.nfe, f"| energy distance to exact samples: {ed_25:.4f} "
      f"(noise floor, exact vs exact: {floor.mean():+.4f} ± {floor.std():.4f})")
print(f"sigma_t of the last step: {float(sched.sigma_t[-1])} (it lands on alpha-bar = 1: x_0 = mu_t, nothing injected)")

# %% [markdown]
# **The last step is deterministic.** The grid ends on $\bar\alpha = 1$ (diffusers' `set_alpha_to_one`), so the last step has $\sigma_t = 0$
# and returns $x_0 = \mu_t = \hat x_0$: its $\eta_t$ is drawn but multiplied by 0. The histogram above therefore uses steps 0–23, and every kernel that
# acts through $\eta_t$ (NTRK in notebook 02) does nothing on that step.
#
# **A finite number of steps is not exact.** Even with the exact denoiser, 25 ancestral steps give an
# over-concentrated law (each mode is too narrow). More steps shrink the gap — keep this in mind when later notebooks
# compare samplers against an exact target: the 25-step base sampler is itself slightly off.

# %%
spread = {}
nearest_std = lambda xs: float(torch.cdist(xs, mix.means).min(1).values.pow(2).mean().div(2).sqrt())
spread_exact = nearest_std(ref)
for T in (25, 100, 250):
    s_T = nt.make_schedule(T, eta=1.0)
    m_T = nt.MixtureDenoiser(mix, s_T.alphas_cumprod)
    g = torch.Generator().manual_seed(SEED)
    xs = nt.sample(m_T, s_T, torch.randn(N, 2, generator=g, dtype=torch.float64), "base", g).x0
    spread[T] = nearest_std(xs)       # within-mode spread: RMS distance to the nearest mode centre
print("within-mode spread, exact samples:", round(spread_exact, 3))
print("within-mode spread by number of steps:", {T: round(v, 3) for T, v in spread.items()})

# %% [markdown]
# ## 5. Deterministic DDIM has no noise to tilt
# With $\eta_{\rm DDIM} = 0$, $\sigma_t = 0$ at every step: every trajectory is a deterministic function of $x_T$. The base kernel still works,
# but a *noise-tilted* kernel has nothing to tilt — NTRK replaces part of the noise $\eta_t$ with a reward direction, and
# $\sigma_t\,\eta_t = 0$ whatever $\eta_t$ is. The library refuses rather than silently doing nothing:

# %%
det = nt.make_schedule(25, eta=0.0)
m_det = nt.MixtureDenoiser(mix, det.alphas_cumprod)
g = torch.Generator().manual_seed(SEED)
res_det = nt.sample(m_det, det, x_T[:500], "base", g, record=True)
reward = nt.QuadraticReward([0.0, 2.5], scale=1.0)
try:
    nt.sample(m_det, det, x_T[:500], "ntrk", g, reward=reward, rho_t=0.1)
except ValueError as e:
    print("ValueError:", e)

fig, ax = plt.subplots(1, 2, figsize=(8.5, 4.0), layout="constrained")
plotting.plot_density(ax[0], mix.log_prob, alpha=0.5)
plotting.plot_trajectories(ax[0], res_det.path, num=25); ax[0].set_title("deterministic DDIM ($\\eta_{DDIM}$=0):\nstraight-ish paths")
plotting.plot_samples(ax[1], res_det.x0, title="deterministic DDIM samples")
plt.show()
print("max sigma_t with eta_DDIM = 0:", float(det.sigma_t.max()))

# %% [markdown]
# ## 6. Checks
# The numbers this notebook relies on (rounded, so they are stable across machines).

# %%
assert err < 1e-10                                   # exact eps = -sqrt(1-ab) * score
assert ed_25 < 0.05 and float(floor.abs().max()) < 0.003     # 25 steps get the ring right; exact vs exact is ~0 ...
assert spread[25] < spread[100] < spread[250] < spread_exact + 0.005  # ... modes too narrow, less so with more steps
e = metrics.eta_energy(res.eta[:-1])
assert (e - 1).abs().max() < 0.1                     # base eta_t is white noise: E||eta||^2/d = 1
assert float(det.sigma_t.max()) == 0.0
print("E||eta_t||^2/d, base kernel: mean", round(float(e.mean()), 2))
print("all checks passed")

# %% [markdown]
# ## Summary
# - A Gaussian mixture diffuses to a Gaussian mixture, so $\hat\varepsilon$, the score and $\log p_t$ are exact at every $t$.
# - A stochastic reverse step is $x_{t-1} = \mu_t + \sigma_t\eta_t$; for the pretrained (base) kernel, $\eta_t\sim\mathcal N(0,I)$.
# - The energy distance compares two sample sets (0 iff the laws agree); read it against its noise floor (exact vs exact at the same $n$).
# - 25 steps with an exact denoiser still leave a discretization error (over-concentrated modes).
# - NTRK acts on $\eta_t$, so it needs $\sigma_t > 0$ (DDPM, or DDIM with $\eta_{\rm DDIM} > 0$); the last step has $\sigma_t = 0$ and tilts nothing.
#
# ## Exercises
# 1. Change `std` of the ring to 0.1 and to 0.5. How does the 25-step within-mode spread compare with the truth?
# 2. Replace the linear $\beta$ schedule by `make_schedule(25, beta_schedule="scaled_linear")`. What changes in the trajectories?
# 3. Show numerically that DDIM with $\eta_{\rm DDIM} = 1$ and DDPM's posterior variance $\frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\big(1 - \frac{\bar\alpha_t}{\bar\alpha_{t-1}}\big)$ agree (`sched.sigma_t**2`).
# 4. Plot $\|\hat x_0 - x_0\|$ along a trajectory (`res.x0_hats`). When does the Tweedie estimate settle on a mode?
