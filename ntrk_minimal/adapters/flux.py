"""FLUX through diffusers: real weights or a tiny offline pipeline, loaded by the same code.

FLUX.1 is a rectified flow, ``x_t = (1 - t) x_0 + t eps`` with ``t = sigma`` in [0, 1], whose
transformer predicts the velocity ``v = eps - x_0`` (docs/METHOD.md section 6). Its ``FluxPipeline`` holds:

* ``transformer``: ``FluxTransformer2DModel`` on *packed* latents: the 16-channel VAE latent
  (B, 16, h, w) cut into 2x2 patches, (B, h/2 * w/2, 64), with rotary position ids per patch; FLUX.1-dev
  is guidance-distilled (``guidance_embeds=True``: the guidance scale is an input, one pass per step);
* ``vae``: ``AutoencoderKL`` with 16 latent channels, ``z = (latent - shift_factor) * scaling_factor``;
* ``text_encoder`` + ``tokenizer``: CLIP (its *pooled* output conditions the transformer) and
  ``text_encoder_2`` + ``tokenizer_2``: T5 (its token embeddings are the attention context);
* ``scheduler``: ``FlowMatchEulerDiscreteScheduler`` (sigmas shifted by the image size, ``mu``).

**Our sampling loop on FLUX** (``make_problem`` -> ``FluxProblem``; any kernel, ``run_method``):

    v(x_t, t)  = transformer(x_t, t / 1000, guidance, CLIP_pooled, T5, txt_ids, img_ids)   # FluxVelocity
    x0_hat     = x_t - s_t v,   eps_hat = x_t + (1 - s_t) v                              # VelocityModel
    x_prev     = (1 - s_prev) x0_hat + sqrt(s_prev^2 - sigma_t^2) eps_hat + sigma_t eta_t   # every kernel
    r(x)       = aesthetic( clamp01_st( VAE.decode(unpack(x) / scaling + shift) * 0.5 + 0.5 ) )

with the pipeline's own grid (``flow_schedule``: ``sigmas = linspace(1, 1/T, T)`` shifted by
``mu = calculate_shift(L)``, L = number of packed tokens) and ``sigma_t = noise * s_prev``. The state
is the pipeline's packed latent (B, L, 64), drawn like ``prepare_latents``; ``W`` and the reward see
it unpacked, (B, 16, h, w). ``noise = 1`` is ``FlowMatchEulerDiscreteScheduler(stochastic_sampling=
True)``: with ``rho = 0`` our loop reproduces ``FluxPipeline.__call__`` bit for bit in float32
(``pipeline_latents``; the pipeline draws its step noise from torch's global generator, see
``seeded_global``); ``noise = 0`` is its default Euler sampler, to float round-off (the DDIM form and
``x_t + (s_prev - s_t) v`` are equal algebraically, not operation for operation). In bf16 diffusers
rounds ``sigma`` to bf16 inside ``sigma * v`` and we do not: trajectories then agree to about one bf16
ulp per step. The reward sees the image a user sees (the pipeline's ``(img * 0.5 + 0.5).clamp(0, 1)``
in value) and guides through the straight-through surrogate of the clamp (identity gradient).

Loading: ``load_pipeline()`` reads the model id from the argument, ``$NTRK_FLUX_MODEL`` or the default
``black-forest-labs/FLUX.1-dev`` (a hub id or a local ``save_pretrained`` folder; FLUX.1-schnell works
too); without weights it raises ``WeightsNotFoundError`` saying which id and how to provide it (in
milliseconds under ``HF_HUB_OFFLINE=1``). ``load_tiny_pipeline()`` loads the tiny random pipeline in
``data/tiny_flux`` (built by ``scripts/build_tiny_flux.py``, sha256-checked) through the same
``FluxPipeline.from_pretrained``: it proves the plumbing, not the pictures. ``load_flux()`` tries the
real one and falls back to the tiny one, printing why.

A full-size FLUX.1 transformer (12B parameters, ~24 GB in bf16) needs a GPU; the tiny one runs anywhere.
GPU options: ``dtype`` (bf16 transformer and text encoders), ``reward_dtype`` (VAE + CLIP, fp32 by
default), ``gradient_checkpointing``, ``decode_chunk``; ``scripts/bench_flux.py`` times it.
"""
from __future__ import annotations

import math
import os
import string
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..paths import DATA
from ..schedules import Schedule, VelocityModel
from ..whitening import whiten
from .aesthetic import clamp01_st, load_aesthetic, load_tiny_aesthetic
from .hub import WeightsNotFoundError, how_to, offline, require_cached, verify_sums
from .sd import METHODS, char_tokenizer, run_method   # noqa: F401 (run_method: any method of the table on FLUX too)

__all__ = ["DEFAULT_MODEL_ID", "TINY_DIR", "WeightsNotFoundError", "flux_scheduler_config",
           "tiny_configs", "t5_char_tokenizer", "build_random_pipeline", "verify_tiny",
           "load_pipeline", "load_tiny_pipeline", "load_flux", "pack", "unpack", "latent_image_ids",
           "FluxVelocity", "clamp01_st", "FluxLatentReward", "FluxProblem", "flow_schedule",
           "make_problem", "pipeline_latents", "seeded_global", "METHODS", "run_method"]

DEFAULT_MODEL_ID = "black-forest-labs/FLUX.1-dev"
ENV = "NTRK_FLUX_MODEL"
TINY_DIR = DATA / "tiny_flux"
BUILD = "`python scripts/build_tiny_flux.py`"
GATED_NOTE = (" FLUX.1-dev is gated on the hub: accept its licence on its model page and log in "
              "(`huggingface-cli login`) before downloading; black-forest-labs/FLUX.1-schnell "
              "(Apache-2.0) is not gated.")


# ---- configurations ----------------------------------------------------------------------------
def flux_scheduler_config() -> dict:
    """FLUX.1-dev's ``FlowMatchEulerDiscreteScheduler`` config: resolution-dependent shift ``mu``."""
    return dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)


def tiny_configs() -> dict:
    """Configs of the tiny pipeline: 128x128 images, 16x16x16 latents (64 packed tokens of 64)."""
    return dict(
        transformer=dict(patch_size=1, in_channels=64, num_layers=2, num_single_layers=2,
                         attention_head_dim=16, num_attention_heads=4, joint_attention_dim=32,
                         pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6)),
        vae=dict(in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1,
                 block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8, sample_size=128,
                 scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                 use_post_quant_conv=False),
        clip=dict(vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=32, projection_dim=32,
                  bos_token_id=0, eos_token_id=1, pad_token_id=1),
        t5=dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                relative_attention_num_buckets=8, relative_attention_max_distance=32,
                feed_forward_proj="gated-gelu", dropout_rate=0.0, tie_word_embeddings=False,
                pad_token_id=0, eos_token_id=1, decoder_start_token_id=0),
        clip_max_length=32,
        t5_max_length=32,
    )


def t5_char_tokenizer(max_length: int = 32):
    """A T5 (Unigram) tokenizer over printable ASCII, built offline: pieces ``c`` and ``▁c`` per char.

    Ids: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, ``▁`` 3, then the pieces; every character piece scores
    -1 (``▁`` alone -2), so the Viterbi segmentation has the fewest pieces: a word is ``▁`` + its first
    character, then one piece per character.
    """
    from transformers import T5TokenizerFast

    chars = sorted(set(string.printable) - set(string.whitespace))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(p, -1.0) for c in chars for p in ("▁" + c, c)]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=max_length)


def build_random_pipeline(seed: int = 0):
    """A randomly initialised tiny ``FluxPipeline`` (configs of ``tiny_configs``), fp32, CPU."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    cfg = tiny_configs()
    tok2 = t5_char_tokenizer(cfg["t5_max_length"])
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(**cfg["transformer"])
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**cfg["vae"])
    torch.manual_seed(seed + 2)
    clip = CLIPTextModel(CLIPTextConfig(**cfg["clip"]))
    torch.manual_seed(seed + 3)
    t5 = T5EncoderModel(T5Config(vocab_size=len(tok2), **cfg["t5"]))
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**flux_scheduler_config()), vae=vae,
                        text_encoder=clip, tokenizer=char_tokenizer(cfg["clip_max_length"]),
                        text_encoder_2=t5, tokenizer_2=tok2, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---- loading ------------------------------------------------------------------------------------
def verify_tiny(folder: Path = TINY_DIR) -> None:
    """Check every file listed in ``data/tiny_flux/SHA256SUMS`` against its recorded sha256."""
    verify_sums(folder, BUILD)


def _configure(pipe, device, gradient_checkpointing: bool):
    from diffusers import FlowMatchEulerDiscreteScheduler

    if not isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler):
        raise TypeError(f"expected a FlowMatchEulerDiscreteScheduler, the pipeline has "
                        f"{type(pipe.scheduler).__name__}")
    pipe.set_progress_bar_config(disable=True)
    if gradient_checkpointing:
        pipe.transformer.enable_gradient_checkpointing()
        pipe.vae.enable_gradient_checkpointing()
    for m in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        m.requires_grad_(False)
    return pipe.to(device)


def load_pipeline(model_id: str | os.PathLike | None = None, device="cpu", dtype=torch.float32,
                  local_files_only: bool | None = None, gradient_checkpointing: bool = False,
                  **from_pretrained_kwargs):
    """``FluxPipeline.from_pretrained(model_id)`` with our options, on ``device``.

    ``model_id``: hub id or local folder (default ``$NTRK_FLUX_MODEL`` or ``DEFAULT_MODEL_ID``).
    ``dtype``: of every component as loaded (bf16 is FLUX's native precision on a GPU).
    Raises ``WeightsNotFoundError`` (an ``OSError``) naming the id and how to provide it.
    """
    model_id = str(model_id or os.environ.get(ENV) or DEFAULT_MODEL_ID)
    if local_files_only is None:
        local_files_only = offline()
    if Path(model_id).is_dir() and not (Path(model_id) / "model_index.json").is_file():
        raise WeightsNotFoundError(how_to(f"FLUX weights {model_id!r}", ENV, DEFAULT_MODEL_ID,
                                           " Cause: that folder has no model_index.json (not a "
                                           "`save_pretrained` pipeline folder).", fallback="data/tiny_flux"))
    if local_files_only and not Path(model_id).is_dir():
        try:
            require_cached(model_id, "model_index.json", "FLUX weights", ENV, DEFAULT_MODEL_ID,
                            fallback="data/tiny_flux")
        except WeightsNotFoundError as e:
            raise WeightsNotFoundError(str(e) + GATED_NOTE) from None
    from diffusers import FluxPipeline

    try:
        pipe = FluxPipeline.from_pretrained(model_id, dtype=dtype, local_files_only=local_files_only,
                                            **from_pretrained_kwargs)
    except (OSError, ValueError) as e:
        raise WeightsNotFoundError(how_to(f"FLUX weights {model_id!r}", ENV, DEFAULT_MODEL_ID,
                                           f" Cause: {type(e).__name__}: {str(e)[:200].rstrip('.')}." + GATED_NOTE,
                                           fallback="data/tiny_flux")) from e
    return _configure(pipe, device, gradient_checkpointing)


def load_tiny_pipeline(device="cpu", dtype=torch.float32, gradient_checkpointing: bool = False):
    """The tiny random pipeline of ``data/tiny_flux``, sha256-checked, via ``FluxPipeline.from_pretrained``."""
    verify_tiny()
    return load_pipeline(TINY_DIR, device=device, dtype=dtype, local_files_only=True,
                         gradient_checkpointing=gradient_checkpointing)


def load_flux(prefer: str = "real", device="cpu", dtype=torch.float32, model_id=None, clip_id=None,
              mlp_weights=None, verbose: bool = True, **kwargs):
    """``(pipe, scorer, which)``: real FLUX + the LAION aesthetic predictor, else the tiny offline pair.

    ``prefer="tiny"`` skips the attempt. ``which`` is ``"real"`` or ``"tiny"``; the reason for a
    fallback is printed (``verbose``), never raised. The tiny scorer is the tiny aesthetic-shaped
    one of ``data/tiny_sd/aesthetic`` (random: plumbing only).
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
                print(f"[ntrk_minimal.adapters.flux] real weights unavailable after "
                      f"{1e3 * (time.perf_counter() - t0):.0f} ms -> tiny offline path.\n  {e}")
    opts = {k: v for k, v in kwargs.items() if k == "gradient_checkpointing"}
    return load_tiny_pipeline(device=device, dtype=dtype, **opts), load_tiny_aesthetic(device=device), "tiny"


# ---- the adapter: packing, the velocity model, the reward ----------------------------------------
def pack(z: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) latents -> (B, h/2 * w/2, 4C) tokens: each token one 2x2 patch, ``[c, dy, dx]``
    order (``FluxPipeline._pack_latents``)."""
    B, C, h, w = z.shape
    if h % 2 or w % 2:
        raise ValueError(f"latent height and width must be even to pack 2x2 patches, got {h}x{w}")
    z = z.reshape(B, C, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)   # (B, h/2, w/2, C, 2, 2)
    return z.reshape(B, (h // 2) * (w // 2), C * 4)


def unpack(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h/2 * w/2, 4C) tokens -> (B, C, h, w) latents: the inverse of ``pack``."""
    B, L, C4 = x.shape
    if L != (h // 2) * (w // 2) or C4 % 4:
        raise ValueError(f"tokens of shape {tuple(x.shape)} do not pack a {h}x{w} latent")
    x = x.reshape(B, h // 2, w // 2, C4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)  # (B, C, h/2, 2, w/2, 2)
    return x.reshape(B, C4 // 4, h, w)


def latent_image_ids(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(h/2 * w/2, 3) rotary position ids of the packed tokens: ``(0, row, col)`` per 2x2 patch."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


class FluxVelocity(nn.Module):
    """The velocity network ``v(x_t, t)`` of a ``FluxPipeline``, conditioned once on the prompts.

        v = transformer(x_t, timestep = t / 1000, guidance = g, pooled = CLIP_pooled(prompt),
                        context = T5(prompt), txt_ids = 0, img_ids = latent_image_ids)

    exactly as ``FluxPipeline.__call__`` calls it (``t`` = the scheduler's timestep ``1000 sigma``;
    the transformer multiplies timestep and guidance by 1000 again inside). ``x_t``: packed latents
    (k B, L, 64) for B prompts, grouped ``[copy][prompt]``. ``guidance_scale`` feeds the guidance
    embedding of guidance-distilled models (FLUX.1-dev); models without one (schnell) ignore it.
    """

    def __init__(self, transformer, prompt_embeds, pooled_embeds, text_ids, img_ids,
                 guidance_scale: float = 3.5):
        super().__init__()
        if prompt_embeds.shape[0] != pooled_embeds.shape[0]:
            raise ValueError(f"prompt_embeds {tuple(prompt_embeds.shape)} and pooled_embeds "
                             f"{tuple(pooled_embeds.shape)} must have the same batch")
        self.transformer, self.guidance_scale = transformer, float(guidance_scale)
        self.prompt_embeds, self.pooled_embeds = prompt_embeds, pooled_embeds
        self.text_ids, self.img_ids = text_ids, img_ids
        self.guided = bool(transformer.config.guidance_embeds)

    def forward(self, x_t: torch.Tensor, t) -> torch.Tensor:
        B, n = self.prompt_embeds.shape[0], x_t.shape[0]
        if n % B:
            raise ValueError(f"x_t's batch ({n}) must be a multiple of the number of prompts ({B})")
        k = n // B
        x_in = x_t.to(self.transformer.dtype)
        timestep = torch.as_tensor(t, device=x_t.device).expand(n).to(x_in.dtype)   # as the pipeline
        guidance = (torch.full([1], self.guidance_scale, device=x_t.device, dtype=torch.float32).expand(n)
                    if self.guided else None)
        return self.transformer(hidden_states=x_in, timestep=timestep / 1000, guidance=guidance,
                                pooled_projections=self.pooled_embeds.repeat(k, 1),
                                encoder_hidden_states=self.prompt_embeds.repeat(k, 1, 1),
                                txt_ids=self.text_ids, img_ids=self.img_ids, return_dict=False)[0]


class FluxLatentReward(nn.Module):
    """``r(x) = scorer(clamp01_st(VAE.decode(unpack(x) / scaling_factor + shift_factor) * 0.5 + 0.5))``.

    ``x``: packed latents (B, L, 64) -> (B,). The image is the pipeline's own output
    (``VaeImageProcessor.denormalize``: ``(img * 0.5 + 0.5).clamp(0, 1)``) in value; the clamp's
    gradient is straight-through (``clamp01_st``). VAE and scorer run in ``dtype`` (fp32 by default:
    the reward gradient in fp32 even when the transformer is bf16; note ``vae.to(dtype)`` converts the
    pipeline's VAE in place); ``chunk`` decodes at most this many latents at a time.
    """

    def __init__(self, vae, scorer, latent_hw: tuple, dtype=torch.float32, chunk: int | None = None):
        super().__init__()
        self.vae = (vae if vae.dtype == dtype else vae.to(dtype)).requires_grad_(False)
        self.scorer = scorer.to(dtype).requires_grad_(False)
        self.h, self.w = (int(v) for v in latent_hw)
        self.dtype, self.chunk = dtype, chunk
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Packed latents -> images (B, 3, H, W): clamped to [0, 1] in value, straight-through gradient."""
        z = unpack(x.to(self.dtype), self.h, self.w) / self.scaling_factor + self.shift_factor
        parts = z.split(self.chunk) if self.chunk else (z,)
        img = torch.cat([self.vae.decode(p, return_dict=False)[0] for p in parts])
        return clamp01_st(img * 0.5 + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.scorer(self.decode(x))
        return r if r.dtype == torch.float64 else r.float()


# ---- a problem: prompts + pipeline + reward + schedule ---------------------------------------------
@dataclass
class FluxProblem:
    """What the samplers need for FLUX: ``model``, ``reward``, ``schedule``, how to draw ``x_T``, ``W``.

    The sampler's state is the pipeline's own packed latent (B, L, 64), so that every random draw
    (``x_T`` and each step's noise) is the pipeline's; ``whiten`` and the reward unpack it to the
    16-channel latent image (B, 16, h, w) first, so ``W`` sees spatial tiles, not token rows.
    """

    pipe: object
    model: VelocityModel
    velocity: FluxVelocity
    reward: FluxLatentReward
    schedule: Schedule
    latent_shape: tuple                 # (16, h, w)
    prompts: list
    guidance_scale: float
    max_sequence_length: int
    latent_dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def dim(self) -> int:
        """N = 16 h w, the latent dimension (16,384 for a 256x256 image, 262,144 for 1024x1024)."""
        return math.prod(self.latent_shape)

    @property
    def num_prompts(self) -> int:
        return len(self.prompts)

    @property
    def image_size(self) -> tuple:
        f = self.pipe.vae_scale_factor
        return self.latent_shape[1] * f, self.latent_shape[2] * f

    def x_T(self, generator, copies: int = 1) -> torch.Tensor:
        """Initial packed latents ``(copies * B, L, 64)``, drawn as ``FluxPipeline.prepare_latents``:
        ``randn_tensor((copies * B, 16, h, w), generator)`` then ``pack``."""
        from diffusers.utils.torch_utils import randn_tensor

        shape = (copies * self.num_prompts,) + tuple(self.latent_shape)
        return pack(randn_tensor(shape, generator=generator, device=self.device, dtype=self.latent_dtype))

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        return unpack(x, self.latent_shape[1], self.latent_shape[2])

    def whiten(self, g: torch.Tensor, **kwargs) -> torch.Tensor:
        """``W`` on the latent image: ``pack(W(unpack(g)))`` (8x8 patches per channel, DCT bands)."""
        return pack(whiten(self.unpack(g), **kwargs))

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """Decoded images in [0, 1] (the pipeline's output), no gradient: (B, 3, H, W) float32 CPU."""
        with torch.no_grad():
            return self.reward.decode(x).float().cpu()

    def score(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.reward(x).cpu()


def flow_schedule(pipe, num_steps: int, noise: float, image_seq_len: int) -> Schedule:
    """The pipeline's grid: ``sigmas = linspace(1, 1/T, T)`` shifted by ``mu = calculate_shift(L)``
    (``FluxPipeline.__call__``), read from its ``FlowMatchEulerDiscreteScheduler``; ``sigma_t = noise s_prev``."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    c = pipe.scheduler.config
    mu = calculate_shift(image_seq_len, c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                         c.get("base_shift", 0.5), c.get("max_shift", 1.15))
    sigmas = np.linspace(1.0, 1 / num_steps, num_steps)
    return Schedule.from_flow_scheduler(pipe.scheduler, num_steps, noise, sigmas=sigmas, mu=mu)


def make_problem(pipe, scorer, prompts, guidance_scale: float = 3.5, num_steps: int = 25,
                 noise: float = 1.0, height: int | None = None, width: int | None = None,
                 max_sequence_length: int | None = None, reward_dtype=torch.float32,
                 latent_dtype=torch.float32, decode_chunk: int | None = None) -> FluxProblem:
    """Encode the prompts once and wrap pipeline + scorer into a ``FluxProblem``.

    ``noise``: ``sigma_t = noise * s_prev``; 1 = the stochastic sampler (NTRK needs ``noise > 0``),
    0 = the pipeline's Euler ODE. ``height``/``width`` default to the VAE's sample size (1024 for
    FLUX.1, 128 for the tiny pipeline); they must be multiples of ``2 * vae_scale_factor`` (16).
    ``max_sequence_length``: T5 tokens (default: the T5 tokenizer's ``model_max_length``, at most 512).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a string or a non-empty list of strings, got {prompts!r}")
    device = pipe.transformer.device
    f = pipe.vae_scale_factor
    height = height or int(pipe.vae.config.sample_size)
    width = width or int(pipe.vae.config.sample_size)
    if height % (2 * f) or width % (2 * f):
        raise ValueError(f"height and width must be multiples of {2 * f} (VAE factor {f} x 2x2 packing), "
                         f"got {height}x{width}")
    if max_sequence_length is None:
        max_sequence_length = min(int(pipe.tokenizer_2.model_max_length), 512)
    with torch.no_grad():
        prompt_embeds, pooled, text_ids = pipe.encode_prompt(prompts, prompt_2=None, device=device,
                                                             max_sequence_length=max_sequence_length)
    h, w = height // f, width // f
    C = pipe.transformer.config.in_channels // 4
    ids = latent_image_ids(h, w, device=device, dtype=prompt_embeds.dtype)
    velocity = FluxVelocity(pipe.transformer, prompt_embeds, pooled, text_ids, ids, guidance_scale)
    schedule = flow_schedule(pipe, num_steps, noise, (h // 2) * (w // 2))
    reward = FluxLatentReward(pipe.vae, scorer, (h, w), dtype=reward_dtype, chunk=decode_chunk)
    return FluxProblem(pipe, VelocityModel(velocity, schedule), velocity, reward, schedule, (C, h, w),
                       prompts, float(guidance_scale), int(max_sequence_length), latent_dtype,
                       torch.device(device))


def pipeline_latents(problem: FluxProblem, generator=None) -> torch.Tensor:
    """The reference: ``FluxPipeline.__call__(..., output_type="latent")`` with the problem's settings,
    its scheduler switched to ``stochastic_sampling=True`` when ``noise = 1`` (plain Euler when 0).

    Note: ``FluxPipeline`` draws ``x_T`` from ``generator`` but does not hand it to
    ``scheduler.step``, so the stochastic sampler's step noise comes from torch's *global* generator.
    To compare with our loop draw by draw, seed the global generator and run both with
    ``generator=None`` here and ``torch.default_generator`` there (``seeded_global``).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    s = problem.schedule
    if s.noise not in (0.0, 1.0):
        raise ValueError(f"the pipeline has samplers for noise = 0 (Euler) and 1 (stochastic) only, got {s.noise}")
    pipe, saved = problem.pipe, problem.pipe.scheduler
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(saved.config,
                                                                 stochastic_sampling=s.noise == 1.0)
    try:
        H, W = problem.image_size
        out = pipe(problem.prompts, height=H, width=W, num_inference_steps=s.num_steps,
                   guidance_scale=problem.guidance_scale, generator=generator,
                   max_sequence_length=problem.max_sequence_length, output_type="latent")
    finally:
        pipe.scheduler = saved
    return out.images


def seeded_global(seed: int, device="cpu") -> torch.Generator:
    """``torch.manual_seed(seed)`` and the device's default generator (what the pipeline's step uses)."""
    torch.manual_seed(int(seed))
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index or 0]
    return torch.default_generator
