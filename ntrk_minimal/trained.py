"""The trained image model: a small diffusers UNet on 16x16 digits, its scorers, and the headline table.

Everything here runs offline on a CPU:

* data      scikit-learn's 8x8 digits (shipped with the package), upsampled to 16x16, scaled to
            [-1, 1]; a fixed 80/20 split (``load_digits16("train" | "test")``).
* model     ``diffusers.UNet2DModel`` trained by ``scripts/train_unet.py``; weights in
            ``data/unet_digits/`` (``save_pretrained`` format), sha256-checked, loaded with
            ``UNet2DModel.from_pretrained``; wrapped as the model protocol ``eps_hat(x_t, t)``.
* scorers   three networks trained by ``scripts/train_scorers.py`` on the same train split:
            a CNN (the *target* reward, ``log p(c | x)``), an MLP (the *held-out* reward, same class,
            different architecture, different seed) and a second CNN whose penultimate layer gives
            the features of the Fréchet distance (fidelity). Plus an analytic reward (brightness).
* benchmark ``run_benchmark`` (``python -m ntrk_minimal.bench --task trained``).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import checksums
from .checksums import sha256
from .digits import split_indices
from .kernels import default_whiten, norm_match
from .metrics import eta_energy, frechet_distance, mean_pairwise_distance
from .sampling import best_of_n, grouped_starts, rho_from_kappa, sample, sigma2_scaled, smc
from .schedules import Schedule

__all__ = ["DATA_DIR", "UNET_DIR", "SCORER_FILE", "load_digits16", "unet_config", "UNetDenoiser",
           "load_unet", "load_scheduler", "load_schedule", "ClassifierCNN", "ClassifierMLP", "load_scorers",
           "ClassLogProb", "ClassLogOdds", "Brightness", "Scorers", "frechet_distance", "sha256", "verify",
           "TrainedProblem", "trained_problem", "METHODS", "run_method", "evaluate",
           "run_benchmark"]

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
UNET_DIR = DATA_DIR / "unet_digits"
SCORER_FILE = DATA_DIR / "digits16_scorers.pt"
IMAGE_SHAPE = (1, 16, 16)
# sha256 of the files we load, recorded when they were trained (scripts/train_*.py print them).
SHA256 = {
    "unet/diffusion_pytorch_model.safetensors": "30e4dc9495f1c009b0eafd68eda1b197c60b8783bf8047df969c3bd3349ca2aa",
    "digits16_scorers.pt": "8a5fe1f9f40ef367342316e76e6a9c1c1cd96350b1bcdb4b0d91787689875c4b",
}


# ---- data --------------------------------------------------------------------------------------
def load_digits16(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits, bilinearly upsampled to 16x16 and scaled to [-1, 1].

    Returns ``(x, y)``: x (n, 1, 16, 16) float32, y (n,) long. ``split``: ``"train"`` (80%, 1438
    images), ``"test"`` (the other 359, never seen by any network: the fidelity reference) or ``"all"``.
    The split is ``digits.split_indices`` (a fixed permutation, seed 0), the same as the 64-D benchmark's.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0          # (n, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False) * 2 - 1
    y = torch.tensor(d.target, dtype=torch.long)
    idx = split_indices(split, len(x))
    return x[idx].contiguous(), y[idx].contiguous()


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Light augmentation: translate each image by up to ``max_shift`` pixels (background -1 fills)."""
    B, _, H, W = x.shape
    p = max_shift
    pad = F.pad(x, (p, p, p, p), value=-1.0)
    dx = torch.randint(0, 2 * p + 1, (B,), generator=generator)
    dy = torch.randint(0, 2 * p + 1, (B,), generator=generator)
    rows = (dy[:, None] + torch.arange(H)[None])[:, :, None].expand(B, H, W)
    cols = (dx[:, None] + torch.arange(W)[None])[:, None, :].expand(B, H, W)
    return pad[torch.arange(B)[:, None, None], 0, rows, cols][:, None]


# ---- checksums ---------------------------------------------------------------------------------
def verify(path, expected: str | None) -> Path:
    """Raise a clear error unless ``path`` exists and its sha256 equals ``expected``."""
    return checksums.verify(path, expected, made_by="the script in scripts/ that trains it "
                            "(train_unet.py / train_scorers.py)", recorded_in="ntrk_minimal/trained.py SHA256")


# ---- the UNet ----------------------------------------------------------------------------------
def unet_config() -> dict:
    """A small ``UNet2DModel`` for 1x16x16: 16 -> 8 -> 4, no attention (~0.64M parameters)."""
    return dict(sample_size=16, in_channels=1, out_channels=1, layers_per_block=1,
                block_out_channels=(16, 32, 64), norm_num_groups=8,
                down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"))


def scheduler_config() -> dict:
    """The training noise schedule: 1000-step linear VP (DDPM), epsilon prediction."""
    return dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                clip_sample=False, prediction_type="epsilon")


class UNetDenoiser:
    """The model protocol around a ``UNet2DModel``: ``eps_hat = model(x_t, t)``.

    ``x_t``: (B, 1, 16, 16); ``t``: a training timestep (int or 0-d tensor, or (B,)). Gradients flow
    to ``x_t`` (the guided kernels need them), never to the frozen weights.
    """

    def __init__(self, unet):
        self.unet = unet.eval().requires_grad_(False)

    def __call__(self, x_t: torch.Tensor, t) -> torch.Tensor:
        if x_t.ndim != 4 or tuple(x_t.shape[1:]) != tuple(IMAGE_SHAPE):
            raise ValueError(f"x_t must have shape (B, 1, 16, 16), got {tuple(x_t.shape)}")
        t = torch.as_tensor(t, device=x_t.device).long()
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        dtype = next(self.unet.parameters()).dtype
        return self.unet(x_t.to(dtype), t).sample.to(x_t.dtype)


def load_unet(path: Path | str = UNET_DIR, check: bool = True) -> UNetDenoiser:
    """``UNet2DModel.from_pretrained(path / "unet")`` after a sha256 check of its weight file."""
    from diffusers import UNet2DModel

    path = Path(path)
    if check:
        name = "unet/diffusion_pytorch_model.safetensors"
        verify(path / name, SHA256[name])
    return UNetDenoiser(UNet2DModel.from_pretrained(path / "unet", low_cpu_mem_usage=False))


def load_scheduler(path: Path | str = UNET_DIR):
    """The DDIM scheduler built from the saved DDPM training config (same alpha-bar)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_pretrained(Path(path) / "scheduler")


def load_schedule(num_steps: int = 25, eta: float = 1.0, path: Path | str = UNET_DIR):
    """``Schedule.from_scheduler(scheduler, num_steps, eta)`` for the trained model."""
    return Schedule.from_scheduler(load_scheduler(path), num_steps, eta=eta)


# ---- scorers -----------------------------------------------------------------------------------
class ClassifierCNN(nn.Module):
    """A small CNN on (B, 1, 16, 16): 16 -> 8 -> 4 -> pooled ``feat_dim`` features -> 10 logits.

    SiLU activations keep the reward smooth, so its gradient is informative.
    """

    def __init__(self, width: int = 16, feat_dim: int = 32):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.SiLU(),
            nn.Flatten(), nn.Linear(4 * w * 16, feat_dim), nn.SiLU())
        self.head = nn.Linear(feat_dim, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ClassifierMLP(nn.Module):
    """A plain MLP on the 256 flattened pixels: a different architecture for the held-out reward."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(256, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden // 2), nn.SiLU(), nn.Linear(hidden // 2, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


SCORER_ARCH = {"target": (ClassifierCNN, dict(width=16, feat_dim=32)),
               "heldout": (ClassifierMLP, dict(hidden=128)),
               "features": (ClassifierCNN, dict(width=8, feat_dim=16))}


class ClassLogProb:
    """Reward ``r(x) = log p(c | x)`` of a classifier (differentiable; (B, 1, 16, 16) -> (B,)).

    Bounded above by 0: once the classifier is sure, there is nothing left to gain (or to hack).
    """

    def __init__(self, net: nn.Module, target_class: int):
        if not (isinstance(target_class, int) and 0 <= target_class <= 9):
            raise ValueError(f"target_class must be an int in 0..9, got {target_class!r}")
        self.net, self.target_class = net.eval().requires_grad_(False), target_class

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(IMAGE_SHAPE):
            raise ValueError(f"x must have shape (B, 1, 16, 16), got {tuple(x.shape)}")
        return self.net(x.float())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.logits(x), -1)[:, self.target_class].to(x.dtype)


class ClassLogOdds(ClassLogProb):
    """Reward ``r(x) = log p(c | x) - log(1 - p(c | x)) = z_c - logsumexp_{k != c} z_k``.

    Unbounded: a sampler can keep buying it, by drawing clearer c's or by fooling the network.
    The benchmark's target and held-out rewards (same class, two different networks).
    """

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        z = self.logits(x)
        c = self.target_class
        others = torch.cat([z[:, :c], z[:, c + 1:]], 1)
        return (z[:, c] - torch.logsumexp(others, 1)).to(x.dtype)


class Brightness:
    """The analytic reward: mean pixel value ``r(x) = mean(x)`` (in [-1, 1] on the data)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 2:
            raise ValueError(f"x must have shape (B, ...), got {tuple(x.shape)}")
        return x.reshape(x.shape[0], -1).mean(1)


@dataclass
class Scorers:
    """The three trained networks (frozen) and their test accuracies."""

    target: nn.Module
    heldout: nn.Module
    features: nn.Module
    accuracy: dict

    def feats(self, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
        """Penultimate-layer features (B, 16) of the fidelity network, float64."""
        with torch.no_grad():
            return torch.cat([self.features.features(x[i:i + batch].float())
                              for i in range(0, len(x), batch)]).double()


def load_scorers(path: Path | str = SCORER_FILE, check: bool = True) -> Scorers:
    """The target CNN, held-out MLP and feature CNN from one ``torch.save`` file (sha256-checked)."""
    path = Path(path)
    if check:
        verify(path, SHA256["digits16_scorers.pt"])
    elif not path.is_file():
        raise FileNotFoundError(f"scorer file {path} is missing: run scripts/train_scorers.py")
    st = torch.load(path, map_location="cpu", weights_only=True)
    nets = {}
    for k, (cls, kw) in SCORER_ARCH.items():
        net = cls(**kw)
        net.load_state_dict(st[k])
        nets[k] = net.eval().requires_grad_(False)
    return Scorers(**nets, accuracy={k: float(v) for k, v in st["accuracy"].items()})


# frechet_distance lives in ntrk_minimal.metrics (with KID and FD-infinity); re-exported here.


# ---- the benchmark problem -----------------------------------------------------------------------
@dataclass
class TrainedProblem:
    """Model, schedule, the three rewards and the fidelity reference of the trained-model benchmark.

    ``reward`` (target) and ``heldout`` are the log-odds ``log p(c|x) / (1 - p(c|x))`` of the CNN
    and of the MLP for the same class ``c`` (unbounded, so over-optimisation can show). Fidelity is
    the Fréchet distance of feature-net features to the *real test images of class c*
    (``ref_feats``): the aligned target is "a real-looking c", so the distance to all classes
    (``all_feats``, also reported) would penalise alignment itself.
    """

    model: UNetDenoiser
    schedule: object
    scorers: Scorers
    target_class: int
    reward: ClassLogProb
    heldout: ClassLogProb
    ref_feats: torch.Tensor
    all_feats: torch.Tensor

    @property
    def dim(self) -> int:
        return int(np.prod(IMAGE_SHAPE))


def trained_problem(target_class: int = 3, num_steps: int = 25, check: bool = True,
                    unet_dir: Path | str = UNET_DIR) -> TrainedProblem:
    """Load everything (sha256-checked); the target reward is the CNN's log-odds of ``target_class``."""
    model = load_unet(unet_dir, check=check)
    schedule = load_schedule(num_steps, eta=1.0, path=unet_dir)
    sc = load_scorers(check=check)
    x_test, y_test = load_digits16("test")
    return TrainedProblem(model, schedule, sc, target_class, ClassLogOdds(sc.target, target_class),
                          ClassLogOdds(sc.heldout, target_class), sc.feats(x_test[y_test == target_class]),
                          sc.feats(x_test))


def _kappa_rho(pb, kappa):
    return rho_from_kappa(kappa, pb.dim, "constant")


def _base(pb, x_T, g, record=False):
    return sample(pb.model, pb.schedule, x_T, "base", g, record=record)


def _dps(pb, x_T, g, scale=1.0, record=False):
    return sample(pb.model, pb.schedule, x_T, "dps", g, pb.reward, record=record,
                  lambda_t=sigma2_scaled(scale))


def _ntrk(pb, x_T, g, kappa=1.0, whiten=None, record=False):
    return sample(pb.model, pb.schedule, x_T, "ntrk", g, pb.reward, record=record,
                  rho_t=_kappa_rho(pb, kappa), whiten=whiten)


def _ntrk_off(pb, x_T, g, kappa=1.0, record=False):
    return _ntrk(pb, x_T, g, kappa, whiten=norm_match, record=record)


def _bon(n):
    def f(pb, x_T, g, record=False):
        return best_of_n(pb.model, pb.schedule, grouped_starts(x_T, n, g), n, pb.reward, "base", g)
    return f


def _ntrk_bon(n):
    def f(pb, x_T, g, kappa=1.0, record=False):
        return best_of_n(pb.model, pb.schedule, grouped_starts(x_T, n, g), n, pb.reward, "ntrk", g,
                         rho_t=_kappa_rho(pb, kappa))
    return f


def _svdd(k):
    def f(pb, x_T, g, temp=None, record=False):
        mode = "argmax" if temp is None else "soft"
        return sample(pb.model, pb.schedule, x_T, "svdd", g, pb.reward, record=record,
                      num_candidates=k, mode=mode, beta=temp or 1.0)
    return f


def _smc(p):
    def f(pb, x_T, g, temp=1.0, record=False):
        return smc(pb.model, pb.schedule, grouped_starts(x_T, p, g), p, pb.reward, beta=temp, generator=g)
    return f


# Strength grids (the fronts). DPS: lambda_t = scale * sigma_t^2. NTRK: rho_t = kappa^2 / N, a step
# of sigma_t * kappa along W(g). SVDD: argmax (temp None) or soft with temperature. SMC: temperature.
DPS_GRID = [{"scale": s} for s in (0.1, 0.2, 0.3, 0.45, 0.6)]
KAPPA_GRID = [{"kappa": k} for k in (0.5, 1.0, 1.5, 2.0, 3.0)]
SVDD_GRID = [{"temp": t} for t in (0.3, 1.0, 3.0)] + [{"temp": None}]
SMC_GRID = [{"temp": t} for t in (0.3, 1.0, 3.0, 10.0)]
BON_KAPPA_GRID = [{"kappa": k} for k in (0.25, 0.5, 1.0, 1.5)]

# name -> (budget, sampler, grid or the name whose tuned knob it reuses); W = default whitening.
METHODS = {
    "base":             (25, _base, [{}]),
    "dps":              (25, _dps, DPS_GRID),
    "ntrk (W)":         (25, _ntrk, KAPPA_GRID),
    "ntrk (W off)":     (25, _ntrk_off, KAPPA_GRID),
    "best-of-4":        (100, _bon(4), [{}]),
    "svdd-4":           (100, _svdd(4), SVDD_GRID),
    "smc-4":            (100, _smc(4), SMC_GRID),
    "ntrk+bon-4":       (100, _ntrk_bon(4), BON_KAPPA_GRID),
    "best-of-20":       (500, _bon(20), [{}]),
    "svdd-20":          (500, _svdd(20), SVDD_GRID),
    "smc-20":           (500, _smc(20), SMC_GRID),
    "ntrk+bon-20":      (500, _ntrk_bon(20), BON_KAPPA_GRID),
}
TRACED = ("base", "dps", "ntrk (W)", "ntrk (W off)")
BASELINES = ("best-of-20", "svdd-20", "smc-20", "dps")
TUNING_SEEDS = (1000, 1001)


def run_method(pb: TrainedProblem, name: str, seed: int, n: int, knob: dict, record: bool = False):
    """``n`` samples of one method for one seed; x_T and all noise from ``Generator().manual_seed(seed)``.

    Returns ``(SampleResult, wall seconds)``.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {list(METHODS)}")
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn((n,) + IMAGE_SHAPE, generator=g)
    t0 = time.perf_counter()
    res = METHODS[name][1](pb, x_T, g, record=record, **knob)
    return res, time.perf_counter() - t0


def evaluate(pb: TrainedProblem, x0: torch.Tensor) -> dict:
    """Target and held-out reward (means), held-out share of class c, fidelity (FD to real c's,
    FD to all real test digits), diversity (mean pairwise feature distance)."""
    with torch.no_grad():
        r, h = pb.reward(x0), pb.heldout(x0)
        share = (pb.scorers.heldout(x0).argmax(1) == pb.target_class).double().mean()
    f = pb.scorers.feats(x0)
    return {"target": float(r.mean()), "heldout": float(h.mean()), "heldout_share": float(share),
            "fd": frechet_distance(f, pb.ref_feats), "fd_all": frechet_distance(f, pb.all_feats),
            "diversity": mean_pairwise_distance(f)}


# ---- tuning, evaluation, the headline table --------------------------------------------------------
def _grid(name: str, quick: bool):
    grid = METHODS[name][2]
    if isinstance(grid, str) or not quick or len(grid) <= 2:
        return grid
    return [grid[1], grid[-2]]


def select_knob(front: list[dict], level: float) -> dict:
    """The knob of highest target reward whose (tuning) FD is at most ``level``; if none qualifies,
    the knob of lowest FD. ``front``: dicts with ``knob``, ``target``, ``fd``."""
    ok = [p for p in front if p["fd"] <= level]
    best = max(ok, key=lambda p: p["target"]) if ok else min(front, key=lambda p: p["fd"])
    return best["knob"]


def paired_diff(a, b) -> tuple[float, float]:
    """Mean and 95% half-width of the per-seed difference ``a - b`` (same seeds, same x_T)."""
    from .bench import mean_ci

    return mean_ci(np.asarray(a) - np.asarray(b))


def verdict(a, b, higher_is_better: bool = True) -> str:
    """"wins" / "loses" / "ties" for ``a`` against ``b`` by the 95% CI of the paired difference
    ``a - b`` (printed as is, whatever the direction of "better")."""
    m, h = paired_diff(a, b)
    better = m if higher_is_better else -m
    diff = f"paired diff {m:+.3f} ± {h:.3f}" + ("" if higher_is_better else ", lower is better")
    if better - h > 0:
        return f"wins ({diff})"
    if better + h < 0:
        return f"loses ({diff})"
    return f"ties within the 95% CI ({diff})"


def run_benchmark(out_dir, quick: bool = False, seeds: int = 5, target_class: int = 3) -> str:
    """Tune every method on ``TUNING_SEEDS``, pick each knob at the fidelity level of best-of-20,
    evaluate on seeds ``0..seeds-1`` and write ``headline.{md,json,png}`` (``headline_quick.*`` with
    ``quick``) into ``out_dir``. Returns the table text."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    pb = trained_problem(target_class)
    n, n_tune = (6, 6) if quick else (32, 32)
    seeds = min(seeds, 3) if quick else seeds
    tune_seeds = TUNING_SEEDS[:1] if quick else TUNING_SEEDS
    names = list(METHODS)
    n_jobs = sum(len(_grid(k, quick)) for k in names if not isinstance(METHODS[k][2], str)) * len(tune_seeds)
    bar = tqdm(total=n_jobs + len(names) * seeds, desc="trained-model benchmark")

    # 1. fronts on the tuning seeds
    fronts = {}
    for name in names:
        grid = _grid(name, quick)
        if isinstance(grid, str):
            continue
        pts = []
        for knob in grid:
            ms = []
            for s in tune_seeds:
                res, wall = run_method(pb, name, s, n_tune, knob)
                ms.append(evaluate(pb, res.x0))
                bar.update()
            pts.append({"knob": knob, **{k: float(np.mean([m[k] for m in ms])) for k in ms[0]}})
        fronts[name] = pts
    level = fronts["best-of-20"][0]["fd"]
    tuned = {}
    for name in names:
        grid = METHODS[name][2]
        tuned[name] = dict(tuned[grid]) if isinstance(grid, str) else select_knob(fronts[name], level)

    # 2. evaluation seeds
    raw = {}
    for name in names:
        per_seed = []
        for s in range(seeds):
            res, wall = run_method(pb, name, s, n, tuned[name], record=name in TRACED)
            m = evaluate(pb, res.x0)
            m["nfe"], m["wall_s"] = res.nfe, wall
            if res.trace:
                m["eta_energy"] = float(eta_energy(res.eta[:-1]).mean())
            per_seed.append(m)
            bar.update()
        raw[name] = per_seed
    bar.close()

    # 3. the floor (real training-split c's against the test c's), json, table, figure
    x_tr, y_tr = load_digits16("train")
    floor = evaluate(pb, x_tr[y_tr == target_class][:n])
    data = {"quick": quick, "n": n, "n_tune": n_tune, "floor": floor, "seeds": seeds,
            "target_class": target_class, "level": level, "tuning_seeds": list(tune_seeds),
            "whiten": f"{default_whiten().__module__}.{default_whiten().__name__}", "tuned": tuned,
            "fronts": fronts, "raw": raw, "budgets": {k: METHODS[k][0] for k in names},
            "wall_total_s": time.perf_counter() - t_start}
    stem = "headline_quick" if quick else "headline"
    (out_dir / f"{stem}.json").write_text(json.dumps(data, indent=1))
    table = headline_table(data)
    (out_dir / f"{stem}.md").write_text(table + "\n")
    fronts_figure(data, out_dir / f"{stem}.png")
    return table


def headline_table(data: dict) -> str:
    """The headline table, the question "does NTRK@25 beat the best baseline@500?" and its answer,
    all computed from the benchmark's json (``results/headline.json``)."""
    from .bench import fmt_ci, markdown_table

    raw, tuned, fronts, level = data["raw"], data["tuned"], data["fronts"], data["level"]
    n, seeds, c, floor = data["n"], data["seeds"], data["target_class"], data["floor"]
    names = list(raw)
    rows = []
    for name in names:
        ps = raw[name]
        col = lambda k, d=3: fmt_ci([p[k] for p in ps], d) if k in ps[0] else "–"
        knob = ", ".join(f"{k}={v}" for k, v in tuned[name].items()) or "–"
        if name in fronts and len(fronts[name]) > 1 and not any(p["fd"] <= level for p in fronts[name]):
            knob += " *"
        rows.append([name, f"{ps[0]['nfe']:.0f}", knob, col("target"), col("heldout"),
                     col("heldout_share", 2), col("fd", 2), col("fd_all", 2), col("diversity", 2),
                     col("eta_energy"), col("wall_s", 2)])
    header = ["method", "NFE", "knob", "target log-odds CNN", "held-out log-odds MLP",
              "held-out share c", "FD to real c (fidelity)", "FD to all digits", "diversity",
              "E||eta||^2/d", "wall s"]
    vals = lambda name, k: [p[k] for p in raw[name]]
    at500 = [b for b in names if data["budgets"][b] == 500 and not b.startswith("ntrk")]
    best = max(at500, key=lambda b: np.mean(vals(b, "target")))
    ntrk = "ntrk (W)"
    lines = [
        f"**Does NTRK@25 beat the best baseline@500?** (best baseline at 500 NFEs by target reward: "
        f"{best}; paired over the {seeds} evaluation seeds)",
        f"- target reward: NTRK@25 {fmt_ci(vals(ntrk, 'target'))} vs {best} "
        f"{fmt_ci(vals(best, 'target'))}: NTRK@25 {verdict(vals(ntrk, 'target'), vals(best, 'target'))}",
        f"- held-out reward: NTRK@25 {fmt_ci(vals(ntrk, 'heldout'))} vs {best} "
        f"{fmt_ci(vals(best, 'heldout'))}: NTRK@25 {verdict(vals(ntrk, 'heldout'), vals(best, 'heldout'))}",
        f"- fidelity (FD, lower is better): NTRK@25 {fmt_ci(vals(ntrk, 'fd'), 2)} vs {best} "
        f"{fmt_ci(vals(best, 'fd'), 2)}: NTRK@25 {verdict(vals(ntrk, 'fd'), vals(best, 'fd'), False)}",
        f"- wall time: NTRK@25 {fmt_ci(vals(ntrk, 'wall_s'), 2)} s vs {best} {fmt_ci(vals(best, 'wall_s'), 2)} s",
        f"- W on vs off (each at its own tuned knob, 25 NFEs): target: NTRK (W) "
        f"{verdict(vals(ntrk, 'target'), vals('ntrk (W off)', 'target'))}; held-out: "
        f"{verdict(vals(ntrk, 'heldout'), vals('ntrk (W off)', 'heldout'))}",
        f"- DPS@25 vs NTRK@25 (target): DPS {verdict(vals('dps', 'target'), vals(ntrk, 'target'))}",
    ]
    answer = verdict(vals(ntrk, "target"), vals(best, "target")).split(" (")[0]
    lines.append(f"- answer: {'YES' if answer == 'wins' else 'NO'} — on target reward NTRK@25 "
                 f"{answer} against {best}@500.")
    title = (("QUICK SMOKE TEST (tiny samples, not the reported numbers). " if data["quick"] else "")
             + f"Trained UNet (16x16 digits), target = log-odds of class {c} under the CNN, "
             f"held-out = its log-odds under the MLP; {n} samples x {seeds} seeds, mean ± 95% CI; "
             f"{n} real training-split {c}s score: target {floor['target']:.3f}, held-out "
             f"{floor['heldout']:.3f}, FD {floor['fd']:.1f}, diversity {floor['diversity']:.1f} (the floor "
             f"of FD at this sample size). Knobs tuned with {data['n_tune']} samples on seed(s) "
             f"{data['tuning_seeds']}, each the highest-target setting with FD to real "
             f"{c}s <= {level:.2f} (the FD of best-of-20 on the tuning seeds: the matched "
             f"fidelity level); * = no setting of the grid reached that level, the lowest-FD one is used "
             f"(each method at its most faithful setting). NTRK (W) uses W = {data['whiten']}. Total wall "
             f"{data['wall_total_s']:.0f} s.")
    return title + "\n\n" + markdown_table(header, rows) + "\n\n" + "\n".join(lines)


COLORS = {"base": "k", "dps": "tab:orange", "ntrk (W)": "tab:red", "ntrk (W off)": "tab:pink",
          "best-of-4": "tab:blue", "svdd-4": "tab:green", "smc-4": "tab:purple", "ntrk+bon-4": "tab:brown",
          "best-of-20": "tab:blue", "svdd-20": "tab:green", "smc-20": "tab:purple",
          "ntrk+bon-20": "tab:brown"}


def fronts_figure(data: dict, path=None, budgets=(25, 500)):
    """Fronts (tuning seed, thin lines) and evaluated knobs (mean ± 95% CI, large markers):
    target vs held-out reward, target vs FD, and target reward vs NFE. Returns the figure."""
    import matplotlib.pyplot as plt

    from .bench import mean_ci
    from .plotting import DPI, FONT_SMALL

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), dpi=DPI)
    for name, budget in data["budgets"].items():
        if budget not in budgets and name != "base":
            continue
        c, ls = COLORS[name], "-" if budget == 25 else "--"
        fr = [p for p in data["fronts"].get(name, []) if p["fd"] <= 10 * data["level"]]   # off-scale dropped
        ev = {k: mean_ci([p[k] for p in data["raw"][name]]) for k in ("target", "heldout", "fd")}
        for ax, key in zip(axes[:2], ("heldout", "fd")):
            if fr and len(fr) > 1:
                ax.plot([p["target"] for p in fr], [p[key] for p in fr], ls, color=c, lw=0.8, marker=".",
                        alpha=0.6)
            ax.errorbar(ev["target"][0], ev[key][0], xerr=ev["target"][1], yerr=ev[key][1], color=c,
                        marker="o" if budget == 25 else "s", ms=6, capsize=2, label=f"{name} ({budget})")
    axes[1].axhline(data["level"], color="grey", lw=0.8, ls=":")
    axes[1].text(axes[1].get_xlim()[0], data["level"], " matched FD level", va="bottom", fontsize=FONT_SMALL,
                 color="grey")
    axes[0].set(xlabel="target reward (CNN)", ylabel="held-out reward (MLP)", title="reward hacking check")
    axes[1].set(xlabel="target reward (CNN)", ylabel="FD to real c (lower = better)", yscale="log",
                title="fidelity front")
    for name, budget in data["budgets"].items():
        if name == "base" or name.startswith("ntrk (W off)"):
            continue
        fam = name.split("-")[0]
        m, h = mean_ci([p["target"] for p in data["raw"][name]])
        axes[2].errorbar(budget, m, yerr=h, color=COLORS[name], marker="o", capsize=2,
                         label=name if budget == 25 else None)
    for fam in ("best-of", "svdd", "smc", "ntrk+bon"):
        pts = sorted((b, np.mean([p["target"] for p in data["raw"][k]])) for k, b in data["budgets"].items()
                     if k.startswith(fam))
        axes[2].plot(*zip(*pts), color=COLORS[f"{fam}-20"], lw=0.8, label=fam)
    axes[2].axhline(np.mean([p["target"] for p in data["raw"]["base"]]), color="k", lw=0.8, ls=":", label="base")
    axes[2].set(xscale="log", xlabel="NFE per sample", ylabel="target reward", title="reward vs NFE")
    axes[2].set_xticks([25, 100, 500], ["25", "100", "500"])
    axes[2].xaxis.set_minor_formatter(plt.NullFormatter())
    axes[2].legend(fontsize=FONT_SMALL)
    axes[1].legend(fontsize=FONT_SMALL, loc="best", ncol=2)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig
