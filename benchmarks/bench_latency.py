"""Latency of Hamming ranking (k = 1, 10, 100, 1000) and hash lookup (r = 0..3) for every engine,
nbits 16/32/64/128 and n = 10^4, 10^5 (10^4..10^7 with --hashsearch-full, 10^8 with --hashsearch-huge),
one query (on one thread, as `hashsearch bench` does) and batched (every core).

    pytest benchmarks/bench_latency.py --benchmark-only [--hashsearch-full] [-k "64b and n1000000"]

The workloads are hashsearch.bench's (the same as `hashsearch bench`); their results are checked
against the brute-force oracle in tests/test_bench.py.
"""
from __future__ import annotations

import itertools

import pytest
from conftest import database_sizes, record_percentiles

from hashsearch.bench import scale
from hashsearch.bench.engines import ENGINES, build_engine
from hashsearch.bench.latency import BATCH, SINGLE, engines_for, using_threads, workloads

NBITS = (16, 32, 64, 128)
ITEMS = workloads((1, 10, 100, 1000), (0, 1, 2, 3), (SINGLE, BATCH))
NQUERIES, BATCH_SIZE = 200, 100
_built: dict = {}  # the one engine in use: cells are ordered so each database is built once


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cell" not in metafunc.fixturenames:
        return
    cells = [(nbits, n, eng, w) for nbits, n, eng, w in itertools.product(
        NBITS, database_sizes(metafunc.config), ENGINES, ITEMS) if eng in engines_for(w.op, ENGINES)]
    ids = [f"{eng}-{nbits}b-n{n}-{w.op}{w.param}-{w.mode}" for nbits, n, eng, w in cells]
    metafunc.parametrize("cell", cells, ids=ids)


def engine_for(nbits: int, n: int, name: str):
    """Build (or reuse) the engine over the clustered synthetic database of this cell."""
    key = (nbits, n, name)
    if key not in _built:
        _built.clear()
        codes = scale.database_codes(n, nbits)
        _built[key] = (build_engine(name, codes, nbits), scale.query_codes(codes, NQUERIES))
    return _built[key]


def bench_latency(benchmark, cell) -> None:
    nbits, n, name, work = cell
    engine, queries = engine_for(nbits, n, name)
    calls, per_call = work.calls(engine, queries, BATCH_SIZE)
    cycle = itertools.cycle(calls)
    rounds = 100 if work.mode == SINGLE else 10
    benchmark.group = f"{work.op}{work.param}-{nbits}b-n{n}-{work.mode}"
    with using_threads(1 if work.mode == SINGLE else None) as threads:
        benchmark.pedantic(lambda: next(cycle)(), rounds=rounds, iterations=1, warmup_rounds=1)
    benchmark.extra_info["threads"] = threads
    record_percentiles(benchmark, per_call)
