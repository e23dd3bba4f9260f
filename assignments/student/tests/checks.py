"""Helpers the grader's tests share: seeded tensors, small problems, and comparisons whose failure
message states expected vs got as numbers (never a tensor dump) and names a known mistake when the
result matches it."""
from __future__ import annotations

import torch

import ntrk_minimal as nt


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(shape, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=gen(seed), dtype=dtype)


def tol_of(dtype) -> float:
    return 1e-10 if dtype == torch.float64 else 2e-5


def _num(x: float) -> str:
    return f"{x:.6g}"


def close(got, expected, what: str, dtype=torch.float64, scale: float = 1.0, mistakes=None) -> None:
    """Assert ``got`` equals ``expected`` (shape, dtype, values to a dtype-aware tolerance).

    ``mistakes``: ``{description: tensor}`` of known wrong answers; if ``got`` matches one, the message
    says so ("your result matches <description>")."""
    tol = tol_of(dtype) * scale
    assert torch.is_tensor(got), f"{what}: expected a tensor, got {type(got).__name__}"
    assert got.shape == expected.shape, f"{what}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype}, expected {expected.dtype} (keep the input's dtype)"
    if torch.allclose(got, expected, rtol=tol, atol=tol, equal_nan=False):
        return
    diff = (got - expected).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
    flat = int(diff.reshape(-1).argmax())
    idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), got.shape)) if got.dim() else ()
    msg = f"{what}: got {_num(got[idx].item())}, expected {_num(expected[idx].item())} at index {idx}"
    for desc, wrong in (mistakes or {}).items():
        if wrong.shape == got.shape and torch.allclose(got, wrong.to(got.dtype), rtol=tol, atol=tol):
            msg += f"; your result matches {desc}"
            break
    raise AssertionError(msg + f" (max abs error {diff.max().item():.3g}, tolerance {tol:.1g})")


def mixture(d: int = 3, seed: int = 7) -> nt.GaussianMixture:
    """A 2-component Gaussian mixture in d dimensions (not the notebook's ring)."""
    g = gen(seed)
    means = torch.randn(2, d, generator=g, dtype=torch.float64) * 1.5
    a = torch.randn(2, d, d, generator=g, dtype=torch.float64) * 0.3
    covs = a @ a.transpose(1, 2) + 0.1 * torch.eye(d, dtype=torch.float64)
    return nt.GaussianMixture(torch.tensor([0.3, 0.7], dtype=torch.float64), means, covs)


def toy_model(x_t, t):
    """Any callable eps_hat(x_t, t) will do for one step: a smooth, shape-agnostic stand-in."""
    return 0.4 * torch.tanh(x_t) + 1e-4 * float(t)


def dps_problem(d: int = 3, steps: int = 8, eta: float = 1.0):
    sched = nt.make_schedule(steps, eta=eta)
    model = nt.MixtureDenoiser(mixture(d, seed=8), sched.alphas_cumprod)
    reward = nt.QuadraticReward(torch.linspace(-1, 1, d), 0.7)
    return sched, model, reward
