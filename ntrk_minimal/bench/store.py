"""Storage: the json every study writes (NaN as null, renders read it back), and the point cache.

``write_json`` / ``load_json`` store a study; ``strip_timing`` is what must be identical for equal
seeds. ``PointCache`` keeps every ``run_point`` result of a long run in a json-lines file so that an
interrupted run continues where it stopped and two processes can share the work; it is an explicit
argument of ``run_study`` / ``front``, keyed by the source of the modules the numbers depend on.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from .spec import TIMING_KEYS

__all__ = ["clean", "nan_to_none", "to_json", "write_json", "load_json", "strip_timing", "code_hash", "PointCache"]


def nan_to_none(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def clean(obj):
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return nan_to_none(float(obj))
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def to_json(data: dict) -> str:
    return json.dumps(clean(data), indent=1, allow_nan=False)


def write_json(data: dict, path) -> Path:
    path = Path(path)
    path.write_text(to_json(data) + "\n")
    return path


def load_json(path) -> dict:
    return json.loads(Path(path).read_text())


def strip_timing(obj):
    """A copy without the timing fields (``TIMING_KEYS``): what must be identical for equal seeds."""
    if isinstance(obj, dict):
        return {k: strip_timing(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [strip_timing(v) for v in obj]
    return obj


# ---- the point cache -------------------------------------------------------------------------------------
def code_hash(modules=(), extra=()) -> str:
    """sha256 (16 hex digits) over the source files of ``modules`` (module objects, in order) and the
    ``repr`` of ``extra``: a cache written by other code is never reused. Read when called: build the
    cache at the start of a run, before any file can change under it."""
    h = hashlib.sha256()
    for mod in modules:
        h.update(mod.__name__.encode())
        h.update(Path(mod.__file__).read_bytes())
    h.update(repr(tuple(extra)).encode())
    return h.hexdigest()[:16]


def _claim_alive(claim: Path, stale_s: float) -> bool:
    """Whether the process that wrote ``claim`` (its pid) still runs and the claim is younger than ``stale_s``."""
    try:
        pid = int(claim.read_text() or 0)
        age = time.time() - claim.stat().st_mtime
    except (OSError, ValueError):
        return True                                     # being written: ask again later
    if pid == os.getpid() or age > stale_s:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class PointCache:
    """``run_point`` results in (and reused from) the json-lines file ``path``, one line
    ``{"key": ..., "vals": {...}}`` per point, keyed by world, method, fixed arguments, knob, seed, n,
    torch threads and ``code_hash(modules, extra)``. Pass it to ``run_study(..., cache=...)``: a run
    that is interrupted (a shared machine, a session that ends) continues where it stopped, with the
    same numbers, because every point is seeded.

    Several processes may share one file (``make bench-full`` starts a helper that runs the same study
    with the methods in reverse order): a process *claims* a point (``O_EXCL`` file
    ``path.claims/<sha>``) before computing it; one that finds a point claimed waits for its result
    (polling every ``poll_s``; a claim older than ``stale_s`` without a result, or whose process is
    gone, is taken over). Lines are appended with one ``write`` each (``O_APPEND`` keeps concurrent
    appends whole) and the file is re-read from the last offset on every miss. ``stats`` counts
    ``hits``, ``misses`` and ``waited``.
    """

    def __init__(self, path, modules=(), extra=(), poll_s: float = 5.0, stale_s: float = 6 * 3600):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.claims = self.path.with_name(self.path.name + ".claims")
        self.claims.mkdir(parents=True, exist_ok=True)
        self.code, self.poll_s, self.stale_s = code_hash(modules, extra), poll_s, stale_s
        self.offset, self.data = 0, {}
        self.stats = {"hits": 0, "misses": 0, "waited": 0, "file": str(self.path)}
        self._refresh()

    def _refresh(self):
        if not self.path.is_file():
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1                  # a line still being written is read next time
        for line in chunk[:end].decode().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:                # a line cut by an interrupt
                continue
            self.data[rec["key"]] = rec["vals"]
        self.offset += end

    def _add(self, key, vals):
        self.data[key] = vals
        line = (json.dumps({"key": key, "vals": vals}) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def point(self, world, method, knob_value, seed: int, n: int, compute) -> dict:
        """The stored values of this point, or ``compute()`` (stored, then returned)."""
        key = json.dumps([self.code, world.name, method.name, clean(method.fixed), knob_value, int(seed), int(n),
                          torch.get_num_threads()])
        claim = self.claims / hashlib.sha256(key.encode()).hexdigest()[:32]
        while True:
            if key not in self.data:
                self._refresh()
            if key in self.data:
                self.stats["hits"] += 1
                return dict(self.data[key])
            try:
                fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                break                                   # ours: compute it
            except FileExistsError:
                if not _claim_alive(claim, self.stale_s):
                    claim.unlink(missing_ok=True)       # its owner died: take it over
                    continue
                self.stats["waited"] += 1
                time.sleep(self.poll_s)
        vals = compute()
        self.stats["misses"] += 1
        self._add(key, vals)
        return vals
