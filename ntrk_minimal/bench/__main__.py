"""``python -m ntrk_minimal.bench``: the main job (``make demo``).

Tasks (``--task``), each a ``run(out_dir, quick, seeds) -> str`` function that writes a table and a
figure into ``results/`` and returns the table as text:

    2d       exact 2-D ring mixture, quadratic reward (worlds.toy2d): every method through the protocol
             (fronts, matched levels, paired verdicts) against the exact target p*
    digits   analytic 64-D digits mixture, exact p* by rejection (worlds.digits): the protocol against exact p*
    trained  trained UNet on 16x16 digits: the headline (studies.headline; ``make bench-full``);
             ``--quick`` is ``make demo``: a reduced run that prints its verdicts beside the committed ones
    embedded the digits mixture embedded at 32x32: the same samplers on a learned UNet and on the exact
             eps*, the denoiser error along trajectories, the W ablation (studies.learned_vs_exact)
    flow2d   the 2-D ring on the rectified-flow path: every method at f = 1, a sweep over sigma
             (studies.flow_noise)
    beyond   NTRK-SMC with exact weights, the cheap guided step, the matched strength on the 2-D
             worlds (studies.beyond; learned worlds and cost split: scripts/beyond_studies.py)

This module names the tasks by string and imports a task only when it runs: the benchmark layer
itself knows nothing about any world.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

TASKS = {
    "2d": "ntrk_minimal.worlds.toy2d:run_benchmark",
    "digits": "ntrk_minimal.worlds.digits:run_benchmark",
    "trained": "ntrk_minimal.studies.headline:run_benchmark",
    "embedded": "ntrk_minimal.studies.learned_vs_exact:run_benchmark",
    "flow2d": "ntrk_minimal.studies.flow_noise:run_benchmark",
    "beyond": "ntrk_minimal.studies.beyond:run_benchmark",
}
DEFAULT_TASK = "trained"


def resolve(task: str):
    if task not in TASKS:
        raise SystemExit(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    mod, fn = TASKS[task].split(":")
    try:
        return getattr(importlib.import_module(mod), fn)
    except ImportError as e:
        raise SystemExit(f"task {task!r} is not available: {e}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ntrk_minimal.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default=DEFAULT_TASK, choices=sorted(TASKS))
    ap.add_argument("--quick", action="store_true", help="small settings for CI (minutes, not tens)")
    ap.add_argument("--seeds", type=int, default=None,
                    help="evaluation seeds (>= 2 for an interval; default: the task's own, 5 for full runs)")
    ap.add_argument("--out", default="results", help="output folder")
    args = ap.parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        ap.error("--seeds must be >= 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kw = {} if args.seeds is None else {"seeds": args.seeds}
    table = resolve(args.task)(out_dir=out, quick=args.quick, **kw)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
