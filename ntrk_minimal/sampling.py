"""One sampling loop for every kernel, plus the best-of-N and SMC (FK-steering) wrappers.

``sample_iter`` is a generator (smalldiffusion style): it yields a ``Trace`` entry per reverse
step, so trajectories, ``eta_t`` and ``x0_hat`` come for free. ``sample`` runs it to the end.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .kernels import Kernel, Search, denoise, guided_eval, make_kernel

__all__ = ["NFECounter", "Trace", "SampleResult", "SMCResult", "sample_iter", "sample", "grouped_starts",
           "best_of_n", "smc", "rho_from_kappa", "signal_rho", "sigma2_scaled", "tilt_lambda", "check_model_input"]


class NFECounter:
    """Wraps a model ``eps_hat(x_t, t)`` and counts the rows it evaluates.

    ``nfe(batch)`` is the number of denoiser evaluations per trajectory. A model's ``predict``
    (``(eps_hat, x0_hat)`` in one evaluation) is passed through and counted the same way.
    """

    def __init__(self, model):
        self.model, self.rows = model, 0
        if hasattr(model, "predict"):
            self.predict = self._predict

    def __call__(self, x_t, t):
        self.rows += x_t.shape[0]
        return self.model(x_t, t)

    def _predict(self, x_t, t):
        self.rows += x_t.shape[0]
        return self.model.predict(x_t, t)

    def nfe(self, batch: int) -> float:
        return self.rows / batch


@dataclass
class Trace:
    """One reverse step: index ``i``, model timestep ``t``, the state before and after, and the lens."""

    i: int
    t: int | float
    x_t: torch.Tensor
    x0_hat: torch.Tensor
    mu_t: torch.Tensor
    sigma_t: float
    eta_t: torch.Tensor
    x_prev: torch.Tensor


@dataclass
class SampleResult:
    x0: torch.Tensor
    nfe: float
    trace: list = field(default_factory=list)

    @property
    def eta(self) -> torch.Tensor:
        """(T, B, *shape) standardized perturbations, when recorded."""
        return torch.stack([s.eta_t for s in self.trace])

    @property
    def x0_hats(self) -> torch.Tensor:
        return torch.stack([s.x0_hat for s in self.trace])

    @property
    def path(self) -> torch.Tensor:
        """(T + 1, B, *shape): x_T, ..., x_0."""
        return torch.stack([self.trace[0].x_t] + [s.x_prev for s in self.trace])


def check_model_input(x_T: torch.Tensor, generator: torch.Generator | None) -> None:
    if not torch.is_tensor(x_T) or x_T.ndim < 2:
        raise ValueError(f"x_T must be a tensor of shape (batch, *sample_shape), got "
                         f"{getattr(x_T, 'shape', type(x_T).__name__)}")
    if not x_T.dtype.is_floating_point:
        raise TypeError(f"x_T must be floating point, got {x_T.dtype}")
    if generator is not None and torch.device(generator.device).type != x_T.device.type:
        raise ValueError(f"generator is on {generator.device} but x_T is on {x_T.device}")


def sample_iter(model, schedule, x_T: torch.Tensor, kernel="base", generator=None, reward=None,
                **kernel_kwargs):
    """Yield a ``Trace`` per step while running ``x_T -> x_0`` with the chosen reverse kernel.

    Args:
        model: ``eps_hat(x_t, t)`` with ``t`` a model timestep (``schedule.timesteps[i]``); see
            ``kernels`` for the optional ``predict``.
        schedule: ``ntrk_minimal.schedules.Schedule`` (VP or flow).
        x_T: (B, *sample_shape) initial noise; the state keeps its dtype and device.
        kernel: a ``Kernel`` or a name in ``KERNELS`` (options as keyword arguments).
        generator: ``torch.Generator`` on x_T's device; the only source of randomness.
        reward: ``r(x) -> (B,)``, differentiable; needed by every kernel but ``base``.
    """
    check_model_input(x_T, generator)
    kernel = make_kernel(kernel, **kernel_kwargs)
    if kernel.needs_reward and reward is None:
        raise ValueError(f"kernel {kernel.name!r} needs a reward: pass reward=...")
    x_t, eps_hat, x0_hat = x_T, None, None
    for i in range(schedule.num_steps):
        out = kernel.step(model, x_t, i, schedule, generator, reward, eps_hat=eps_hat, x0_hat=x0_hat)
        x_prev = out.x_prev.to(x_T.dtype)
        yield Trace(i, schedule.timesteps[i].item(), x_t, out.x0_hat, out.mu_t,
                    float(schedule.sigma_t[i]), out.eta_t, x_prev)
        x_t, eps_hat, x0_hat = x_prev.detach(), out.eps_hat_next, out.x0_hat_next


def sample(model, schedule, x_T, kernel="base", generator=None, reward=None, record=False,
           **kernel_kwargs) -> SampleResult:
    """Run ``sample_iter`` to the end; ``record=True`` keeps every step's ``Trace``."""
    counter = NFECounter(model)
    trace, x0 = [], x_T
    for step in sample_iter(counter, schedule, x_T, kernel, generator, reward, **kernel_kwargs):
        if record:
            trace.append(step)
        x0 = step.x_prev
    return SampleResult(x0.detach(), counter.nfe(x_T.shape[0]), trace)


def grouped_starts(x_T: torch.Tensor, n: int, generator=None) -> torch.Tensor:
    """``n`` independent starts per output, grouped ``[copy][output]`` as ``best_of_n`` and ``smc`` take
    them: ``x_T`` itself first (copy 0 is the plain sampler's start), then ``n - 1`` fresh N(0, I) draws
    on ``x_T``'s device, in its dtype, from ``generator`` (which must live on that device).
    Shape (n * B, *shape) for ``x_T`` of shape (B, *shape)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    check_model_input(x_T, generator)
    extra = torch.randn((n - 1,) + tuple(x_T.shape), generator=generator, dtype=x_T.dtype, device=x_T.device)
    return torch.cat([x_T[None], extra]).reshape((n * x_T.shape[0],) + tuple(x_T.shape[1:]))


def best_of_n(model, schedule, x_T, num_samples: int, reward, kernel="base", generator=None,
              **kernel_kwargs) -> SampleResult:
    """Best-of-N: ``num_samples`` independent trajectories per output, keep the best ``r(x_0)``.

    ``x_T`` has shape (B * num_samples, *shape), grouped as ``[sample][output]`` (``reshape(N, B)``).
    With ``kernel="ntrk"`` this is NTRK+BoN (the paper's NTRK†).
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if x_T.shape[0] % num_samples:
        raise ValueError(f"x_T's batch ({x_T.shape[0]}) must be a multiple of num_samples={num_samples}")
    res = sample(model, schedule, x_T, kernel, generator, reward, **kernel_kwargs)
    B = x_T.shape[0] // num_samples
    with torch.no_grad():
        r = reward(res.x0).reshape(num_samples, B)
    best = r.argmax(0)
    x0 = res.x0.reshape((num_samples, B) + tuple(x_T.shape[1:]))[best, torch.arange(B)]
    return SampleResult(x0, res.nfe * num_samples, [])


@dataclass
class SMCResult(SampleResult):
    """``smc``'s output: ``x0`` (one particle per group, drawn by its final weight) and ``nfe`` as a
    ``SampleResult``, plus every final particle ``particles`` (P, B, *shape) with its normalised
    ``log_weights`` (P, B) (self-normalised estimates: ``E_p*[f] ≈ sum_p softmax(log_weights)_p f(x_p)``),
    ``ess`` (per step, the mean over groups of ESS / P before resampling) and ``resampled`` (how many
    group resampling events happened)."""

    particles: torch.Tensor | None = None
    log_weights: torch.Tensor | None = None
    ess: list = field(default_factory=list)
    resampled: int = 0


def smc(model, schedule, x_T, num_particles: int, reward, beta: float = 1.0, generator=None,
        ess_threshold: float = 0.5, kernel="base", **kernel_kwargs) -> SMCResult:
    """SMC / FK-steering with difference potentials and a proposal correction (docs/METHOD.md section B.1).

    With a proposal kernel ``q`` (``kernel``: ``"base"``, a DPS ``"dps"`` or an NTRK ``"ntrk"`` kernel,
    options as keyword arguments) the incremental log-weight of step ``t`` is

        log w_t = (r(x0_hat_{t-1}) - r(x0_hat_t)) / beta + log p_base(x_{t-1} | x_t) - log q(x_{t-1} | x_t)

    (``r(x0_hat_T) := 0``, ``r(x0_hat_0) := r(x_0)``): the potentials telescope to ``exp(r(x_0) / beta)``
    and the ratio (``Kernel.log_ratio``, closed form for the Gaussian kernels) undoes the proposal, so
    the target is ``p_base(x_0) exp(r(x_0) / beta)`` whatever the proposal (``p* ∝ p_0 exp(r / beta)``
    where the base sampler is exact); the proposal only changes the variance. Kernels that cannot
    report the ratio (the SVDD search) are refused. Guided proposals reuse the guided evaluation of
    each new state for its potential and for the next step (one NFE with one backward pass per
    particle and step; the base proposal: one NFE).

    Particles are grouped ``[particle][output]``: ``x_T`` has shape (B * num_particles, *shape).
    Multinomial resampling within each group when ESS < ``ess_threshold * num_particles``; the
    output is one particle per group drawn by its final weight (all particles and weights are kept
    in the ``SMCResult``). Costs ``num_particles`` NFEs per step.
    """
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
    if x_T.shape[0] % num_particles:
        raise ValueError(f"x_T's batch ({x_T.shape[0]}) must be a multiple of num_particles={num_particles}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    if not 0.0 <= ess_threshold <= 1.0:
        raise ValueError(f"ess_threshold must lie in [0, 1], got {ess_threshold!r}")
    check_model_input(x_T, generator)
    kern: Kernel = make_kernel(kernel, **kernel_kwargs)
    if isinstance(kern, Search):
        kern.log_ratio(None)                 # raises: the search kernel has no proposal density
    if kern.needs_reward and reward is None:
        raise ValueError(f"kernel {kern.name!r} needs a reward: pass reward=...")
    counter = NFECounter(model)
    guided = kern.grad is not None
    P, B = num_particles, x_T.shape[0] // num_particles
    shape = tuple(x_T.shape[1:])
    x_t, eps_hat, x0_hat, g_t = x_T, None, None, None
    logw = torch.zeros(P, B, dtype=torch.float64, device=x_T.device)
    r_prev = torch.zeros(P, B, dtype=torch.float64, device=x_T.device)
    cols = torch.arange(B, device=x_T.device)
    ess_log, resampled = [], 0
    for i in range(schedule.num_steps):
        reuse = {"g_t": g_t} if g_t is not None else {}
        out = kern.step(counter, x_t, i, schedule, generator, reward, eps_hat=eps_hat, x0_hat=x0_hat, **reuse)
        log_ratio = kern.log_ratio(out).reshape(P, B)      # log p_base - log q of this step
        x_t = out.x_prev.detach().to(x_T.dtype)
        if i < schedule.num_steps - 1:      # value of the new state: r(x0_hat(x_{t-1}))
            if guided:
                eps_hat, x0_hat, g_t, r_new = guided_eval(counter, reward, x_t, i + 1, schedule, kern.grad)
            else:
                eps_hat, x0_hat = denoise(counter, x_t, i + 1, schedule)
                with torch.no_grad():
                    r_new = reward(x0_hat)
        else:
            eps_hat, x0_hat, g_t = None, None, None
            with torch.no_grad():
                r_new = reward(x_t)
        r_new = r_new.reshape(P, B).to(torch.float64)
        logw = logw + (r_new - r_prev) / beta + log_ratio
        r_prev = r_new
        if torch.isnan(logw).any() or (logw == float("inf")).any():
            raise FloatingPointError(f"SMC log-weights are NaN or +inf at step {i}")
        if i == schedule.num_steps - 1:
            break
        w = torch.softmax(logw, 0)
        ess = 1.0 / (w ** 2).sum(0)                                   # (B,)
        ess_log.append(float(ess.mean()) / P)
        redo = ess < ess_threshold * P
        if redo.any():
            resampled += int(redo.sum())
            idx = torch.multinomial(w.T, P, replacement=True, generator=generator).T   # (P, B)
            idx = torch.where(redo[None], idx, torch.arange(P, device=x_T.device)[:, None])
            gather = lambda a: a.reshape((P, B) + a.shape[1:])[idx, cols[None]].reshape(a.shape)
            x_t, eps_hat, x0_hat = gather(x_t), gather(eps_hat), gather(x0_hat)
            if g_t is not None:
                g_t = gather(g_t)
            r_prev = r_prev[idx, cols[None]]
            logw = torch.where(redo[None], torch.zeros_like(logw), logw)
    pick = torch.multinomial(torch.softmax(logw, 0).T, 1, generator=generator)[:, 0]
    logw = logw - torch.logsumexp(logw, 0, keepdim=True)
    particles = x_t.reshape((P, B) + shape)
    x0 = particles[pick, cols]
    return SMCResult(x0, counter.nfe(B), [], particles=particles, log_weights=logw, ess=ess_log,
                     resampled=resampled)


# ---- strength schedules -----------------------------------------------------------------------
def rho_from_kappa(kappa: float, dim: int, decay: str = "constant", saturate: bool = False):
    """``rho_t = kappa_t^2 / N``: NTRK moves ``sigma_t sqrt(rho_t N) = sigma_t kappa_t`` along W(g).

    ``w_t`` carries the full noise norm ``sqrt(N)``, so ``rho`` must scale like ``1/N`` (docs/METHOD.md section 3).
    ``decay="linear"`` lets ``kappa_t`` fall linearly from ``kappa`` to 0 over the steps (the last
    step gets ``kappa_T = 0``: no tilt where the schedule may have ``sigma_t = 0``).
    Returns ``f(i, schedule)`` for ``NoiseTilt(rho_t=...)``.

    ``rho_t`` is a mixing weight in [0, 1], so ``kappa`` can be at most ``sqrt(N)`` (then ``rho = 1``:
    the whole noise is ``W(g)``, no Gaussian part left). A larger ``kappa`` raises ``ValueError``
    (in 2-D the limit is ``sqrt(2) = 1.414``); ``saturate=True`` instead clips ``rho_t`` to 1 at every
    step where ``kappa_t > sqrt(N)`` — an explicit choice, since those steps then inject no Gaussian
    noise at all and ``kappa`` no longer states the step length.
    """
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    if decay not in ("constant", "linear"):
        raise ValueError(f"decay must be 'constant' or 'linear', got {decay!r}")
    try:
        kappa = float(kappa)
    except (TypeError, ValueError):
        raise TypeError(f"kappa must be a number >= 0, got {kappa!r}") from None
    if not (math.isfinite(kappa) and kappa >= 0):
        raise ValueError(f"kappa must be a finite number >= 0, got {kappa!r}")
    limit = math.sqrt(dim)
    if kappa > limit * (1 + 1e-12) and not saturate:
        raise ValueError(f"kappa={kappa:g} exceeds sqrt(dim) = sqrt({dim}) = {limit:.6g}: rho = kappa^2 / dim = "
                         f"{kappa * kappa / dim:.4g} > 1 is not a mixing weight. Use kappa <= {limit:.6g}, or pass "
                         f"saturate=True to clip rho_t to 1 (no Gaussian noise on those steps)")

    def rho_t(i, schedule):
        k = kappa if decay == "constant" else kappa * (1 - i / max(schedule.num_steps - 1, 1))
        return min(k * k / dim, 1.0)          # < 1 + 1e-12 unless saturate: the min only removes rounding

    return rho_t


def sigma2_scaled(scale: float):
    """``lambda_t = scale * sigma_t^2`` (with ``scale = 1/beta`` the DPS step of the tilted target)."""

    def lambda_t(i, schedule):
        return scale * float(schedule.sigma_t[i]) ** 2

    return lambda_t


def tilt_lambda(scale: float):
    """``lambda_t = scale * s_t (a_prev s_t / a_t - sqrt(s_prev^2 - sigma_t^2))`` (0 where ``a_t = 0``).

    The exact-tilt coefficient of the DDIM-form step on any path ``x_t = a_t x_0 + s_t eps``: with
    ``scale = 1 / beta`` and ``g_t = grad V_t`` (``V_t = beta log E[exp(r(x_0) / beta) | x_t]``) the DPS
    step is exactly the DDIM-form step of the tilted model ``p*``, at any T and any sigma, the ODE
    included (``sigma2_scaled`` is its T -> infinity limit for the DDPM variance; docs/METHOD.md section 6,
    ``worlds.flow2d``). Returns ``f(i, schedule)`` for ``MeanShift(lambda_t=...)``."""
    def lambda_t(i, schedule):
        a, s = float(schedule.a_t[i]), float(schedule.s_t[i])
        if a == 0.0:
            return 0.0
        ap, sp, sig = float(schedule.a_prev[i]), float(schedule.s_prev[i]), float(schedule.sigma_t[i])
        return scale * s * (ap * s / a - math.sqrt(max(sp * sp - sig * sig, 0.0)))

    return lambda_t


def signal_rho(kappa: float, dim: int, decay: str = "linear"):
    """``rho_from_kappa(kappa, dim, decay)`` with ``rho_t = 0`` at steps where ``a_t = 0``.

    There ``x_t`` carries no signal: the exact ``x0*`` is constant, ``g_t = 0`` and ``W(g_t) = 0``, and
    ``eta_t = sqrt(rho_t) W(g_t) + sqrt(1 - rho_t) eps`` would have variance ``1 - rho_t`` instead of 1.
    With ``rho_t = 0`` that step is the base step (``eta_t = eps``)."""
    rho = rho_from_kappa(kappa, dim, decay)

    def rho_t(i, schedule):
        return 0.0 if float(schedule.a_t[i]) == 0.0 else rho(i, schedule)

    return rho_t
