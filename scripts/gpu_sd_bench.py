"""Stable Diffusion + LAION aesthetic through the evaluation protocol: fronts, verdicts, cost, memory.

    python scripts/gpu_sd_bench.py                          # SD 1.5 + CLIP ViT-L/14 on a GPU -> results/sd_real.*
    python scripts/gpu_sd_bench.py --tiny --quick           # CPU smoke run of the same code (~20-60 s)
    python scripts/gpu_sd_bench.py --tiny --threads 1       # the tiny path, 3 + 5 seeds -> results/sd_tiny.*
                                                            # (plumbing; read by notebook 06; a few minutes)
    python scripts/gpu_sd_bench.py --timing-only --fallback full   # per-step cost, random full-size weights

What runs (``ntrk_minimal.worlds.sd.world`` / ``methods`` / ``levels`` / ``comparisons`` on
``ntrk_minimal.bench.run_study``):

* world: model = the CFG UNet; target = the LAION aesthetic score of the decoded image clamped to
  [0, 1] (the image ``pipe(..., output_type="pt")`` returns; guided through the straight-through
  clamp); held out = CLIP image-prompt cosine from the same CLIP ViT-L/14; fidelity = KID of CLIP
  image features to ``--n-ref`` base images (reference seeds 50000+); diversity = same-prompt CLIP
  distance. Margins are stated before any guided method runs (printed, and in the json).
* methods: base, DPS (knob ``scale``), NTRK and NTRK with W off (knob ``kappa``, ``rho = kappa^2/N``),
  best-of-N (knob N), and at ``--budget`` x T NFEs best-of-K, SVDD (K candidates), SMC (K particles).
* knobs tuned on tuning seeds 1000.., verdicts (win / lose / equivalent / undecided) from paired
  95% CIs over the evaluation seeds 0.. (>= 5 by default), at matched KID, matched reward, matched
  effective step (W on vs off) and matched wall time (timed between ``torch.cuda.synchronize``);
  the NFE-matched table, per-step cost and peak GPU memory (``torch.cuda.max_memory_allocated``).

Writes ``--out`` (default ``results/sd_real`` / ``results/sd_tiny`` / ``..._quick``) ``.json``, ``.md``,
``.png``. Weights: ``--model`` / ``$NTRK_SD_MODEL`` (default stable-diffusion-v1-5/stable-diffusion-v1-5),
``--clip`` / ``$NTRK_CLIP_MODEL`` (default openai/clip-vit-large-patch14: image *and* text tower),
``--mlp-weights`` / ``$NTRK_AESTHETIC_WEIGHTS`` (default: the LAION head shipped in data/laion_aesthetic).
Missing weights fail in milliseconds under HF_HUB_OFFLINE=1 with a message that says which and how to
provide them (exit status 2); nothing falls back silently. ``--fallback full`` (with ``--timing-only``)
times a randomly initialised SD 1.5-sized pipeline instead.

Cost (real path, defaults: 4 prompts x 4 images, T = 25, K = 20, 3 + 5 seeds): about 8 methods x
(8-12 knobs) x 8 seeds runs of 16 images; guided runs back-propagate through UNet, VAE decoder and
CLIP, so they are the bulk: by our estimate 5-10 hours on one H100-class GPU (~170 guided runs of
16 x 25 image-steps, plus SVDD-20 / SMC-20; not measured: no GPU was lent to this task), so start with
``--timing-only`` and a smaller ``--n`` / ``--grid``. Use
``--micro-batch`` (rows per sampler call), ``--decode-chunk`` (latents per VAE decode) and
``--gradient-checkpointing`` to fit memory,
``--n``/``--eval-seeds`` to trade cost for CI width.
"""
import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ntrk_minimal import bench as P  # noqa: E402
from ntrk_minimal.adapters import sd  # noqa: E402
from ntrk_minimal.adapters.aesthetic import load_aesthetic, load_tiny_aesthetic
from ntrk_minimal.worlds import sd as sd_world

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PROMPTS = ["a photo of a lighthouse on a cliff at sunset", "a bowl of fruit on a wooden table",
           "a portrait of an old fisherman, studio lighting", "a watercolor painting of a mountain village"]
TINY_PROMPTS = ["a photo of a cat", "a red house"]
# semantic TOST margins for the real scorer (stated here, before any run); KID's margin is the rule in sd_world.world
REAL_MARGINS = {"aesthetic": (0.1, "a tenth of a point on the LAION 1-10 scale (the paper's gains over base are 0.7-1.9)"),
                "clip": (0.005, "half a CLIPScore point (CLIPScore = 100 x cosine); prompt-following gaps between "
                                "SD versions are 1-3 points")}
def defaults(a):
    """Fill the size options left unset: real / tiny / tiny quick."""
    real = not a.tiny
    pick = lambda real_v, tiny_v, quick_v: real_v if real and not a.quick else (quick_v if a.quick else tiny_v)
    a.steps = a.steps or pick(25, 4, 2)
    a.n = a.n or pick(16, 4, 4)
    a.n_ref = a.n_ref or pick(8 * a.n, 4 * a.n, 3 * a.n)
    a.budget = a.budget or pick(20, 3, 3)
    a.eval_seeds = a.eval_seeds or pick(5, 5, 3)
    a.tuning_seeds = a.tuning_seeds or pick(3, 3, 2)
    a.max_extend = a.max_extend if a.max_extend is not None else pick(8, 2, 1)
    a.grid = a.grid or pick(8, 4, 4)
    if a.tiny:
        a.height = a.height or 64                  # 4x8x8 latents: the tiny study stays a few minutes on a CPU
        a.width = a.width or 64
    a.prompt = a.prompt or (PROMPTS if real else TINY_PROMPTS)
    if a.micro_batch is None and real:
        a.micro_batch = len(a.prompt)              # one image per prompt per sampler call (GPU memory)
    if a.decode_chunk is None and real:
        a.decode_chunk = 4                         # VAE decodes at 512 px: best-of-K / SVDD / SMC score K x rows
    stem = "sd_real" if real else "sd_tiny"
    a.out = Path(a.out) if a.out else ROOT / "results" / (stem + ("_quick" if a.quick else ""))
    return a


def load(a, device, dtype, opts):
    """``(pipe, scorer, text, which)``; real weights fail fast (CLIP first: it is the cheapest check)."""
    if a.tiny:
        return (sd.load_tiny_pipeline(device=device, dtype=dtype, **opts), load_tiny_aesthetic(device=device),
                None, "tiny")
    scorer = load_aesthetic(a.clip, a.mlp_weights, device=device)
    text = sd.load_clip_text(a.clip, device=device)
    pipe = sd.load_pipeline(a.model, device=device, dtype=dtype, **opts)
    return pipe, scorer, text, "real"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the tiny offline pipeline (plumbing, not pictures)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 4-point grids, few seeds and steps")
    ap.add_argument("--model", default=None)
    ap.add_argument("--clip", default=None)
    ap.add_argument("--mlp-weights", default=None)
    ap.add_argument("--fallback", choices=["none", "full"], default="none",
                    help="with --timing-only and no real weights: time a random SD 1.5-sized pipeline")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=list(DTYPES), default=None, help="UNet + text encoder + pipeline VAE "
                    "(default fp16 on CUDA, fp32 on CPU)")
    ap.add_argument("--reward-dtype", choices=list(DTYPES), default="fp32", help="the reward's VAE copy and CLIP")
    ap.add_argument("--latent-dtype", choices=list(DTYPES), default="fp32", help="the sampler's state")
    ap.add_argument("--attention-slicing", action="store_true")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--prompt", action="append", default=None)
    ap.add_argument("--steps", type=int, default=None, help="T (default 25; tiny 4; quick 2)")
    ap.add_argument("--height", type=int, default=None, help="image height (default: the model's, 512 for SD 1.5)")
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--n", type=int, default=None, help="images per run, a multiple of the prompts (default 16; tiny 4)")
    ap.add_argument("--n-ref", type=int, default=None, help="reference base images for KID (default 8 n; tiny 4 n)")
    ap.add_argument("--budget", type=int, default=None, help="K: NFE multiplier of best-of-K / SVDD / SMC "
                    "(default 20; tiny 3)")
    ap.add_argument("--grid", type=int, default=None, help="knob grid points per method before extension "
                    "(default 8; tiny 4)")
    ap.add_argument("--eval-seeds", type=int, default=None, help="evaluation seeds 0..S-1 (default 5)")
    ap.add_argument("--tuning-seeds", type=int, default=None, help="tuning seeds 1000.. (default 3)")
    ap.add_argument("--max-extend", type=int, default=None, help="grid points a front may add per level")
    ap.add_argument("--micro-batch", type=int, default=None, help="rows per sampler call (default: one per prompt "
                    "on the real path; all on the tiny one)")
    ap.add_argument("--decode-chunk", type=int, default=None, help="latents per VAE decode in the reward and the "
                    "evaluation (default 4 on the real path; all on the tiny one)")
    ap.add_argument("--timing-only", action="store_true", help="per-step cost and memory only, no protocol")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", default=None, help="output stem (writes .json/.md/.png)")
    argv = sys.argv[1:] if argv is None else list(argv)
    a = defaults(ap.parse_args(argv))
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    dtype = DTYPES[a.dtype or ("fp16" if device.type == "cuda" else "fp32")]
    opts = dict(attention_slicing=a.attention_slicing, gradient_checkpointing=a.gradient_checkpointing)
    t0 = time.perf_counter()
    try:
        pipe, scorer, text, which = load(a, device, dtype, opts)
    except sd.WeightsNotFoundError as e:
        print(f"real weights unavailable ({1e3 * (time.perf_counter() - t0):.0f} ms): {e}\n")
        if not (a.timing_only and a.fallback == "full"):
            print("Nothing was run. Provide the weights as above, or run `python scripts/gpu_sd_bench.py --tiny "
                  "--quick` for the offline plumbing run.")
            return 2
        pipe = sd.configure(sd.build_random_pipeline("full").to(dtype), device, **opts)
        scorer, text, which = sd.build_random_scorer("full").to(device), None, "random full-size"
    if text is None:
        text = sd.tiny_clip_text(scorer, device=device)
    prob = sd.make_problem(pipe, scorer, a.prompt, num_steps=a.steps, height=a.height, width=a.width,
                           reward_dtype=DTYPES[a.reward_dtype], latent_dtype=DTYPES[a.latent_dtype],
                           decode_chunk=a.decode_chunk)
    dev_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                else f"CPU ({torch.get_num_threads()} threads)")
    command = "python scripts/gpu_sd_bench.py " + shlex.join(argv)
    print(f"model: {which}; device: {dev_name}; UNet dtype {dtype}; reward {a.reward_dtype}; state {a.latent_dtype}; "
          f"latent {prob.latent_shape} (N = {prob.dim}); {len(a.prompt)} prompts; T = {a.steps}")

    tim = sd.step_timings(prob, ("base", "dps", "ntrk"), repeats=1 if a.quick else 3)
    split = sd.step_cost_split(prob, repeats=1 if a.quick else 3)
    print("\nper-step cost (one trajectory of the prompts after a warm-up, synchronised):\n" + sd_world.timing_table(tim)
          + "\n\none guided step, part by part:\n" + sd_world.cost_split_table(split))
    record = dict(model=which, device=dev_name, dtype=str(dtype), reward_dtype=a.reward_dtype,
                  latent_dtype=a.latent_dtype, latent=list(prob.latent_shape), steps=a.steps, prompts=a.prompt,
                  timings=tim, cost_split=split, command=command, tiny=a.tiny, quick=a.quick, budget=a.budget,
                  n=a.n, n_ref=a.n_ref, micro_batch=a.micro_batch, decode_chunk=a.decode_chunk)
    if a.timing_only:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.with_suffix(".timing.json").write_text(json.dumps(record, indent=1) + "\n")
        return 0

    t1 = time.perf_counter()
    margins = REAL_MARGINS if which == "real" else None
    w = sd_world.world(prob, text, a.n, a.n_ref, micro_batch=a.micro_batch, margins=margins, progress=not a.quick,
                 eval_chunk=a.decode_chunk,
                 config={"which": which, "command": command})
    print(f"\nreference: {a.n_ref} base images ({time.perf_counter() - t1:.0f} s); margins (stated now, before any "
          f"guided run): " + "; ".join(f"{k} ±{v:.3g} ({w.margin_notes[k]})" for k, v in w.margins.items()))
    data = P.run_study(w, sd_world.methods(w, a.budget, num=a.grid), sd_world.levels(a.budget), sd_world.comparisons(a.budget, a.steps),
                       n=a.n,
                       tuning_seeds=range(sd_world.TUNING_SEEDS[0], sd_world.TUNING_SEEDS[0] + a.tuning_seeds),
                       eval_seeds=range(a.eval_seeds), max_extend=a.max_extend, eval_grid="needed",
                       progress=not a.quick, config={"command": command})
    data["wall_time_s"] = time.perf_counter() - t1
    data["sd"] = record
    title = (("QUICK SMOKE RUN, " if a.quick else "") + ("TINY PATH (plumbing, not pictures): " if which != "real" else "")
             + "Stable Diffusion + LAION aesthetic through the evaluation protocol")
    sd_world.write_results(data, a.out, a.budget, title)
    print("\n" + P.verdict_table(data))
    print(f"\nwrote {a.out}.json/.md/.png ({data['wall_time_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
