"""Trained-model benchmark (issue 4B): loaders, checksums, model wrapper, scorers, NFE budgets, determinism."""
import shutil

import pytest
import torch

from ntrk_minimal import trained as T


@pytest.fixture(scope="module")
def pb():
    torch.set_num_threads(1)
    return T.trained_problem(target_class=3)


def test_digits16_split():
    x, y = T.load_digits16("train")
    xt, yt = T.load_digits16("test")
    assert x.shape[1:] == (1, 16, 16) and len(x) + len(xt) == 1797 and len(xt) == 359
    assert x.min() >= -1 and x.max() <= 1 and set(y.tolist()) == set(range(10))
    with pytest.raises(ValueError, match="split"):
        T.load_digits16("validation")


def test_checksum_mismatch_is_a_clear_error(tmp_path):
    shutil.copytree(T.UNET_DIR, tmp_path / "unet_digits")
    w = tmp_path / "unet_digits" / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 1
    w.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="checksum mismatch.*diffusion_pytorch_model.safetensors"):
        T.load_unet(tmp_path / "unet_digits")
    bad = tmp_path / "scorers.pt"
    bad.write_bytes(T.SCORER_FILE.read_bytes() + b"x")
    with pytest.raises(RuntimeError, match="checksum mismatch.*scorers.pt"):
        T.load_scorers(bad)
    with pytest.raises(FileNotFoundError, match="missing"):
        T.load_unet(tmp_path / "nowhere")


def test_recorded_checksums_match_the_files():
    for name, h in T.SHA256.items():
        path = T.DATA_DIR / name if not name.startswith("unet/") else T.UNET_DIR / name
        assert T.sha256(path) == h, name


def test_model_wrapper_gives_finite_eps(pb):
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    for t in (pb.schedule.timesteps[0], int(pb.schedule.timesteps[-1]), torch.tensor([5, 500, 999])):
        eps = pb.model(x, t)
        assert eps.shape == x.shape and eps.dtype == x.dtype and torch.isfinite(eps).all()
    # near t = 0 the UNet must predict (most of) the noise it is given on a real image
    x0, _ = T.load_digits16("test")
    e = torch.randn(x0[:64].shape, generator=torch.Generator().manual_seed(1))
    ab = float(pb.schedule.alphas_cumprod[200])
    x_t = ab ** 0.5 * x0[:64] + (1 - ab) ** 0.5 * e
    mse = float(((pb.model(x_t, 200) - e) ** 2).mean())
    assert mse < 0.2, mse
    with pytest.raises(ValueError, match="x_t must have shape"):
        pb.model(torch.randn(2, 16, 16), 10)


def test_scorers_reach_stated_accuracy(pb):
    x, y = T.load_digits16("test")
    with torch.no_grad():
        for name in ("target", "heldout", "features"):
            acc = float((getattr(pb.scorers, name)(x).argmax(1) == y).float().mean())
            assert acc >= 0.95, (name, acc)
            assert abs(acc - pb.scorers.accuracy[name]) < 1e-6
    r = pb.reward(x[:8])
    assert r.shape == (8,) and (r <= 0).all()
    with pytest.raises(ValueError, match="target_class"):
        T.ClassLogProb(pb.scorers.target, 10)
    assert torch.allclose(T.Brightness()(x[:4]), x[:4].mean(dim=(1, 2, 3)))


def test_frechet_distance():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 4, generator=g, dtype=torch.float64)
    assert T.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = torch.tensor([1.0, 2.0, 0.0, 0.0], dtype=torch.float64)
    assert T.frechet_distance(a, a + shift) == pytest.approx(5.0, rel=1e-6)
    with pytest.raises(ValueError, match="features"):
        T.frechet_distance(a, a[:, :3])


@pytest.mark.parametrize("name", list(T.METHODS))
def test_every_method_stays_within_its_nfe_budget(pb, name):
    budget, _, grid = T.METHODS[name]
    knob = T.METHODS[grid][2][-1] if isinstance(grid, str) else grid[-1]
    res, _ = T.run_method(pb, name, seed=7, n=2, knob=knob)
    assert res.x0.shape == (2, 1, 16, 16) and torch.isfinite(res.x0).all()
    assert res.nfe <= budget, (name, res.nfe)
    assert res.nfe >= 0.9 * budget if budget > 25 else res.nfe == 25


@pytest.mark.parametrize("name", ["ntrk (W)", "smc-4", "svdd-4"])
def test_determinism(pb, name):
    grid = T.METHODS[name][2]
    a, _ = T.run_method(pb, name, seed=3, n=2, knob=grid[0])
    b, _ = T.run_method(pb, name, seed=3, n=2, knob=grid[0])
    c, _ = T.run_method(pb, name, seed=4, n=2, knob=grid[0])
    assert torch.equal(a.x0, b.x0) and not torch.equal(a.x0, c.x0)


def test_select_knob_respects_the_fidelity_level():
    front = [{"knob": {"k": 1}, "target": -3, "fd": 5.0}, {"knob": {"k": 2}, "target": -1, "fd": 9.0},
             {"knob": {"k": 3}, "target": -2, "fd": 6.0}]
    assert T.select_knob(front, 6.0) == {"k": 3}
    assert T.select_knob(front, 1.0) == {"k": 1}
    with pytest.raises(ValueError, match="unknown method"):
        T.run_method(None, "nope", 0, 1, {})


def test_committed_headline_answers_the_question():
    import json

    data = json.loads((T.DATA_DIR.parent / "results" / "headline.json").read_text())
    assert data["seeds"] >= 5 and not data["quick"]
    assert set(data["raw"]) == set(T.METHODS)
    for name, per_seed in data["raw"].items():
        assert all(p["nfe"] <= T.METHODS[name][0] for p in per_seed), name
    table = T.headline_table(data)
    assert "Does NTRK@25 beat the best baseline@500?" in table
    assert "- answer: YES" in table or "- answer: NO" in table
    # the committed markdown is exactly what the json renders to
    assert (T.DATA_DIR.parent / "results" / "headline.md").read_text().strip() == table.strip()
