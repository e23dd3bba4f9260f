"""Benchmark of the whitening operator W and its comparison points (prints tables, writes markdown).

    .venv/bin/python scripts/bench_whitening.py [--quick] [--threads 1] [--out results/whitening_bench.md]

1. pass-through: cosine(W(eps), eps) over genuine N(0, I) draws of shape 4x64x64;
2. structured inputs (smooth field, 1/f field, constant, spike, checkerboard, blob x noise,
   smooth + noise, and white noise as reference): norm^2/N, lag-1 correlation, spectral flatness,
   KS distance to N(0, 1) and cosine with the input, for W and each comparison point;
3. the two-level sort-clip-unsort gap: how often one pass leaves the set, passes needed, extra
   distance of the repeated pass, and brute force on M = 2, D = 3 and M = 3, D = 2 (alpha = 0.05);
4. time per call on the CPU (and CUDA when available) for 4x64x64, 16x128x128 and the toy shapes.
Numbers are measured on every run; nothing is hard-coded.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch

import ntrk_minimal as nt
from ntrk_minimal.bench import markdown_table
from ntrk_minimal.whitening import norm_match

ROOT = Path(__file__).resolve().parent.parent


def structured_inputs(C=4, H=64, W=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                            indexing="ij")
    fy, fx = torch.fft.fftfreq(H)[:, None], torch.fft.fftfreq(W)[None, :]
    k2 = fy ** 2 + fx ** 2
    noise = lambda: torch.randn(1, C, H, W, generator=g, dtype=torch.float64)

    def filt(gain):
        s = torch.fft.ifft2(torch.fft.fft2(noise()) * gain).real
        return s / s.std()

    inv_f = 1 / k2.sqrt().clamp_min(1 / max(H, W))
    blob = torch.exp(-((yy - 20) ** 2 + (xx - 40) ** 2) / (2 * 8.0 ** 2))
    spike = torch.zeros(1, C, H, W, dtype=torch.float64)
    spike[0, 1, 10, 30] = 1.0
    return {
        "smooth field": filt(torch.exp(-k2 / (2 * 0.03 ** 2))),
        "1/f field": filt(inv_f),
        "constant": torch.ones(1, C, H, W, dtype=torch.float64),
        "spike": spike,
        "checkerboard": ((yy + xx) % 2 * 2 - 1).expand(1, C, H, W).clone(),
        "blob x noise": blob * noise(),
        "smooth + noise": filt(torch.exp(-k2 / (2 * 0.03 ** 2))) + 0.5 * noise(),
        "white noise": noise(),
    }


METHODS = {
    "W (default)": nt.whiten,
    "W, 2 cycles": lambda x: nt.whiten(x, cycles=2),
    "W, pixel values only": lambda x: nt.whiten(x, domains=("pixel",), stages=("values",)),
    "norm match": norm_match,
    "standardize": nt.standardize,
    "WGNC": nt.wgnc_project,
}


def pass_through(num, batch=50):
    g = torch.Generator().manual_seed(1)
    cos = {k: [] for k in ("W (default)", "W, 2 cycles", "WGNC", "standardize")}
    for start in range(0, num, batch):
        x = torch.randn(min(batch, num - start), 4, 64, 64, generator=g)
        for k in cos:
            cos[k].append(nt.whiteness(METHODS[k](x), x)["cosine"])
    rows = []
    for k, v in cos.items():
        c = torch.cat(v)
        rows.append([k, str(len(c)), f"{c.min():.7f}", f"{c.quantile(0.01):.7f}", f"{c.median():.7f}"])
    return markdown_table(["method", "draws", "min cosine", "1% quantile", "median"], rows)


def structured_table():
    rows = []
    for name, x in structured_inputs().items():
        for m, f in METHODS.items():
            d = {k: float(v) for k, v in nt.whiteness(f(x), x).items()}
            rows.append([name, m, f"{d['norm2']:.3f}", f"{d['lag1']:+.3f}", f"{d['flatness']:.3f}",
                         f"{d['ks']:.3f}", f"{d['cosine']:+.3f}"])
    return markdown_table(["input", "method", "norm^2/N", "lag-1", "flatness", "KS", "cosine"], rows)


def gap_table(num_brute):
    """One pass vs repeated passes at M = D = 64 (inputs in the tile layout), and brute force."""
    rows = []
    inputs = structured_inputs()
    for name, x in inputs.items():
        flat = (x / x.norm() * math.sqrt(x.numel())).reshape(-1, 64, 64)     # 4 matrices M = D = 64
        one = nt.project_2os(flat, repeat=False)
        rep, passes = nt.project_2os(flat, return_passes=True)
        d1 = (one - flat).flatten(1).norm(dim=1)
        d = (rep - flat).flatten(1).norm(dim=1)
        moved = d1 > 0
        extra = ((d[moved] / d1[moved] - 1) * 100) if moved.any() else torch.zeros(1)
        rows.append([name, f"{int((~nt.in_2os_set(one)).sum())}/{len(flat)}",
                     f"{int(passes.max())}", f"{extra.max():.2f}"])
    t1 = markdown_table(["input (4 tile matrices 64x64)", "one pass leaves set", "max passes",
                         "max extra distance %"], rows)
    g = torch.Generator().manual_seed(5)
    rows = []
    for M, D in ((2, 3), (3, 2)):
        hard, gaps, tried = 0, [], 0
        while hard < num_brute and tried < 20000:
            tried += 1
            X = (torch.randn(M, D, generator=g, dtype=torch.float64) * 3 * torch.rand(1, generator=g).item()
                 + torch.randn(M, 1, generator=g, dtype=torch.float64))
            one = nt.project_2os(X, 0.05, repeat=False)
            if nt.in_2os_set(one, 0.05, tol=1e-12):
                continue
            hard += 1
            bf = float((nt.nearest_2os_brute_force(X, 0.05) - X).norm())
            rep = float((nt.project_2os(X, 0.05) - X).norm())
            gaps.append((float((one - X).norm()) / bf - 1, rep / bf - 1))
        exact = sum(abs(r) < 1e-6 for _, r in gaps)
        rows.append([f"M={M}, D={D}", str(hard), f"{max(-o for o, _ in gaps) * 100:.2f}",
                     f"{exact}/{hard}", f"{max(r for _, r in gaps) * 100:.3f}"])
    t2 = markdown_table(["size (alpha=0.05)", "hard cases (one pass infeasible)",
                         "one pass closer than optimum by, max %", "repeated = optimum",
                         "repeated farther than optimum, max %"], rows)
    return t1, t2


def timing(device, repeats):
    shapes = [("4x64x64", (1, 4, 64, 64)), ("16x128x128", (1, 16, 128, 128)),
              ("batch 16 of 4x64x64", (16, 4, 64, 64)), ("toy 2-D, batch 2000", (2000, 2)),
              ("digits 64-D, batch 500", (500, 64))]
    rows = []
    for label, shape in shapes:
        x = torch.randn(shape, device=device)
        row = [label]
        for f in (nt.whiten, norm_match, nt.wgnc_project):
            if f is nt.wgnc_project and shape[-1] == 2:
                row.append("n/a")
                continue
            f(x)
            ts = []
            for _ in range(repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                f(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                ts.append(time.perf_counter() - t0)
            row.append(f"{statistics.median(ts) * 1e3:.2f} ms (min {min(ts) * 1e3:.2f})")
        rows.append(row)
    return markdown_table(["shape", "W (default)", "norm match", "WGNC"], rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer draws and repeats")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--out", default=str(ROOT / "results" / "whitening_bench.md"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t_start = time.perf_counter()
    parts = [f"# Whitening benchmark\n\ntorch {torch.__version__}, CPU threads: {a.threads}"
             f"{', quick' if a.quick else ''}. Default W: {nt.whitening.DEFAULTS}.\n"]
    parts.append("## Pass-through of genuine N(0, I) samples (4x64x64)\n\n" + pass_through(60 if a.quick else 300))
    print(parts[-1], flush=True)
    parts.append("## Structured inputs (4x64x64; white noise: norm^2/N 1, lag-1 0, flatness 0.561, "
                 "KS ~0.007)\n\n" + structured_table())
    print(parts[-1], flush=True)
    t1, t2 = gap_table(3 if a.quick else 10)
    parts.append("## The two-level sort-clip-unsort gap\n\n" + t1 + "\n\n" + t2)
    print(parts[-1], flush=True)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for dev in devices:
        parts.append(f"## Time per call, {dev.type} (median of {5 if a.quick else 20})\n\n"
                     + timing(dev, 5 if a.quick else 20))
        print(parts[-1], flush=True)
    parts.append(f"(benchmark wall time {time.perf_counter() - t_start:.0f} s)")
    print(parts[-1])
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n\n".join(parts) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
