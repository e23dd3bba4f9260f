"""Stable Diffusion through diffusers, run by *our* sampling loop: any kernel, the aesthetic reward.

The whole adapter is two small callables, so every sampler of the package (``sample`` with base /
DPS / SVDD / NTRK, ``best_of_n``, ``smc``) runs on SD unchanged:

    model(x_t, t)  = eps_u + s (eps_c - eps_u),   [eps_u; eps_c] = UNet([x_t; x_t], t, [e_neg; e_prompt])
                     (classifier-free guidance exactly as ``StableDiffusionPipeline.__call__``)
    reward(z)      = aesthetic( clamp01_st( VAE.decode(z / scaling_factor) * 0.5 + 0.5 ) )   # z = x0_hat

and the schedule is ``Schedule.from_scheduler(pipe.scheduler, 25, eta=1.0)`` read from the
pipeline's ``DDIMScheduler``. Initial latents are drawn like the pipeline's ``prepare_latents``
(``randn_tensor(shape, generator) * init_noise_sigma``), and the base kernel draws its step noise
``torch.randn(x.shape, generator)`` right after each model evaluation, as ``DDIMScheduler.step`` does:
with ``rho = 0`` our loop reproduces ``pipe(..., eta=1.0, output_type="latent")`` with the same
generator (tests/test_sd.py checks it on the tiny pipeline).

**The reward and the reported score see the user's image.** The pipeline returns
``(VAE.decode(z / scaling_factor) * 0.5 + 0.5).clamp(0, 1)``; the reward's *value* is the aesthetic
score of exactly that image, and its *gradient* goes through the straight-through surrogate of the
clamp (``aesthetic.clamp01_st``: forward clamp, backward identity; shared with ``flux``).
``SDProblem.score`` scores ``SDProblem.user_images``, the pipeline's own decode
(``pipe(..., output_type="pt")``), and equals the reward in fp32.

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

Devices and precision: every random draw (``x_T``, step noise, candidates, extra best-of-N / SMC
starts, resampling) comes from the caller's ``torch.Generator``, which must live on the pipeline's
device, and is drawn on that device. ``dtype`` sets the UNet / text encoder / pipeline VAE
(fp16/bf16 on a GPU); ``reward_dtype`` the reward's VAE copy and CLIP (fp32 by default: the reward
gradient is taken in fp32); ``latent_dtype`` the sampler's state, which keeps its dtype. Also
``attention_slicing``, ``gradient_checkpointing``, a batch of prompts, and ``generate(..., seeds=[...])``
for one seed per image.

The held-out reward of the SD world (``ntrk_minimal.worlds.sd``: the evaluation protocol on SD;
``scripts/gpu_sd_bench.py`` is its command) is the CLIP image-prompt cosine of the same CLIP
(``ClipText`` here); ``run_method`` runs any method of the table ``bench.methods`` on a latent problem
(``SDProblem`` or ``flux.FluxProblem``).
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn

from ..bench import methods as M
from ..paths import DATA
from ..schedules import Schedule
from .aesthetic import AestheticMLP, AestheticScorer, clamp01_st, load_aesthetic, load_tiny_aesthetic
from .hub import WeightsNotFoundError, how_to, offline, require_cached, verify_sums

__all__ = ["DEFAULT_MODEL_ID", "TINY_DIR", "WeightsNotFoundError", "sd_scheduler_config",
           "tiny_configs", "full_size_configs", "build_random_pipeline", "build_random_scorer",
           "load_pipeline", "load_tiny_pipeline", "load_sd", "verify_tiny", "GuidedUNet",
           "LatentAesthetic", "SDProblem", "make_problem", "METHODS", "run_method", "generate",
           "pipeline_call", "pipeline_latents", "peak_memory", "step_timings", "step_cost_split",
           "ClipText", "load_clip_text", "tiny_clip_text", "char_tokenizer", "configure"]

DEFAULT_MODEL_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
TINY_DIR = DATA / "tiny_sd"
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
    verify_sums(folder, "`python scripts/build_tiny_sd.py`")


def configure(pipe, device, attention_slicing: bool = False, gradient_checkpointing: bool = False):
    """A pipeline ready for our loop: a ``DDIMScheduler`` (same alpha-bar), no progress bar, frozen
    weights, the memory options, on ``device``."""
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
        local_files_only = offline()
    if local_files_only and not Path(model_id).is_dir():
        require_cached(model_id, "model_index.json", "Stable Diffusion weights", "NTRK_SD_MODEL",
                        DEFAULT_MODEL_ID)
    from diffusers import StableDiffusionPipeline

    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            model_id, dtype=dtype, safety_checker=None, requires_safety_checker=False,
            local_files_only=local_files_only, **from_pretrained_kwargs)
    except (OSError, ValueError) as e:
        raise WeightsNotFoundError(how_to(f"Stable Diffusion weights {model_id!r}", "NTRK_SD_MODEL",
                                           DEFAULT_MODEL_ID,
                                           f" Cause: {type(e).__name__}: {str(e)[:200]}")) from e
    return configure(pipe, device, attention_slicing, gradient_checkpointing)


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
                print(f"[ntrk_minimal.adapters.sd] real weights unavailable after "
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

    Half precision: a reward gradient reaches the UNet as a cotangent ``v = d r / d eps_hat`` whose
    entries can be far below float16's smallest normal (6e-5); back-propagated in float16 it
    underflows (measured on the tiny UNet: at |v| ~ 1e-6 the vector-Jacobian product keeps cosine 0.6
    with the float32 one, at 1e-8 it is zero). So the cast back to ``x_t``'s dtype scales ``v`` to
    ``max |v| = 1`` (a power of two, exact) before it enters a float16 UNet, and the cast in divides
    the result by the same factor: per-call loss scaling, as ``torch.amp.GradScaler`` does for a loss.
    (A float16 *state* gets no such help: keep ``latent_dtype`` float32, the default.)
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
        scaled = self.unet.dtype == torch.float16 and x_t.dtype != torch.float16 and torch.is_grad_enabled()
        box = {}                                          # the gradient scale, shared by the two casts
        x_in = _GradUnscale.apply(x_t, self.unet.dtype, box) if scaled else x_t.to(self.unet.dtype)
        if self.cfg:                                      # [uncond; cond], as the pipeline
            emb = torch.cat([self.negative_embeds.repeat(k, 1, 1), emb])
            x_in = torch.cat([x_in, x_in])
        t = torch.as_tensor(t, device=x_t.device)
        eps = self.unet(x_in, t, encoder_hidden_states=emb, return_dict=False)[0]
        if self.cfg:
            eps_u, eps_c = eps.chunk(2)
            eps = eps_u + self.guidance_scale * (eps_c - eps_u)   # eps_u + s (eps_c - eps_u)
        return _GradScale.apply(eps, x_t.dtype, box) if scaled else eps.to(x_t.dtype)


class _GradScale(torch.autograd.Function):
    """Forward: cast ``eps`` (float16) to ``dtype``. Backward: scale the cotangent by a power of two
    ``c`` to ``max |v| = 1``, then cast it to float16 (``c`` kept in ``box`` for ``_GradUnscale``)."""

    @staticmethod
    def forward(ctx, eps, dtype, box):
        ctx.half, ctx.box = eps.dtype, box
        return eps.to(dtype)

    @staticmethod
    def backward(ctx, v):
        vmax = v.detach().abs().amax()
        c = 1.0 if not bool(torch.isfinite(vmax)) or float(vmax) == 0 else 2.0 ** -math.ceil(math.log2(float(vmax)))
        ctx.box["c"] = c
        return (v * c).to(ctx.half), None, None


class _GradUnscale(torch.autograd.Function):
    """Forward: cast ``x_t`` to float16. Backward: cast the gradient back and divide by ``box["c"]``."""

    @staticmethod
    def forward(ctx, x, half, box):
        ctx.dtype, ctx.box = x.dtype, box
        return x.to(half)

    @staticmethod
    def backward(ctx, g):
        return g.to(ctx.dtype) / ctx.box.get("c", 1.0), None, None


class LatentAesthetic(nn.Module):
    """``r(z) = aesthetic( clamp01_st( VAE.decode(z / scaling_factor) * 0.5 + 0.5 ) )``: (B,4,h,w) -> (B,).

    **The reward sees the image a user sees.** ``StableDiffusionPipeline`` returns
    ``VaeImageProcessor.denormalize(VAE.decode(z / scaling_factor)) = (img * 0.5 + 0.5).clamp(0, 1)``;
    the reward's value is the aesthetic score of exactly that image. Its gradient goes through a
    differentiable surrogate of the clamp, the *straight-through* one (``aesthetic.clamp01_st``):
    forward ``clamp(y, 0, 1)``, backward the identity. So the scorer is differentiated at the clamped
    image, unsaturated pixels get their exact gradient, and saturated pixels still receive the
    scorer's gradient (the exact clamp would give them zero). Where no pixel saturates, the gradient
    is the exact gradient of ``r``.

    The VAE decoder and the scorer run in ``dtype`` (fp32 by default: the reward gradient in fp32
    even when the UNet is fp16/bf16). If the pipeline's VAE has another dtype, the reward keeps its
    own copy in ``dtype`` and the pipeline's VAE is left as it is (the pipeline still decodes its own
    output). ``chunk``: decode at most this many latents at a time.
    """

    def __init__(self, vae, scorer: AestheticScorer, dtype=torch.float32, chunk: int | None = None):
        super().__init__()
        if vae.dtype != dtype:                  # never convert the pipeline's VAE in place
            vae = copy.deepcopy(vae).to(dtype)
        self.vae = vae.requires_grad_(False)
        self.scorer = scorer.to(dtype).requires_grad_(False)
        self.dtype, self.chunk = dtype, chunk
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> images (B, 3, H, W): ``clamp(img * 0.5 + 0.5, 0, 1)`` in value, straight-through gradient."""
        z = z.to(self.dtype) / self.scaling_factor
        if self.shift_factor:
            z = z + self.shift_factor
        parts = z.split(self.chunk) if self.chunk else (z,)
        img = torch.cat([self.vae.decode(p, return_dict=False)[0] for p in parts])
        return clamp01_st(img * 0.5 + 0.5)

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

    def user_images(self, z: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """The images ``pipe(..., output_type="pt")`` returns for final latents ``z``, on the pipeline's
        device and in its VAE's dtype, no gradient: ``VaeImageProcessor.postprocess(VAE.decode(z /
        scaling_factor))``, i.e. ``(img * 0.5 + 0.5).clamp(0, 1)``, exactly as ``StableDiffusionPipeline``
        decodes (its own VAE, in its own dtype). (B, 3, H, W)."""
        vae, proc = self.pipe.vae, self.pipe.image_processor
        chunk = chunk or self.reward.chunk or z.shape[0]
        with torch.no_grad():
            out = [proc.postprocess(vae.decode(p.to(vae.dtype) / vae.config.scaling_factor,
                                               return_dict=False)[0], output_type="pt")
                   for p in z.split(chunk)]
        return torch.cat(out)

    def images(self, z: torch.Tensor) -> torch.Tensor:
        """``user_images(z)`` as float32 on the CPU (for figures)."""
        return self.user_images(z).float().cpu()

    def score(self, z: torch.Tensor) -> torch.Tensor:
        """The reported score: the aesthetic score of the user's images (``user_images``), scored in
        the reward's dtype, (B,) float32 CPU. Equal to ``reward(z)`` in value when the pipeline's VAE
        runs in the reward's dtype (fp32); with an fp16/bf16 VAE it differs by that VAE's rounding."""
        with torch.no_grad():
            r = self.reward.scorer(self.user_images(z).to(self.reward.dtype))
        return r.float().cpu()


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


def pipeline_call(problem: SDProblem, generator, output_type: str = "latent", negative_prompt=""):
    """``pipe(prompts, DDIM eta, T steps, guidance, generator, output_type)`` with the problem's settings:
    what a user of ``StableDiffusionPipeline`` runs. ``output_type="pt"``: the user's images in [0, 1]."""
    s = problem.schedule
    f = problem.pipe.vae_scale_factor
    neg = (([negative_prompt] * problem.num_prompts if isinstance(negative_prompt, str) else negative_prompt)
           if problem.model.cfg else None)
    out = problem.pipe(problem.prompts, height=problem.latent_shape[1] * f, width=problem.latent_shape[2] * f,
                       num_inference_steps=s.num_steps, guidance_scale=problem.guidance_scale,
                       negative_prompt=neg, eta=s.eta, generator=generator, output_type=output_type)
    return out.images


def pipeline_latents(problem: SDProblem, generator, negative_prompt="") -> torch.Tensor:
    """The reference: ``pipe(prompts, eta=1, DDIM, output_type="latent")`` with the same settings."""
    return pipeline_call(problem, generator, "latent", negative_prompt)


# ---- methods ------------------------------------------------------------------------------------
METHODS = ("base", "dps", "svdd", "ntrk", "ntrk_raw", "bon", "smc", "ntrk_bon")


def run_method(problem, method: str, generator, *, kappa: float = 0.5, decay: str = "constant",
               dps_scale: float = 1.0, num_candidates: int = 4, num_samples: int = 4, num_particles: int = 4,
               beta: float = 0.1, record: bool = False):
    """Run one method of the table ``bench.methods`` on a latent problem (``SDProblem`` or ``flux.FluxProblem``);
    returns a ``SampleResult`` (``x0`` = final latents, ``nfe``).

    ``x_T`` is ``problem.x_T(generator)``, drawn like the pipeline's ``prepare_latents``; every other
    draw (each step's noise, candidates, the extra starts of best-of-N and SMC, resampling) comes from
    ``generator`` too, which must live on ``problem.device``; the state keeps ``problem.latent_dtype``.
    Methods, with the knobs of the table:

    * ``base``: the pipeline's own sampler (DDIM(eta) for SD; the flow sampler for FLUX).
    * ``ntrk``: ``rho_t = kappa_t^2 / N`` (N = the latent's entries; ``decay``), ``W`` the problem's own
      (FLUX: on the unpacked latent image); ``ntrk_raw``: the same with W switched off (norm matching).
    * ``dps``: ``lambda_t = dps_scale * sigma_t^2`` on a gradient **in latent space with respect to x_t**:
      the reward gradient at the Tweedie estimate ``x0_hat`` (through VAE decoder, clamp surrogate and
      CLIP) rescaled per sample to length ``sqrt(N)`` (``rewards.NormalisedReward``), then back-propagated
      through Tweedie and the denoiser unchanged (``g_t``'s own length is not normalised).
    * ``svdd``: argmax of ``r(x0_hat)`` over ``num_candidates`` draws per step.
    * ``bon`` / ``ntrk_bon``: best final ``r`` of ``num_samples`` trajectories (base / NTRK).
    * ``smc``: ``num_particles`` particles with potentials ``exp(r / beta)``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x_T = problem.x_T(generator)
    world = SimpleNamespace(model=problem.model, context=problem, config={}, device=str(problem.device),
                            sample_shape=tuple(x_T.shape[1:]))
    g, rec = generator, dict(record=record)
    run = {"base": lambda: M.base(world, x_T, g, **rec),
           "dps": lambda: M.dps(world, x_T, g, dps_scale, per_beta=False, normalise=True, **rec),
           "ntrk": lambda: M.ntrk(world, x_T, g, kappa, decay=decay, **rec),
           "ntrk_raw": lambda: M.ntrk(world, x_T, g, kappa, decay=decay, whiten="norm_match", **rec),
           "svdd": lambda: M.svdd(world, x_T, g, num_candidates=num_candidates, mode="argmax", per_beta=False, **rec),
           "bon": lambda: M.best_of_n(world, x_T, g, num_samples),
           "ntrk_bon": lambda: M.best_of_n(world, x_T, g, num_samples, kernel="ntrk", kappa=kappa, decay=decay),
           "smc": lambda: M.smc(world, x_T, g, num_particles=num_particles, beta=beta)}
    return run[method]()[0]


def generate(problem: SDProblem, method: str, seeds, **kwargs) -> tuple[torch.Tensor, list]:
    """One trajectory per seed (``torch.Generator(problem.device).manual_seed(seed)``), all prompts each.

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


def step_timings(problem: SDProblem, methods=("base", "dps", "ntrk"), seed: int = 0, repeats: int = 1,
                 **kwargs) -> dict:
    """Seconds per sampling step and peak GPU memory (GiB, None on CPU) for each method.

    Each method runs one warm-up trajectory, then ``repeats`` timed ones (between device
    synchronisations); ``step_s`` is the fastest ``wall / num_steps``, ``vs_base`` its ratio to base's.
    """
    out = {}
    dev = problem.device
    for m in methods:
        _timed_run(problem, m, seed, **kwargs)                        # warm-up
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        walls = []
        for _ in range(int(repeats)):
            res, wall = _timed_run(problem, m, seed, **kwargs)
            walls.append(wall)
        out[m] = dict(step_s=min(walls) / problem.schedule.num_steps, wall_s=min(walls), nfe=res.nfe,
                      peak_gib=peak_memory(dev))
    if "base" in out:
        for r in out.values():
            r["vs_base"] = r["step_s"] / out["base"]["step_s"]
    return out


def step_cost_split(problem: SDProblem, i: int | None = None, seed: int = 0, repeats: int = 3) -> dict:
    """Where one guided step's time goes (seconds, fastest of ``repeats``, timed between device
    synchronisations), on ``x_T`` of ``seed`` at step ``i`` (default: the middle step):

    * ``unet``: the CFG UNet forward, ``eps_hat = model(x_t, t)`` (all a base step costs, bar the noise);
    * ``reward``: ``r(x0_hat)``, VAE decode + clamp + CLIP + head, forward only;
    * ``backward``: ``d r / d x_t`` back through the head, CLIP, VAE decoder, Tweedie and the UNet;
    * ``whiten``: ``W(g_t)`` (NTRK only);
    * ``total``: the sum (a guided step = unet + reward + backward [+ whiten]).
    """
    from ..kernels import tweedie
    from ..whitening import whiten

    s, dev = problem.schedule, problem.device
    i = s.num_steps // 2 if i is None else int(i)
    x_t = problem.x_T(torch.Generator(dev).manual_seed(int(seed)))
    t, a_t, s_t = s.timesteps[i], float(s.a_t[i]), float(s.s_t[i])

    def timed(fn):
        best, out = float("inf"), None
        for _ in range(int(repeats) + 1):                # the first call is a warm-up
            _sync(dev)
            t0 = time.perf_counter()
            out = fn()
            _sync(dev)
            best = min(best, time.perf_counter() - t0)
        return best, out

    def forward():
        x = x_t.detach().requires_grad_(True)
        with torch.enable_grad():
            eps_hat = problem.model(x, t)
        return x, eps_hat

    out = {}
    out["unet"], (x, eps_hat) = timed(forward)
    x0_hat = tweedie(x, eps_hat, a_t, s_t)
    with torch.enable_grad():
        out["reward"], r = timed(lambda: problem.reward(x0_hat))

    def backward():
        xb, eb = forward()
        rb = problem.reward(tweedie(xb, eb, a_t, s_t))
        _sync(dev)
        t0 = time.perf_counter()
        (g,) = torch.autograd.grad(rb.sum(), xb)
        _sync(dev)
        return time.perf_counter() - t0, g

    best = float("inf")
    for _ in range(int(repeats) + 1):
        dt, g = backward()
        best = min(best, dt)
    out["backward"] = best
    out["whiten"], _ = timed(lambda: whiten(g.detach()))
    out["total"] = out["unet"] + out["reward"] + out["backward"] + out["whiten"]
    return out


# ---- the held-out reward: CLIP image-prompt similarity from the same CLIP --------------------------
class ClipText(nn.Module):
    """CLIP's text tower with its projection: prompts -> unit embeddings in the image tower's space.

    ``clip(image, prompt) = <e_image / ||e_image||, e_text / ||e_text||>`` with ``e_image`` the
    aesthetic scorer's CLIP image embedding and ``e_text`` this tower's ``text_embeds``: the
    CLIPScore of Hessel et al. (2021) without its ``100 max(., 0)``. The aesthetic head never sees the
    text tower, so this is a reward the samplers are not guided by (held out).
    """

    def __init__(self, tokenizer, text_model):
        super().__init__()
        self.tokenizer, self.text_model = tokenizer, text_model.eval().requires_grad_(False)

    @torch.no_grad()
    def embed(self, prompts) -> torch.Tensor:
        """(B,) prompts -> (B, projection_dim) unit embeddings, float32 on the text tower's device."""
        tok = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length, return_tensors="pt")
        dev = next(self.text_model.parameters()).device
        e = self.text_model(input_ids=tok.input_ids.to(dev)).text_embeds.float()
        return e / e.norm(dim=-1, keepdim=True)


def load_clip_text(clip_id: str | None = None, device="cpu", local_files_only: bool | None = None) -> ClipText:
    """The text tower of the CLIP whose image tower the aesthetic predictor uses (default
    ``$NTRK_CLIP_MODEL`` or ``openai/clip-vit-large-patch14``): ``CLIPTextModelWithProjection`` and
    ``CLIPTokenizer`` from the same id. Raises ``WeightsNotFoundError`` like ``load_aesthetic``."""
    from .aesthetic import DEFAULT_CLIP_ID

    clip_id = str(clip_id or os.environ.get("NTRK_CLIP_MODEL") or DEFAULT_CLIP_ID)
    if local_files_only is None:
        local_files_only = offline()
    if local_files_only and not Path(clip_id).is_dir():
        require_cached(clip_id, "config.json", "The CLIP text tower", "NTRK_CLIP_MODEL", DEFAULT_CLIP_ID)
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    try:
        tok = CLIPTokenizer.from_pretrained(clip_id, local_files_only=local_files_only)
        text = CLIPTextModelWithProjection.from_pretrained(clip_id, local_files_only=local_files_only)
    except (OSError, ValueError) as e:
        raise WeightsNotFoundError(how_to(f"The CLIP text tower {clip_id!r}", "NTRK_CLIP_MODEL", DEFAULT_CLIP_ID,
                                           f" Cause: {type(e).__name__}: {str(e)[:200]}")) from e
    return ClipText(tok, text.to(device))


def tiny_clip_text(scorer: AestheticScorer, seed: int = 5, device="cpu") -> ClipText:
    """A randomly initialised CLIP text tower (2 layers, width 32) projecting into the tiny scorer's
    image-embedding space, built deterministically here (``seed``; the global RNG is left untouched).
    Plumbing only: its similarities are those of random networks."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    cfg = dict(tiny_configs()["text"], projection_dim=int(scorer.vision.config.projection_dim))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text = CLIPTextModelWithProjection(CLIPTextConfig(**cfg))
    return ClipText(char_tokenizer(tiny_configs()["max_length"]), text.to(device))
