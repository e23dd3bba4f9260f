"""scikit-learn's 8x8 digits, the data behind three worlds: one fixed train/test split for all of them.

``load_digits64`` (the 64-D mixture of ``digits``), ``load_digits16`` (the trained UNet of ``trained``,
upsampled to 16x16) and ``embedded``'s class template hold out the same test images (``split_indices``).
The data ships with scikit-learn: nothing is downloaded.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["split_indices", "load_digits64", "load_digits16", "random_shift"]


def load_digits64(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits as (n, 64) float64 in [-1, 1] (``x / 8 - 1``) and labels (n,).

    ``split``: ``"train"`` (1438), ``"test"`` (359) or ``"all"`` (``split_indices``: the split of
    ``load_digits16`` too, so every digits world holds out the same images).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float64) / 8.0 - 1.0
    y = torch.tensor(d.target, dtype=torch.long)
    idx = split_indices(split, len(x))
    return x[idx].contiguous(), y[idx].contiguous()


def split_indices(split: str, n: int) -> torch.Tensor:
    """Indices of ``split`` among ``n`` images: a fixed permutation (seed 0), its first 80% (rounded)
    ``"train"``, the rest ``"test"``, or all of it (``"all"``)."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    n_train = int(round(0.8 * n))
    return {"train": perm[:n_train], "test": perm[n_train:], "all": perm}[split]


def load_digits16(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits, bilinearly upsampled to 16x16 and scaled to [-1, 1].

    Returns ``(x, y)``: x (n, 1, 16, 16) float32, y (n,) long. ``split``: ``"train"`` (80%, 1438
    images), ``"test"`` (the other 359, never seen by any network: the fidelity reference) or ``"all"``.
    The split is ``split_indices`` (a fixed permutation, seed 0), the same as the 64-D benchmark's.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0          # (n, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False) * 2 - 1
    y = torch.tensor(d.target, dtype=torch.long)
    idx = split_indices(split, len(x))
    return x[idx].contiguous(), y[idx].contiguous()


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Light augmentation: translate each image by up to ``max_shift`` pixels (background -1 fills)."""
    B, _, H, W = x.shape
    p = max_shift
    pad = F.pad(x, (p, p, p, p), value=-1.0)
    dx = torch.randint(0, 2 * p + 1, (B,), generator=generator)
    dy = torch.randint(0, 2 * p + 1, (B,), generator=generator)
    rows = (dy[:, None] + torch.arange(H)[None])[:, :, None].expand(B, H, W)
    cols = (dx[:, None] + torch.arange(W)[None])[:, None, :].expand(B, H, W)
    return pad[torch.arange(B)[:, None, None], 0, rows, cols][:, None]
