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


def merge_range(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The union of CSR range results (lims (nq+1,), distances, ids) over disjoint items, each query's
    hits sorted by (distance, id)."""
    if not parts:
        raise ValueError("merge_range needs at least one part")
    hits = [p for p in parts if p[1].size]
    if len(hits) <= 1:
        return hits[0] if hits else parts[0]
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
