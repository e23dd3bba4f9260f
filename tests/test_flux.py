"""FLUX through diffusers on the tiny offline pipeline: loading, tokenizers, data checks, fallback."""
import os
import shutil
import time

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)        # tiny models: one thread is several times faster on a shared CPU

from ntrk_minimal import flux                                        # noqa: E402
from ntrk_minimal.aesthetic import WeightsNotFoundError               # noqa: E402

H = W = 128                     # tiny images: 16x16x16 latents, 64 packed tokens of 64 channels
T5_LEN = 32


@pytest.fixture(scope="module")
def pipe():
    return flux.load_tiny_pipeline()


def run(pipe, prompt, seed=0, steps=4, **kw):
    kw.setdefault("output_type", "latent")
    return pipe(prompt, height=H, width=W, num_inference_steps=steps, max_sequence_length=T5_LEN,
                generator=torch.Generator().manual_seed(seed), **kw).images


def test_tiny_pipeline_is_a_flux_pipeline_loaded_by_from_pretrained(pipe):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    assert type(pipe) is FluxPipeline
    assert isinstance(pipe.transformer, FluxTransformer2DModel) and pipe.transformer.config.guidance_embeds
    assert isinstance(pipe.vae, AutoencoderKL) and pipe.vae.config.latent_channels == 16
    assert pipe.transformer.config.in_channels == 4 * pipe.vae.config.latent_channels   # 2x2 packing
    assert isinstance(pipe.text_encoder, CLIPTextModel) and isinstance(pipe.tokenizer, CLIPTokenizer)
    assert isinstance(pipe.text_encoder_2, T5EncoderModel) and isinstance(pipe.tokenizer_2, T5TokenizerFast)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    assert pipe.scheduler.config.use_dynamic_shifting and pipe.vae_scale_factor == 8
    assert not any(p.requires_grad for p in pipe.transformer.parameters())
    size = sum(p.stat().st_size for p in flux.TINY_DIR.rglob("*") if p.is_file())
    assert size < 6e6, f"data/tiny_flux is {size / 1e6:.2f} MB"


def test_pipeline_runs_end_to_end_and_every_input_matters(pipe):
    img = run(pipe, "a photo of a cat", output_type="np")
    assert img.shape == (1, H, W, 3) and np.isfinite(img).all()
    assert img.min() >= 0 and img.max() <= 1 and img.std() > 0.01
    z = run(pipe, ["a photo of a cat", "a red house"])
    assert z.shape == (2, (H // 16) * (W // 16), 64) and torch.isfinite(z).all()
    assert torch.equal(z, run(pipe, ["a photo of a cat", "a red house"]))       # same seed, same latents
    scale = z.abs().max()
    assert (z[0] - z[1]).abs().max() / scale > 1e-3, "the prompt (CLIP pooled + T5) must matter"
    g = run(pipe, ["a photo of a cat", "a red house"], guidance_scale=8.0)
    assert (g - z).abs().max() / scale > 1e-3, "the guidance embedding must matter"
    assert (run(pipe, ["a photo of a cat", "a red house"], seed=1) - z).abs().max() / scale > 1e-2


def test_offline_tokenizers():
    from ntrk_minimal.sd import char_tokenizer

    t5 = flux.t5_char_tokenizer(T5_LEN)
    text = "A photo of a cat, 2 dogs!"
    ids = t5(text).input_ids
    assert ids[-1] == t5.eos_token_id == 1 and t5.pad_token_id == 0 and t5.unk_token_id == 2
    assert t5.decode(ids, skip_special_tokens=True) == text
    assert t5.unk_token_id not in ids
    assert t5.convert_ids_to_tokens(t5("a cat").input_ids) == ["▁a", "▁c", "a", "t", "</s>"]
    padded = t5([text], padding="max_length", max_length=T5_LEN, truncation=True).input_ids[0]
    assert len(padded) == T5_LEN and padded[len(ids):] == [0] * (T5_LEN - len(ids))
    clip = char_tokenizer(32)
    assert clip.decode(clip("a photo").input_ids, skip_special_tokens=True).strip() == "a photo"


def test_build_script_reproduces_the_stored_weights(pipe):
    """scripts/build_tiny_flux.py's builder gives the stored tensors exactly (seeded, CPU, fp32)."""
    fresh = flux.build_random_pipeline(seed=0)
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        a, b = getattr(fresh, name).state_dict(), getattr(pipe, name).state_dict()
        assert a.keys() == b.keys(), name
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name} differs from data/tiny_flux: rebuild it"
    assert fresh.tokenizer_2.get_vocab() == pipe.tokenizer_2.get_vocab()
    public = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}
    assert public(fresh.scheduler.config) == public(pipe.scheduler.config)


def test_tampered_or_incomplete_tiny_files_are_rejected(tmp_path):
    dst = tmp_path / "tiny_flux"
    shutil.copytree(flux.TINY_DIR, dst)
    flux.verify_tiny(dst)
    p = dst / "transformer" / "config.json"
    p.write_text(p.read_text() + " ")
    with pytest.raises(RuntimeError, match="checksum mismatch.*build_tiny_flux"):
        flux.verify_tiny(dst)
    (dst / "vae" / "config.json").unlink()
    (dst / "transformer" / "config.json").write_text((flux.TINY_DIR / "transformer" / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="vae"):
        flux.verify_tiny(dst)
    (dst / "SHA256SUMS").unlink()
    with pytest.raises(FileNotFoundError, match="SHA256SUMS"):
        flux.verify_tiny(dst)


def test_missing_weights_fail_fast_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.delenv("NTRK_FLUX_MODEL", raising=False)
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as e:
        flux.load_pipeline("nobody/no-such-flux", local_files_only=True)
    assert time.perf_counter() - t0 < 2.0
    msg = str(e.value)
    for part in ("nobody/no-such-flux", "NTRK_FLUX_MODEL", "black-forest-labs/FLUX.1-dev",
                 "data/tiny_flux", "gated"):
        assert part in msg, part
    with pytest.raises(WeightsNotFoundError, match="no model_index.json"):
        flux.load_pipeline(tmp_path, local_files_only=True)          # a folder that is no pipeline
    monkeypatch.setenv("NTRK_FLUX_MODEL", "nobody/env-flux")
    with pytest.raises(OSError, match="nobody/env-flux"):
        flux.load_pipeline(local_files_only=True)
    assert time.perf_counter() - t0 < 4.0


def test_load_flux_falls_back_to_tiny(monkeypatch, capsys):
    monkeypatch.setenv("NTRK_FLUX_MODEL", "nobody/no-such-flux")
    pipe, scorer, which = flux.load_flux(local_files_only=True)
    assert which == "tiny" and pipe.transformer.config.num_layers == 2
    out = capsys.readouterr().out
    assert "nobody/no-such-flux" in out and "tiny offline path" in out
    assert scorer(torch.rand(1, 3, H, W)).shape == (1,)
    _, _, which = flux.load_flux(prefer="tiny")
    assert which == "tiny" and capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="prefer"):
        flux.load_flux(prefer="big")
