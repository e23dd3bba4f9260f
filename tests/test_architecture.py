"""The package's shape: every module imports, no import circles, the core imports nothing above it,
and no private name crosses a module boundary (library, notebooks, scripts, assignments).

The import graph is read from the source (``ast``), function-local imports included: a dependency a
module hides inside a function is still a dependency. The core is the top level of ``ntrk_minimal/``
(``docs/ARCHITECTURE.md``); the layers above it are its subpackages.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "ntrk_minimal"


def modules() -> dict:
    """``{dotted name: file}`` of every module of the package (a package as its ``__init__``)."""
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = f.with_suffix("").relative_to(ROOT).parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def _resolve(name: str, f: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative levels resolved against ``name``)."""
    if not node.level:
        return node.module or ""
    pkg = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
    base = pkg[: len(pkg) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str, f: Path, mods: dict) -> set:
    """Modules of the package that module ``name`` imports, anywhere in its source."""
    out = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            t = _resolve(name, f, node)          # ``from . import kernels``: the module kernels, not the package
            targets = [f"{t}.{a.name}" if f"{t}.{a.name}" in mods else t for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in mods:          # ``ntrk_minimal.kernels.norm_match`` -> its module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def graph() -> dict:
    mods = modules()
    return {m: imports(m, f, mods) for m, f in mods.items()}


def cycles(g: dict) -> list:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def is_core(name: str) -> bool:
    return name.count(".") == 1 and (PKG / f"{name.split('.')[1]}.py").is_file()


def test_graph_reader_sees_a_cycle_and_a_hidden_import(tmp_path):
    """Catches a cycle finder that misses circles, or an import reader that skips function-local imports."""
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from .kernels import norm_match\n")
    assert imports("ntrk_minimal.m", f, {"ntrk_minimal.m": f, "ntrk_minimal.kernels": f}) == {"ntrk_minimal.kernels"}


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_module_imports(name):
    """Catches a module broken by a move (a stale relative import, a renamed name)."""
    importlib.import_module(name)


def test_no_import_cycles():
    """Catches an import circle: two modules that need each other cannot be read (or tested) apart."""
    assert cycles(graph()) == []


def test_core_imports_nothing_above_it():
    """Catches the core (the top level a learner reads) reaching into the benchmark layer, the worlds,
    the adapters or the studies."""
    bad = {m: sorted(t for t in deps if not is_core(t) and t != "ntrk_minimal")
           for m, deps in graph().items() if is_core(m)}
    assert {m: v for m, v in bad.items() if v} == {}


def test_package_face_does_not_import_the_heavy_layers():
    """Catches ``import ntrk_minimal`` pulling in the benchmark layer, worlds or diffusers adapters."""
    deps = graph()["ntrk_minimal"]
    assert sorted(d for d in deps if not is_core(d)) == []


def _is_module(dotted: str) -> bool:
    """Whether ``dotted`` (``ntrk_minimal...``) names a module or package of the package."""
    p = ROOT / Path(*dotted.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _private_uses(path: Path, own: str | None) -> list:
    """``from ntrk_minimal.x import _name`` and ``alias._name`` (``alias`` bound to a module of the
    package) in one file; ``own``: the file's own module, whose own names are not crossings."""
    tree = ast.parse(path.read_text())
    aliases, out = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("ntrk_minimal")}
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(own, path, node) if node.level else (node.module or "")
            if not mod.startswith("ntrk_minimal") or mod == own:
                continue
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {mod} import {a.name}")
                elif _is_module(f"{mod}.{a.name}"):
                    aliases.add(a.asname or a.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in aliases):
            out.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    return out


def test_no_private_names_cross_modules():
    """Catches a module, notebook, script or the student module reaching for another module's private
    helper (``_noise``, ``flow2d._reach_rows``): what a learner needs is public, and private code can
    change without notice."""
    found = []
    for name, f in modules().items():
        found += _private_uses(f, name)
    for pattern in ("notebooks/*.py", "scripts/*.py", "assignments/**/*.py"):
        for f in sorted(ROOT.glob(pattern)):
            if f.name != "conftest.py":
                found += _private_uses(f, None)
    assert found == []


def test_every_name_imported_from_the_package_exists():
    """Catches a notebook, script or grader that imports a name the package no longer has (a module that
    moved, a helper renamed) without running it (scripts write data files when they run)."""
    missing = []
    for pattern in ("notebooks/*.py", "scripts/*.py", "assignments/**/*.py", "tests/*.py"):
        for f in sorted(ROOT.glob(pattern)):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("ntrk_minimal"):
                    mod = importlib.import_module(node.module)
                    missing += [f"{f.relative_to(ROOT)}:{node.lineno}: {node.module}.{a.name}" for a in node.names
                                if not hasattr(mod, a.name) and not _is_module(f"{node.module}.{a.name}")]
                elif isinstance(node, ast.Import):
                    for a in node.names:
                        if a.name.startswith("ntrk_minimal") and not _is_module(a.name):
                            missing.append(f"{f.relative_to(ROOT)}:{node.lineno}: import {a.name}")
    assert missing == []
