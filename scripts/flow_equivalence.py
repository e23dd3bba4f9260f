"""Print the two scheduler equivalences of the flow kernel form (docs/METHOD.md section 6), as max |diff|.

    python scripts/flow_equivalence.py [--device cuda] [--steps 28] [--shift 3.0]

sigma = 0 against the Euler ODE step (float64) and against diffusers' FlowMatchEulerDiscreteScheduler
(deterministic); sigma = s_prev against FlowMatchEulerDiscreteScheduler(stochastic_sampling=True) with
the same generator, in float32 / bfloat16 / float16 (the half-precision gap is diffusers rounding the
0-dim sigma tensor to the model dtype inside ``sigma * v``; the tests reproduce it bit for bit when
copied). A fixed nonlinear velocity field stands in for the transformer. tests/test_flows.py asserts
the same relations.
"""
from __future__ import annotations

import argparse
import math

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

import ntrk_minimal as nt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--shift", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(2)
    dev, N, shift, d = torch.device(args.device), args.steps, args.shift, 16
    W = (torch.randn(d, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64) / math.sqrt(d)).to(dev)

    def velocity(x, t):
        s = float(t) / 1000
        xf = x.double()
        return (torch.tanh(xf @ W) - 0.7 * s * xf + 0.3).to(x.dtype)

    def diffusers_run(x_T, stochastic):
        ref = FlowMatchEulerDiscreteScheduler(shift=shift, stochastic_sampling=stochastic)
        ref.set_timesteps(N)
        g, x = torch.Generator(dev).manual_seed(2), x_T
        for t in ref.timesteps:
            x = ref.step(velocity(x, t), t, x, generator=g).prev_sample
        return x

    def ours(x_T, noise):
        sched = nt.make_flow_schedule(N, noise=noise, shift=shift)
        return nt.sample(nt.VelocityModel(velocity, sched), sched, x_T, "base",
                         torch.Generator(dev).manual_seed(2), record=True), sched

    x64 = torch.randn(args.batch, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dev)
    res, sched = ours(x64, 0.0)
    x, worst = x64, 0.0
    for i, t in enumerate(sched.timesteps):
        x = x + float(sched.s_prev[i] - sched.s_t[i]) * velocity(x, t)
        worst = max(worst, (res.trace[i].x_prev - x).abs().max().item())
    print(f"device {dev}, {N} steps, shift {shift}, batch {args.batch} x {d}; |x_0| max "
          f"{res.x0.abs().max().item():.2f}")
    print(f"sigma = 0      vs Euler x_t + (s_prev - s_t) v, float64, every step: max |diff| = {worst:.2e}")
    x32 = x64.float()
    diff = (ours(x32, 0.0)[0].x0 - diffusers_run(x32, False)).abs().max().item()
    print(f"sigma = 0      vs FlowMatchEulerDiscreteScheduler.step, float32, x_0:  max |diff| = {diff:.2e}")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        xd = x64.to(dtype)
        a, b = ours(xd, 1.0)[0].x0, diffusers_run(xd, True)
        diff = (a.double() - b.double()).abs().max().item()
        print(f"sigma = s_prev vs FlowMatchEulerDiscreteScheduler(stochastic_sampling=True), "
              f"{str(dtype)[6:]:>8}: max |diff| = {diff:.2e}  bit for bit: {torch.equal(a, b)}")


if __name__ == "__main__":
    main()
