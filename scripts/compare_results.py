"""Compare two benchmark json files (or every json of two folders) number by number.

    python scripts/compare_results.py OLD NEW            # files or folders (matching file names)
    python scripts/compare_results.py OLD NEW --rtol 1e-12

What must agree for equal seeds (``bench.strip_timing``): everything but the timing fields
(``wall_s``, ``model_s``, ``wall_time_s``, ...), the run's library versions, the cost summary (wall
seconds), and the levels, stabilities and comparisons stated on a wall time (``x_key`` a timing key:
they move with the machine's load). Floats are compared exactly unless ``--rtol`` allows a relative
difference (then each differing path is listed with its largest relative difference). Exits 1 when
anything differs beyond the tolerance. Used to check that a restructuring changes no number.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

TIMING = {"wall_s", "model_s", "wall_time_s", "wall_per_nfe", "wall_per_nfe_vs_ref", "wall_this_call_s",
          "compute_s", "measured_s", "walls", "interleaved_wall", "train_wall_s", "versions", "cost", "cache",
          "seconds", "vs_base", "cheap_over_full", "share_of_full", "timings", "cost_split", "torch_threads"}


def _timing_levels(study: dict) -> set:
    lv = study.get("levels", {})
    return {k for k, v in lv.items() if isinstance(v, dict) and v.get("x_key") in TIMING}


def _by_knob(front: dict) -> dict:
    """A front whose grid a wall-time level extended (the extension moves with the machine's load):
    its points keyed by knob (``diff`` compares the knobs both runs have), notes and ends dropped."""
    out = {k: v for k, v in front.items() if k not in ("knobs", "values", "notes", "ends")}
    out["points"] = {repr(k): v for k, v in zip(front["knobs"], front["values"])}
    return out


def _prune(obj, wall_levels=frozenset()):
    """A copy without timing fields and without what hangs on a wall-time level."""
    if isinstance(obj, dict):
        study = "levels" in obj and "comparisons" in obj
        wl = set(wall_levels) | (_timing_levels(obj) if study else set())
        if study and "fronts" in obj:
            moved = {m for k in _timing_levels(obj) for m in obj["levels"][k].get("methods", [])}
            obj = dict(obj, fronts={ph: {m: (_by_knob(f) if m in moved else f) for m, f in fr.items()}
                                    for ph, fr in obj["fronts"].items()})
        out = {}
        for k, v in obj.items():
            if k in TIMING or k in wl:
                continue
            if k == "comparisons" and isinstance(v, list):
                v = [c for c in v if not (isinstance(c, dict) and ({c.get("level"), c.get("a_level")} & wl))]
            out[k] = _prune(v, wl)
        return out
    if isinstance(obj, list):
        return [_prune(v, wall_levels) for v in obj]
    return obj


def diff(a, b, path="", rtol=0.0, out=None):
    """Differences between ``a`` and ``b``: ``[(path, what, rel)]`` (rel: relative difference of floats)."""
    out = [] if out is None else out
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) & set(b) if path.endswith("/points") else set(a) | set(b)   # extended grids: common knobs
        for k in sorted(keys, key=str):
            if k not in a or k not in b:
                out.append((f"{path}/{k}", "only in " + ("new" if k in b else "old"), math.inf))
            else:
                diff(a[k], b[k], f"{path}/{k}", rtol, out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append((path, f"length {len(a)} vs {len(b)}", math.inf))
        for i, (x, y) in enumerate(zip(a, b)):
            diff(x, y, f"{path}[{i}]", rtol, out)
    elif isinstance(a, float) and isinstance(b, float) and not (isinstance(a, bool) or isinstance(b, bool)):
        if a != b:
            rel = abs(a - b) / max(abs(a), abs(b))
            if rel > rtol:
                out.append((path, f"{a!r} vs {b!r}", rel))
    elif a != b:
        out.append((path, f"{a!r} vs {b!r}", math.inf))
    return out


def compare_files(old: Path, new: Path, rtol: float) -> list:
    a, b = (_prune(json.loads(p.read_text())) for p in (old, new))
    return diff(a, b, "", rtol)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--rtol", type=float, default=0.0, help="allowed relative difference of floats (default: exact)")
    ap.add_argument("--show", type=int, default=12, help="differences listed per file")
    a = ap.parse_args(argv)
    pairs = ([(f, a.new / f.name) for f in sorted(a.old.glob("*.json"))] if a.old.is_dir() else [(a.old, a.new)])
    bad = 0
    for old, new in pairs:
        if not new.is_file():
            print(f"{old.name}: MISSING in {a.new}")
            bad += 1
            continue
        d = compare_files(old, new, a.rtol)
        exact = compare_files(old, new, 0.0)
        worst = max((r for _, _, r in exact), default=0.0)
        print(f"{old.name}: " + ("identical" if not exact else
              f"{len(exact)} differing values (largest relative difference {worst:.3g})"
              + (f", {len(d)} beyond rtol {a.rtol:g}" if a.rtol else "")))
        for p, what, rel in (d or exact)[:a.show]:
            print(f"   {p}: {what}" + (f"  (rel {rel:.2g})" if math.isfinite(rel) else ""))
        bad += bool(d)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
