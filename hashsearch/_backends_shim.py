"""TEMPORARY stand-in for helper `backends`' hashsearch.backends / hashsearch.filters, with the same
signatures (see SPEC_BACKEND.md): the index is built against it until the registry is merged, then
this module is deleted. Masks are applied after the search here (over-fetching k by the number of
masked rows, which stays exact); the real backends apply them inside the kernels.
"""
from __future__ import annotations

import math
import re
import threading
from typing import Any, ClassVar

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from hashsearch.errors import InvalidInputError
from hashsearch.kernels import scan
from hashsearch.kernels.popcount import as_words, scan_words
from hashsearch.mih import MultiIndexHash

BACKENDS: dict[str, type] = {}


def register(cls: type) -> type:
    BACKENDS[cls.name] = cls
    return cls


def get_backend(name: str) -> type:
    if name not in BACKENDS:
        raise InvalidInputError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


def _check(name: str, params: dict, allowed: dict) -> dict:
    for key, value in params.items():
        if key not in allowed:
            raise InvalidInputError(
                f"backend {name!r} takes no parameter {key!r} (it takes: {', '.join(allowed) or 'none'})")
        if value is not None and not isinstance(value, (int, float, np.integer, np.floating)):
            raise InvalidInputError(f"parameter {key!r} must be a number, got {value!r}")
    if params.get("m") is not None and int(params["m"]) < 1:
        raise InvalidInputError(f"parameter 'm' must be >= 1, got {params['m']}")
    if params.get("nhash") is not None and int(params["nhash"]) < 0:
        raise InvalidInputError(f"parameter 'nhash' must be >= 0, got {params['nhash']}")
    return {k: allowed[k](v) for k, v in params.items() if v is not None}


class _Masked:
    """Exact masked answers from an unmasked search: over-fetch by the masked-out count, then filter."""

    name: ClassVar[str]
    n: int

    def search(self, queries, k, mask=None, **params):
        if mask is None:
            return self._search(queries, k)
        extra = int(self.n - np.count_nonzero(mask))
        d, p = self._search(queries, min(k + extra, self.n))
        keep = (p >= 0) & mask[np.maximum(p, 0)]
        out_d = np.full((queries.shape[0], k), scan.PAD_DISTANCE, np.int32)
        out_p = np.full((queries.shape[0], k), -1, np.int64)
        for i in range(queries.shape[0]):
            row = np.flatnonzero(keep[i])[:k]
            out_d[i, :row.size], out_p[i, :row.size] = d[i, row], p[i, row]
        return out_d, out_p

    def range_search(self, queries, radius, mask=None, **params):
        lims, d, p = self._range(queries, radius)
        if mask is None:
            return lims, d, p
        keep = mask[p]
        rows = np.repeat(np.arange(queries.shape[0]), np.diff(lims))[keep]
        new = np.zeros_like(lims)
        np.cumsum(np.bincount(rows, minlength=queries.shape[0]), out=new[1:])
        return new, d[keep], p[keep]

    def explain(self, nq, k=None, radius=None):
        return {"backend": self.name, "rows": self.n, "plan": "scan" if self.name != "mih" else "probe"}


@register
class NumbaScan(_Masked):
    name = "numba"

    def __init__(self, codes, nbits, **params):
        _check(self.name, params, {})
        self.n, self.nbits, self.words = codes.shape[0], nbits, scan_words(codes)

    nbytes = 0

    def _search(self, q, k):
        return scan.topk(scan_words(q), self.words, k, self.nbits)

    def _range(self, q, r):
        return scan.range_search(scan_words(q), self.words, r, self.nbits)


@register
class MIH(_Masked):
    name = "mih"

    def __init__(self, codes, nbits, **params):
        p = _check(self.name, params, {"m": int, "probe_cost": float})
        self.n = codes.shape[0]
        self.engine = MultiIndexHash(as_words(codes), nbits, p.get("m"),
                                     **({"probe_cost": p["probe_cost"]} if "probe_cost" in p else {}))

    @property
    def nbytes(self):
        return self.engine.nbytes

    def _search(self, q, k):
        return self.engine.search(as_words(q), k)

    def _range(self, q, r):
        return self.engine.range_search(as_words(q), r)


@register
class Faiss(_Masked):
    name = "faiss"

    def __init__(self, codes, nbits, **params):
        p = _check(self.name, params, {"nhash": int})
        self.codes, self.n, self.nbits, self.nhash = codes, codes.shape[0], nbits, p.get("nhash", 0)
        self.flat = faiss.IndexBinaryFlat(nbits)
        self.flat.add(codes)
        self.multihash = None
        self._lock = threading.Lock()

    nbytes = 0

    def _search(self, q, k):
        d, p = self.flat.search(q, k)
        return d.astype(np.int32, copy=False), p.astype(np.int64, copy=False)

    def _range(self, q, radius):
        nhash, index = self.nhash, self.flat
        b = min(self.nbits // max(nhash, 1), 64)
        if nhash and nhash * sum(math.comb(b, s) for s in range(radius // nhash + 1)) < self.n / 64:
            with self._lock:
                if self.multihash is None:
                    mh = faiss.IndexBinaryMultiHash(self.nbits, nhash, b)
                    mh.add(self.codes)
                    self.multihash = mh
                self.multihash.nflip = radius // nhash
                lims, dist, pos = self.multihash.range_search(q, radius + 1)
        else:
            lims, dist, pos = index.range_search(q, radius + 1)
        lims, dist, pos = lims.astype(np.int64), dist.astype(np.int32), pos.astype(np.int64)
        rows = np.repeat(np.arange(q.shape[0]), np.diff(lims))
        order = np.lexsort((pos, dist, rows))
        return lims, dist[order], pos[order]


def filter_mask(filter: Any, ids: np.ndarray, metadata: pa.Table | None) -> np.ndarray:
    if isinstance(filter, pc.Expression):
        if metadata is None:
            raise InvalidInputError("a metadata filter needs an index with metadata")
        table = metadata.append_column("__pos", pa.array(np.arange(len(ids))))
        try:
            pos = ds.dataset(table).to_table(filter=filter, columns=["__pos"]).column(0).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InvalidInputError(f"bad filter {filter}: {exc}") from None
        mask = np.zeros(len(ids), bool)
        mask[pos] = True
        return mask
    return np.isin(ids, np.asarray(filter, np.int64))


def parse_where(text: str) -> pc.Expression:
    m = re.fullmatch(r"\s*(\w+)\s*(==|!=|<=|>=|<|>)\s*(.+?)\s*", text)
    if not m:
        raise InvalidInputError(f"cannot parse --where {text!r}; expected COLUMN OP VALUE")
    col, op, raw = m.groups()
    try:
        value = int(raw)
    except ValueError:
        try:
            value = float(raw)
        except ValueError:
            value = raw.strip("'\"")
    f = pc.field(col)
    return {"==": f == value, "!=": f != value, "<": f < value, "<=": f <= value,
            ">": f > value, ">=": f >= value}[op]
