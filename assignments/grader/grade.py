"""Grade submissions with the public + hidden tests and rubric.py: a score table per student, and
Gradescope's results.json.

    python assignments/grader/grade.py SUBMISSIONS --out grades/          # a folder of named submissions
    python assignments/grader/grade.py SUBMISSIONS --out grades/ --sheet 1 --jobs 2
    python assignments/grader/grade.py --gradescope /autograder --sheet 1  # what run_autograder calls

A folder of submissions may hold one folder per student (any depth: ``sec1/alice/ntrk_student.py``,
with the notebooks beside it) and/or loose ``.py`` files (``bob.py``). The name in the table is the
folder's path below SUBMISSIONS (or the loose file's stem), so two files called ``ntrk_student.py``
in different folders stay apart. A folder's graded file is its ``ntrk_student.py`` (or its only
``.py``); its notebooks supply the notebook exercises (E1.6). ``tests/`` folders are skipped.

Each submission is graded in its own pytest process (a crash, an endless loop or a global side
effect of one student's file cannot touch another's grade), ``--jobs`` at a time, with a time limit
per test (pytest.ini) and per submission (``--timeout``). ``--one-process`` grades all submissions in
one pytest run instead (faster for many: torch is imported once; less isolated).

Writes ``OUT/grades.csv`` and ``OUT/grades.md`` (one row per submission: points per exercise, total,
status) and ``OUT/results/<name>.json`` (the same grading in Gradescope's results.json format, with the
feedback each student would see). In ``--gradescope ROOT`` mode it grades ``ROOT/submission`` and
writes ``ROOT/results/results.json``; it writes that file even when grading fails (score 0 and the
reason), so Gradescope always shows the student something.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

GRADER = Path(__file__).resolve().parent
sys.path.insert(0, str(GRADER))

import rubric  # noqa: E402
import scoring  # noqa: E402

SKIP_DIRS = {"tests", "__pycache__", ".ipynb_checkpoints", ".git", "__MACOSX"}


# ---- finding submissions ----------------------------------------------------------------------------------
def _graded_file(folder: Path) -> tuple[Path | None, str]:
    pys = sorted(p for p in folder.glob("*.py") if p.is_file())
    if (folder / "ntrk_student.py").is_file():
        return folder / "ntrk_student.py", "graded"
    if len(pys) == 1:
        return pys[0], "graded"
    return None, f"{len(pys)} .py files and none named ntrk_student.py: which one to grade?"


def discover(root: Path) -> list[dict]:
    """Every submission below ``root``: ``{"name", "module", "notebooks", "status"}``, sorted by name."""
    root = root.resolve()
    if not root.is_dir():
        raise SystemExit(f"SUBMISSIONS must be a folder, got {root}")
    subs = []
    for p in sorted(root.glob("*.py")):
        nb = p.with_suffix(".ipynb")
        subs.append(dict(name=p.stem, module=str(p), notebooks=[str(nb)] if nb.is_file() else [], status="graded"))

    def walk(folder: Path):
        for d in sorted(q for q in folder.iterdir() if q.is_dir() and q.name not in SKIP_DIRS):
            if (d / "conftest.py").is_file():
                continue
            if any(d.glob("*.py")):
                module, status = _graded_file(d)
                subs.append(dict(name=d.relative_to(root).as_posix(), module=str(module) if module else "",
                                 notebooks=sorted(str(n) for n in d.glob("*.ipynb")), status=status))
            else:
                walk(d)

    walk(root)
    seen: dict[str, int] = {}
    for s in subs:                        # a loose alice.py next to a folder alice/: keep both apart
        k = seen[s["name"]] = seen.get(s["name"], 0) + 1
        if k > 1:
            s["name"] = f"{s['name']} ({k})"
    return sorted(subs, key=lambda s: s["name"])


def gradescope_submission(root: Path) -> dict:
    """The one submission Gradescope unpacked into ``root/submission`` (any depth)."""
    sub_dir = root / "submission"
    pys = sorted(p for p in sub_dir.rglob("*.py") if not SKIP_DIRS & set(p.relative_to(sub_dir).parts[:-1]))
    named = [p for p in pys if p.name == "ntrk_student.py"]
    module = named[0] if named else (pys[0] if len(pys) == 1 else None)
    status = "graded" if module else (f"{len(pys)} .py files uploaded and none named ntrk_student.py"
                                      if pys else "no .py file uploaded: submit your ntrk_student.py")
    nbs = sorted(str(p) for p in sub_dir.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    return dict(name="submission", module=str(module) if module else "", notebooks=nbs, status=status)


# ---- running the tests ----------------------------------------------------------------------------------
def test_files(sheets) -> list[str]:
    files = []
    for k in sorted(sheets):
        for kind in ("public", "hidden"):
            files += [str(p) for p in sorted((GRADER / kind).glob(f"test_ex{k:02d}_{kind}.py"))]
    return files


def run_pytest(subs: list[dict], sheets, select: str | None, timeout: float) -> tuple[list[dict], str]:
    """One pytest process over ``subs`` (each with a unique ``label``): (recorded outcomes, status)."""
    with tempfile.TemporaryDirectory(prefix="ntrk_grade_") as tmp:
        manifest, results = Path(tmp) / "manifest.json", Path(tmp) / "results.json"
        manifest.write_text(json.dumps([dict(label=s["label"], name=s["name"], module=s["module"],
                                             notebooks=s["notebooks"]) for s in subs]))
        env = dict(os.environ, NTRK_MANIFEST=str(manifest), NTRK_RESULTS=str(results), TQDM_DISABLE="1",
                   HF_HUB_OFFLINE="1", PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1")
        env.pop("NTRK_STUDENT", None)
        cmd = [sys.executable, "-m", "pytest", *test_files(sheets), "-c", str(GRADER / "pytest.ini"),
               "--rootdir", str(GRADER)]
        if select:
            cmd += ["-k", select]
        try:
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return [], f"timed out after {timeout:.0f} s"
        if not results.exists():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            return [], "grader error: " + " | ".join(tail)
        return json.loads(results.read_text())["results"], "graded"


def grade(subs: list[dict], sheets, jobs: int = 1, one_process: bool = False, select: str | None = None,
          timeout: float = 900.0, ids=None) -> list[dict]:
    """Grade ``subs`` (from ``discover``): the scored list, in the order of ``subs``."""
    subs = [dict(s, label=f"s{k:03d}") for k, s in enumerate(subs)]
    todo = [s for s in subs if s["status"] == "graded"]
    results: list[dict] = []
    if one_process and todo:
        got, status = run_pytest(todo, sheets, select, timeout)
        results += got
        if status != "graded":
            for s in todo:
                s["status"] = status
    else:
        def one(s):
            got, status = run_pytest([s], sheets, select, timeout)
            s["status"] = status
            return got
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for got in pool.map(one, todo):
                results += got
    return scoring.score(results, subs, sheets=sheets, ids=ids, only_run=False)


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("/", "__")).strip("_") or "submission"


def write_reports(scored: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "grades.csv").write_text(scoring.table_csv(scored))
    (out / "grades.md").write_text(scoring.table_markdown(scored))
    res = out / "results"
    res.mkdir(exist_ok=True)
    for s in scored:
        data = scoring.gradescope_results(s)
        data["extra_data"] = {"submission": s["name"], "file": s.get("module") or ""}
        (res / f"{safe_name(s['name'])}.json").write_text(json.dumps(data, indent=1) + "\n")


def _sheets(arg) -> list[int]:
    return sorted(set(arg)) if arg else sorted(rubric.SHEETS)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("submissions", nargs="?", type=Path, help="folder of named submissions")
    ap.add_argument("--out", type=Path, default=Path("grades"), help="where grades.csv/.md and results/ go")
    ap.add_argument("--sheet", type=int, nargs="+", help="sheets to grade (default: all)")
    ap.add_argument("--jobs", type=int, default=1, help="submissions graded at once (one process each)")
    ap.add_argument("--one-process", action="store_true", help="grade all submissions in one pytest run")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per submission (per run with --one-process)")
    ap.add_argument("-k", dest="select", default=None, help="pytest -k expression (e.g. E1_2)")
    ap.add_argument("--gradescope", type=Path, metavar="ROOT", help="Gradescope mode: grade ROOT/submission, "
                    "write ROOT/results/results.json")
    args = ap.parse_args(argv)
    sheets = _sheets(args.sheet)
    if args.gradescope is not None:
        root, t0 = args.gradescope, time.time()
        (root / "results").mkdir(parents=True, exist_ok=True)
        try:
            sub = gradescope_submission(root)
            scored = grade([sub], sheets, timeout=args.timeout)[0]
        except Exception as e:            # never leave Gradescope without a results.json
            scored = scoring.score([], [dict(label="s000", name="submission", status=f"grader error: {e!r}")],
                                   sheets=sheets, only_run=False)[0]
        data = scoring.gradescope_results(scored, execution_time=time.time() - t0)
        (root / "results" / "results.json").write_text(json.dumps(data, indent=1) + "\n")
        print(scoring.table_markdown([scored]))
        return 0
    if args.submissions is None:
        ap.error("give a folder of submissions (or --gradescope ROOT)")
    subs = discover(args.submissions)
    if not subs:
        raise SystemExit(f"no submissions (.py files or folders with one) in {args.submissions}")
    t0 = time.time()
    scored = grade(subs, sheets, jobs=args.jobs, one_process=args.one_process, select=args.select,
                   timeout=args.timeout)
    write_reports(scored, args.out)
    print(scoring.table_markdown(scored))
    print(f"graded {len(scored)} submissions in {time.time() - t0:.0f} s: {args.out / 'grades.csv'}, "
          f"{args.out / 'grades.md'}, {args.out / 'results'}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
