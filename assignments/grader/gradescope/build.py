"""Build the Gradescope autograder zips, one per sheet, offline: ``make gradescope``.

    python assignments/grader/gradescope/build.py [--sheet 1 2 3] [--out assignments/dist]

Each ``ntrk_sheetN_autograder.zip`` holds, at its root (as Gradescope requires): ``setup.sh`` (installs
the pinned grading requirements), ``run_autograder`` (grades ``/autograder/submission``, writes
``/autograder/results/results.json``), ``requirements.txt`` (the grading subset of the repository's
pins), ``SHEET``, the ``ntrk_minimal`` library (the reference the tests compare with) and ``grader/``:
the rubric, the plumbing and this sheet's public AND hidden tests. Nothing is downloaded to build it.
The bytes are deterministic (sorted entries, fixed timestamps), so a rebuilt zip diffs clean.
"""
from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
GRADER = HERE.parent
ROOT = GRADER.parent.parent
sys.path.insert(0, str(GRADER))

import rubric  # noqa: E402

GRADING_PACKAGES = ["torch", "numpy", "scipy", "diffusers", "pytest", "pytest-timeout"]
GRADER_FILES = ["conftest.py", "rubric.py", "scoring.py", "checks.py", "grade.py", "pytest.ini"]
STAMP = (2020, 1, 1, 0, 0, 0)


def requirements() -> str:
    """The grading subset of requirements.txt, with the repository's exact pins."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name = line.split("#")[0].strip().split("==")[0].strip().lower()
        if name:
            pins[name] = line.split("#")[0].strip()
    missing = [p for p in GRADING_PACKAGES if p not in pins]
    if missing:
        raise SystemExit(f"requirements.txt has no line for {missing}")
    return "".join(pins[p] + "\n" for p in GRADING_PACKAGES)


def contents(sheet: int) -> dict[str, tuple[bytes, int]]:
    """Zip member -> (bytes, unix mode) for one sheet."""
    if sheet not in rubric.SHEETS:
        raise SystemExit(f"--sheet: expected one of {sorted(rubric.SHEETS)}, got {sheet}")
    tests = [GRADER / kind / f"test_ex{sheet:02d}_{kind}.py" for kind in ("public", "hidden")]
    if not all(t.is_file() for t in tests):
        raise SystemExit(f"sheet {sheet} has no public and hidden tests yet: {[str(t) for t in tests]}")
    files = {"setup.sh": ((HERE / "setup.sh").read_bytes(), 0o755),
             "run_autograder": ((HERE / "run_autograder").read_bytes(), 0o755),
             "requirements.txt": (requirements().encode(), 0o644),
             "SHEET": (f"{sheet}\n".encode(), 0o644)}
    for p in sorted((ROOT / "ntrk_minimal").iterdir()):
        if p.is_file() and p.suffix in (".py", ".json"):
            files[f"ntrk_minimal/{p.name}"] = (p.read_bytes(), 0o644)
    for name in GRADER_FILES:
        files[f"grader/{name}"] = ((GRADER / name).read_bytes(), 0o644)
    for t in tests:
        files[f"grader/{t.parent.name}/{t.name}"] = (t.read_bytes(), 0o644)
    return files


def build(sheet: int, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"ntrk_sheet{sheet}_autograder.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, (data, mode) in sorted(contents(sheet).items()):
            info = zipfile.ZipInfo(name, date_time=STAMP)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sheet", type=int, nargs="+", default=None, help="sheets (default: every sheet with tests)")
    ap.add_argument("--out", type=Path, default=ROOT / "assignments" / "dist")
    args = ap.parse_args(argv)
    sheets = args.sheet or [k for k in sorted(rubric.SHEETS)
                            if (GRADER / "hidden" / f"test_ex{k:02d}_hidden.py").is_file()]
    for k in sheets:
        path = build(k, args.out)
        print(f"sheet {k}: {path} ({path.stat().st_size / 1e3:.0f} kB; {rubric.sheet_points(k):g} points)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
