"""Outcomes of the grader's tests -> points (``rubric.py``) -> score tables and Gradescope's results.json.

``score(results, submissions)`` turns the recorded outcomes (``conftest.py``, ``NTRK_RESULTS``) into
points: a criterion's points are split evenly over the cases of its (parametrized) test; a failed,
erroring or skipped case earns nothing. ``table_csv`` / ``table_markdown`` render one row per
submission; ``gradescope_results`` renders one submission in Gradescope's documented format
(tests[] with name, number, score, max_score, status, output, visibility, tags; top-level score).
"""
from __future__ import annotations

import csv
import io

import rubric


def _exercises(sheets=None, ids=None):
    return [e for e in rubric.EXERCISES if (sheets is None or e.sheet in sheets) and (ids is None or e.id in ids)]


def score(results: list[dict], submissions: list[dict], sheets=None, ids=None, only_run: bool = True) -> list[dict]:
    """Per submission: exercises -> criteria with points, cases, passed and distinct messages.

    ``sheets`` / ``ids`` restrict the exercises. ``only_run``: keep only exercises with at least one
    recorded case (a run restricted with ``-k``); otherwise every exercise is listed and a criterion with
    no case scores 0 ("not run", or the submission's status when it could not be graded)."""
    by_label: dict[str, list[dict]] = {}
    for r in results:
        by_label.setdefault(r["label"], []).append(r)
    out = []
    for sub in submissions:
        mine = by_label.get(sub["label"], [])
        exercises = []
        for e in _exercises(sheets, ids):
            crits = []
            for c in e.criteria:
                cases = [r for r in mine if r["test"] == c.test]
                passed = sum(r["outcome"] == "passed" for r in cases)
                msgs = list(dict.fromkeys(r["message"] or r["outcome"] for r in cases if r["outcome"] != "passed"))
                crits.append(dict(test=c.test, what=c.what, hidden=c.hidden, max=c.points, cases=len(cases),
                                  passed=passed, points=c.points * passed / len(cases) if cases else 0.0,
                                  messages=msgs if cases else [sub.get("status") if sub.get("status", "graded")
                                                               != "graded" else "not run"]))
            if only_run and not any(c["cases"] for c in crits):
                continue
            exercises.append(dict(id=e.id, name=e.name, sheet=e.sheet, max=e.points, criteria=crits,
                                  points=sum(c["points"] for c in crits)))
        out.append(dict(label=sub["label"], name=sub["name"], module=sub.get("module"),
                        status=sub.get("status", "graded"), exercises=exercises,
                        points=sum(e["points"] for e in exercises), max=sum(e["max"] for e in exercises)))
    return out


def first_message(ex: dict) -> str:
    for c in ex["criteria"]:
        if c["points"] < c["max"] and c["messages"]:
            return c["messages"][0]
    return ""


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".") if x != int(x) else f"{int(x)}"


def table_csv(scored: list[dict]) -> str:
    ids = [e["id"] for e in scored[0]["exercises"]] if scored else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["submission", *ids, "total", "max", "status", "file"])
    for s in scored:
        pts = {e["id"]: e["points"] for e in s["exercises"]}
        w.writerow([s["name"], *[f"{pts.get(i, 0.0):.2f}" for i in ids], f"{s['points']:.2f}", _fmt(s["max"]),
                    s["status"], s.get("module") or ""])
    return buf.getvalue()


def table_markdown(scored: list[dict], feedback_chars: int = 260) -> str:
    if not scored:
        return "(no submissions)\n"
    exs = scored[0]["exercises"]
    head = "| submission | " + " | ".join(f"{e['id']} ({_fmt(e['max'])})" for e in exs) + \
           f" | total ({_fmt(scored[0]['max'])}) |"
    rows = [head, "|---|" + "---:|" * (len(exs) + 1)]
    for s in scored:
        pts = {e["id"]: e["points"] for e in s["exercises"]}
        rows.append(f"| {s['name']} | " + " | ".join(_fmt(pts.get(e["id"], 0.0)) for e in exs) +
                    f" | **{_fmt(s['points'])}** |")
    notes = []
    for s in scored:
        for e in s["exercises"]:
            if e["points"] < e["max"]:
                msg = " ".join(first_message(e).split())
                msg = msg if len(msg) <= feedback_chars else msg[:feedback_chars - 3] + "..."
                notes.append(f"- **{s['name']}**, {e['id']} ({_fmt(e['points'])}/{_fmt(e['max'])}): {msg}")
    return "\n".join(rows) + ("\n\nFirst message per exercise below full marks:\n\n" + "\n".join(notes)
                              if notes else "") + "\n"


def gradescope_results(sub: dict, execution_time: float | None = None) -> dict:
    """One submission in Gradescope's results.json format (autograder specifications, "Output format")."""
    tests = []
    for e in sub["exercises"]:
        for k, c in enumerate(e["criteria"], 1):
            full = c["cases"] > 0 and c["passed"] == c["cases"]
            lines = [f"{c['passed']} of {c['cases']} cases passed" if c["cases"] else "not run"]
            lines += [f"- {m}" for m in c["messages"][:3]]
            if len(c["messages"]) > 3:
                lines.append(f"- ... and {len(c['messages']) - 3} more distinct messages")
            tests.append({
                "name": f"{e['id']} {e['name']}: {c['what']}",
                "number": f"{e['id'][1:]}.{k}",
                "score": round(c["points"], 4),
                "max_score": c["max"],
                "status": "passed" if full else "failed",
                "output": "\n".join(lines),
                "visibility": rubric.HIDDEN_VISIBILITY if c["hidden"] else "visible",
                "tags": [e["id"], "hidden" if c["hidden"] else "public"],
            })
    pub = [c for e in sub["exercises"] for c in e["criteria"] if not c["hidden"]]
    summary = [f"Public tests: {_fmt(sum(c['points'] for c in pub))} / {_fmt(sum(c['max'] for c in pub))} points."
               f" Hidden tests (other seeds, shapes, schedules, edge cases) are graded now and shown "
               f"{rubric.HIDDEN_VISIBILITY.replace('_', ' ')}."]
    if sub.get("status", "graded") != "graded":
        summary.insert(0, f"Grading problem: {sub['status']}")
    out = {"score": round(sub["points"], 4), "output": "\n".join(summary), "visibility": "visible",
           "stdout_visibility": "hidden", "tests": tests}
    if execution_time is not None:
        out["execution_time"] = round(execution_time, 1)
    return out


# Gradescope's results.json (autograder specifications), written out as a JSON schema: the fields
# and types their documentation lists, the visibility and status values, and additional top-level
# keys refused so a typo ("max_points") fails validation.
_VIS = {"enum": ["hidden", "after_due_date", "after_published", "visible"]}
_FMT = {"enum": ["text", "simple_format", "html", "md", "ansi"]}
RESULTS_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "anyOf": [{"required": ["score"]},
              {"required": ["tests"], "properties": {"tests": {"items": {"required": ["score"]}}}}],
    "properties": {
        "score": {"type": "number"},
        "execution_time": {"type": "number"},
        "output": {"type": "string"},
        "output_format": _FMT,
        "test_output_format": _FMT,
        "test_name_format": _FMT,
        "visibility": _VIS,
        "stdout_visibility": _VIS,
        "extra_data": {"type": "object"},
        "tests": {"type": "array", "items": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "score": {"type": "number"},
                "max_score": {"type": "number"},
                "status": {"enum": ["passed", "failed"]},
                "name": {"type": "string"},
                "name_format": _FMT,
                "number": {"type": "string"},
                "output": {"type": "string"},
                "output_format": _FMT,
                "tags": {"type": "array", "items": {"type": "string"}},
                "visibility": _VIS,
                "extra_data": {"type": "object"},
            }}},
        "leaderboard": {"type": "array", "items": {
            "type": "object", "required": ["name", "value"],
            "properties": {"name": {"type": "string"}, "value": {"type": ["number", "string"]},
                           "order": {"enum": ["asc", "desc"]}}}},
    },
}
