"""ShardedIndex on a local Ray instance against one in-process HammingIndex, same codes, same run:

- a batch of 1,000 top-100 queries over n (10^8 by default) 64-bit codes in 1, 2, 4 and 8 shards;
- the fixed cost of the fan-out: one query at a time over 10^6 codes, sharded minus in-process.

Every sharded answer is checked equal to the in-process one. Writes a Markdown table (and JSON).

    python benchmarks/bench_sharded.py --n 1e8 --out benchmarks/results/sharded_run.md
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from hashsearch.cluster import connect
from hashsearch.index import HammingIndex, set_num_threads
from hashsearch.sharded import ShardedIndex, write_sharded
from hashsearch.storage import write_index

NBITS = 64


def random_codes(n: int, seed: int) -> np.ndarray:
    """n uniform random 64-bit codes, made in blocks (no n x 8 temporary of another dtype)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, NBITS // 8), np.uint8)
    for lo in range(0, n, 1 << 24):
        hi = min(n, lo + (1 << 24))
        out[lo:hi] = np.frombuffer(rng.bytes((hi - lo) * 8), np.uint8).reshape(-1, 8)
    return out


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def single_query_ms(index: HammingIndex | ShardedIndex, queries: np.ndarray, k: int) -> float:
    """Median milliseconds of one-query searches."""
    times = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q[None], k)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def run(n: int, shard_counts: list[int], nq: int, k: int, repeats: int, small_n: int, single_k: int,
        nsingle: int, workdir: Path) -> dict:
    threads = os.cpu_count()
    set_num_threads(threads)
    connect(num_cpus=threads)
    result = {"n": n, "nbits": NBITS, "queries": nq, "k": k, "threads": threads, "machine": platform.processor()
              or platform.machine(), "batch": [], "fanout": []}
    t0 = time.perf_counter()
    codes = random_codes(max(n, small_n), 0)
    if n == 0:  # only the one-query part
        result["fanout"] = fanout_costs(codes[:small_n], shard_counts, single_k, nsingle, threads)
        return result
    queries = random_codes(nq, 1)
    write_index(workdir / "single", codes, None, NBITS, backend="numba")
    result["make_s"] = time.perf_counter() - t0
    single = HammingIndex.load(workdir / "single", mmap=True)
    single.search(queries[:1], k)  # compile and page in
    base_s, want = timed(lambda: single.search(queries, k), repeats)
    result["batch"].append({"shards": 0, "seconds": base_s})
    print(f"in-process: {base_s:.2f} s for {nq} top-{k} queries over {n:,} codes", flush=True)
    for s in shard_counts:
        t0 = time.perf_counter()
        write_sharded(workdir / f"s{s}", codes, None, s)
        with ShardedIndex.load(workdir / f"s{s}") as index:
            opened = time.perf_counter() - t0
            index.search(queries[:1], k)
            secs, got = timed(lambda: index.search(queries, k), repeats)
            assert (got[0] == want[0]).all() and (got[1] == want[1]).all(), f"{s} shards: answers differ"
        shutil.rmtree(workdir / f"s{s}")
        result["batch"].append({"shards": s, "seconds": secs, "ratio": secs / base_s, "write_and_open_s": opened})
        print(f"{s} shards: {secs:.2f} s ({secs / base_s:.2f}x in-process), exact", flush=True)
    del single
    shutil.rmtree(workdir / "single")

    small = codes[:small_n].copy()
    del codes
    result["fanout"] = fanout_costs(small, shard_counts, single_k, nsingle, threads)
    return result


def fanout_costs(small: np.ndarray, shard_counts: list[int], k: int, nsingle: int, threads: int) -> list[dict]:
    """One query at a time: each shard count against the in-process work of one of its shards (n/S
    codes on the threads an actor gets), so the difference is what the fan-out itself costs; and the
    same over 1,000 codes, where the search is nearly free and the latency is the fan-out alone."""
    probe = random_codes(nsingle, 2)
    rows = []
    for s in shard_counts:
        actor_threads = max(1, threads // s)
        part = HammingIndex(NBITS)
        part.add(small[:len(small) // s])
        set_num_threads(actor_threads)
        part.search(probe[:1], k)
        base_ms = single_query_ms(part, probe, k)
        set_num_threads(threads)
        one = HammingIndex(NBITS)
        one.add(small)
        with ShardedIndex(NBITS, shards=s) as index:
            index.add(small)
            index.search(probe[:8], k)
            ms = single_query_ms(index, probe, k)
            got, want = index.search(probe, k), one.search(probe, k)
            assert (got[0] == want[0]).all() and (got[1] == want[1]).all()
        with ShardedIndex(NBITS, shards=s) as index:
            index.add(small[:1000])
            index.search(probe[:8], k)
            tiny_ms = single_query_ms(index, probe, k)
        rows.append({"shards": s, "ms": ms, "one_shard_work_ms": base_ms, "overhead_ms": ms - base_ms,
                     "tiny_index_ms": tiny_ms})
        print(f"single query, {len(small):,} codes, {s} shards: {ms:.2f} ms; one shard's work in-process "
              f"({actor_threads} thread(s)) {base_ms:.2f} ms; fan-out {ms - base_ms:+.2f} ms; "
              f"over 1,000 codes {tiny_ms:.2f} ms", flush=True)
    return rows
    return result


def report(r: dict) -> str:
    lines = [f"Machine: {r['machine']}, {r['threads']} cores shared with other users; local Ray instance "
             f"(num_cpus={r['threads']}); uniform random {r['nbits']}-bit codes, numba scan backend; medians."]
    if r["batch"]:
        lines += ["", f"## Batch: {r['queries']:,} top-{r['k']} queries over {r['n']:,} codes", "",
                  "| shards | seconds | vs in-process |", "|---|---|---|"]
    for row in r["batch"]:
        name = "in-process HammingIndex" if row["shards"] == 0 else str(row["shards"])
        lines.append(f"| {name} | {row['seconds']:.2f} | {row.get('ratio', 1.0):.2f}x |")
    lines += ["", f"## One query at a time over {r['small_n']:,} codes: the fixed cost of the fan-out", "",
              "| shards | ms per query | one shard's work in-process (ms) | fan-out cost (ms) | ms over 1,000 codes |",
              "|---|---|---|---|---|"]
    for row in r["fanout"]:
        lines.append(f"| {row['shards']} | {row['ms']:.2f} | {row['one_shard_work_ms']:.2f} | "
                     f"{row['overhead_ms']:+.2f} | {row['tiny_index_ms']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=float, default=1e8)
    p.add_argument("--shards", default="1,2,4,8")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--small-n", type=float, default=1e6, help="codes of the one-query fan-out test")
    p.add_argument("--single-k", type=int, default=10)
    p.add_argument("--single-queries", type=int, default=300)
    p.add_argument("--workdir", default=None, help="scratch folder for the index files (default: a temp dir)")
    p.add_argument("--out", default="benchmarks/results/sharded_run.md")
    a = p.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="hashsearch-bench-sharded-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        r = run(int(a.n), [int(s) for s in a.shards.split(",")], a.queries, a.k, a.repeats, int(a.small_n),
                a.single_k, a.single_queries, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    r["small_n"] = int(a.small_n)
    Path(a.out).with_suffix(".json").write_text(json.dumps(r, indent=2))
    Path(a.out).write_text(report(r))
    print(report(r))


if __name__ == "__main__":
    main()
