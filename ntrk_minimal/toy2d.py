"""The exact 2-D benchmark: an 8-mode ring, a quadratic reward, and the exact tilted target.

``python -m ntrk_minimal.bench --task 2d`` runs ``run_benchmark``: every method's strength is tuned
on a tuning seed (minimum energy distance to the exact ``p*``), then evaluated on ``seeds`` other
seeds; the table gives mean ± 95% CI.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import torch

from . import metrics
from .kernels import norm_match
from .models import GaussianMixture, MixtureDenoiser, ring_mixture
from .rewards import QuadraticReward, tilted_mixture
from .sampling import best_of_n, grouped_starts, rho_from_kappa, sample, sigma2_scaled, smc
from .schedules import make_schedule

__all__ = ["ToyProblem", "toy_problem", "METHODS", "run_method", "evaluate", "tune", "compare", "table",
           "run_benchmark"]

TUNING_SEED = 1000


@dataclass
class ToyProblem:
    """Everything a 2-D experiment needs: ``p_0``, its exact denoiser, ``r``, ``beta``, ``p*``."""

    mixture: GaussianMixture
    reward: QuadraticReward
    beta: float
    target: GaussianMixture
    schedule: object
    model: MixtureDenoiser
    hdr_level: float = 0.99


def toy_problem(num_steps: int = 25, beta: float = 0.5, angle_deg: float = 67.5,
                distance: float = 2.5, scale: float = 1.0) -> ToyProblem:
    """Ring of 8 modes (radius 2, std 0.25); reward centred ``distance`` from the origin at
    ``angle_deg`` (67.5° = between two modes); ``p* ∝ p_0 exp(r / beta)``."""
    mix = ring_mixture(8, 2.0, 0.25)
    a = math.radians(angle_deg)
    reward = QuadraticReward([distance * math.cos(a), distance * math.sin(a)], scale)
    sched = make_schedule(num_steps, eta=1.0)
    return ToyProblem(mix, reward, beta, tilted_mixture(mix, reward, beta), sched,
                      MixtureDenoiser(mix, sched.alphas_cumprod))


# name -> (sampler, tuning grid); each sampler is f(problem, x_T, generator, **knob) -> SampleResult
def _plain(kernel):
    def f(pb, x_T, g, record=False, **kw):
        return sample(pb.model, pb.schedule, x_T, kernel, g, reward=pb.reward, record=record, **kw)
    return f


def _dps(pb, x_T, g, scale=1.0, record=False):
    return sample(pb.model, pb.schedule, x_T, "dps", g, pb.reward, record=record,
                  lambda_t=sigma2_scaled(scale / pb.beta))


def _ntrk(pb, x_T, g, kappa=1.0, decay="linear", whiten=None, record=False):
    return sample(pb.model, pb.schedule, x_T, "ntrk", g, pb.reward, record=record,
                  rho_t=rho_from_kappa(kappa, x_T[0].numel(), decay), whiten=whiten)


def _ntrk_off(pb, x_T, g, **kw):
    return _ntrk(pb, x_T, g, whiten=norm_match, **kw)


def _svdd(pb, x_T, g, mode="argmax", temp=1.0, record=False):
    return sample(pb.model, pb.schedule, x_T, "svdd", g, pb.reward, record=record,
                  num_candidates=20, mode=mode, beta=temp * pb.beta)


def _bon(pb, x_T, g, record=False):
    return best_of_n(pb.model, pb.schedule, grouped_starts(x_T, 20, g), 20,
                     pb.reward, "base", g)


def _ntrk_bon(pb, x_T, g, kappa=1.0, decay="linear", record=False):
    return best_of_n(pb.model, pb.schedule, grouped_starts(x_T, 20, g), 20, pb.reward, "ntrk", g,
                     rho_t=rho_from_kappa(kappa, x_T[0].numel(), decay))


def _smc(pb, x_T, g, temp=1.0, record=False):
    return smc(pb.model, pb.schedule, grouped_starts(x_T, 20, g), 20, pb.reward, beta=temp * pb.beta,
               generator=g)


KAPPAS = [{"kappa": k, "decay": "linear"} for k in (0.5, 1.0, 1.5, 2.0, 3.0)]
METHODS = {
    "base":         (_plain("base"), [{}]),
    "dps":          (_dps, [{"scale": s} for s in (0.25, 0.5, 1.0, 2.0)]),
    "ntrk":         (_ntrk, KAPPAS),
    "ntrk (W off)": (_ntrk_off, KAPPAS),
    "svdd-argmax":  (_svdd, [{"mode": "argmax"}]),
    "svdd-soft":    (_svdd, [{"mode": "soft", "temp": t} for t in (0.5, 1.0, 2.0)]),
    "best-of-20":   (_bon, [{}]),
    "smc-20":       (_smc, [{"temp": t} for t in (0.5, 1.0, 2.0)]),
    "ntrk+bon-20":  (_ntrk_bon, "ntrk"),        # reuses NTRK's tuned knob
}


TRACED = ("base", "dps", "ntrk", "ntrk (W off)", "svdd-argmax", "svdd-soft")


def run_method(pb: ToyProblem, name: str, seed: int, n: int, knob: dict, record=False):
    """Samples of one method for one seed: x_T and all noise from ``Generator().manual_seed(seed)``."""
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(n, 2, generator=g, dtype=torch.float64)
    fn = METHODS[name][0]
    t0 = time.perf_counter()
    res = fn(pb, x_T, g, record=record, **knob)
    return res, time.perf_counter() - t0


def evaluate(pb: ToyProblem, x0: torch.Tensor, seed: int, n_ref: int = 2000) -> dict:
    """Mean reward, energy distance and histogram KL to exact ``p*`` samples, share in the base HDR."""
    g = torch.Generator().manual_seed(10_000 + seed)
    ref = pb.target.sample(n_ref, g)
    base_ref = pb.mixture.sample(n_ref, g)
    thr = metrics.hdr_threshold(pb.mixture.log_prob, base_ref, pb.hdr_level)
    return {
        "reward": float(pb.reward(x0).mean()),
        "energy_dist": metrics.energy_distance(x0, ref),
        "hist_kl": metrics.histogram_kl(x0, pb.target.log_prob),
        "in_hdr": metrics.share_in_hdr(x0, pb.mixture.log_prob, thr),
    }


def tune(pb: ToyProblem, name: str, n: int, tuned: dict) -> dict:
    """The knob with the lowest energy distance to ``p*`` on ``TUNING_SEED`` (never an eval seed)."""
    grid = METHODS[name][1]
    if isinstance(grid, str):
        return tuned[grid]
    scores = []
    for knob in grid:
        res, _ = run_method(pb, name, TUNING_SEED, n, knob)
        scores.append(evaluate(pb, res.x0, TUNING_SEED)["energy_dist"])
    return grid[min(range(len(grid)), key=scores.__getitem__)]


def compare(pb: ToyProblem, names=None, n: int = 1000, seeds: int = 5, progress: bool = False) -> dict:
    """Tune each method on ``TUNING_SEED``, then evaluate it on seeds ``0 .. seeds-1``.

    Returns ``{name: {"knob": tuned knob, "seeds": [metrics per seed]}}``.
    """
    from tqdm.auto import tqdm

    names = list(METHODS) if names is None else list(names)
    unknown = set(names) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; expected names from {list(METHODS)}")
    tuned, raw = {}, {}
    for name in tqdm(names, desc="2-D benchmark", disable=not progress):
        tuned[name] = tune(pb, name, n, tuned)
        per_seed = []
        for s in range(seeds):
            res, wall = run_method(pb, name, s, n, tuned[name], record=name in TRACED)
            m = evaluate(pb, res.x0, s)
            m["nfe"], m["wall_s"] = res.nfe, wall
            if res.trace:
                m["eta_energy"] = float(metrics.eta_energy(res.eta[:-1]).mean())
            per_seed.append(m)
        raw[name] = {"knob": tuned[name], "seeds": per_seed}
    return raw


COLUMNS = {"reward": "mean reward", "energy_dist": "energy dist to p*", "hist_kl": "hist KL(p*||q)",
           "in_hdr": "share in base HDR", "eta_energy": "E||eta||^2/d", "wall_s": "wall s"}


def table(raw: dict, digits: int = 3, columns=None) -> str:
    """Markdown table, mean ± 95% CI over seeds, from ``compare``'s output (``columns``: keys of COLUMNS)."""
    columns = list(COLUMNS) if columns is None else list(columns)
    from .bench import fmt_ci, markdown_table

    rows = []
    for name, entry in raw.items():
        ps = entry["seeds"]
        col = lambda k: fmt_ci([p[k] for p in ps], 2 if k == "wall_s" else digits) if k in ps[0] else "–"
        knob = ", ".join(f"{k}={v}" for k, v in entry["knob"].items()) or "–"
        rows.append([name, knob, f"{ps[0]['nfe']:.0f}"] + [col(k) for k in columns])
    return markdown_table(["method", "tuned knob", "NFE"] + [COLUMNS[k] for k in columns], rows)


def run_benchmark(out_dir, quick: bool = False, seeds: int = 5) -> str:
    """Tune every method, evaluate over ``seeds`` seeds, write ``toy2d.{md,json,png}`` to ``out_dir``."""
    torch.set_num_threads(1)          # 2-D tensors are tiny: extra threads only add overhead
    pb = toy_problem()
    n = 300 if quick else 1000
    raw = compare(pb, n=n, seeds=seeds, progress=True)
    exact = evaluate(pb, pb.target.sample(n, torch.Generator().manual_seed(5)), 0)
    title = (f"2-D ring, quadratic reward centre {[round(c, 3) for c in pb.reward.center.tolist()]}, "
             f"beta={pb.beta}; {n} samples x {seeds} seeds (mean ± 95% CI); exact p* samples: reward "
             f"{exact['reward']:.3f}, energy dist {exact['energy_dist']:.3f}, hist KL {exact['hist_kl']:.3f} "
             f"(the floor set by finite samples)")
    text = title + "\n\n" + table(raw)
    (out_dir / "toy2d.md").write_text(text + "\n")
    (out_dir / "toy2d.json").write_text(json.dumps({"quick": quick, "n": n, "raw": raw}, indent=1))
    _figure(pb, {k: v["knob"] for k, v in raw.items()}, n, out_dir / "toy2d.png")
    return text


def _figure(pb, tuned, n, path):
    import matplotlib.pyplot as plt

    from .plotting import DPI, plot_density, plot_reward, plot_samples

    names = ["base", "dps", "ntrk", "svdd-argmax", "best-of-20", "smc-20"]
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(2.0 * (len(names) + 1), 2.2), dpi=DPI)
    plot_density(axes[0], pb.target.log_prob)
    plot_reward(axes[0], pb.reward)
    axes[0].set_title("exact p*", fontsize=9)
    for ax, name in zip(axes[1:], names):
        res, _ = run_method(pb, name, 0, n, tuned[name])
        ed = evaluate(pb, res.x0, 0)["energy_dist"]
        plot_density(ax, pb.mixture.log_prob, cmap="Greys", alpha=0.5)
        plot_samples(ax, res.x0, title=f"{name}\nED {ed:.3f}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
