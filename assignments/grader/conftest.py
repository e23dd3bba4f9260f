"""Autograder plumbing: load the student's module, isolate exercises, report stubs clearly.

The module under test is ``assignments/student/ntrk_student.py`` unless the environment variable
``NTRK_STUDENT`` names another file, or several separated by ``os.pathsep`` (a teacher grading many
submissions; the CI grades the solution module, the stubs and some wrong variants in one run).

Each exercise is graded on its own: the ``student`` fixture hands out the student's module with every
*other* exercised function swapped for the library's reference version, so a mistake in ``tweedie``
cannot fail the ``Base.step`` checks (``monkeypatch`` restores the module after each test). A test
that hits an untouched stub fails with ``NOT IMPLEMENTED YET: [E1.x] <hint>`` instead of a traceback.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest

DEFAULT = Path(__file__).resolve().parent.parent / "student" / "ntrk_student.py"
REFERENCE_MODULES = ("ntrk_minimal.kernels", "ntrk_minimal.whitening")


def _load(path: Path):
    if not path.is_file():
        raise pytest.UsageError(f"student module not found: {path} (set NTRK_STUDENT=/path/to/file.py)")
    spec = importlib.util.spec_from_file_location(f"ntrk_student_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as e:      # a syntax error in the student's file: say so plainly
        raise pytest.UsageError(f"could not import your {path.name}: {type(e).__name__}: {e}") from e
    return mod


def _paths() -> list[Path]:
    """``NTRK_STUDENT`` may list several files (separated by ``os.pathsep``): each is graded in turn."""
    value = os.environ.get("NTRK_STUDENT", "")
    return [Path(p) for p in value.split(os.pathsep) if p] or [DEFAULT]


@pytest.fixture(scope="session", params=_paths(), ids=lambda p: p.stem)
def student_module(request):
    return _load(request.param)


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


@pytest.fixture
def isolate(student_module, monkeypatch):
    """``isolate(*names)`` -> the student module in which only ``names`` are the student's own
    functions; every other exercised *function* is the reference (classes are left alone)."""

    def only(*names):
        for name in getattr(student_module, "__all__", []):
            obj = getattr(student_module, name)
            if name not in names and callable(obj) and not isinstance(obj, type):
                monkeypatch.setattr(student_module, name, reference(name))
        return student_module

    return only


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if call.excinfo is not None and call.excinfo.errisinstance(NotImplementedError) and rep.failed:
        rep.longrepr = f"NOT IMPLEMENTED YET: {call.excinfo.value}"
