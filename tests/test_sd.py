"""Stable Diffusion adapter on the tiny offline pipeline: our loop = the pipeline, gradients, loading."""
import os
import shutil
import time

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)        # tiny models: one thread is several times faster on a shared CPU

from ntrk_minimal.adapters import sd                                          # noqa: E402
from ntrk_minimal.adapters.aesthetic import (AestheticMLP, clamp01_st, clip_preprocess, load_aesthetic,  # noqa: E402
                                    WeightsNotFoundError)
from ntrk_minimal.sampling import rho_from_kappa, sample             # noqa: E402
from ntrk_minimal.worlds import sd as sd_world


@pytest.fixture(scope="module")
def tiny():
    return sd.load_tiny_pipeline(), sd.load_tiny_aesthetic()


@pytest.fixture(scope="module")
def problem(tiny):
    pipe, scorer = tiny
    return sd.make_problem(pipe, scorer, ["a photo of a cat", "a red house"], guidance_scale=7.5,
                           num_steps=25, eta=1.0)


def test_rho_zero_reproduces_the_pipeline(problem):
    ref = sd.pipeline_latents(problem, torch.Generator().manual_seed(3))
    base = sd.run_method(problem, "base", torch.Generator().manual_seed(3)).x0
    g = torch.Generator().manual_seed(3)          # one generator: x_T first, then the step noise
    ntrk0 = sample(problem.model, problem.schedule, problem.x_T(g), "ntrk", g, problem.reward,
                   rho_t=0.0).x0
    scale = ref.abs().max()
    assert ref.shape == base.shape == (2, 4, 16, 16)
    assert (base - ref).abs().max() / scale < 1e-5, "our base loop differs from pipe.__call__"
    assert torch.equal(ntrk0, base), "rho = 0 must reproduce the base kernel bit for bit"
    other = sd.run_method(problem, "base", torch.Generator().manual_seed(4)).x0
    assert (other - ref).abs().max() / scale > 1e-2          # the test can fail: seeds matter


def test_no_guidance_also_matches(tiny):
    pipe, scorer = tiny
    prob = sd.make_problem(pipe, scorer, "a dog", negative_prompt=None, num_steps=10)
    assert not prob.model.cfg
    ref = sd.pipeline_latents(prob, torch.Generator().manual_seed(0), negative_prompt=None)
    ours = sd.run_method(prob, "base", torch.Generator().manual_seed(0)).x0
    assert (ours - ref).abs().max() / ref.abs().max() < 1e-5


def _fd(f, x, v, h):
    with torch.no_grad():
        return float((f(x + h * v).sum() - f(x - h * v).sum()) / (2 * h))


def test_clamp_surrogate_gradient_where_inactive_and_value_where_active(tiny):
    """``scorer(clamp01_st(x))``: where no pixel saturates its autograd gradient equals finite differences
    of the *clamped* reward ``scorer(clamp(x))``; where pixels saturate its value is the clamped reward's
    and its gradient is the scorer's gradient at the clamped image (straight-through: saturated pixels
    keep a gradient, where the exact clamp has none). Catches a missing clamp (value), a clamp without
    the surrogate (zero gradient at saturated pixels) and a surrogate that moves the evaluation point."""
    _, scorer = tiny
    sc = scorer.to(torch.float64)
    try:
        r_st = lambda x: sc(clamp01_st(x))
        r_clamped = lambda x: sc(x.clamp(0, 1))
        g = torch.Generator().manual_seed(0)
        x_in = 0.5 + 0.4 * (torch.rand(2, 3, 40, 40, generator=g, dtype=torch.float64) - 0.5)   # in [0.3, 0.7]
        xr = x_in.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(r_st(xr).sum(), xr)
        for seed in range(3):
            v = torch.randn(x_in.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            fd, an = _fd(r_clamped, x_in, v, 1e-5), float((grad * v).sum())
            assert abs(fd - an) <= 1e-8 + 1e-5 * abs(an), (seed, fd, an)
        x_out = x_in.clone()
        x_out[:, :, :8] += 0.8                                   # a saturated band (> 1)
        x_out[:, 0, -8:] -= 0.9                                  # and one below 0
        sat = (x_out < 0) | (x_out > 1)
        assert sat.float().mean() > 0.1
        with torch.no_grad():
            assert torch.equal(r_st(x_out), r_clamped(x_out))    # the value a user's image gets
            assert not torch.allclose(sc(x_out), r_clamped(x_out), rtol=0, atol=1e-9)   # the clamp matters
        xr = x_out.clone().requires_grad_(True)
        (g_st,) = torch.autograd.grad(r_st(xr).sum(), xr)
        c = x_out.clamp(0, 1).requires_grad_(True)
        (g_at_c,) = torch.autograd.grad(sc(c).sum(), c)
        assert torch.allclose(g_st, g_at_c, rtol=1e-12, atol=1e-15)
        assert g_st[sat].abs().sum() > 0                         # the exact clamp would give 0 here
    finally:
        scorer.to(torch.float32)


def test_latent_reward_is_the_clamped_image_score_with_a_straight_through_gradient(tiny):
    """``LatentAesthetic`` end to end (VAE decode, clamp surrogate, CLIP, MLP) in float64: value =
    ``scorer(clamp(D(z)))``; autograd = finite differences of the surrogate ``scorer(c + D(z) - D(z0))``
    linearised at ``z0``; those of the unclamped reward differ (pixels of the tiny decoder saturate)."""
    pipe, scorer = tiny
    reward = sd.LatentAesthetic(pipe.vae, scorer, dtype=torch.float64)
    try:
        assert pipe.vae.dtype == torch.float32 and reward.vae is not pipe.vae   # the pipeline's VAE untouched
        z0 = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        D = lambda z: reward.vae.decode(z / reward.scaling_factor, return_dict=False)[0] * 0.5 + 0.5
        with torch.no_grad():
            d0 = D(z0)
            c = d0.clamp(0, 1)
            assert ((d0 < 0) | (d0 > 1)).float().mean() > 0.005                # some pixels saturate
            assert torch.equal(reward(z0), reward.scorer(c))
        zr = z0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(reward(zr).sum(), zr)
        misses = 0
        for seed in range(3):
            v = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            an = float((g * v).sum())
            fd = _fd(lambda z: reward.scorer(c + D(z) - d0), z0, v, 1e-4)
            assert abs(fd - an) <= 1e-7 + 1e-4 * abs(an), (seed, fd, an)
            raw = _fd(lambda z: reward.scorer(D(z)), z0, v, 1e-4)
            misses += abs(raw - an) > 1e-3 * abs(an)
        assert misses >= 2
    finally:
        scorer.to(torch.float32)


def test_reported_score_is_the_score_of_the_users_image(problem):
    """``SDProblem.score`` (and the protocol's ``aesthetic``) score the image ``pipe(output_type="pt")``
    returns for the same seed; the guided reward has the same value (fp32). Fails if the score or the
    reward skipped the clamp (pixels of the tiny decoder saturate) or decoded differently."""
    user = sd.pipeline_call(problem, torch.Generator().manual_seed(3), output_type="pt")
    z = sd.run_method(problem, "base", torch.Generator().manual_seed(3)).x0
    ours = problem.user_images(z)
    assert ours.shape == user.shape == (2, 3, 128, 128) and user.min() >= 0 and user.max() <= 1
    assert (ours - user).abs().max() < 1e-4                      # our latents = the pipeline's to 1e-5
    scorer = problem.reward.scorer
    with torch.no_grad():
        s_user = scorer(user)
        unclamped = scorer(problem.reward.vae.decode(z / problem.reward.scaling_factor,
                                                     return_dict=False)[0] * 0.5 + 0.5)
        r = problem.reward(z)
    s = problem.score(z)
    assert torch.allclose(s, s_user, rtol=0, atol=2e-6), (s, s_user)
    assert torch.equal(r, s)                                     # reward value == reported score (fp32)
    assert (unclamped - s_user).abs().max() > 2e-5               # the test can tell a missing clamp
    judge = sd_world.ImageJudge(problem, sd.tiny_clip_text(scorer))
    assert judge.scores(judge.embed(z))["aesthetic"] == pytest.approx(float(s.mean()), abs=1e-6)


def test_guided_step_gradient_flows_through_unet_vae_clip(problem):
    from ntrk_minimal.kernels import reward_grad
    x = problem.x_T(torch.Generator().manual_seed(0))
    s = problem.schedule
    _, _, g = reward_grad(problem.model, problem.reward, x, 5, s)
    assert g.shape == x.shape and torch.isfinite(g).all()
    assert (g.reshape(2, -1).norm(dim=1) > 0).all()


def test_every_method_runs_with_nfe_accounting(tiny):
    pipe, scorer = tiny
    prob = sd.make_problem(pipe, scorer, ["a", "b"], num_steps=4)
    nfe = {m: sd.run_method(prob, m, torch.Generator().manual_seed(0), num_candidates=3,
                            num_samples=3, num_particles=3).nfe for m in sd.METHODS}
    assert nfe["base"] == nfe["dps"] == nfe["ntrk"] == nfe["ntrk_raw"] == 4
    assert nfe["bon"] == nfe["ntrk_bon"] == 12
    assert nfe["svdd"] == 1 + 3 * 3                      # K candidates scored at every step but the last
    assert nfe["smc"] == 3 * 4          # the value eval of each new state is reused by the next step
    with pytest.raises(ValueError, match="method"):
        sd.run_method(prob, "nope", torch.Generator())


def test_ntrk_changes_the_sample_and_rho_scales_with_dimension(tiny):
    pipe, scorer = tiny
    prob = sd.make_problem(pipe, scorer, "a", num_steps=5)
    b = sd.run_method(prob, "base", torch.Generator().manual_seed(1)).x0
    n = sd.run_method(prob, "ntrk", torch.Generator().manual_seed(1), kappa=2.0).x0
    assert not torch.equal(b, n) and torch.isfinite(n).all()
    big = sd.make_problem(pipe, scorer, "a", height=512, width=512, num_steps=5)
    assert big.latent_shape == (4, 64, 64) and big.dim == 16384
    rho = rho_from_kappa(0.5, big.dim)(0, big.schedule)
    assert rho == pytest.approx(0.25 / 16384) and 1e-5 < rho < 2e-5


def test_per_image_seeds_are_reproducible(tiny):
    pipe, scorer = tiny
    prob = sd.make_problem(pipe, scorer, "a", num_steps=3)
    z, nfes = sd.generate(prob, "base", seeds=[5, 6])
    z6, _ = sd.generate(prob, "base", seeds=[6])
    assert torch.equal(z[1:], z6) and nfes == [3, 3]
    with pytest.raises(ValueError, match="seeds"):
        sd.generate(prob, "base", seeds=[])


def test_missing_weights_fail_fast_with_a_clear_message(tmp_path, monkeypatch):
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as e:
        sd.load_pipeline("nobody/no-such-sd-model", local_files_only=True)
    assert time.perf_counter() - t0 < 2.0
    msg = str(e.value)
    assert "nobody/no-such-sd-model" in msg and "NTRK_SD_MODEL" in msg
    monkeypatch.setenv("NTRK_SD_MODEL", "nobody/env-model")
    with pytest.raises(OSError, match="nobody/env-model"):
        sd.load_pipeline(local_files_only=True)
    with pytest.raises(WeightsNotFoundError, match="NTRK_AESTHETIC_WEIGHTS"):
        load_aesthetic(mlp_weights=tmp_path / "missing.pth", local_files_only=True)
    with pytest.raises(WeightsNotFoundError, match="NTRK_CLIP_MODEL"):
        mlp = tmp_path / "mlp.pth"
        torch.save(AestheticMLP().state_dict(), mlp)
        load_aesthetic("nobody/no-clip", mlp_weights=mlp, local_files_only=True)


def test_load_sd_falls_back_to_tiny(monkeypatch, capsys):
    monkeypatch.setenv("NTRK_SD_MODEL", "nobody/no-such-sd-model")
    pipe, scorer, which = sd.load_sd(local_files_only=True)
    assert which == "tiny" and pipe.unet.config.sample_size == 16
    assert "nobody/no-such-sd-model" in capsys.readouterr().out


def test_tampered_tiny_files_are_rejected(tmp_path):
    dst = tmp_path / "tiny_sd"
    shutil.copytree(sd.TINY_DIR, dst)
    sd.verify_tiny(dst)
    p = dst / "aesthetic" / "mlp_config.json"
    p.write_text(p.read_text() + " ")
    with pytest.raises(RuntimeError, match="checksum mismatch.*build_tiny_sd"):
        sd.verify_tiny(dst)


def test_clip_preprocess_matches_clip_processor_and_keeps_gradients():
    from transformers import CLIPImageProcessor
    proc = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    rng = np.random.default_rng(0)
    img = (np.clip(np.cumsum(rng.normal(size=(96, 128, 3)), axis=1) / 20 + 0.5, 0, 1) * 255).astype(np.uint8)
    ref = proc(images=img, return_tensors="pt")["pixel_values"]
    x = (torch.tensor(img).permute(2, 0, 1)[None].float() / 255).requires_grad_(True)
    ours = clip_preprocess(x, 224)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().mean() < 0.03          # uint8 round trip + border handling only
    ours.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="images"):
        clip_preprocess(torch.zeros(1, 1, 8, 8), 224)


def test_bad_inputs_name_the_argument(tiny):
    pipe, scorer = tiny
    with pytest.raises(ValueError, match="prompts"):
        sd.make_problem(pipe, scorer, [])
    prob = sd.make_problem(pipe, scorer, ["a", "b"], num_steps=2)
    with pytest.raises(ValueError, match="multiple of the number of prompts"):
        prob.model(torch.zeros(3, 4, 16, 16), 10)
    with pytest.raises(ValueError, match="dims"):
        AestheticMLP((10, 5))


def test_the_protocol_world_starts_like_the_pipeline_and_rho_zero_is_base(problem):
    """The SD world's x_T (``World.start``) and its base method reproduce ``pipe(..., output_type="latent")``
    with ``Generator().manual_seed(seed)``; NTRK at kappa = 0 (rho_t = 0) through the world equals its
    base bit for bit. Catches a world whose paired start is not the pipeline's (init_noise_sigma, order
    of draws, dtype) and a tilt that consumes extra noise when rho = 0."""
    from types import SimpleNamespace
    from ntrk_minimal import bench as P
    ctx = SimpleNamespace(model=P.CostCounter(problem.model), context=problem, device="cpu",
                          config={"micro_batch": None})
    ms = {m.name: m for m in sd_world.methods(SimpleNamespace(context=problem, config={"smc_beta": 1.0}), budget=2)}
    x_T, g = sd_world.start(problem, 11, 2)
    base, _ = ms["base"].run(ctx, x_T, g)
    ref = sd.pipeline_latents(problem, torch.Generator().manual_seed(11))
    assert (base.x0 - ref).abs().max() / ref.abs().max() < 1e-5
    x_T, g = sd_world.start(problem, 11, 2)
    ntrk0, extra = ms["ntrk"].run(ctx, x_T, g, kappa=0.0)
    assert torch.equal(ntrk0.x0, base.x0) and extra["eff_step"] == 0.0
    assert ctx.model.backward_rows == 2 * 25 and ctx.model.forward_rows == 2 * 2 * 25


def test_judge_pairs_each_image_with_its_own_prompt(problem):
    """``clip`` = mean over images of <e_i, t_{prompt(i)}> with rows grouped [copy][prompt];
    ``diversity`` uses same-prompt pairs only. Checked against a loop; a repeat_interleave mix-up of
    the grouping (or pairing across prompts) changes both."""
    judge = sd_world.ImageJudge(problem, sd.tiny_clip_text(problem.reward.scorer))
    B, d = problem.num_prompts, judge.t.shape[1]
    gen = torch.Generator().manual_seed(0)
    unit = lambda v: v / v.norm(dim=-1, keepdim=True)
    judge.t = unit(torch.randn(B, d, generator=gen, dtype=torch.float64))      # distinct prompts
    e = unit(judge.t.repeat(3, 1) + 0.05 * torch.randn(3 * B, d, generator=gen, dtype=torch.float64))
    got = judge.scores(e)
    clip = sum(float(e[i] @ judge.t[i % B]) for i in range(3 * B)) / (3 * B)
    pairs = [1 - float(e[i] @ e[j]) for i in range(3 * B) for j in range(3 * B) if i != j and i % B == j % B]
    assert got["clip"] == pytest.approx(clip, abs=1e-12)
    assert got["diversity"] == pytest.approx(sum(pairs) / len(pairs), abs=1e-12)
    swapped = judge.scores(e.reshape(3, B, d).transpose(0, 1).reshape(3 * B, d))
    assert clip > 0.5 and swapped["clip"] < clip - 0.2


def _draw_recorder(monkeypatch):
    """Wrap torch's random draws; each call records (name, generator, device it draws on or None)."""
    calls = []
    for name in ("randn", "rand", "randint", "randperm", "normal", "randn_like", "rand_like", "multinomial",
                 "bernoulli", "poisson"):
        real = getattr(torch, name)

        def wrapper(*args, _real=real, _name=name, **kw):
            if _name in ("multinomial", "bernoulli", "poisson", "randn_like", "rand_like"):
                dev = args[0].device if args and torch.is_tensor(args[0]) else None
            else:
                dev = kw.get("device")
            calls.append((_name, kw.get("generator"), None if dev is None else torch.device(dev)))
            return _real(*args, **kw)
        monkeypatch.setattr(torch, name, wrapper)
    return calls


def test_every_random_draw_uses_the_callers_generator_on_the_problems_device(tiny, monkeypatch):
    """Device check without a GPU: every random draw of every SD sampler (``run_method`` for all
    methods, ``generate``, ``pipeline_latents``, the protocol methods incl. the best-of-N / SMC / SVDD
    starts) names a generator (no global RNG) living on ``problem.device`` and draws on that device
    explicitly (``device=`` given, or a tensor op on a tensor there). A draw without ``device=`` is a
    CPU draw beside CUDA tensors on a GPU -- the bug class this catches; a draw from the global RNG
    makes seeds meaningless."""
    from types import SimpleNamespace
    from ntrk_minimal import bench as P
    pipe, scorer = tiny
    prob = sd.make_problem(pipe, scorer, ["a", "b"], num_steps=3)
    dev = prob.device
    calls = _draw_recorder(monkeypatch)
    for m in sd.METHODS:
        sd.run_method(prob, m, torch.Generator(dev).manual_seed(0), num_candidates=2, num_samples=2,
                      num_particles=2, beta=1e-4)
    sd.generate(prob, "ntrk", seeds=[1])
    sd.pipeline_latents(prob, torch.Generator(dev).manual_seed(0))
    ctx = SimpleNamespace(model=P.CostCounter(prob.model), context=prob, device=str(dev),
                          config={"micro_batch": 2})
    ms = {m.name: m for m in sd_world.methods(SimpleNamespace(context=prob, config={"smc_beta": 1e-4}), budget=2)}
    for name, kw in (("best-of-N", {"num_samples": 2}), ("smc-2", {}), ("svdd-2", {}), ("dps", {"scale": 1.0}),
                     ("ntrk", {"kappa": 1.0})):
        x_T, g = sd_world.start(prob, 0, 4)
        ms[name].run(ctx, x_T, g, **{**ms[name].fixed, **kw})
    names = {c[0] for c in calls}
    assert {"randn", "multinomial"} <= names, names          # the recorder saw the samplers' draws
    bad = [c for c in calls if c[1] is None or torch.device(c[1].device) != dev or c[2] != dev]
    assert not bad, bad[:5]


def test_half_precision_unet_with_fp32_reward_keeps_dtypes(monkeypatch):
    """bfloat16 UNet / text encoder / pipeline VAE, fp32 reward, state in fp32 or bf16: every method runs,
    the state keeps its dtype, the reward gradient is fp32 through an fp32 copy of the VAE (the
    pipeline's own VAE stays bf16, so ``pipe(...)`` still decodes), and the reported score is that of the
    pipeline's bf16 image. Catches in-place VAE conversion (the pipeline then fails on bf16 latents),
    a state silently promoted to fp32 or demoted, and a reward computed in bf16."""
    from ntrk_minimal.kernels import reward_grad
    pipe = sd.load_tiny_pipeline(dtype=torch.bfloat16)
    scorer = sd.load_tiny_aesthetic()
    for latent_dtype in (torch.float32, torch.bfloat16):
        prob = sd.make_problem(pipe, scorer, ["a", "b"], num_steps=3, latent_dtype=latent_dtype)
        assert pipe.unet.dtype == pipe.vae.dtype == torch.bfloat16
        assert prob.reward.vae.dtype == torch.float32 and prob.reward.dtype == torch.float32
        for m in sd.METHODS:
            x0 = sd.run_method(prob, m, torch.Generator().manual_seed(0), num_candidates=2, num_samples=2,
                               num_particles=2).x0
            assert x0.dtype == latent_dtype and torch.isfinite(x0.float()).all(), m
        x = prob.x_T(torch.Generator().manual_seed(0))
        _, x0_hat, g = reward_grad(prob.model, prob.reward, x, 1, prob.schedule)
        assert g.dtype == latent_dtype and torch.isfinite(g.float()).all() and g.float().norm() > 0
        with torch.no_grad():
            assert prob.reward(x0_hat).dtype == torch.float32
    user = sd.pipeline_call(prob, torch.Generator().manual_seed(2), output_type="pt")
    assert user.dtype == torch.bfloat16
    z = sd.pipeline_latents(prob, torch.Generator().manual_seed(2))
    with torch.no_grad():
        s_user = scorer(user.float())
    assert torch.allclose(prob.score(z), s_user, atol=1e-6)
    ref32 = sd.make_problem(sd.load_tiny_pipeline(), scorer, ["a", "b"], num_steps=3)
    b32 = sd.run_method(ref32, "base", torch.Generator().manual_seed(0)).x0
    b16 = sd.run_method(prob, "base", torch.Generator().manual_seed(0)).x0.float()
    assert (b16 - b32).abs().max() / b32.abs().max() < 0.1      # bf16 rounding, not a different sampler


def test_decode_chunks_change_nothing_but_memory(tiny):
    """``decode_chunk`` (the GPU script's ``--decode-chunk``, default 4 on the real path) splits the VAE
    decodes of the reward, its gradient, the user's images and the judge's embeddings: each must equal
    the unchunked one, rows in order. Catches a chunked decode that reorders or drops rows."""
    pipe, scorer = tiny
    probs = [sd.make_problem(pipe, scorer, ["a", "b"], num_steps=3, decode_chunk=c) for c in (None, 1)]
    z = probs[0].x_T(torch.Generator().manual_seed(0), copies=2)           # 4 rows, distinct
    out = []
    for prob in probs:
        x = z.clone().requires_grad_(True)
        r = prob.reward(x)
        (g,) = torch.autograd.grad(r.sum(), x)
        judge = sd_world.ImageJudge(prob, sd.tiny_clip_text(scorer), chunk=prob.reward.chunk)
        out.append((r.detach(), g, prob.user_images(z), judge.embed(z)))
    for a, b in zip(*out):      # batch-size numerics of the VAE convs: ~1e-5; a swapped row: ~0.1-1
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    assert (out[0][2][0] - out[0][2][1]).abs().max() > 0.1                # rows differ: order is tested


def test_fp16_unet_backward_does_not_underflow(tiny):
    """A float16 UNet back-propagates a small reward cotangent without underflow: the vector-Jacobian
    product of ``GuidedUNet`` at ``|v| ~ 1e-8`` matches the float32 UNet's (it is zero without the
    per-call gradient scaling at the dtype boundary; at 1e-6 it kept cosine 0.6), and the forward
    value is unchanged by the scaling."""
    pipe32, scorer = tiny
    pipe16 = sd.load_tiny_pipeline(dtype=torch.float16)
    t = None
    gs = {}
    for name, pipe in (("fp32", pipe32), ("fp16", pipe16)):
        prob = sd.make_problem(pipe, scorer, ["a", "b"], num_steps=4)
        t = prob.schedule.timesteps[1]
        x = prob.x_T(torch.Generator().manual_seed(0)).requires_grad_(True)
        v = 1e-8 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
        eps = prob.model(x, t)
        assert eps.dtype == torch.float32
        (gs[name],) = torch.autograd.grad((eps * v).sum(), x)
        with torch.no_grad():
            gs[name + " value"] = prob.model(x, t)
    assert torch.allclose(gs["fp16 value"], eps.detach())            # scaling leaves the value alone
    a, b = gs["fp16"].flatten(), gs["fp32"].flatten()
    assert float(torch.nn.functional.cosine_similarity(a, b, 0)) > 0.99
    assert 0.9 < float(a.norm() / b.norm()) < 1.1


def _bench():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "scripts" / "gpu_sd_bench.py"
    spec = importlib.util.spec_from_file_location("gpu_sd_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_script_smoke_run_writes_protocol_verdicts(tmp_path):
    """``scripts/gpu_sd_bench.py --tiny --quick`` runs the evaluation protocol end to end on the CPU and
    writes json/md/png of the protocol's shape: tuning and evaluation seeds disjoint, a verdict label
    from win/lose/equivalent/undecided with its paired CI for every comparison, margins with their
    reasons, the target / held-out / fidelity keys on every front point, the NFE- and wall-matched
    tables, per-step cost and (CPU) peak memory. Catches a script that drifts from the protocol
    (missing keys, a verdict outside the four labels, seeds reused for tuning) or stops running."""
    from ntrk_minimal import bench as P
    stem = tmp_path / "sd_smoke"
    assert _bench().main(["--tiny", "--quick", "--threads", "1", "--out", str(stem)]) == 0
    data = P.load_json(stem.with_suffix(".json"))
    md = stem.with_suffix(".md").read_text()
    assert data["protocol"] == "ntrk_minimal.protocol v1"
    w = data["world"]
    assert (w["target"], w["heldout"], w["fidelity"]) == ("aesthetic", "clip", "kid")
    assert set(w["margins"]) == {"aesthetic", "clip", "kid"} and all(v > 0 for v in w["margins"].values())
    assert all(w["margin_notes"][k] for k in w["margins"])
    assert not set(data["seeds"]["tuning"]) & set(data["seeds"]["eval"]) and len(data["seeds"]["eval"]) == 3
    names = {"base", "dps", "ntrk", "ntrk (W off)", "best-of-N", "best-of-3", "svdd-3", "smc-3"}
    assert set(data["fronts"]["eval"]) == names
    for f in data["fronts"]["eval"].values():
        for point in f["values"]:
            assert {"aesthetic", "clip", "kid", "diversity", "nfe", "backward", "wall_s"} <= set(point)
            assert len(point["aesthetic"]) == 3
    T = data["sd"]["steps"]
    nfe = {k: P.Front.from_dict(f).mean("nfe")[0] for k, f in data["fronts"]["eval"].items()}
    assert nfe["base"] == nfe["ntrk"] == nfe["dps"] == T and nfe["best-of-3"] == nfe["smc-3"] == 3 * T
    assert nfe["svdd-3"] == 1 + 3 * (T - 1)
    assert P.Front.from_dict(data["fronts"]["eval"]["ntrk"]).mean("backward")[0] == T   # one backward per step
    assert [c["name"] for c in data["comparisons"]] == [c.name for c in sd_world.comparisons(3, T)]
    for c in data["comparisons"]:
        v = c["verdict"]
        assert v["label"] in P.LABELS and v["n_seeds"] <= 3
        assert len(c["a"]["values"]) == len(c["b"]["values"]) == 3
        assert v["label"] == "undecided" or (v["lo"] is not None and v["hi"] is not None)
    split = data["sd"]["cost_split"]                                    # one guided step, part by part
    assert set(split) == {"unet", "reward", "backward", "whiten", "total"} and min(split.values()) > 0
    assert abs(split["total"] - sum(v for k, v in split.items() if k != "total")) < 1e-9
    tim = data["sd"]["timings"]
    assert set(tim) == {"base", "dps", "ntrk"} and all(t["step_s"] > 0 and t["peak_gib"] is None for t in tim.values())
    assert tim["dps"]["step_s"] > tim["base"]["step_s"]                 # a guided step costs a backward pass
    for section in ("Plumbing only", "## Verdicts", "## NFE-matched table", "## Wall-time-matched table",
                    "## Per-step cost", "## Margins (stated in advance)"):
        assert section in md, section
    assert stem.with_suffix(".png").stat().st_size > 10_000


def test_gpu_script_real_path_fails_fast_with_a_clear_message(capsys):
    """Without SD / CLIP weights (offline), the real path stops in seconds, says which id is missing and
    how to provide it, runs nothing and exits 2 (no silent fallback to the tiny pipeline)."""
    t0 = time.perf_counter()
    rc = _bench().main(["--model", "nobody/no-such-sd", "--clip", "nobody/no-such-clip", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 2 and time.perf_counter() - t0 < 5
    assert "nobody/no-such-clip" in out and "NTRK_CLIP_MODEL" in out and "Nothing was run" in out
