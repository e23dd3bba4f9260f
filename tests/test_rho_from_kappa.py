"""``rho_from_kappa``: rho_t = kappa_t^2 / N is a mixing weight, so kappa may not exceed sqrt(N) unless the
caller asks for saturation explicitly (it used to clip to 1 silently: the tuned 2-D NTRK, kappa = 1.5 > sqrt(2),
injected no Gaussian noise in its first steps and nothing said so)."""
import math

import pytest

import ntrk_minimal as nt


@pytest.fixture(scope="module")
def sched():
    return nt.make_schedule(25, eta=1.0)


def test_kappa_above_sqrt_dim_is_refused_with_the_limit_named(sched):
    with pytest.raises(ValueError) as e:
        nt.rho_from_kappa(1.5, 2, "linear")
    msg = str(e.value)
    assert "kappa=1.5" in msg and "sqrt(2)" in msg and "1.41421" in msg and "saturate=True" in msg
    with pytest.raises(ValueError, match="sqrt\\(64\\) = 8"):
        nt.rho_from_kappa(8.5, 64)


def test_the_limit_itself_is_allowed_and_gives_rho_one(sched):
    """The protocol's 2-D grid ends at kappa = sqrt(2) exactly (rounding must not push it over)."""
    f = nt.rho_from_kappa(math.sqrt(2), 2, "constant")
    assert f(0, sched) == 1.0 and f(sched.num_steps - 1, sched) == 1.0
    g = nt.rho_from_kappa(8.0, 64, "linear")
    assert g(0, sched) == 1.0 and g(sched.num_steps - 1, sched) == 0.0


def test_saturate_clips_only_the_steps_above_the_limit(sched):
    f = nt.rho_from_kappa(3.0, 2, "linear", saturate=True)
    T = sched.num_steps
    k = [3.0 * (1 - i / (T - 1)) for i in range(T)]
    rho = [f(i, sched) for i in range(T)]
    assert all(r == 1.0 for r, ki in zip(rho, k) if ki >= math.sqrt(2))
    assert all(r == pytest.approx(ki * ki / 2) for r, ki in zip(rho, k) if ki < math.sqrt(2))
    assert sum(r == 1.0 for r in rho) == sum(ki >= math.sqrt(2) for ki in k) > 0


@pytest.mark.parametrize("kappa", [-0.1, float("nan"), float("inf")])
def test_kappa_must_be_finite_and_non_negative(kappa):
    with pytest.raises(ValueError, match="kappa"):
        nt.rho_from_kappa(kappa, 2)
    with pytest.raises(TypeError, match="kappa"):
        nt.rho_from_kappa("big", 2)


def test_ntrk_runs_at_the_limit():
    import torch
    from ntrk_minimal.worlds import toy2d

    pb = toy2d.toy_problem()
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(64, 2, generator=g, dtype=torch.float64)
    res = nt.sample(pb.model, pb.schedule, x_T, "ntrk", g, reward=pb.reward, record=True,
                    rho_t=nt.rho_from_kappa(math.sqrt(2), 2, "linear"))
    assert torch.isfinite(res.x0).all()
    # rho_0 = 1: the first step's eta_t is W(g_0) alone, norm sqrt(2) for every sample
    assert torch.allclose(res.trace[0].eta_t.norm(dim=1), torch.full((64,), math.sqrt(2), dtype=torch.float64))
