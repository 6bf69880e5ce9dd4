"""The machine's physical limits for a Hamming scan, timed by pytest-benchmark: memory read
bandwidth over a 1 GiB buffer and the popcount rate on an L2-resident buffer.

    pytest benchmarks/bench_physical.py --benchmark-only
"""
from __future__ import annotations

import numpy as np

from hashsearch.bench.physical import popcount_sum

SWEEPS = 64


def bench_read_bandwidth(benchmark) -> None:
    words = np.ones((1 << 30) // 8, dtype=np.uint64)
    benchmark.pedantic(np.bitwise_or.reduce, args=(words,), rounds=10, warmup_rounds=1)
    benchmark.extra_info["GB_per_s"] = words.nbytes / benchmark.stats.stats.median / 1e9


def bench_popcount_rate(benchmark) -> None:
    words = np.random.default_rng(0).integers(0, 2**63, size=(256 << 10) // 8, dtype=np.uint64)
    benchmark.pedantic(popcount_sum, args=(words, SWEEPS), rounds=20, warmup_rounds=1)
    benchmark.extra_info["popcount64_per_s"] = words.size * SWEEPS / benchmark.stats.stats.median
