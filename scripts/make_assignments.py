"""Generate the course assignments (student versions) from the solutions: ``make assignments``.

    python scripts/make_assignments.py                # write assignments/student/
    python scripts/make_assignments.py --check        # exit 1 if assignments/student/ is stale
    python scripts/make_assignments.py --solution D   # also write the solution module D/ntrk_solution.py

Solutions are marked nbgrader-style, by comment lines around the lines a student writes:

    ### BEGIN SOLUTION
    mu_t = ddim_mean(x0_hat, eps_hat, a_prev, s_prev, sigma_t)
    ### END SOLUTION

1. **Library exercises** (markers inside ``ntrk_minimal/kernels.py`` and ``ntrk_minimal/whitening.py``):
   every function or method that contains a marked region is copied into one student module,
   ``assignments/student/ntrk_student.py``, with each region replaced by
   ``raise NotImplementedError("<hint>")``. Functions keep their name and signature; a marked method
   ``Cls.step`` becomes a subclass ``class Cls(ntrk_minimal.<module>.Cls)`` overriding only that
   method, so a student kernel plugs into ``ntrk_minimal.sample`` unchanged. Names the copied code
   uses come from the library module (imports generated), except the exercised functions themselves:
   inside the student module, a student function calls the student versions.
2. **Notebooks** (``notebooks/ex_*.ipynb``, the executed solution notebooks): marked regions in code
   cells become the same stub, the line ``IMPL = "ntrk_minimal..."`` becomes ``IMPL = "ntrk_student"``
   (the notebook then calls the student's functions), cells tagged ``solution-only`` are dropped, and
   every output and execution count is cleared except in cells tagged ``reference`` (the reference
   figures a student compares against). Cells get nbgrader metadata (schema 3): answer cells are
   ``solution``, markdown and reference cells ``locked``, so an nbgrader course can import them.
3. **Public tests**: ``tests/`` gets the grader's plumbing (``conftest.py``, ``rubric.py``, ``scoring.py``,
   ``checks.py``, ``pytest.ini``) and the public tests ``assignments/grader/public/test_exNN_public.py``
   of every generated sheet. The hidden tests (``assignments/grader/hidden/``) are never copied.

Generation is deterministic (same bytes on every run: no timestamps, sorted JSON, fixed order) and
takes well under a second. Hints, expected times and points live in ``assignments/grader/rubric.py``;
a marked region without an entry (or an entry whose region disappeared) is an error, so the two cannot
drift apart.
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "assignments" / "student"
STUDENT_MODULE = "ntrk_student"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"

# Points, rubric, hints and expected minutes live in ONE table, assignments/grader/rubric.py (the grader, the
# Gradescope output and the teachers' guide read it too). Here: qualname -> (exercise id, minutes, source, hint);
# the hint is the stub's NotImplementedError text (a tuple: one per marked region of that function, in order).
# An entry is required to have its region(s) once its source exists and carries markers.
GRADER = ROOT / "assignments" / "grader"


def _load_rubric():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ntrk_rubric", GRADER / "rubric.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


RUBRIC = _load_rubric()
EXERCISES = {e.name: (e.id, e.minutes, e.source, e.hint) for e in RUBRIC.EXERCISES}

# The student release's tests/ folder: the grader's plumbing and its PUBLIC tests (never hidden/).
RELEASE_TESTS = ["conftest.py", "rubric.py", "scoring.py", "checks.py", "pytest.ini"]


# Library modules that may carry marked regions, in exercise order. A module with no markers (or
# not written yet) contributes nothing; one with markers must match its EXERCISES entries exactly.
SOURCES = list(dict.fromkeys(e.source for e in RUBRIC.EXERCISES if e.source.endswith(".py")))

# Solution notebooks -> student notebooks, with the exact line that selects the implementation.
NOTEBOOKS = {
    "notebooks/ex_01_reverse_kernels.ipynb": 'IMPL = "ntrk_minimal.kernels"',
    "notebooks/ex_02_whitening.ipynb": 'IMPL = "ntrk_minimal.whitening"',
    "notebooks/ex_03_measuring_honestly.ipynb": 'IMPL = "ntrk_minimal.bench.stats"',
}

# ---- marked regions -----------------------------------------------------------------------------
@dataclass
class Region:
    begin: int          # 0-based line index of the BEGIN marker
    end: int            # 0-based line index of the END marker
    indent: str


def find_regions(lines: list[str], where: str) -> list[Region]:
    """All BEGIN/END pairs (not nested, same indentation, non-empty), in order."""
    regions, open_at = [], None
    for i, line in enumerate(lines):
        s = line.strip()
        if s == BEGIN:
            if open_at is not None:
                raise SyntaxError(f"{where}:{i + 1}: {BEGIN} inside the region opened at line {open_at + 1}")
            open_at = i
        elif s == END:
            if open_at is None:
                raise SyntaxError(f"{where}:{i + 1}: {END} without a {BEGIN}")
            ind = lines[open_at][: len(lines[open_at]) - len(lines[open_at].lstrip())]
            if not line.startswith(ind) or line[len(ind)] == " ":
                raise SyntaxError(f"{where}:{i + 1}: {END} is not indented like its {BEGIN} "
                                  f"(line {open_at + 1})")
            if i == open_at + 1:
                raise SyntaxError(f"{where}:{i + 1}: empty solution region")
            regions.append(Region(open_at, i, ind))
            open_at = None
        elif BEGIN.lower() in s.lower() or END.lower() in s.lower():
            raise SyntaxError(f"{where}:{i + 1}: a marker must be alone on its line: {line.strip()!r}")
    if open_at is not None:
        raise SyntaxError(f"{where}:{open_at + 1}: {BEGIN} is never closed")
    return regions


def stub_lines(indent: str, qualname: str, k: int = 0, n: int = 1) -> list[str]:
    """``raise NotImplementedError("<hint>")`` for region k of n of ``qualname``, wrapped to ~100 columns."""
    ex_id, minutes, _, hint = EXERCISES[qualname]
    if isinstance(hint, tuple):
        if len(hint) != n:
            raise KeyError(f"{qualname} has {n} marked regions but {len(hint)} hints")
        hint = hint[k]
    elif n > 1:
        raise KeyError(f"{qualname} has {n} marked regions: give a tuple of {n} hints")
    part = f", part {k + 1}/{n}" if n > 1 else ""
    chunks = textwrap.wrap(f"[{ex_id}] {hint}", width=max(40, 96 - len(indent)), drop_whitespace=False)
    out = [f"{indent}# TODO [{ex_id}{part}] your code here (about {minutes} min for {ex_id}), then delete "
           f"the raise below\n" if n > 1 else
           f"{indent}# TODO [{ex_id}] your code here (about {minutes} min), then delete the raise below\n",
           f"{indent}raise NotImplementedError(\n"]
    out += [f"{indent}    {json.dumps(c)}\n" for c in chunks]
    out[-1] = out[-1].rstrip("\n") + ")\n"
    return out


def render(lines: list[str], regions: list[Region], qualnames: list[str], student: bool) -> list[str]:
    """``lines`` with each region replaced by its stub (student) or its bare code (solution)."""
    out, pos, seen = [], 0, {}
    for reg, qn in zip(regions, qualnames):
        k = seen[qn] = seen.get(qn, -1) + 1
        out += lines[pos:reg.begin]
        out += stub_lines(reg.indent, qn, k, qualnames.count(qn)) if student else lines[reg.begin + 1:reg.end]
        pos = reg.end + 1
    return out + lines[pos:]


def enclosing_defs(tree: ast.Module):
    """(qualname, first line incl. decorators, last line, class name or None), 1-based lines."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([d.lineno for d in node.decorator_list] + [node.lineno])
            yield node.name, first, node.end_lineno, None
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    first = min([d.lineno for d in sub.decorator_list] + [sub.lineno])
                    yield f"{node.name}.{sub.name}", first, sub.end_lineno, node.name


def qualname_of(region: Region, defs, where: str) -> str:
    for qn, first, last, _ in defs:
        if first <= region.begin + 1 <= last:      # (an END comment may follow the def's last line)
            return qn
    raise SyntaxError(f"{where}:{region.begin + 1}: a solution region must sit inside a function or method")


# ---- the student module -------------------------------------------------------------------------
@dataclass
class Unit:
    """One marked function or method copied from a library module."""

    module: str               # e.g. "ntrk_minimal.kernels"
    path: str                 # e.g. "ntrk_minimal/kernels.py"
    qualname: str
    cls: str | None
    lines: list[str]          # the def's source lines (with its original indentation)
    regions: list[Region] = field(default_factory=list)   # relative to ``lines``


def scan_library() -> tuple[list[Unit], dict[str, ast.Module]]:
    units, trees = [], {}
    for rel in SOURCES:
        path = ROOT / rel
        if not path.exists():
            continue
        text = path.read_text()
        lines = text.splitlines(keepends=True)
        regions = find_regions(lines, rel)
        if not regions:
            continue
        tree = ast.parse(text, rel)
        module = rel[:-3].replace("/", ".")
        trees[module] = tree
        defs = list(enclosing_defs(tree))
        by_def: dict[str, list] = {}
        for reg in regions:
            qn = qualname_of(reg, defs, rel)
            by_def.setdefault(qn, []).append(reg)
        for qn, regs in by_def.items():
            _, first, last, cls = next(d for d in defs if d[0] == qn)
            last = max(last, regs[-1].end + 1)
            units.append(Unit(module, rel, qn, cls, lines[first - 1:last],
                              [Region(r.begin - first + 1, r.end - first + 1, r.indent) for r in regs]))
    return units, trees


def module_names(tree: ast.Module) -> tuple[dict[str, str], set[str]]:
    """Top-level import aliases (name -> import statement) and other top-level names of a module."""
    imports, defined = {}, set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            for a in node.names:
                name = a.asname or a.name.split(".")[0]
                imports[name] = f"import {a.name}" + (f" as {a.asname}" if a.asname else "")
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            for a in node.names:
                name = a.asname or a.name
                mod = "." * node.level + (node.module or "")
                imports[name] = f"from {mod} import {a.name}" + (f" as {a.asname}" if a.asname else "")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        defined.add(n.id)
    return imports, defined


def used_names(code: str) -> set[str]:
    """Every name the code reads (a superset of its free names: only module-level ones are used)."""
    tree = ast.parse(textwrap.dedent(code))
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def absolute(stmt: str, module: str) -> str:
    """Make a relative ``from .x import y`` absolute with respect to ``module``."""
    if stmt.startswith("from ."):
        rest = stmt[len("from "):]
        level = len(rest) - len(rest.lstrip("."))
        pkg = module.split(".")[:-level]
        tail = rest[level:]
        target = ".".join(pkg + ([tail.split(" ")[0]] if not tail.startswith(" ") else []))
        return f"from {target} import " + stmt.split(" import ", 1)[1]
    return stmt


def build_student_module(units: list[Unit], trees: dict[str, ast.Module], student: bool) -> str:
    local = {u.qualname for u in units if u.cls is None} | {u.cls for u in units if u.cls}
    bodies, order = {}, []            # top-level name -> code text, in first-seen order
    for u in units:
        code = "".join(render(u.lines, u.regions, [u.qualname] * len(u.regions), student))
        key = u.cls or u.qualname
        if key not in bodies:
            order.append(key)
            bodies[key] = []
            if u.cls:
                alias = "_" + u.module.rsplit(".", 1)[1]
                bodies[key].append(
                    f"class {u.cls}({alias}.{u.cls}):\n"
                    f'    """``{u.module}.{u.cls}`` with the method(s) below written by you."""\n')
        bodies[key].append(("\n" if u.cls else "") + code)
    # names the copied code needs
    imports: set[str] = set()
    from_lib: dict[str, set[str]] = {}
    seen_from: dict[str, str] = {}
    for u in units:
        imp, defined = module_names(trees[u.module])
        code = "".join(u.lines)
        for name in sorted(used_names(code) - local):
            if name in imp:
                imports.add(absolute(imp[name], u.module))
            elif name in defined:
                if seen_from.setdefault(name, u.module) != u.module:
                    raise NameError(f"{name!r} is defined in both {seen_from[name]} and {u.module}")
                from_lib.setdefault(u.module, set()).add(name)
        if u.cls:
            imports.add(f"import {u.module} as _{u.module.rsplit('.', 1)[1]}")
    plain = sorted(s for s in imports if s.startswith("import "))
    froms = sorted(s for s in imports if s.startswith("from "))
    froms += [f"from {m} import {', '.join(sorted(n))}" for m, n in sorted(from_lib.items())]
    table = "\n".join(f"    {EXERCISES[u.qualname][0]:<6} {u.qualname:<22} {u.path:<28} "
                      f"~{EXERCISES[u.qualname][1]} min" for u in units)
    sources = ", ".join(sorted({f"``{u.path}``" for u in units}))
    if student:
        head = (f'"""Your implementations for the NTRK course exercises: replace every '
                f"``raise NotImplementedError(...)``.\n\n"
                f"Generated by ``scripts/make_assignments.py`` (``make assignments``) from the marked\n"
                f"regions of {sources}; everything that is not a TODO is given and\n"
                f"identical to the library. Functions you write call each other: your ``Base.step`` uses\n"
                f"your ``ddim_mean``. The public tests check each exercise on its own (the instructor's\n"
                f"grader adds hidden cases; points per exercise: ``tests/rubric.py``):\n\n"
                f"    python -m pytest tests -q             # in this folder; -k E1_3 for one exercise\n\n"
                f"Exercises\n{table}\n"
                f'"""\n')
    else:
        head = (f'"""SOLUTION module (teachers only): the marked regions of {sources}\n'
                f"with their code, in the layout of the student module ``{STUDENT_MODULE}.py``.\n\n"
                f"Generated by ``scripts/make_assignments.py --solution DIR``.\n\n"
                f"Exercises\n{table}\n"
                f'"""\n')
    parts = [head, "from __future__ import annotations\n\n"]
    parts.append("".join(s + "\n" for s in plain) + ("\n" if plain and froms else ""))
    parts.append("".join(s + "\n" for s in froms))
    names = sorted(local)
    parts.append("\n__all__ = [" + ", ".join(f'"{n}"' for n in names) + "]\n")
    for key in order:
        parts.append("\n\n" + "".join(bodies[key]))
    return "".join(parts)


# ---- notebooks -------------------------------------------------------------------------------------
def student_notebook(path: Path, impl_line: str) -> str:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb = copy.deepcopy(nb)
    nb.metadata.pop("jupytext", None)             # a student notebook has no .py source to pair with
    replaced, cells = 0, []
    for k, cell in enumerate(nb.cells):
        tags = set(cell.get("metadata", {}).get("tags", []))
        if "solution-only" in tags:
            continue
        cell.metadata.pop("execution", None)      # nbclient's timestamps: not content, not deterministic
        if cell.cell_type == "code":
            src = cell.source
            if impl_line in src:
                replaced += src.count(impl_line)
                src = src.replace(impl_line, f'IMPL = "{STUDENT_MODULE}"')
            lines = src.splitlines(keepends=True)
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            where = f"{path.name} cell {k}"
            regions = find_regions(lines, where)
            if regions:
                defs = list(enclosing_defs(ast.parse(src, where)))
                qns = [qualname_of(r, defs, where) for r in regions]
                for qn in qns:
                    if qn not in EXERCISES:
                        raise KeyError(f"{where}: no EXERCISES entry (hint) for {qn!r}")
                src = "".join(render(lines, regions, qns, student=True)).rstrip("\n")
            cell.source = src
            cell.execution_count = None
            if regions:                           # nbgrader: an answer cell ("autograded answer")
                cell.metadata["nbgrader"] = nbgrader_meta(f"{EXERCISES[qns[0]][0].replace('.', '_')}_{qns[0]}",
                                                          solution=True)
            elif "reference" in tags:             # nbgrader: read-only (the figure a student compares with)
                cell.metadata["nbgrader"] = nbgrader_meta(f"reference_{len(cells):02d}", locked=True)
            if "reference" not in tags:
                cell.outputs = []
            else:
                for o in cell.outputs:
                    if "execution_count" in o:
                        o["execution_count"] = None
        elif cell.cell_type == "markdown":
            cell.metadata["nbgrader"] = nbgrader_meta(f"text_{len(cells):02d}", locked=True)
        cells.append(cell)
    if replaced != 1:
        raise ValueError(f"{path}: expected the line {impl_line!r} exactly once, found {replaced}")
    nb.cells = cells
    return nbformat.writes(nb) + "\n"


def nbgrader_meta(grade_id: str, solution: bool = False, locked: bool = False) -> dict:
    """nbgrader cell metadata (schema 3), so that an nbgrader course can import the student notebooks."""
    return {"grade": False, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution,
            "task": False}


def notebook_exercises(path: Path) -> list[str]:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    found = []
    for k, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            lines = cell.source.splitlines(keepends=True)
            regions = find_regions(lines, f"{path.name} cell {k}")
            if regions:
                defs = list(enclosing_defs(ast.parse(cell.source)))
                found += [qualname_of(r, defs, f"{path.name} cell {k}") for r in regions]
    return found


# ---- driver ------------------------------------------------------------------------------------------
def build() -> dict[str, str]:
    """Every generated student file: relative path (under assignments/student) -> text."""
    units, trees = scan_library()
    marked = [u.qualname for u in units]
    for qn in marked:
        if qn not in EXERCISES:
            raise KeyError(f"marked region in {qn!r} has no EXERCISES entry (hint, minutes) in {__file__}")
    files = {f"{STUDENT_MODULE}.py": build_student_module(units, trees, student=True)}
    for rel, impl_line in NOTEBOOKS.items():
        path = ROOT / rel
        if path.exists():
            marked += notebook_exercises(path)
            files[path.name] = student_notebook(path, impl_line)
    sheets = {e.sheet for e in RUBRIC.EXERCISES if e.name in marked}
    for name in RELEASE_TESTS:
        files[f"tests/{name}"] = (GRADER / name).read_text()
    for test in sorted((GRADER / "public").glob("test_*.py")):
        if any(test.name.startswith(f"test_ex{k:02d}_") for k in sheets):
            files[f"tests/{test.name}"] = test.read_text()
    if len(set(marked)) != len(marked):
        raise ValueError(f"an exercise name is marked twice: {sorted(marked)}")
    active = {u.path for u in units} | {rel for rel in NOTEBOOKS if (ROOT / rel).exists()}
    for qn, (ex_id, _, source, _) in EXERCISES.items():
        if source in active and qn not in marked:
            raise KeyError(f"EXERCISES entry {qn!r} ({ex_id}) has no marked region in {source}")
    return files


def solution_module() -> str:
    units, trees = scan_library()
    return build_student_module(units, trees, student=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT, help="output folder (default assignments/student)")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing")
    ap.add_argument("--solution", type=Path, default=None,
                    help="also write the solution module <DIR>/ntrk_solution.py (teachers only)")
    args = ap.parse_args(argv)
    files = build()
    out: Path = args.out
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
                     and "__pycache__" not in p.parts) if out.exists() else []
    if args.check:
        stale = [n for n, t in files.items() if not (out / n).exists() or (out / n).read_text() != t]
        extra = [n for n in on_disk if n not in files]
        if stale or extra:
            print(f"assignments are stale (run `make assignments`): differ {stale}, not generated {extra}")
            return 1
        print(f"assignments up to date: {len(files)} files in {out}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for name in on_disk:
        if name not in files:
            (out / name).unlink()
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    if args.solution is not None:
        args.solution.mkdir(parents=True, exist_ok=True)
        (args.solution / "ntrk_solution.py").write_text(solution_module())
    print(f"wrote {len(files)} files to {out}: {', '.join(sorted(files))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
