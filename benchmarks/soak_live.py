"""Mixed soak of the live index: writer threads add, remove, compact and save while reader threads
query, and EVERY answer is checked against brute force over the snapshot the reader searched.

    python benchmarks/soak_live.py --n 10000000 --seconds 600 --writers 2 --readers 4

Checks: top-k and radius answers equal the oracle of their snapshot; len(index) == start + adds -
removes at the end; no background compaction error. Prints one JSON line of counts (exit 1 on failure).
The oracle is plain numpy over each segment's live rows (no hashsearch kernel), so it scales to 10^7.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time

import numpy as np

from hashsearch import bitmaps
from hashsearch.errors import UnknownIdError
from hashsearch.index import HammingIndex
from hashsearch.results import PAD_DISTANCE
from hashsearch.segments import Snapshot
from hashsearch.synthetic_codes import clustered_codes

ORACLE_ROWS = 1 << 20  # rows compared at a time by the oracle


def oracle_distances(snap: Snapshot, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances and ids of every live row of the snapshot to one query (numpy popcount)."""
    dists, ids = [], []
    for seg, live in zip(snap.segments, snap.live):
        rows = np.arange(len(seg)) if live is None else np.flatnonzero(bitmaps.as_bool(live, len(seg)))
        for lo in range(0, rows.size, ORACLE_ROWS):
            part = rows[lo:lo + ORACLE_ROWS]
            x = np.bitwise_xor(seg.codes[part], query[None, :])
            dists.append(np.bitwise_count(x).sum(axis=1, dtype=np.int32))
            ids.append(seg.id_at(part))
    if not dists:
        return np.zeros(0, np.int32), np.zeros(0, np.int64)
    return np.concatenate(dists), np.concatenate(ids)


def check_answer(snap: Snapshot, queries: np.ndarray, k: int, radius: int) -> None:
    """Search and range-search `snap`; raise AssertionError unless both equal the oracle."""
    dist, got = snap.search(queries, k)
    lims, rdist, rids = snap.range_search(queries, radius)
    assert dist.shape == (len(queries), min(k, len(snap))), dist.shape
    for i, q in enumerate(queries):
        d, ids = oracle_distances(snap, q)
        assert d.size == len(snap), (d.size, len(snap))
        kk = min(k, d.size)
        if kk:
            cut = np.partition(d, kk - 1)[kk - 1]
            near = np.flatnonzero(d <= cut)
            order = np.lexsort((ids[near], d[near]))[:kk]
            assert np.array_equal(dist[i], d[near][order]) and np.array_equal(got[i], ids[near][order]), \
                f"top-{k} differs from the oracle of its snapshot"
        assert not (dist[i] == PAD_DISTANCE).any()
        inside = np.flatnonzero(d <= radius)
        order = np.lexsort((ids[inside], d[inside]))
        a, b = lims[i], lims[i + 1]
        assert np.array_equal(rdist[a:b], d[inside][order]) and np.array_equal(rids[a:b], ids[inside][order]), \
            f"radius-{radius} answer differs from the oracle of its snapshot"


def hammer(index: HammingIndex, seconds: float, writers: int = 2, readers: int = 4, seed: int = 0,
           max_k: int = 20, max_radius: int = 3, save_every: float = 0.05) -> dict:
    """Run writers and readers for `seconds`; returns counts, raises the first failure."""
    nbytes = index.nbits // 8
    stop = threading.Event()
    failures: list[BaseException] = []
    counts = {"added": 0, "removed": 0, "checked_queries": 0, "saves": 0, "compactions": 0}
    lock = threading.Lock()
    start_len = len(index)
    save_dir = tempfile.mkdtemp(prefix="soak-live-")
    pool = index.snapshot().codes[:4096].copy() if len(index) else np.zeros((1, nbytes), np.uint8)
    check_answer(index.snapshot(), pool[:1], 3, 1)  # compile the kernels before the clock starts

    def count(key: str, n: int = 1) -> None:
        with lock:
            counts[key] += n

    def writer(w: int) -> None:
        rng = np.random.default_rng(seed + w)
        next_save = time.monotonic()
        try:
            while not stop.is_set():
                x = rng.random()
                if x < 0.5:
                    n = int(rng.integers(1, 100))
                    codes = pool[rng.integers(0, len(pool), n)] ^ (rng.random((n, nbytes)) < 0.02).astype(np.uint8)
                    index.add(codes)
                    count("added", n)
                elif x < 0.98:
                    snap = index.snapshot()
                    seg = snap.segments[int(rng.integers(0, len(snap.segments)))] if snap.segments else None
                    if seg is None or not len(seg):
                        continue
                    gone = seg.id_at(rng.integers(0, len(seg), int(rng.integers(1, 20))))
                    try:
                        count("removed", index.remove(gone))
                    except UnknownIdError:  # already removed (by the other writer or earlier)
                        continue
                elif x < 0.985 and len(index) < 10**6:
                    index.compact()
                    count("compactions")
                if time.monotonic() >= next_save and w == 0:
                    index.save(f"{save_dir}/ix")
                    count("saves")
                    next_save = time.monotonic() + save_every
                time.sleep(0.001)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            failures.append(exc)
            stop.set()

    def reader(r: int) -> None:
        rng = np.random.default_rng(seed + 100 + r)
        try:
            while not stop.is_set():
                snap = index.snapshot()
                q = pool[rng.integers(0, len(pool), 2)] ^ (rng.random((2, nbytes)) < 0.02).astype(np.uint8)
                check_answer(snap, q, int(rng.integers(1, max_k)), int(rng.integers(0, max_radius)))
                count("checked_queries", 2)
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)
            stop.set()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    threads += [threading.Thread(target=reader, args=(r,)) for r in range(readers)]
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    index.wait_for_compaction()
    if failures:
        raise failures[0]
    assert index.compaction_error is None, index.compaction_error
    assert len(index) == start_len + counts["added"] - counts["removed"], "live count != adds - removes"
    counts["final_len"] = len(index)
    counts["segments"] = len(index.snapshot().segments)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10**7, help="codes in the index at the start")
    parser.add_argument("--nbits", type=int, default=64)
    parser.add_argument("--backend", default="mih")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    index = HammingIndex(args.nbits, args.backend)
    index.add(clustered_codes(args.n, args.nbits, seed=args.seed))
    index.compact()
    index.snapshot().segments[0].searcher()
    built = time.perf_counter() - t0
    try:
        counts = hammer(index, args.seconds, args.writers, args.readers, args.seed)
    except BaseException as exc:  # noqa: BLE001
        print(json.dumps({"ok": False, "error": repr(exc)}))
        return 1
    print(json.dumps({"ok": True, "n": args.n, "nbits": args.nbits, "backend": args.backend,
                      "seconds": args.seconds, "writers": args.writers, "readers": args.readers,
                      "build_s": round(built, 1), **counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
