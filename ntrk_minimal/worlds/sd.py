"""Stable Diffusion as a world of the evaluation protocol (``scripts/gpu_sd_bench.py`` runs it; notebook 06 reads it).

Model = the CFG UNet of an ``adapters.sd.SDProblem``; target = the LAION aesthetic score of the user's
images; held out = the CLIP image-prompt cosine from the same CLIP (``adapters.sd.ClipText``);
fidelity = KID of CLIP image features to the base sampler's images (``ImageJudge``); diversity =
same-prompt CLIP distance; margins stated before any guided method runs. The methods are the table's
(``bench.methods``) with this world's settings; every method runs in micro-batches of
``config["micro_batch"]`` rows (memory), one after another with the same generator.
"""
from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import torch

from .. import bench as P
from ..bench import methods as M
from ..adapters.sd import ClipText, SDProblem
from ..metrics import KID, kid as kid_fn

__all__ = ["REF_SEED", "TUNING_SEEDS", "ImageJudge", "start", "DIAGNOSTICS", "world", "methods", "levels",
           "comparisons", "POINT_KEYS", "PANELS", "PLUMBING", "colors", "timing_table", "cost_split_table",
           "matched_tables", "write_results"]

REF_SEED = 50_000          # reference base images: seeds REF_SEED + j, j = 0 .. n_ref / n - 1
TUNING_SEEDS = (1000, 1001, 1002)


class ImageJudge:
    """What the protocol measures on final latents ``z`` (n = copies x B rows, grouped [copy][prompt]).

    Every number is computed on the user's images (``SDProblem.user_images``: the pipeline's own
    decode and clamp), embedded once by the scorer's CLIP image tower (``e``, unit length):

        aesthetic  = mean_i MLP(e_i)                                 (the target reward, as guided)
        clip       = mean_i <e_i, t_{prompt(i)}>                     (held out: CLIP image-prompt cosine)
        diversity  = mean_prompt mean_{i != j} (1 - <e_i, e_j>)      (same-prompt pairs; NaN if 1 copy)
        kid        = KID(sqrt(d) e, sqrt(d) e_ref)                   (fidelity: to the base sampler's images)

    KID uses ``metrics.KID`` (unbiased, cubic kernel ``(x.y / d + 1)^3``; features scaled to norm
    ``sqrt(d)`` so that ``x.y / d`` is the cosine) against ``e_ref``, the embeddings of ``n_ref`` base
    images drawn on reference seeds that no method uses.
    """

    def __init__(self, problem: SDProblem, text: ClipText, chunk: int | None = None):
        self.problem, self.chunk = problem, chunk
        self.t = text.embed(problem.prompts).to(torch.float64).cpu()          # (B, d)
        d = int(problem.reward.scorer.vision.config.projection_dim)
        if self.t.shape[1] != d:
            raise ValueError(f"the CLIP text tower projects to {self.t.shape[1]} dims but the image tower to {d}: "
                             f"they must be the same CLIP")
        self.kid = None

    @torch.no_grad()
    def embed(self, z: torch.Tensor) -> torch.Tensor:
        """(n, C, h, w) latents -> (n, d) unit CLIP image embeddings of the user's images, float64 CPU."""
        sc = self.problem.reward.scorer
        chunk = self.chunk or z.shape[0]
        out = []
        for p in z.split(chunk):
            img = self.problem.user_images(p).to(self.problem.reward.dtype)
            out.append(sc.embed(img).to(torch.float64).cpu())
        return torch.cat(out)

    def aesthetic_of(self, e: torch.Tensor) -> torch.Tensor:
        mlp = self.problem.reward.scorer.mlp
        with torch.no_grad():
            return mlp(e.to(next(mlp.parameters()).device, next(mlp.parameters()).dtype)).to(torch.float64).cpu()

    def scores(self, e: torch.Tensor) -> dict:
        B = self.problem.num_prompts
        n, d = e.shape
        if n % B:
            raise ValueError(f"the number of images ({n}) must be a multiple of the number of prompts ({B})")
        copies = n // B
        out = {"aesthetic": float(self.aesthetic_of(e).mean()),
               "clip": float((e * self.t.repeat(copies, 1)).sum(1).mean())}
        if copies >= 2:
            eg = e.reshape(copies, B, d).transpose(0, 1)                       # (B, copies, d)
            cos = eg @ eg.transpose(1, 2)
            off = ~torch.eye(copies, dtype=torch.bool)
            out["diversity"] = float((1 - cos[:, off]).mean())
        else:
            out["diversity"] = float("nan")
        if self.kid is not None:
            out["kid"] = self.kid(e * math.sqrt(d))
        return out


def start(problem: SDProblem, seed: int, n: int):
    """``(x_T, generator)`` exactly as ``protocol.World.start`` draws them (and as the pipeline's
    ``prepare_latents``: ``init_noise_sigma`` is 1 for DDIM)."""
    g = torch.Generator(device=problem.device).manual_seed(int(seed))
    return torch.randn((int(n),) + tuple(problem.latent_shape), generator=g, dtype=problem.latent_dtype,
                       device=problem.device), g


#: what every run of this world records (bench.methods): E||eta_t||^2/N, W's cosine and effective step (NTRK),
#: and the peak GPU memory of the run (CUDA only); every method runs in micro-batches of config["micro_batch"]
DIAGNOSTICS = ("eta_energy", "cos_wg", "eff_step", "peak_gib")
_m_base = partial(M.base, diagnostics=DIAGNOSTICS)


def world(problem: SDProblem, text: ClipText, n: int, n_ref: int, micro_batch: int | None = None,
          margins: dict | None = None, eval_chunk: int | None = None, config: dict | None = None,
          progress: bool = False):
    """Stable Diffusion as a protocol world: model = the CFG UNet (``problem.model``), target = the
    LAION aesthetic score, held out = CLIP image-prompt cosine, fidelity = KID to base images.

    ``evaluate(x0, seed)`` returns ``ImageJudge.scores``: ``aesthetic``, ``clip``, ``kid`` (against
    ``n_ref`` base images drawn on seeds ``REF_SEED + j``, ``n`` per seed), ``diversity``.
    ``n`` samples per run: ``n / B`` copies of each of the B prompts, ``x_T`` from ``World.start``.

    Margins, stated before any guided method runs: for each of ``kid``, ``aesthetic``, ``clip`` not
    given in ``margins``, twice the SD, over the ``n_ref / n`` reference groups, of the metric of one
    group of n base images (for KID: each group against the other groups) -- the smallest difference
    one run of n images resolves. The script gives semantic margins for the real scorer.
    ``micro_batch``: rows per sampler call (memory; a multiple of B). ``config["smc_beta"]``: SD of
    the per-image aesthetic score over the reference (SMC's temperature, set here).
    """
    B = problem.num_prompts
    if not isinstance(n, int) or n < 2 or n % B:
        raise ValueError(f"n must be an int >= 2 and a multiple of the number of prompts ({B}), got {n!r}")
    if not isinstance(n_ref, int) or n_ref % n or n_ref // n < 3:
        raise ValueError(f"n_ref must be a multiple of n = {n} with at least 3 groups, got {n_ref!r}")
    if micro_batch is not None and (micro_batch < 1 or micro_batch % B):
        raise ValueError(f"micro_batch must be a positive multiple of the number of prompts ({B}), got {micro_batch!r}")
    if float(problem.pipe.scheduler.init_noise_sigma) != 1.0:
        raise ValueError("the SD world draws x_T ~ N(0, I) (World.start): the scheduler's init_noise_sigma must be 1")
    judge = ImageJudge(problem, text, eval_chunk)
    cfg = dict(config or {}, micro_batch=micro_batch, n_ref=n_ref, ref_seeds=[REF_SEED, REF_SEED + n_ref // n - 1])

    ctx = SimpleNamespace(model=problem.model, context=problem, device=str(problem.device), config=cfg)

    groups, scores = [], []
    it = range(n_ref // n)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc="reference base images", leave=False)
    for j in it:
        x_T, g = start(problem, REF_SEED + j, n)
        res, _ = _m_base(ctx, x_T, g)      # the base method itself (bench.methods.base)
        e = judge.embed(res.x0)
        groups.append(e)
        scores.append(judge.scores(e))
    e_ref = torch.cat(groups)
    d = e_ref.shape[1]
    judge.kid = KID(e_ref * math.sqrt(d))
    loo = [kid_fn(groups[j] * math.sqrt(d), torch.cat(groups[:j] + groups[j + 1:]) * math.sqrt(d))
           for j in range(len(groups))]
    floor = {"kid": loo, **{k: [s[k] for s in scores] for k in ("aesthetic", "clip", "diversity")}}
    sd_of = lambda v: float(torch.tensor(v, dtype=torch.float64).std())
    rules = {k: 2 * sd_of(floor[k]) for k in ("kid", "aesthetic", "clip")}
    margins = dict(margins or {})
    notes = {}
    for k in ("kid", "aesthetic", "clip"):
        if k in margins:
            notes[k] = str(margins[k][1])
            margins[k] = float(margins[k][0])
        else:
            margins[k] = max(rules[k], 1e-12)
            notes[k] = (f"2 x the SD ({rules[k] / 2:.3g}) of one base run's value over {len(groups)} independent "
                        f"groups of n = {n} reference images (computed before any guided method ran)")
    per_image = judge.aesthetic_of(e_ref)
    cfg.update(smc_beta=float(per_image.std()), floor=floor, margin_rule=rules,
               prompts=list(problem.prompts), num_steps=problem.schedule.num_steps, eta=problem.schedule.eta,
               guidance_scale=problem.guidance_scale, latent_shape=list(problem.latent_shape), N=problem.dim,
               unet_dtype=str(problem.pipe.unet.dtype), reward_dtype=str(problem.reward.dtype),
               latent_dtype=str(problem.latent_dtype), n=n)
    ms = {"aesthetic": P.Metric("LAION aesthetic (target)", True, 5),
          "clip": P.Metric("CLIP image-prompt cosine (held out)", True, 5),
          "kid": P.Metric("KID to base images (CLIP features)", False, 5),
          "diversity": P.Metric("same-prompt CLIP distance (diversity)", True, 4),
          "eta_energy": P.Metric("E‖eta_t‖²/N", None),   # no "|": it splits markdown cells
          "cos_wg": P.Metric("cos(W(g), g)", None), "eff_step": P.Metric("effective step", None),
          "peak_gib": P.Metric("peak GPU GiB", None, 2),
          "nfe": P.Metric("NFE (measured)", None, 1), "backward": P.Metric("backward rows", None, 1),
          "wall_s": P.Metric("wall s per sample", None, 4), "model_s": P.Metric("model s per sample", None, 4)}
    cuda = problem.device.type == "cuda"
    return P.World(
        name="Stable Diffusion, LAION aesthetic", sample_shape=tuple(problem.latent_shape), model=problem.model,
        evaluate=lambda x0, seed: judge.scores(judge.embed(x0)), metrics=ms, fidelity="kid", target="aesthetic",
        heldout="clip", margins=margins, margin_notes=notes, context=problem, dtype=problem.latent_dtype,
        device=str(problem.device), config=cfg,
        sync=(lambda: torch.cuda.synchronize(problem.device)) if cuda else None)


def methods(w, budget: int = 20, quick: bool = False, num: int | None = None) -> list:
    """Base, DPS, NTRK (W on / off), best-of-N (N the knob) at 25 N NFEs, and at ``budget`` x 25 NFEs:
    best-of-``budget``, SVDD (``budget`` candidates) and SMC (``budget`` particles, temperature
    ``world.config["smc_beta"]``). Knobs: DPS ``lambda_t = scale sigma_t^2`` (scale -> 0: base); NTRK
    ``rho_t = kappa^2 / N`` (kappa -> 0: base, kappa = sqrt(N): rho_t = 1); best-of-N (N = 1: base).
    ``num`` knob points per grid, ratio 2 (default 8; ``quick``: 4); best-of-N: 1 .. 16 (``num < 8``:
    powers of two, at most ``num``)."""
    K, T = int(budget), w.context.schedule.num_steps
    if K < 2:
        raise ValueError(f"budget must be an int >= 2, got {budget!r}")
    num = int(num or (4 if quick else 8))
    if num < 3:
        raise ValueError(f"num (knob grid points) must be an int >= 3, got {num!r}")
    root_n = math.sqrt(w.context.dim)
    k_hi = min(16.0, root_n)
    kappas = P.geometric_grid(k_hi / 2 ** (num - 1), k_hi, num)
    scales = P.geometric_grid(2.0 ** -(num // 2), 2.0 ** (num - 1 - num // 2), num)
    bon = [1, 2, 3, 4, 6, 8, 11, 16] if num >= 8 else [1, 2, 4, 8, 16][:num]
    D = DIAGNOSTICS
    ntrk = partial(M.ntrk, decay="constant", diagnostics=D)                       # rho_t = kappa^2 / N
    return [
        P.Method("base", _m_base, budget=T),
        P.Method("dps", partial(M.dps, per_beta=False, normalise=True, diagnostics=D), "scale", scales, budget=T,
                 limit=(0.0, None), limit_notes=("(the base sampler)", ""), min_points=num),
        P.Method("ntrk", ntrk, "kappa", kappas, budget=T, limit=(0.0, root_n),
                 limit_notes=("(the base sampler)", "(rho_t = 1)"), min_points=num),
        P.Method("ntrk (W off)", partial(ntrk, whiten="norm_match"), "kappa", kappas, budget=T, limit=(0.0, root_n),
                 limit_notes=("(the base sampler)", "(rho_t = 1)"), min_points=num),
        P.Method("best-of-N", partial(M.best_of_n, diagnostics=D), "num_samples", bon, budget=f"{T} N",
                 limit=(1, math.inf), limit_notes=("(the base sampler)", "(argmax of r over base samples)"),
                 integer=True, min_points=num),
        P.Method(f"best-of-{K}", partial(M.best_of_n, diagnostics=D), budget=K * T, fixed={"num_samples": K}),
        P.Method(f"svdd-{K}", partial(M.svdd, mode="argmax", per_beta=False, diagnostics=D), budget=1 + K * (T - 1),
                 fixed={"num_candidates": K}),
        P.Method(f"smc-{K}", partial(M.smc, diagnostics=D), budget=K * T,
                 fixed={"num_particles": K, "beta": w.config["smc_beta"]}),
    ]


def _ntrk_value(st, key: str) -> float:
    """NTRK's mean ``key`` on the tuning seeds at the level 'KID of BoN', else at 'aesthetic of BoN',
    else at the middle of its grid (a level never resolves to NaN: run_study would stop there)."""
    for lv in ("KID of BoN", "aesthetic of BoN"):
        v = st.value_at("ntrk", lv, key)
        if math.isfinite(v):
            return v
    fr = st.fronts["ntrk"]
    return float(fr.mean(key)[len(fr.knobs) // 2])


def levels(budget: int = 20) -> list:
    """Operating points, stated before the run: the fidelity (KID) and the reward of best-of-``budget``
    (the paper's 500-NFE baseline) on the tuning seeds; NTRK's effective step there (W on vs off);
    NTRK's wall time there (for best-of-N)."""
    bok = f"best-of-{budget}"
    return [
        P.Level("KID of BoN", "kid", lambda st: st.value_at(bok, None, "kid"),
                f"the KID to base images of {bok} on the tuning seeds: every method moved as far from the base "
                f"model as {budget}x the compute of best-of-N moves it (reward at matched fidelity)"),
        P.Level("aesthetic of BoN", "aesthetic", lambda st: st.value_at(bok, None, "aesthetic"),
                f"the aesthetic score of {bok} on the tuning seeds (fidelity and held-out reward at matched reward)"),
        P.Level("eff step", "eff_step", lambda st: _ntrk_value(st, "eff_step"),
                "NTRK's effective step kappa <W(g), g/|g|>/sqrt(N) at the KID of BoN (tuning seeds; if NTRK does "
                "not reach it there: at the aesthetic of BoN, else at its middle knob): W on and off compared at "
                "an equal step along g", methods=["ntrk", "ntrk (W off)"]),
        P.Level("wall", "wall_s", lambda st: _ntrk_value(st, "wall_s"),
                "NTRK's wall seconds per sample at the KID of BoN (tuning seeds; fallbacks as for 'eff step'; "
                "machine-dependent: wall time drifts between the tuning and the evaluation runs)",
                methods=["best-of-N"]),
    ]


def comparisons(budget: int = 20, num_steps: int = 25) -> list:
    """NTRK against DPS, best-of-N, the best knobbed baseline and W off, on the target, the held-out
    reward and KID; at matched fidelity, matched reward, matched effective step and matched wall time."""
    C, bok, knobbed, T = P.Comparison, f"best-of-{budget}", ("dps", "best-of-N"), int(num_steps)
    return [
        C(f"aesthetic at {T} NFEs: NTRK (at the KID of BoN) vs base", "KID of BoN", "aesthetic", "ntrk", "base"),
        C("aesthetic at the KID of BoN: NTRK vs DPS", "KID of BoN", "aesthetic", "ntrk", "dps"),
        C("aesthetic at the KID of BoN: NTRK vs best knobbed baseline", "KID of BoN", "aesthetic", "ntrk", knobbed),
        C(f"aesthetic at the KID of BoN: NTRK ({T} NFEs) vs {bok} ({budget * T} NFEs)", "KID of BoN", "aesthetic",
          "ntrk", bok),
        C("aesthetic at the KID of BoN: W on vs off", "KID of BoN", "aesthetic", "ntrk", "ntrk (W off)"),
        C("held-out CLIP at the KID of BoN: NTRK vs DPS", "KID of BoN", "clip", "ntrk", "dps"),
        C(f"held-out CLIP at the KID of BoN: NTRK vs {bok}", "KID of BoN", "clip", "ntrk", bok),
        C("KID at the aesthetic of BoN: NTRK vs DPS", "aesthetic of BoN", "kid", "ntrk", "dps"),
        C(f"KID at the aesthetic of BoN: NTRK vs {bok}", "aesthetic of BoN", "kid", "ntrk", bok),
        C("held-out CLIP at the aesthetic of BoN: NTRK vs DPS", "aesthetic of BoN", "clip", "ntrk", "dps"),
        C("aesthetic at matched effective step: W on vs off", "eff step", "aesthetic", "ntrk", "ntrk (W off)"),
        C("KID at matched effective step: W on vs off", "eff step", "kid", "ntrk", "ntrk (W off)"),
        C("aesthetic at NTRK's wall time: NTRK vs best-of-N", "wall", "aesthetic", "ntrk", "best-of-N",
          a_level="KID of BoN"),
        C("held-out CLIP at NTRK's wall time: NTRK vs best-of-N", "wall", "clip", "ntrk", "best-of-N",
          a_level="KID of BoN"),
    ]


# ---- rendering a study (the script writes it, notebook 06 reads it) --------------------------------
POINT_KEYS = ["aesthetic", "clip", "kid", "diversity", "eta_energy", "eff_step", "nfe", "backward", "wall_s"]
PANELS = [{"x": "kid", "y": "aesthetic", "title": "aesthetic vs KID to base images"},
          {"x": "kid", "y": "clip", "title": "held-out CLIP vs KID"},
          {"x": "aesthetic", "y": "clip", "title": "held-out CLIP vs aesthetic"},
          {"x": "wall_s", "y": "aesthetic", "title": "aesthetic vs wall time per sample"}]
PLUMBING = ("> **Plumbing only.** A randomly initialised pipeline and scorer (`data/tiny_sd`): these numbers show "
            "that the protocol runs end to end on Stable Diffusion, not how NTRK performs. The table that matters "
            "comes from `python scripts/gpu_sd_bench.py` with real weights on a GPU.")


def colors(budget: int) -> dict:
    """One colour per method of ``methods(w, budget)`` (figures of the script and notebook 06)."""
    return {"base": "k", "dps": "tab:orange", "ntrk": "tab:red", "ntrk (W off)": "tab:pink",
            "best-of-N": "tab:blue", f"best-of-{budget}": "tab:cyan", f"svdd-{budget}": "tab:green",
            f"smc-{budget}": "tab:purple"}


def cost_split_table(split: dict) -> str:
    """Markdown: ``step_cost_split`` (ms and share of a guided NTRK step per part)."""
    names = {"unet": "UNet forward with CFG (eps_hat)", "reward": "reward forward (VAE decode, clamp, CLIP, head)",
             "backward": "backward to x_t (head, CLIP, VAE, Tweedie, UNet)", "whiten": "W(g_t)"}
    rows = [[names[k], f"{1e3 * split[k]:.1f}", f"{split[k] / split['total']:.0%}"] for k in names]
    rows.append(["guided NTRK step (sum)", f"{1e3 * split['total']:.1f}", "100%"])
    return P.markdown_table(["part of one guided step", "ms", "share"], rows)


def timing_table(tim: dict) -> str:
    """Markdown: ``step_timings`` per method (ms per step, ratio to base, peak GPU memory)."""
    rows = [[m, f"{1e3 * r['step_s']:.1f}", f"{r.get('vs_base', float('nan')):.2f}",
             "n/a (CPU)" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"] for m, r in tim.items()]
    return P.markdown_table(["method", "ms / step", "x base", "peak GPU GiB"], rows)


def matched_tables(data: dict) -> str:
    """Markdown from a study's json (``data["sd"]`` holds the run's settings and ``step_timings``): the
    NFE-matched table (every method at the level 'KID of BoN'), the wall-time-matched table
    (best-of-N at NTRK's wall time) and the per-step cost."""
    fronts = data["fronts"]["eval"]
    names = sorted(fronts, key=lambda nm: P.Front.from_dict(fronts[nm]).mean("nfe")[0])
    keys = [k for k in POINT_KEYS + ["peak_gib"] if k in data["world"]["metrics"]]
    s = data["sd"]
    T = s["steps"]
    return "\n".join([
        "## NFE-matched table", "",
        f"Every method at the level 'KID of BoN' (knobbed methods interpolated there on each evaluation seed; "
        f"knob-less methods at their own operating point), sorted by NFE per sample: the {T}-NFE methods are "
        f"NFE-matched with each other, and so are the K x {T}-NFE ones.", "",
        P.points_table(data, "KID of BoN", keys, methods=names), "",
        "## Wall-time-matched table", "",
        f"best-of-N at NTRK's wall time per sample ({data['levels']['wall']['value']:.4g} s on the tuning seeds), "
        f"the B side of the wall-time verdicts above.", "",
        P.points_table(data, "wall", keys, methods=["best-of-N"]), "",
        f"## Per-step cost ({s['device']}; one trajectory of {len(s['prompts'])} prompts after a warm-up, timed "
        f"between device synchronisations)", "", timing_table(s["timings"]), "",
        *(["Where one guided step's time goes (`sd.step_cost_split`, middle step, fastest of 3):", "",
           cost_split_table(s["cost_split"]), ""] if s.get("cost_split") else [])])


def write_results(data: dict, stem, budget: int, title: str) -> str:
    """``protocol.write_results`` (json, md, png) plus the plumbing note (tiny path), the command and
    ``matched_tables``; returns the markdown."""
    text = P.write_results(data, stem, title, PANELS, colors=colors(budget), points_keys=POINT_KEYS, ncols=2,
                           linestyles={"ntrk (W off)": (0, (4, 2))})
    stored = P.load_json(Path(stem).with_suffix(".json"))
    head, _, rest = text.partition("\n\n")
    note = PLUMBING + "\n\n" if stored["sd"]["model"] != "real" else ""
    md = head + "\n\n" + note + f"Command: `{stored['sd']['command']}`\n\n" + rest + "\n" + matched_tables(stored)
    Path(stem).with_suffix(".md").write_text(md)
    return md
