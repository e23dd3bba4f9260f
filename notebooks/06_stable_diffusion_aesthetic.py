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
# # 06 · Stable Diffusion + the LAION aesthetic predictor, through diffusers
#
# **What you will learn**
# - how our one sampling loop runs Stable Diffusion: the UNet with classifier-free guidance *is* a model `eps_hat(x_t, t)`, the pipeline's `DDIMScheduler` *is* our `Schedule`, and with $\rho = 0$ our loop reproduces `StableDiffusionPipeline.__call__` to float precision;
# - where $\mu_t$, $\sigma_t$ and $\hat x_0$ live inside diffusers' DDIM `step`, and which single line NTRK changes;
# - the reward the samplers climb: the LAION aesthetic score of **the image a user sees** (decoded, clamped to $[0, 1]$), differentiated through a *straight-through* surrogate of the clamp, VAE decoder, CLIP ViT-L/14 and the LAION head;
# - how the evaluation protocol (fronts, tuning seeds, matched levels, paired verdicts) runs on SD — target, held-out reward (CLIP image–prompt similarity), fidelity (KID to the base sampler's images) — and which command produces the table that matters on a GPU;
# - the $\eta_t$ diagnostic on latents, what the whitened gradient looks like, why $\rho \approx \kappa^2/N \approx 10^{-5}$ for a $4\times64\times64$ latent, and what a guided step costs.
#
# **Prerequisites**: notebooks 02–05 (kernels, $\eta_t$, whitening, the protocol's fronts and verdicts), the diffusers `StableDiffusionPipeline`.
#
# **Two paths, one code.** With Stable Diffusion 1.5 and the CLIP ViT-L/14 image tower on disk (`NTRK_SD_MODEL`, `NTRK_CLIP_MODEL`, or the hub cache; the LAION head `sac+logos+ava1-l14-linearMSE.pth` ships with the project in `data/laion_aesthetic`) this notebook runs the real models (a GPU is advisable). Without them — as on our CI machines, offline — loading fails in milliseconds with a message that says what is missing, and the notebook falls back to a **tiny, randomly initialised pipeline and scorer** shipped in `data/tiny_sd` (4×16×16 latents, 128×128 images). The tiny path proves the *plumbing* — shapes, gradients, NFE accounting, equivalence with the pipeline — **not the pictures**: its images are noise and its "aesthetic score" is a random function. Read every number below with that in mind.

# %%
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")   # remove to let diffusers download (needs network)
import math
import time
import torch
import matplotlib.pyplot as plt
from IPython.display import Markdown, display
import diffusers, transformers
diffusers.utils.logging.set_verbosity_error()       # keep loader chatter (accelerate, torchvision) out of the page
transformers.utils.logging.set_verbosity_error()
import ntrk_minimal as nt
from ntrk_minimal import metrics, paths, plotting, bench as P
from ntrk_minimal.adapters import sd
from ntrk_minimal.worlds import sd as sd_world
from ntrk_minimal.adapters.aesthetic import clamp01_st
from ntrk_minimal.kernels import reward_grad, tweedie, ddim_mean
from ntrk_minimal.whitening import norm_match
from ntrk_minimal.whitening import tile_layout, whiten, whiteness

FAST = True            # FAST: one prompt, few steps, the live parts on 1 seed; the protocol study is read from results/
SEED = 0
torch.manual_seed(SEED)
torch.set_num_threads(1)          # tiny models on a shared CPU: one thread is fastest
device = "cuda" if torch.cuda.is_available() else "cpu"
plotting.use_style()              # the shared figure style: 110 dpi, fonts >= 9 pt
RESULTS = paths.RESULTS
T0 = time.perf_counter()

# %% [markdown]
# ## 1. Loading: the real models, or a clear message and the tiny fallback
# `sd.load_sd()` tries `StableDiffusionPipeline.from_pretrained(model_id)` (default `stable-diffusion-v1-5/stable-diffusion-v1-5`) and `load_aesthetic()` (the CLIP ViT-L/14 image tower + the shipped, sha256-checked LAION head). Offline without weights it prints why and returns the tiny pair, loaded through the *same* `from_pretrained` code after a sha256 check.

# %%
pipe, scorer, which = sd.load_sd(device=device)
REAL = which == "real"
PROMPTS = (["a photo of a lighthouse on a cliff at sunset", "a bowl of fruit on a wooden table"] if REAL
           else ["a photo of a cat"])
T = 25 if REAL or not FAST else 8         # the tiny path: few steps keep the live cells short
prob = sd.make_problem(pipe, scorer, PROMPTS, guidance_scale=7.5, num_steps=T, eta=1.0)
print("path:", which, "| latent", prob.latent_shape, "| N =", prob.dim, "| T =", T,
      "| guidance scale", prob.guidance_scale)

# %% [markdown]
# ## 2. Pipeline anatomy: where $\hat x_0$, $\mu_t$ and $\sigma_t$ live in diffusers
#
# `StableDiffusionPipeline.__call__` does, per step: `noise_pred = unet([z; z], t, [e_neg; e_prompt])`, then `noise_pred = eps_u + s (eps_c - eps_u)` — that pair of lines is our `sd.GuidedUNet`, the model protocol $\hat\varepsilon(x_t, t)$. Then `DDIMScheduler.step(noise_pred, t, z, eta=1, generator)` computes, in its own names:
#
# | diffusers (`scheduling_ddim.py`) | ours (`kernels.py`) | formula |
# |---|---|---|
# | `pred_original_sample` | `x0_hat = tweedie(...)` | $(x_t - s_t\hat\varepsilon)/a_t$ with $a_t = \sqrt{\bar\alpha_t}$, $s_t = \sqrt{1-\bar\alpha_t}$ |
# | `std_dev_t = eta * variance ** 0.5` | `schedule.sigma_t[i]` | $\eta\sqrt{\tfrac{1-\bar\alpha_{t'}}{1-\bar\alpha_t}}\sqrt{1-\tfrac{\bar\alpha_t}{\bar\alpha_{t'}}}$ |
# | `alpha_prod_t_prev**0.5 * pred_original_sample + pred_sample_direction` | `mu_t = ddim_mean(...)` | $a_{t'}\hat x_0 + \sqrt{s_{t'}^2-\sigma_t^2}\,\hat\varepsilon$ ($= \sqrt{\bar\alpha_{t'}}\hat x_0 + \sqrt{1-\bar\alpha_{t'}-\sigma_t^2}\,\hat\varepsilon$) |
# | `variance_noise = randn_tensor(...)` | `eta_t` | base: $\mathcal N(0, I)$; **NTRK**: $\sqrt{\rho_t}\,W(g_t) + \sqrt{1-\rho_t}\,\varepsilon$ |
#
# NTRK replaces only the last row. Below: one diffusers step with a given `variance_noise` against our pieces, then the whole pipeline against our loop with the same `torch.Generator`.

# %%
s = prob.schedule
i = 3
z = prob.x_T(torch.Generator(device).manual_seed(SEED))
t = s.timesteps[i]
with torch.no_grad():
    eps_hat = prob.model(z, t)
    noise = torch.randn(z.shape, generator=torch.Generator(device).manual_seed(1), device=z.device)
    theirs = pipe.scheduler.step(eps_hat, t, z, eta=1.0, variance_noise=noise)
    x0_hat = tweedie(z, eps_hat, float(s.a_t[i]), float(s.s_t[i]))
    mu_t = ddim_mean(x0_hat, eps_hat, float(s.a_prev[i]), float(s.s_prev[i]), float(s.sigma_t[i]))
    ours = mu_t + float(s.sigma_t[i]) * noise
rel = lambda a, b: float((a - b).abs().max() / b.abs().max())
print("step", i, "t =", int(t), "| sigma_t =", round(float(s.sigma_t[i]), 4))
print("x0_hat vs pred_original_sample: rel. diff < 1e-5:", rel(x0_hat, theirs.pred_original_sample) < 1e-5)
print("x_{t-1} vs prev_sample:        rel. diff < 1e-5:", rel(ours, theirs.prev_sample) < 1e-5)
print("first/last timesteps", s.timesteps[:3].tolist(), "...", int(s.timesteps[-1]),
      "| sigma_t first/last", round(float(s.sigma_t[0]), 3), round(float(s.sigma_t[-1]), 4))

# %%
# the whole pipeline (DDIM, eta = 1, output_type="latent") vs our loop with the base kernel
ref = sd.pipeline_latents(prob, torch.Generator(device).manual_seed(SEED))
base = sd.run_method(prob, "base", torch.Generator(device).manual_seed(SEED))
g = torch.Generator(device).manual_seed(SEED)
ntrk0 = nt.sample(prob.model, s, prob.x_T(g), "ntrk", g, prob.reward, rho_t=0.0)
eq_rel = rel(base.x0, ref)
print("pipe.__call__ vs our base loop: rel. max diff < 1e-5:", eq_rel < 1e-5, "| NFE", base.nfe)
print("NTRK with rho = 0 equals the base loop bit for bit:", torch.equal(ntrk0.x0, base.x0))

# %% [markdown]
# ## 3. The reward sees the image a user sees
#
# A user of the pipeline gets `pipe(..., output_type="pt")`: the latent decoded by the VAE and mapped to $[0, 1]$ by `VaeImageProcessor.denormalize`, $\;x = \mathrm{clamp}(D(z)\cdot 0.5 + 0.5,\ 0,\ 1)$. Pixels the decoder pushes outside $[0, 1]$ are *clamped*, so the score of the user's image is the score of the clamped image — and that is what our reward `sd.LatentAesthetic` returns:
#
# $$ r(z) = \text{MLP}\big(e/\|e\|\big),\quad e = \text{CLIP}\big(\text{preprocess}(\mathrm{clamp_{st}}(D(z/0.18215)\cdot 0.5 + 0.5))\big). $$
#
# The clamp has zero gradient on saturated pixels, which would leave a guided sampler no signal to bring them back. We guide through a **differentiable surrogate**, the *straight-through* clamp `aesthetic.clamp01_st(y) = y + (clamp(y) - y).detach()`: its **value** is exactly `clamp(y)`, its **gradient** is the identity's. So the scorer is differentiated *at the clamped image*; unsaturated pixels get the exact gradient, saturated ones still get the scorer's. (`clip_preprocess` resizes on tensors — shortest side to 224 by antialiased bicubic, center crop, CLIP mean/std — so the graph survives; `CLIPProcessor` would go through PIL and cut it. The VAE copy and CLIP run in fp32 even when the UNet is fp16: `reward_dtype`; and a float16 UNet receives the reward's cotangent rescaled to $\max|v| = 1$ by a power of two — loss scaling, undone after the UNet — so small reward gradients do not underflow in its backward pass.) The figure shows the two halves of the surrogate on one pixel.

# %%
y = torch.linspace(-0.5, 1.5, 401, requires_grad=True)
(dy_st,) = torch.autograd.grad(clamp01_st(y).sum(), y)
(dy_exact,) = torch.autograd.grad(y.clamp(0, 1).sum(), y)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
axes[0].plot(y.detach(), clamp01_st(y).detach(), color="tab:red", lw=2.5, label="clamp01_st(y): value")
axes[0].plot(y.detach(), y.detach(), color="grey", ls=":", label="identity")
axes[0].set_title("forward: exactly clamp(y, 0, 1)")
axes[1].plot(y.detach(), dy_st, color="tab:red", lw=2.5, label="straight-through (ours)")
axes[1].plot(y.detach(), dy_exact, color="k", ls="--", label="exact clamp")
axes[1].set_title("backward: d/dy")
axes[1].set_ylim(-0.1, 1.2)
for ax in axes:
    ax.set_xlabel("decoded pixel y = D(z) 0.5 + 0.5"); ax.legend(loc="upper left"); ax.grid(alpha=0.25)
plt.show()

# %%
# the reported score = the score of the user's image: pipe(output_type="pt") vs our score of our latents
user = sd.pipeline_call(prob, torch.Generator(device).manual_seed(SEED), output_type="pt")
with torch.no_grad():
    s_user = prob.reward.scorer(user.to(prob.reward.dtype)).float().cpu()
    decoded = prob.reward.vae.decode(base.x0 / prob.reward.scaling_factor, return_dict=False)[0] * 0.5 + 0.5
    s_unclamped = prob.reward.scorer(decoded).float().cpu()
s_ours, r_ours = prob.score(base.x0), prob.reward(base.x0).detach().cpu()
saturated = float(((decoded < 0) | (decoded > 1)).float().mean())
score_gap = float((s_ours - s_user).abs().max())
print(f"share of decoded pixels outside [0, 1]: {saturated:.2%}")
print(f"score of the user's image {s_user[0]:.6f} | our reported score {s_ours[0]:.6f} | reward value "
      f"{r_ours[0]:.6f} | without the clamp {s_unclamped[0]:.6f}")

# %%
i = T // 2
res_b = nt.sample(prob.model, s, prob.x_T(torch.Generator(device).manual_seed(SEED)), "base",
                  torch.Generator(device).manual_seed(SEED), record=True)
x_i = res_b.trace[i].x_t
eps_i, x0_i, g_i = reward_grad(prob.model, prob.reward, x_i, i, s)
w_i = whiten(g_i)
cos_w = float(metrics.cosine(w_i, g_i).mean())
wh_g, wh_w = whiteness(g_i), whiteness(w_i)
print("step", i, "| g_t = grad_{x_t} r(x0_hat(x_t)) finite and > 0:", bool(torch.isfinite(g_i).all() and g_i.norm() > 0))
print("cosine(W(g), g) =", round(cos_w, 2))
print("lag-1 correlation: g", round(float(wh_g["lag1"].mean()), 2), "-> W(g)", round(float(wh_w["lag1"].mean()), 2),
      "| ||W(g)||^2/N =", round(float(wh_w["norm2"].mean()), 2))

# %% [markdown]
# `reward_grad` returns $g_t = \nabla_{x_t} r(\hat x_0(x_t))$: one backward pass through the reward (CLIP, the clamp surrogate, the VAE decoder), Tweedie and the UNet. (`tests/test_sd.py` checks the surrogate against finite differences of the clamped reward where no pixel saturates, and checks that the reported score is the score of `pipe(output_type="pt")`.)
#
# ### The whitened gradient as an image
# Each column is one latent channel. Top: the raw gradient $g_t$ (structured, spatially correlated); middle: $W(g_t)$ — it should look like the bottom row, a genuine $\mathcal N(0, I)$ draw, while keeping a positive cosine with $g_t$. On the tiny path the "structure" is that of a random network.

# %%
noise = torch.randn(g_i.shape, generator=torch.Generator(device).manual_seed(7), device=g_i.device)
rows = [("g_t (scaled)", norm_match(g_i)), ("W(g_t)", w_i), ("N(0, I)", noise)]
C = g_i.shape[1]
fig, axes = plt.subplots(3, C, figsize=(2.2 * C + 1.0, 6.6), layout="constrained")
for r, (name, v) in enumerate(rows):
    for c in range(C):
        ax = axes[r, c]
        ax.imshow(v[0, c].float().cpu(), **plotting.signed_scale(vmax=3))   # one scale, zero = white
        ax.set_xticks([]); ax.set_yticks([])
        if c == 0:
            ax.set_ylabel(name)
plotting.colorbar(axes)
fig.suptitle(f"latent step {i}: cosine(W(g), g) = {cos_w:.2f}")
plt.show()

# %% [markdown]
# ## 4. How large is $\rho$? $\rho_t = \kappa^2/N$
#
# $w_t = W(g_t)$ carries the full noise norm $\sqrt N$, so one NTRK step moves $\sigma_t\sqrt{\rho_t N} = \sigma_t\kappa$ along the whitened reward direction whatever $\|g_t\|$ is (`docs/METHOD.md`, section 3; notebook 02). With $\kappa \approx 0.5$ that is $\rho \approx 1.5\cdot10^{-5}$ for SD's $4\times64\times64$ latent: $\sqrt{1-\rho} \approx 1$, and NTRK is close to "the base noise plus a fixed-length whitened gradient step".

# %%
KAPPA = 0.5
for shape in [prob.latent_shape, (4, 64, 64)]:
    N = math.prod(shape)
    rho = nt.rho_from_kappa(KAPPA, N)(0, s)
    print(f"latent {shape}: N = {N}, rho = kappa^2/N = {rho:.3g}, step along W(g) = sigma_t * {KAPPA}")
rho_sd = nt.rho_from_kappa(KAPPA, 4 * 64 * 64)(0, s)

# %% [markdown]
# **DPS on SD, exactly.** `sd.run_method(..., "dps", dps_scale=c)` takes $x_{t-1} = \mu_t + \lambda_t g_t + \sigma_t\varepsilon$ with $\lambda_t = c\,\sigma_t^2$, where $g_t$ is a gradient in **latent space with respect to $x_t$**: the reward gradient at the Tweedie estimate, $\nabla_{\hat x_0} r$, is rescaled per sample to length $\sqrt N$ (its raw scale through VAE + CLIP means nothing), then back-propagated through Tweedie and the UNet unchanged, $g_t = (\partial\hat x_0/\partial x_t)^\top \sqrt N\,\nabla_{\hat x_0} r / \|\nabla_{\hat x_0} r\|$. $\lambda_t$ multiplies that $g_t$, whose own length is not normalised.

# %% [markdown]
# ## 5. The evaluation protocol on Stable Diffusion
#
# Comparing samplers on SD uses the same protocol as every other world of this collection (`ntrk_minimal.bench`, notebooks 02 and 05): `sd_world.world(problem, clip_text, n, n_ref)` says what is measured, `sd_world.methods` / `sd_world.levels` / `sd_world.comparisons` what is compared, and `protocol.run_study` does the rest.
#
# - **target**: the LAION aesthetic score of the user's images (as guided); **held out**: CLIP image–prompt cosine from the *same* CLIP ViT-L/14 (its text tower; no sampler is guided by it); **fidelity**: KID of CLIP image features to `n_ref` base-sampler images drawn on reference seeds no method uses; **diversity**: same-prompt CLIP distance.
# - **methods**: base, DPS (knob `scale`), NTRK and NTRK with $W$ off (knob $\kappa$), best-of-N (knob N), and at $K\times T$ NFEs best-of-K, SVDD ($K$ candidates) and SMC ($K$ particles).
# - **seeds**: knobs and levels fixed on tuning seeds 1000.., verdicts from paired 95% CIs over the evaluation seeds 0..4; **margins** stated before any guided method runs.
# - **levels**: NTRK against the others at the KID of best-of-K (matched fidelity), at its aesthetic score (matched reward), at matched effective step (W on vs off) and at NTRK's wall time (best-of-N, timed between device synchronisations); an NFE-matched table; per-step cost and peak GPU memory.
#
# On a GPU with the weights this is one command, `python scripts/gpu_sd_bench.py` (SD 1.5 + CLIP ViT-L/14, 4 prompts × 4 images per run, $T = 25$, $K = 20$, 3 + 5 seeds; `--help` for memory options). It writes `results/sd_real.{json,md,png}`. **No GPU was lent to the project, so that table does not exist yet.** What this notebook can show is the same code run on the tiny path — `python scripts/gpu_sd_bench.py --tiny --threads 1` (a few CPU minutes), committed as `results/sd_tiny.{json,md,png}` — read below, not rerun here. **Its numbers are plumbing, not evidence**: a random pipeline and a random scorer, a few images per run, few steps. They show that every verdict is computed from per-seed values at a stated level; they say nothing about NTRK.

# %%
study = P.load_json(RESULTS / "sd_tiny.json")
cfg = study["world"]["config"]
print(f"{study['sd']['model']} path | latent {tuple(study['sd']['latent'])} | {study['n']} images per run "
      f"({len(cfg['prompts'])} prompts) | T = {cfg['num_steps']} | K = {study['sd']['budget']} "
      f"| reference {cfg['n_ref']} base images | tuning seeds {study['seeds']['tuning']} | evaluation seeds "
      f"{study['seeds']['eval']} | run time {study['wall_time_s'] / 60:.0f} min on {study['sd']['device']}")
display(Markdown(sd_world.PLUMBING + "\n\n**Margins, stated before any guided method ran:**\n\n" + "\n".join(
    f"- {k}: ±{v:.3g} — {study['world']['margin_notes'][k]}" for k, v in study["world"]["margins"].items())))

# %%
display(Markdown("**Verdicts** (A − B paired over the evaluation seeds):\n\n" + P.verdict_table(study)))

# %%
budget = study["sd"]["budget"]          # K: best-of-K, SVDD and SMC spend K x T NFEs
fig = P.fronts_figure(study, sd_world.PANELS, colors=sd_world.colors(budget), ncols=2,
                      linestyles={"ntrk (W off)": (0, (4, 2))})
plt.show()

# %%
labels = {c["verdict"]["label"] for c in study["comparisons"]}
counts = {lab: sum(c["verdict"]["label"] == lab for c in study["comparisons"]) for lab in P.LABELS}
means = [c[side]["values"] for c in study["comparisons"] if c["y_key"] == "aesthetic" for side in ("a", "b")]
means = [sum(v for v in vals if v is not None) / max(1, sum(v is not None for v in vals)) for vals in means]
kid_level, kid_margin = study["levels"]["KID of BoN"]["value"], study["world"]["margins"]["kid"]
M_study, D_study = tile_layout(tuple(study["sd"]["latent"])).shape
N_study = M_study * D_study
picks = [st for per_level in study["stability"].values() for st in per_level.values()]
n_unstable = sum(not st["stable"] for st in picks)
cos_study = sum(sum(p["cos_wg"]) / len(p["cos_wg"]) for p in study["fronts"]["eval"]["ntrk"]["values"]) / len(
    study["fronts"]["eval"]["ntrk"]["values"])
display(Markdown(sd_world.matched_tables(study).split("## Wall-time-matched table")[0]
                 + f"\n\nVerdict counts on the {study['sd']['model']} path: "
                 + ", ".join(f"{k} {v}" for k, v in counts.items())
                 + f". The methods' mean aesthetic scores in these verdicts span {min(means):.5f} to {max(means):.5f} "
                 f"(a range of {max(means) - min(means):.1e}) against an aesthetic margin of "
                 f"±{study['world']['margins']['aesthetic']:.1e}. The fidelity level, KID = {kid_level:.3g}, lies "
                 + (f"inside the KID margin ±{kid_margin:.3g} (the noise of one run of {study['n']} images): "
                    f"best-of-{budget} hardly moves away from the base model here, so the level sits in KID's noise; "
                    if kid_level < kid_margin else f"outside the KID margin ±{kid_margin:.3g}; ")
                 + f"{n_unstable} of {len(picks)} knob picks are unstable across tuning seeds, and a seed "
                 f"that misses a level makes its verdict undecided. With N = {N_study} latent entries in tiles of "
                 f"{D_study}, $W$ has {M_study} tiles per domain"
                 + (" — too few to see spatial structure (notebook 03)" if M_study < 16 else "")
                 + f"; NTRK's whitened gradient keeps cosine {cos_study:.4f} with the raw one (mean over its "
                 f"evaluation runs)" + (", so W on and W off coincide on this path." if cos_study > 0.99 else ".")))

# %% [markdown]
# Read the figure the way notebook 05 taught: each line is one method's **front** over its knob (mean over evaluation seeds, 95% CI bars on both axes; the evaluation seeds are run only at the knobs around each level), squares are knob-less methods, dotted lines the levels, stars the matched values the verdicts compare. The margins here are *noise-based* (twice the seed-to-seed SD of one base run, measured on the reference before any guided method ran), so on the tiny path "equivalent" means "within what one run of a few images resolves", and a win or a loss on a random scorer says nothing about pictures. The real path states semantic margins for the aesthetic and CLIP scores in advance (`scripts/gpu_sd_bench.py`, `REAL_MARGINS`).

# %% [markdown]
# ## 6. The $\eta_t$ diagnostic on latents, and the decoded samples
# Every kernel writes $x_{t-1} = \mu_t + \sigma_t\eta_t$. A sampler stays where the UNet was trained as long as $\eta_t$ looks like $\mathcal N(0, I)$: $E\|\eta_t\|^2/N \approx 1$. DPS adds $(\lambda_t/\sigma_t)\,g_t$, a deterministic term; NTRK mixes a whitened direction into the noise and keeps the energy at 1 by construction. The same runs, decoded, are below (on the tiny path: the outputs of a random decoder — noise, by design).

# %%
runs = {"base": ("base", {}), "DPS": ("dps", {}), "NTRK kappa=0.5": ("ntrk", dict(kappa=KAPPA)),
        "NTRK kappa=8": ("ntrk", dict(kappa=8.0))}
energy, finals = {}, {}
for name, (m, kw) in runs.items():
    res = sd.run_method(prob, m, torch.Generator(device).manual_seed(SEED), record=True, **kw)
    energy[name] = metrics.eta_energy(res.eta.cpu())
    finals[name] = res.x0
fig, ax = plt.subplots(figsize=(9, 3.8), layout="constrained")
styles = {"base": dict(color="k", ls="--", lw=2.5), "DPS": dict(color="tab:orange"),
          "NTRK kappa=0.5": dict(color="tab:red"), "NTRK kappa=8": dict(color="tab:purple", ls=":", lw=2)}
for name, e in energy.items():
    ax.plot(e.numpy(), label=name, **styles[name])
ax.axhline(1, color="grey", lw=0.5)
ax.set_xlabel("sampling step i"); ax.set_ylabel(r"$E\|\eta_t\|^2/N$"); ax.set_yscale("log"); ax.legend()
plt.show()
for name, e in energy.items():
    print(f"{name:15s} E||eta||^2/N: mean {float(e.mean()):.2f}, max {float(e.max()):.2f}")

# %%
fig, axes = plt.subplots(1, 4, figsize=(12, 3.6), layout="constrained")
for ax, (name, zz) in zip(axes, finals.items()):
    ax.imshow(prob.images(zz[:1])[0].permute(1, 2, 0))      # the user's image: decoded, clamped
    ax.set_title(f"{name}\nr = {float(prob.score(zz[:1])[0]):.4f}"); ax.axis("off")
plt.show()

# %% [markdown]
# ## 7. Cost per step, measured live
# A guided step (DPS, NTRK) is a forward *and a backward* pass through UNet, VAE decoder and CLIP; the base step is one forward. NFE-matched is not time-matched. `sd.step_timings` times one trajectory per method after a warm-up (between `torch.cuda.synchronize` calls on a GPU, where it also reports peak memory, `torch.cuda.max_memory_allocated`); here a 5-step problem keeps the cell short. `sd.step_cost_split` splits one guided step into its parts: the UNet forward (all a base step costs), the reward forward (VAE decode, clamp, CLIP, head), the backward pass to $x_t$, and $W$.

# %%
# NBVAL_IGNORE_OUTPUT
short = sd.make_problem(pipe, scorer, PROMPTS, guidance_scale=7.5, num_steps=5, eta=1.0)
tim = sd.step_timings(short, ("base", "dps", "ntrk"), kappa=KAPPA)
split = sd.step_cost_split(short, repeats=2)
display(Markdown(f"Measured now on {device} ({torch.get_num_threads()} thread(s)), {len(PROMPTS)} prompt(s), "
                 f"latent {prob.latent_shape}:\n\n" + sd_world.timing_table(tim) + "\n\n" + sd_world.cost_split_table(split)
                 + f"\n\nThe tiny study's own run ({study['sd']['device']}, latent {tuple(study['sd']['latent'])}, "
                 f"{len(study['sd']['prompts'])} prompts), from `results/sd_tiny.json`:\n\n"
                 + sd_world.cost_split_table(study["sd"]["cost_split"])))

# %%
# checks on the numbers that matter
assert eq_rel < 1e-5, "our loop must reproduce StableDiffusionPipeline.__call__"
assert torch.equal(ntrk0.x0, base.x0), "rho = 0 must be the base kernel bit for bit"
assert score_gap < 1e-4, "the reported score must be the score of the user's image"
assert torch.allclose(r_ours, s_ours, atol=1e-6), "the reward's value is the user's image's score"
assert torch.equal(dy_st, torch.ones_like(dy_st)) and dy_exact[0] == 0, "straight-through vs exact clamp"
assert torch.isfinite(g_i).all() and g_i.norm() > 0, "reward gradient through VAE + clamp + CLIP"
assert cos_w > 0.05, "W must keep a positive cosine with the gradient"
assert 1e-5 < rho_sd < 2e-5, "rho for a 4x64x64 latent is ~kappa^2/N"
assert study["protocol"] == "ntrk_minimal.protocol v1" and len(study["seeds"]["eval"]) >= 5
assert labels <= set(P.LABELS) and not set(study["seeds"]["tuning"]) & set(study["seeds"]["eval"])
assert abs(float(energy["NTRK kappa=0.5"].mean()) - 1) < 0.1, "NTRK keeps E||eta||^2/N near 1"
assert float(energy["DPS"].max()) > float(energy["NTRK kappa=0.5"].max()), "DPS's eta_t leaves the noise shell"
assert tim["dps"]["step_s"] > tim["base"]["step_s"], "a guided step costs more than a plain one"
assert split["backward"] > 0 and split["whiten"] < split["total"] / 2, "W is a small part of a guided step"
print("all checks passed")

# %% [markdown]
# ## Summary
# - Stable Diffusion needs no second sampler: `GuidedUNet` (UNet + CFG) is the model protocol, `Schedule.from_scheduler(pipe.scheduler, 25, eta=1)` the schedule, and with $\rho = 0$ our loop reproduces `StableDiffusionPipeline.__call__` (DDIM, $\eta = 1$, same generator) to float precision.
# - In diffusers' DDIM step, `pred_original_sample` is $\hat x_0$, `std_dev_t` is $\sigma_t$, the deterministic part of `prev_sample` is $\mu_t$, and `variance_noise` is $\eta_t$ — the one thing NTRK changes.
# - The reward and the reported score see the user's image (decoded, clamped to $[0, 1]$); the sampler climbs it through the straight-through clamp, exact wherever no pixel saturates.
# - For a $4\times64\times64$ latent, $\rho = \kappa^2/N \approx 1.5\cdot10^{-5}$: NTRK is the base noise plus a fixed-length whitened gradient step.
# - A guided step is the UNet forward plus the reward forward (VAE decode, clamp, CLIP, head) plus a backward pass through all of them; $W$ is a small share of it (`sd.step_cost_split`).
# - The evaluation protocol runs on SD end to end (target, held-out CLIP, KID to base images, fronts, matched levels, verdicts); on the tiny path its table is plumbing. The table that decides the paper's claim on SD comes from `python scripts/gpu_sd_bench.py` with real weights on a GPU.

# %%
# NBVAL_IGNORE_OUTPUT
print(f"measured in this run: a guided step costs {tim['dps']['vs_base']:.1f}x (DPS) and {tim['ntrk']['vs_base']:.1f}x "
      f"(NTRK) a base step; {saturated:.2%} of the decoded pixels are clamped; notebook time "
      f"{time.perf_counter() - T0:.0f} s")

# %% [markdown]
# ## Exercises
# 1. Run `python scripts/gpu_sd_bench.py --tiny --quick` (2 + 3 seeds, $T = 2$, one grid extension per level) and compare its verdict table with the one above. Which verdicts change, and why can't either run decide the paper's claim?
# 2. Replace `clamp01_st` by the exact clamp in a copy of `sd.LatentAesthetic` and run DPS for a few steps: what happens to the gradient on pixels that start saturated?
# 3. Use `decay="linear"` in `sd.run_method(..., kappa=2, decay="linear")`. How does $E\|\eta_t\|^2/N$ change per step?
# 4. Replace `whiten` by `norm_match` (method `"ntrk_raw"`) and compare the gradient image and the lag-1 correlation of the perturbation.
# 5. With real weights on a GPU: run `python scripts/gpu_sd_bench.py --timing-only --dtype fp16 --gradient-checkpointing` and compare peak memory with and without checkpointing.
