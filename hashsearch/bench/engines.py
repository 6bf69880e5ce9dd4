"""The search engines the benchmark compares, behind one small interface: ours (HammingIndex with
the numba scan or multi-index hashing) and raw FAISS (IndexBinaryFlat, IndexBinaryMultiHash with
`nflip` set so that radius search is exact).

Every engine answers `knn(q, k) -> (D, I)` and `lookup(q, r) -> (lims, D, I)` with an INCLUSIVE
radius (distance <= r), int32 distances / int64 ids and each query's rows sorted by (distance, id),
so results compare cell for cell.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from hashsearch.backends import FaissBackend
from hashsearch.errors import InvalidInputError
from hashsearch.mih import default_substrings

OURS, MIH, FAISS_FLAT, FAISS_MULTIHASH = "ours", "mih", "faiss-flat", "faiss-multihash"
ENGINES = (OURS, FAISS_FLAT, FAISS_MULTIHASH, MIH)
# FAISS's multi-hash k-NN only sees candidates within `nflip` flips of a key: not exact, so it is
# timed for hash lookup only.
KNN_ENGINES = (OURS, FAISS_FLAT, MIH)
# Codes in a throw-away engine built before one is timed or measured, so that loading libraries and
# compiled kernels counts neither as build time nor as index memory.
WARM_N = 256


class Engine(Protocol):
    name: str

    def knn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def lookup(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


class HammingEngine:
    """Our `HammingIndex` with backend "numba" (linear scan) or "mih".

    HammingIndex builds its search structure (MIH's tables) on the first query, so the constructor
    asks one exact-match lookup: build time and memory then include the tables.
    """

    def __init__(self, name: str, codes: np.ndarray, nbits: int):
        from hashsearch.index import HammingIndex

        self.name = name
        self.index = HammingIndex(nbits, backend="numba" if name == OURS else "mih")
        self.index.add(codes)
        if len(codes):
            self.index.range_search(codes[:1], 0)

    def knn(self, queries, k):
        return self.index.search(queries, k)

    def lookup(self, queries, radius):
        return self.index.range_search(queries, radius)


class FaissEngine:
    """Raw FAISS through our "faiss" backend (the one FAISS wrapper): the flat index, or the
    multi-hash tables (as many as our MIH has substrings) used for every lookup."""

    def __init__(self, name: str, codes: np.ndarray, nbits: int):
        self.name = name
        if name == FAISS_FLAT:
            self.backend = FaissBackend(codes, nbits)
            self.index = self.backend.flat
        else:
            self.backend = FaissBackend(codes, nbits, nhash=default_substrings(nbits, len(codes)))
            self.index = self.backend.multihash()

    def knn(self, queries, k):
        if self.name != FAISS_FLAT:
            raise InvalidInputError(f"{self.name} k-NN is not exact; time it with lookup only")
        return self.backend.search(queries, k)

    def lookup(self, queries, radius):
        return self.backend.range_search(queries, radius, use_multihash=self.name == FAISS_MULTIHASH)


def build_engine(name: str, codes: np.ndarray, nbits: int) -> Engine:
    """An engine holding `codes` under ids 0..n-1."""
    if name in (OURS, MIH):
        return HammingEngine(name, codes, nbits)
    if name in (FAISS_FLAT, FAISS_MULTIHASH):
        return FaissEngine(name, codes, nbits)
    raise InvalidInputError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")
