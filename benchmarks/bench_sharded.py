"""ShardedIndex on a local Ray instance against one in-process HammingIndex, same codes, same run:

- a batch of 1,000 top-100 queries over n (10^8 by default) 64-bit codes in 1, 2, 4 and 8 shards;
- the fixed cost of the fan-out: one query at a time over 10^6 codes, sharded minus in-process.

The index files can be written first, without the benchmark lock, and reused:

    python benchmarks/bench_sharded.py --n 1e8 --workdir /tmp/hs-1e8 --prepare-only
    flock /work/bench.lock python benchmarks/bench_sharded.py --n 1e8 --workdir /tmp/hs-1e8 --single-queries 0

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


def prepare(n: int, shard_counts: list[int], workdir: Path) -> None:
    """Write the in-process index and one sharded directory per shard count (skipped when present),
    from codes made in blocks; run it before the timed part, outside the benchmark lock."""
    codes = None
    for name, shards in [("single", 0)] + [(f"s{s}", s) for s in shard_counts]:
        if (workdir / name / "manifest.json").is_file():
            continue
        if codes is None:
            codes = random_codes(n, 0)
        t0 = time.perf_counter()
        if shards:
            write_sharded(workdir / name, codes, None, shards)
        else:
            write_index(workdir / name, codes, None, NBITS, backend="numba")
        print(f"wrote {workdir / name} in {time.perf_counter() - t0:.1f} s", flush=True)


def run(n: int, shard_counts: list[int], nq: int, k: int, repeats: int, small_n: int, single_k: int,
        nsingle: int, workdir: Path, fanout_shards: list[int]) -> dict:
    threads = os.cpu_count()
    set_num_threads(threads)
    connect(num_cpus=threads)
    result = {"n": n, "nbits": NBITS, "queries": nq, "k": k, "threads": threads, "machine": platform.processor()
              or platform.machine(), "batch": [], "fanout": []}
    if n:
        prepare(n, shard_counts, workdir)
        queries = random_codes(nq, 1)
        single = HammingIndex.load(workdir / "single", mmap=True)
        single.search(queries[:8], k)  # compile and page in
        base_s, want = timed(lambda: single.search(queries, k), repeats)
        result["batch"].append({"shards": 0, "seconds": base_s})
        print(f"in-process: {base_s:.2f} s for {nq} top-{k} queries over {n:,} codes", flush=True)
        del single
        for s in shard_counts:
            t0 = time.perf_counter()
            with ShardedIndex.load(workdir / f"s{s}") as index:
                opened = time.perf_counter() - t0
                index.search(queries[:8], k)
                secs, got = timed(lambda: index.search(queries, k), repeats)
                assert (got[0] == want[0]).all() and (got[1] == want[1]).all(), f"{s} shards: answers differ"
                actors = index.nactors
            result["batch"].append({"shards": s, "actors": actors, "seconds": secs, "ratio": secs / base_s,
                                    "open_s": opened})
            print(f"{s} shards in {actors} actor(s): {secs:.2f} s ({secs / base_s:.2f}x in-process), exact",
                  flush=True)
    if nsingle:
        result["fanout"] = fanout_costs(random_codes(small_n, 0), fanout_shards, single_k, nsingle, threads)
    return result


def noop_fanout_ms(nactors: int, nsingle: int) -> float:
    """Median milliseconds of one empty Ray actor call to each of `nactors` actors at once: the floor
    of any fan-out on this machine."""
    ray = connect()
    actors = [ray.remote(_Noop).options(num_cpus=0).remote() for _ in range(nactors)]
    ray.get([a.ping.remote() for a in actors])
    times = []
    for _ in range(nsingle):
        t0 = time.perf_counter()
        ray.get([a.ping.remote() for a in actors])
        times.append(time.perf_counter() - t0)
    for a in actors:
        ray.kill(a)
    return 1000 * statistics.median(times)


class _Noop:
    def ping(self) -> None:
        return None


def fanout_costs(small: np.ndarray, shard_counts: list[int], k: int, nsingle: int, threads: int) -> list[dict]:
    """One query at a time: each shard count, with the shards' default placement (one actor per node)
    and with one actor per shard, against the in-process work of one actor (its share of
    the codes on the threads it gets), so the difference is what the fan-out itself costs; also the
    latency over 1,000 codes (search nearly free) and an empty Ray call to as many actors."""
    probe = random_codes(nsingle, 2)
    one = HammingIndex(NBITS)
    one.add(small)
    want = one.search(probe, k)
    rows = []
    for s in shard_counts:
        for placement in [None] if s == 1 else [None, s]:
            with ShardedIndex(NBITS, shards=s, actors=placement) as index:
                actors = index.nactors
                part = HammingIndex(NBITS)
                part.add(small[:len(small) // actors])
                set_num_threads(max(1, threads // actors))
                part.search(probe[:1], k)
                base_ms = single_query_ms(part, probe, k)
                set_num_threads(threads)
                index.add(small)
                index.search(probe[:8], k)
                ms = single_query_ms(index, probe, k)
                got = index.search(probe, k)
                assert (got[0] == want[0]).all() and (got[1] == want[1]).all()
            with ShardedIndex(NBITS, shards=s, actors=placement) as index:
                index.add(small[:1000])
                index.search(probe[:8], k)
                tiny_ms = single_query_ms(index, probe, k)
            noop_ms = noop_fanout_ms(actors, nsingle)
            rows.append({"shards": s, "actors": actors, "ms": ms, "one_actor_work_ms": base_ms,
                         "overhead_ms": ms - base_ms, "tiny_index_ms": tiny_ms, "noop_fanout_ms": noop_ms})
            print(f"single query, {len(small):,} codes, {s} shards in {actors} actor(s): {ms:.2f} ms; one actor's "
                  f"work in-process {base_ms:.2f} ms; fan-out {ms - base_ms:+.2f} ms; over 1,000 codes "
                  f"{tiny_ms:.2f} ms; empty Ray calls {noop_ms:.2f} ms", flush=True)
    return rows


def report(r: dict) -> str:
    lines = [f"Machine: {r['machine']}, {r['threads']} cores shared with other users; local Ray instance "
             f"(num_cpus={r['threads']}); uniform random {r['nbits']}-bit codes, numba scan backend; medians."]
    if r["batch"]:
        lines += ["", f"## Batch: {r['queries']:,} top-{r['k']} queries over {r['n']:,} codes", "",
                  "| shards | seconds | vs in-process |", "|---|---|---|"]
    for row in r["batch"]:
        name = "in-process HammingIndex" if row["shards"] == 0 else f"{row['shards']} ({row['actors']} actors)"
        lines.append(f"| {name} | {row['seconds']:.2f} | {row.get('ratio', 1.0):.2f}x |")
    if r["fanout"]:
        lines += ["", f"## One query at a time over {r['small_n']:,} codes: the fixed cost of the fan-out", "",
                  "| shards | actors | ms per query | one actor's work in-process (ms) | fan-out cost (ms) "
                  "| ms over 1,000 codes | empty Ray calls (ms) |", "|---|---|---|---|---|---|---|"]
    for row in r["fanout"]:
        lines.append(f"| {row['shards']} | {row['actors']} | {row['ms']:.2f} | {row['one_actor_work_ms']:.2f} | "
                     f"{row['overhead_ms']:+.2f} | {row['tiny_index_ms']:.2f} | {row['noop_fanout_ms']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=float, default=1e8)
    p.add_argument("--shards", default="1,2,4,8")
    p.add_argument("--fanout-shards", default="1,2,4,8", help="shard counts of the one-query part")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--small-n", type=float, default=1e6, help="codes of the one-query fan-out test")
    p.add_argument("--single-k", type=int, default=10)
    p.add_argument("--single-queries", type=int, default=300)
    p.add_argument("--workdir", default=None, help="folder for the index files, kept and reused (default: a temp "
                   "dir, removed)")
    p.add_argument("--prepare-only", action="store_true", help="only write the index files into --workdir")
    p.add_argument("--out", default="benchmarks/results/sharded_run.md")
    a = p.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="hashsearch-bench-sharded-"))
    work.mkdir(parents=True, exist_ok=True)
    shards = [int(s) for s in a.shards.split(",")]
    if a.prepare_only:
        prepare(int(a.n), shards, work)
        return
    try:
        r = run(int(a.n), shards, a.queries, a.k, a.repeats, int(a.small_n),
                a.single_k, a.single_queries, work,
                [int(s) for s in a.fanout_shards.split(",")])
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    r["small_n"] = int(a.small_n)
    Path(a.out).with_suffix(".json").write_text(json.dumps(r, indent=2))
    Path(a.out).write_text(report(r))
    print(report(r))


if __name__ == "__main__":
    main()
