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

PAD_DISTANCE = int(np.iinfo(np.int32).max)  # what FAISS returns past the last result


def empty_topk(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(nq, k) rows holding only padding."""
    return np.full((nq, k), PAD_DISTANCE, np.int32), np.full((nq, k), -1, np.int64)


def empty_range(nq: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR range results with no hit for any of nq queries."""
    return np.zeros(nq + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-k of the union of `parts`, each a (distances (nq, k_i), ids (nq, k_i)) pair of
    rows sorted by (distance, id); rows come back sorted by (distance, id), padded to k."""
    parts = [p for p in parts if p[0].shape[1]]
    if not parts:
        raise ValueError("merge_topk needs at least one part with columns")
    nq = parts[0][0].shape[0]
    if len(parts) == 1 and parts[0][0].shape[1] == k:
        return parts[0]
    dist = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    # padding (PAD_DISTANCE, -1) must sort after every real item: give it the largest id too
    key_ids = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    rows = np.repeat(np.arange(nq), dist.shape[1]).reshape(dist.shape)
    order = np.lexsort((key_ids.ravel(), dist.ravel(), rows.ravel())).reshape(dist.shape)
    order = order[:, :k] - (np.arange(nq) * dist.shape[1])[:, None]
    out_d, out_i = empty_topk(nq, k)
    width = min(k, dist.shape[1])
    out_d[:, :width] = np.take_along_axis(dist, order[:, :width], axis=1)
    out_i[:, :width] = np.take_along_axis(ids, order[:, :width], axis=1)
    return out_d, out_i


def merge_range(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The union of CSR range results (lims (nq+1,), distances, ids) over disjoint items, each query's
    hits sorted by (distance, id)."""
    if not parts:
        raise ValueError("merge_range needs at least one part")
    if len(parts) == 1:
        return parts[0]
    nq = parts[0][0].shape[0] - 1
    counts = sum(np.diff(p[0]) for p in parts)
    lims = np.zeros(nq + 1, np.int64)
    np.cumsum(counts, out=lims[1:])
    rows = np.concatenate([np.repeat(np.arange(nq), np.diff(p[0])) for p in parts])
    dist = np.concatenate([p[1] for p in parts]).astype(np.int32, copy=False)
    ids = np.concatenate([p[2] for p in parts]).astype(np.int64, copy=False)
    order = np.lexsort((ids, dist, rows))
    return lims, dist[order], ids[order]
