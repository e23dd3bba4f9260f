"""Train the three scorers of the trained-model benchmark on the 16x16 digits (CPU, ~1-2 minutes).

    nice -n 5 .venv/bin/python scripts/train_scorers.py

* target   CNN (width 16), the reward ``log p(c | x)``; trained with Gaussian noise augmentation
           (std up to 0.5) because the guided samplers score blurry/noisy Tweedie estimates x0_hat.
* heldout  MLP on raw pixels, a different architecture and seed, same augmentation: the held-out
           reward that reveals reward hacking (a sample that fools the CNN but not the MLP).
* features CNN (width 8, 16 features), clean data only: its penultimate layer gives the features of
           the Fréchet distance (fidelity) against the held-out real test images.
All three see only the train split plus 1-pixel shifts. Writes ``data/digits16_scorers.pt`` and prints
its sha256 and the test accuracies.
"""
import argparse

import torch
import torch.nn.functional as F

from ntrk_minimal.worlds.trained import SCORER_ARCH, SCORER_FILE
from ntrk_minimal.worlds.digits_data import load_digits16, random_shift
from ntrk_minimal.paths import sha256


def train(name, seed, x, y, xt, yt, steps, noise):
    cls, kw = SCORER_ARCH[name]
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = cls(**kw)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for step in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=g)
        xb = random_shift(x[idx], g)
        if noise:   # half the batch clean, half with noise of a random std in [0, noise]
            std = torch.rand(len(xb), 1, 1, 1, generator=g) * noise * (torch.rand(len(xb), 1, 1, 1, generator=g) < 0.5)
            xb = xb + std * torch.randn(xb.shape, generator=g)
        loss = F.cross_entropy(net(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        acc = (net(xt).argmax(1) == yt).float().mean().item()
        acc_noisy = (net(xt + 0.3 * torch.randn(xt.shape, generator=g)).argmax(1) == yt).float().mean().item()
    print(f"{name}: test accuracy {acc:.3f} (noise std 0.3: {acc_noisy:.3f})", flush=True)
    return net.state_dict(), acc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(SCORER_FILE))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, y = load_digits16("train")
    xt, yt = load_digits16("test")
    out, acc = {}, {}
    for name, seed, noise in (("target", 1, 0.5), ("heldout", 2, 0.5), ("features", 3, 0.0)):
        out[name], acc[name] = train(name, seed, x, y, xt, yt, args.steps, noise)
    out["accuracy"] = acc
    torch.save(out, args.out)
    print(f"saved {args.out}; sha256: {sha256(args.out)}")


if __name__ == "__main__":
    main()
