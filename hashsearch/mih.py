"""Multi-index hashing: a sub-linear, exact radius and k-NN search structure over binary codes.

The codes are split into m disjoint substrings; table i holds the rows sorted by substring i
(sorted keys, row positions and the codes in that order: flat arrays, no per-bucket objects; for
substrings of at most DIRECT_BITS bits also every bucket's start, found without a binary search).
Radius search probes the buckets near each query substring and verifies the candidates (see
`hashsearch.kernels.mih`).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from hashsearch.errors import InvalidInputError
from hashsearch.kernels import mih as kernels
from hashsearch.kernels.scan import kernel_mask, map_threads, query_radii, read_only, thread_runs

MAX_SUBSTRING_BITS = 64
DIRECT_BITS = 16  # tables of substrings this short also keep each bucket's start (2**16 + 1 offsets at most)
SMALL_TABLE_ROWS = 1 << 17  # tables this small answer a batch on the calling thread: waking the pool costs more
SMALL_SEGMENT_ROWS = 1 << 18  # segments below this get substrings of SMALL_SUBSTRING_BITS (see small_segment_tables)
SMALL_SUBSTRING_BITS = 11
SMALL_PROBE_COST = 256.0  # a probe of a small segment's tables (keys in cache) costs about a 256-row scan


def default_substrings(nbits: int, n: int) -> int:
    """m ~ nbits / log2(n) (Norouzi et al.), at least 1 and with substrings of at most 64 bits."""
    m = max(1, round(nbits / math.log2(max(n, 2))))
    return max(m, -(-nbits // MAX_SUBSTRING_BITS))


def small_segment_tables(nbits: int, rows: int) -> tuple[int, float] | None:
    """(m, probe cost) of the tables of a small segment of a live index (None for one of
    SMALL_SEGMENT_ROWS rows or more): short substrings (~11 bits) and a cheaper probe (its keys stay in
    cache). Small segments are searched mostly within each query's running k-th distance (radius 4-9
    on learned codes, see `Snapshot.search`), where short substrings probe a few buckets instead of
    dozens, and verifying their larger buckets is cheap at this size."""
    if rows >= SMALL_SEGMENT_ROWS:
        return None
    m = max(default_substrings(nbits, rows), -(-nbits // SMALL_SUBSTRING_BITS))
    return min(m, nbits), SMALL_PROBE_COST


def _query_chunks(nq: int, n: int) -> list[tuple[int, int]]:
    """Split nq queries into one contiguous chunk a thread (fewer when there are fewer queries; one
    over small tables)."""
    if nq <= 1 or n < SMALL_TABLE_ROWS:
        return [(0, nq)]
    return thread_runs(nq)


def _run_chunks(fn, nq: int, n: int) -> list:
    """fn(q0, q1) over the query chunks of `_query_chunks` (on the calling thread when one)."""
    chunks = _query_chunks(nq, n)
    return [fn(*chunks[0])] if len(chunks) == 1 else map_threads(lambda c: fn(*c), chunks)


def _join(parts: list, nq: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR results of consecutive query chunks as one."""
    if len(parts) == 1:
        return parts[0]
    lims = np.zeros(nq + 1, np.int64)
    np.cumsum(np.concatenate([np.diff(p[0]) for p in parts]), out=lims[1:])
    return lims, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def scan_tables(words: np.ndarray) -> tuple:
    """A segment without tables for `range_segments` (its rows are scanned): uint64 `words`, m = 0."""
    nw = words.shape[1]
    return (words, read_only(np.empty((0, 0, nw), np.uint64)), np.empty((0, 0), np.uint64), np.empty((0, 0), np.uint32),
            np.empty((0, 0), np.uint32), np.empty(0, np.int64), np.empty(0, np.int64), 0.0)


def range_segments(q: np.ndarray, radius: int | np.ndarray, segments: Any, nbits: int,
                   largest: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Radius search of uint64 query words over the segments of `segments` (a typed list made by
    `hashsearch.segments`) in one kernel call per query chunk: CSR (lims, distances, ids), rows
    sorted by (distance, id). `largest`: rows of the largest segment (it decides the chunks)."""
    rq = query_radii(radius, q.shape[0])
    maxd = 64 * q.shape[1]
    parts = _run_chunks(lambda a, b: kernels.range_segments(q, a, b, segments, rq, maxd), q.shape[0], largest)
    return _join(parts, q.shape[0])


class MultiIndexHash:
    """Multi-index hash tables over uint64-word codes (rows of `words`), answering by row position."""

    def __init__(self, words: np.ndarray, nbits: int, m: int | None = None,
                 probe_cost: float = kernels.PROBE_COST):
        """Build the tables; `m` substrings (default from n and nbits); `probe_cost`: rows of linear
        scan one bucket probe is worth, deciding when a query is scanned instead (0: always probe)."""
        n = words.shape[0]
        m = default_substrings(nbits, n) if m is None else int(m)
        if not (1 <= m <= nbits) or -(-nbits // m) > MAX_SUBSTRING_BITS:
            raise InvalidInputError(
                f"number of substrings m={m} must lie in [{-(-nbits // MAX_SUBSTRING_BITS)}, {nbits}] "
                f"for {nbits}-bit codes (substrings of at most {MAX_SUBSTRING_BITS} bits)"
            )
        self.words, self.nbits, self.m, self.probe_cost = words, nbits, m, float(probe_cost)
        bounds = np.linspace(0, nbits, m + 1).astype(np.int64)
        self.lo, self.ln = bounds[:-1].copy(), np.diff(bounds)
        keys = np.empty((m, n), np.uint64)
        self._run(lambda a, b: kernels.substring_keys(words, self.lo, self.ln, a, b, keys), n)
        # positions fit in uint32 below 2**32 rows: half the memory of int64 for large indexes
        pdtype = np.uint32 if n < 2**32 else np.int64
        self.perm = np.empty((m, n), pdtype)
        self.scodes = np.empty((m,) + words.shape, np.uint64)
        for i in range(m):
            self.perm[i] = np.argsort(keys[i], kind="stable")
            keys[i] = keys[i][self.perm[i]]
            np.take(words, self.perm[i], axis=0, out=self.scodes[i])
        self.skeys = keys
        self.scodes = read_only(self.scodes)  # the type the scan kernels also read: compiled once
        self.starts = np.empty((0, 0), pdtype)
        if self.ln.max() <= DIRECT_BITS:  # bucket j of table i is rows starts[i, j]:starts[i, j + 1]
            buckets = np.arange((1 << int(self.ln.max())) + 1, dtype=np.uint64)
            self.starts = np.stack([np.searchsorted(k, buckets) for k in keys]).astype(pdtype)

    @property
    def nbytes(self) -> int:
        """Memory of the tables (not counting the codes themselves)."""
        return self.skeys.nbytes + self.perm.nbytes + self.scodes.nbytes + self.starts.nbytes

    def _run(self, fn, nq: int):
        return _run_chunks(fn, nq, self.words.shape[0])

    def tables(self) -> tuple | None:
        """(words, scodes, skeys, perm, starts, lo, ln, probe_cost): the tables as `range_segments` takes
        them (None when positions are int64, past 2**32 rows: the segments share one array type)."""
        if self.perm.dtype != np.uint32:
            return None
        return self.words, self.scodes, self.skeys, self.perm, self.starts, self.lo, self.ln, self.probe_cost

    def range_search(self, q: np.ndarray, radius: int | np.ndarray,
                     mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows within `radius` (inclusive; one for all queries or an (nq,) array, one each) of each
        query word row, among those whose bit is set in the packed bitmap `mask` (all when None): CSR
        (lims, distances, positions) sorted by (distance, position) within each query."""
        rq, mask = query_radii(radius, q.shape[0]), kernel_mask(mask)
        parts = self._run(
            lambda a, b: kernels.range_chunk(q, a, b, self.words, self.scodes, self.skeys, self.perm, self.starts,
                                             self.lo, self.ln, rq, self.probe_cost, mask),
            q.shape[0],
        )
        return _join(parts, q.shape[0])

    def search(self, q: np.ndarray, k: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among the rows whose `mask` bit is set (all when None) by growing the radius: (nq, k)
        int32 distances and int64 positions, padded with (PAD_DISTANCE, -1)."""
        nq, mask = q.shape[0], kernel_mask(mask)
        out_d = np.empty((nq, 1, k), np.int32)
        out_j = np.empty((nq, 1, k), np.int64)
        self._run(
            lambda a, b: kernels.knn_chunk(q, a, b, self.words, self.scodes, self.skeys, self.perm, self.starts,
                                           self.lo, self.ln, k, self.nbits, self.probe_cost, mask, out_d, out_j),
            nq,
        )
        return out_d[:, 0], out_j[:, 0]
