"""ntrk_minimal: Noise-Tilted Reverse Kernels (NTRK) for reward-aligned diffusion, small and legible.

The core, one idea per module (the NTRK path first, in reading order; docs/ARCHITECTURE.md draws the layers):

    schedules   paths x_t = a_t x_0 + s_t eps and their sampling grids, read from diffusers
    kernels     the four reverse kernels x_{t-1} = mu_t + sigma_t eta_t (base, DPS, SVDD, NTRK)
    sampling    one loop for every kernel, best-of-N, SMC, strength schedules rho_t = kappa_t^2 / N
    strength    the gradient-aware strength TiltMatched
    whitening   the operator W (and norm matching, W switched off)
    models      exact Gaussian-mixture diffusion: eps_hat, x0_hat, score, log p_t
    rewards     rewards r(x) and the exact tilted target p* ∝ p_0 exp(r / beta)
    metrics     energy distance, KID, FD, eta statistics
    plotting    the shared figure style and helpers
    paths       where the repository's files are; sha256 checks of data/

Above the core, in their own subpackages and never imported here: ``bench`` (the evaluation
protocol, the one table of methods, ``python -m ntrk_minimal.bench``), ``worlds`` (the benchmark
problems), ``adapters`` (Stable Diffusion, FLUX and the aesthetic predictor through diffusers) and
``studies`` (measurements that need more than one protocol run: the headline, learned versus exact,
the noise of a flow sampler, and beyond the paper).
"""
from .schedules import (Schedule, make_schedule, make_scheduler, make_flow_schedule, make_flow_scheduler,
                        VelocityModel)
from .models import GaussianMixture, MixtureDenoiser, ring_mixture
from .rewards import QuadraticReward, LinearReward, ModesReward, tilted_mixture
from .kernels import Base, MeanShift, Search, NoiseTilt, make_kernel, tweedie, ddim_mean, denoise, KERNELS
from .sampling import (sample, sample_iter, best_of_n, smc, grouped_starts, rho_from_kappa,
                       sigma2_scaled, NFECounter, SampleResult)
from .strength import TiltMatched
from .whitening import (order_stat_bounds, project_2os, whiten, norm_match, wgnc_project, standardize, sort_2os,
                        in_2os_set, whiteness, tile_layout, nearest_2os_brute_force)

__version__ = "0.1.0"
