"""Acceptance figures of the live index (issue #11): latency of queries right after changes.

    python benchmarks/bench_live.py --n 10000000 --threads 1,2 --loads 5000 --out benchmarks/results/live

On an n x 64-bit index (`--backend`, MIH by default; clustered synthetic codes, queries near them),
per thread count:
  - warm query: 10 queries at radius 2 (median of repeats);
  - add 100 codes, then the same query (median over repeats, each adding 100 new codes);
  - remove 1,000 ids, then the query;
  - steady query latency after 10,000 small adds (10 codes each) against the compacted index, interleaved;
  - optionally FAISS IndexBinaryMultiHash: add 100 + query, side by side.
Then a reader that loads and queries an index directory `--loads` times while another process saves it
every 50 ms (tests/saver_process.py), counting failures. Writes OUT.json.

With `--lock PATH` (the shared machine's timing lock) only the timed sections hold the lock, at normal
priority; builds, the 10,000 adds, merges and warm-up queries run at nice 19 outside it.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hashsearch import bitmaps
from hashsearch.index import HammingIndex, set_num_threads
from hashsearch.segments import Snapshot
from hashsearch.synthetic_codes import clustered_codes

RADIUS = 2
NQ = 10
LOCK: str | None = None  # --lock
TIMED_LOADS: list = []  # load averages when each timed section started


def renice(value: int) -> None:
    """Set every thread of this process (numba's and the compaction thread too) to niceness `value`."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, int(tid), value)


@contextlib.contextmanager
def timed():
    """A timed section: under the --lock file lock at normal priority (nice 19 again after it)."""
    if LOCK is None:
        yield
        return
    with open(LOCK, "a") as fd:
        fcntl.flock(fd, fcntl.LOCK_EX)
        renice(0)
        TIMED_LOADS.append(os.getloadavg())
        try:
            yield
        finally:
            renice(19)
            fcntl.flock(fd, fcntl.LOCK_UN)


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def near(codes: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """n codes at most two bit flips away from random rows of `codes` (so radius 2 finds them)."""
    out = codes[rng.integers(0, len(codes), n)].copy()
    rows = np.arange(n)
    for _ in range(2):
        bit = rng.integers(0, codes.shape[1] * 8, n)
        out[rows, bit // 8] ^= (1 << (bit % 8)).astype(np.uint8)
    return out


def run_changes(index: HammingIndex, codes: np.ndarray, queries: np.ndarray, rng: np.random.Generator,
                repeats: int) -> dict:
    """Warm query, add-100-then-query, remove-1000-then-query latencies (ms, medians)."""
    query = lambda: index.range_search(queries, RADIUS)  # noqa: E731
    query()
    index.search(queries, 10)
    batches = iter([near(codes, rng, 100) for _ in range(repeats)])
    with timed():
        return timed_changes(index, queries, query, batches, rng, repeats)


def timed_changes(index, queries, query, batches, rng, repeats) -> dict:
    out = {"warm_query_ms": median_ms(query, 3 * repeats)}

    def add_then_query():
        index.add(next(batches))
        query()

    out["add100_then_query_ms"] = median_ms(add_then_query, repeats)
    big = index.snapshot().segments[0]

    live = index.snapshot().live[0]
    pos = np.unique(rng.integers(0, len(big), 2000 * repeats))
    pos = rng.permutation(pos if live is None else pos[bitmaps.is_set(live, pos)])[:1000 * repeats]
    chunks = iter(big.id_at(pos).reshape(repeats, 1000))

    def remove_then_query():
        index.remove(next(chunks))
        query()

    out["remove1000_then_query_ms"] = median_ms(remove_then_query, repeats)
    out["query_after_changes_ms"] = median_ms(query, 3 * repeats)
    out["topk10_after_changes_ms"] = median_ms(lambda: index.search(queries, 10), 3 * repeats)
    return out


def run_faiss(codes: np.ndarray, queries: np.ndarray, rng: np.random.Generator, repeats: int) -> dict:
    """FAISS IndexBinaryMultiHash (nhash 3, exact at radius 2 with nflip 0): add 100 then query."""
    import faiss

    t0 = time.perf_counter()
    mh = faiss.IndexBinaryMultiHash(codes.shape[1] * 8, 3, 21)
    mh.add(codes)
    build = time.perf_counter() - t0
    mh.nflip = 0
    query = lambda: mh.range_search(queries, RADIUS + 1)  # noqa: E731 - FAISS's radius is strict
    query()
    batches = iter([near(codes, rng, 100) for _ in range(repeats)])

    def add_then_query():
        mh.add(next(batches))
        query()

    return {"faiss_build_s": build, "faiss_warm_query_ms": median_ms(query, 3 * repeats),
            "faiss_add100_then_query_ms": median_ms(add_then_query, repeats)}


def interleaved_ms(fns: dict, rounds: int) -> dict:
    """Median ms of each function, run in turn round after round (order rotating), so that a shared
    machine's changing load falls on all of them alike."""
    names, times = list(fns), {name: [] for name in fns}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: 1000 * float(np.median(t)) for name, t in times.items()}


def unfused(snap: Snapshot) -> Snapshot:
    """The same version searched segment by segment (each segment's own backend, results merged in
    Python): the path that the fused kernel call replaces, timed beside it with --unfused."""
    copy = Snapshot(snap.nbits, snap.segments, snap.live, snap.dead)
    object.__setattr__(copy, "_fused_masks", lambda *args: None)
    return copy


def run_steady(index: HammingIndex, codes: np.ndarray, queries: np.ndarray, rng: np.random.Generator,
               threads: list[int], repeats: int, reference: Snapshot | None = None, with_unfused: bool = False) -> dict:
    """Query latency after 10,000 adds of 10 codes (background merges settled) against the compacted
    index (`reference`: a snapshot to compare with instead, e.g. the compacted index before the
    changes, sparing a rebuild at 10^8), timed interleaved, and the same answers from both (and, with
    `with_unfused`, from the live version searched segment by segment, timed in the same rounds)."""
    batches = near(codes, rng, 100_000).reshape(10_000, 10, -1)
    t0 = time.perf_counter()
    for batch in batches:
        index.add(batch)
    adds_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.wait_for_compaction()
    live = index.snapshot()
    out = {"small_adds_s": adds_s, "merges_settled_s": time.perf_counter() - t0, "segments_live": len(live.segments),
           "segment_rows_live": [len(s) for s in live.segments], "settings": index.settings}
    if reference is None:
        t0 = time.perf_counter()
        index.compact()
        index.snapshot().segments[0].searcher()
        out["compact_s"] = time.perf_counter() - t0
        reference = index.snapshot()
        for a, b in zip(live.search(queries, 10) + live.range_search(queries, RADIUS),
                        reference.search(queries, 10) + reference.range_search(queries, RADIUS)):
            assert np.array_equal(a, b), "the compacted index answers differently"
    out["reference"] = "compacted after the adds" if "compact_s" in out else "compacted index before the changes"
    out["reference_rows"] = len(reference)
    snaps = {"live": live, "compacted": reference}
    if with_unfused:
        snaps["unfused"] = unfused(live)
    ops = (("", lambda s: s.range_search(queries, RADIUS)), ("topk10_", lambda s: s.search(queries, 10)))
    for t in threads:
        set_num_threads(t)
        for _, fn in ops:  # warm-up (auto builds tables for the m it plans) outside the timed section
            answers = [fn(snap) for snap in snaps.values()]
            for other in answers[1:]:
                assert all(np.array_equal(a, b) for a, b in zip(answers[0], other)), "versions answer differently"
    with timed():
        for t in threads:
            set_num_threads(t)
            for op, fn in ops:
                ms = interleaved_ms({name: (lambda snap=snap: fn(snap)) for name, snap in snaps.items()}, 5 * repeats)
                for name in snaps:
                    out[f"{name}_{op}{t}t_ms"] = ms[name]
                out[f"ratio_{op}{t}t"] = ms["live"] / ms["compacted"]
                if with_unfused:
                    out[f"ratio_unfused_{op}{t}t"] = ms["unfused"] / ms["compacted"]
    return out


def run_loads(loads: int, every: float) -> dict:
    """Load + query an index directory `loads` times while another process saves it every `every` s."""
    saver_script = Path(__file__).resolve().parents[1] / "tests" / "saver_process.py"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ix"
        index = HammingIndex(64, "numba", segment_rows=256)
        index.add(clustered_codes(20_000, 64, seed=1))
        index.save(path)
        saver = subprocess.Popen([sys.executable, str(saver_script), str(path), "--every", str(every)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        saver.stdout.readline()
        failures, errors, sizes = 0, [], set()
        q = clustered_codes(4, 64, seed=2)
        t0 = time.perf_counter()
        for _ in range(loads):
            try:
                loaded = HammingIndex.load(path)
                loaded.search(q, 5)
                sizes.add(len(loaded))
            except Exception as exc:  # noqa: BLE001 - counted, that is the measurement
                failures += 1
                errors.append(repr(exc))
        elapsed = time.perf_counter() - t0
        saver.kill()
        out, _ = saver.communicate()
    return {"loads": loads, "failures": failures, "first_errors": errors[:3], "versions_seen": len(sizes),
            "saves_by_other_process": int(out.split()[-1]) if out.split() else 0, "seconds": elapsed}


def run_index(args: argparse.Namespace, threads: list[int], rng: np.random.Generator, result: dict) -> None:
    """The latency figures on an args.n-code MIH index (see the module docstring)."""
    codes = clustered_codes(args.n, 64, seed=0)
    queries = near(codes, rng, NQ)
    t0 = time.perf_counter()
    index = HammingIndex(64, args.backend)
    index.add(codes)
    index.compact()
    index.snapshot().segments[0].searcher()
    result["build_s"] = time.perf_counter() - t0  # auto: without the tables its first queries build
    base = index.snapshot() if args.reference == "base" else None
    for t in threads:
        set_num_threads(t)
        result[f"changes_{t}t"] = run_changes(index, codes, queries, rng, args.repeats)
        print(json.dumps({f"changes_{t}t": result[f"changes_{t}t"]}), flush=True)
    if args.faiss:
        set_num_threads(threads[0])
        result["faiss_1t"] = run_faiss(codes, queries, rng, args.repeats)
        print(json.dumps(result["faiss_1t"]), flush=True)
    if args.steady:
        set_num_threads(threads[0])
        result["steady"] = run_steady(index, codes, queries, rng, threads, args.repeats, base, args.unfused)
        print(json.dumps(result["steady"]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10**7, help="codes in the index (0: only the loads test)")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--loads", type=int, default=5000)
    parser.add_argument("--faiss", action="store_true", help="also time FAISS IndexBinaryMultiHash")
    parser.add_argument("--reference", choices=["compacted", "base"], default="compacted",
                        help="steady state against the index compacted after the adds, or (base: no second "
                             "build, for 10^8) the compacted index before any change")
    parser.add_argument("--no-steady", dest="steady", action="store_false",
                        help="skip the steady state after 10,000 small adds (only the changes-then-query figures)")
    parser.add_argument("--unfused", action="store_true",
                        help="steady state: also time the live version searched segment by segment")
    parser.add_argument("--backend", default="mih", help="the index's backend (mih, auto, ...)")
    parser.add_argument("--lock", help="hold this file lock (and normal priority) only while timing; "
                                       "the rest runs at nice 19")
    parser.add_argument("--out", default="benchmarks/results/live")
    args = parser.parse_args()
    global LOCK
    LOCK = args.lock
    if LOCK:
        renice(19)
    threads = [int(t) for t in args.threads.split(",")]
    rng = np.random.default_rng(0)
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=Path(__file__).parent).stdout.strip(),
              "package": str(Path(sys.modules["hashsearch"].__file__).parent),
              "n": args.n, "nbits": 64, "backend": args.backend, "radius": RADIUS, "nq": NQ,
              "load_before": os.getloadavg()}
    if args.n:
        run_index(args, threads, rng, result)
    if args.loads:
        result["loads"] = run_loads(args.loads, 0.05)
        print(json.dumps(result["loads"]), flush=True)
    result["load_after"], result["load_timed"] = os.getloadavg(), TIMED_LOADS
    Path(args.out + ".json").write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}.json")


if __name__ == "__main__":
    main()
