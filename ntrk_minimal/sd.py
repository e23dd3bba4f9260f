"""Stable Diffusion through diffusers, run by *our* sampling loop: any kernel, the aesthetic reward.

The whole adapter is two small callables, so every sampler of the package (``sample`` with base /
DPS / SVDD / NTRK, ``best_of_n``, ``smc``) runs on SD unchanged:

    model(x_t, t)  = eps_u + s (eps_c - eps_u),   [eps_u; eps_c] = UNet([x_t; x_t], t, [e_neg; e_prompt])
                     (classifier-free guidance exactly as ``StableDiffusionPipeline.__call__``)
    reward(z)      = aesthetic( (VAE.decode(z / scaling_factor) + 1) / 2 )        # z = x0_hat latent

and the schedule is ``Schedule.from_scheduler(pipe.scheduler, 25, eta=1.0)`` read from the
pipeline's ``DDIMScheduler``. Initial latents are drawn like the pipeline's ``prepare_latents``
(``randn_tensor(shape, generator) * init_noise_sigma``), and the base kernel draws its step noise
``torch.randn(x.shape, generator)`` right after each model evaluation, as ``DDIMScheduler.step`` does:
with ``rho = 0`` our loop reproduces ``pipe(..., eta=1.0, output_type="latent")`` with the same
generator (tests/test_sd.py checks it on the tiny pipeline).

Where diffusers' DDIM step keeps our symbols (``scheduling_ddim.py``, ``step``):
``pred_original_sample`` = x0_hat (Tweedie), ``std_dev_t`` = sigma_t, ``alpha_prod_t_prev ** 0.5 *
pred_original_sample + pred_sample_direction`` = mu_t, ``variance_noise`` = eta_t (the only thing NTRK
changes).

Loading: ``load_pipeline()`` reads the model id from the argument, ``$NTRK_SD_MODEL`` or the default
``stable-diffusion-v1-5/stable-diffusion-v1-5`` (a hub id or a local ``save_pretrained`` folder);
without weights it raises ``WeightsNotFoundError`` saying which id and how to provide it (in
milliseconds under ``HF_HUB_OFFLINE=1``). ``load_tiny_pipeline()`` loads the tiny random pipeline in
``data/tiny_sd`` (built by ``scripts/build_tiny_sd.py``, sha256-checked) through the same
``from_pretrained``: it proves the plumbing, not the pictures. ``load_sd()`` tries the real one and
falls back to the tiny one.

GPU options: ``dtype`` (fp16/bf16 UNet and text encoder), ``reward_dtype`` (VAE + CLIP, fp32 by
default so the reward gradient is taken in fp32), ``attention_slicing``, ``gradient_checkpointing``,
a batch of prompts, and ``generate(..., seeds=[...])`` for one seed per image.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from .aesthetic import (AestheticMLP, AestheticScorer, WeightsNotFoundError, _how_to, _offline,
                        load_aesthetic, load_tiny_aesthetic)
from .checksums import sha256
from .kernels import norm_match
from .sampling import best_of_n, rho_from_kappa, sample, sigma2_scaled, smc
from .schedules import Schedule

__all__ = ["DEFAULT_MODEL_ID", "TINY_DIR", "WeightsNotFoundError", "sd_scheduler_config",
           "tiny_configs", "full_size_configs", "build_random_pipeline", "build_random_scorer",
           "load_pipeline", "load_tiny_pipeline", "load_sd", "verify_tiny", "GuidedUNet",
           "LatentAesthetic", "SDProblem", "make_problem", "METHODS", "run_method", "generate",
           "pipeline_latents", "peak_memory", "step_timings", "compare", "matched_specs", "results_table"]

DEFAULT_MODEL_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
TINY_DIR = Path(__file__).resolve().parent.parent / "data" / "tiny_sd"
SHA_FILE = TINY_DIR / "SHA256SUMS"


# ---- configurations ----------------------------------------------------------------------------
def sd_scheduler_config() -> dict:
    """Stable Diffusion v1's noise schedule as a ``DDIMScheduler`` config (scaled-linear betas)."""
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                steps_offset=1, prediction_type="epsilon", timestep_spacing="leading")


def tiny_configs() -> dict:
    """Configs of the tiny pipeline: 4x16x16 latents, 128x128 images, a 32-wide text encoder."""
    return dict(
        unet=dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                  block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                  attention_head_dim=8, norm_num_groups=8),
        vae=dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                 block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8, sample_size=128,
                 scaling_factor=0.18215),
        text=dict(vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=32, projection_dim=32,
                  bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    image_size=32, patch_size=8, projection_dim=64),
        mlp_dims=(64, 128, 32, 16, 8, 1),
        max_length=32,
    )


def full_size_configs() -> dict:
    """SD v1.5-sized configs (UNet 860M, VAE 84M, CLIP-L text, CLIP ViT-L/14 image tower, LAION MLP)."""
    return dict(
        unet=dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                  block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
                  attention_head_dim=8),
        vae=dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                 block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512, scaling_factor=0.18215),
        text=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, max_position_embeddings=77, projection_dim=768,
                  bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                    num_attention_heads=16, image_size=224, patch_size=14, projection_dim=768),
        mlp_dims=(768, 1024, 128, 64, 16, 1),
        max_length=77,
    )


def char_tokenizer(max_length: int):
    """A byte-level CLIP tokenizer with no merges (one token per byte, 514 tokens): tiny and offline."""
    from transformers import CLIPTokenizer

    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs, n = bs[:], 0
    for b in range(256):                       # GPT-2 / CLIP bytes_to_unicode
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [chr(c) for c in cs]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def build_random_pipeline(size: str = "tiny", seed: int = 0):
    """A randomly initialised ``StableDiffusionPipeline`` (``size`` = ``"tiny"`` or ``"full"``)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = {"tiny": tiny_configs, "full": full_size_configs}.get(size)
    if cfg is None:
        raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
    cfg = cfg()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**cfg["unet"])
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**cfg["vae"])
    torch.manual_seed(seed + 2)
    text = CLIPTextModel(CLIPTextConfig(**cfg["text"]))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=char_tokenizer(cfg["max_length"]),
                                   unet=unet, scheduler=DDIMScheduler(**sd_scheduler_config()),
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(torch.float32)


def build_random_scorer(size: str = "tiny", seed: int = 0) -> AestheticScorer:
    """A randomly initialised aesthetic-shaped scorer (CLIP image tower with projection + MLP head)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = {"tiny": tiny_configs, "full": full_size_configs}.get(size)
    if cfg is None:
        raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
    cfg = cfg()
    torch.manual_seed(seed + 3)
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg["vision"]))
    torch.manual_seed(seed + 4)
    mlp = AestheticMLP(cfg["mlp_dims"])
    return AestheticScorer(vision, mlp)


# ---- loading ------------------------------------------------------------------------------------
def verify_tiny(folder: Path = TINY_DIR) -> None:
    """Check every file listed in ``data/tiny_sd/SHA256SUMS`` against its recorded sha256."""
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        raise FileNotFoundError(f"{sums} is missing: run `python scripts/build_tiny_sd.py`")
    for line in sums.read_text().splitlines():
        digest, rel = line.split(maxsplit=1)
        p = folder / rel
        if not p.is_file():
            raise FileNotFoundError(f"tiny SD file {p} is missing: run `python scripts/build_tiny_sd.py`")
        if sha256(p) != digest:
            raise ValueError(f"tiny SD file {p} does not match its recorded sha256 {digest[:12]}...: "
                             f"rebuild with `python scripts/build_tiny_sd.py`")


def _configure(pipe, device, attention_slicing: bool, gradient_checkpointing: bool):
    from diffusers import DDIMScheduler

    if not isinstance(pipe.scheduler, DDIMScheduler):      # our loop is DDIM(eta); same alpha-bar
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    if attention_slicing:
        pipe.enable_attention_slicing()
    if gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
        pipe.vae.enable_gradient_checkpointing()
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.requires_grad_(False)
    return pipe.to(device)


def _require_cached(repo_id: str, filename: str, what: str, env: str, default: str,
                    fallback: str = "data/tiny_sd") -> None:
    """Offline fast path: fail in milliseconds (before importing diffusers) if the hub cache lacks it."""
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(repo_id, filename)
    except Exception as e:                                 # e.g. an invalid repo id
        hit = None
        cause = f" Cause: {type(e).__name__}: {str(e)[:200]}"
    else:
        cause = f" Cause: {filename} of {repo_id!r} is not in the local hub cache and HF_HUB_OFFLINE is set."
    if not isinstance(hit, str):
        raise WeightsNotFoundError(_how_to(f"{what} {repo_id!r}", env, default, cause, fallback=fallback))


def load_pipeline(model_id: str | os.PathLike | None = None, device="cpu", dtype=torch.float32,
                  local_files_only: bool | None = None, attention_slicing: bool = False,
                  gradient_checkpointing: bool = False, **from_pretrained_kwargs):
    """``StableDiffusionPipeline.from_pretrained`` with a ``DDIMScheduler`` and our options.

    ``model_id``: hub id or local folder (default ``$NTRK_SD_MODEL`` or ``DEFAULT_MODEL_ID``).
    ``dtype``: UNet / text encoder / VAE dtype as loaded (``LatentAesthetic`` keeps its own copy
    precision via ``reward_dtype``). Raises ``WeightsNotFoundError`` (an ``OSError``) naming the id.
    """
    model_id = str(model_id or os.environ.get("NTRK_SD_MODEL") or DEFAULT_MODEL_ID)
    if local_files_only is None:
        local_files_only = _offline()
    if local_files_only and not Path(model_id).is_dir():
        _require_cached(model_id, "model_index.json", "Stable Diffusion weights", "NTRK_SD_MODEL",
                        DEFAULT_MODEL_ID)
    from diffusers import StableDiffusionPipeline

    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            model_id, dtype=dtype, safety_checker=None, requires_safety_checker=False,
            local_files_only=local_files_only, **from_pretrained_kwargs)
    except (OSError, ValueError) as e:
        raise WeightsNotFoundError(_how_to(f"Stable Diffusion weights {model_id!r}", "NTRK_SD_MODEL",
                                           DEFAULT_MODEL_ID,
                                           f" Cause: {type(e).__name__}: {str(e)[:200]}")) from e
    return _configure(pipe, device, attention_slicing, gradient_checkpointing)


def load_tiny_pipeline(device="cpu", dtype=torch.float32, attention_slicing: bool = False,
                       gradient_checkpointing: bool = False):
    """The tiny random pipeline of ``data/tiny_sd/pipeline``, sha256-checked, via ``from_pretrained``."""
    verify_tiny()
    return load_pipeline(TINY_DIR / "pipeline", device=device, dtype=dtype, local_files_only=True,
                         attention_slicing=attention_slicing,
                         gradient_checkpointing=gradient_checkpointing)


def load_sd(prefer: str = "real", device="cpu", dtype=torch.float32, model_id=None, clip_id=None,
            mlp_weights=None, verbose: bool = True, **kwargs):
    """``(pipe, scorer, which)``: the real SD + aesthetic predictor, else the tiny offline pair.

    ``prefer="tiny"`` skips the attempt. ``which`` is ``"real"`` or ``"tiny"``; the reason for a
    fallback is printed (``verbose``), never raised.
    """
    if prefer not in ("real", "tiny"):
        raise ValueError(f"prefer must be 'real' or 'tiny', got {prefer!r}")
    if prefer == "real":
        t0 = time.perf_counter()
        try:
            pipe = load_pipeline(model_id, device=device, dtype=dtype, **kwargs)
            scorer = load_aesthetic(clip_id, mlp_weights, device=device)
            return pipe, scorer, "real"
        except WeightsNotFoundError as e:
            if verbose:
                print(f"[ntrk_minimal.sd] real weights unavailable after "
                      f"{1e3 * (time.perf_counter() - t0):.0f} ms -> tiny offline path.\n  {e}")
    opts = {k: v for k, v in kwargs.items() if k in ("attention_slicing", "gradient_checkpointing")}
    return load_tiny_pipeline(device=device, dtype=dtype, **opts), load_tiny_aesthetic(device=device), "tiny"


# ---- the adapter: model protocol and reward -----------------------------------------------------
class GuidedUNet(nn.Module):
    """The model protocol ``eps_hat(x_t, t)`` for SD: UNet + classifier-free guidance.

    Args:
        unet: the pipeline's ``UNet2DConditionModel``.
        prompt_embeds: (B, L, D) text embeddings of the B prompts.
        negative_embeds: (B, L, D) embeddings of the negative / empty prompt (None: no guidance).
        guidance_scale: ``s``; guidance is applied when ``s > 1`` and ``negative_embeds`` is given.
    A batch ``x_t`` of size ``k * B`` (BoN, SMC, SVDD candidates: grouped ``[copy][prompt]``) reuses
    the embeddings ``k`` times. Inputs are cast to the UNet's dtype, outputs back to ``x_t``'s.
    """

    def __init__(self, unet, prompt_embeds, negative_embeds=None, guidance_scale: float = 7.5):
        super().__init__()
        if prompt_embeds.ndim != 3:
            raise ValueError(f"prompt_embeds must be (B, L, D), got {tuple(prompt_embeds.shape)}")
        if negative_embeds is not None and negative_embeds.shape != prompt_embeds.shape:
            raise ValueError(f"negative_embeds {tuple(negative_embeds.shape)} must match "
                             f"prompt_embeds {tuple(prompt_embeds.shape)}")
        self.unet, self.guidance_scale = unet, float(guidance_scale)
        self.cfg = negative_embeds is not None and self.guidance_scale > 1.0
        self.prompt_embeds, self.negative_embeds = prompt_embeds, negative_embeds

    def forward(self, x_t: torch.Tensor, t) -> torch.Tensor:
        B, n = self.prompt_embeds.shape[0], x_t.shape[0]
        if n % B:
            raise ValueError(f"x_t's batch ({n}) must be a multiple of the number of prompts ({B})")
        k = n // B
        emb = self.prompt_embeds.repeat(k, 1, 1)
        x_in = x_t.to(self.unet.dtype)
        if self.cfg:                                      # [uncond; cond], as the pipeline
            emb = torch.cat([self.negative_embeds.repeat(k, 1, 1), emb])
            x_in = torch.cat([x_in, x_in])
        t = torch.as_tensor(t, device=x_t.device)
        eps = self.unet(x_in, t, encoder_hidden_states=emb, return_dict=False)[0]
        if self.cfg:
            eps_u, eps_c = eps.chunk(2)
            eps = eps_u + self.guidance_scale * (eps_c - eps_u)   # eps_u + s (eps_c - eps_u)
        return eps.to(x_t.dtype)


class LatentAesthetic(nn.Module):
    """``r(z) = aesthetic((VAE.decode(z / scaling_factor + shift) + 1) / 2)``: latents (B,4,h,w) -> (B,).

    The VAE decoder and the scorer run in ``dtype`` (fp32 by default: the reward gradient in fp32
    even when the UNet is fp16). ``chunk``: decode at most this many latents at a time.
    """

    def __init__(self, vae, scorer: AestheticScorer, dtype=torch.float32, chunk: int | None = None):
        super().__init__()
        self.vae = vae.to(dtype).requires_grad_(False)
        self.scorer = scorer.to(dtype).requires_grad_(False)
        self.dtype, self.chunk = dtype, chunk
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1] (not clamped, so gradients survive), (B, 3, H, W)."""
        z = z.to(self.dtype) / self.scaling_factor + self.shift_factor
        parts = z.split(self.chunk) if self.chunk else (z,)
        img = torch.cat([self.vae.decode(p, return_dict=False)[0] for p in parts])
        return (img + 1) / 2

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        r = self.scorer(self.decode(z))
        return r if r.dtype == torch.float64 else r.float()


# ---- a problem: prompts + pipeline + reward + schedule ------------------------------------------
@dataclass
class SDProblem:
    """What the samplers need for SD: ``model``, ``reward``, ``schedule`` and how to draw ``x_T``."""

    pipe: object
    model: GuidedUNet
    reward: LatentAesthetic
    schedule: Schedule
    latent_shape: tuple
    prompts: list
    guidance_scale: float
    latent_dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def dim(self) -> int:
        """N = C h w, the latent dimension (16,384 for 4x64x64)."""
        return math.prod(self.latent_shape)

    @property
    def num_prompts(self) -> int:
        return len(self.prompts)

    def x_T(self, generator, copies: int = 1) -> torch.Tensor:
        """Initial latents ``(copies * B, C, h, w)`` drawn as the pipeline's ``prepare_latents``."""
        from diffusers.utils.torch_utils import randn_tensor

        shape = (copies * self.num_prompts,) + tuple(self.latent_shape)
        x = randn_tensor(shape, generator=generator, device=self.device, dtype=self.latent_dtype)
        return x * self.pipe.scheduler.init_noise_sigma

    def images(self, z: torch.Tensor) -> torch.Tensor:
        """Decoded images in [0, 1], clamped, no gradient: (B, 3, H, W) float32 CPU."""
        with torch.no_grad():
            return self.reward.decode(z).clamp(0, 1).float().cpu()

    def score(self, z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.reward(z).cpu()


def make_problem(pipe, scorer: AestheticScorer, prompts, negative_prompt: str | list | None = "",
                 guidance_scale: float = 7.5, num_steps: int = 25, eta: float = 1.0,
                 height: int | None = None, width: int | None = None,
                 reward_dtype=torch.float32, latent_dtype=torch.float32,
                 decode_chunk: int | None = None) -> SDProblem:
    """Encode the prompts once and wrap pipeline + scorer into an ``SDProblem``.

    ``negative_prompt=None`` or ``guidance_scale <= 1`` turns classifier-free guidance off.
    ``height``/``width`` default to the UNet's sample size times the VAE factor (512 for SD 1.5).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a string or a non-empty list of strings, got {prompts!r}")
    device = pipe.unet.device
    vae_factor = getattr(pipe, "vae_scale_factor", 8)
    height = height or pipe.unet.config.sample_size * vae_factor
    width = width or pipe.unet.config.sample_size * vae_factor
    if height % vae_factor or width % vae_factor:
        raise ValueError(f"height and width must be multiples of {vae_factor}, got {height}x{width}")
    cfg = negative_prompt is not None and guidance_scale > 1.0
    with torch.no_grad():
        if cfg and isinstance(negative_prompt, str):
            negative_prompt = [negative_prompt] * len(prompts)
        cond, neg = pipe.encode_prompt(prompts, device, 1, cfg,
                                       negative_prompt=negative_prompt if cfg else None)
    if not cfg:
        guidance_scale = 1.0                  # what the pipeline must be told to reproduce us
    model = GuidedUNet(pipe.unet, cond, neg if cfg else None, guidance_scale)
    reward = LatentAesthetic(pipe.vae, scorer, dtype=reward_dtype, chunk=decode_chunk)
    schedule = Schedule.from_scheduler(pipe.scheduler, num_steps, eta=eta)
    shape = (pipe.unet.config.in_channels, height // vae_factor, width // vae_factor)
    return SDProblem(pipe, model, reward, schedule, shape, prompts, float(guidance_scale),
                     latent_dtype, torch.device(device))


def pipeline_latents(problem: SDProblem, generator, negative_prompt="") -> torch.Tensor:
    """The reference: ``pipe(prompts, eta=1, DDIM, output_type="latent")`` with the same settings."""
    s = problem.schedule
    out = problem.pipe(problem.prompts, height=problem.latent_shape[1] * problem.pipe.vae_scale_factor,
                       width=problem.latent_shape[2] * problem.pipe.vae_scale_factor,
                       num_inference_steps=s.num_steps, guidance_scale=problem.guidance_scale,
                       negative_prompt=([negative_prompt] * problem.num_prompts
                                        if problem.model.cfg and isinstance(negative_prompt, str)
                                        else negative_prompt if problem.model.cfg else None),
                       eta=s.eta, generator=generator, output_type="latent")
    return out.images


# ---- methods at matched NFEs --------------------------------------------------------------------
METHODS = ("base", "dps", "svdd", "ntrk", "ntrk_raw", "bon", "smc", "ntrk_bon")


def run_method(problem: SDProblem, method: str, generator, *, kappa: float = 0.5,
               decay: str = "constant", dps_scale: float = 1.0, num_candidates: int = 4,
               num_samples: int = 4, num_particles: int = 4, beta: float = 0.1, record: bool = False):
    """Run one method on ``problem``; returns ``SampleResult`` (``x0`` = final latents, ``nfe``).

    ``ntrk``: ``rho_t = kappa^2 / N`` (``rho_from_kappa``), whitened gradient; ``ntrk_raw``: the same
    with W switched off (norm-matched gradient). ``dps``: ``lambda_t = dps_scale * sigma_t^2 / ||g||``
    with the reward gradient w.r.t. ``x0_hat`` rescaled per sample to length ``sqrt(N)`` before it is
    back-propagated through Tweedie and the UNet (the raw scale of an aesthetic gradient is arbitrary). ``svdd``: argmax over ``num_candidates``. ``bon`` /
    ``ntrk_bon``: best of ``num_samples``. ``smc``: ``num_particles`` particles at temperature ``beta``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    m, s, r = problem.model, problem.schedule, problem.reward
    rho = rho_from_kappa(kappa, problem.dim, decay)
    if method == "base":
        return sample(m, s, problem.x_T(generator), "base", generator, record=record)
    if method == "ntrk":
        return sample(m, s, problem.x_T(generator), "ntrk", generator, r, record=record, rho_t=rho)
    if method == "ntrk_raw":
        return sample(m, s, problem.x_T(generator), "ntrk", generator, r, record=record, rho_t=rho,
                      whiten=norm_match)
    if method == "dps":
        return sample(m, s, problem.x_T(generator), "dps", generator, _NormalisedReward(r),
                      record=record, lambda_t=sigma2_scaled(dps_scale))
    if method == "svdd":
        return sample(m, s, problem.x_T(generator), "svdd", generator, r, record=record,
                      num_candidates=num_candidates)
    if method == "bon":
        return best_of_n(m, s, problem.x_T(generator, num_samples), num_samples, r, "base", generator)
    if method == "ntrk_bon":
        return best_of_n(m, s, problem.x_T(generator, num_samples), num_samples, r, "ntrk", generator,
                         rho_t=rho)
    return smc(m, s, problem.x_T(generator, num_particles), num_particles, r, beta, generator)


class _NormalisedReward(nn.Module):
    """DPS on SD: same value as ``r``, but ``d r / d x0_hat`` is rescaled to length ``sqrt(N)``.

    The raw aesthetic gradient through VAE + CLIP has no meaningful scale; normalising it at
    ``x0_hat`` (per sample, direction kept, the length NTRK's W uses) makes ``lambda_t = c sigma_t^2``
    comparable across models. The chain through Tweedie and the UNet is left untouched.
    """

    def __init__(self, reward):
        super().__init__()
        self.reward = reward

    def forward(self, z):
        z2 = _GradNorm.apply(z)
        return self.reward(z2)


class _GradNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        return z.view_as(z)

    @staticmethod
    def backward(ctx, g):
        return norm_match(g)


def generate(problem: SDProblem, method: str, seeds, **kwargs) -> tuple[torch.Tensor, list]:
    """One trajectory per seed (``torch.Generator(device).manual_seed(seed)``), all prompts each.

    Per-image seeds make every image reproducible on its own, whatever the batch. Returns
    ``(latents (len(seeds) * B, C, h, w), nfes)``.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must be a non-empty list of ints")
    outs, nfes = [], []
    for seed in seeds:
        g = torch.Generator(problem.device).manual_seed(seed)
        res = run_method(problem, method, g, **kwargs)
        outs.append(res.x0)
        nfes.append(res.nfe)
    return torch.cat(outs), nfes


def peak_memory(device) -> float | None:
    """Peak allocated GPU memory in GiB since the last reset (None on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return None


# ---- measurements shared by notebook 06 and scripts/gpu_sd_bench.py ------------------------------
def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _timed_run(problem: SDProblem, method: str, seed: int, **kwargs):
    """``run_method`` with ``Generator(device).manual_seed(seed)``; returns ``(result, wall seconds)``,
    timed between device synchronisations."""
    g = torch.Generator(problem.device).manual_seed(int(seed))
    _sync(problem.device)
    t0 = time.perf_counter()
    res = run_method(problem, method, g, **kwargs)
    _sync(problem.device)
    return res, time.perf_counter() - t0


def step_timings(problem: SDProblem, methods=("base", "dps", "ntrk"), seed: int = 0,
                 **kwargs) -> dict:
    """Seconds per sampling step and peak GPU memory (GiB, None on CPU) for each method.

    One full trajectory per method after a one-step warm-up; ``wall / num_steps``.
    """
    out = {}
    for m in methods:
        dev = problem.device
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        res, wall = _timed_run(problem, m, seed, **kwargs)
        out[m] = dict(step_s=wall / problem.schedule.num_steps, wall_s=wall, nfe=res.nfe,
                      peak_gib=peak_memory(dev))
    return out


def compare(problem: SDProblem, specs: dict, seeds) -> dict:
    """Run every ``name -> (method, kwargs)`` on every seed; mean aesthetic over the prompts per seed.

    Returns ``name -> dict(scores=[per seed], nfe, wall_s=[per seed])``.
    """
    results = {}
    for name, (method, kw) in specs.items():
        scores, walls, nfe = [], [], None
        for seed in seeds:
            res, wall = _timed_run(problem, method, seed, **kw)
            walls.append(wall)
            scores.append(float(problem.score(res.x0).mean()))
            nfe = res.nfe
        results[name] = dict(scores=scores, nfe=nfe, wall_s=walls)
    return results


def matched_specs(num_steps: int, budget: int, kappa: float = 0.5, dps_scale: float = 1.0,
                  beta: float = 0.1) -> dict:
    """Methods at ``num_steps`` NFEs and at ``budget * num_steps`` NFEs (the paper: 25 and 500).

    SVDD with ``budget`` candidates costs ``1 + budget (T - 1)`` NFEs, a little under the budget.
    """
    if not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive int, got {budget!r}")
    return {
        "base": ("base", {}),
        "DPS": ("dps", dict(dps_scale=dps_scale)),
        "NTRK": ("ntrk", dict(kappa=kappa)),
        "NTRK (W off)": ("ntrk_raw", dict(kappa=kappa)),
        f"BoN-{budget}": ("bon", dict(num_samples=budget)),
        f"SVDD K={budget}": ("svdd", dict(num_candidates=budget)),
        f"SMC P={budget}": ("smc", dict(num_particles=budget, beta=beta)),
        f"NTRK+BoN-{budget}": ("ntrk_bon", dict(num_samples=budget, kappa=kappa)),
    }


def results_table(results: dict, digits: int = 4, wall: bool = True) -> str:
    """Markdown table: method, NFE, aesthetic mean ± 95% CI over seeds (and wall seconds per run)."""
    from .bench import fmt_ci, markdown_table

    n = len(next(iter(results.values()))["scores"])
    header = ["method", "NFE", f"aesthetic (mean ± 95% CI, {n} seeds)"] + (["wall s / run"] if wall else [])
    rows = [[name, f"{r['nfe']:.0f}", fmt_ci(r["scores"], digits)]
            + ([f"{sum(r['wall_s']) / len(r['wall_s']):.2f}"] if wall else [])
            for name, r in results.items()]
    return markdown_table(header, rows)
