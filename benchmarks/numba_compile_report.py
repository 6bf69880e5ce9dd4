"""pytest plugin: which numba dispatchers compile (or load from the on-disk cache) which signatures during a
run, and the seconds each costs, so that the cold-start cost of the kernels can be measured and cut.

    PYTHONPATH=benchmarks pytest -p numba_compile_report [-q ...]

prints a table at the end (dispatcher, signatures compiled, cache loads, seconds) and, when
$NUMBA_COMPILE_REPORT names a file, writes every event there as JSON. "self" seconds exclude the callees
compiled inside a compile; the total counts outermost calls only (what the tests waited for).
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict

import pytest
from numba.core import sigutils
from numba.core.dispatcher import Dispatcher

_events: list[dict] = []
_seen: set = set()  # (dispatcher, signature) recorded
_local = threading.local()  # .stack: [start, seconds spent in nested compiles] per open compile of this thread
_test = {"id": "<collect>"}


def _name(disp: Dispatcher) -> str:
    fn = disp.py_func
    return f"{fn.__module__}.{fn.__qualname__}"


def _timed_compile(orig):
    def compile(self, sig):
        if tuple(sigutils.normalize_signature(sig)[0]) in self.overloads:
            return orig(self, sig)
        stack = _local.__dict__.setdefault("stack", [])
        hits, misses = sum(self._cache_hits.values()), sum(self._cache_misses.values())
        stack.append([time.perf_counter(), 0.0])
        try:
            return orig(self, sig)
        finally:
            start, nested = stack.pop()
            seconds = time.perf_counter() - start
            if stack:
                stack[-1][1] += seconds
            key = (id(self), str(sig))
            if key not in _seen and (sum(self._cache_hits.values()) > hits
                                     or sum(self._cache_misses.values()) > misses):
                # (else another thread compiled this signature while this one waited for the lock)
                _seen.add(key)
                _events.append({"dispatcher": _name(self), "sig": str(sig), "seconds": seconds,
                                "self": seconds - nested, "outer": not stack, "test": _test["id"],
                                "cache_hit": sum(self._cache_hits.values()) > hits})
    return compile


def pytest_configure(config):
    Dispatcher.compile = _timed_compile(Dispatcher.compile)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _test["id"] = item.nodeid
    yield


def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    per = defaultdict(lambda: {"compiled": 0, "loaded": 0, "self": 0.0, "sigs": []})
    for e in _events:
        p = per[e["dispatcher"]]
        p["loaded" if e["cache_hit"] else "compiled"] += 1
        p["self"] += e["self"]
        p["sigs"].append(e["sig"])
    outer = [e for e in _events if e["outer"]]
    total = sum(e["seconds"] for e in outer)
    compiled = sum(1 for e in _events if not e["cache_hit"])
    loaded = sum(1 for e in _events if e["cache_hit"])
    tr.write_sep("=", "numba compile report")
    tr.write_line(f"{'self s':>8} {'compiled':>8} {'loaded':>6}  dispatcher")
    for name, p in sorted(per.items(), key=lambda kv: -kv[1]["self"]):
        tr.write_line(f"{p['self']:8.2f} {p['compiled']:8d} {p['loaded']:6d}  {name}")
    tr.write_line(f"total: {total:.1f} s in numba compile/load ({compiled} specialisations compiled, "
                  f"{loaded} loaded from the cache)")
    by_test = defaultdict(float)
    for e in outer:
        by_test[e["test"]] += e["seconds"]
    tr.write_line("tests waiting longest on numba:")
    for t, s in sorted(by_test.items(), key=lambda kv: -kv[1])[:10]:
        tr.write_line(f"{s:8.2f}  {t}")
    out = os.environ.get("NUMBA_COMPILE_REPORT")
    if out:
        with open(out, "w") as f:
            json.dump({"total_seconds": total, "compiled": compiled, "loaded": loaded, "events": _events}, f, indent=0)
