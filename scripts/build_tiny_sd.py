"""Build the tiny offline Stable Diffusion pipeline and aesthetic-shaped scorer in data/tiny_sd/.

    .venv/bin/python scripts/build_tiny_sd.py

Deterministic (fixed seeds, CPU): a random UNet2DConditionModel (4x16x16 latents), AutoencoderKL
(128x128 images, factor 8 like SD), CLIPTextModel + a byte-level CLIPTokenizer, SD v1's DDIM
scheduler config, saved with ``save_pretrained``; and a random CLIPVisionModelWithProjection + an
LAION-shaped MLP head (``aesthetic_mlp.pth``, same state-dict keys as sac+logos+ava1-l14-linearMSE.pth).
Writes SHA256SUMS, which ``ntrk_minimal.adapters.sd.verify_tiny`` checks before every load. The models are
untrained: they prove the plumbing (shapes, dtypes, gradients, equivalence with the pipeline), not
the pictures.
"""
import json
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ntrk_minimal.adapters.sd import TINY_DIR, build_random_pipeline, build_random_scorer, tiny_configs  # noqa: E402
from ntrk_minimal.paths import sha256  # noqa: E402


def main(out: Path = TINY_DIR, seed: int = 0):
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    pipe = build_random_pipeline("tiny", seed)
    pipe.save_pretrained(out / "pipeline", safe_serialization=True)
    scorer = build_random_scorer("tiny", seed)
    (out / "aesthetic").mkdir()
    scorer.vision.save_pretrained(out / "aesthetic" / "clip", safe_serialization=True)
    torch.save(scorer.mlp.state_dict(), out / "aesthetic" / "aesthetic_mlp.pth")
    (out / "aesthetic" / "mlp_config.json").write_text(
        json.dumps({"dims": list(tiny_configs()["mlp_dims"])}, indent=1) + "\n")
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    lines = [f"{sha256(p)}  {p.relative_to(out).as_posix()}" for p in files]
    (out / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    total = sum(p.stat().st_size for p in files)
    for line, p in zip(lines, files):
        print(f"{p.stat().st_size / 1e3:9.1f} kB  {line}")
    print(f"total {total / 1e6:.2f} MB in {out}")


if __name__ == "__main__":
    main()
