"""Exact merges of partial search results, ordered by (distance, id): the one piece that segments,
shards and devices share.

Each part is what one exact searcher returns over its own items: top-k rows sorted by (distance, id)
and padded with (PAD_DISTANCE, -1), or CSR range results. Because every part is exact over a
disjoint set of items, the k smallest (distance, id) pairs of their union are the exact top-k of
the whole, and the union of the range results is the exact range result.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

from hashsearch.kernels.scan import read_only

PAD_DISTANCE = int(np.iinfo(np.int32).max)  # what FAISS returns past the last result


def empty_topk(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(nq, k) rows holding only padding."""
    return np.full((nq, k), PAD_DISTANCE, np.int32), np.full((nq, k), -1, np.int64)


def empty_range(nq: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR range results with no hit for any of nq queries."""
    return np.zeros(nq + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)


@njit(cache=True, nogil=True)
def _kway(starts, ends, dist, ids, out_d, out_i, out_at, limit):
    """For each query qi, merge the runs [starts[p, qi], ends[p, qi]) of (dist, ids), each sorted by
    (distance, id), into out_*[out_at[qi]:], at most limit[qi] items: a k-way merge (few parts)."""
    nparts, nq = starts.shape
    heads = np.empty(nparts, np.int64)
    for qi in range(nq):
        heads[:] = starts[:, qi]
        o, stop = out_at[qi], out_at[qi] + limit[qi]
        while o < stop:
            best, bd, bi = -1, 0, 0
            for p in range(nparts):
                h = heads[p]
                if h < ends[p, qi] and (best < 0 or dist[h] < bd or (dist[h] == bd and ids[h] < bi)):
                    best, bd, bi = p, dist[h], ids[h]
            if best < 0:
                break
            out_d[o], out_i[o] = bd, bi
            heads[best] += 1
            o += 1


def _offsets(sizes: list[int]) -> np.ndarray:
    """(parts, 1) start of each part in the concatenation of parts of these sizes."""
    return np.cumsum([0] + sizes[:-1]).astype(np.int64)[:, None]


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-k of the union of `parts`, each a (distances (nq, k_i), ids (nq, k_i)) pair of
    rows sorted by (distance, id); rows come back sorted by (distance, id), padded to k."""
    parts = [p for p in parts if p[0].shape[1]]
    if not parts:
        raise ValueError("merge_topk needs at least one part with columns")
    nq = parts[0][0].shape[0]
    if len(parts) == 1 and parts[0][0].shape[1] == k:
        return parts[0]
    widths = [p[0].shape[1] for p in parts]
    rows = np.arange(nq, dtype=np.int64)
    starts = _offsets([nq * w for w in widths]) + np.array(widths, np.int64)[:, None] * rows
    ends = starts + np.stack([np.count_nonzero(p[1] >= 0, axis=1) for p in parts])  # padding comes last
    out_d, out_i = empty_topk(nq, k)
    _kway(starts, ends, np.concatenate([p[0].ravel() for p in parts]).astype(np.int32, copy=False),
          np.concatenate([p[1].ravel() for p in parts]).astype(np.int64, copy=False),
          out_d.reshape(-1), out_i.reshape(-1), rows * k, np.full(nq, k, np.int64))
    return out_d, out_i


@njit(cache=True, nogil=True)
def _merge_rows_csr(bd, bi, lims, dist, ids, k):
    """Row q of the result: the first k of top-k row q of (bd, bi) (padding ends it) merged with CSR
    row q of (lims, dist, ids), by (distance, id), padded."""
    nq, width = bd.shape
    out_d = np.full((nq, k), PAD_DISTANCE, np.int32)
    out_i = np.full((nq, k), -1, np.int64)
    for q in range(nq):
        a, b, end = 0, lims[q], lims[q + 1]
        for o in range(k):
            take_a = a < width and bi[q, a] >= 0
            if b < end and (not take_a or dist[b] < bd[q, a] or (dist[b] == bd[q, a] and ids[b] < bi[q, a])):
                out_d[q, o], out_i[q, o] = dist[b], ids[b]
                b += 1
            elif take_a:
                out_d[q, o], out_i[q, o] = bd[q, a], bi[q, a]
                a += 1
            else:
                break
    return out_d, out_i


@njit(cache=True, nogil=True)
def _merge_two_csr(l1, d1, i1, l2, d2, i2):
    """Two CSR range results over disjoint items merged row by row, by (distance, id)."""
    nq = l1.shape[0] - 1
    lims = np.zeros(nq + 1, np.int64)
    for q in range(nq):
        lims[q + 1] = lims[q] + (l1[q + 1] - l1[q]) + (l2[q + 1] - l2[q])
    out_d = np.empty(lims[nq], np.int32)
    out_i = np.empty(lims[nq], np.int64)
    for q in range(nq):
        a, b = l1[q], l2[q]
        for o in range(lims[q], lims[q + 1]):
            if b >= l2[q + 1] or (a < l1[q + 1] and (d1[a] < d2[b] or (d1[a] == d2[b] and i1[a] < i2[b]))):
                out_d[o], out_i[o] = d1[a], i1[a]
                a += 1
            else:
                out_d[o], out_i[o] = d2[b], i2[b]
                b += 1
    return lims, out_d, out_i


def _csr(part: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A CSR part in the kernels' dtypes (no copy when it already is), read-only: parts come writable or
    not, and numba would compile the merges once for each."""
    lims, dist, ids = part
    return read_only(lims, np.int64), read_only(dist, np.int32), read_only(ids, np.int64)


def merge_topk_ranges(best: tuple[np.ndarray, np.ndarray], ranges: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                      k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-k of the union of top-k rows `best` ((nq, k_b), sorted, padded) and CSR range
    results over disjoint items (each query's rows sorted by (distance, id)): one merge kernel call
    per range part, with no array set-up (the index's top-k over segments runs this on every query)."""
    for part in ranges:
        if part[1].size:
            best = _merge_rows_csr(best[0], best[1], *_csr(part), k)
    return best if best[0].shape[1] == k else merge_topk([best], k)


def merge_range(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The union of CSR range results (lims (nq+1,), distances, ids) over disjoint items, each query's
    hits sorted by (distance, id)."""
    if not parts:
        raise ValueError("merge_range needs at least one part")
    hits = [p for p in parts if p[1].size]
    if len(hits) <= 1:
        return hits[0] if hits else parts[0]
    if len(hits) == 2:  # the common case of a live index (a large segment and a small one): no set-up
        return _merge_two_csr(*_csr(hits[0]), *_csr(hits[1]))
    lims_all = np.stack([p[0] for p in hits]).astype(np.int64, copy=False)
    counts = (lims_all[:, 1:] - lims_all[:, :-1]).sum(axis=0)
    lims = np.zeros(lims_all.shape[1], np.int64)
    np.cumsum(counts, out=lims[1:])
    offsets = _offsets([p[1].size for p in hits])
    dist, ids = np.empty(lims[-1], np.int32), np.empty(lims[-1], np.int64)
    _kway(lims_all[:, :-1] + offsets, lims_all[:, 1:] + offsets,
          np.concatenate([p[1] for p in hits]).astype(np.int32, copy=False),
          np.concatenate([p[2] for p in hits]).astype(np.int64, copy=False), dist, ids, lims[:-1], counts)
    return lims, dist, ids
