"""Search engine timings (pytest-benchmark), ours against FAISS in the same run on the same data:

- ranking: exact top-100 over 1M x 64-bit codes, 1,000 queries (and 1 query), 1 and 2 threads;
- lookup: all codes within r = 0, 1, 2 among 1M and 10M x 64-bit clustered codes: MIH vs linear scans
  vs FAISS IndexBinaryMultiHash (nflip set so that it is exact); every engine's answer is checked identical;
- memory: bytes per item held, against the raw codes;
- scale (with --hashsearch-huge): 100M x 64-bit codes built, saved, memory-mapped and queried (scan
  and MIH), with build/load times, bytes on disk and peak RSS.

Run: pytest benchmarks/bench_search.py --benchmark-only [--hashsearch-huge] --benchmark-json=out.json
"""
from __future__ import annotations

import resource
import time

import numpy as np
import pytest

from hashsearch.backends import FaissBackend
from hashsearch.index import HammingIndex, set_num_threads
from hashsearch.storage import index_size
from hashsearch.synthetic_codes import clustered_codes, random_codes

NBITS = 64
RANK_N, RANK_NQ, RANK_K = 10**6, 1000, 100
LOOKUP_SIZES, LOOKUP_NQ, LOOKUP_RADII = (10**6, 10**7), 100, (0, 1, 2)
CENTRES, FLIP = 2000, 0.05
SCALE_N = 10**8


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class FaissMultiHash:
    """FAISS IndexBinaryMultiHash (our "faiss" backend with nhash tables) used for every lookup."""

    def __init__(self, codes, nhash):
        self.backend = FaissBackend(codes, NBITS, nhash=nhash)

    def range_search(self, q, r):
        return self.backend.range_search(q, r, use_multihash=True)


@pytest.fixture(scope="module")
def ranking():
    db = random_codes(RANK_N, NBITS, seed=1)
    q = random_codes(RANK_NQ, NBITS, seed=2)
    ours = HammingIndex(NBITS, "numba")
    ours.add(db)
    engines = {"ours-numba": ours, "faiss-flat": FaissBackend(db, NBITS)}
    ref = engines["faiss-flat"].search(q, RANK_K)
    for engine in engines.values():  # identical answers (and numba compiled) before timing
        d, i = engine.search(q, RANK_K)
        assert (d == ref[0]).all() and (i == ref[1]).all()
    return engines, q


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("nq", [RANK_NQ, 1])
def bench_ranking_top100_1m(benchmark, ranking, threads, nq):
    """Times ours; before each of our rounds FAISS flat runs the same search (the untimed setup,
    timed by hand), so both see the same machine load: extra_info holds FAISS's median and the
    median of the per-round ratios ours / FAISS (the machine is shared, so ratios, not absolutes)."""
    engines, q = ranking
    ours, flat = engines["ours-numba"], engines["faiss-flat"]
    benchmark.group = f"top-{RANK_K}, {RANK_N:,} x {NBITS}-bit, {nq} queries, {threads} thread(s)"
    faiss_s = []

    def run_faiss():
        t0 = time.perf_counter()
        flat.search(q[:nq], RANK_K)
        faiss_s.append(time.perf_counter() - t0)

    set_num_threads(threads)
    try:
        benchmark.pedantic(ours.search, (q[:nq], RANK_K), setup=run_faiss, rounds=9 if nq > 1 else 300,
                           iterations=1, warmup_rounds=1)
    finally:
        set_num_threads(2)
    ours_s = np.asarray(benchmark.stats.stats.data)
    theirs = np.asarray(faiss_s[-len(ours_s):])
    benchmark.extra_info.update(faiss_flat_median_s=float(np.median(theirs)),
                                ratio_ours_over_faiss=float(np.median(ours_s / theirs)))


@pytest.fixture(scope="module", params=LOOKUP_SIZES, ids=lambda n: f"{n:.0e}")
def lookup(request):
    """n x 64-bit clustered codes and the four engines, checked to give identical answers at r = 0, 1, 2."""
    n = request.param
    db = clustered_codes(n, NBITS, CENTRES, FLIP, seed=0, progress=True)
    q = clustered_codes(LOOKUP_NQ, NBITS, CENTRES, FLIP, seed=0, offset=n)
    t0 = time.perf_counter()
    mih = HammingIndex(NBITS, "mih")
    mih.add(db)
    mih.range_search(q[:1], 0)  # builds the tables
    build_s = time.perf_counter() - t0
    scan = HammingIndex(NBITS, "numba")
    scan.add(db)
    nhash = 3
    engines = {"ours-mih": mih, "ours-numba-scan": scan, "faiss-flat": FaissBackend(db, NBITS),
               f"faiss-multihash-{nhash}": FaissMultiHash(db, nhash)}
    for r in LOOKUP_RADII:
        ref = scan.range_search(q, r)
        for name, engine in engines.items():
            res = engine.range_search(q, r)
            assert all((a == b).all() for a, b in zip(res, ref)), (name, r)
        print(f"\nn={n:,} r={r}: identical answers from all 4 engines, mean results {np.diff(ref[0]).mean():.1f}")
    print(f"MIH build {build_s:.1f} s, m={mih._engine.m}, tables {mih._engine.nbytes / n:.1f} B/item")
    return n, engines, q


@pytest.mark.parametrize("radius", LOOKUP_RADII)
@pytest.mark.parametrize("engine", ["ours-mih", "ours-numba-scan", "faiss-flat", "faiss-multihash-3"])
def bench_lookup_clustered(benchmark, lookup, engine, radius):
    n, engines, q = lookup
    benchmark.group = f"lookup r<={radius}, {n:,} x {NBITS}-bit clustered, {LOOKUP_NQ} queries, 2 threads"
    set_num_threads(2)
    benchmark.pedantic(engines[engine].range_search, (q, radius), rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("backend", ["numba", "mih"])
def bench_memory_per_item(benchmark, backend):
    """Bytes held per item against the 8 raw bytes of a 64-bit code (1M codes)."""
    db = clustered_codes(RANK_N, NBITS, CENTRES, FLIP, seed=0)
    index = HammingIndex(NBITS, backend)
    index.add(db)
    benchmark.pedantic(index.range_search, (db[:10], 1), rounds=1, iterations=1)
    benchmark.extra_info.update(bytes_per_item=index.nbytes / RANK_N, raw_bytes_per_item=NBITS / 8,
                                overhead=index.nbytes / db.nbytes - 1)


def bench_scale_100m(benchmark, request, tmp_path):
    """100M x 64-bit clustered codes: build, save, memory-mapped load, then a batch of 100 queries
    (top-10 and r <= 2) by linear scan and by MIH, every answer checked identical; peak RSS."""
    if not request.config.getoption("--hashsearch-huge"):
        pytest.skip("needs --hashsearch-huge")
    set_num_threads(2)
    info = {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        info[f"{name}_s"] = time.perf_counter() - t0
        print(f"\n{name}: {info[f'{name}_s']:.2f} s, peak RSS {_peak_rss_gb():.2f} GB", flush=True)
        return out

    db = timed("generate", clustered_codes, SCALE_N, NBITS, CENTRES, FLIP, 0, 0, True)
    q = clustered_codes(100, NBITS, CENTRES, FLIP, seed=0, offset=SCALE_N)
    built = HammingIndex(NBITS, "numba")
    timed("add", built.add, db)
    del db
    timed("save", built.save, tmp_path / "ix")
    del built
    info["disk_bytes"] = index_size(tmp_path / "ix")
    scan = timed("load_mmap", HammingIndex.load, tmp_path / "ix")
    top_scan = timed("scan_top10_100q_first", scan.search, q, 10)  # pages the file in
    timed("scan_top10_100q", scan.search, q, 10)
    range_scan = timed("scan_r2_100q", scan.range_search, q, 2)
    mih = HammingIndex(NBITS, "mih")
    mih.add(scan.codes)
    timed("mih_build", mih.range_search, q[:1], 0)
    range_mih = timed("mih_r2_100q", mih.range_search, q, 2)
    top_mih = timed("mih_top10_100q", mih.search, q, 10)
    assert all((a == b).all() for a, b in zip(range_mih, range_scan))
    assert all((a == b).all() for a, b in zip(top_mih, top_scan))
    benchmark.group = f"scale: {SCALE_N:,} x {NBITS}-bit clustered, 100 queries r<=2, 2 threads"
    benchmark.pedantic(mih.range_search, (q, 2), rounds=5, iterations=1)
    benchmark.extra_info.update(info, mih_tables_bytes_per_item=mih._engine.nbytes / SCALE_N,
                                mih_m=mih._engine.m, peak_rss_gb=_peak_rss_gb(),
                                mean_results_r2=float(np.diff(range_mih[0]).mean()))
