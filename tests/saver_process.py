"""A process that keeps changing and saving one index directory (run by test_storage and the live
benchmarks): each round adds a few codes, removes one, and saves; `--rounds 0` runs until killed."""
from __future__ import annotations

import argparse
import time

import numpy as np

from hashsearch.index import HammingIndex


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--every", type=float, default=0.05, help="seconds between saves")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    index = HammingIndex.load(args.path)
    done = 0
    while args.rounds == 0 or done < args.rounds:
        index.add(rng.integers(0, 256, (int(rng.integers(1, 20)), index.nbits // 8), dtype=np.uint8))
        ids = index.ids
        index.remove(ids[rng.integers(0, ids.size)])
        if done % 7 == 6:
            index.compact()
        index.save(args.path)
        done += 1
        print(done, flush=True)
        time.sleep(args.every)


if __name__ == "__main__":
    main()
