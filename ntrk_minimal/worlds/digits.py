"""The analytic 64-D digits model: a Gaussian mixture fitted to 8x8 digits, its rewards, its world.

Everything is exact where it can be: ``p_0`` is a 16-component full-covariance mixture
(``data/digits_gmm.npz``, fitted by ``scripts/fit_digits_gmm.py``), so ``eps_hat`` and
``log p_0(x)`` are exact (``FastMixtureDenoiser`` / ``EigenMixture``: ``MixtureDenoiser`` and
``GaussianMixture.log_prob`` computed in each component's eigenbasis, ~200x faster). Samples live in
[-1, 1]^64 (pixels ``x / 8 - 1``), shown as 8x8 images.

Rewards, all differentiable ``r(x) -> (B,)`` on (B, 64) or (B, 8, 8):

* ``ClassLogProb(Classifier.load("target"), c)``: the *target*, ``log p(c | x)`` of an MLP
  64-128-128-10 (SiLU) trained with input noise;
* ``ClassLogProb(Classifier.load("heldout"), c)``: the *held-out* check, a logistic regression (a
  different architecture and training procedure) for the same class; never used for guidance;
* ``brightness()``: mean pixel value, a ``LinearReward``, so the tilted target ``p*`` is again an
  exact mixture (``tilted_mixture``): a 64-D sanity check with a known answer.

Weights of both classifiers are stored (``data/digits64_scorers.npz``, ~160 kB) rather than retrained
at load time: training is fast but not bit-reproducible across torch/sklearn versions, and the
benchmark's numbers must not move when a library does. Both files are checked against ``SHA256``.

The world (``world``, ``methods``, ``levels``, ``comparisons``; ``python -m ntrk_minimal.bench --task
digits`` -> ``results/digits.*``): for ``r = log p(c | x)`` and ``beta = 1`` the tilted target
``p* ∝ p_0(x) p(c | x)`` has exact samples by rejection (``PStar``), so fidelity is the distance to
exact p*, as in the 2-D world. W on a 1x8x8 sample has a single 64-entry tile per domain and cannot
see correlation: here it is (almost) norm matching, which the world reports and checks.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .. import bench as P, metrics, paths
from ..bench import methods as M
from ..models import GaussianMixture
from ..rewards import LinearReward
from ..schedules import make_schedule
from ..whitening import tile_layout

__all__ = ["DATA_DIR", "GMM_FILE", "SCORER_FILE", "SHA256", "verify", "load_mixture", "Classifier", "ClassLogProb", "brightness", "DigitsProblem",
           "digits_problem", "EigenMixture", "FastMixtureDenoiser", "PStar", "BETA", "DIAGNOSTICS",
           "MARGINS", "SIZES", "world", "methods", "levels", "comparisons", "summary", "run_benchmark"]

DATA_DIR = paths.DATA
GMM_FILE = DATA_DIR / "digits_gmm.npz"
SCORER_FILE = DATA_DIR / "digits64_scorers.npz"
MLP_HIDDEN = 128
DIM = 64
IMAGE_SHAPE = (1, 8, 8)     # samples are drawn as (B, 1, 8, 8): W sees images (2-D DCT, 8x8 patch)
# sha256 recorded when scripts/fit_digits_gmm.py wrote the files (it prints them).
SHA256 = {
    "digits_gmm.npz": "fda441b603d42f86b7c57f2fbcde9f0a6157fd8caabb890bd3aa712488063fbd",
    "digits64_scorers.npz": "b5ad6035cc88e796fa51270aed7ca66c2268275cc8066fed4c418d3c4a604400",
}


# ---- data and checksums ------------------------------------------------------------------------
def verify(path, expected: str | None) -> Path:
    """Return ``path`` if its sha256 is ``expected``; else raise naming the file and both hashes."""
    return paths.verify(path, expected, made_by="scripts/fit_digits_gmm.py",
                            recorded_in="ntrk_minimal/worlds/digits.py SHA256")


def _load_npz(path, check: bool) -> dict:
    path = Path(path)
    if check:
        verify(path, SHA256.get(path.name))
    elif not path.is_file():
        raise FileNotFoundError(f"data file {path} is missing: run scripts/fit_digits_gmm.py")
    with np.load(path, allow_pickle=False) as f:
        return {k: torch.from_numpy(f[k].astype(np.float64)) for k in f.files}


def load_mixture(path=GMM_FILE, check: bool = True) -> GaussianMixture:
    """``p_0``: the 16-component mixture on R^64 (float64), sha256-checked."""
    a = _load_npz(path, check)
    return GaussianMixture(a["weights"], a["means"], a["covs"])


# ---- a fast exact denoiser ---------------------------------------------------------------------
class EigenMixture:
    """The same diffused mixture as ``GaussianMixture.diffused(ab)``, computed in each component's
    eigenbasis: with ``Sigma_k = U_k diag(lam_k) U_k^T``,

        ab Sigma_k + (1 - ab) I = U_k diag(ab lam_k + 1 - ab) U_k^T,

    so one ``eigh`` at load time replaces a Cholesky factorisation and K batched triangular solves per
    call (which dominate ``MixtureDenoiser`` at d = 64: ~0.5 s per call for 200 samples on one core,
    against ~2 ms here). Exact up to float64 rounding (``tests/test_digits.py`` checks agreement).
    """

    def __init__(self, mixture: GaussianMixture):
        self.mixture = mixture
        self.lam, self.U = torch.linalg.eigh(mixture.covs)                 # (K, d), (K, d, d)
        self.mU = torch.einsum("kd,kde->ke", mixture.means, self.U)        # means in each eigenbasis
        self.log_w = mixture.weights.log()

    def _terms(self, x: torch.Tensor, ab: float):
        x = _flat64(x)
        var = ab * self.lam.to(x.dtype) + (1.0 - ab)                       # (K, d)
        y = torch.einsum("bd,kde->bke", x, self.U.to(x.dtype)) - math.sqrt(ab) * self.mU.to(x.dtype)
        logn = (-0.5 * (y ** 2 / var).sum(-1) - 0.5 * var.log().sum(-1)
                - 0.5 * DIM * math.log(2 * math.pi))                       # (B, K)
        return logn + self.log_w.to(x.dtype), y, var

    def log_prob(self, x: torch.Tensor, ab: float = 1.0) -> torch.Tensor:
        """Exact ``log p_t(x)`` (B,) of the mixture diffused to alpha-bar ``ab`` (1 = ``p_0``)."""
        return torch.logsumexp(self._terms(x, ab)[0], -1)

    def score(self, x: torch.Tensor, ab: float = 1.0) -> torch.Tensor:
        """``grad log p_t(x) = -sum_k P(k|x) U_k diag(1/var_k) U_k^T (x - sqrt(ab) mu_k)`` (B, 64)."""
        logits, y, var = self._terms(x, ab)
        v = torch.softmax(logits, -1)[..., None] * y / var
        return -torch.einsum("bke,kde->bd", v, self.U.to(x.dtype)).reshape(x.shape)


class FastMixtureDenoiser:
    """``eps_hat(x_t, t) = -sqrt(1 - ab_t) grad log p_t(x_t)``: ``MixtureDenoiser`` via ``EigenMixture``."""

    def __init__(self, mixture: GaussianMixture, alphas_cumprod: torch.Tensor):
        self.eig = EigenMixture(mixture)
        self.alphas_cumprod = alphas_cumprod.to(dtype=torch.float64, device="cpu")

    def __call__(self, x_t: torch.Tensor, t) -> torch.Tensor:
        ab = float(self.alphas_cumprod[int(t)])
        return -math.sqrt(1 - ab) * self.eig.score(x_t, ab)


# ---- rewards -----------------------------------------------------------------------------------
def _flat64(x: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(x) or x.ndim < 2 or x[0].numel() != DIM:
        raise ValueError(f"x must have shape (batch, 64) or (batch, 8, 8), got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    return x.reshape(x.shape[0], DIM)


class Classifier:
    """A stored digit classifier, ``logits(x) (B, 10)`` on (B, 64) inputs in [-1, 1].

    ``kind="target"``: MLP 64-128-128-10 (SiLU); ``kind="heldout"``: logistic regression.
    """

    def __init__(self, kind: str, params: dict):
        self.kind, self.params = kind, params

    @classmethod
    def load(cls, kind: str, path=SCORER_FILE, check: bool = True) -> "Classifier":
        if kind not in ("target", "heldout"):
            raise ValueError(f"kind must be 'target' or 'heldout', got {kind!r}")
        a = _load_npz(path, check)
        keys = ("mlp_w1", "mlp_b1", "mlp_w2", "mlp_b2", "mlp_w3", "mlp_b3") if kind == "target" \
            else ("lr_w", "lr_b")
        return cls(kind, {k: a[k] for k in keys})

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        h = _flat64(x)
        p = {k: v.to(dtype=h.dtype, device=h.device) for k, v in self.params.items()}
        if self.kind == "heldout":
            return h @ p["lr_w"].T + p["lr_b"]
        h = torch.nn.functional.silu(h @ p["mlp_w1"].T + p["mlp_b1"])
        h = torch.nn.functional.silu(h @ p["mlp_w2"].T + p["mlp_b2"])
        return h @ p["mlp_w3"].T + p["mlp_b3"]

    def __repr__(self):
        return f"Classifier({self.kind!r})"


class ClassLogProb:
    """``r(x) = log p(c | x)`` of a classifier: (B,), differentiable, <= 0."""

    def __init__(self, classifier: Classifier, target_class: int):
        if not isinstance(target_class, int) or not 0 <= target_class <= 9:
            raise ValueError(f"target_class must be an int in 0..9, got {target_class!r}")
        self.classifier, self.target_class = classifier, target_class

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.classifier.logits(x), -1)[:, self.target_class]

    def __repr__(self):
        return f"ClassLogProb({self.classifier.kind!r}, class {self.target_class})"


def brightness() -> LinearReward:
    """``r(x) = mean pixel = <1/64, x>``: cheap, analytic, and ``tilted_mixture`` gives its exact ``p*``."""
    return LinearReward(torch.full((DIM,), 1.0 / DIM, dtype=torch.float64))


# ---- the problem -------------------------------------------------------------------------------
@dataclass
class DigitsProblem:
    """``p_0``, its exact denoiser on a 25-step DDPM grid, the target and held-out rewards."""

    mixture: GaussianMixture
    schedule: object
    model: FastMixtureDenoiser
    reward: ClassLogProb
    heldout: ClassLogProb
    target_class: int


def digits_problem(target_class: int = 3, num_steps: int = 25) -> DigitsProblem:
    """The benchmark problem: steer ``p_0`` toward digit ``target_class`` (default 3)."""
    mix = load_mixture()
    sched = make_schedule(num_steps, eta=1.0)
    return DigitsProblem(mix, sched, FastMixtureDenoiser(mix, sched.alphas_cumprod),
                         ClassLogProb(Classifier.load("target"), target_class),
                         ClassLogProb(Classifier.load("heldout"), target_class), target_class)


# ---- the world on the protocol --------------------------------------------------------------------------
#: the tilt's temperature: with r = log p(c | x) and beta = 1, p* ∝ p_0(x) p(c | x), the digits model
#: conditioned on class c as the target classifier labels it; exact samples by rejection (``PStar``).
BETA = 1.0
#: TOST margins, stated before the run (the floor's seed-to-seed SDs were measured first).
MARGINS = {
    "ed_pstar": (0.02, "about 4x the seed-to-seed SD (~0.005) of the unbiased energy distance of 500 exact p* "
                       "samples to the reference: below it one run cannot tell two samplers apart"),
    "target": (0.05, "0.05 nats of log p(c|x) = 0.05 beta: a 5% change in the tilt exp(r / beta)"),
    "heldout": (0.05, "as for the target, on the held-out logistic regression"),
}
SIZES = {"full": {"n": 500, "tuning_seeds": (1000, 1001, 1002), "eval_seeds": 5},
         "quick": {"n": 100, "tuning_seeds": (1000, 1001), "eval_seeds": 3}}


class PStar:
    """Exact samples of ``p* ∝ p_0 exp(r / beta)`` for ``r = log p(c | x)`` (``r <= 0``): draw ``x ~ p_0``
    and accept with probability ``exp(r(x) / beta) = p(c | x)^(1 / beta) <= 1`` (rejection sampling; ~9%
    of p_0 samples are accepted at beta = 1). Exact: the accepted draws are iid from p*."""

    def __init__(self, mixture, reward, beta: float = BETA):
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta!r}")
        self.mixture, self.reward, self.beta = mixture, reward, float(beta)

    def sample(self, n: int, generator: torch.Generator, batch: int = 20000) -> torch.Tensor:
        out, have = [], 0
        for _ in range(1000):
            x = self.mixture.sample(batch, generator)
            with torch.no_grad():
                accept = torch.rand(batch, generator=generator, dtype=torch.float64) < torch.exp(self.reward(x) / self.beta)
            out.append(x[accept])
            have += int(accept.sum())
            if have >= n:
                return torch.cat(out)[:n]
        raise RuntimeError(f"rejection sampling got only {have} of {n} p* samples")


def world(target_class: int = 3, n_ref: int = 2000) -> P.World:
    """The 64-D digits mixture as a protocol world, with exact ``p*`` (``PStar``, beta = ``BETA``).

    ``evaluate(x0, seed)``: target and held-out ``log p(c | x)``, the held-out classifier's share of
    class ``c``, the exact mean ``log p_0``, the unbiased energy distance to ``n_ref`` exact p* samples
    (``ed_pstar``, the fidelity axis; reference from ``Generator().manual_seed(20_000 + seed)``, the same
    for every method) and to ``n_ref`` exact p_0 samples (``ed_p0``, seed ``40_000 + seed``), and the
    diversity. ``floor(n, seed)``: the same for ``n`` exact p* samples (seed ``30_000 + seed``).
    W on (1, 8, 8) samples has ONE 64-entry tile per domain (``config["w_tiles"]``): its sets cannot
    see how values are arranged inside the tile, so it acts like norm matching here.
    """
    pb = digits_problem(target_class)
    ps = PStar(pb.mixture, pb.reward)
    refs = {}

    def ref(kind, seed):
        if (kind, seed) not in refs:
            g = torch.Generator().manual_seed((20_000 if kind == "pstar" else 40_000) + int(seed))
            r = ps.sample(n_ref, g) if kind == "pstar" else pb.mixture.sample(n_ref, g)
            refs[kind, seed] = r, float(torch.cdist(r, r).sum()) / (n_ref * (n_ref - 1))
        return refs[kind, seed]

    def ed(x0, kind, seed):
        """``metrics.energy_distance(x0, ref, unbiased=True)`` with the reference's own term cached."""
        r, yy = ref(kind, seed)
        m = x0.shape[0]
        return float(2 * torch.cdist(x0, r).mean() - torch.cdist(x0, x0).sum() / (m * (m - 1))) - yy

    def evaluate(x0, seed):
        x = x0.reshape(len(x0), DIM).to(torch.float64)
        with torch.no_grad():
            return {"target": float(pb.reward(x).mean()), "heldout": float(pb.heldout(x).mean()),
                    "heldout_acc": float((pb.heldout.classifier.logits(x).argmax(1) == target_class).double().mean()),
                    "logp0": float(pb.model.eig.log_prob(x).mean()),
                    "ed_pstar": ed(x, "pstar", seed), "ed_p0": ed(x, "p0", seed),
                    "diversity": metrics.mean_pairwise_distance(x)}

    def floor(n, seed):
        return evaluate(ps.sample(n, torch.Generator().manual_seed(30_000 + int(seed))), seed)

    exact = ps.sample(5000, torch.Generator().manual_seed(7))
    with torch.no_grad():
        r_star = float(pb.reward(exact).mean())
    ed_p0_star = metrics.energy_distance(exact, pb.mixture.sample(5000, torch.Generator().manual_seed(8)),
                                         unbiased=True)
    ms = {"target": P.Metric(f"target log p({target_class}|x) (MLP)", True),
          "heldout": P.Metric(f"held-out log p({target_class}|x) (logistic)", True),
          "heldout_acc": P.Metric(f"held-out share of {target_class}s", True),
          "logp0": P.Metric("mean log p_0 (exact)", None, 1),
          "ed_pstar": P.Metric("energy distance to exact p* (unbiased)", False, 4),
          "ed_p0": P.Metric("energy distance to p_0 (unbiased)", None, 4),
          "diversity": P.Metric("diversity", None, 2), "eta_energy": P.Metric("E||eta_t||^2/d", None),
          "cos_wg": P.Metric("cos(W(g), g)", None, 5), "cos_wg_min": P.Metric("min cos(W(g), g)", None, 5),
          "nfe": P.Metric("NFE", None, 0), "backward": P.Metric("backward rows", None, 0),
          "wall_s": P.Metric("wall s per sample", None, 6), "model_s": P.Metric("model s per sample", None, 6)}
    return P.World(
        name=f"digits mixture (64-D, exact p*), class {target_class}", sample_shape=IMAGE_SHAPE, model=pb.model,
        evaluate=evaluate, floor=floor, metrics=ms, fidelity="ed_pstar", target="target", heldout="heldout",
        context=pb, dtype=torch.float64, margins={k: v[0] for k, v in MARGINS.items()},
        margin_notes={k: v[1] for k, v in MARGINS.items()},
        config={"target_class": target_class, "beta": BETA, "n_ref": n_ref, "r_star": r_star, "ed_p0_star": ed_p0_star,
                "num_steps": pb.schedule.num_steps, "pstar": "p_0(x) p(c|x)^(1/beta), exact by rejection",
                "w_tiles": {d: list(tile_layout(IMAGE_SHAPE, d).shape) for d in ("pixel", "dct")}})


#: the diagnostics every run of this world records (bench.methods): E||eta_t||^2/N, cos(W(g), g) and its minimum
DIAGNOSTICS = ("eta_energy", "cos_wg", "cos_wg_min")


def methods(quick: bool = False) -> list:
    """Base, DPS, NTRK and NTRK with W off (norm matching: the degeneracy check, see ``world``), SVDD
    (soft, K = 20), SMC (20 particles), best-of-N (N the knob) and best-of-20. Knobs: DPS
    ``lambda_t = scale sigma_t^2 / beta`` (scale = 1: the exact tilt's step); NTRK ``rho_t = kappa^2 / 64``
    (kappa = 8: rho = 1); SVDD and SMC at temperature ``temp * beta`` (temp = 1: SMC's exact target);
    best-of-N's N is capped at 64 (its cost; as N grows it concentrates on the argmax of r, away from p*)."""
    G = P.geometric_grid
    temp_lim = ("(argmax / greedy)", "(the base sampler)")
    D = dict(diagnostics=DIAGNOSTICS, record=True)         # record: every run keeps its trace
    ntrk = partial(M.ntrk, decay="constant", **D)                            # rho_t = kappa^2 / 64
    ms = [
        P.Method("base", partial(M.base, **D), budget=25),
        P.Method("dps", partial(M.dps, **D), "scale", G(0.125, 4.0), budget=25, limit=(0.0, None),
                 limit_notes=("(the base sampler)", "")),
        P.Method("ntrk", ntrk, "kappa", G(0.25, 4.0), budget=25, limit=(0.0, 8.0),
                 limit_notes=("(the base sampler)", "(rho = 1)")),
        P.Method("ntrk (W off)", ntrk, "kappa", G(0.25, 4.0), budget=25, limit=(0.0, 8.0),
                 limit_notes=("(the base sampler)", "(rho = 1)"), fixed={"w_off": True}),
        P.Method("svdd-20", partial(M.svdd, **D), "temp", G(0.125, 8.0), budget=481, limit=(0.0, math.inf),
                 limit_notes=temp_lim, fixed={"num_candidates": 20}),
        P.Method("smc-20", M.smc, "temp", G(0.125, 8.0), budget=500, limit=(0.0, math.inf), limit_notes=temp_lim,
                 fixed={"num_particles": 20}),
        P.Method("best-of-N", M.best_of_n, "num_samples", [1, 2, 3, 4, 6, 8, 11, 16], budget="25 N",
                 limit=(1, 64), limit_notes=("(the base sampler)", "(a cost cap: 64 x the base sampler's NFEs)"),
                 integer=True),
        P.Method("best-of-20", M.best_of_n, budget=500, fixed={"num_samples": 20}),
    ]
    return [m for m in ms if m.name not in ("svdd-20", "smc-20", "best-of-20")] if quick else ms


def levels(w: P.World) -> list:
    cfg = w.config
    return [
        P.Level("best", "ed_pstar", "min", "each method at its own minimum of the energy distance to exact p* "
                "(knob chosen on the tuning seeds): how well it can approximate p* at all"),
        P.Level("r*", "target", cfg["r_star"], "mean target reward of 5000 exact p* samples: every method tuned "
                "to deliver the target's own reward"),
        P.Level("p* vs p_0", "ed_p0", cfg["ed_p0_star"], "energy distance between 5000 exact p* and 5000 exact "
                "p_0 samples: every method moved as far from p_0 as p* is"),
    ]


def comparisons(quick: bool = False) -> list:
    C = P.Comparison
    allb = ("dps", "best-of-N") if quick else ("dps", "svdd-20", "smc-20", "best-of-N", "best-of-20")
    knobbed = ("dps", "best-of-N") if quick else ("dps", "svdd-20", "smc-20", "best-of-N")
    return [
        C("closest to p*: NTRK vs DPS", "best", "ed_pstar", "ntrk", "dps"),
        C("closest to p*: NTRK vs best baseline", "best", "ed_pstar", "ntrk", allb),
        C("ED to p* at r*: NTRK vs DPS", "r*", "ed_pstar", "ntrk", "dps"),
        C("ED to p* at r*: NTRK vs best baseline", "r*", "ed_pstar", "ntrk", knobbed),
        C("held-out at r*: NTRK vs best baseline", "r*", "heldout", "ntrk", knobbed),
        C("target at p*'s distance to p_0: NTRK vs DPS", "p* vs p_0", "target", "ntrk", "dps"),
        C("target at p*'s distance to p_0: NTRK vs best baseline", "p* vs p_0", "target", "ntrk", knobbed),
        C("degeneracy check (one tile): W on vs off, closest to p*", "best", "ed_pstar", "ntrk", "ntrk (W off)"),
        C("degeneracy check (one tile): W on vs off, ED at r*", "r*", "ed_pstar", "ntrk", "ntrk (W off)"),
    ]


COLORS = {"base": "k", "dps": "tab:orange", "ntrk": "tab:red", "ntrk (W off)": "tab:pink", "svdd-20": "tab:green",
          "smc-20": "tab:purple", "best-of-N": "tab:blue", "best-of-20": "tab:cyan"}
PANELS = [{"x": "target", "y": "ed_pstar", "yscale": "log", "title": "distance to exact p* vs target reward"},
          {"x": "ed_p0", "y": "target", "title": "target reward vs distance to p_0"},
          {"x": "target", "y": "heldout", "title": "held-out vs target reward"},
          {"x": "wall_s", "y": "target", "xscale": "log", "title": "target reward vs wall time per sample"}]
POINT_KEYS = ["target", "heldout", "heldout_acc", "logp0", "ed_pstar", "ed_p0", "diversity", "eta_energy", "cos_wg"]


def summary(data: dict) -> str:
    """The digits results' lead paragraph, from the json: what W can see here, and the verdicts."""
    tiles = data["world"]["config"]["w_tiles"]
    cos = [v for nm in ("ntrk",) for p in data["fronts"]["eval"][nm]["values"] for v in p.get("cos_wg_min", [])]
    lines = [f"**What W can see here: nothing of the arrangement.** A 1x8x8 sample with 64-entry tiles gives W "
             f"{tiles['pixel'][0]} tile in the pixel domain and {tiles['dct'][0]} in the DCT domain; the sets it "
             f"projects onto do not change when the entries inside a tile are permuted, so W cannot see spatial "
             f"correlation and acts like norm matching. Measured along NTRK's trajectories: min cos(W(g), g) = "
             f"{min(cos):.5f}. The W on / W off rows below are therefore a *degeneracy check* (they should be "
             f"equivalent), not a test of W; the learned-versus-exact world at 32x32 is where W can act.", ""]
    lines += [P.verdict_line(data, c["name"]) for c in data["comparisons"]]
    return "\n".join(lines) + "\n"


def run_benchmark(out_dir, quick: bool = False, seeds: int | None = None) -> str:
    """The protocol on the digits world; writes ``digits.{json,md,png}`` (``digits_quick.*`` with ``quick``)."""
    size = dict(SIZES["quick" if quick else "full"])
    if seeds is not None:
        size["eval_seeds"] = int(seeds)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    w = world()
    data = P.run_study(w, methods(quick), levels(w), comparisons(quick), n=size["n"], tuning_seeds=size["tuning_seeds"],
                       eval_seeds=range(size["eval_seeds"]), eval_grid="needed", progress=True,
                       config={"task": "digits", "quick": quick, "sizes": size, "torch_threads": 1,
                               "command": "python -m ntrk_minimal.bench --task digits" + (" --quick" if quick else "")})
    data["wall_time_s"] = time.perf_counter() - t0
    stem = Path(out_dir) / ("digits_quick" if quick else "digits")
    stem.parent.mkdir(parents=True, exist_ok=True)
    P.write_json(data, stem.with_suffix(".json"))
    data = P.load_json(stem.with_suffix(".json"))
    title = ("QUICK RUN: " if quick else "") + "Digits mixture (64-D), exact p* = p_0 p(3|x): the protocol"
    text = f"# {title}\n\n" + summary(data) + "\n" + P.report(data, "Full report", POINT_KEYS)
    stem.with_suffix(".md").write_text(text)
    import matplotlib.pyplot as plt
    fig = P.fronts_figure(data, PANELS, colors=COLORS, ncols=2, linestyles={"ntrk (W off)": (0, (4, 2))})
    fig.savefig(stem.with_suffix(".png"))
    plt.close(fig)
    return text
