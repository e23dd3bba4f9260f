"""Fit the analytic 64-D digits model and its two scorers; write them to ``data/`` (CPU, ~10 s).

    .venv/bin/python scripts/fit_digits_gmm.py

Data: scikit-learn's 8x8 digits (1797 images, pixel values 0..16), flattened to 64 values and scaled
by ``x / 8 - 1`` to [-1, 1] (background = -1; per-pixel std ~0.3-0.8 where there is ink, 0 at the
always-blank border pixels, which ``reg_covar`` floors). Same fixed 80/20 split as the trained model
(``torch.randperm(1797, generator=manual_seed(0))``: 1437 train, 360 test); every fit sees only the
train split, the test split measures accuracy.

Writes
  data/digits_gmm.npz       the mixture p_0: weights (K,), means (K, 64), covs (K, 64, 64), float64.
                            sklearn ``GaussianMixture(16, covariance_type="full", reg_covar=1e-2,
                            random_state=0, n_init=2)``: reg_covar = 0.01 adds a pixel-noise floor of
                            std 0.1 so no component is degenerate (the border pixels are constant).
  data/digits64_scorers.npz the *target* scorer, an MLP 64-128-128-10 (SiLU) trained in torch with
                            Gaussian input noise (std 0.1), and the *held-out* scorer, a multinomial
                            logistic regression (sklearn, L2, C = 0.05): a different architecture, a
                            different training procedure, the same train split.

Both files are written as zip archives with a fixed timestamp, so a re-run on the same library
versions reproduces them byte for byte. The script prints their sha256; record them in
``ntrk_minimal/worlds/digits.py`` (``SHA256``).
"""
from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ntrk_minimal.paths import sha256  # noqa: E402
from ntrk_minimal.worlds.digits import DATA_DIR, GMM_FILE, MLP_HIDDEN, SCORER_FILE  # noqa: E402
from ntrk_minimal.worlds.digits_data import load_digits64  # noqa: E402

NUM_COMPONENTS, REG_COVAR = 16, 1e-2


def save_npz(path: Path, **arrays) -> None:
    """``np.savez`` with a fixed zip timestamp (byte-reproducible)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, a in sorted(arrays.items()):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(name + ".npy", date_time=(2026, 1, 1, 0, 0, 0)), buf.getvalue())


def fit_gmm(x: np.ndarray):
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(NUM_COMPONENTS, covariance_type="full", reg_covar=REG_COVAR,
                         random_state=0, n_init=2, max_iter=500, tol=1e-4).fit(x)
    return gm


def fit_mlp(x: torch.Tensor, y: torch.Tensor) -> dict:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(64, MLP_HIDDEN), torch.nn.SiLU(),
                              torch.nn.Linear(MLP_HIDDEN, MLP_HIDDEN), torch.nn.SiLU(),
                              torch.nn.Linear(MLP_HIDDEN, 10)).double()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    for epoch in range(60):
        perm = torch.randperm(len(x), generator=g)
        for b in perm.split(128):
            xb = x[b] + 0.1 * torch.randn(x[b].shape, generator=g, dtype=x.dtype)
            loss = torch.nn.functional.cross_entropy(net(xb), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    return {"mlp_w1": sd["0.weight"], "mlp_b1": sd["0.bias"], "mlp_w2": sd["2.weight"],
            "mlp_b2": sd["2.bias"], "mlp_w3": sd["4.weight"], "mlp_b3": sd["4.bias"]}


def fit_logreg(x: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=0.05, max_iter=5000, tol=1e-8).fit(x, y)
    return {"lr_w": lr.coef_, "lr_b": lr.intercept_}


def main():
    DATA_DIR.mkdir(exist_ok=True)
    x, y = load_digits64("train")
    xt, yt = load_digits64("test")
    gm = fit_gmm(x.numpy())
    save_npz(GMM_FILE, weights=gm.weights_, means=gm.means_, covs=gm.covariances_)
    print(f"GMM: {NUM_COMPONENTS} components, converged={gm.converged_}, "
          f"train avg log-lik {gm.score(x.numpy()):.2f}, test {gm.score(xt.numpy()):.2f} nats")

    scorers = {**fit_mlp(x, y), **fit_logreg(x.numpy(), y.numpy())}
    save_npz(SCORER_FILE, **scorers)

    from ntrk_minimal.worlds import digits
    tgt, held = digits.Classifier.load("target", check=False), digits.Classifier.load("heldout", check=False)
    for name, c in (("target MLP", tgt), ("held-out logistic regression", held)):
        with torch.no_grad():
            acc = (c.logits(xt).argmax(1) == yt).double().mean()
        print(f"{name}: test accuracy {acc:.3f}")
    for p in (GMM_FILE, SCORER_FILE):
        print(f'"{p.name}": "{sha256(p)}",')


if __name__ == "__main__":
    main()
