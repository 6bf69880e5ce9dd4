"""pytest-benchmark drivers of hashsearch.bench: options shared by the bench_*.py files.

By default the latency grid stops at n = 10^5 (a few minutes); --hashsearch-full times 10^4 ... 10^7
and --hashsearch-huge adds 10^8.
"""
from __future__ import annotations

import numpy as np
import pytest

QUICK_SIZES = (10**4, 10**5)
FULL_SIZES = (10**4, 10**5, 10**6, 10**7)
HUGE = 10**8


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hashsearch-full", action="store_true", default=False,
                     help="time databases of 10^4 ... 10^7 codes (default: 10^4 and 10^5)")
    parser.addoption("--hashsearch-huge", action="store_true", default=False,
                     help="also time databases of 10^8 codes (needs ~1.6 GB per 128-bit database and long builds)")


def database_sizes(config: pytest.Config) -> tuple[int, ...]:
    """10^4 and 10^5; up to 10^7 with --hashsearch-full; plus 10^8 with --hashsearch-huge."""
    huge = config.getoption("--hashsearch-huge")
    sizes = FULL_SIZES if huge or config.getoption("--hashsearch-full") else QUICK_SIZES
    return sizes + ((HUGE,) if huge else ())


def record_percentiles(benchmark, queries_per_call: int) -> None:
    """Add p50/p99 latency and queries/s to the benchmark's extra_info (its own stats give the median)."""
    data = np.asarray(benchmark.stats.stats.data)
    benchmark.extra_info.update(p50_s=float(np.percentile(data, 50)), p99_s=float(np.percentile(data, 99)),
                                qps=queries_per_call / float(np.percentile(data, 50)))
