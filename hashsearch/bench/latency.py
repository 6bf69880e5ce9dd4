"""The latency grid: Hamming ranking (k-NN) and hash lookup (radius r) for every engine, code width
and database size, one query at a time and batched. One implementation, used by `hashsearch bench`
and by the pytest-benchmark drivers in benchmarks/."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numba
import numpy as np

from hashsearch.bench.engines import ENGINES, KNN_ENGINES, WARM_N, Engine, build_engine
from hashsearch.bench.timing import measure

SINGLE, BATCH = "single", "batch"


@dataclass(frozen=True)
class Workload:
    """One timed operation: `op` is "knn" (param = k) or "lookup" (param = radius r)."""

    op: str
    param: int
    mode: str  # SINGLE: one query per call; BATCH: `batch` queries per call

    def calls(self, engine: Engine, queries: np.ndarray, batch: int) -> tuple[list[Callable[[], object]], int]:
        """Closures to time and the number of queries each answers."""
        fn = engine.knn if self.op == "knn" else engine.lookup
        if self.mode == SINGLE:
            rows = [np.ascontiguousarray(queries[i : i + 1]) for i in range(len(queries))]
            return [lambda q=q: fn(q, self.param) for q in rows], 1
        block = np.ascontiguousarray(queries[:batch])
        return [lambda: fn(block, self.param)], len(block)


def workloads(ks: tuple[int, ...], radii: tuple[int, ...], modes: tuple[str, ...]) -> list[Workload]:
    """Every (op, param, mode) of the grid."""
    return [Workload("knn", k, m) for m in modes for k in ks] + [
        Workload("lookup", r, m) for m in modes for r in radii
    ]


def engines_for(op: str, engines: tuple[str, ...]) -> tuple[str, ...]:
    """Engines that answer `op` exactly."""
    return tuple(e for e in engines if op == "lookup" or e in KNN_ENGINES)


def mean_hits(engine: Engine, queries: np.ndarray, radius: int) -> float:
    """Average number of database items within `radius` of a query (how much work a lookup returns)."""
    lims, _, _ = engine.lookup(queries, radius)
    return float(lims[-1]) / len(queries)


@contextmanager
def using_threads(threads: int | None) -> Iterator[int]:
    """Run the block with `threads` threads in numba and FAISS (None: as set), then restore them."""
    from hashsearch.index import set_num_threads

    before = numba.get_num_threads()
    if threads is not None:
        set_num_threads(threads)
    try:
        yield numba.get_num_threads()
    finally:
        set_num_threads(before)


def time_grid(
    codes: np.ndarray,
    queries: np.ndarray,
    nbits: int,
    items: list[Workload],
    *,
    engines: tuple[str, ...] = ENGINES,
    single_repeats: int = 50,
    batch: int = 100,
    batch_repeats: int = 5,
    max_seconds: float = 2.0,
    single_threads: int | None = 1,
    batch_threads: int | None = None,
    max_hits: float | None = None,
    skipped: list[dict] | None = None,
) -> Iterator[dict]:
    """Build each engine over `codes` (build time recorded) and time every workload on it.

    Single queries run on `single_threads` threads (1: a server answers concurrent queries on separate
    cores, and a parallel region per query only waits on busy cores), batches on `batch_threads`
    (None: as set). Yields one flat record per (engine, workload) cell, with the threads it ran on.
    Lookups returning more than `max_hits` codes per query (on the first `batch` queries; heavily
    duplicated codes) are not timed but appended to `skipped`: such a "lookup" is a bulk read.
    """
    n = len(codes)
    hits: dict[int, float] = {}  # radius -> mean hits per query, the same for every (exact) engine
    for name in engines:
        build_engine(name, codes[:WARM_N], nbits)
        t0 = time.perf_counter()
        engine = build_engine(name, codes, nbits)
        build_s = time.perf_counter() - t0
        for w in items:
            if name not in engines_for(w.op, engines):
                continue
            if w.op == "lookup" and w.param not in hits:
                hits[w.param] = mean_hits(engine, queries[:batch], w.param)
            cell = {"engine": name, "nbits": nbits, "n": n, "op": w.op, "param": w.param, "mode": w.mode}
            if w.op == "lookup" and max_hits is not None and hits[w.param] > max_hits:
                if skipped is not None:
                    skipped.append({**cell, "mean_hits": hits[w.param]})
                continue
            calls, per_call = w.calls(engine, queries, batch)
            single = w.mode == SINGLE
            with using_threads(single_threads if single else batch_threads) as threads:
                timing = measure(calls, repeats=single_repeats if single else batch_repeats,
                                 queries_per_call=per_call, max_seconds=max_seconds)
            record = {**cell, "threads": threads, "build_s": build_s, **timing.as_dict()}
            if w.op == "lookup" and w.mode == BATCH:
                record["mean_hits"] = hits[w.param]
            yield record
        del engine
