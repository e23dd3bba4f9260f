"""Stable Diffusion + LAION aesthetic: per-step timings, peak memory, aesthetic table at 25 vs 500 NFEs.

    python scripts/gpu_sd_bench.py                      # real weights if present, else see --fallback
    python scripts/gpu_sd_bench.py --model /path/to/sd15 --mlp-weights sac+logos+ava1-l14-linearMSE.pth
    python scripts/gpu_sd_bench.py --fallback full      # random full-size SD 1.5 UNet/VAE/CLIP-L (timing only)
    python scripts/gpu_sd_bench.py --fallback tiny --device cpu --seeds 3 --budget 4   # CPU plumbing run

Weights: ``--model`` / ``$NTRK_SD_MODEL`` (default stable-diffusion-v1-5/stable-diffusion-v1-5),
``--clip`` / ``$NTRK_CLIP_MODEL``, ``--mlp-weights`` / ``$NTRK_AESTHETIC_WEIGHTS``. Without them the
script says why (in milliseconds under HF_HUB_OFFLINE=1) and falls back: ``--fallback full`` builds a
randomly initialised SD 1.5-sized pipeline and a CLIP ViT-L/14-sized scorer (timings and memory are
real, scores meaningless), ``--fallback tiny`` the tiny offline pipeline (plumbing only).
Options a GPU user needs: ``--dtype fp16|bf16|fp32`` for UNet + text encoder (the VAE + CLIP reward
gradient stays fp32 unless ``--reward-dtype``), ``--attention-slicing``, ``--gradient-checkpointing``,
several ``--prompt``s, ``--seeds`` (one generator per seed).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ntrk_minimal import sd  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PROMPTS = ["a photo of a lighthouse on a cliff at sunset", "a bowl of fruit on a wooden table"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--clip", default=None)
    ap.add_argument("--mlp-weights", default=None)
    ap.add_argument("--fallback", choices=["full", "tiny", "none"], default=None,
                    help="without weights: random full-size (default on CUDA) or tiny (default on CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=list(DTYPES), default=None, help="fp16 on CUDA, fp32 on CPU")
    ap.add_argument("--reward-dtype", choices=list(DTYPES), default="fp32")
    ap.add_argument("--attention-slicing", action="store_true")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--prompt", action="append", default=None)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--height", type=int, default=None, help="image height (default: the model's, 512 for SD 1.5)")
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--budget", type=int, default=20, help="NFE multiplier of the expensive methods (500 = 20 x 25)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--kappa", type=float, default=0.5)
    ap.add_argument("--dps-scale", type=float, default=1.0)
    ap.add_argument("--timing-only", action="store_true", help="skip the aesthetic table")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", default=None, help="write a JSON of every number here")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    dtype = DTYPES[a.dtype or ("fp16" if device.type == "cuda" else "fp32")]
    fallback = a.fallback or ("full" if device.type == "cuda" else "tiny")
    opts = dict(attention_slicing=a.attention_slicing, gradient_checkpointing=a.gradient_checkpointing)
    prompts = a.prompt or PROMPTS

    t0 = time.perf_counter()
    try:
        pipe = sd.load_pipeline(a.model, device=device, dtype=dtype, **opts)
        scorer = sd.load_aesthetic(a.clip, a.mlp_weights, device=device)
        which = "real"
    except sd.WeightsNotFoundError as e:
        print(f"real weights unavailable ({1e3 * (time.perf_counter() - t0):.0f} ms): {e}\n")
        if fallback == "none":
            return 1
        if fallback == "tiny":
            pipe, scorer = sd.load_tiny_pipeline(device=device, dtype=dtype, **opts), sd.load_tiny_aesthetic(device=device)
        else:
            pipe = sd._configure(sd.build_random_pipeline("full").to(dtype), device, **opts)
            scorer = sd.build_random_scorer("full").to(device)
        which = f"random {fallback}" if fallback == "full" else "tiny"
    prob = sd.make_problem(pipe, scorer, prompts, num_steps=a.steps, height=a.height, width=a.width,
                           reward_dtype=DTYPES[a.reward_dtype], latent_dtype=torch.float32)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"model: {which}; device: {dev_name}; dtype {dtype}; reward dtype {a.reward_dtype}; "
          f"latent {prob.latent_shape} (N = {prob.dim}); {len(prompts)} prompts; T = {a.steps}; "
          f"rho = kappa^2/N = {a.kappa ** 2 / prob.dim:.3g}")

    sd.run_method(sd.make_problem(pipe, scorer, prompts[:1], num_steps=2, height=a.height, width=a.width,
                                  reward_dtype=DTYPES[a.reward_dtype]), "ntrk", torch.Generator(device).manual_seed(0))  # warm-up
    tim = sd.step_timings(prob, ("base", "dps", "ntrk"), kappa=a.kappa, dps_scale=a.dps_scale)
    print(f"\nper-step timings, batch of {len(prompts)} prompts (one guided eval = UNet x2 for CFG):")
    print("| method | s / step | wall s (T steps) | peak GiB |\n|---|---|---|---|")
    for m, r in tim.items():
        pk = "n/a (CPU)" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        print(f"| {m} | {r['step_s']:.4f} | {r['wall_s']:.2f} | {pk} |")
    if device.type == "cpu":
        import resource
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20     # Linux: kB -> GiB
        print(f"CPU run: peak resident memory of the process so far {rss:.2f} GiB (weights included)")
    record = dict(model=which, device=dev_name, dtype=str(dtype), latent=list(prob.latent_shape),
                  steps=a.steps, timings=tim)

    if not a.timing_only:
        specs = sd.matched_specs(a.steps, a.budget, kappa=a.kappa, dps_scale=a.dps_scale)
        t0 = time.perf_counter()
        res = sd.compare(prob, specs, range(a.seeds))
        print(f"\naesthetic at {a.steps} vs {a.steps * a.budget} NFEs ({a.seeds} seeds, "
              f"{time.perf_counter() - t0:.0f} s):")
        print(sd.results_table(res))
        if which != "real":
            print("(untrained weights: the scores only prove the plumbing)")
        record["table"] = res
    if a.out:
        Path(a.out).write_text(json.dumps(record, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
