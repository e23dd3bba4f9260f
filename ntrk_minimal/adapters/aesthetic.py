"""The LAION aesthetic predictor, differentiable end to end: image tensor -> CLIP -> MLP -> score.

    score(x) = MLP( e / ||e|| ),   e = CLIP_image_embeds( normalize( resize(x) ) )

* CLIP image tower: ``transformers.CLIPVisionModelWithProjection`` (``openai/clip-vit-large-patch14``
  for the real predictor: ``image_embeds`` of width 768).
* MLP: the improved-aesthetic-predictor head ``sac+logos+ava1-l14-linearMSE.pth``,
  768 -> 1024 -> 128 -> 64 -> 16 -> 1, no activations, dropout between the first layers (state-dict
  keys ``layers.{0,2,4,6,7}.{weight,bias}``). **It ships with the package** in
  ``data/laion_aesthetic/`` (3.7 MB, Apache-2.0: its LICENSE and PROVENANCE.md lie beside it) and is
  sha256-checked before it loads (``LAION_SHA256``). The same file is mirrored on the hub as
  ``trl-lib/ddpo-aesthetic-predictor/aesthetic-model.pth`` (what TRL's DDPO uses).
* Preprocessing (``clip_preprocess``) is written on tensors so gradients flow; ``CLIPProcessor``
  converts to PIL/numpy and breaks the graph. **Our resize convention**: resize the shortest side to
  ``image_size`` with ``F.interpolate(mode="bicubic", antialias=True)`` (torch's antialiased bicubic
  uses PIL's kernel, a = -0.5), center-crop to ``image_size x image_size``, then ``(x - mean) / std``
  with CLIP's mean/std. It differs from ``CLIPImageProcessor`` only by the uint8 round trip (the
  test measures the gap). No clamp to [0, 1] inside by default: a clamp zeroes the gradient of
  saturated pixels. The latent rewards (``sd.LatentAesthetic``, ``flux.FluxLatentReward``) clamp the
  decoded image *before* the scorer with ``clamp01_st``: the value a user sees (the pipelines'
  ``(img / 2 + 0.5).clamp(0, 1)``), the gradient of the identity (straight-through surrogate).

Loading: ``load_aesthetic()`` reads the CLIP id from ``NTRK_CLIP_MODEL`` (default
``openai/clip-vit-large-patch14``): the CLIP ViT-L/14 image tower is the only part a user must provide.
The MLP head is the shipped file unless ``mlp_weights`` / ``NTRK_AESTHETIC_WEIGHTS`` names another
local ``.pth`` / ``.safetensors``. Offline or without the tower it raises ``WeightsNotFoundError`` (an
``OSError``) that says which id is missing and how to provide it. ``load_laion_head()`` is the shipped
head alone. ``load_tiny_aesthetic()`` loads the tiny, randomly initialised scorer of the same shape
shipped in ``data/tiny_sd/aesthetic`` (plumbing only: its scores mean nothing).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..paths import DATA, verify
from .hub import WeightsNotFoundError, how_to, offline, require_cached, verify_sums

__all__ = ["CLIP_MEAN", "CLIP_STD", "DEFAULT_CLIP_ID", "DEFAULT_AESTHETIC_REPO",
           "DEFAULT_AESTHETIC_FILE", "LAION_DIMS", "LAION_DIR", "LAION_HEAD", "LAION_SHA256",
           "WeightsNotFoundError", "AestheticMLP", "clip_preprocess", "clamp01_st", "AestheticScorer",
           "load_mlp", "load_laion_head", "load_aesthetic", "load_tiny_aesthetic"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)       # OpenAI CLIP image normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_CLIP_ID = "openai/clip-vit-large-patch14"
DEFAULT_AESTHETIC_REPO = "trl-lib/ddpo-aesthetic-predictor"   # hub mirror of the shipped head
DEFAULT_AESTHETIC_FILE = "aesthetic-model.pth"
LAION_DIMS = (768, 1024, 128, 64, 16, 1)
LAION_DIR = DATA / "laion_aesthetic"
LAION_HEAD = LAION_DIR / "sac+logos+ava1-l14-linearMSE.pth"     # improved-aesthetic-predictor @ 6934dd8
LAION_SHA256 = "21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0"


class AestheticMLP(nn.Module):
    """The LAION improved-aesthetic-predictor head: ``Linear`` layers with dropout, no activations.

    ``dims`` = (in, h1, h2, h3, h4, 1); the real head is ``LAION_DIMS``. Layer indices (and so the
    state-dict keys) follow the original: Linear, Dropout(0.2), Linear, Dropout(0.2), Linear,
    Dropout(0.1), Linear, Linear.
    """

    def __init__(self, dims=LAION_DIMS):
        super().__init__()
        dims = tuple(int(d) for d in dims)
        if len(dims) != 6 or dims[-1] != 1 or min(dims) < 1:
            raise ValueError(f"dims must be 6 positive widths ending in 1, got {dims!r}")
        self.dims = dims
        d = dims
        self.layers = nn.Sequential(nn.Linear(d[0], d[1]), nn.Dropout(0.2), nn.Linear(d[1], d[2]),
                                    nn.Dropout(0.2), nn.Linear(d[2], d[3]), nn.Dropout(0.1),
                                    nn.Linear(d[3], d[4]), nn.Linear(d[4], d[5]))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """(B, in) normalised embeddings -> (B,) scores."""
        return self.layers(e)[:, 0]


def clip_preprocess(images: torch.Tensor, image_size: int, mean=CLIP_MEAN, std=CLIP_STD,
                    clamp: bool = False) -> torch.Tensor:
    """Differentiable CLIP preprocessing of (B, 3, H, W) images in [0, 1].

    Shortest side -> ``image_size`` (antialiased bicubic), center crop, ``(x - mean) / std``.
    Returns (B, 3, image_size, image_size) in the input's dtype.
    """
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    x = images.clamp(0, 1) if clamp else images
    H, W = x.shape[-2:]
    s = image_size / min(H, W)
    h, w = max(image_size, int(H * s)), max(image_size, int(W * s))   # CLIP floors the long side
    if (h, w) != (H, W):
        x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    top, left = (h - image_size) // 2, (w - image_size) // 2
    x = x[..., top:top + image_size, left:left + image_size]
    m = torch.tensor(mean, dtype=x.dtype, device=x.device)[:, None, None]
    sd = torch.tensor(std, dtype=x.dtype, device=x.device)[:, None, None]
    return (x - m) / sd


def clamp01_st(x: torch.Tensor) -> torch.Tensor:
    """Straight-through clamp to [0, 1]: ``x + (clamp(x, 0, 1) - x).detach()``.

    Value: exactly ``x.clamp(0, 1)`` (the image a user sees). Gradient: the identity's, ``d/dx = 1``
    everywhere, so a scorer's gradient taken *at the clamped image* passes to saturated pixels too
    (the true clamp would give them 0 and no signal to come back into range). Where no pixel
    saturates it is the exact gradient of ``r(clamp(x))``. Shared by ``sd`` and ``flux``.
    """
    return x + (x.clamp(0, 1) - x).detach()


class AestheticScorer(nn.Module):
    """``r(images) = MLP(e / ||e||)`` with ``e`` the CLIP image embedding; (B, 3, H, W) in [0, 1] -> (B,).

    Args:
        vision: a ``CLIPVisionModelWithProjection`` (its ``config.image_size`` sets the resize).
        mlp: an ``AestheticMLP`` whose input width equals ``vision.config.projection_dim``.
        clamp: clamp images to [0, 1] before preprocessing (kills the gradient of saturated pixels).
    """

    def __init__(self, vision, mlp: AestheticMLP, clamp: bool = False):
        super().__init__()
        proj = vision.config.projection_dim
        if mlp.dims[0] != proj:
            raise ValueError(f"mlp input width {mlp.dims[0]} != CLIP projection_dim {proj}")
        self.vision, self.mlp, self.clamp = vision, mlp, clamp
        self.image_size = int(vision.config.image_size)
        self.eval().requires_grad_(False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, projection_dim) L2-normalised CLIP image embeddings."""
        dtype = next(self.vision.parameters()).dtype
        pixels = clip_preprocess(images.to(dtype), self.image_size, clamp=self.clamp)
        e = self.vision(pixel_values=pixels).image_embeds
        return e / e.norm(dim=-1, keepdim=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        e = self.embed(images)
        r = self.mlp(e.to(next(self.mlp.parameters()).dtype))
        return r if r.dtype == torch.float64 else r.float()


# ---- loading ------------------------------------------------------------------------------------
def _load_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    return torch.load(str(path), map_location="cpu", weights_only=True)


def load_mlp(weights, dims=LAION_DIMS) -> AestheticMLP:
    """An ``AestheticMLP`` with weights from a local ``.pth`` / ``.safetensors`` file."""
    path = Path(weights)
    if not path.is_file():
        raise WeightsNotFoundError(f"aesthetic MLP weights not found at {str(path)!r}")
    mlp = AestheticMLP(dims)
    sd = _load_state_dict(path)
    missing, unexpected = mlp.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} is not an aesthetic-predictor state dict "
                         f"(missing {missing}, unexpected {unexpected})")
    return mlp.eval()


def load_laion_head() -> AestheticMLP:
    """The shipped sac+logos+ava1-l14-linearMSE head (``data/laion_aesthetic``), sha256-checked first."""
    verify(LAION_HEAD, LAION_SHA256, made_by="`git checkout -- data/laion_aesthetic` (the file ships "
           "with the repository; see its PROVENANCE.md)", recorded_in="ntrk_minimal/adapters/aesthetic.py (LAION_SHA256)")
    return load_mlp(LAION_HEAD, LAION_DIMS)


def load_aesthetic(clip_id: str | None = None, mlp_weights: str | os.PathLike | None = None,
                   device="cpu", dtype=torch.float32, local_files_only: bool | None = None,
                   clamp: bool = False) -> AestheticScorer:
    """The real LAION aesthetic predictor (CLIP ViT-L/14 + the sac+logos+ava1 linear-MSE head).

    ``clip_id``: hub id or local folder (default ``$NTRK_CLIP_MODEL`` or ``openai/clip-vit-large-patch14``).
    ``mlp_weights``: a local head file (default ``$NTRK_AESTHETIC_WEIGHTS``, else the shipped,
    sha256-checked ``data/laion_aesthetic/sac+logos+ava1-l14-linearMSE.pth``).
    Raises ``WeightsNotFoundError`` naming the missing id and how to provide it (in milliseconds when
    ``HF_HUB_OFFLINE=1``).
    """
    clip_id = str(clip_id or os.environ.get("NTRK_CLIP_MODEL") or DEFAULT_CLIP_ID)
    if local_files_only is None:
        local_files_only = offline()
    mlp_weights = mlp_weights or os.environ.get("NTRK_AESTHETIC_WEIGHTS")
    if mlp_weights is None:
        mlp = load_laion_head()
    else:
        try:
            mlp = load_mlp(mlp_weights)
        except OSError as e:
            raise WeightsNotFoundError(
                f"The aesthetic MLP weights {str(mlp_weights)!r} could not be loaded "
                f"({type(e).__name__}: {str(e)[:200]}). Set NTRK_AESTHETIC_WEIGHTS=<local .pth or "
                f".safetensors file> or pass mlp_weights=...; leave both unset to use the LAION head "
                f"shipped in data/laion_aesthetic.") from e
    if local_files_only and not Path(clip_id).is_dir():
        require_cached(clip_id, "config.json", "The CLIP image tower", "NTRK_CLIP_MODEL", DEFAULT_CLIP_ID)
    from transformers import CLIPVisionModelWithProjection

    try:
        vision = CLIPVisionModelWithProjection.from_pretrained(clip_id, dtype=dtype,
                                                               local_files_only=local_files_only)
    except (OSError, ValueError) as e:
        raise WeightsNotFoundError(how_to(f"The CLIP image tower {clip_id!r}", "NTRK_CLIP_MODEL",
                                           DEFAULT_CLIP_ID,
                                           f" Cause: {type(e).__name__}: {str(e)[:200]}")) from e
    return AestheticScorer(vision, mlp, clamp=clamp).to(device)


def load_tiny_aesthetic(folder: str | os.PathLike | None = None, device="cpu",
                        dtype=torch.float32) -> AestheticScorer:
    """The tiny aesthetic-shaped scorer (random CLIP vision tower + head), sha256-checked.

    Loaded through the same ``from_pretrained`` / ``load_mlp`` code as the real one.
    """
    from transformers import CLIPVisionModelWithProjection

    tiny = DATA / "tiny_sd"
    folder = Path(folder) if folder is not None else tiny / "aesthetic"
    if folder == tiny / "aesthetic":
        verify_sums(tiny, "`python scripts/build_tiny_sd.py`")
    dims = json.loads((folder / "mlp_config.json").read_text())["dims"]
    vision = CLIPVisionModelWithProjection.from_pretrained(folder / "clip", dtype=dtype)
    mlp = load_mlp(folder / "aesthetic_mlp.pth", dims)
    return AestheticScorer(vision, mlp).to(device)
