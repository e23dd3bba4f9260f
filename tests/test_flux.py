"""FLUX through diffusers on the tiny offline pipeline: loading, tokenizers, data checks, fallback."""
import os
import shutil
import time

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)        # tiny models: one thread is several times faster on a shared CPU

from ntrk_minimal.adapters import flux                                        # noqa: E402
from ntrk_minimal.adapters.hub import WeightsNotFoundError

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
    from ntrk_minimal.adapters.sd import char_tokenizer

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


def test_env_var_selects_a_local_pipeline_folder(monkeypatch):
    """``$NTRK_FLUX_MODEL`` pointing at a ``save_pretrained`` folder loads it through the real path."""
    monkeypatch.setenv("NTRK_FLUX_MODEL", str(flux.TINY_DIR))
    pipe = flux.load_pipeline(local_files_only=True)
    assert pipe.transformer.config.num_layers == 2 and pipe.vae.config.latent_channels == 16


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


# ---- the adapter: our sampling loop on FLUX ---------------------------------------------------------
PROMPTS = ["a photo of a cat", "a red house"]


@pytest.fixture(scope="module")
def scorer():
    from ntrk_minimal.adapters.aesthetic import load_tiny_aesthetic
    return load_tiny_aesthetic()


@pytest.fixture(scope="module")
def problem(pipe, scorer):
    return flux.make_problem(pipe, scorer, PROMPTS, num_steps=8, noise=1.0)


def test_packing_and_position_ids_match_the_pipeline(pipe):
    from diffusers import FluxPipeline

    z = torch.randn(3, 16, 6, 10, generator=torch.Generator().manual_seed(0))
    x = flux.pack(z)
    assert torch.equal(x, FluxPipeline._pack_latents(z, 3, 16, 6, 10))
    assert torch.equal(flux.unpack(x, 6, 10), z)
    assert torch.equal(FluxPipeline._unpack_latents(x, 6 * 8, 10 * 8, 8), z)
    assert torch.equal(flux.latent_image_ids(6, 10), FluxPipeline._prepare_latent_image_ids(3, 3, 5, "cpu", torch.float32))
    assert x[0, 0].tolist() == z[0, :, :2, :2].reshape(-1).tolist()     # token 0 = top-left 2x2 patch
    with pytest.raises(ValueError, match="even"):
        flux.pack(torch.zeros(1, 16, 5, 4))


def test_schedule_is_the_pipelines_shifted_grid(pipe, problem):
    seen = []
    pipe(PROMPTS[0], height=H, width=W, num_inference_steps=8, max_sequence_length=T5_LEN,
         output_type="latent", callback_on_step_end=lambda p, i, t, kw: seen.append(t.item()) or kw)
    s = problem.schedule
    assert s.kind == "flow" and s.num_steps == 8
    assert s.timesteps.tolist() == seen                                   # the transformer sees these
    assert (s.s_t * 1000 - s.timesteps).abs().max() < 1e-3                  # t = 1000 sigma
    assert s.s_t[0] == 1.0 and s.a_t[0] == 0.0 and s.s_prev[-1] == 0.0     # from pure noise to data
    assert torch.allclose(s.sigma_t, s.s_prev)                            # noise = 1: the stochastic sampler
    unshifted = torch.linspace(1, 1 / 8, 8, dtype=torch.float64)
    assert (s.s_t - unshifted).abs().max() > 1e-3, "the resolution-dependent shift mu must be applied"


def test_rho_zero_reproduces_the_pipelines_stochastic_sampler_bit_for_bit(problem):
    """FluxPipeline + FlowMatchEulerDiscreteScheduler(stochastic_sampling=True) = our base kernel.

    Exact equality: the state is the pipeline's packed latent, every random draw comes from the same
    stream in the same order and shape (x_T via prepare_latents, then one randn per step), and the
    flow step with sigma_t = s_prev is ``(1 - s_prev) x0_hat + 0 * eps_hat + s_prev eta`` — the same
    float32 operations as the scheduler's ``(1 - sigma_next) x0 + sigma_next noise``.
    """
    from ntrk_minimal.sampling import sample

    flux.seeded_global(3)
    ref = flux.pipeline_latents(problem, None)               # x_T and step noise from the global stream
    base = flux.run_method(problem, "base", flux.seeded_global(3)).x0
    g = flux.seeded_global(3)
    ntrk0 = sample(problem.model, problem.schedule, problem.x_T(g), "ntrk", g, problem.reward,
                   rho_t=0.0, whiten=problem.whiten).x0
    g = flux.seeded_global(3)
    dps0 = sample(problem.model, problem.schedule, problem.x_T(g), "dps", g, problem.reward, lambda_t=0.0).x0
    assert ref.shape == base.shape == (2, 64, 64)
    print(f"stochastic sampler: max |ours - pipeline| = {(base - ref).abs().max().item():.3g}")
    assert torch.equal(base, ref), f"max abs diff {(base - ref).abs().max().item():.3g}"
    assert torch.equal(ntrk0, base) and torch.equal(dps0, base)
    other = flux.run_method(problem, "base", flux.seeded_global(4)).x0
    assert (other - ref).abs().max() / ref.abs().max() > 1e-2                 # seeds matter


def test_sigma_zero_reproduces_the_pipelines_euler_sampler(pipe, scorer):
    """noise = 0: ``a_prev x0_hat + s_prev eps_hat`` equals the Euler step ``x_t + (s_prev - s_t) v``
    algebraically, not operation for operation: equal to float32 round-off (a few ulps per step)."""
    prob = flux.make_problem(pipe, scorer, PROMPTS, num_steps=8, noise=0.0)
    assert float(prob.schedule.sigma_t.abs().max()) == 0.0
    ref = flux.pipeline_latents(prob, torch.Generator().manual_seed(5))
    ours = flux.run_method(prob, "base", torch.Generator().manual_seed(5)).x0
    diff = (ours - ref).abs().max().item()
    print(f"Euler sampler: max |ours - pipeline| = {diff:.3g} (scale {ref.abs().max().item():.3g})")
    assert diff / ref.abs().max() < 1e-5
    with pytest.raises(ValueError, match="sigma_t > 0"):
        flux.run_method(prob, "ntrk", torch.Generator().manual_seed(5))


def test_bf16_state_stays_bf16_and_close_to_the_pipeline(scorer):
    """bf16 transformer and state: the step runs in float32 and is cast back (as diffusers); diffusers
    also rounds sigma to bf16 inside sigma * v and we do not, so the trajectories agree to about one
    bf16 ulp per step instead of bit for bit. NTRK runs in bf16 with the fp32 reward."""
    pipe16 = flux.load_tiny_pipeline(dtype=torch.bfloat16)
    prob = flux.make_problem(pipe16, scorer, PROMPTS, num_steps=6, latent_dtype=torch.bfloat16)
    flux.seeded_global(1)
    ref = flux.pipeline_latents(prob)
    ours = flux.run_method(prob, "base", flux.seeded_global(1)).x0
    assert ref.dtype == ours.dtype == torch.bfloat16
    diff = (ours.float() - ref.float()).abs().max().item()
    print(f"bf16 stochastic sampler: max |ours - pipeline| = {diff:.3g} (scale {ref.float().abs().max().item():.3g})")
    assert diff <= 4 * 2 ** -8 * ref.float().abs().max()                  # a few bf16 ulps at most
    res = flux.run_method(prob, "ntrk", torch.Generator().manual_seed(0), kappa=2.0)
    assert res.x0.dtype == torch.bfloat16 and torch.isfinite(res.x0.float()).all()
    assert torch.isfinite(prob.score(res.x0)).all()


def _stochastic(scheduler):
    from diffusers import FlowMatchEulerDiscreteScheduler
    return FlowMatchEulerDiscreteScheduler.from_config(scheduler.config, stochastic_sampling=True)


def test_reward_sees_the_pipelines_images(problem):
    flux.seeded_global(0)                  # the stochastic sampler's step noise is the global stream
    lat = flux.pipeline_latents(problem)
    flux.seeded_global(0)
    saved, problem.pipe.scheduler = problem.pipe.scheduler, _stochastic(problem.pipe.scheduler)
    try:
        H_, W_ = problem.image_size
        img = problem.pipe(PROMPTS, height=H_, width=W_, num_inference_steps=problem.schedule.num_steps,
                           guidance_scale=problem.guidance_scale, max_sequence_length=T5_LEN,
                           output_type="pt").images
    finally:
        problem.pipe.scheduler = saved
    ours = problem.images(lat)
    assert ours.shape == img.shape == (2, 3, H, W)
    assert (ours - img).abs().max() < 1e-6 and ours.min() >= 0 and ours.max() <= 1


def test_reward_gradient_is_straight_through_the_clamp(pipe, scorer):
    """Finite differences of ``scorer(clamp(D(x0)) + D(x) - D(x0))`` (the straight-through surrogate)
    match autograd; those of the unclamped reward do not (pixels saturate), so the test can tell."""
    reward = flux.FluxLatentReward(pipe.vae, scorer, (16, 16), dtype=torch.float64)
    try:
        x0 = torch.randn(2, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        xr = x0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(reward(xr).sum(), xr)
        assert torch.isfinite(g).all() and g.norm() > 0
        D = lambda x: reward.vae.decode(flux.unpack(x, 16, 16) / reward.scaling_factor
                                        + reward.shift_factor, return_dict=False)[0] * 0.5 + 0.5
        with torch.no_grad():
            d0 = D(x0)
            c = d0.clamp(0, 1)
            assert ((d0 < 0) | (d0 > 1)).float().mean() > 0.01              # some pixels do saturate
            assert torch.equal(reward.decode(x0), c) or (reward.decode(x0) - c).abs().max() < 1e-12
            misses = 0
            for seed in range(3):
                v = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
                h = 1e-4
                fd = (reward.scorer(c + D(x0 + h * v) - d0).sum() - reward.scorer(c + D(x0 - h * v) - d0).sum()) / (2 * h)
                an = (g * v).sum()
                assert abs(fd - an) <= 1e-7 + 1e-4 * abs(an), (seed, fd.item(), an.item())
                raw = (reward.scorer(D(x0 + h * v)).sum() - reward.scorer(D(x0 - h * v)).sum()) / (2 * h)
                misses += abs(raw - an) > 1e-2 * abs(an)
            assert misses >= 2
    finally:
        pipe.vae.to(torch.float32)
        scorer.to(torch.float32)


def test_every_method_runs_with_nfe_accounting(pipe, scorer):
    prob = flux.make_problem(pipe, scorer, PROMPTS, num_steps=4)
    nfe = {m: flux.run_method(prob, m, torch.Generator().manual_seed(0), num_candidates=3,
                              num_samples=3, num_particles=3).nfe for m in flux.METHODS}
    assert nfe["base"] == nfe["dps"] == nfe["ntrk"] == nfe["ntrk_raw"] == 4
    assert nfe["bon"] == nfe["ntrk_bon"] == 12 and nfe["smc"] == 12
    assert nfe["svdd"] == 1 + 3 * 3
    with pytest.raises(ValueError, match="method"):
        flux.run_method(prob, "nope", torch.Generator())


def test_guided_methods_go_uphill_and_w_sees_the_latent_image(problem):
    """DPS, NTRK and SVDD raise the (tiny, random) reward over the base sampler on every seed: a sign
    or plumbing error in the gradient path would not. ``W`` acts on (16, h, w) latent images."""
    for seed in range(2):
        sc = {m: problem.score(flux.run_method(problem, m, torch.Generator().manual_seed(seed), **kw).x0).mean()
              for m, kw in [("base", {}), ("dps", {}), ("ntrk", dict(kappa=4.0)), ("svdd", dict(num_candidates=4))]}
        assert sc["dps"] > sc["base"] and sc["ntrk"] > sc["base"] and sc["svdd"] > sc["base"], (seed, sc)
    from ntrk_minimal.whitening import whiten
    g = torch.randn(2, 64, 64, generator=torch.Generator().manual_seed(0)).cumsum(1)   # structured
    w = problem.whiten(g)
    assert torch.equal(w, flux.pack(whiten(flux.unpack(g, 16, 16))))
    assert (w - whiten(g)).abs().max() > 1e-3                    # the layout W sees matters
    assert problem.dim == 16 * 16 * 16


def test_bad_inputs_name_the_argument(pipe, scorer, problem):
    with pytest.raises(ValueError, match="prompts"):
        flux.make_problem(pipe, scorer, [])
    with pytest.raises(ValueError, match="multiples of 16"):
        flux.make_problem(pipe, scorer, "a", height=120, width=128)
    with pytest.raises(ValueError, match="multiple of the number of prompts"):
        problem.model(torch.zeros(3, 64, 64), problem.schedule.timesteps[0])
    half = flux.make_problem(pipe, scorer, "a", num_steps=3, noise=0.5)
    with pytest.raises(ValueError, match="noise"):
        flux.pipeline_latents(half)
