"""`HammingIndex`: exact Hamming-space search over packed binary codes with one API and three
backends that return identical results:

- "numba": our linear-scan kernels (`hashsearch.kernels.scan`), counting-select top-k;
- "faiss": FAISS `IndexBinaryFlat` (and `IndexBinaryMultiHash` for radius search when `nhash` > 0;
  `GpuIndexBinaryFlat` for top-k when FAISS sees a GPU);
- "mih": multi-index hashing (`hashsearch.mih`), sub-linear radius search, top-k by growing radius.

Conventions (the same as FAISS): distances int32, ids int64; `search` rows are sorted by
(distance, id), and when fewer than k items exist the row is padded with distance
`PAD_DISTANCE` (= 2**31 - 1, what FAISS returns) and id -1. `range_search` is INCLUSIVE
(distance <= radius) and returns CSR (lims, distances, ids), rows sorted by (distance, id).
Ids are non-negative int64; by default each added code gets the next id after the largest one.
Codes are kept in ascending id order, so ties by position are ties by id for every backend.
"""
from __future__ import annotations

import math
import os
from typing import Any

import faiss
import numba
import numpy as np
import pyarrow as pa

from hashsearch.codes import check_nbits, validate_codes
from hashsearch.errors import CorruptIndexError, InvalidInputError, UnknownIdError
from hashsearch.kernels import scan
from hashsearch.kernels.popcount import as_words, scan_words
from hashsearch.mih import MultiIndexHash
from hashsearch.storage import check_ids, check_metadata, read_index, write_index

PAD_DISTANCE = int(scan.PAD_DISTANCE)
BACKENDS = ("numba", "faiss", "mih")
_PARAMS = {"numba": {}, "faiss": {"nhash": int}, "mih": {"m": int, "probe_cost": float}}
GPU_MAX_K = 2048  # GpuIndexBinaryFlat's limit on k


def set_num_threads(n: int) -> None:
    """Threads for both numba kernels (and MIH) and FAISS, e.g. to benchmark at 1 and 2 threads."""
    numba.set_num_threads(int(n))
    faiss.omp_set_num_threads(int(n))


def _check_params(backend: str, params: dict[str, Any]) -> dict[str, Any]:
    if backend not in BACKENDS:
        raise InvalidInputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    allowed = _PARAMS[backend]
    for key, value in params.items():
        if key not in allowed:
            raise InvalidInputError(
                f"backend {backend!r} takes no parameter {key!r} (it takes: {', '.join(allowed) or 'none'})")
        if value is not None and not isinstance(value, (int, float, np.integer, np.floating)):
            raise InvalidInputError(f"parameter {key!r} must be a number, got {value!r}")
    if params.get("m") is not None and int(params["m"]) < 1:
        raise InvalidInputError(f"parameter 'm' must be >= 1, got {params['m']}")
    if params.get("nhash") is not None and int(params["nhash"]) < 0:
        raise InvalidInputError(f"parameter 'nhash' must be >= 0, got {params['nhash']}")
    return {k: (None if v is None else allowed[k](v)) for k, v in params.items()}


class GrowingRows:
    """Rows kept in one array with spare capacity that doubles when full: n appends cost O(total
    rows) copied, not O(n * total), and the rows stay one contiguous array for the kernels."""

    def __init__(self, rows: np.ndarray):
        self._data = rows
        self._n = rows.shape[0]

    @property
    def array(self) -> np.ndarray:
        return self._data[:self._n]

    @property
    def nbytes(self) -> int:
        """Bytes held, spare capacity included."""
        return self._data.nbytes

    def append(self, rows: np.ndarray) -> None:
        need = self._n + rows.shape[0]
        if need > self._data.shape[0]:
            grown = np.empty((max(need, 2 * self._data.shape[0]),) + self._data.shape[1:], self._data.dtype)
            grown[:self._n] = self.array
            self._data = grown
        self._data[self._n:need] = rows
        self._n = need


class HammingIndex:
    """Exact k-NN and radius search over `nbits`-bit packed codes; see the module docstring."""

    def __init__(self, nbits: int, backend: str = "numba", **params: Any):
        self.nbits = check_nbits(nbits)
        self.backend = backend
        self.params = _check_params(backend, params)
        # codes (and explicit ids) in ascending id order, in buffers that grow by doubling
        self._code_rows = GrowingRows(np.empty((0, nbits // 8), np.uint8))
        self._id_rows: GrowingRows | None = None  # None: ids are _id_start + position
        self._n = 0
        self._id_start = 0
        self._metadata: pa.Table | None = None
        self._engine: Any = None  # backend structure, built on the first query after a change
        self._multihash: Any = None  # FAISS helpers built with the FAISS engine, lazily
        self._gpu: Any = None

    # ------------------------------------------------------------------ accessors
    @property
    def ntotal(self) -> int:
        return self._n

    @property
    def _codes(self) -> np.ndarray:
        return self._code_rows.array

    @property
    def _ids(self) -> np.ndarray | None:
        return None if self._id_rows is None else self._id_rows.array

    def _set(self, codes: np.ndarray, ids: np.ndarray | None) -> None:
        self._code_rows = GrowingRows(codes)
        self._id_rows = None if ids is None else GrowingRows(ids)
        self._n = codes.shape[0]
        self._engine = None

    def _last_id(self) -> int:
        if self._n == 0:
            return -1
        return self._id_start + self._n - 1 if self._id_rows is None else int(self._id_rows.array[-1])

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return f"HammingIndex(nbits={self.nbits}, backend={self.backend!r}, ntotal={self.ntotal})"

    @property
    def codes(self) -> np.ndarray:
        """(ntotal, nbits/8) uint8 codes in ascending id order."""
        return self._codes

    @property
    def ids(self) -> np.ndarray:
        """(ntotal,) int64 ids, ascending."""
        if self._ids is None:
            return np.arange(self._id_start, self._id_start + self.ntotal, dtype=np.int64)
        return self._ids

    @property
    def metadata(self) -> pa.Table | None:
        """Per-item columns in the same order as `codes`, or None."""
        return self._metadata

    @property
    def nbytes(self) -> int:
        """Memory held: codes and explicit ids (with their spare capacity) and the backend's structures
        (not counting FAISS's copy)."""
        extra = self._engine.nbytes if isinstance(self._engine, MultiIndexHash) else 0
        return self._code_rows.nbytes + (0 if self._id_rows is None else self._id_rows.nbytes) + extra

    # ------------------------------------------------------------------ mutation
    def add(self, codes: np.ndarray, ids: np.ndarray | None = None, metadata: pa.Table | dict | None = None) -> None:
        """Add packed codes with their ids (default: continuing after the largest id) and optional
        metadata rows. Raises InvalidInputError on bad codes, negative or duplicate ids."""
        codes = validate_codes(codes, self.nbits)
        n = codes.shape[0]
        metadata = check_metadata(metadata, n)
        if self.ntotal and (metadata is None) != (self._metadata is None):
            raise InvalidInputError("metadata must be given with every add or with none "
                                    f"(the index {'has' if self._metadata is not None else 'has no'} metadata)")
        last = self._last_id()
        if ids is not None:  # None: the range after `last`, never built unless ids are stored
            ids = check_ids(ids, n)
            if n and ids.min() < 0:
                raise InvalidInputError(f"ids must be non-negative (-1 marks padding), got {ids.min()}")
        if n == 0:
            return
        if self._metadata is not None:
            try:
                metadata = pa.concat_tables([self._metadata, metadata])
            except pa.ArrowInvalid as exc:
                raise InvalidInputError(f"metadata columns differ from the index's: {exc}") from None
        if ids is None or ((n == 1 or bool(np.all(np.diff(ids) > 0))) and ids[0] > last):
            # the common case: appending keeps the order by id
            first = last + 1 if ids is None else int(ids[0])
            is_range = ids is None or ids[-1] - ids[0] == n - 1
            if self._n == 0 and is_range:
                self._id_start = first  # a plain range: ids need no memory
            elif self._id_rows is None and not (first == last + 1 and is_range):
                self._id_rows = GrowingRows(self.ids)
            if self._id_rows is not None:
                self._id_rows.append(np.arange(first, first + n) if ids is None else ids)
            self._code_rows.append(codes)
            self._n += n
            self._engine = None
        else:
            all_ids = np.concatenate([self.ids, ids])
            order = np.argsort(all_ids, kind="stable")
            all_ids = all_ids[order]
            dup = np.nonzero(all_ids[1:] == all_ids[:-1])[0]
            if dup.size:
                raise InvalidInputError(f"duplicate id {all_ids[dup[0]]}: ids must be unique in the index")
            self._set(np.concatenate([self._codes, codes])[order], all_ids)
            metadata = None if metadata is None else metadata.take(order)
        self._metadata = metadata

    def remove(self, ids: Any) -> int:
        """Remove the items with these ids; returns how many. An id not in the index raises
        UnknownIdError and removes nothing."""
        ids = np.unique(np.atleast_1d(np.asarray(ids)))
        if ids.size == 0:
            return 0
        if not np.issubdtype(ids.dtype, np.integer):
            raise InvalidInputError(f"ids must be integers, got dtype {ids.dtype}")
        current = self.ids
        pos = np.searchsorted(current, ids)
        found = (pos < current.size) & (current[np.minimum(pos, current.size - 1)] == ids) if current.size \
            else np.zeros(ids.size, bool)
        if not found.all():
            missing = ids[~found]
            raise UnknownIdError(f"id {missing[0]} is not in the index ({missing.size} unknown id(s) given)")
        keep = np.ones(self.ntotal, bool)
        keep[pos] = False
        self._set(self._codes[keep], current[keep])
        if self._metadata is not None:
            self._metadata = self._metadata.filter(pa.array(keep))
        return int(ids.size)

    # ------------------------------------------------------------------ search
    def _queries(self, queries: np.ndarray) -> np.ndarray:
        if isinstance(queries, np.ndarray) and queries.ndim == 1:
            queries = queries.reshape(1, -1)
        if isinstance(queries, np.ndarray) and not queries.flags.c_contiguous:
            queries = np.ascontiguousarray(queries)
        return validate_codes(queries, self.nbits, name="queries")

    def _build(self) -> Any:
        if self._engine is None:
            if self.backend == "numba":
                self._engine = scan_words(self._codes)
            elif self.backend == "mih":
                p = self.params
                self._engine = MultiIndexHash(as_words(self._codes), self.nbits, p.get("m"),
                                              **({"probe_cost": p["probe_cost"]} if p.get("probe_cost") is not None else {}))
            else:
                self._engine = faiss.IndexBinaryFlat(self.nbits)
                self._engine.add(self._codes)
                self._multihash = self._gpu = None
        return self._engine

    def _to_ids(self, pos: np.ndarray) -> np.ndarray:
        valid = pos >= 0
        out = np.full(pos.shape, -1, np.int64)
        out[valid] = self._id_start + pos[valid] if self._ids is None else self._ids[pos[valid]]
        return out

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest codes of each query: (nq, k) int32 distances and int64 ids, rows sorted by
        (distance, id), padded with (PAD_DISTANCE, -1) when the index holds fewer than k items."""
        q = self._queries(queries)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        nq = q.shape[0]
        if nq == 0 or self.ntotal == 0:
            return np.full((nq, k), PAD_DISTANCE, np.int32), np.full((nq, k), -1, np.int64)
        engine = self._build()
        if self.backend == "numba":
            dist, pos = scan.topk(scan_words(q), engine, k, self.nbits)
        elif self.backend == "mih":
            dist, pos = engine.search(as_words(q), k)
        else:
            dist, pos = self._faiss_search(q, k)
        return dist, self._to_ids(pos)

    def _faiss_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k <= GPU_MAX_K and faiss.get_num_gpus() > 0:  # pragma: no cover - no GPU on CI
            if self._gpu is None:
                self._gpu = faiss.index_binary_cpu_to_gpu(faiss.StandardGpuResources(), 0, self._engine)
            return self._gpu.search(q, k)
        dist, pos = self._engine.search(q, k)
        return dist.astype(np.int32, copy=False), pos.astype(np.int64, copy=False)

    def range_search(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every code within `radius` (inclusive) of each query: CSR (lims (nq+1,) int64, distances
        int32, ids int64), query i's results in [lims[i], lims[i+1]) sorted by (distance, id)."""
        q = self._queries(queries)
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
            raise InvalidInputError(f"radius must be a non-negative integer, got {radius!r}")
        radius = int(min(radius, self.nbits))
        nq = q.shape[0]
        if nq == 0 or self.ntotal == 0:
            return np.zeros(nq + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
        engine = self._build()
        if self.backend == "numba":
            lims, dist, pos = scan.range_search(scan_words(q), engine, radius, self.nbits)
        elif self.backend == "mih":
            lims, dist, pos = engine.range_search(as_words(q), radius)
        else:
            lims, dist, pos = self._faiss_range(q, radius)
        return lims, dist, self._to_ids(pos)

    def _faiss_range(self, q: np.ndarray, radius: int):
        """FAISS radius search is strictly below its radius (so pass r + 1) and leaves rows in scan
        order (so sort them)."""
        nhash = self.params.get("nhash") or 0
        index = self._engine
        b = min(self.nbits // max(nhash, 1), 64)
        # the hash tables help only while probing costs less than scanning
        if nhash and nhash * sum(math.comb(b, s) for s in range(radius // nhash + 1)) < self.ntotal / 64:
            if self._multihash is None:
                self._multihash = faiss.IndexBinaryMultiHash(self.nbits, nhash, b)
                self._multihash.add(self._codes)
            index = self._multihash
            # exact when every table probes all keys within floor(r / nhash) flips (pigeonhole)
            index.nflip = radius // nhash
        lims, dist, pos = index.range_search(q, radius + 1)
        lims = lims.astype(np.int64)
        dist = dist.astype(np.int32)
        pos = pos.astype(np.int64)
        rows = np.repeat(np.arange(q.shape[0]), np.diff(lims))
        order = np.lexsort((pos, dist, rows))
        return lims, dist[order], pos[order]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the index (codes, ids, backend and params, metadata) with `storage.write_index`."""
        write_index(path, self._codes, None if (self._ids is None and self._id_start == 0) else self.ids,
                    self.nbits, backend=self.backend, params=self.params, metadata=self._metadata)

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True) -> "HammingIndex":
        """Open an index saved by `save`; with mmap=True the codes stay a read-only memory map."""
        stored = read_index(path, mmap=mmap)
        index = cls(stored.nbits, backend=stored.backend, **stored.params)
        ids = stored.stored_ids  # None when ids are a plain range: never materialise one
        if ids is None:
            index._id_start = int(stored.id_start)
        elif ids.size > 1 and not np.all(np.diff(ids) > 0):
            order = np.argsort(ids, kind="stable")
            ids = ids[order]
            if np.any(ids[1:] == ids[:-1]):
                raise CorruptIndexError(f"{path}: duplicate ids")
            stored.codes = stored.codes[order]
            stored.metadata = None if stored.metadata is None else stored.metadata.take(order)
        index._set(stored.codes, ids)
        index._metadata = stored.metadata
        return index
