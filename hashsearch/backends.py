"""Search backends: exact searchers over a FIXED set of packed codes, answering by ROW POSITION, behind
one protocol and registered by name ("numba", "faiss", "mih", "auto", and "gpu" from hashsearch.gpu).

Every backend returns what a brute-force scan returns: top-k as (nq, k) int32 distances and int64
positions sorted by (distance, position), padded with (PAD_DISTANCE, -1); range search INCLUSIVE
(distance <= radius) as CSR (lims, distances, positions), each query's rows sorted the same way.
`mask` ((n,) bool, True = may be returned, or the same as a packed bitmap, `hashsearch.bitmaps`) is
applied inside the kernels: top-k is exact among the allowed rows. Queries store nothing, so search and range_search may run from many threads at once;
whatever is built lazily is built once, under a lock.
"""
from __future__ import annotations

import importlib
import math
import threading
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import numba
import numba.np.ufunc.parallel
import numpy as np

from hashsearch import bitmaps
from hashsearch.errors import InvalidInputError
from hashsearch.kernels import scan
from hashsearch.kernels.popcount import as_words, scan_words
from hashsearch.mih import MultiIndexHash, scan_tables, small_segment_tables
from hashsearch.planner import CodeStats, CostModel, Costs, Estimate, candidate_substrings
from hashsearch.results import PAD_DISTANCE

__all__ = ["BACKENDS", "Backend", "PAD_DISTANCE", "backend_names", "build_params", "check_mask", "get_backend",
           "register"]

GPU_MAX_K = 2048  # GpuIndexBinaryFlat's limit on k


class Backend(Protocol):
    """What the index needs from a searcher over one fixed set of codes (see the module docstring)."""

    name: ClassVar[str]

    def __init__(self, codes: np.ndarray, nbits: int, **params: Any) -> None: ...

    def search(self, queries: np.ndarray, k: int, mask: np.ndarray | None = None,
               **params: Any) -> tuple[np.ndarray, np.ndarray]: ...

    def range_search(self, queries: np.ndarray, radius: int, mask: np.ndarray | None = None,
                     **params: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    @property
    def nbytes(self) -> int: ...

    def explain(self, nq: int, k: int | None = None, radius: int | None = None) -> dict: ...


BACKENDS: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make `cls` available as `get_backend(cls.name)`."""
    BACKENDS[cls.name] = cls
    return cls


# Backends whose module loads torch are imported on first use; their build parameters are declared
# here, so that help texts and `import hashsearch` need no torch.
LAZY_BACKENDS: dict[str, tuple[str, dict[str, type]]] = {
    "gpu": ("hashsearch.gpu:GpuBackend",
            {"device": str, "max_resident_bytes": int, "stream_rows": int, "block_rows": int, "chunks": int}),
}


def backend_names() -> tuple[str, ...]:
    """Backend names, in registration order, lazy ones last (the CLI's choices)."""
    return tuple(BACKENDS) + tuple(name for name in LAZY_BACKENDS if name not in BACKENDS)


def build_params(name: str) -> dict[str, type]:
    """The build parameters backend `name` accepts, without importing a lazy backend."""
    return LAZY_BACKENDS[name][1] if name in LAZY_BACKENDS else get_backend(name).build_params


def get_backend(name: str) -> type:
    """The backend class registered as `name` (a lazy one is imported and registered now)."""
    if isinstance(name, str) and name not in BACKENDS and name in LAZY_BACKENDS:
        module, _, cls = LAZY_BACKENDS[name][0].partition(":")
        register(getattr(importlib.import_module(module), cls))
    try:
        return BACKENDS[name]
    except (KeyError, TypeError):
        raise InvalidInputError(f"unknown backend {name!r}; choose one of {', '.join(backend_names())}") from None


def check_params(backend: str, params: dict[str, Any], accepted: dict[str, type], what: str = "parameter") -> dict[str, Any]:
    """`params` converted to the accepted types; InvalidInputError naming an unknown key or a bad value.
    None values mean 'the default' and are dropped."""
    out = {}
    for key, value in params.items():
        if key not in accepted:
            raise InvalidInputError(f"backend {backend!r} takes no {what} {key!r} "
                                    f"(it takes: {', '.join(accepted) or 'none'})")
        if value is None:
            continue
        if accepted[key] is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise InvalidInputError(f"{what} {key!r} of backend {backend!r} must be True or False, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InvalidInputError(f"{what} {key!r} of backend {backend!r} must be a number, got {value!r}")
        out[key] = accepted[key](value)
    return out


def check_mask(mask: np.ndarray | None, n: int) -> np.ndarray | None:
    """`mask` ((n,) bool, or already a packed bitmap: (ceil(n / 8),) uint8) as the read-only C-contiguous
    packed bitmap the kernels test (one array type: each kernel compiles once), None staying None; or
    InvalidInputError."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype == np.bool_ and mask.shape == (n,):
        mask = bitmaps.pack(mask)
    elif mask.dtype != np.uint8 or mask.shape != (-(-n // 8),):
        raise InvalidInputError(f"mask must be a ({n},) bool array (True = row may be returned) or its packed "
                                f"bitmap, got dtype {mask.dtype} and shape {mask.shape}")
    return scan.read_only(mask)


def radius_arg(radius: Any) -> int | np.ndarray:
    """A radius as an int, or per-query radii as an int64 array (backends with `per_query_radius`)."""
    return int(radius) if isinstance(radius, (int, np.integer)) or np.ndim(radius) == 0 else np.asarray(radius, np.int64)


class BaseBackend:
    """Shared construction: parameter checks and the codes' shape; subclasses implement the searches.
    `per_query_radius`: range_search also takes an (nq,) array of radii, one per query (the index's
    exact top-k over segments asks each segment for the rows within each query's k-th distance)."""

    name: ClassVar[str] = ""
    per_query_radius: ClassVar[bool] = False
    build_params: ClassVar[dict[str, type]] = {}
    search_params: ClassVar[dict[str, type]] = {}

    def __init__(self, codes: np.ndarray, nbits: int, **params: Any):
        self.codes, self.nbits, self.n = codes, int(nbits), int(codes.shape[0])
        self.params = check_params(self.name, params, self.build_params)

    def _call(self, params: dict[str, Any], mask: np.ndarray | None) -> tuple[dict[str, Any], np.ndarray | None]:
        if not params and mask is None:  # the common case, checked first: small segments' searches are short
            return params, None
        return check_params(self.name, params, self.search_params, "search parameter"), check_mask(mask, self.n)

    @property
    def nbytes(self) -> int:
        return 0

    def segment_tables(self, m: int | None = None) -> tuple | None:
        """What `hashsearch.mih.range_segments` needs to search these rows with other segments in ONE
        kernel call (MIH tables, or none: scanned); None where this backend cannot take part. `m`: the
        substring count the whole index's batch plans (None: a scan), for backends that plan (auto)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, nbits={self.nbits}, params={self.params})"


def _own_bytes(array: np.ndarray, codes: np.ndarray) -> int:
    """Bytes of `array` unless it is a view of the codes."""
    return 0 if np.shares_memory(array, codes) else int(array.nbytes)


@register
class NumbaBackend(BaseBackend):
    """Our linear scan (`hashsearch.kernels.scan`): blocked, counting-select top-k, parallel over
    queries or, for few queries, over the database."""

    name = "numba"
    per_query_radius = True

    def __init__(self, codes: np.ndarray, nbits: int, **params: Any):
        super().__init__(codes, nbits, **params)
        self.words = scan_words(codes)  # a view for 8..32-bit and whole-word codes

    @property
    def nbytes(self) -> int:
        return _own_bytes(self.words, self.codes)

    def search(self, queries, k, mask=None, **params):
        _, mask = self._call(params, mask)
        return scan.topk(scan_words(queries), self.words, int(k), self.nbits, mask)

    def range_search(self, queries, radius, mask=None, **params):
        _, mask = self._call(params, mask)
        return scan.range_search(scan_words(queries), self.words, radius_arg(radius), self.nbits, mask)

    def segment_tables(self, m=None):
        return scan_tables(as_words(self.codes))

    def explain(self, nq, k=None, radius=None):
        return {"backend": self.name, "plan": "scan", "n": self.n, "nbits": self.nbits, "nq": nq,
                "why": "linear scan of every row"}


def check_substrings(m: int | None) -> int | None:
    if m is not None and m < 1:
        raise InvalidInputError(f"parameter 'm' must be >= 1, got {m}")
    return m


@register
class MihBackend(BaseBackend):
    """Multi-index hashing (`hashsearch.mih`): sub-linear radius search, top-k by growing the radius;
    queries that would probe more than a scan costs are scanned."""

    name = "mih"
    per_query_radius = True
    build_params = {"m": int, "probe_cost": float}

    def __init__(self, codes: np.ndarray, nbits: int, **params: Any):
        super().__init__(codes, nbits, **params)
        self.words = as_words(codes)
        self.mih = MultiIndexHash(self.words, self.nbits, check_substrings(self.params.get("m")),
                                  **({"probe_cost": self.params["probe_cost"]} if "probe_cost" in self.params else {}))

    @property
    def nbytes(self) -> int:
        return self.mih.nbytes + _own_bytes(self.words, self.codes)

    def search(self, queries, k, mask=None, **params):
        _, mask = self._call(params, mask)
        return self.mih.search(as_words(queries), int(k), mask)

    def range_search(self, queries, radius, mask=None, **params):
        _, mask = self._call(params, mask)
        return self.mih.range_search(as_words(queries), radius_arg(radius), mask)

    def segment_tables(self, m=None):
        return self.mih.tables()

    def explain(self, nq, k=None, radius=None):
        return {"backend": self.name, "plan": "mih", "m": self.mih.m, "n": self.n, "nbits": self.nbits, "nq": nq,
                "why": "multi-index hashing; a query whose probes would cost more than a scan is scanned"}


def sort_csr(lims: np.ndarray, dist: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FAISS range results (strict radius already adjusted) as our dtypes, each row sorted by
    (distance, position) (FAISS leaves them in scan order)."""
    lims, dist, pos = lims.astype(np.int64), dist.astype(np.int32), pos.astype(np.int64)
    rows = np.repeat(np.arange(lims.shape[0] - 1), np.diff(lims))
    order = np.lexsort((pos, dist, rows))
    return lims, dist[order], pos[order]


@register
class FaissBackend(BaseBackend):
    """FAISS `IndexBinaryFlat` (its own copy of the codes); with `nhash` set, radius search uses an
    `IndexBinaryMultiHash` of nhash tables while probing is cheaper than scanning (`nflip` = r // nhash
    makes it exact, by pigeonhole); top-k on a GPU when FAISS sees one. A mask becomes FAISS's
    `IDSelectorBitmap` search parameter on the flat index (the multi-hash index refuses search
    parameters, so masked radius searches use the flat one). Search parameter `use_multihash`
    (True/False) overrides the cost rule for one radius search (the benchmark times the tables alone)."""

    name = "faiss"
    build_params = {"nhash": int}
    search_params = {"use_multihash": bool}

    def __init__(self, codes: np.ndarray, nbits: int, **params: Any):
        import faiss  # imported on first use: `import hashsearch.backends` (the CLI's choices) stays light

        super().__init__(codes, nbits, **params)
        if self.params.get("nhash", 0) < 0:
            raise InvalidInputError(f"parameter 'nhash' must be >= 0, got {self.params['nhash']}")
        self.flat = faiss.IndexBinaryFlat(self.nbits)
        self.flat.add(np.ascontiguousarray(codes))
        self._lock = threading.Lock()  # guards the lazy helpers and the multi-hash index's nflip
        self._multihash: Any = None
        self._gpu: Any = None

    @property
    def index(self) -> Any:
        """The FAISS flat index (e.g. for `faiss.write_index_binary`)."""
        return self.flat

    @property
    def nbytes(self) -> int:
        """FAISS's copy of the codes (and the multi-hash index's copy and ids, about 8 B per table row)."""
        extra = 0 if self._multihash is None else self.n * (self.nbits // 8 + 8 * self.params["nhash"])
        return self.n * self.nbits // 8 + extra

    def selector(self, bits: np.ndarray) -> tuple[Any, tuple]:
        """FAISS search parameters that admit exactly the rows of the packed bitmap (FAISS's own
        layout), and the objects they point into (FAISS holds raw pointers: keep these alive until
        the search returns)."""
        import faiss

        sel = faiss.IDSelectorBitmap(self.n, faiss.swig_ptr(bits))
        return faiss.SearchParameters(sel=sel), (bits, sel)

    def search(self, queries, k, mask=None, **params):
        import faiss

        _, mask = self._call(params, mask)
        k = int(k)
        if mask is None and k <= GPU_MAX_K and faiss.get_num_gpus() > 0:  # pragma: no cover - no GPU on CI
            with self._lock:
                if self._gpu is None:
                    self._gpu = faiss.index_binary_cpu_to_gpu(faiss.StandardGpuResources(), 0, self.flat)
            dist, pos = self._gpu.search(queries, k)
        elif mask is None:
            dist, pos = self.flat.search(queries, k)
        else:
            sel, _owners = self.selector(mask)
            dist, pos = self.flat.search(queries, k, params=sel)
        return dist.astype(np.int32, copy=False), pos.astype(np.int64, copy=False)

    def _use_multihash(self, radius: int) -> bool:
        """The hash tables help only while probing costs less than scanning."""
        nhash = self.params.get("nhash", 0)
        if not nhash:
            return False
        b = min(self.nbits // nhash, 64)
        return nhash * sum(math.comb(b, s) for s in range(radius // nhash + 1)) < self.n / 64

    def multihash(self) -> Any:
        """The `IndexBinaryMultiHash` of `nhash` tables, built on first use (once, under the lock)."""
        import faiss

        nhash = self.params.get("nhash", 0)
        if not nhash:
            raise InvalidInputError("this FAISS backend has no hash tables: build it with nhash > 0")
        with self._lock:
            if self._multihash is None:
                self._multihash = faiss.IndexBinaryMultiHash(self.nbits, nhash, min(self.nbits // nhash, 64))
                self._multihash.add(np.ascontiguousarray(self.codes))
        return self._multihash

    def range_search(self, queries, radius, mask=None, **params):
        """FAISS's radius is strict, so it is passed r + 1."""
        params, mask = self._call(params, mask)
        radius = int(radius)
        if mask is not None:
            sel, _owners = self.selector(mask)
            return sort_csr(*self.flat.range_search(queries, radius + 1, params=sel))
        if not params.get("use_multihash", self._use_multihash(radius)):
            return sort_csr(*self.flat.range_search(queries, radius + 1))
        index = self.multihash()
        with self._lock:  # nflip is a field of the shared index: set it and search under one lock
            index.nflip = radius // self.params["nhash"]  # exact: some table is within r // nhash (pigeonhole)
            res = index.range_search(queries, radius + 1)
        return sort_csr(*res)

    def explain(self, nq, k=None, radius=None):
        multihash = radius is not None and self._use_multihash(int(radius))
        return {"backend": self.name, "plan": "faiss-multihash" if multihash else "faiss-flat", "n": self.n,
                "nbits": self.nbits, "nq": nq,
                "why": "FAISS multi-hash tables (probing cheaper than a scan)" if multihash else "FAISS flat scan"}


MIN_PLANNED_ROWS = 1024  # below this, auto always scans: a scan costs microseconds, MIH tables would not pay


@register
class AutoBackend(BaseBackend):
    """The scan or multi-index hashing, whichever the cost model (`hashsearch.planner`) expects to be
    faster for each batch, with MIH's substring count m chosen per batch too. MIH tables are built on
    the first batch that would use them (once per m, under a lock); the codes' distance profile is
    sampled on the first query. A mask lowers the allowed share, which the model prices (MIH top-k
    must grow its radius further). In a live index, one plan serves every segment of a batch: each
    joins the fused search with the tables of `segment_tables(m)`."""

    name = "auto"
    per_query_radius = True

    def __init__(self, codes: np.ndarray, nbits: int, **params: Any):
        super().__init__(codes, nbits, **params)
        self.scan = NumbaBackend(codes, nbits)
        self.words = self.scan.words
        self.costs = Costs.load()
        self._lock = threading.Lock()
        self._model: CostModel | None = None
        self._tables: dict[int, MultiIndexHash] = {}
        self._plans: dict[tuple, Estimate] = {}  # decisions by (nq, k, radius, threads, allowed share)
        numba.get_num_threads()  # launches numba's threads; then the calling thread's count is read without
        # numba.get_num_threads's launch check (~0.2 us, not ~1): short queries spend microseconds in all
        self._threads_now = getattr(numba.np.ufunc.parallel, "_get_num_threads", numba.get_num_threads)

    @property
    def nbytes(self) -> int:
        tables = list(self._tables.values())
        return self.scan.nbytes + sum(t.nbytes + _own_bytes(t.words, self.codes) for t in tables)

    @property
    def substring_choices(self) -> list[int]:
        return candidate_substrings(self.nbits, self.n)

    def model(self) -> CostModel:
        """The cost model over these codes (their distance profile sampled once, under the lock)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = CostModel(self.costs, CodeStats(self.codes, self.nbits, self.substring_choices))
        return self._model

    def tables(self, m: int) -> MultiIndexHash:
        """The MIH tables with m substrings, built on first use (once, under the lock)."""
        if m not in self._tables:
            with self._lock:
                if m not in self._tables:
                    self._tables[m] = MultiIndexHash(as_words(self.codes), self.nbits, m)
        return self._tables[m]

    def segment_tables(self, m=None):
        """Scanned where the index's batch plans a scan (m None) or this segment is tiny; else MIH
        tables, built once and kept: a small segment's own (`hashsearch.mih.small_segment_tables`, whatever
        m the batch plans: it is searched mostly within the queries' running k-th distances), a large
        one's with m substrings. None past 2**32 rows."""
        if m is None or self.n < MIN_PLANNED_ROWS:
            return scan_tables(as_words(self.codes))
        small = small_segment_tables(self.nbits, self.n)
        if small is None:
            return self.tables(m).tables()
        tables = self.tables(small[0]).tables()
        return tables[:-1] + (small[1],)

    @property
    def built_m(self) -> list[int]:
        """The substring counts whose tables are built."""
        return sorted(self._tables)

    def prepare(self, ms: Sequence[int] = ()) -> None:
        """Build now what queries would otherwise build first (a background merge calls this, so that
        no query waits): a small segment's fused-search tables; a large one's tables for each m of `ms`."""
        small = small_segment_tables(self.nbits, self.n)
        if small is None:
            for m in ms:
                self.tables(m)
        elif self.n >= MIN_PLANNED_ROWS:
            self.tables(small[0])

    def plan(self, nq: int, k: int | None = None, radius: int | None = None,
             mask: np.ndarray | None = None, share: float | None = None) -> Estimate:
        """Scan or MIH (and m) for a batch of nq queries, from the model's estimated seconds; priced once
        per batch shape, then a dict lookup (a single short query takes microseconds). `share`: the
        share of rows `mask` allows, where the caller knows it (then the mask is not sampled)."""
        if share is None:
            share = 1.0 if mask is None or not self.n else bitmaps.allowed_share(mask, self.n)
        key = (nq, k, radius, self._threads_now(), round(share, 2))
        est = self._plans.get(key)
        return self._price(key) if est is None else est

    def _price(self, key: tuple) -> Estimate:
        nq, k, radius, threads, allowed = key
        if self.n < MIN_PLANNED_ROWS:
            est = Estimate("scan", None, 0.0, {})
        else:
            est = self.model().choose(nq, threads, self.substring_choices, k=None if k is None else int(k),
                                      radius=None if radius is None else min(int(radius), self.nbits),
                                      allowed=max(allowed, 1e-3))
        if len(self._plans) > 4096:
            self._plans.clear()
        self._plans[key] = est
        return est

    def search(self, queries, k, mask=None, **params):
        _, mask = self._call(params, mask)
        est = self.plan(queries.shape[0], k=k, mask=mask)
        if est.plan == "scan":
            return scan.topk(scan_words(queries), self.words, int(k), self.nbits, mask)
        return self.tables(est.m).search(as_words(queries), int(k), mask)

    def range_search(self, queries, radius, mask=None, **params):
        _, mask = self._call(params, mask)
        radius = radius_arg(radius)
        widest = radius if isinstance(radius, int) else int(radius.max(initial=0))  # (np.max costs microseconds)
        est = self.plan(queries.shape[0], radius=widest, mask=mask)  # priced at the widest
        if est.plan == "scan":
            return scan.range_search(scan_words(queries), self.words, radius, self.nbits, mask)
        return self.tables(est.m).range_search(as_words(queries), radius, mask)

    def explain(self, nq, k=None, radius=None):
        if (k is None) == (radius is None):
            raise InvalidInputError("explain needs exactly one of k and radius")
        est = self.plan(nq, k=k, radius=radius)
        chosen = est.scan_s if est.plan == "scan" else est.mih_s[est.m]
        other = min(est.mih_s.values()) if est.plan == "scan" and est.mih_s else est.scan_s
        return {"backend": self.name, **est.as_dict(), "n": self.n, "nbits": self.nbits, "nq": nq, "k": k,
                "radius": radius, "threads": numba.get_num_threads(), "built_m": self.built_m,
                "why": f"fewer than {MIN_PLANNED_ROWS} rows: always scanned" if not est.mih_s else
                       (f"{'scan' if est.plan == 'scan' else f'MIH with m={est.m}'} estimated "
                        f"{chosen * 1e3:.3g} ms against {other * 1e3:.3g} ms "
                        f"for the other plan")}
