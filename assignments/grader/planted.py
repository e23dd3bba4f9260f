"""Planted submissions: the solution, the untouched stubs, and one typical mistake each, with the score
and the message the grader must give. ``tests/test_assignments.py`` grades them; the teachers' guide's
sample score table is the batch grader's output on them (``make grade-sample``).

    python assignments/grader/planted.py DIR      # write DIR/<name>/ntrk_student.py (+ notebooks)

A mistake is a one-line edit of the solution (the generated solution module, or a solution notebook's
answer cell); ``PLANTED`` states the exercise's expected points and a fragment of the expected message.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

GRADER = Path(__file__).resolve().parent
ROOT = GRADER.parent.parent


@dataclass(frozen=True)
class Mistake:
    name: str            # folder name of the planted submission
    exercise: str        # "E1.2"
    where: str           # "module" or a solution notebook's file name
    orig: str            # the solution's text (must occur exactly once)
    bad: str             # the typical mistake
    points: float        # what the exercise must score (to 0.01)
    message: str         # a fragment of the message that must explain it
    what: str            # the mistake, in words (the guide lists it)


NB1 = "ex_01_reverse_kernels.ipynb"
PLANTED: tuple[Mistake, ...] = (
    Mistake("E1_1_vp_only", "E1.1", "module", "return (x_t - s_t * eps_hat) / a_t",
            "return (x_t - math.sqrt(1 - a_t ** 2) * eps_hat) / a_t", 3, "do not assume a VP path",
            "tweedie assumes a VP path: s_t = sqrt(1 - a_t^2) instead of the given s_t"),
    Mistake("E1_2_no_clamp", "E1.2", "module", "math.sqrt(max(s_prev ** 2 - sigma_t ** 2, 0.0))",
            "math.sqrt(s_prev ** 2 - sigma_t ** 2)", 8.5, "clamp it at 0 before the square root",
            "ddim_mean without the clamp: math.sqrt of -1e-12 at the last step"),
    Mistake("E1_2_missing_sqrt", "E1.2", "module", "math.sqrt(max(s_prev ** 2 - sigma_t ** 2, 0.0))",
            "max(s_prev ** 2 - sigma_t ** 2, 0.0)", 3, "missing square root",
            "ddim_mean with the variance s_prev^2 - sigma_t^2 where its square root belongs"),
    Mistake("E1_3_two_draws", "E1.3", "module", "eta_t = noise_like(mu_t, generator)",
            "eta_t = noise_like(mu_t, generator) + 0 * noise_like(mu_t, generator)", 5.67, "exactly once",
            "Base.step draws the noise twice (the value is right, the generator is not)"),
    Mistake("E1_4_sigma_zero", "E1.4", "module", "eps + (lam / sigma_t) * g if sigma_t > 0 else eps",
            "eps + (lam / sigma_t) * g", 5, "divides by sigma_t",
            "DPS forgets sigma_t = 0 (deterministic steps, the last DDPM step): ZeroDivisionError"),
    Mistake("E1_4_wrong_sign", "E1.4", "module", "x_prev = mu_t + lam * g + sigma_t * eps",
            "x_prev = mu_t - lam * g + sigma_t * eps", 1, "wrong sign",
            "DPS shifts the mean down the reward gradient"),
    Mistake("E1_5_rho_not_sqrt", "E1.5", "module", "math.sqrt(rho) * w_t + math.sqrt(1.0 - rho) * eps",
            "rho * w_t + (1.0 - rho) * eps", 3, "squares sum to 1",
            "NTRK mixes with weights rho, 1 - rho instead of their square roots"),
    Mistake("E1_6_flat_only", "E1.6", NB1, "(eta.reshape(eta.shape[0], eta.shape[1], -1) ** 2).mean(dim=(1, 2))",
            "(eta ** 2).mean(dim=(1, 2))", 3, "one number per step",
            "the lens averages dims 1 and 2 only: wrong for image-shaped samples"),
    Mistake("E2_1_no_flip", "E2.1", "module", "U = -L[::-1, ::-1]", "U = -L", 9, "symmetry of N(0, 1)",
            "the upper bounds as -L without the flips"),
    Mistake("E2_2_clip_swapped", "E2.2", "module", "torch.clamp(Z[changed], Lp, Up)", "torch.clamp(Z[changed], Up, Lp)",
            3, "bounds are swapped", "the clip with its bounds swapped (every entry lands on L)"),
    Mistake("E2_3_no_sqrt_D", "E2.3", "module", "shift = (m_new - m) / math.sqrt(D)", "shift = m_new - m", 4,
            "not divided by sqrt(D)", "the tile shift in units of the scaled means (no division by sqrt(D))"),
    Mistake("E3_1_diagonal_offset", "E3.1", "module", "total -= float(k[rows - s, rows].sum())",
            "total -= float(k[rows, rows].sum())", 8, "row i of the block's kernel matrix",
            "the diagonal dropped at k[rows, rows]: right for one block, an IndexError for the next"),
    Mistake("E3_2_biased", "E3.2", "module",
            "kxx = poly_kernel_sum(x, x, gamma, coef0, degree, unbiased) / (m * (m - 1) if unbiased else m * m)\n"
            "    kyy = poly_kernel_sum(y, y, gamma, coef0, degree, unbiased) / (n * (n - 1) if unbiased else n * n)",
            "kxx = poly_kernel_sum(x, x, gamma, coef0, degree, False) / (m * m)\n"
            "    kyy = poly_kernel_sum(y, y, gamma, coef0, degree, False) / (n * n)", 1.5, "V-statistic",
            "KID with the diagonal kept and m^2 in the denominator (biased upward)"),
    Mistake("E3_3_min_p", "E3.3", "module", "p = float(max(p_lo, p_hi))", "p = float(min(p_lo, p_hi))", 0,
            "BOTH tests to reject", "TOST reports the smaller one-sided p-value (equivalence far too easily)"),
    Mistake("E3_4_direction", "E3.4", "module",
            'elif good(lo) and good(hi):\n        label = "win"\n    elif good(-lo) and good(-hi):',
            'elif lo > 0 and hi > 0:\n        label = "win"\n    elif lo < 0 and hi < 0:', 9.5,
            "a CI below 0 is a win", "the verdict ignores the direction: a lower KID counted as a loss"),
)


def _generator():
    spec = importlib.util.spec_from_file_location("make_assignments", ROOT / "scripts" / "make_assignments.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_assignments"] = mod
    spec.loader.exec_module(mod)
    return mod


def solution_notebooks() -> dict[str, str]:
    """Solution notebook file name -> its text, for every generated sheet."""
    gen = _generator()
    return {Path(rel).name: (ROOT / rel).read_text() for rel in gen.NOTEBOOKS if (ROOT / rel).exists()}


def _replace_in_notebook(text: str, orig: str, bad: str) -> str:
    nb = json.loads(text)
    hits = 0
    for cell in nb["cells"]:
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "code" and orig in src:
            hits += src.count(orig)
            cell["source"] = src.replace(orig, bad)
    if hits != 1:
        raise ValueError(f"planted mistake: {orig!r} found {hits} times in the notebook (expected once)")
    return json.dumps(nb, indent=1)


def planted_files() -> dict[str, dict[str, str]]:
    """Submission name -> {file name: text}: solution, untouched stubs, one folder per PLANTED mistake."""
    gen = _generator()
    solution = gen.solution_module()
    built = gen.build()
    notebooks = solution_notebooks()
    out = {"solution": {"ntrk_student.py": solution, **notebooks},
           "untouched_stubs": {n: t for n, t in built.items() if "/" not in n}}
    for m in PLANTED:
        files = {"ntrk_student.py": solution, **notebooks}
        if m.where == "module":
            if solution.count(m.orig) != 1:
                raise ValueError(f"{m.name}: {m.orig!r} found {solution.count(m.orig)} times in the solution module")
            files["ntrk_student.py"] = solution.replace(m.orig, m.bad)
        elif m.where in notebooks:
            files[m.where] = _replace_in_notebook(notebooks[m.where], m.orig, m.bad)
        else:
            continue                      # that sheet is not generated (yet)
        out[m.name] = files
    return out


def write(out_dir: Path) -> list[str]:
    names = []
    for name, files in planted_files().items():
        for fname, text in files.items():
            (out_dir / name).mkdir(parents=True, exist_ok=True)
            (out_dir / name / fname).write_text(text)
        names.append(name)
    return names


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    a = ap.parse_args()
    print("wrote", ", ".join(write(a.out)))
