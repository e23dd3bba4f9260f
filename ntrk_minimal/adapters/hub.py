"""Weights from the Hugging Face hub, or a clear message: what every adapter shares when it loads a model.

Offline (``HF_HUB_OFFLINE=1``, the default under ``make``) a model that is not in the local hub cache
fails in milliseconds, before diffusers or transformers are imported, with ``WeightsNotFoundError``
naming the id and how to provide it; the notebooks then fall back to the tiny models in ``data/``,
whose files are checked against their ``SHA256SUMS`` first (``verify_sums``).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..paths import verify

__all__ = ["WeightsNotFoundError", "offline", "how_to", "require_cached", "verify_sums"]


class WeightsNotFoundError(OSError):
    """Weights are missing (offline, not downloaded, wrong path); the message says how to provide them."""


def offline() -> bool:
    """Whether the hub is offline (``huggingface_hub.constants.HF_HUB_OFFLINE``, else the variable)."""
    try:
        from huggingface_hub import constants
        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover
        return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def how_to(what: str, env: str, default: str, extra: str = "", env_value: str = "<local folder or hub id>",
           fallback: str = "data/tiny_sd") -> str:
    """The message of a ``WeightsNotFoundError``: the ways to provide ``what`` and the offline fallback."""
    return (f"{what} could not be loaded. Provide it one of these ways: set {env}={env_value} "
            f"(default {default!r}); pass it as an argument; or download it once with "
            f"network access (`huggingface-cli download {default}` and leave HF_HUB_OFFLINE unset)."
            f"{extra} Offline notebooks fall back to the tiny model in {fallback}.")


def require_cached(repo_id: str, filename: str, what: str, env: str, default: str,
                   fallback: str = "data/tiny_sd") -> None:
    """Offline fast path: raise ``WeightsNotFoundError`` in milliseconds (before importing diffusers) if
    the local hub cache lacks ``filename`` of ``repo_id``."""
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(repo_id, filename)
    except Exception as e:                                 # e.g. an invalid repo id
        hit = None
        cause = f" Cause: {type(e).__name__}: {str(e)[:200]}"
    else:
        cause = f" Cause: {filename} of {repo_id!r} is not in the local hub cache and HF_HUB_OFFLINE is set."
    if not isinstance(hit, str):
        raise WeightsNotFoundError(how_to(f"{what} {repo_id!r}", env, default, cause, fallback=fallback))


def verify_sums(folder, build: str) -> None:
    """Check every file listed in ``folder/SHA256SUMS`` against its recorded sha256 (``paths.verify``);
    ``build``: the command that rebuilds the folder (named in the error)."""
    folder = Path(folder)
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        raise FileNotFoundError(f"{sums} is missing: run {build}")
    for line in sums.read_text().splitlines():
        digest, rel = line.split(maxsplit=1)
        verify(folder / rel, digest, made_by=build, recorded_in=str(sums))
