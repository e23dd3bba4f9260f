"""FLUX per-step timings of base / DPS / NTRK (and any other method): a table, not a timed test.

    .venv/bin/python scripts/bench_flux.py                                  # tiny offline pipeline, CPU
    python scripts/bench_flux.py --prefer real --device cuda --dtype bf16 --height 1024 --width 1024
    python scripts/bench_flux.py --prefer real --model black-forest-labs/FLUX.1-schnell --device cuda

Weights: ``--model`` / ``$NTRK_FLUX_MODEL`` (default black-forest-labs/FLUX.1-dev; gated on the hub),
``--clip`` / ``$NTRK_CLIP_MODEL`` (CLIP ViT-L/14 image tower of the aesthetic reward; its LAION head
ships in data/laion_aesthetic). ``--prefer real`` falls back to the tiny pipeline, saying why, when
they are missing. A full-size FLUX.1 transformer (12B parameters) needs a GPU; do not try it on a
24 GiB CPU machine.

What is timed: ``flux.run_method`` for each method, one full trajectory of ``--steps`` steps on a batch
of ``--prompt``s, between device synchronisations, ``--repeats`` times interleaved across methods after
``--warmup`` untimed runs; the table gives the median seconds per step, the ratio to base, NFEs and
backward passes per trajectory, and peak GPU memory (CPU: the process's peak resident memory). The
reward is the aesthetic scorer on the decoded image (VAE decode, straight-through clamp to [0, 1]);
its VAE + CLIP run in ``--reward-dtype`` (fp32 by default). Seeded: same arguments, same samples.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ntrk_minimal.adapters import flux  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PROMPTS = ["a lighthouse at sunset", "a bowl of fruit on a table"]   # < 32 tokens: the tiny CLIP/T5 limit
BACKWARD = {"base": 0, "dps": 1, "ntrk": 1, "ntrk_raw": 1, "svdd": 0, "bon": 0, "smc": 0, "ntrk_bon": 1}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(problem, method, seed, **kw):
    """``(result, wall seconds)`` of one ``run_method`` call, between device synchronisations."""
    g = torch.Generator(problem.device).manual_seed(int(seed))
    _sync(problem.device)
    t0 = time.perf_counter()
    res = flux.run_method(problem, method, g, **kw)
    _sync(problem.device)
    return res, time.perf_counter() - t0


def peak_rss_gib() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20        # Linux: kB -> GiB


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefer", choices=["tiny", "real"], default="tiny")
    ap.add_argument("--model", default=None)
    ap.add_argument("--clip", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=list(DTYPES), default=None, help="transformer + text encoders "
                    "(default bf16 on CUDA, fp32 on CPU)")
    ap.add_argument("--reward-dtype", choices=list(DTYPES), default="fp32")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--prompt", action="append", default=None)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--height", type=int, default=None, help="default: the VAE's sample size (1024 for FLUX.1)")
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--guidance", type=float, default=3.5)
    ap.add_argument("--methods", nargs="+", default=["base", "dps", "ntrk"], choices=flux.METHODS)
    ap.add_argument("--kappa", type=float, default=0.5)
    ap.add_argument("--dps-scale", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: tiny models on a shared CPU)")
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    dtype = DTYPES[a.dtype or ("bf16" if device.type == "cuda" else "fp32")]

    pipe, scorer, which = flux.load_flux(a.prefer, device=device, dtype=dtype, model_id=a.model,
                                         clip_id=a.clip, gradient_checkpointing=a.gradient_checkpointing)
    prompts = a.prompt or PROMPTS
    prob = flux.make_problem(pipe, scorer, prompts, guidance_scale=a.guidance, num_steps=a.steps,
                             height=a.height, width=a.width, reward_dtype=DTYPES[a.reward_dtype])
    dev_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                else f"CPU ({torch.get_num_threads()} threads)")
    H, W = prob.image_size
    n_par = sum(p.numel() for p in pipe.transformer.parameters())
    print(f"model: {which} FLUX ({n_par / 1e6:.2f}M transformer parameters); device: {dev_name}; "
          f"dtype {dtype}; reward dtype {a.reward_dtype}; {len(prompts)} prompts at {H}x{W}; latent "
          f"{prob.latent_shape} (N = {prob.dim}) = {(prob.latent_shape[1] // 2) * (prob.latent_shape[2] // 2)} "
          f"packed tokens of {4 * prob.latent_shape[0]}; T = {a.steps}; "
          f"rho = kappa^2/N = {a.kappa ** 2 / prob.dim:.3g}")

    kw = dict(kappa=a.kappa, dps_scale=a.dps_scale)
    for _ in range(a.warmup):
        for m in a.methods:
            timed(prob, m, 0, **kw)
    walls = {m: [] for m in a.methods}
    nfe, peak = {}, {}
    for r in range(a.repeats):                 # interleaved, so drifts in machine load hit every method
        for m in a.methods:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            res, wall = timed(prob, m, r, **kw)
            walls[m].append(wall)
            nfe[m] = res.nfe
            peak[m] = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
    step = {m: statistics.median(w) / a.steps for m, w in walls.items()}
    base = step.get("base")
    print(f"\nper-step wall time, median of {a.repeats} trajectories per method "
          f"(batch of {len(prompts)} prompts, {a.steps} steps):")
    print("| method | s / step | x base | NFE / trajectory | backward passes / trajectory | peak GPU GiB |")
    print("|---|---|---|---|---|---|")
    for m in a.methods:
        ratio = f"{step[m] / base:.2f}" if base else "-"
        pk = "n/a (CPU)" if peak[m] is None else f"{peak[m]:.2f}"
        nb = BACKWARD[m] * a.steps
        print(f"| {m} | {step[m]:.4f} | {ratio} | {nfe[m]:.0f} | {nb} | {pk} |")
    if device.type == "cpu":
        print(f"CPU run: peak resident memory of the process {peak_rss_gib():.2f} GiB (weights included)")
    if which != "real":
        print("(tiny random pipeline: these timings measure the plumbing's overheads, not FLUX's cost)")
    if a.out:
        Path(a.out).write_text(json.dumps(dict(model=which, device=dev_name, dtype=str(dtype),
                                               image=[H, W], latent=list(prob.latent_shape),
                                               steps=a.steps, prompts=prompts, walls=walls,
                                               step_s=step, nfe=nfe, peak_gib=peak), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
