"""Masked and unmasked scan and MIH kernels, optionally side by side with another version of the package.

    python benchmarks/bench_mask_kernels.py --n 1000000 --out benchmarks/results/mask_kernels
    python benchmarks/bench_mask_kernels.py --baseline /tmp/old   # /tmp/old/hashsearch_old: see live.md

Times top-10 and radius searches of 10 queries (1 thread) by the numba scan and MIH backends over n x
64-bit clustered codes, with no mask and with masks allowing 99 % and 50 % of the rows, interleaved
round by round with the same calls on the baseline package (bool masks there, packed bitmaps here;
each side gets its mask in the form its kernels test). Medians in ms; writes OUT.json.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np

from hashsearch import bitmaps
from hashsearch.backends import get_backend
from hashsearch.index import set_num_threads
from hashsearch.synthetic_codes import clustered_codes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_live import interleaved_ms, near  # noqa: E402

OPS = {"scan_top10": ("numba", "search", 10), "scan_r8": ("numba", "range_search", 8),
       "mih_top10": ("mih", "search", 10), "mih_r2": ("mih", "range_search", 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10**6)
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--baseline", help="directory holding a package `hashsearch_old` to compare with")
    parser.add_argument("--out", default="benchmarks/results/mask_kernels")
    args = parser.parse_args()
    set_num_threads(1)
    rng = np.random.default_rng(0)
    codes = clustered_codes(args.n, 64, seed=0)
    queries = near(codes, rng, 10)
    masks = {"none": None, "99%": rng.random(args.n) < 0.99, "50%": rng.random(args.n) < 0.5}
    versions = {"new": (get_backend, lambda m: None if m is None else bitmaps.pack(m))}
    if args.baseline:
        sys.path.insert(0, args.baseline)
        old = importlib.import_module("hashsearch_old.backends")
        importlib.import_module("hashsearch_old.index").set_num_threads(1)
        versions["old"] = (old.get_backend, lambda m: m)
    result = {"n": args.n, "nbits": 64, "nq": 10, "threads": 1, "rounds": args.rounds}
    for op, (backend, method, arg) in OPS.items():
        searchers = {v: get(backend)(codes, 64) for v, (get, _) in versions.items()}
        for mname, mask in masks.items():
            calls = {}
            for v, (_, convert) in versions.items():
                m = convert(mask)
                calls[v] = (lambda s=searchers[v], m=m: getattr(s, method)(queries, arg, m))
                calls[v]()
            if len(calls) > 1:  # same answers from both versions
                for a, b in zip(calls["new"](), calls["old"]()):
                    assert np.array_equal(a, b), (op, mname)
            ms = interleaved_ms(calls, args.rounds)
            result[f"{op}_{mname}"] = ms
            print(op, mname, {k: round(v, 4) for k, v in ms.items()},
                  f"new/old {ms['new'] / ms['old']:.3f}" if "old" in ms else "", flush=True)
    Path(args.out + ".json").write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}.json")


if __name__ == "__main__":
    main()
