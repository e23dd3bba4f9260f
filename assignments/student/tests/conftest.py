"""Grader plumbing: load each submission, isolate exercises, keep failure output short, record outcomes.

Which file is graded
    ``NTRK_STUDENT=/path/to/ntrk_student.py`` (several: separated by ``os.pathsep``), else the
    ``ntrk_student.py`` next to this folder (the student release: ``tests/`` beside ``ntrk_student.py``)
    or in ``../student/``. ``NTRK_MANIFEST=manifest.json`` (what ``grade.py`` writes) lists the
    submissions explicitly: ``[{"label", "name", "module", "notebooks"}]``; the label is the test id,
    the name is what the score table shows, so two files with the same name never collide.
    Exercises written in a notebook (E1.6, ...) are read from the submission's notebook: the code
    cell that defines the function is compiled on its own (nothing else of the notebook runs).

Each exercise is graded on its own: ``isolate("Base")`` hands out the submission with every *other*
exercised function swapped for the library's, so a mistake in ``tweedie`` cannot fail the
``Base.step`` checks; it also refuses a function that is the library's own (imported, not written).

Failure output is one short message per test (``--assert=plain`` in ``pytest.ini``: no tensor dumps):
an assertion states expected vs got as numbers; an untouched stub reads ``NOT IMPLEMENTED YET: [E1.x]
<hint>``; any other error names its type and the line of *your* file it came from.

``NTRK_RESULTS=out.json`` writes every outcome (submission label, test, outcome, message) for
``scoring.py``; at the end of a run the points per exercise are printed from ``rubric.py``.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import rubric  # noqa: E402  (this folder's rubric.py: the one table of points)
import scoring  # noqa: E402

REFERENCE_MODULES = tuple(dict.fromkeys(e.source[:-3].replace("/", ".") for e in rubric.EXERCISES
                                        if e.source.endswith(".py")))
MAX_MESSAGE = 400


class SubmissionError(Exception):
    """The submission could not be loaded (syntax error, missing file): every test reports it."""


@dataclass
class Submission:
    label: str                        # test id; unique within a run
    name: str                         # what the score table shows (e.g. the student's folder)
    module: str                       # path of the .py file
    notebooks: list[str] = field(default_factory=list)

    def __repr__(self) -> str:        # pytest shows this as the test id
        return self.label


def _default_module() -> Path:
    for p in (HERE.parent / "ntrk_student.py", HERE.parent / "student" / "ntrk_student.py"):
        if p.is_file():
            return p
    return HERE.parent / "ntrk_student.py"


def _submissions() -> list[Submission]:
    manifest = os.environ.get("NTRK_MANIFEST")
    if manifest:
        return [Submission(**d) for d in json.loads(Path(manifest).read_text())]
    value = os.environ.get("NTRK_STUDENT", "")
    paths = [Path(p) for p in value.split(os.pathsep) if p] or [_default_module()]
    subs = []
    for k, p in enumerate(paths):
        nbs = sorted(str(q) for q in p.parent.glob("*.ipynb")) if p.parent.is_dir() else []
        subs.append(Submission(p.stem if len(paths) == 1 else f"s{k}", str(p), str(p), nbs))
    return subs


# ---- loading -------------------------------------------------------------------------------------------
def notebook_function(notebooks: list[str], name: str) -> tuple[str, str] | None:
    """``(source of def name, notebook path)`` from the first code cell that defines ``name``."""
    for nb_path in notebooks:
        try:
            nb = json.loads(Path(nb_path).read_text())
        except (OSError, ValueError):
            continue
        for cell in nb.get("cells", []):
            if cell.get("cell_type") != "code":
                continue
            src = cell.get("source", "")
            src = "".join(src) if isinstance(src, list) else src
            if f"def {name}" not in src:
                continue
            clean = "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in src.splitlines())
            try:
                tree = ast.parse(clean)
            except SyntaxError as e:
                raise SubmissionError(f"the notebook cell that defines {name} in {Path(nb_path).name} has a "
                                      f"SyntaxError at its line {e.lineno}: {e.msg}") from None
            for node in tree.body:
                if isinstance(node, ast.FunctionDef) and node.name == name:
                    first = min([d.lineno for d in node.decorator_list] + [node.lineno])
                    lines = clean.splitlines()[first - 1:node.end_lineno]
                    return "\n".join(lines) + "\n", nb_path
    return None


def load(sub: Submission):
    path = Path(sub.module)
    if not path.is_file():
        raise SubmissionError(f"no file to grade: {path} does not exist")
    modname = f"ntrk_submission_{sub.label}"
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as e:            # a syntax error in the student's file: say so plainly
        where = f" (line {e.lineno})" if isinstance(e, SyntaxError) else ""
        raise SubmissionError(f"could not import your {path.name}{where}: {type(e).__name__}: {e}") from None
    for ex in rubric.EXERCISES:       # exercises written in a notebook: compile just that function
        if ex.in_notebook and not hasattr(mod, ex.name):
            found = notebook_function(sub.notebooks, ex.name)
            if found is None:
                continue
            code, nb_path = found
            ns = dict(mod.__dict__)
            ns.update(torch=importlib.import_module("torch"), math=math, np=importlib.import_module("numpy"))
            try:
                exec(compile(code, f"{Path(nb_path).name} (cell defining {ex.name})", "exec"), ns)
            except Exception as e:
                raise SubmissionError(f"the cell defining {ex.name} in {Path(nb_path).name} fails: "
                                      f"{type(e).__name__}: {e}") from None
            setattr(mod, ex.name, ns[ex.name])
    return mod


@pytest.fixture(scope="session", params=_submissions(), ids=repr)
def student_module(request):
    return load(request.param)


def reference(name: str):
    """The library's version of an exercised function or class."""
    for modname in REFERENCE_MODULES:
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        if hasattr(mod, name):
            return getattr(mod, name)
    raise LookupError(f"no reference implementation of {name!r} in {REFERENCE_MODULES}")


def _require_own(mod, name: str):
    ex = rubric.BY_NAME.get(name) or next((e for e in rubric.EXERCISES if e.name.split(".")[0] == name), None)
    what = f"[{ex.id}] " if ex else ""
    if not hasattr(mod, name):
        where = ("its notebook cell was not found: keep the notebook (saved) next to your .py file"
                 if ex is not None and ex.in_notebook else "did you rename or delete it?")
        pytest.fail(f"{what}{name} is missing from your submission ({where})", pytrace=False)
    obj = getattr(mod, name)
    if getattr(obj, "__module__", None) != mod.__name__:
        pytest.fail(f"{what}{name} in your file is {getattr(obj, '__module__', '?')}.{name}, the library's "
                    f"own (imported, not written): implement it in your file", pytrace=False)
    if isinstance(obj, type) and ex is not None and "." in ex.name:
        method = ex.name.split(".", 1)[1]
        if method not in obj.__dict__:
            pytest.fail(f"{what}your class {name} does not define {method}: write it in your file",
                        pytrace=False)


@pytest.fixture
def isolate(student_module, monkeypatch):
    """``isolate(*names)`` -> the submission in which only ``names`` are the student's own; every other
    exercised *function* is the reference (classes are left alone)."""

    def only(*names):
        for name in names:
            _require_own(student_module, name)
        for name in getattr(student_module, "__all__", []):
            obj = getattr(student_module, name, None)
            if name not in names and callable(obj) and not isinstance(obj, type):
                monkeypatch.setattr(student_module, name, reference(name))
        return student_module

    return only


# ---- short failure messages and recorded outcomes --------------------------------------------------------
def _first_line_block(text: str) -> str:
    text = text.split("\nassert ", 1)[0].strip()          # (if assertion rewriting was on after all)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."


def short_message(excinfo, sub: Submission | None) -> str:
    err = excinfo.value
    if excinfo.errisinstance(NotImplementedError):
        return "NOT IMPLEMENTED YET: " + _first_line_block(str(err))
    if excinfo.errisinstance(SubmissionError):
        return str(err)
    if excinfo.errisinstance(AssertionError):
        return _first_line_block(str(err)) or "assertion failed"
    if isinstance(err, (pytest.fail.Exception, pytest.skip.Exception)):
        msg = str(getattr(err, "msg", err))
        if "Timeout" in msg:
            return "took longer than the time limit (an endless loop, or far too slow)"
        return _first_line_block(msg)
    lines = [f"{type(err).__name__}: {_first_line_block(str(err))}"]
    if sub is not None:                   # where in the student's own file it happened
        mine = Path(sub.module).resolve()
        for entry in excinfo.traceback:
            p = str(entry.path)
            if p == str(mine) or "(cell defining" in p:
                stmt = str(entry.statement).strip().splitlines()[0] if entry.statement else ""
                lines.append(f"  in your {Path(p).name.split(' (')[0]}, line {entry.lineno + 1}: {stmt}")
    return "\n".join(lines[:4])


def _submission_of(item) -> Submission | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("student_module") if callspec is not None else None


def pytest_configure(config):
    config.stash[_RESULTS] = []


_RESULTS = pytest.StashKey[list]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    sub = _submission_of(item)
    message = None
    if call.excinfo is not None and rep.failed:
        message = short_message(call.excinfo, sub)
        rep.longrepr = message
    elif rep.skipped and isinstance(rep.longrepr, tuple):
        message = str(rep.longrepr[2]).removeprefix("Skipped: ")
    if sub is None or not (rep.when == "call" or (rep.when == "setup" and not rep.passed)):
        return
    fn = getattr(item, "originalname", item.name)
    item.config.stash[_RESULTS].append(dict(
        label=sub.label, test=fn, nodeid=item.nodeid, outcome=rep.outcome, message=message,
        kind="hidden" if "hidden" in Path(str(item.path)).parts else "public"))


def pytest_sessionfinish(session):
    out = os.environ.get("NTRK_RESULTS")
    if out:
        subs = [asdict(s) for s in _submissions()]
        Path(out).write_text(json.dumps({"submissions": subs, "results": session.config.stash[_RESULTS]},
                                        indent=1))


def pytest_terminal_summary(terminalreporter, config):
    results = config.stash.get(_RESULTS, [])
    if not results:
        return
    tr = terminalreporter
    for sub in scoring.score(results, [asdict(s) for s in _submissions()]):
        tr.write_line("")
        tr.write_line(f"points for {sub['name']} (rubric.py; parametrized tests split their points):")
        for ex in sub["exercises"]:
            ran = [c for c in ex["criteria"] if c["cases"]]
            if not ran:
                continue
            got, top = sum(c["points"] for c in ran), sum(c["max"] for c in ran)
            kinds = sorted({'hidden' if c['hidden'] else 'public' for c in ran})
            rest = ex["max"] - top
            tr.write_line(f"  {ex['id']:<5} {ex['name']:<20} {got:5.2f} / {top:g} ({' + '.join(kinds)} tests)"
                          + (f"; {rest:g} more points in the hidden tests" if rest > 0 else ""))
