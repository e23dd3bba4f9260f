"""ntrk_minimal: Noise-Tilted Reverse Kernels (NTRK) for reward-aligned diffusion, small and legible.

Modules, one idea each: ``schedules`` (paths ``x_t = a_t x_0 + s_t eps``: VP and rectified-flow
grids from diffusers, ``VelocityModel``), ``models`` (exact Gaussian-mixture diffusion on any path),
``rewards`` (rewards and the exact tilted target), ``kernels`` (the four reverse kernels),
``sampling`` (one loop, best-of-N, SMC), ``whitening`` (the operator W and its comparison points),
``metrics``, ``plotting``, ``protocol`` (the one evaluation protocol every benchmark uses: fronts,
matched levels, paired verdicts, cost). Imported on demand (heavier, data-backed): ``digits`` (the
64-D mixture), ``trained`` (the trained UNet), ``sd`` + ``aesthetic`` (Stable Diffusion through
diffusers), ``toy2d`` (the exact 2-D world), ``checksums``, ``bench`` (``python -m ntrk_minimal.bench``).
"""
from .schedules import (Schedule, make_schedule, make_scheduler, make_flow_schedule, make_flow_scheduler,
                        VelocityModel)
from .models import GaussianMixture, MixtureDenoiser, ring_mixture
from .rewards import QuadraticReward, LinearReward, ModesReward, tilted_mixture
from .kernels import (Base, MeanShift, Search, NoiseTilt, make_kernel, norm_match, tweedie,
                      ddim_mean, denoise, KERNELS)
from .sampling import (sample, sample_iter, best_of_n, smc, grouped_starts, rho_from_kappa,
                       sigma2_scaled, NFECounter, SampleResult)

from .protocol import (World, Method, Metric, Level, Comparison, CostCounter, run_study, front, verdict,
                       tost, paired_ci, mean_ci)
from .whitening import (order_stat_bounds, project_2os, whiten, wgnc_project, standardize, sort_2os,
                        in_2os_set, whiteness, tile_layout, nearest_2os_brute_force)

__version__ = "0.1.0"
