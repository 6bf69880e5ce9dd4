"""Repeat-and-measure timing: one warm-up call (JIT compile, caches) excluded, then per-call
wall-clock times with time.perf_counter, summarised as p50/p99 latency and queries per second."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Timing:
    """Latency summary of `repeats` timed calls that each answered `queries_per_call` queries."""

    p50_s: float
    p99_s: float
    mean_s: float
    repeats: int
    queries_per_call: int

    @property
    def qps(self) -> float:
        """Queries per second at the median call time."""
        return self.queries_per_call / self.p50_s if self.p50_s > 0 else float("inf")

    def as_dict(self) -> dict:
        return {**asdict(self), "qps": self.qps}


def summarize(seconds: np.ndarray | list[float], queries_per_call: int = 1) -> Timing:
    """p50/p99/mean of per-call times (seconds)."""
    t = np.asarray(seconds, dtype=np.float64)
    if t.size == 0:
        raise ValueError("no timings to summarise")
    return Timing(
        p50_s=float(np.percentile(t, 50)),
        p99_s=float(np.percentile(t, 99)),
        mean_s=float(t.mean()),
        repeats=int(t.size),
        queries_per_call=int(queries_per_call),
    )


def measure(
    calls: list[Callable[[], object]] | Callable[[], object],
    *,
    repeats: int,
    queries_per_call: int = 1,
    warmup: int = 1,
    max_seconds: float | None = None,
) -> Timing:
    """Time `repeats` calls (cycling through `calls` if a list, e.g. one closure per query).

    The first `warmup` calls are run and discarded. With `max_seconds`, stop early once that much
    time has been spent timing (at least 3 calls are kept) so that slow cells stay bounded; a warm-up
    call that alone takes longer than `max_seconds` is the only sample (compiling is a small part of it).
    """
    fns = calls if isinstance(calls, list) else [calls]
    if not fns or repeats < 1:
        raise ValueError("need at least one callable and one repeat")
    for i in range(warmup):
        t0 = time.perf_counter()
        fns[i % len(fns)]()
        dt = time.perf_counter() - t0
        if max_seconds is not None and dt > max_seconds:
            return summarize([dt], queries_per_call)
    times: list[float] = []
    spent = 0.0
    for i in range(repeats):
        fn = fns[i % len(fns)]
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if max_seconds is not None and spent > max_seconds and len(times) >= 3:
            break
    return summarize(times, queries_per_call)
