"""Studies: measurements that need more than one run of the protocol, or their own instruments.

    headline          the trained UNet: does NTRK at 25 NFEs beat the best baseline at 500? (``--task trained``)
    learned_vs_exact  the embedded world on its UNet and on the exact eps*: what learning costs each method,
                      the denoiser error along trajectories, the W ablation (``--task embedded``)
    flow_noise        the 2-D flow world across the noise levels of a flow sampler (``--task flow2d``)
    beyond            beyond the paper: NTRK as an exact SMC proposal, the cheap guided step, a strength that
                      stops (``--task beyond``, ``scripts/beyond_studies.py``)

Each writes ``results/`` through the protocol and renders its markdown from the json alone.
"""
