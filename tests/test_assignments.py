"""Course assignments (issue 12): generation is deterministic and committed; the grader gives the solution
full points, the untouched stubs zero, and each planted typical mistake its intended partial score and
message; the batch report maps every submission to its name; the Gradescope zip's results.json validates
against Gradescope's documented format; the student notebooks run top to bottom on the stubs; the teachers'
guide's sample table is what the batch grader prints on the planted submissions."""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GRADER = ROOT / "assignments" / "grader"
STUDENT_DIR = ROOT / "assignments" / "student"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod                        # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gen():
    return _load("make_assignments", ROOT / "scripts" / "make_assignments.py")


@pytest.fixture(scope="module")
def built(gen):
    return gen.build()


@pytest.fixture(scope="module")
def grading():
    sys.path.insert(0, str(GRADER))
    try:
        return (_load("grade", GRADER / "grade.py"), _load("planted", GRADER / "planted.py"),
                _load("rubric", GRADER / "rubric.py"), _load("scoring", GRADER / "scoring.py"))
    finally:
        sys.path.remove(str(GRADER))


@pytest.fixture(scope="module")
def planted_dir(grading, tmp_path_factory):
    _, planted, _, _ = grading
    out = tmp_path_factory.mktemp("planted")
    planted.write(out)
    return out


@pytest.fixture(scope="module")
def graded(grading, planted_dir):
    """One grader run (one process) over the planted submissions: the solution and the stubs on every
    test, each mistake on its own exercise's tests. name -> scored submission."""
    grade, planted, _, _ = grading
    subs = grade.discover(planted_dir)
    labels = {s["name"]: f"s{k:03d}" for k, s in enumerate(subs)}          # grade() labels in this order
    mistakes = {m.name: m for m in planted.PLANTED}
    select = " or ".join(f"({labels[n]} and E{mistakes[n].exercise[1:].replace('.', '_')})" if n in mistakes
                         else labels[n] for n in labels)
    scored = grade.grade(subs, sheets=sorted({e.sheet for e in grading[2].EXERCISES}), one_process=True,
                         select=select, timeout=900)
    return {s["name"]: s for s in scored}


def _points(sub, ex_id):
    return next(e["points"] for e in sub["exercises"] if e["id"] == ex_id)


def _messages(sub, ex_id):
    ex = next(e for e in sub["exercises"] if e["id"] == ex_id)
    return [m for c in ex["criteria"] for m in c["messages"]]


def _active_sheets(built, rubric):
    mod = built["ntrk_student.py"]
    return {e.sheet for e in rubric.EXERCISES if f"[{e.id}]" in mod or any(f"[{e.id}]" in t for t in built.values())}


# ---- the rubric: one table, consistent with the tests ---------------------------------------------------
def test_rubric_covers_every_grader_test_once(grading):
    """Every test function in public/ and hidden/ is one criterion, in the right folder, and vice versa
    (a test without points, or points without a test, would silently change a grade)."""
    _, _, rubric, _ = grading
    import ast
    found = {}
    for kind in ("public", "hidden"):
        for f in sorted((GRADER / kind).glob("test_*.py")):
            for node in ast.parse(f.read_text()).body:
                if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                    assert node.name not in found, f"{node.name} defined twice"
                    found[node.name] = (kind, f.name)
    crits = {c.test: (e, c) for e in rubric.EXERCISES for c in e.criteria}
    sheets_with_tests = {int(f.name[7:9]) for f in (GRADER / "hidden").glob("test_ex*_hidden.py")}
    for test, (e, c) in crits.items():
        if e.sheet not in sheets_with_tests:
            continue
        assert test in found, f"rubric criterion {e.id} {test!r} has no test function"
        kind, fname = found[test]
        assert (kind == "hidden") == c.hidden, f"{test} is in {kind}/ but the rubric says hidden={c.hidden}"
        assert fname.startswith(f"test_ex{e.sheet:02d}_"), f"{test} ({e.id}) is in {fname}"
        assert test.startswith(f"test_{e.key}_"), f"{test} does not start with its exercise id {e.key}"
    assert set(found) <= set(crits), f"tests without rubric points: {sorted(set(found) - set(crits))}"
    for e in rubric.EXERCISES:
        assert e.points > 0 and any(not c.hidden for c in e.criteria), f"{e.id}: no public criterion"
    assert all(rubric.sheet_points(k) == 50 for k in sheets_with_tests)


# ---- generation -------------------------------------------------------------------------------------------
def test_generation_is_deterministic_and_committed(gen, built):
    assert gen.build() == built, "two generation runs gave different bytes"
    on_disk = {p.relative_to(STUDENT_DIR).as_posix(): p.read_text() for p in STUDENT_DIR.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    stale = sorted(n for n in built if on_disk.get(n) != built[n])
    extra = sorted(set(on_disk) - set(built))
    assert not stale and not extra, (f"assignments/student is stale (run `make assignments` and commit): "
                                     f"differ {stale}, not generated {extra}")


def test_student_release_has_stubs_public_tests_and_no_solution_or_hidden_test(built, gen):
    mod = built["ntrk_student.py"]
    compile(mod, "ntrk_student.py", "exec")
    units, _ = gen.scan_library()
    assert {u.qualname for u in units} >= {"tweedie", "ddim_mean", "Base.step", "MeanShift.step", "NoiseTilt.step"}
    for u in units:
        assert f"[{gen.EXERCISES[u.qualname][0]}]" in mod, f"{u.qualname} has no stub"
    for name, text in built.items():
        assert gen.BEGIN not in text and gen.END not in text, f"{name} still contains a solution marker"
    assert "math.sqrt(rho) * w_t" not in mod, "the NTRK mixing line leaked into the student module"
    hidden = {p.name for p in (GRADER / "hidden").glob("*.py")}
    assert not any(Path(n).name in hidden for n in built), "a hidden test file is in the student release"
    hidden_tests = [line.split("(")[0][4:] for p in (GRADER / "hidden").glob("*.py")
                    for line in p.read_text().splitlines() if line.startswith("def test_")]
    for name, text in built.items():
        if name.startswith("tests/test_"):
            assert not any(f"def {t}(" in text for t in hidden_tests), f"{name} contains a hidden test"
    assert "tests/conftest.py" in built and "tests/test_ex01_public.py" in built
    nb = built["ex_01_reverse_kernels.ipynb"]
    assert 'IMPL = \\"ntrk_student\\"' in nb and "eta = torch.stack([s.eta_t for s in trace])" not in nb
    for name in (n for n in built if n.endswith(".ipynb")):
        assert "This is the solution notebook" not in built[name], f"{name}: solution-only cell kept"
        assert '"execution_count": null' in built[name] and '"execution_count": 1' not in built[name]


def test_hints_are_valid_text_not_code(grading):
    """A hint copied into the code must not break the file (the old E1.3 hint was a SyntaxError that made
    every test error); hints point to the equation: none states a full solution line."""
    _, _, rubric, _ = grading
    solution_lines = ["math.sqrt(rho) * w_t + math.sqrt(1.0 - rho) * eps", "(x_t - s_t * eps_hat) / a_t",
                      "eps + (lam / sigma_t) * g", "(m_new - m) / math.sqrt(D)", "StepResult(mu_t + sigma_t * eta_t"]
    for e in rubric.EXERCISES:
        for hint in (e.hint if isinstance(e.hint, tuple) else (e.hint,)):
            compile(f'raise NotImplementedError({json.dumps(hint)})\n', e.id, "exec")
            assert not any(s in hint for s in solution_lines), f"{e.id}: the hint gives the solution away: {hint}"


def test_markers_are_validated(gen):
    with pytest.raises(SyntaxError, match="never closed"):
        gen.find_regions(["def f():\n", "    ### BEGIN SOLUTION\n", "    return 1\n"], "x.py")
    with pytest.raises(SyntaxError, match="without a"):
        gen.find_regions(["    ### END SOLUTION\n"], "x.py")
    with pytest.raises(SyntaxError, match="empty solution region"):
        gen.find_regions(["  ### BEGIN SOLUTION\n", "  ### END SOLUTION\n"], "x.py")


def test_student_notebooks_carry_valid_nbgrader_metadata(built):
    """An nbgrader course can import the notebooks: nbgrader's own validator accepts them, answer cells
    are solution cells, reference figures are read-only."""
    nbformat = importlib.import_module("nbformat")
    v3 = importlib.import_module("nbgrader.nbgraderformat.v3")
    for name in (n for n in built if n.endswith(".ipynb")):
        nb = nbformat.reads(built[name], as_version=4)
        v3.MetadataValidatorV3().validate_nb(nb)
        meta = [c.metadata.get("nbgrader") for c in nb.cells]
        assert any(m and m["locked"] for m in meta), f"{name}: no locked cell"
        for c, m in zip(nb.cells, meta):
            if "raise NotImplementedError" in c.source:
                assert m and m["solution"], f"{name}: the answer cell is not an nbgrader solution cell"


def test_an_nbgrader_course_releases_the_student_notebooks(built, tmp_path):
    """What the guide tells an nbgrader course to do: put the release into source/<assignment>/ and run
    `nbgrader generate_assignment`; the answer cells keep their stubs, the reference figures their outputs."""
    importlib.import_module("nbgrader")
    src = tmp_path / "course" / "source" / "ntrk"
    for name, text in built.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    (tmp_path / "course" / "nbgrader_config.py").write_text(
        "c = get_config()\nc.CourseDirectory.course_id = 'ntrk'\nc.ClearOutput.enabled = False\n")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    rc = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "ntrk", "--create", "--force"],
                        cwd=tmp_path / "course", env=env, capture_output=True, text=True, timeout=300)
    release = tmp_path / "course" / "release" / "ntrk"
    assert rc.returncode == 0 and (release / "ex_01_reverse_kernels.ipynb").is_file(), (rc.stdout + rc.stderr)[-2000:]
    text = (release / "ex_01_reverse_kernels.ipynb").read_text()
    assert "NotImplementedError" in text and "image/png" in text
    assert (release / "ntrk_student.py").is_file() and (release / "tests" / "test_ex01_public.py").is_file()


# ---- grading ------------------------------------------------------------------------------------------------
def test_grader_gives_the_solution_full_points(graded):
    sol = graded["solution"]
    assert len(sol["exercises"]) >= 9
    for e in sol["exercises"]:
        bad = [m for c in e["criteria"] if c["passed"] < c["cases"] or not c["cases"] for m in c["messages"]]
        assert e["points"] == e["max"], f"solution: {e['id']} {e['points']}/{e['max']}: {bad[:2]}"
    assert sol["points"] == sol["max"] > 0


def test_grader_gives_the_untouched_stubs_zero_with_the_hint(graded):
    stubs = graded["untouched_stubs"]
    assert stubs["points"] == 0
    for e in stubs["exercises"]:
        for c in e["criteria"]:
            assert c["cases"] > 0, f"{c['test']} did not run"
            assert any(f"[{e['id']}]" in m and ("NOT IMPLEMENTED YET" in m or "missing" in m) for m in c["messages"]), \
                f"{c['test']}: expected 'NOT IMPLEMENTED YET: [{e['id']}] ...', got {c['messages'][:1]}"


def _mistake_ids():
    spec = importlib.util.spec_from_file_location("planted_ids", GRADER / "planted.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["planted_ids"] = mod
    spec.loader.exec_module(mod)
    return mod.PLANTED


@pytest.mark.parametrize("mistake", _mistake_ids(), ids=lambda m: m.name)
def test_grader_gives_each_planted_mistake_its_score_and_message(graded, mistake):
    if mistake.name not in graded:
        pytest.skip(f"sheet of {mistake.exercise} not generated")
    sub = graded[mistake.name]
    got = _points(sub, mistake.exercise)
    top = next(e["max"] for e in sub["exercises"] if e["id"] == mistake.exercise)
    msgs = _messages(sub, mistake.exercise)
    assert abs(got - mistake.points) < 0.01, (f"{mistake.name}: {mistake.exercise} scored {got:.2f}/{top:g}, "
                                              f"intended {mistake.points}: {msgs[:3]}")
    assert any(mistake.message in m for m in msgs), f"{mistake.name}: no message says {mistake.message!r}: {msgs[:4]}"
    assert all(len(m) < 700 and "tensor(" not in m for m in msgs), f"{mistake.name}: long or tensor-dump message"


# ---- the batch report maps every submission to its name ----------------------------------------------------------
def test_batch_grader_keeps_same_named_files_apart(grading, tmp_path):
    """Names come from the folders, not the file names (one process here; the default, one process per
    submission, is what the Gradescope test below runs)."""
    grade, planted, _, scoring = grading
    files = planted.planted_files()
    layout = {"sec1/alice": "solution", "sec2/alice": "untouched_stubs", "bob": "E1_2_no_clamp"}
    for folder, source in layout.items():
        (tmp_path / "subs" / folder).mkdir(parents=True)
        (tmp_path / "subs" / folder / "ntrk_student.py").write_text(files[source]["ntrk_student.py"])
    (tmp_path / "subs" / "carol.py").write_text(          # a loose file that re-exports the library's tweedie
        files["solution"]["ntrk_student.py"] + "\nfrom ntrk_minimal.kernels import tweedie  # noqa\n")
    subs = grade.discover(tmp_path / "subs")
    assert [s["name"] for s in subs] == ["bob", "carol", "sec1/alice", "sec2/alice"]
    out = tmp_path / "grades"
    rc = subprocess.run([sys.executable, str(GRADER / "grade.py"), str(tmp_path / "subs"), "--out", str(out),
                         "--sheet", "1", "-k", "E1_1 or E1_2", "--one-process"], capture_output=True, text=True,
                        timeout=900, env=dict(os.environ, TQDM_DISABLE="1"))
    assert rc.returncode == 0, rc.stderr[-2000:]
    rows = {line.split(",")[0]: line.split(",") for line in (out / "grades.csv").read_text().splitlines()[1:]}
    assert set(rows) == {"bob", "carol", "sec1/alice", "sec2/alice"}
    col = (out / "grades.csv").read_text().splitlines()[0].split(",")
    e11, e12 = col.index("E1.1"), col.index("E1.2")
    assert (rows["sec1/alice"][e11], rows["sec1/alice"][e12]) == ("5.00", "10.00")
    assert (rows["sec2/alice"][e11], rows["sec2/alice"][e12]) == ("0.00", "0.00")
    assert (rows["bob"][e11], rows["bob"][e12]) == ("5.00", "8.50")
    assert (rows["carol"][e11], rows["carol"][e12]) == ("0.00", "10.00")
    carol = json.loads((out / "results" / "carol.json").read_text())
    assert any("the library's own" in t["output"] for t in carol["tests"] if t["name"].startswith("E1.1"))
    assert rows["sec1/alice"][-1].endswith("sec1/alice/ntrk_student.py")
    md = (out / "grades.md").read_text()
    assert "| sec1/alice |" in md and "| sec2/alice |" in md
    per = json.loads((out / "results" / "sec2__alice.json").read_text())
    assert per["extra_data"]["submission"] == "sec2/alice" and per["score"] == 0


# ---- Gradescope ------------------------------------------------------------------------------------------------------
def _validate(results: dict, scoring) -> None:
    jsonschema = importlib.import_module("jsonschema")
    jsonschema.validate(results, scoring.RESULTS_SCHEMA)
    assert isinstance(results["tests"], list) and results["tests"]
    for t in results["tests"]:
        assert {"name", "score", "max_score", "output", "visibility"} <= set(t)
        assert 0 <= t["score"] <= t["max_score"]
    assert abs(results["score"] - sum(t["score"] for t in results["tests"])) < 1e-6


def test_results_schema_rejects_malformed_output(grading):
    jsonschema = importlib.import_module("jsonschema")
    _, _, _, scoring = grading
    good = {"score": 1.0, "tests": [{"name": "a", "score": 1.0, "max_score": 1.0, "visibility": "visible"}]}
    jsonschema.validate(good, scoring.RESULTS_SCHEMA)
    for bad in ({"tests": [{"name": "a", "max_score": 1}]},                       # no score anywhere
                {"score": 1, "tests": [{"name": "a", "score": 1, "visibility": "after_deadline"}]},
                {"score": "1"}, {"score": 1, "max_points": 2},
                {"score": 1, "tests": [{"name": "a", "score": 1, "max_points": 1}]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, scoring.RESULTS_SCHEMA)


def test_gradescope_zip_grades_a_submission_into_valid_results_json(grading, planted_dir, tmp_path):
    """Build a zip offline (sheet 3: its tests are the quickest), unpack it as Gradescope does
    (/autograder/source), run its run_autograder on a planted submission and on a broken one:
    results.json is valid both times and has the intended score."""
    _, planted, rubric, scoring = grading
    build = _load("gradescope_build", GRADER / "gradescope" / "build.py")
    sheet = 3
    mistake = next(m for m in planted.PLANTED if m.exercise == "E3.4")
    z1, z2 = build.build(sheet, tmp_path / "a"), build.build(sheet, tmp_path / "b")
    assert z1.read_bytes() == z2.read_bytes(), "the zip is not deterministic"
    with zipfile.ZipFile(z1) as zf:
        names = set(zf.namelist())
        assert {"setup.sh", "run_autograder", "requirements.txt", "SHEET"} <= names
        assert "grader/hidden/test_ex03_hidden.py" in names and "grader/public/test_ex03_public.py" in names
        assert not any("ex01" in n or "ex02" in n for n in names), "another sheet's tests are in sheet 3's zip"
        assert zf.getinfo("run_autograder").external_attr >> 16 & 0o111, "run_autograder is not executable"
        root = tmp_path / "autograder"
        zf.extractall(root / "source")
    reqs = (root / "source" / "requirements.txt").read_text()
    assert "torch==2.13.0" in reqs and "pytest-timeout==" in reqs
    env = dict(os.environ, AUTOGRADER_ROOT=str(root), AUTOGRADER_PYTHON=sys.executable, TQDM_DISABLE="1")
    top = rubric.BY_ID[mistake.exercise].points
    for sub, expect in [(mistake.name, rubric.sheet_points(sheet) - top + mistake.points), ("broken", 0.0)]:
        subdir = root / "submission"
        if subdir.exists():
            for p in subdir.iterdir():
                p.unlink()
        subdir.mkdir(exist_ok=True)
        if sub == "broken":
            (subdir / "ntrk_student.py").write_text("def tweedie(:\n")
        else:
            for p in (planted_dir / sub).iterdir():
                (subdir / p.name).write_bytes(p.read_bytes())
        rc = subprocess.run(["bash", str(root / "source" / "run_autograder")], env=env, capture_output=True,
                            text=True, timeout=900)
        assert rc.returncode == 0, rc.stderr[-2000:]
        results = json.loads((root / "results" / "results.json").read_text())
        _validate(results, scoring)
        assert abs(results["score"] - expect) < 0.01, (sub, results["score"], results["output"])
        vis = {t["visibility"] for t in results["tests"]}
        assert vis == {"visible", rubric.HIDDEN_VISIBILITY}
        if sub == "broken":
            assert any("SyntaxError" in t["output"] for t in results["tests"])


# ---- the teachers' guide shows the batch grader's table, not a typed one ----------------------------------------
def test_guide_sample_table_is_the_graders_output(graded, grading):
    _, planted, _, _ = grading
    text = (ROOT / "assignments" / "README.md").read_text()
    begin, end = "<!-- BEGIN SAMPLE TABLE", "<!-- END SAMPLE TABLE -->"
    assert begin in text and end in text, "the guide has no generated sample table"
    table = text.split(begin, 1)[1].split(end, 1)[0]
    rows = {}
    head = None
    for line in table.splitlines():
        if line.startswith("| submission"):
            head = [c.strip().split(" ")[0] for c in line.strip("|").split("|")]
        elif line.startswith("| ") and head and not line.startswith("|---"):
            cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
            rows[cells[0]] = dict(zip(head[1:], cells[1:]))
    assert "solution" in rows and "untouched_stubs" in rows
    for m in planted.PLANTED:
        if m.name in graded:
            assert m.name in rows, f"the guide's table has no row for {m.name} (run `make grade-sample`)"
            assert abs(float(rows[m.name][m.exercise]) - m.points) < 0.01, \
                f"guide: {m.name} {m.exercise} = {rows[m.name][m.exercise]}, the grader gives {m.points}"
    assert all(float(v) == 0 for v in rows["untouched_stubs"].values())


# ---- the student notebooks run before the student writes anything -------------------------------------------------
def test_student_notebooks_run_top_to_bottom_on_stubs(built, tmp_path):
    nbformat = importlib.import_module("nbformat")
    nbclient = importlib.import_module("nbclient")
    for name, text in built.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    from concurrent.futures import ThreadPoolExecutor

    def run(name):                              # one kernel per notebook, two at a time
        nb = nbformat.read(tmp_path / name, as_version=4)
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
        return name, nb

    names = sorted(n for n in built if n.endswith(".ipynb"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        executed = list(pool.map(run, names))
    assert len(executed) == len(names) >= 3
    for name, nb in executed:
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        assert "waiting for your code" in text, f"{name}: the stubs were not reached"
        assert "checks skipped until implemented" in text, f"{name}: the check cell did not skip"
        assert "waiting for your code: [E" in text
        for line in text.splitlines():          # each check is isolated: E1.4 never waits for E1.2's stub
            if "waiting for your code:" in line:
                ex = line.split("]")[0].strip("[")
                assert f"[{ex}]" in line.split("waiting for your code:")[1], f"{name}: not isolated: {line}"
