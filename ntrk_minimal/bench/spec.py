"""What a world and a method are (``docs/ARCHITECTURE.md``; the protocol: ``ntrk_minimal.bench``).

``World`` describes a problem once (start noise, model, evaluator, metrics, stated margins);
``Method`` a sampler with at most one strength knob over a geometric grid; ``CostCounter`` wraps a
world's model and counts what a run costs (forward rows, backward rows, model seconds).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

__all__ = ["Metric", "World", "Method", "CostCounter", "geometric_grid", "COST_KEYS", "TIMING_KEYS"]

#: per-sample cost fields of every front point (``run_point``)
COST_KEYS = ("nfe", "backward", "wall_s", "model_s")
#: fields that measure time: machine-dependent, left out of "same seeds, same json" (``strip_timing``)
TIMING_KEYS = ("wall_s", "model_s", "wall_time_s", "wall_per_nfe", "wall_per_nfe_vs_ref")


# ---- what a world and a method are ------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """How to read one metric key: ``label``, direction (None: a diagnostic, no verdicts), table digits."""

    label: str
    higher_is_better: bool | None
    digits: int = 3


@dataclass
class World:
    """A problem, described once; the protocol calls only what is listed here.

    Attributes:
        name, sample_shape: shown in the json; ``x_T`` has shape ``(n, *sample_shape)``.
        model: ``eps_hat(x_t, t)``. Each run sees ``world.model`` wrapped in a ``CostCounter``
            (``dataclasses.replace``), so methods must call ``world.model``, never a captured copy.
        evaluate: ``(x0, seed) -> {key: float}``: target reward, fidelity metric(s), held-out reward
            where there is one, exact quantities where exact. ``seed`` (the evaluation seed) lets a
            world draw a reference set per seed, the same for every method (paired).
        metrics: ``{key: Metric}`` for every key that tables/verdicts use.
        fidelity, target: the keys of the fidelity axis and of the target reward.
        margins, margin_notes: TOST margins per key, stated in advance, each with a one-line reason.
        floor: ``(n, seed) -> {key: float}``: real-vs-real (or exact-vs-exact) values at the same n.
        heldout: key of a held-out reward, if any. context: world-specific problem object.
        dtype, device: of ``x_T``; the generator lives on ``device``. config: stored in the json.
        sync: called before every clock reading on an asynchronous device (e.g.
            ``torch.cuda.synchronize``), so wall and model seconds are real; None on the CPU.
    """

    name: str
    sample_shape: tuple
    model: Callable
    evaluate: Callable[[torch.Tensor, int], dict]
    metrics: dict
    fidelity: str
    target: str
    margins: dict
    margin_notes: dict
    floor: Callable[[int, int], dict] | None = None
    heldout: str | None = None
    context: Any = None
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    config: dict = field(default_factory=dict)
    sync: Callable | None = None

    def __post_init__(self):
        self.sample_shape = tuple(int(s) for s in self.sample_shape)
        for role in ("fidelity", "target", "heldout"):
            key = getattr(self, role)
            if key is not None and key not in self.metrics:
                raise ValueError(f"World.{role}={key!r} is not a key of World.metrics {sorted(self.metrics)}")
        for key, m in self.margins.items():
            if key not in self.metrics:
                raise ValueError(f"margin for unknown metric {key!r}; metrics are {sorted(self.metrics)}")
            if not (isinstance(m, (int, float)) and m > 0 and math.isfinite(m)):
                raise ValueError(f"margins[{key!r}] must be a finite number > 0, got {m!r}")
            if not str(self.margin_notes.get(key, "")).strip():
                raise ValueError(f"margins[{key!r}] needs a one-line justification in margin_notes[{key!r}]")

    def start(self, seed: int, n: int):
        """``(x_T, generator)``: ``generator = Generator(device).manual_seed(seed)``, ``x_T`` its first draw."""
        g = torch.Generator(device=self.device).manual_seed(int(seed))
        x_T = torch.randn((int(n),) + self.sample_shape, generator=g, dtype=self.dtype, device=self.device)
        return x_T, g

    def describe(self) -> dict:
        return {"name": self.name, "sample_shape": list(self.sample_shape), "fidelity": self.fidelity,
                "target": self.target, "heldout": self.heldout,
                "metrics": {k: dataclasses.asdict(m) for k, m in self.metrics.items()},
                "margins": dict(self.margins), "margin_notes": dict(self.margin_notes),
                "config": self.config}


def geometric_grid(lo: float, hi: float, num: int = 8) -> list[float]:
    """``num`` points ``lo * (hi / lo)^(j / (num - 1))``: equal ratios, both ends included."""
    if not (0 < lo < hi) or not isinstance(num, int) or num < 2:
        raise ValueError(f"geometric_grid needs 0 < lo < hi and an int num >= 2, got {lo!r}, {hi!r}, {num!r}")
    return [float(v) for v in np.geomspace(lo, hi, num)]


@dataclass
class Method:
    """A sampler with (at most) one strength knob.

    ``run(world, x_T, generator, **{knob: value}, **fixed)`` returns a ``SampleResult`` (or
    ``(SampleResult, {extra key: float})`` for diagnostics such as an effective step).
    ``knob=None`` (base, best-of-20): a single point, ``grid`` empty. Otherwise ``grid`` is geometric
    with >= ``min_points`` points; ``limit = (lo, hi)`` are the natural limits (None: none; 0 / inf:
    asymptotic; finite: reachable, added as a point), ``limit_notes`` say what they mean.
    ``integer``: the knob is an int (best-of-N's N); ``budget``: nominal NFE per sample (for tables).
    """

    name: str
    run: Callable
    knob: str | None = None
    grid: Sequence[float] = ()
    budget: Any = None
    limit: tuple = (None, None)
    limit_notes: tuple = ("", "")
    fixed: dict = field(default_factory=dict)
    integer: bool = False
    min_points: int = 8

    def __post_init__(self):
        self.grid = [int(v) if self.integer else float(v) for v in self.grid]
        if self.knob is None:
            if self.grid:
                raise ValueError(f"method {self.name!r} has no knob but a grid {self.grid}")
            return
        g = np.asarray(self.grid, dtype=float)
        if len(g) < self.min_points:
            raise ValueError(f"method {self.name!r}: grid needs >= {self.min_points} points, got {len(g)}")
        if not (g > 0).all() or not (np.diff(g) > 0).all():
            raise ValueError(f"method {self.name!r}: grid must be positive and increasing, got {self.grid}")
        steps = np.diff(np.log(g))
        if not self.integer and not np.allclose(steps, steps[0], rtol=1e-3):
            raise ValueError(f"method {self.name!r}: grid must be geometric (equal ratios), got {self.grid}")
        lo, hi = self.limit
        if (lo is not None and g[0] < lo * (1 - 1e-12)) or (hi is not None and g[-1] > hi * (1 + 1e-12)):
            raise ValueError(f"method {self.name!r}: grid {self.grid} leaves the natural limits {self.limit}")

    @property
    def ratio(self) -> float:
        """Geometric step used to extend the grid."""
        g = self.grid
        return float(np.exp(np.mean(np.diff(np.log(g))))) if len(g) > 1 else 2.0


# ---- cost ---------------------------------------------------------------------------------------------
class CostCounter:
    """Wraps ``eps_hat(x_t, t)``; counts forward rows, backward rows and forward seconds.

    A row counts as *backward* when it is evaluated with grad enabled on an ``x_t`` that requires
    grad: the reverse pass of ``autograd.grad`` goes through exactly those rows. A model's
    ``predict(x_t, t) -> (eps_hat, x0_hat)`` (one evaluation; the samplers prefer it where it exists)
    is counted the same way; other attribute access is forwarded to the wrapped model. ``sync`` (e.g.
    ``torch.cuda.synchronize``) is called before each clock reading so that asynchronous devices are
    timed, not queued.
    """

    def __init__(self, model, sync: Callable | None = None):
        self.model, self.sync = model, sync
        self.forward_rows = 0
        self.backward_rows = 0
        self.model_s = 0.0
        if hasattr(model, "predict"):
            self.predict = lambda x_t, t: self._timed(model.predict, x_t, t)

    def __call__(self, x_t, t):
        return self._timed(self.model, x_t, t)

    def _timed(self, fn, x_t, t):
        rows = int(x_t.shape[0])
        self.forward_rows += rows
        if torch.is_grad_enabled() and x_t.requires_grad:
            self.backward_rows += rows
        if self.sync is not None:
            self.sync()
        t0 = time.perf_counter()
        out = fn(x_t, t)
        if self.sync is not None:
            self.sync()
        self.model_s += time.perf_counter() - t0
        return out

    def __getattr__(self, name):
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)
