"""FLUX through diffusers: real weights or a tiny offline pipeline, loaded by the same code.

FLUX.1 is a rectified flow, ``x_t = (1 - t) x_0 + t eps`` with ``t = sigma`` in [0, 1], whose
transformer predicts the velocity ``v = eps - x_0`` (spec section 10). Its ``FluxPipeline`` holds:

* ``transformer``: ``FluxTransformer2DModel`` on *packed* latents: the 16-channel VAE latent
  (B, 16, h, w) cut into 2x2 patches, (B, h/2 * w/2, 64), with rotary position ids per patch; FLUX.1-dev
  is guidance-distilled (``guidance_embeds=True``: the guidance scale is an input, one pass per step);
* ``vae``: ``AutoencoderKL`` with 16 latent channels, ``z = (latent - shift_factor) * scaling_factor``;
* ``text_encoder`` + ``tokenizer``: CLIP (its *pooled* output conditions the transformer) and
  ``text_encoder_2`` + ``tokenizer_2``: T5 (its token embeddings are the attention context);
* ``scheduler``: ``FlowMatchEulerDiscreteScheduler`` (sigmas shifted by the image size, ``mu``).

Loading: ``load_pipeline()`` reads the model id from the argument, ``$NTRK_FLUX_MODEL`` or the default
``black-forest-labs/FLUX.1-dev`` (a hub id or a local ``save_pretrained`` folder; FLUX.1-schnell works
too); without weights it raises ``WeightsNotFoundError`` saying which id and how to provide it (in
milliseconds under ``HF_HUB_OFFLINE=1``). ``load_tiny_pipeline()`` loads the tiny random pipeline in
``data/tiny_flux`` (built by ``scripts/build_tiny_flux.py``, sha256-checked) through the same
``FluxPipeline.from_pretrained``: it proves the plumbing, not the pictures. ``load_flux()`` tries the
real one and falls back to the tiny one, printing why.

A full-size FLUX.1 transformer (12B parameters, ~24 GB in bf16) needs a GPU; the tiny one runs anywhere.
"""
from __future__ import annotations

import os
import string
import time
from pathlib import Path

import torch

from .aesthetic import WeightsNotFoundError, _how_to, _offline, load_aesthetic, load_tiny_aesthetic
from .checksums import verify

__all__ = ["DEFAULT_MODEL_ID", "TINY_DIR", "WeightsNotFoundError", "flux_scheduler_config",
           "tiny_configs", "t5_char_tokenizer", "build_random_pipeline", "verify_tiny",
           "load_pipeline", "load_tiny_pipeline", "load_flux"]

DEFAULT_MODEL_ID = "black-forest-labs/FLUX.1-dev"
ENV = "NTRK_FLUX_MODEL"
TINY_DIR = Path(__file__).resolve().parent.parent / "data" / "tiny_flux"
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

    Ids: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, ``▁`` 3, then the pieces; every piece scores -1, so the
    Viterbi segmentation is the one with fewest pieces (a word = ``▁`` + first char, then one per char).
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

    from .sd import char_tokenizer

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
    folder = Path(folder)
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        raise FileNotFoundError(f"{sums} is missing: run {BUILD}")
    for line in sums.read_text().splitlines():
        digest, rel = line.split(maxsplit=1)
        verify(folder / rel, digest, made_by=BUILD, recorded_in=str(sums))


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
    from .sd import _require_cached

    model_id = str(model_id or os.environ.get(ENV) or DEFAULT_MODEL_ID)
    if local_files_only is None:
        local_files_only = _offline()
    if Path(model_id).is_dir() and not (Path(model_id) / "model_index.json").is_file():
        raise WeightsNotFoundError(_how_to(f"FLUX weights {model_id!r}", ENV, DEFAULT_MODEL_ID,
                                           " Cause: that folder has no model_index.json (not a "
                                           "`save_pretrained` pipeline folder).", fallback="data/tiny_flux"))
    if local_files_only and not Path(model_id).is_dir():
        try:
            _require_cached(model_id, "model_index.json", "FLUX weights", ENV, DEFAULT_MODEL_ID,
                            fallback="data/tiny_flux")
        except WeightsNotFoundError as e:
            raise WeightsNotFoundError(str(e) + GATED_NOTE) from None
    from diffusers import FluxPipeline

    try:
        pipe = FluxPipeline.from_pretrained(model_id, dtype=dtype, local_files_only=local_files_only,
                                            **from_pretrained_kwargs)
    except (OSError, ValueError) as e:
        raise WeightsNotFoundError(_how_to(f"FLUX weights {model_id!r}", ENV, DEFAULT_MODEL_ID,
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
                print(f"[ntrk_minimal.flux] real weights unavailable after "
                      f"{1e3 * (time.perf_counter() - t0):.0f} ms -> tiny offline path.\n  {e}")
    opts = {k: v for k, v in kwargs.items() if k == "gradient_checkpointing"}
    return load_tiny_pipeline(device=device, dtype=dtype, **opts), load_tiny_aesthetic(device=device), "tiny"
