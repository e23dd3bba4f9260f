"""The real LAION aesthetic head shipped in data/laion_aesthetic: bytes, layout, output, default use."""
import os
import shutil

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from ntrk_minimal.adapters import aesthetic                                   # noqa: E402
from ntrk_minimal.adapters.aesthetic import (LAION_DIMS, LAION_HEAD, LAION_SHA256,  # noqa: E402
                                    WeightsNotFoundError, load_aesthetic, load_laion_head)
from ntrk_minimal.paths import sha256                             # noqa: E402

KEYS = [f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")]
# Scores of the fixed embeddings below, from the float64 numpy forward pass of the shipped state dict
# (computed once when the head was added; the sha256 pins the bytes, these pin what they mean).
PINNED = np.array([4.46458089, 5.48043454, 5.00813087, 4.88328485])


def fixed_embeddings() -> np.ndarray:
    """(4, 768) unit vectors: three seeded Gaussian directions and the all-equal direction."""
    e = np.random.default_rng(0).standard_normal((3, 768))
    e = np.vstack([e, np.ones(768)])
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def numpy_forward(state: dict, e: np.ndarray) -> np.ndarray:
    """The head as the upstream repository defines it: five Linear layers, no activations, in float64."""
    h = e
    for i in (0, 2, 4, 6, 7):
        h = h @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
    return h[:, 0]


@pytest.fixture(scope="module")
def raw_state():
    # the file stores CUDA-located storages (saved on a GPU upstream): map them to the CPU
    return torch.load(LAION_HEAD, map_location="cpu", weights_only=True)


def test_shipped_file_is_the_upstream_head_with_its_licence(raw_state):
    assert sha256(LAION_HEAD) == LAION_SHA256 == "21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0"
    assert LAION_HEAD.stat().st_size == 3_714_759
    folder = LAION_HEAD.parent
    assert "Apache License" in (folder / "LICENSE").read_text() and "Version 2.0" in (folder / "LICENSE").read_text()
    assert LAION_SHA256 in (folder / "PROVENANCE.md").read_text()
    assert list(raw_state) == KEYS
    d = LAION_DIMS
    for j, i in enumerate((0, 2, 4, 6, 7)):
        assert tuple(raw_state[f"layers.{i}.weight"].shape) == (d[j + 1], d[j])
        assert tuple(raw_state[f"layers.{i}.bias"].shape) == (d[j + 1],)
    assert {v.dtype for v in raw_state.values()} == {torch.float32}


def test_head_output_matches_a_numpy_forward_pass(raw_state):
    e = fixed_embeddings()
    ref = numpy_forward({k: v.double().numpy() for k, v in raw_state.items()}, e)
    np.testing.assert_allclose(ref, PINNED, atol=1e-7)
    mlp = load_laion_head()
    assert not mlp.training, "dropout must be off: the loaded head has to be in eval mode"
    with torch.no_grad():
        ours32 = mlp(torch.tensor(e, dtype=torch.float32)).numpy()
        again = mlp(torch.tensor(e, dtype=torch.float32)).numpy()
        ours64 = mlp.double()(torch.tensor(e)).numpy()
    assert np.array_equal(ours32, again)
    np.testing.assert_allclose(ours64, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours32, ref, rtol=0, atol=2e-5)       # float32 round-off only
    assert np.ptp(ref) > 0.5                                            # the embeddings are told apart


def test_load_aesthetic_uses_the_shipped_head_by_default(tmp_path, monkeypatch, raw_state):
    """Only the CLIP image tower is the user's to provide: a stand-in tower of the right width suffices."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    monkeypatch.delenv("NTRK_AESTHETIC_WEIGHTS", raising=False)
    torch.manual_seed(0)
    tower = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        image_size=32, patch_size=8, projection_dim=768))
    tower.save_pretrained(tmp_path / "clip")
    scorer = load_aesthetic(tmp_path / "clip", local_files_only=True)
    got = scorer.mlp.state_dict()
    assert list(got) == KEYS and all(torch.equal(got[k], raw_state[k]) for k in KEYS)
    img = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0), requires_grad=True)
    r = scorer(img)
    assert r.shape == (2,) and torch.isfinite(r).all()
    r.sum().backward()
    assert img.grad.abs().sum() > 0


def test_tampered_or_missing_head_is_rejected(tmp_path, monkeypatch):
    bad = tmp_path / LAION_HEAD.name
    shutil.copy(LAION_HEAD, bad)
    with open(bad, "r+b") as f:
        f.seek(-100, 2)
        b = f.read(1)
        f.seek(-100, 2)
        f.write(bytes([b[0] ^ 1]))
    monkeypatch.setattr(aesthetic, "LAION_HEAD", bad)
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        load_laion_head()
    monkeypatch.setattr(aesthetic, "LAION_HEAD", tmp_path / "gone.pth")
    with pytest.raises(FileNotFoundError, match="gone.pth"):
        load_laion_head()
    monkeypatch.setenv("NTRK_AESTHETIC_WEIGHTS", str(tmp_path / "elsewhere.pth"))
    with pytest.raises(WeightsNotFoundError, match="elsewhere.pth.*NTRK_AESTHETIC_WEIGHTS"):
        load_aesthetic("nobody/no-clip", local_files_only=True)
