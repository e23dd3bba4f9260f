"""The worlds: the problems the benchmarks run on, each a plug-in of the evaluation protocol.

A world supplies what only it knows, and nothing else: its problem (model, schedule, reward, exact
target where there is one), ``world()`` (a ``bench.World``: the evaluation, the floor, the metrics and
the margins stated in advance), ``methods()`` (the table ``bench.methods`` with this world's settings
and knob grids), ``levels()`` and ``comparisons()``. It never defines a sampler, a recorder or a
harness. Simple worlds also carry their default benchmark, ``run_benchmark`` (``run_study`` +
``write_results``); the larger studies live in ``ntrk_minimal.studies``. ``embedded`` builds two worlds
from one problem (``make_world(problem, "unet" | "exact")``, ``levels_and_comparisons(problem)``);
``sd``'s world needs a loaded pipeline (``world(problem, text, n, n_ref)``, ``methods(world, budget)``).

    toy2d        the exact 2-D ring: 8 Gaussians, a quadratic reward, the exact tilted target p*
    flow2d       the same problem on the rectified-flow path (FLUX's), with its noise knob
    digits       an exact 64-D Gaussian mixture fitted to 8x8 digits, classifier rewards, exact p* by rejection
    trained      a trained diffusers UNet on 16x16 digits, CNN/MLP scorers, KID fidelity (the headline)
    embedded     the digits mixture embedded at 32x32: exact eps*, log p_t and p*, and a UNet trained on it
    sd           Stable Diffusion with the LAION aesthetic reward (``ntrk_minimal.adapters.sd``)
    digits_data  scikit-learn's digits and the one train/test split the digits worlds share

How to add a world: docs/ARCHITECTURE.md.
"""
