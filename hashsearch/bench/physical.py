"""The machine's physical limits for a Hamming scan: memory read bandwidth (numpy reductions over a
buffer far larger than the caches) and popcount rate (a numba kernel over a cache-resident buffer),
and what fraction of each our linear scan reaches."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from hashsearch.bench.timing import measure
from hashsearch.kernels.popcount import popcount64


def read_bandwidth(nbytes: int = 1 << 30, threads: int = 1, repeats: int = 5) -> float:
    """Bytes/s read by `np.bitwise_or.reduce` over a `nbytes` buffer split across `threads` threads.

    numpy releases the GIL inside reductions, so threads give the all-core figure.
    """
    words = np.ones(nbytes // 8, dtype=np.uint64)
    chunks = np.array_split(words, threads)
    if threads == 1:
        timing = measure(lambda: np.bitwise_or.reduce(words), repeats=repeats)
    else:
        with ThreadPoolExecutor(threads) as pool:
            timing = measure(lambda: list(pool.map(np.bitwise_or.reduce, chunks)), repeats=repeats)
    return words.nbytes / min(timing.p50_s, timing.mean_s)


@njit(cache=True)
def popcount_sum(words: np.ndarray, sweeps: int) -> int:
    """Total set bits of `words`, summed `sweeps` times (a popcount-bound loop, no memory stalls)."""
    total = 0
    for _ in range(sweeps):
        for i in range(words.size):
            total += popcount64(words[i])
    return total


def popcount_rate(nbytes: int = 256 << 10, repeats: int = 20) -> float:
    """64-bit popcounts per second on one core over a cache-resident (L2) buffer: the compute roof."""
    rng = np.random.default_rng(0)
    words = rng.integers(0, np.iinfo(np.uint64).max, size=nbytes // 8, dtype=np.uint64, endpoint=True)
    inner = 64  # sweep the buffer several times per call so that call overhead is negligible
    timing = measure(lambda: popcount_sum(words, inner), repeats=repeats)
    return words.size * inner / timing.p50_s


def machine_limits(nbytes: int = 1 << 30) -> dict:
    """Bandwidth over a `nbytes` buffer (one thread and all cores) and popcount rate, as a flat dict."""
    cores = os.cpu_count() or 1
    return {
        "cpu_count": cores,
        "read_bandwidth_1t_Bps": read_bandwidth(nbytes, threads=1),
        "read_bandwidth_all_Bps": read_bandwidth(nbytes, threads=cores),
        "popcount64_per_s_1t": popcount_rate(),
    }


def scan_fractions(limits: dict, scan_codes_per_s: float, nbits: int, threads: int) -> dict:
    """Fractions of read bandwidth and popcount rate that a scan of `scan_codes_per_s` reaches.

    A code of `nbits` is `nbits / 8` bytes and `ceil(nbits / 64)` 64-bit popcounts.
    """
    bw = limits["read_bandwidth_1t_Bps"] if threads == 1 else limits["read_bandwidth_all_Bps"]
    pc = limits["popcount64_per_s_1t"] * threads
    return {
        "scan_codes_per_s": scan_codes_per_s,
        "scan_bytes_per_s": scan_codes_per_s * nbits / 8,
        "fraction_of_bandwidth": scan_codes_per_s * nbits / 8 / bw,
        "fraction_of_popcount": scan_codes_per_s * -(-nbits // 64) / pc,
    }
