"""Seconds a user's first searches take with a cold numba cache (a fresh $NUMBA_CACHE_DIR), step by step:
64-bit codes, a scan top-k of 1 query and of 64 (the threaded path), radius searches, the same masked,
a multi-index hash built and searched, then a live index of three segments (two MIH, one growing,
one tombstone) searched in the fused multi-segment kernel. Run it with PYTHONPATH set to the source
tree to time:

    PYTHONPATH=. python benchmarks/compile_first_queries.py
"""
from __future__ import annotations

import os
import tempfile
import time

os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="hashsearch-cold-")
START = time.perf_counter()

import numpy as np  # noqa: E402

from hashsearch.backends import check_mask  # noqa: E402
from hashsearch.index import HammingIndex  # noqa: E402
from hashsearch.kernels import scan  # noqa: E402
from hashsearch.kernels.popcount import as_words, scan_words  # noqa: E402
from hashsearch.mih import MultiIndexHash  # noqa: E402


def live_index(codes: np.ndarray) -> HammingIndex:
    """Two sealed MIH segments and a growing one, one row removed."""
    index = HammingIndex(64, "mih", segment_rows=codes.shape[0] // 2, auto_compact=False)
    index.add(codes)
    index.add(codes[:100])
    index.remove([5])
    return index


def main() -> None:
    print(f"{'import':28s} {time.perf_counter() - START:6.2f} s")
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (200000, 8), dtype=np.uint8)
    w, words = scan_words(codes), as_words(codes)
    mask = check_mask(rng.random(codes.shape[0]) < 0.5, codes.shape[0])
    live = {}
    steps = [
        ("scan top-k, 1 query", lambda: scan.topk(w[:1], w[:1000], 5, 64)),
        ("scan top-k, 64 queries", lambda: scan.topk(w[:64], w, 5, 64)),
        ("scan radius, 1 query", lambda: scan.range_search(w[:1], w[:1000], 5, 64)),
        ("scan radius, 64 queries", lambda: scan.range_search(w[:64], w, 5, 64)),
        ("scan top-k, masked", lambda: scan.topk(w[:64], w, 5, 64, mask)),
        ("scan radius, masked", lambda: scan.range_search(w[:64], w, 5, 64, mask)),
        ("MIH build", lambda: MultiIndexHash(words, 64)),
        ("MIH top-k", lambda: MultiIndexHash(words, 64).search(words[:4], 5)),
        ("MIH radius", lambda: MultiIndexHash(words, 64).range_search(words[:4], 3)),
        ("MIH top-k, masked", lambda: MultiIndexHash(words, 64).search(words[:4], 5, mask)),
        ("live index: 3 segments", lambda: live.setdefault("index", live_index(codes))),
        ("index top-k, 3 segments", lambda: live["index"].search(codes[:4], 5)),
        ("index radius, 3 segments", lambda: live["index"].range_search(codes[:4], 3)),
    ]
    for label, step in steps:
        t0 = time.perf_counter()
        step()
        print(f"{label:28s} {time.perf_counter() - t0:6.2f} s", flush=True)
    print(f"{'total':28s} {time.perf_counter() - START:6.2f} s")


if __name__ == "__main__":
    main()
