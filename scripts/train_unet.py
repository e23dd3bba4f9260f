"""Train the small diffusers UNet on 16x16 digits (CPU, ~15-20 minutes on 2 threads).

    nice -n 5 .venv/bin/python scripts/train_unet.py [--steps 8000] [--resume]

Data: scikit-learn's 8x8 digits (offline, shipped with sklearn), bilinearly upsampled to 16x16 and
scaled to [-1, 1]; train split only (the test split is the fidelity reference). Why this set: it is
real handwriting (a trained classifier and a Fréchet distance mean something on it), it needs no
download, 16x16 keeps a UNet forward pass at ~0.25 ms per image on a CPU, so the 500-NFE
baselines stay affordable. Augmentation: random 1-pixel shifts (1438 images are few; a shift keeps
the digit's identity). Objective: the DDPM epsilon loss on a 1000-step linear VP schedule; AdamW,
cosine learning rate, EMA of the weights (the EMA weights are saved).

Writes ``data/unet_digits/{unet,scheduler}`` with ``save_pretrained`` and prints the sha256 to
record in ``ntrk_minimal/worlds/trained.py``. Checkpoints go to ``build/unet_ckpt.pt`` (``--resume``).
"""
import argparse
import copy
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel

from ntrk_minimal.paths import sha256
from ntrk_minimal.worlds.digits_data import load_digits16, random_shift
from ntrk_minimal.worlds.trained import UNET_DIR, scheduler_config, unet_config


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ckpt", default="build/unet_ckpt.pt")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--out", default=str(UNET_DIR))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    x_train, _ = load_digits16("train")
    unet = UNet2DModel(**unet_config())
    ema = copy.deepcopy(unet).requires_grad_(False)
    sched = DDPMScheduler(**scheduler_config())
    ab = sched.alphas_cumprod                                        # \bar\alpha_t, (1000,)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=1e-4)
    lr_at = lambda s: args.lr * min(1.0, s / 200) * 0.5 * (1 + math.cos(math.pi * s / args.steps))
    step = 0
    ckpt = Path(args.ckpt)
    if args.resume and ckpt.is_file():
        st = torch.load(ckpt, weights_only=False)
        unet.load_state_dict(st["unet"]), ema.load_state_dict(st["ema"]), opt.load_state_dict(st["opt"])
        g.set_state(st["gen"])
        step = st["step"]
        print(f"resumed at step {step}")
    print(f"UNet parameters: {sum(p.numel() for p in unet.parameters()) / 1e6:.3f} M; "
          f"{len(x_train)} training images")
    t0, run = time.perf_counter(), 0.0
    while step < args.steps:
        idx = torch.randint(0, len(x_train), (args.batch,), generator=g)
        x0 = random_shift(x_train[idx], g)
        t = torch.randint(0, 1000, (args.batch,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        a = ab[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps                   # forward process
        loss = F.mse_loss(unet(x_t, t).sample, eps)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            d = min(args.ema, (1 + step) / (10 + step))
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1 - d)
        step += 1
        run = loss.item() if step == 1 else 0.99 * run + 0.01 * loss.item()
        if step % 100 == 0 or step == args.steps:
            print(f"step {step}/{args.steps} loss {run:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if step % 1000 == 0 or step == args.steps:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"unet": unet.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                        "gen": g.get_state(), "step": step}, ckpt)
    out = Path(args.out)
    ema.save_pretrained(out / "unet")
    sched.save_pretrained(out / "scheduler")
    w = out / "unet" / "diffusion_pytorch_model.safetensors"
    print(f"saved {out}; sha256 {w.name}: {sha256(w)}")


if __name__ == "__main__":
    main()
