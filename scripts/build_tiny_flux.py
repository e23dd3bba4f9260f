"""Build the tiny offline FLUX pipeline in data/tiny_flux/ (``FluxPipeline.save_pretrained`` layout).

    .venv/bin/python scripts/build_tiny_flux.py

Deterministic (fixed seeds, CPU, fp32): a random FluxTransformer2DModel with a guidance embedding
(like FLUX.1-dev), a 16-latent-channel AutoencoderKL (128x128 images, factor 8 like FLUX), a
CLIPTextModel + byte-level CLIPTokenizer and a T5EncoderModel + character-level T5 (Unigram)
tokenizer, both tokenizers built offline, and FLUX.1-dev's FlowMatchEulerDiscreteScheduler config.
Writes SHA256SUMS, which ``ntrk_minimal.adapters.flux.verify_tiny`` checks before every load. The models are
untrained: they prove the plumbing (shapes, packing, schedules, gradients, equivalence with the
pipeline), not the pictures. Rebuilding gives the same bytes (the script checks it with --check).
"""
import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ntrk_minimal.paths import sha256  # noqa: E402
from ntrk_minimal.adapters.flux import TINY_DIR, build_random_pipeline


def build(out: Path, seed: int = 0) -> list:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.set_num_threads(1)
    pipe = build_random_pipeline(seed)
    pipe.save_pretrained(out, safe_serialization=True)
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    lines = [f"{sha256(p)}  {p.relative_to(out).as_posix()}" for p in files]
    (out / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return [(p, line) for p, line in zip(files, lines)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=TINY_DIR)
    ap.add_argument("--check", action="store_true",
                    help="build into a temporary folder and compare with --out's SHA256SUMS")
    a = ap.parse_args()
    if a.check:
        with tempfile.TemporaryDirectory() as tmp:
            build(Path(tmp) / "tiny_flux")
            new = (Path(tmp) / "tiny_flux" / "SHA256SUMS").read_text()
        old = (a.out / "SHA256SUMS").read_text()
        print("identical" if new == old else f"DIFFERENT:\n--- stored\n{old}--- rebuilt\n{new}")
        sys.exit(0 if new == old else 1)
    rows = build(a.out)
    for p, line in rows:
        print(f"{p.stat().st_size / 1e3:9.1f} kB  {line}")
    print(f"total {sum(p.stat().st_size for p, _ in rows) / 1e6:.2f} MB in {a.out}")


if __name__ == "__main__":
    main()
