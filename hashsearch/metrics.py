"""Retrieval quality of binary codes under Hamming ranking and hash lookup.

Relevance: a database item is relevant to a query when their label rows share at least one label.
The ranking is always the project's own `HammingIndex` (numba backend, database ids = row numbers
0..n-1), streamed in batches of queries so that no (nq, n) float64 matrix is ever built.

Ties: items at equal Hamming distance are ranked by ascending database row (`HammingIndex` sorts by
(distance, id)), i.e. a stable sort of the distances, as DCMH's evaluation code does. AP depends on
this order when relevant and irrelevant items tie; fixing it makes every figure reproducible.

Definitions (q = one query, rel_i = 1 if the i-th ranked item is relevant, P@i = precision of the
first i):
- AP@all = sum_i P@i rel_i / (number of relevant items in the database); a query with no relevant
  item has AP 0 (it still counts in the mean).
- AP@k (ours) = sum_{i<=k} P@i rel_i / (number of relevant items in the top k); 0 when the top k holds
  none. (Two other definitions circulate: dividing by min(k, relevant in database), or by k.)
  k at least the database size is the whole ranking, i.e. AP@all.
- precision within radius r and the radius PR curve are micro-averaged: relevant pairs retrieved /
  pairs retrieved, pooled over all queries (a query retrieving nothing adds nothing). When no pair at
  all is retrieved the precision is 0.0; recall is relevant pairs retrieved / all relevant pairs
  (0.0 when there are none).
- top-K precision = mean over queries of (relevant in the top K) / K, for K up to the database size.
- hash lookup statistics (`lookup_statistics`) are per query, macro-averaged: the fraction of queries
  with at least one database item within radius r; P@r = mean over the queries WITH a hit of their
  precision within r (queries without a hit are left out, and counted by the hit fraction instead);
  recall@r = mean over queries with at least one relevant database item of the share of those items
  found within r. Code statistics (`code_statistics`) describe one set of codes: distinct codes, the
  mean of each bit (0.5 = balanced), the bits that never change, and the largest |Pearson correlation|
  between two non-constant bits.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from hashsearch.codes import unpack_bits, validate_codes
from hashsearch.errors import InvalidInputError

BATCH_ELEMENTS = 1 << 20  # query x database entries handled at once (~60 bytes each: ~65 MB of working arrays)


def _check_labels(labels: np.ndarray, n: int, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InvalidInputError(f"{name} must be a 2-D (n, classes) multi-hot matrix, got shape {labels.shape}")
    if labels.shape[0] != n:
        raise InvalidInputError(f"{name} have {labels.shape[0]} rows but there are {n} codes")
    if not (np.issubdtype(labels.dtype, np.number) or labels.dtype == np.bool_):
        raise InvalidInputError(f"{name} must be numeric, got dtype {labels.dtype}")
    if np.issubdtype(labels.dtype, np.floating) and np.isnan(labels).any():
        raise InvalidInputError(f"{name} contain NaN")
    return (labels > 0).astype(np.float32)


class _Ranking:
    """The checked inputs of one evaluation and the index that ranks the database for each query."""

    def __init__(self, query_codes, db_codes, query_labels, db_labels, nbits: int):
        from hashsearch.index import HammingIndex

        self.q = validate_codes(query_codes, nbits, name="query codes")
        db = validate_codes(db_codes, nbits, name="database codes")
        if len(db) == 0:
            raise InvalidInputError("the database holds no codes")
        self.ql = _check_labels(query_labels, len(self.q), "query labels")
        self.dbl = _check_labels(db_labels, len(db), "database labels")
        if self.ql.shape[1] != self.dbl.shape[1]:
            raise InvalidInputError(
                f"query labels have {self.ql.shape[1]} classes but database labels have {self.dbl.shape[1]}"
            )
        self.nbits, self.n = nbits, len(db)
        self.index = HammingIndex(nbits, backend="numba")
        self.index.add(db, ids=np.arange(self.n, dtype=np.int64))

    def batches(self) -> Iterator[slice]:
        step = max(1, BATCH_ELEMENTS // self.n)
        for start in range(0, len(self.q), step):
            yield slice(start, min(start + step, len(self.q)))

    def shared(self, rows: slice) -> np.ndarray:
        """(batch, n) bool: query shares a label with database item."""
        return (self.ql[rows] @ self.dbl.T) > 0

    def ranked(self, k: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Per batch of queries: distances (b, k) and relevance (b, k) of the top k in rank order."""
        for rows in self.batches():
            dist, ids = self.index.search(self.q[rows], k)
            yield dist, np.take_along_axis(self.shared(rows), ids, axis=1)


def _check_k(k: int, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {k!r}")
    return int(k)


def mean_average_precision(query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray,
                           db_labels: np.ndarray, nbits: int, k: int | None = None) -> float:
    """mAP over the whole Hamming ranking (k=None) or mAP@k (module docstring: AP@k divides by the
    relevant items retrieved in the top k)."""
    r = _Ranking(query_codes, db_codes, query_labels, db_labels, nbits)
    depth = r.n if k is None else min(_check_k(k), r.n)
    if len(r.q) == 0:
        return 0.0
    total = 0.0
    ranks = np.arange(1, depth + 1, dtype=np.float64)
    for _, rel in r.ranked(depth):
        hits = np.cumsum(rel, axis=1)
        found = hits[:, -1]
        precision_sum = (hits / ranks * rel).sum(axis=1)
        total += float(np.divide(precision_sum, found, out=np.zeros(len(found)), where=found > 0).sum())
    return total / len(r.q)


def _pooled_counts(r: _Ranking) -> tuple[np.ndarray, np.ndarray]:
    """Per Hamming distance 0..nbits: database items at exactly that distance, and the relevant ones,
    summed over all queries (from the full ranking)."""
    at = np.zeros(r.nbits + 1, np.int64)
    relevant_at = np.zeros(r.nbits + 1, np.int64)
    for dist, rel in r.ranked(r.n):
        at += np.bincount(dist.ravel(), minlength=r.nbits + 1)
        relevant_at += np.bincount(dist[rel], minlength=r.nbits + 1)
    return at, relevant_at


def pr_curve_by_radius(query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray,
                       db_labels: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """Hash-lookup precision and recall at every radius r = 0..nbits (items at distance <= r retrieved),
    micro-averaged over all query-database pairs: two float64 arrays of nbits + 1 values."""
    r = _Ranking(query_codes, db_codes, query_labels, db_labels, nbits)
    at, relevant_at = _pooled_counts(r)
    retrieved, hits = np.cumsum(at), np.cumsum(relevant_at)
    precision = np.divide(hits, retrieved, out=np.zeros(nbits + 1), where=retrieved > 0)
    recall = hits / hits[-1] if hits[-1] > 0 else np.zeros(nbits + 1)
    return precision, recall


def precision_within_radius(query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray,
                            db_labels: np.ndarray, nbits: int, radius: int = 2) -> float:
    """Micro-averaged precision of hash lookup (`HammingIndex.range_search`, distance <= radius);
    0.0 when no query retrieves anything."""
    r = _Ranking(query_codes, db_codes, query_labels, db_labels, nbits)
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise InvalidInputError(f"radius must be a non-negative integer, got {radius!r}")
    retrieved = hits = 0
    for rows in r.batches():
        lims, _, ids = r.index.range_search(r.q[rows], int(radius))
        owner = np.repeat(np.arange(len(lims) - 1), np.diff(lims))
        retrieved += len(ids)
        hits += int(r.shared(rows)[owner, ids].sum())
    return hits / retrieved if retrieved else 0.0


def topk_precision_curve(query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray,
                         db_labels: np.ndarray, nbits: int, ks: Sequence[int]) -> np.ndarray:
    """Mean precision of the top K of the Hamming ranking for each K in `ks` (each at most the database
    size): a float64 array in the order of `ks`."""
    r = _Ranking(query_codes, db_codes, query_labels, db_labels, nbits)
    ks = np.array([_check_k(k, "each K") for k in ks], dtype=np.int64)
    if ks.size == 0:
        raise InvalidInputError("ks is empty: give at least one K")
    if ks.max() > r.n:
        raise InvalidInputError(f"K = {ks.max()} exceeds the database size {r.n}")
    if len(r.q) == 0:
        return np.zeros(len(ks))
    sums = np.zeros(len(ks))
    for _, rel in r.ranked(int(ks.max())):
        hits = np.cumsum(rel, axis=1)
        sums += hits[:, ks - 1].sum(axis=0)
    return sums / (len(r.q) * ks)


def code_statistics(codes: np.ndarray, nbits: int) -> dict[str, object]:
    """How a set of packed codes uses the code space: `distinct` codes, `bit_means` (per bit, 0.5 is
    balanced), `constant_bits` (indices of bits with one value everywhere) and `max_abs_correlation`
    (largest |correlation| between two non-constant bits; 0.0 with fewer than two)."""
    bits = unpack_bits(validate_codes(codes, nbits, name="codes"), nbits).astype(np.float64)
    if len(bits) == 0:
        raise InvalidInputError("codes are empty: statistics need at least one code")
    means = bits.mean(axis=0)
    varying = np.flatnonzero(bits.std(axis=0) > 0)
    corr = 0.0
    if varying.size > 1:
        c = np.corrcoef(bits[:, varying], rowvar=False)
        corr = float(np.abs(c - np.eye(varying.size)).max())
    return {
        "distinct": int(len(np.unique(codes, axis=0))),
        "bit_means": means.tolist(),
        "constant_bits": np.flatnonzero(bits.std(axis=0) == 0).tolist(),
        "max_abs_correlation": corr,
    }


def lookup_statistics(query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray,
                      db_labels: np.ndarray, nbits: int, radius: int = 2) -> dict[str, float]:
    """Hash lookup within `radius` per query (module docstring): `hit_fraction`, `precision` (mean over
    queries with a hit), `recall` (mean over queries with a relevant item), `queries_with_hit`."""
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise InvalidInputError(f"radius must be a non-negative integer, got {radius!r}")
    r = _Ranking(query_codes, db_codes, query_labels, db_labels, nbits)
    nq = len(r.q)
    found, relevant_found, relevant = (np.zeros(nq, np.int64) for _ in range(3))
    for rows in r.batches():
        lims, _, ids = r.index.range_search(r.q[rows], int(radius))
        owner = np.repeat(np.arange(len(lims) - 1), np.diff(lims))
        shared = r.shared(rows)
        found[rows] = np.diff(lims)
        relevant_found[rows] = np.bincount(owner, weights=shared[owner, ids], minlength=len(lims) - 1).astype(np.int64)
        relevant[rows] = shared.sum(axis=1)
    hit, has_relevant = found > 0, relevant > 0
    precision = float(np.mean(relevant_found[hit] / found[hit])) if hit.any() else 0.0
    recall = float(np.mean(relevant_found[has_relevant] / relevant[has_relevant])) if has_relevant.any() else 0.0
    return {"radius": int(radius), "queries_with_hit": int(hit.sum()), "hit_fraction": float(hit.mean()) if nq else 0.0,
            "precision": precision, "recall": recall}
