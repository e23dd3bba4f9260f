"""Course-assignment mode (issue 6): generation is deterministic and up to date, the autograder passes
on the solutions, fails with the intended message on the untouched stubs, and catches typical mistakes;
the student notebook runs top to bottom before the student writes anything."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIPPED = "SKIPPED"          # a grader test for a sheet that is not generated (yet)
GRADER = ROOT / "assignments" / "grader"
STUDENT_DIR = ROOT / "assignments" / "student"


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_assignments", ROOT / "scripts" / "make_assignments.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_assignments"] = mod          # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gen():
    return _load_generator()


@pytest.fixture(scope="module")
def built(gen):
    return gen.build()


def _grade(modules: list[Path], tmp_path: Path, select: str) -> dict[str, dict[str, str | None]]:
    """Run the grader once over several modules (``-k select``): stem -> {test name: message or None}."""
    xml = tmp_path / "junit.xml"
    env = dict(os.environ, NTRK_STUDENT=os.pathsep.join(map(str, modules)), TQDM_DISABLE="1",
               HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", str(GRADER), f"--junitxml={xml}", "-k", select],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if not xml.exists():
        raise AssertionError(f"grader did not run (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    stems = {m.stem for m in modules}
    out: dict[str, dict] = {m.stem: {} for m in modules}
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = case.get("name")
        params = re.search(r"\[(.*)\]$", name).group(1).split("-")
        stem = next(p for p in params if p in stems)
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if case.find("skipped") is not None:
            out[stem][name] = SKIPPED
        else:
            out[stem][name] = None if bad is None else (bad.get("message", "") + "\n" + (bad.text or ""))
    return out


# typical mistakes: (exercise, original solution line, mutated line, expected message fragment)
MUTANTS = [
    ("E1_2", "math.sqrt(max(s_prev ** 2 - sigma_t ** 2, 0.0))", "math.sqrt(s_prev ** 2 - sigma_t ** 2)",
     "clamp it at 0 before the square root"),
    ("E1_3", "eta_t = _noise(mu_t, generator)", "eta_t = _noise(mu_t, generator) + 0 * _noise(mu_t, generator)",
     "exactly one fresh draw"),
    ("E1_5", "math.sqrt(rho) * w_t + math.sqrt(1.0 - rho) * eps", "rho * w_t + (1.0 - rho) * eps",
     "squares sum to 1"),
    ("E2_1", "U = -L[::-1, ::-1]", "U = -L", "symmetry of N(0, 1)"),
    ("E2_3", "shift = (m_new - m) / math.sqrt(D)", "shift = m_new - m", "one-tile order-statistics set"),
]
SHEET_MARK = {"E1": "def tweedie", "E2": "def _bounds_np"}     # a sheet is generated iff this is in the module


@pytest.fixture(scope="module")
def graded(gen, built, tmp_path_factory):
    """One grader run over the solution module, the untouched stubs and one wrong variant per MUTANT."""
    tmp = tmp_path_factory.mktemp("grading")
    sol = gen.solution_module()
    files = {"ntrk_solution": sol, "ntrk_student": built["ntrk_student.py"]}
    for ex, orig, bad, _ in MUTANTS:
        if SHEET_MARK[ex[:2]] not in sol:
            continue                                     # that sheet is not generated (yet)
        assert sol.count(orig) == 1, f"mutation target {orig!r} not found once in the solution module"
        files[f"mutant_{ex}"] = sol.replace(orig, bad)
    paths = []
    for stem, text in files.items():
        (tmp / f"{stem}.py").write_text(text)
        paths.append(tmp / f"{stem}.py")
    # every test on the solution and the stubs; a mutant only on its own exercise's tests (saves time)
    select = " or ".join(["ntrk_solution", "ntrk_student"] +
                         [f"({stem} and test_{stem[len('mutant_'):]}_)" for stem in files if stem.startswith("mutant_")])
    return _grade(paths, tmp, select)


# ---- generation ------------------------------------------------------------------------------------
def test_generation_is_deterministic_and_committed(gen, built):
    again = gen.build()
    assert again == built, "two generation runs gave different bytes"
    on_disk = {p.name: p.read_text() for p in STUDENT_DIR.glob("*") if p.is_file()}
    stale = sorted(n for n in built if on_disk.get(n) != built[n])
    extra = sorted(set(on_disk) - set(built))
    assert not stale and not extra, (f"assignments/student is stale (run `make assignments` and commit): "
                                     f"differ {stale}, not generated {extra}")


def test_student_files_have_stubs_and_no_solution(built, gen):
    mod = built["ntrk_student.py"]
    compile(mod, "ntrk_student.py", "exec")
    units, _ = gen.scan_library()
    assert {u.qualname for u in units} >= {"tweedie", "ddim_mean", "Base.step", "MeanShift.step", "NoiseTilt.step"}
    for u in units:
        ex_id = gen.EXERCISES[u.qualname][0]
        assert f"raise NotImplementedError(\n" in mod and f"[{ex_id}]" in mod, f"{ex_id} ({u.qualname}) has no stub"
    for name, text in built.items():
        assert gen.BEGIN not in text and gen.END not in text, f"{name} still contains a solution marker"
    assert "math.sqrt(rho) * w_t" not in mod, "the NTRK mixing line leaked into the student module"
    nb = built["ex_01_reverse_kernels.ipynb"]
    assert 'IMPL = \\"ntrk_student\\"' in nb and "ntrk_minimal.kernels\\\"" not in nb
    assert "eta = torch.stack([s.eta_t for s in trace])" not in nb, "notebook solution leaked"
    for name in (n for n in built if n.endswith(".ipynb")):
        assert "This is the solution notebook" not in built[name], f"{name}: solution-only cell kept"
        assert '"execution_count": null' in built[name] and '"execution_count": 1' not in built[name]


def test_markers_are_validated(gen):
    lines = ["def f():\n", "    ### BEGIN SOLUTION\n", "    return 1\n"]
    with pytest.raises(SyntaxError, match="never closed"):
        gen.find_regions(lines, "x.py")
    with pytest.raises(SyntaxError, match="without a"):
        gen.find_regions(["    ### END SOLUTION\n"], "x.py")
    with pytest.raises(SyntaxError, match="empty solution region"):
        gen.find_regions(["  ### BEGIN SOLUTION\n", "  ### END SOLUTION\n"], "x.py")


# ---- grading -------------------------------------------------------------------------------------
def test_grader_passes_on_the_solutions(graded):
    res = graded["ntrk_solution"]
    failed = {k: v for k, v in res.items() if v not in (None, SKIPPED)}
    assert len(res) >= 20, f"too few grader tests collected: {len(res)}"
    assert not failed, f"grader fails on the solution module: {failed}"


def test_grader_fails_on_the_stubs_with_the_intended_message(graded):
    res = graded["ntrk_student"]
    assert res, "no grader tests collected"
    for name, msg in res.items():
        if msg == SKIPPED:
            continue
        m = re.match(r"test_E(\d+)_(\d+)_", name)
        assert m, f"grader test {name} does not start with its exercise id (test_E1_3_...)"
        ex = f"[E{m.group(1)}.{m.group(2)}]"
        assert msg is not None, f"{name} passed on an untouched stub"
        assert f"NOT IMPLEMENTED YET: {ex}" in msg, f"{name}: expected 'NOT IMPLEMENTED YET: {ex} ...', got {msg[:300]!r}"


@pytest.mark.parametrize("ex,orig,bad,message", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_grader_catches_typical_mistakes(graded, ex, orig, bad, message):
    if f"mutant_{ex}" not in graded:
        pytest.skip(f"sheet {ex[:2]} is not generated yet")
    res = graded[f"mutant_{ex}"]
    failed = {k: v for k, v in res.items() if v not in (None, SKIPPED)}
    assert failed, f"no grader test caught the mistake {bad!r}"
    assert res and all(k.startswith(f"test_{ex}_") for k in res), f"unexpected selection: {sorted(res)[:5]}"
    assert any(message in v for v in failed.values()), \
        f"{ex}: no failure explains the mistake with {message!r}: {list(failed.values())[:1]}"


# ---- the student notebook runs before the student writes anything ---------------------------------
def test_student_notebook_runs_top_to_bottom_on_stubs(built, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for name, text in built.items():
        (tmp_path / name).write_text(text)
    for name in sorted(n for n in built if n.endswith(".ipynb")):
        nb = nbformat.read(tmp_path / name, as_version=4)
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        assert "waiting for your code" in text, f"{name}: the stubs were not reached"
        assert "checks skipped until implemented" in text, f"{name}: the check cell did not skip"
