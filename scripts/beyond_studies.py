"""Run the studies of ``ntrk_minimal.studies.beyond`` and write ``results/beyond_*``.

    python scripts/beyond_studies.py --world 2d --study smc strength cheap
    python scripts/beyond_studies.py --world 2d-100 --study convergence
    python scripts/beyond_studies.py --world trained --study learned --seeds 4     # also embedded-unet / -exact
    python scripts/beyond_studies.py --cost 2d trained embedded sd flux     # cost split per world
    python scripts/beyond_studies.py --summary                              # results/beyond.{json,md}

Every study seeds its generators (protocol: tuning seeds 1000-1002, evaluation seeds 0..S-1); the same
command gives the same json except the timing fields. Long: run with ``nice`` in the background.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ntrk_minimal.studies import beyond as B  # noqa: E402
from ntrk_minimal import bench as P  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "results"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default="2d")
    ap.add_argument("--study", nargs="*", default=[], choices=["smc", "strength", "cheap", "convergence", "learned"])
    ap.add_argument("--cost", nargs="*", default=None, help="worlds for the cost split")
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--n", type=int, default=None, help="samples per run (default: the world's)")
    ap.add_argument("--seeds", type=int, default=5, help="evaluation seeds")
    ap.add_argument("--tuning", type=int, default=3, help="tuning seeds (from 1000)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--particles", type=int, nargs="*", default=None,
                    help="SMC particle / SVDD candidate grid (smc, convergence)")
    ap.add_argument("--ratio-log2", type=float, default=0.25, help="knob grid ratio 2^x (strength, cheap)")
    ap.add_argument("--tuning-points", type=int, default=9, help="SMC proposals' stage-1 grid size")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for study in a.study:
        t0 = time.perf_counter()
        spec = B.study_spec(a.world, study, n=a.n, seeds=a.seeds, tuning=a.tuning, particles=a.particles,
                            ratio_log2=a.ratio_log2, tuning_points=a.tuning_points)
        data = spec["run"]()
        data["wall_time_s"] = time.perf_counter() - t0
        data.setdefault("config", {})["command"] = " ".join(["python scripts/beyond_studies.py"] + (argv or sys.argv[1:]))
        if study == "convergence":
            P.write_json(data, out / f"beyond_convergence_{a.world}.json")
            print(f"convergence on {a.world}: {data['wall_time_s']:.0f} s")
        else:
            md = B.write_study(data, study, a.world, out)
            print(md.split("## Verdicts")[-1][:6000])
            print(f"{study} on {a.world}: {data['wall_time_s']:.0f} s")
    if a.cost is not None:
        res = B.cost_splits(a.cost, out / "beyond_cost.json")
        print(json.dumps(res, indent=1)[:4000])
    if a.summary:
        print(B.write_summary(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
