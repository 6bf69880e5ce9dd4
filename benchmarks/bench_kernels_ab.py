"""Old vs new search kernels side by side, in ONE process and cell by cell, so that both see the same
machine load: scan top-k and radius search over 16/32/64/128-bit codes, masked and not, 10^6 and 10^7
rows, 1 and 2 threads, 1 and 8 queries; MIH top-k and radius (10^6 x 64 bits, 100 queries) and its
build; the fused radius search of a live index's segments (`range_segments`: the MIH table, half its
rows tombstoned, plus a 10^4-row scanned segment). Masks are packed bitmaps (`check_mask`). The old
tree's kernels/scan.py, kernels/mih.py and hashsearch/mih.py are loaded under other module names (their
numba cache in $NUMBA_CACHE_DIR, default /tmp/hashsearch-ab-cache). Each cell
alternates old and new --alternations times (a median of --repeats calls each, order flipped every
time); its ratio is the median of the paired new / old ratios.

    git archive <old commit> | tar -x -C /tmp/old
    flock /work/bench.lock python benchmarks/bench_kernels_ab.py --old /tmp/old --out result.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import time

os.environ.setdefault("NUMBA_CACHE_DIR", "/tmp/hashsearch-ab-cache")

import numba  # noqa: E402
import numpy as np  # noqa: E402

from hashsearch import mih as new_mih  # noqa: E402
from hashsearch.backends import check_mask  # noqa: E402
from hashsearch.kernels import scan as new_scan  # noqa: E402
from hashsearch.kernels.scan import read_only  # noqa: E402
from hashsearch.kernels.popcount import as_words, scan_words  # noqa: E402
from numba import typed, typeof  # noqa: E402

WIDTHS = (16, 32, 64, 128)
SIZES = (10**6, 10**7)
MIH_N, MIH_NQ = 10**6, 100  # MIH: database size, queries
# the old modules, loaded under these names; each later one imports the earlier ones by their real name
OLD_MODULES = (("hashsearch.kernels.scan", "kernels/scan.py"), ("hashsearch.kernels.mih", "kernels/mih.py"),
               ("hashsearch.mih", "hashsearch/mih.py"))


def load_old(root: str) -> dict:
    """The old tree's modules, as {real name: module}, without replacing the new ones."""
    saved = {name: sys.modules[name] for name, _ in OLD_MODULES}
    old = {}
    try:
        for name, rel in OLD_MODULES:
            alias = "old_" + name.replace(".", "_")
            spec = importlib.util.spec_from_file_location(alias, os.path.join(root, rel))
            module = importlib.util.module_from_spec(spec)
            parent, _, leaf = name.rpartition(".")
            sys.modules[alias] = sys.modules[name] = module  # later old modules import this one,
            setattr(sys.modules[parent], leaf, module)  # also as `from parent import leaf`
            spec.loader.exec_module(module)
            old[name] = module
    finally:
        for name, module in saved.items():
            sys.modules[name] = module
            parent, _, leaf = name.rpartition(".")
            setattr(sys.modules[parent], leaf, module)
    return old


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def compare(old_fn, new_fn, alternations: int, repeats: int) -> dict:
    """Median seconds of each side (best alternation) and the median paired ratio new / old."""
    old_fn(), new_fn()  # compiled (or loaded from the cache) and warm
    olds, news = [], []
    for a in range(alternations):
        if a % 2:
            news.append(median_time(new_fn, repeats))
            olds.append(median_time(old_fn, repeats))
        else:
            olds.append(median_time(old_fn, repeats))
            news.append(median_time(new_fn, repeats))
    ratios = sorted(n / o for o, n in zip(olds, news))
    return {"old_s": min(olds), "new_s": min(news), "ratio": ratios[len(ratios) // 2]}


def fused(mih_module, table, mask: np.ndarray, small: np.ndarray):
    """The typed list `range_segments` takes: MultiIndexHash `table` with the bitmap `mask`, and the uint64
    words `small` scanned (every row allowed), its ids after the table's."""
    range_ids, all_rows = read_only(np.zeros(0, np.int64)), read_only(np.zeros(0, np.uint8))
    items = [table.tables()[:-1] + (table.probe_cost, mask, range_ids, 0),
             mih_module.scan_tables(small)[:-1] + (0.0, all_rows, range_ids, table.words.shape[0])]
    out = typed.List.empty_list(typeof(items[0]))
    for item in items:
        out.append(item)
    return out


def run(old: dict, widths, sizes, mih_n: int, alternations: int, match: str = "") -> dict:
    old_scan, old_mih = old["hashsearch.kernels.scan"], old["hashsearch.mih"]
    cells = {}

    def cell(name, old_fn, new_fn, repeats):
        if not re.search(match, name):
            return
        cells[name] = c = compare(old_fn, new_fn, alternations, repeats)
        print(f"{name:48s} old {c['old_s'] * 1e3:9.3f} ms  new {c['new_s'] * 1e3:9.3f} ms  "
              f"new/old {c['ratio']:5.3f}", flush=True)

    rng = np.random.default_rng(0)
    for nbits in widths:
        for n in sizes:
            w = scan_words(rng.integers(0, 256, (n, nbits // 8), dtype=np.uint8))
            q = scan_words(rng.integers(0, 256, (8, nbits // 8), dtype=np.uint8))
            mask = check_mask(rng.random(n) < 0.5, n)
            radius = int(nbits / 2 - 2.2 * (nbits / 4) ** 0.5)  # ~1.4% of the rows
            repeats = 3 if n >= 10**7 else 5
            for threads in (1, 2):
                numba.set_num_threads(threads)
                for nq in (1, 8):
                    for m in (None, mask):
                        tag = f"{nbits}b n={n:.0e} t={threads} nq={nq} {'all' if m is None else 'mask'}"
                        cell(f"topk10 {tag}", lambda: old_scan.topk(q[:nq], w, 10, nbits, m),
                             lambda: new_scan.topk(q[:nq], w, 10, nbits, m), repeats)
                        cell(f"range r={radius} {tag}", lambda: old_scan.range_search(q[:nq], w, radius, nbits, m),
                             lambda: new_scan.range_search(q[:nq], w, radius, nbits, m), repeats)
            del w, mask
    codes = rng.integers(0, 256, (mih_n, 8), dtype=np.uint8)
    words = as_words(codes)
    q = as_words(codes[rng.integers(0, mih_n, MIH_NQ)] ^ rng.integers(0, 2, (MIH_NQ, 8), dtype=np.uint8))
    mask = check_mask(rng.random(mih_n) < 0.5, mih_n)
    for threads in (1, 2):
        numba.set_num_threads(threads)
        cell(f"mih build 64b n={mih_n:.0e} t={threads}", lambda: old_mih.MultiIndexHash(words, 64),
             lambda: new_mih.MultiIndexHash(words, 64), 3)
        mo, mn = old_mih.MultiIndexHash(words, 64), new_mih.MultiIndexHash(words, 64)
        for m in (None, mask):
            tag = f"64b n={mih_n:.0e} t={threads} nq={MIH_NQ} {'all' if m is None else 'mask'}"
            cell(f"mih topk10 {tag}", lambda: mo.search(q, 10, m), lambda: mn.search(q, 10, m), 5)
            cell(f"mih range r=3 {tag}", lambda: mo.range_search(q, 3, m), lambda: mn.range_search(q, 3, m), 5)
        small = words[:10**4]
        so, sn = fused(old_mih, mo, mask, small), fused(new_mih, mn, mask, small)
        tag = f"64b n={mih_n:.0e}+1e4 t={threads} nq={MIH_NQ} mask"
        cell(f"fused segments r=3 {tag}", lambda: old_mih.range_segments(q, 3, so, 64, mih_n),
             lambda: new_mih.range_segments(q, 3, sn, 64, mih_n), 5)
    return cells


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="root of the old source tree")
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="code lengths in bits")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="scan database sizes")
    ap.add_argument("--mih-n", type=int, default=MIH_N, help="MIH database size")
    ap.add_argument("--alternations", type=int, default=5)
    ap.add_argument("--match", default="", help="time only the cells whose name matches this regex (rechecks)")
    ap.add_argument("--out", help="JSON file for every cell's times and ratio")
    args = ap.parse_args()
    load = [os.getloadavg()[0]]
    cells = run(load_old(os.path.abspath(args.old)), [int(b) for b in args.widths.split(",")],
                [int(float(n)) for n in args.sizes.split(",")], args.mih_n, args.alternations, args.match)
    load.append(os.getloadavg()[0])
    ratios = sorted(c["ratio"] for c in cells.values())
    summary = {"cells": len(ratios), "median_ratio": ratios[len(ratios) // 2], "max_ratio": ratios[-1],
               "over_1.03": sum(r > 1.03 for r in ratios), "load_1min": load}
    print(json.dumps(summary))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"summary": summary, "cells": cells}, f, indent=1)


if __name__ == "__main__":
    main()
