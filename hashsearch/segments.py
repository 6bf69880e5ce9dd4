"""Segments of a live index and the snapshots that readers search.

A `Segment` is a fixed set of rows sorted by id: codes, ids (stored, or a plain range from
`id_start`), optional metadata, and the backend searcher built over its codes once, on first use.
Nothing in a segment ever changes. Removed rows are tombstones: a packed "live" bitmap per segment
(`hashsearch.bitmaps`), replaced (never edited) on each removal. A `Snapshot` is an immutable tuple
of segments with their bitmaps: searching it merges the exact per-segment answers with
`hashsearch.results` (or, where every backend takes part, searches all segments in one kernel call
that merges inside, `hashsearch.mih.range_segments`, with or without a filter), so a reader sees one
whole version of the index while writers build the next. Backend auto plans once per batch for the
whole index (scan, or MIH with m substrings: the largest auto segment's choice) and each segment joins
the fused call with tables for that plan (`AutoBackend.segment_tables`).
"""
from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
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

    def prepare(self, like: Segment | None = None) -> None:
        """Build the backend now, and what its first query would otherwise build (a small auto
        segment's fused-search tables; a large one's MIH tables for the substring counts that `like`,
        the index's largest segment, has built: those its batches planned): for writers and background
        merges, so that no reader waits."""
        prepare = getattr(self.searcher(), "prepare", None)
        if prepare is not None:
            prepare(getattr(like._searcher if like is not None else None, "built_m", ()))

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


def _entry(seg: Segment, rows: np.ndarray | None, m: int | None) -> tuple | None:
    """One segment's item of a fused list: its tables (see `segment_tables`; `m`: the batch's plan),
    the bitmap of the rows it may return, its ids and id_start; None where its backend cannot take part."""
    tables = seg.searcher().segment_tables(m)
    if tables is None:
        return None
    # every fused segment's bitmap and ids as the one array type the kernel is compiled for
    return tables[:-1] + (float(tables[-1]), NO_MASK if rows is None else read_only(rows),
                          _RANGE_IDS if seg._ids is None else read_only(seg._ids, np.int64), int(seg.id_start))


_EMPTY_LISTS: dict[tuple, Any] = {}  # an empty typed list per entry layout: its type made once (~0.1 ms), then copied


def _new_list(item: tuple) -> Any:
    """An empty typed list for entries laid out as `item` (dtypes, dimensions, flags)."""
    layout = tuple((x.dtype.num, x.ndim, x.flags.c_contiguous, x.flags.writeable, x.flags.aligned)
                   if isinstance(x, np.ndarray) else type(x) for x in item)
    empty = _EMPTY_LISTS.get(layout)
    if empty is None:
        empty = _EMPTY_LISTS.setdefault(layout, typed.List.empty_list(typeof(item)))
    return empty.copy()


def _fuse(parts: list[tuple[Segment, np.ndarray | None]], m: int | None = None, base: Any = None) -> Any:
    """Typed list of the entries of `parts` ((segment, rows bitmap or None), each with rows to return)
    appended to a copy of the typed list `base` (a copy costs microseconds, each entry ~2 us more),
    or None where a backend cannot take part or there is nothing to search."""
    items = [_entry(seg, rows, m) for seg, rows in parts]
    if any(item is None for item in items) or not (items or base):
        return None
    fused = base.copy() if base is not None else _new_list(items[0])
    for item in items:
        fused.append(item)
    return fused


class FusedLists:
    """The fused lists that the snapshots of one index share: per slot (the plan and the segments a
    search fuses), the list of all but the last of those segments, kept while they and their bitmaps are
    the same objects. In an index's snapshot the last is the growing segment, new in each version, so a
    search after an add copies the kept list and appends one entry instead of making the list again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[Any, tuple[list, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {}  # pickled empty: typed lists are made again where they land

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()

    def clear(self) -> None:
        """Forget the kept lists (the index replaced segments: the old ones need not stay in memory)."""
        with self._lock:
            self._kept.clear()

    def fuse(self, slot: Any, parts: list[tuple[Segment, np.ndarray | None]], m: int | None) -> Any:
        """`_fuse(parts, m)`, all but the last part from the list kept for `slot` (made and kept when
        those parts changed)."""
        head = parts[:-1]
        with self._lock:
            kept = self._kept.get(slot)
        same = kept is not None and len(kept[0]) == len(head) and all(
            a is c and b is d for (a, b), (c, d) in zip(kept[0], head))
        if not same:
            kept = (head, _fuse(head, m) if head else None)
            if head and kept[1] is None:
                return None
            with self._lock:
                self._kept[slot] = kept
        return _fuse(parts[-1:], m, kept[1])


@dataclass(frozen=True)
class Snapshot:
    """One version of the index: segments with their live bitmaps (None = no tombstone), never changed.
    Search methods answer on exactly this version; `codes`/`ids`/`metadata` give its live rows."""

    nbits: int
    segments: tuple[Segment, ...]
    live: tuple[np.ndarray | None, ...]
    dead: tuple[int, ...]  # tombstoned rows per segment
    fused_lists: FusedLists | None = field(default=None, compare=False, repr=False)  # shared by an index's snapshots

    def __len__(self) -> int:
        return sum(len(s) for s in self.segments) - sum(self.dead)

    def __post_init__(self) -> None:
        allowed = [len(s) - d for s, d in zip(self.segments, self.dead)]
        ranked = sorted(range(len(self.segments)), key=lambda i: -allowed[i])
        object.__setattr__(self, "_ranked", ranked)  # segment positions, most rows to return first
        object.__setattr__(self, "_unfiltered", [(self.segments[i], self.live[i], allowed[i]) for i in ranked])
        if self.fused_lists is None:
            object.__setattr__(self, "fused_lists", FusedLists())

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the fused lists (made again on first use where they land)."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_fused_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _fused(self, start: int = 0, m: int | None = None) -> Any:
        """The segments with live rows, from the start-th largest on, as ONE typed list for
        `hashsearch.mih.range_segments` with the batch's plan `m` (made on the first unfiltered search
        that needs it from the list the index's snapshots share, then kept; two readers racing both
        make an equal one), or None where some segment's backend cannot take part (then each segment
        is searched on its own). Snapshot order: the growing segment last."""
        key = f"_fused_{start}_{m}"
        fused = self.__dict__.get(key, self)
        if fused is self:
            at = sorted(i for i, (_, _, allowed) in zip(self._ranked[start:], self._unfiltered[start:]) if allowed)
            parts = [(self.segments[i], self.live[i]) for i in at]
            fused = self.fused_lists.fuse((start, m), parts, m) if parts else None
            object.__setattr__(self, key, fused)
        return fused

    def _plan(self, masks: list[tuple[Segment, np.ndarray | None, int]], nq: int, k: int | None = None,
              radius: int | None = None) -> Any:
        """The plan of this batch for the whole index (`hashsearch.planner.Estimate`: scan, or MIH with
        m substrings): the choice of the largest segment that plans (backend auto), from its rows, the
        batch and its rows' allowed share; None when no segment plans (mih, numba: fixed plans)."""
        for seg, mask, allowed in masks:
            plan = getattr(seg.searcher(), "plan", None) if allowed else None
            if plan is not None:
                return plan(nq, k=k, radius=radius, mask=mask, share=allowed / len(seg))
        return None

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

    def _fused_masks(self, masks: list[tuple[Segment, np.ndarray | None, int]], start: int, filter: Any,
                     plan: Any) -> Any:
        """The fused list of the segments of `masks` from the start-th on, with the batch's plan: kept
        (`_fused`) without a filter, made for this search with one."""
        m = plan.m if plan is not None and plan.plan == "mih" else None
        if filter is None:
            return self._fused(start, m)
        return _fuse([(seg, mask) for seg, mask, allowed in masks[start:] if allowed], m)

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
        masks = self._masks(filter)
        for at, (seg, mask, allowed) in enumerate(masks):
            if allowed == 0:
                continue
            kk, searcher = min(k, allowed), seg.searcher()
            bounds = None if best is None else best[0][:, -1]
            if bounds is None or bounds.max() == PAD_DISTANCE:  # some query has fewer than k so far
                dist, pos = searcher.search(q, kk, mask=mask)
                best = merge_topk([(dist, seg.id_at(pos))] + ([] if best is None else [best]), k)
                continue
            fused = self._fused_masks(masks, at, filter, self._plan(masks, q.shape[0], k=k))
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
        masks = self._masks(filter)
        if q.shape[0] and masks:
            plan = self._plan(masks, q.shape[0], radius=radius)
            # where the largest segment is scanned (planned so, or a scan backend), the scan kernel
            # answers faster (queries share each block it reads; the fused call scans query by query)
            scanned = masks[0][0].backend == SCAN_BACKEND if plan is None else plan.plan == "scan"
            fused = None if scanned else self._fused_masks(masks, 0, filter, plan)
            if fused is not None:
                return range_segments(as_words(q), radius, fused, self.nbits, masks[0][2])
        parts = []
        for seg, mask, allowed in masks:
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


__all__ = ["PAD_DISTANCE", "FusedLists", "Segment", "Snapshot", "check_k", "check_queries", "check_radius", "last_live",
           "new_segment_name"]
