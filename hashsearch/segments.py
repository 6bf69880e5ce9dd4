"""Segments of a live index and the snapshots that readers search.

A `Segment` is a fixed set of rows sorted by id: codes, ids (stored, or a plain range from
`id_start`), optional metadata, and the backend searcher built over its codes once, on first use.
Nothing in a segment ever changes. Removed rows are tombstones: a packed "live" bitmap per segment
(`hashsearch.bitmaps`), replaced (never edited) on each removal. A `Snapshot` is an immutable tuple
of segments with their bitmaps: searching it merges the exact per-segment answers with
`hashsearch.results` (or, where every backend takes part, searches all segments in one kernel call
that merges inside, `hashsearch.mih.range_segments`), so a reader sees one whole version of the index
while writers build the next.
"""
from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from numba import typed, typeof

from hashsearch.codes import validate_codes
from hashsearch.errors import InvalidInputError
from hashsearch.results import PAD_DISTANCE, empty_range, empty_topk, merge_range, merge_topk, merge_topk_ranges

from hashsearch import bitmaps
from hashsearch.backends import get_backend
from hashsearch.kernels.popcount import as_words
from hashsearch.kernels.scan import NO_MASK, read_only
from hashsearch.mih import range_segments
from hashsearch.filters import filter_mask

SCAN_BACKEND = "numba"  # what searches the small growing segment


def new_segment_name() -> str:
    """A unique segment name; also the stem of its files on disk."""
    return f"seg-{uuid.uuid4().hex[:16]}"


class Segment:
    """Immutable rows sorted by ascending id, and their backend searcher (built lazily, once)."""

    def __init__(self, codes: np.ndarray, ids: np.ndarray | None, id_start: int, nbits: int,
                 metadata: pa.Table | None, backend: str, params: dict[str, Any],
                 name: str | None = None, files: dict[str, Any] | None = None):
        """`ids=None` means ids id_start, id_start+1, ...; `files`: where the rows are on disk
        (storage's manifest entry), so a save can recognise them instead of rewriting them."""
        self.codes, self._ids, self.id_start, self.nbits = codes, ids, int(id_start), nbits
        self.metadata, self.backend, self.params = metadata, backend, params
        self.name = name or new_segment_name()
        self.files = files
        self._searcher: Any = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.codes.shape[0]

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its lock and searcher (rebuilt on first use where it lands)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_searcher")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock(), _searcher=None)

    @property
    def ids_stored(self) -> bool:
        return self._ids is not None

    @property
    def ids(self) -> np.ndarray:
        """(n,) int64 ascending ids (made from the range when not stored)."""
        if self._ids is not None:
            return self._ids
        return np.arange(self.id_start, self.id_start + len(self), dtype=np.int64)

    @property
    def last_id(self) -> int:
        return int(self._ids[-1]) if self._ids is not None else self.id_start + len(self) - 1

    def id_at(self, pos: np.ndarray) -> np.ndarray:
        """Ids of row positions; -1 (padding) stays -1."""
        pos = np.asarray(pos, np.int64)
        if self._ids is None:
            return np.where(pos >= 0, pos + self.id_start, -1)
        return np.where(pos >= 0, self._ids[np.maximum(pos, 0)] if len(self) else -1, -1)

    def ids_of(self, pos: np.ndarray) -> np.ndarray:
        """Ids of valid row positions (no padding), e.g. of range results."""
        return pos + self.id_start if self._ids is None else self._ids[pos]

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Row position of each id, -1 where this segment has no such id."""
        n = len(self)
        if self._ids is None:
            pos = ids - self.id_start
            return np.where((pos >= 0) & (pos < n), pos, -1)
        pos = np.searchsorted(self._ids, ids)
        hit = pos < n
        hit[hit] = self._ids[pos[hit]] == ids[hit]
        return np.where(hit, pos, -1)

    def searcher(self) -> Any:
        """The backend over these codes, built on first use under a lock (queries never build twice)."""
        if self._searcher is None:
            with self._lock:
                if self._searcher is None:
                    self._searcher = get_backend(self.backend)(self.codes, self.nbits, **self.params)
        return self._searcher

    @property
    def nbytes(self) -> int:
        """Memory of codes, stored ids and the backend's structures (once built)."""
        extra = int(getattr(self._searcher, "nbytes", 0)) if self._searcher is not None else 0
        return self.codes.nbytes + (0 if self._ids is None else self._ids.nbytes) + extra


def last_live(live: np.ndarray | None, n: int) -> int:
    """Largest live position (live=None: all live), -1 when none."""
    return n - 1 if live is None else bitmaps.last_set(live)


# --------------------------------------------------------------------------------- argument checks

def check_queries(queries: Any, nbits: int) -> np.ndarray:
    """Queries as a C-contiguous (nq, nbits/8) uint8 array: one code may be 1-D; any strides are
    accepted (the rows are made contiguous)."""
    if isinstance(queries, np.ndarray):
        if queries.ndim == 1:
            queries = queries.reshape(1, -1)
        queries = np.ascontiguousarray(queries)
    return validate_codes(queries, nbits, name="queries")


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_radius(radius: Any, nbits: int) -> int:
    """A non-negative integer; any radius >= nbits means every item (all distances are <= nbits)."""
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise InvalidInputError(f"radius must be a non-negative integer, got {radius!r}")
    return int(min(radius, nbits))


# ---------------------------------------------------------------------------------------- snapshots

_RANGE_IDS = read_only(np.zeros(0, np.int64))  # "ids are a range" in a fused segment


def _fuse(segments: list[tuple[Segment, np.ndarray | None, int]]) -> Any:
    """Typed list of (tables..., live bitmap, ids, id_start) of the segments with live rows, or None
    when a backend cannot take part or none has live rows."""
    items = []
    for seg, live, allowed in segments:
        if allowed == 0:
            continue
        tables = seg.searcher().segment_tables()
        if tables is None:
            return None
        # every fused segment's bitmap and ids as the one array type the kernel is compiled for
        items.append(tables[:-1] + (float(tables[-1]), NO_MASK if live is None else read_only(live),
                               _RANGE_IDS if seg._ids is None else read_only(seg._ids, np.int64), int(seg.id_start)))
    if not items:
        return None
    fused = typed.List.empty_list(typeof(items[0]))
    for item in items:
        fused.append(item)
    return fused


@dataclass(frozen=True)
class Snapshot:
    """One version of the index: segments with their live bitmaps (None = no tombstone), never changed.
    Search methods answer on exactly this version; `codes`/`ids`/`metadata` give its live rows."""

    nbits: int
    segments: tuple[Segment, ...]
    live: tuple[np.ndarray | None, ...]
    dead: tuple[int, ...]  # tombstoned rows per segment

    def __len__(self) -> int:
        return sum(len(s) for s in self.segments) - sum(self.dead)

    def __post_init__(self) -> None:
        unfiltered = sorted(zip(self.segments, self.live, (len(s) - d for s, d in zip(self.segments, self.dead))),
                            key=lambda t: -t[2])
        object.__setattr__(self, "_unfiltered", unfiltered)  # what _masks(None) gives, made once

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the fused lists (made again on first use where they land)."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_fused_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _fused(self, start: int = 0) -> Any:
        """The segments with live rows, from the start-th largest on, as ONE typed list for
        `hashsearch.mih.range_segments` (made on the first unfiltered search that needs it, then kept;
        two readers racing both make an equal one), or None where some segment's backend cannot take
        part (then each segment is searched on its own)."""
        key = f"_fused_{start}"
        fused = self.__dict__.get(key, self)
        if fused is self:
            fused = _fuse(self._unfiltered[start:])
            object.__setattr__(self, key, fused)
        return fused

    def _masks(self, filter: Any) -> list[tuple[Segment, np.ndarray | None, int]]:
        """Per segment, largest first: the rows a query may return (a bitmap of live AND the filter;
        None = all) and how many they are (counted from the tombstones when there is no filter: no
        O(n) pass)."""
        if filter is None:
            return self._unfiltered
        out = []
        for seg, live in zip(self.segments, self.live):
            mask = bitmaps.pack(np.asarray(filter_mask(filter, seg.ids, seg.metadata), bool))
            mask = mask if live is None else mask & live
            out.append((seg, mask, bitmaps.count(mask)))
        return sorted(out, key=lambda t: -t[2])

    def search(self, queries: Any, k: int, filter: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest live items of each query: (nq, min(k, len)) int32 distances and int64 ids,
        rows sorted by (distance, id); padded with (PAD_DISTANCE, -1) only where a filter leaves fewer.

        The largest segment answers top-k first; each smaller one then only needs, for each query, the
        items within that query's k-th distance found so far (a radius search per query, far cheaper
        than its own top-k on a small segment), without a filter all in one kernel call. All parts
        are merged once, at the end."""
        q = check_queries(queries, self.nbits)
        k = min(check_k(k), len(self))
        if k == 0 or q.shape[0] == 0:
            return empty_topk(q.shape[0], k)
        best, parts = None, []
        for at, (seg, mask, allowed) in enumerate(self._masks(filter)):
            if allowed == 0:
                continue
            kk, searcher = min(k, allowed), seg.searcher()
            bounds = None if best is None else best[0][:, -1]
            if bounds is None or bounds.max() == PAD_DISTANCE:  # some query has fewer than k so far
                dist, pos = searcher.search(q, kk, mask=mask)
                best = merge_topk([(dist, seg.id_at(pos))] + ([] if best is None else [best]), k)
                continue
            fused = self._fused(at) if filter is None else None
            if fused is not None:  # this segment and every smaller one within the bounds, in one call
                parts.append(range_segments(as_words(q), bounds, fused, self.nbits, allowed))
                break
            radius = bounds if getattr(searcher, "per_query_radius", False) else int(bounds.max())
            lims, dist, pos = searcher.range_search(q, radius, mask=mask)
            if dist.size:  # everything that can still enter a query's top-k lies within its k-th distance
                parts.append((lims, dist, seg.ids_of(pos)))
        if best is None:  # a filter allows nothing
            return empty_topk(q.shape[0], k)
        return merge_topk_ranges(best, parts, k) if parts else best

    def range_search(self, queries: Any, radius: int, filter: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every live item within `radius` (inclusive; radius >= nbits: all items) of each query:
        CSR (lims, distances, ids), each query's rows sorted by (distance, id)."""
        q = check_queries(queries, self.nbits)
        radius = check_radius(radius, self.nbits)
        fused = self._fused() if filter is None and q.shape[0] else None
        if fused is not None:
            return range_segments(as_words(q), radius, fused, self.nbits, self._unfiltered[0][2])
        parts = []
        for seg, mask, allowed in self._masks(filter):
            if allowed == 0 or q.shape[0] == 0:
                continue
            lims, dist, pos = seg.searcher().range_search(q, radius, mask=mask)
            parts.append((lims, dist, seg.ids_of(pos)))
        return merge_range(parts) if parts else empty_range(q.shape[0])

    def explain(self, nq: int = 1, k: int | None = None, radius: int | None = None) -> list[dict[str, Any]]:
        """What each segment's backend would do for nq queries of top-k or radius, and why."""
        plans = []
        for seg, dead in zip(self.segments, self.dead):
            plan = {"segment": seg.name, "rows": len(seg), "tombstones": dead}
            plan.update(seg.searcher().explain(nq, k=k, radius=radius))
            plans.append(plan)
        return plans

    # ------------------------------------------------------------------ live rows, ascending id
    def _live_parts(self):
        for seg, live in zip(self.segments, self.live):
            if live is None:
                yield seg, slice(None)
            else:
                yield seg, bitmaps.as_bool(live, len(seg))

    def _order(self) -> np.ndarray | None:
        """Order that sorts the concatenated live rows by id (None: they already are)."""
        if len(self.segments) <= 1:
            return None
        ids = np.concatenate([seg.ids[sel] for seg, sel in self._live_parts()])
        return np.argsort(ids, kind="stable")

    def _gather(self, column, order):
        parts = [column(seg, sel) for seg, sel in self._live_parts()]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return out if order is None else out[order]

    @property
    def ids(self) -> np.ndarray:
        """(len,) int64 live ids, ascending."""
        if not self.segments:
            return np.zeros(0, np.int64)
        return self._gather(lambda s, sel: s.ids[sel], self._order())

    @property
    def codes(self) -> np.ndarray:
        """(len, nbits/8) uint8 live codes in ascending id order."""
        if not self.segments:
            return np.zeros((0, self.nbits // 8), np.uint8)
        return self._gather(lambda s, sel: s.codes[sel], self._order())

    @property
    def metadata(self) -> pa.Table | None:
        """Live rows' metadata in ascending id order, or None."""
        tables = [seg.metadata if isinstance(sel, slice) else seg.metadata.filter(pa.array(sel))
                  for seg, sel in self._live_parts() if seg.metadata is not None]
        if not tables:
            return None
        table = pa.concat_tables(tables)
        order = self._order()
        return table if order is None else table.take(pa.array(order))


__all__ = ["PAD_DISTANCE", "Segment", "Snapshot", "check_k", "check_queries", "check_radius", "last_live",
           "new_segment_name"]
