"""`HammingIndex`: exact Hamming-space search over packed binary codes that stays fast while it changes.

The index is a list of immutable sealed segments plus one small growing segment (`hashsearch.segments`):
`add` appends to the growing segment, which a linear scan searches; past `segment_rows` rows (a few
thousand: its scan stays cheap) it is sealed and gets its own backend structure (MIH tables, a FAISS
index...), never rebuilding the others. `remove` marks tombstones (a copied bitmap per segment)
that every search skips exactly. A background thread merges segments, as LSM stores do: below the
floor tier (segment_rows x merge_factor**3 rows) all sealed segments are merged into one (leveled: each
query pays one small segment, not many, and rebuilding a small one is cheap); above it, whenever
`merge_factor` segments share a size tier (segment_rows x merge_factor**t rows) they become one of
the next tier (size-tiered: the number of segments stays logarithmic, and a large segment is rebuilt
only once as many rows as it holds have been added, never for small adds). It also merges a segment
whose tombstones pass `max_dead_fraction`, and the smallest ones past `max_segments`. `compact`
merges everything now. Results of all segments merge exactly (`hashsearch.results`).

Threads: any number of threads may search while one thread adds, removes, compacts or saves (writers
are serialised by a lock). A search runs on the snapshot current when it starts: one whole version.

Conventions (the same as FAISS): distances int32, ids int64; `search` rows are sorted by
(distance, id) and have min(k, len(index)) columns, padded with (PAD_DISTANCE = 2**31 - 1, -1) only
where a filter leaves fewer matches. `range_search` is INCLUSIVE (distance <= radius; a radius of
nbits or more returns every item) and returns CSR (lims, distances, ids), rows sorted by
(distance, id). Query arrays of any strides are accepted. Ids are unique non-negative int64; by
default each added code gets the next id after the largest live one.
"""
from __future__ import annotations

import math
import os
import threading
import uuid
import warnings
from typing import Any

import faiss
import numba
import numpy as np
import pyarrow as pa

from hashsearch import bitmaps, storage
from hashsearch.codes import check_nbits, validate_codes
from hashsearch.errors import InvalidInputError, UnknownIdError
from hashsearch.mih import small_segment_tables
from hashsearch.results import PAD_DISTANCE
from hashsearch.segments import SCAN_BACKEND, FusedLists, Segment, Snapshot, get_backend, last_live
from hashsearch.storage import SegmentRows, check_ids, check_metadata

DEFAULT_BACKEND = "auto"  # scan or MIH per query batch, by the planner's cost model

SETTINGS = {"segment_rows": 1 << 12, "merge_factor": 4, "max_segments": 8, "max_dead_fraction": 0.2}
FLOOR_TIER = 3  # segments of lower tiers (below segment_rows x merge_factor**3 rows) are merged into one


def set_num_threads(n: int) -> None:
    """Threads for both numba kernels (and MIH) and FAISS, e.g. to benchmark at 1 and 2 threads."""
    numba.set_num_threads(int(n))
    faiss.omp_set_num_threads(int(n))


class GrowingRows:
    """Rows kept in one array with spare capacity that doubles when full: n appends cost O(total
    rows) copied, not O(n * total). Rows below the count are never written again, so views of them
    (held by snapshots) stay valid while later rows are appended."""

    def __init__(self, rows: np.ndarray):
        self._data = rows
        self._n = rows.shape[0]

    @property
    def array(self) -> np.ndarray:
        return self._data[:self._n]

    def append(self, rows: np.ndarray) -> None:
        need = self._n + rows.shape[0]
        if need > self._data.shape[0]:
            grown = np.empty((max(need, 2 * self._data.shape[0]),) + self._data.shape[1:], self._data.dtype)
            grown[:self._n] = self.array
            self._data = grown
        self._data[self._n:need] = rows
        self._n = need


def _check_settings(settings: dict[str, Any]) -> dict[str, Any]:
    out = dict(SETTINGS)
    for key, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or value <= 0:
            raise InvalidInputError(f"index setting {key!r} must be a positive number, got {value!r}")
        out[key] = float(value) if key == "max_dead_fraction" else int(value)
    if out["max_dead_fraction"] > 1:
        raise InvalidInputError(f"max_dead_fraction must lie in (0, 1], got {out['max_dead_fraction']}")
    if out["merge_factor"] < 2:
        raise InvalidInputError(f"merge_factor must be at least 2 (segments merged at once), got {out['merge_factor']}")
    return out


def segment_params(backend: str, params: dict[str, Any], nbits: int, rows: int) -> dict[str, Any]:
    """Build parameters of one segment: the index's, except that a small MIH segment gets the short
    substrings and cheaper probe of `hashsearch.mih.small_segment_tables`, where they were not chosen."""
    small = small_segment_tables(nbits, rows) if backend == "mih" else None
    if small is None:
        return params
    return {"m": small[0], "probe_cost": small[1], **params}


def _range_start(ids: np.ndarray) -> int | None:
    """ids[0] when ids are ids[0], ids[0]+1, ... (then they need no memory), else None."""
    if ids.size == 0:
        return 0
    return int(ids[0]) if int(ids[-1]) - int(ids[0]) == ids.size - 1 else None  # ids ascend and are unique


class HammingIndex:
    """Exact k-NN and radius search over `nbits`-bit packed codes; see the module docstring.

    backend: what each sealed segment is searched with ("auto" by default, "numba", "faiss", "mih",
    "gpu": the registry of `hashsearch.backends`); params: its build parameters. segment_rows: rows of the growing segment
    before it is sealed; merge_factor: segments of one size tier merged at once; max_segments,
    max_dead_fraction: further thresholds of background compaction; auto_compact=False leaves
    compaction to `compact()`."""

    def __init__(self, nbits: int, backend: str = DEFAULT_BACKEND, *, segment_rows: int = SETTINGS["segment_rows"],
                 merge_factor: int = SETTINGS["merge_factor"], max_segments: int = SETTINGS["max_segments"],
                 max_dead_fraction: float = SETTINGS["max_dead_fraction"], auto_compact: bool = True, **params: Any):
        self.nbits = check_nbits(nbits)
        # building over no codes checks the backend's name and parameters at once
        get_backend(backend)(np.zeros((0, self.nbits // 8), np.uint8), self.nbits, **params)
        self.backend, self.params = backend, dict(params)
        self.settings = _check_settings({"segment_rows": segment_rows, "merge_factor": merge_factor,
                                         "max_segments": max_segments, "max_dead_fraction": max_dead_fraction})
        self.auto_compact = bool(auto_compact)
        self.uid = uuid.uuid4().hex  # the lineage a save recognises as "this index's own directory"
        self._lock = threading.RLock()  # writers: add, remove, compaction swaps, save
        self._compact_lock = threading.Lock()
        self._compactor: threading.Thread | None = None
        self.compaction_error: BaseException | None = None
        self._sealed: tuple[tuple[Segment, np.ndarray | None, int], ...] = ()  # (segment, live, dead)
        self._has_metadata: bool | None = None
        self._meta_schema: pa.Schema | None = None
        self._fused_lists = FusedLists()  # the sealed segments' part of the fused search lists, kept between versions
        self._reset_growing()
        self._publish()

    # ------------------------------------------------------------------ state
    def _reset_growing(self) -> None:
        self._g_codes = GrowingRows(np.empty((0, self.nbits // 8), np.uint8))
        self._g_ids = GrowingRows(np.empty(0, np.int64))
        self._g_meta: pa.Table | None = None

    def _growing(self) -> Segment | None:
        if self._g_ids.array.size == 0:
            return None
        return Segment(self._g_codes.array, self._g_ids.array, 0, self.nbits, self._g_meta, SCAN_BACKEND, {})

    def _publish(self) -> None:
        """Make the current state the snapshot new readers see (one attribute store: atomic)."""
        segs = [s for s, _, _ in self._sealed]
        lives = [live for _, live, _ in self._sealed]
        dead = [d for _, _, d in self._sealed]
        growing = self._growing()
        if growing is not None:
            segs.append(growing)
            lives.append(None)
            dead.append(0)
        self._snap = Snapshot(self.nbits, tuple(segs), tuple(lives), tuple(dead), self._fused_lists)

    def snapshot(self) -> Snapshot:
        """The current version: an immutable view whose search/range_search answer on exactly it."""
        return self._snap

    # ------------------------------------------------------------------ accessors
    @property
    def ntotal(self) -> int:
        return len(self._snap)

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return (f"HammingIndex(nbits={self.nbits}, backend={self.backend!r}, ntotal={self.ntotal}, "
                f"segments={len(self._snap.segments)})")

    @property
    def codes(self) -> np.ndarray:
        """(ntotal, nbits/8) uint8 live codes in ascending id order."""
        return self._snap.codes

    @property
    def ids(self) -> np.ndarray:
        """(ntotal,) int64 live ids, ascending."""
        return self._snap.ids

    @property
    def metadata(self) -> pa.Table | None:
        """Per-item columns in the same order as `codes`, or None."""
        return self._snap.metadata

    @property
    def nbytes(self) -> int:
        """Memory held by codes, stored ids, tombstone masks and the built backend structures."""
        snap = self._snap
        return sum(s.nbytes for s in snap.segments) + sum(0 if m is None else m.nbytes for m in snap.live)

    # ------------------------------------------------------------------ ids
    def _find_live(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each id: the snapshot segment holding it live and its row there (-1, -1 when none)."""
        snap = self._snap
        where = np.full(ids.size, -1, np.int64)
        rows = np.full(ids.size, -1, np.int64)
        for s, (seg, live) in enumerate(zip(snap.segments, snap.live)):
            pos = seg.positions(ids)
            hit = pos >= 0
            if live is not None:
                hit[hit] = bitmaps.is_set(live, pos[hit])
            where[hit], rows[hit] = s, pos[hit]
        return where, rows

    def _max_id(self) -> int:
        """Largest live id, -1 when empty."""
        best = -1
        for seg, live in zip(self._snap.segments, self._snap.live):
            pos = last_live(live, len(seg))
            if pos >= 0:
                best = max(best, int(seg.id_at(np.array([pos]))[0]))
        return best

    # ------------------------------------------------------------------ mutation
    def add(self, codes: np.ndarray, ids: Any = None, metadata: pa.Table | dict | None = None) -> None:
        """Add packed codes (any strides) with their ids (default: continuing after the largest id) and
        optional metadata rows. Raises InvalidInputError on bad codes, negative or duplicate ids."""
        codes = validate_codes(np.ascontiguousarray(codes) if isinstance(codes, np.ndarray) else codes, self.nbits)
        n = codes.shape[0]
        metadata = check_metadata(metadata, n)
        if ids is not None:
            ids = check_ids(ids, n)
            if n and ids.min() < 0:
                raise InvalidInputError(f"ids must be non-negative (-1 marks padding), got {ids.min()}")
        with self._lock:
            if self._has_metadata is not None and (metadata is None) == self._has_metadata:
                raise InvalidInputError("metadata must be given with every add or with none "
                                        f"(the index {'has' if self._has_metadata else 'has no'} metadata)")
            if n == 0:
                return
            if ids is None:
                start = self._max_id() + 1
                ids = np.arange(start, start + n, dtype=np.int64)
            else:
                self._check_new_ids(ids)
            metadata = self._check_schema(metadata)
            self._append_growing(codes, ids, metadata)
            self._has_metadata = metadata is not None
            if self._g_ids.array.size >= self.settings["segment_rows"]:
                self._seal_growing(build=n < self.settings["segment_rows"])
            self._publish()
            self._maybe_compact()

    def _check_new_ids(self, ids: np.ndarray) -> None:
        uniq, counts = np.unique(ids, return_counts=True)
        if uniq.size < ids.size:
            raise InvalidInputError(f"duplicate id {uniq[counts > 1][0]}: ids must be unique in the index")
        where, _ = self._find_live(ids)
        if (where >= 0).any():
            raise InvalidInputError(f"duplicate id {ids[where >= 0][0]}: ids must be unique in the index")

    def _check_schema(self, metadata: pa.Table | None) -> pa.Table | None:
        if metadata is None:
            return None
        if self._meta_schema is None:
            self._meta_schema = metadata.schema
        elif metadata.schema != self._meta_schema:
            try:
                metadata = pa.concat_tables([self._meta_schema.empty_table(), metadata])
            except pa.ArrowInvalid as exc:
                raise InvalidInputError(f"metadata columns differ from the index's: {exc}") from None
        return metadata

    def _append_growing(self, codes: np.ndarray, ids: np.ndarray, metadata: pa.Table | None) -> None:
        g_ids = self._g_ids.array
        in_order = (ids.size == 1 or bool(np.all(ids[1:] > ids[:-1]))) and (g_ids.size == 0 or ids[0] > g_ids[-1])
        meta = metadata if self._g_meta is None else pa.concat_tables([self._g_meta, metadata]) \
            if metadata is not None else None
        if in_order:
            self._g_codes.append(codes)
            self._g_ids.append(ids)
        else:  # keep the growing segment sorted by id: it is small, so re-sorting it is cheap
            all_ids = np.concatenate([g_ids, ids])
            order = np.argsort(all_ids, kind="stable")
            self._g_codes = GrowingRows(np.concatenate([self._g_codes.array, codes])[order])
            self._g_ids = GrowingRows(all_ids[order])
            meta = None if meta is None else meta.take(pa.array(order))
        if meta is not None and meta.num_columns and meta.column(0).num_chunks > 64:
            meta = meta.combine_chunks()
        self._g_meta = meta

    def _seal_growing(self, build: bool) -> None:
        """Turn the growing rows into a sealed segment (its backend built now when `build`)."""
        ids = self._g_ids.array.copy()
        start = _range_start(ids)
        seg = Segment(self._g_codes.array.copy(), None if start is not None else ids, start or 0, self.nbits,
                      self._g_meta, self.backend, segment_params(self.backend, self.params, self.nbits, ids.size))
        if build:
            seg.prepare()
        self._sealed += ((seg, None, 0),)
        self._reset_growing()

    def remove(self, ids: Any) -> int:
        """Remove the items with these ids; returns how many. An id not in the index raises
        UnknownIdError and removes nothing."""
        ids = np.unique(np.atleast_1d(np.asarray(ids)))
        if ids.size == 0:
            return 0
        if not np.issubdtype(ids.dtype, np.integer):
            raise InvalidInputError(f"ids must be integers, got dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        with self._lock:
            where, rows = self._find_live(ids)
            if (where < 0).any():
                missing = ids[where < 0]
                raise UnknownIdError(f"id {missing[0]} is not in the index ({missing.size} unknown id(s) given)")
            sealed = list(self._sealed)
            for s, (seg, live, dead) in enumerate(sealed):
                pos = rows[where == s]
                if pos.size:
                    live = bitmaps.ones(len(seg)) if live is None else live.copy()  # copy-on-write: n / 8 bytes
                    bitmaps.clear(live, pos)
                    live.flags.writeable = False
                    sealed[s] = (seg, live, dead + pos.size)
            self._sealed = tuple(sealed)
            gone = rows[where == len(sealed)]
            if gone.size:
                self._drop_growing(gone)
            self._publish()
            self._maybe_compact()
        return int(ids.size)

    def _drop_growing(self, rows: np.ndarray) -> None:
        keep = np.ones(self._g_ids.array.size, bool)
        keep[rows] = False
        meta = None if self._g_meta is None else self._g_meta.filter(pa.array(keep))
        self._g_codes = GrowingRows(self._g_codes.array[keep])
        self._g_ids = GrowingRows(self._g_ids.array[keep])
        self._g_meta = meta

    # ------------------------------------------------------------------ compaction
    def compact(self) -> None:
        """Merge every segment into one without tombstoned rows, now (answers are unchanged)."""
        with self._compact_lock, self._lock:
            if self._g_ids.array.size:
                self._seal_growing(build=False)
            if len(self._sealed) > 1 or any(d for _, _, d in self._sealed):
                merged = _merge([(s, live) for s, live, _ in self._sealed], self)
                self._sealed = ((merged, None, 0),)
                self._fused_lists.clear()
            self._publish()

    def _tier(self, rows: int) -> int:
        """Size tier of a segment of `rows` live rows: t for about segment_rows x merge_factor**t."""
        ratio = max(rows, 1) / self.settings["segment_rows"]
        return max(0, int(math.log(ratio, self.settings["merge_factor"]) + 0.5))

    def _pick(self) -> list[int]:
        """Sealed segments a background compaction should merge now (empty: none): those past the
        tombstone threshold; every one below the floor tier when there are two; else the merge_factor
        smallest of the lowest tier that holds that many; the smallest ones while there are more than
        max_segments."""
        frac, factor = self.settings["max_dead_fraction"], self.settings["merge_factor"]
        chosen = {i for i, (s, _, d) in enumerate(self._sealed) if d and d >= frac * len(s)}
        tiers: dict[int, list[int]] = {}
        for i, (s, _, d) in enumerate(self._sealed):
            tiers.setdefault(self._tier(len(s) - d), []).append(i)
        small = [i for tier, at in tiers.items() if tier < FLOOR_TIER for i in at]
        if len(small) >= 2:
            chosen.update(small)
            tiers = {}
        for tier in sorted(tiers):
            if len(tiers[tier]) >= factor:
                chosen.update(sorted(tiers[tier], key=lambda i: len(self._sealed[i][0]) - self._sealed[i][2])[:factor])
                break
        extra = len(self._sealed) - self.settings["max_segments"]
        if extra > 0:
            by_size = sorted(range(len(self._sealed)), key=lambda i: len(self._sealed[i][0]) - self._sealed[i][2])
            chosen.update(by_size[:extra + self.settings["max_segments"] // 2])
        return sorted(chosen)

    def _maybe_compact(self) -> None:
        """Start the background compaction thread when thresholds are passed (called under the lock)."""
        if not self.auto_compact or (self._compactor is not None and self._compactor.is_alive()) or not self._pick():
            return
        self._compactor = threading.Thread(target=self._background_compaction, name="hashsearch-compaction",
                                           daemon=True)
        self._compactor.start()

    def _background_compaction(self) -> None:
        """Merge picked segments outside the writer lock, then swap them in, carrying over the
        tombstones that writers set meanwhile; repeat while the thresholds are still passed."""
        try:
            while True:
                with self._compact_lock:
                    with self._lock:
                        picked = [self._sealed[i] for i in self._pick()]
                        if not picked:  # decided under the writer lock: a later add starts a new thread
                            self._compactor = None
                            return
                        largest = max(self._sealed, key=lambda t: len(t[0]) - t[2])[0]
                    merged = _merge([(s, live) for s, live, _ in picked], self)
                    merged.prepare(like=largest)
                    with self._lock:
                        self._swap(picked, merged)
                        self._fused_lists.clear()
                        self._publish()
        except BaseException as exc:  # noqa: BLE001 - reported, and the index stays as it was
            self.compaction_error = exc
            warnings.warn(f"background compaction failed: {exc!r}", RuntimeWarning, stacklevel=1)

    def _swap(self, picked: list[tuple[Segment, np.ndarray | None, int]], merged: Segment) -> None:
        """Replace the picked segments by `merged`, tombstoning rows removed since it was built."""
        names = {s.name for s, _, _ in picked}
        now = {s.name: (live, d) for s, live, d in self._sealed}
        late = []
        for seg, then, d in picked:
            live_now, dead_now = now[seg.name]
            if dead_now != d:
                was = bitmaps.ones(len(seg)) if then is None else then
                late.append(seg.id_at(np.flatnonzero(bitmaps.as_bool(was & ~live_now, len(seg)))))
        live, dead = None, 0
        if late:
            gone = np.concatenate(late)
            live = bitmaps.ones(len(merged))
            bitmaps.clear(live, merged.positions(gone))
            live.flags.writeable = False
            dead = gone.size
        self._sealed = tuple(x for x in self._sealed if x[0].name not in names) + ((merged, live, dead),)

    def wait_for_compaction(self, timeout: float | None = None) -> None:
        """Block until a running background compaction ends (tests, benchmarks, before exit)."""
        thread = self._compactor
        if thread is not None:
            thread.join(timeout)

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int, filter: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest live codes of each query: (nq, min(k, ntotal)) int32 distances and int64 ids,
        rows sorted by (distance, id). `filter`: an id allow-list or a pyarrow compute Expression over
        the metadata; rows it leaves short are padded with (PAD_DISTANCE, -1)."""
        return self._snap.search(queries, k, filter=filter)

    def range_search(self, queries: np.ndarray, radius: int, filter: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every live code within `radius` (inclusive; >= nbits: all) of each query: CSR (lims (nq+1,)
        int64, distances int32, ids int64), query i's results in [lims[i], lims[i+1]) sorted by
        (distance, id). `filter` as for `search`."""
        return self._snap.range_search(queries, radius, filter=filter)

    def explain(self, queries: np.ndarray | int = 1, k: int | None = None, radius: int | None = None) -> list[dict[str, Any]]:
        """Per segment: rows, tombstones and what its backend would do for these queries (or this
        many) at top-k or radius, and why."""
        nq = queries if isinstance(queries, (int, np.integer)) else np.atleast_2d(queries).shape[0]
        return self._snap.explain(int(nq), k=k, radius=radius)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        """Write the index to directory `path`, writing only segments not already there (an
        incremental save into the directory the index came from needs no flag); `overwrite=True`
        replaces another index there. `manifest.json` is the commit point: readers see the old or
        the new version. Refuses a non-empty directory that is not a hashsearch index."""
        with self._lock:
            snap = self._snap
            rows = []
            for seg, live in zip(snap.segments, snap.live):
                start = _range_start(seg.ids) if seg.ids_stored else seg.id_start  # a range needs no column
                dead = None if live is None else np.flatnonzero(~bitmaps.as_bool(live, len(seg)))
                rows.append(SegmentRows(name=seg.name, codes=seg.codes, ids=seg.ids if start is None else None,
                                        id_start=start or 0, metadata=seg.metadata, dead=dead, files=seg.files))
            written = storage.write_segments(
                path, rows, nbits=self.nbits, backend=self.backend, params=self.params,
                settings=self.settings, uid=self.uid, overwrite=overwrite)
            for seg, files in zip(snap.segments, written):
                seg.files = files

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True, verify: bool = True) -> "HammingIndex":
        """Open an index saved by `save` (or by the previous release's single-file format); with
        mmap=True the codes stay read-only memory maps. verify=False skips SHA-256 (sizes are checked)."""
        stored = storage.read_index(path, mmap=mmap, verify=verify)
        index = cls(stored.nbits, backend=stored.backend, **stored.settings, **stored.params)
        index.uid = stored.uid
        sealed = []
        for rows in stored.segments:
            seg = Segment(rows.codes, rows.ids, rows.id_start, stored.nbits, rows.metadata, stored.backend,
                          segment_params(stored.backend, stored.params, stored.nbits, rows.codes.shape[0]),
                          name=rows.name, files=rows.files)
            live = None
            if rows.dead is not None and rows.dead.size:
                live = bitmaps.ones(len(seg))
                bitmaps.clear(live, np.asarray(rows.dead, np.int64))
                live.flags.writeable = False
            sealed.append((seg, live, 0 if rows.dead is None else int(rows.dead.size)))
            if rows.metadata is not None:
                index._has_metadata, index._meta_schema = True, rows.metadata.schema
            elif len(seg):
                index._has_metadata = False
        index._sealed = tuple(sealed)
        index._publish()
        return index

    def __getstate__(self) -> dict[str, Any]:
        """Pickle (e.g. to send to a Ray actor) the current version, without locks or threads."""
        with self._lock:
            state = dict(self.__dict__)
        for key in ("_lock", "_compact_lock", "_compactor", "_snap", "compaction_error"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock, self._compact_lock = threading.RLock(), threading.Lock()
        self._compactor, self.compaction_error = None, None
        self._publish()


def _merge(parts: list[tuple[Segment, np.ndarray | None]], index: HammingIndex) -> Segment:
    """One segment of the live rows of `parts`, sorted by id (ids are unique among live rows)."""
    sel = [slice(None) if live is None else bitmaps.as_bool(live, len(s)) for s, live in parts]
    codes = np.concatenate([s.codes[m] for (s, _), m in zip(parts, sel)]) if len(parts) > 1 \
        else np.ascontiguousarray(parts[0][0].codes[sel[0]])
    ids = np.concatenate([s.ids[m] for (s, _), m in zip(parts, sel)])
    tables = [s.metadata if isinstance(m, slice) else s.metadata.filter(pa.array(m))
              for (s, _), m in zip(parts, sel) if s.metadata is not None]
    meta = pa.concat_tables(tables).combine_chunks() if tables else None
    if ids.size > 1 and not np.all(ids[1:] > ids[:-1]):
        order = np.argsort(ids, kind="stable")
        codes, ids = codes[order], ids[order]
        meta = None if meta is None else meta.take(pa.array(order))
    start = _range_start(ids)
    return Segment(codes, None if start is not None else ids, start or 0, index.nbits, meta,
                   index.backend, segment_params(index.backend, index.params, index.nbits, ids.size))


__all__ = ["DEFAULT_BACKEND", "PAD_DISTANCE", "HammingIndex", "Snapshot", "set_num_threads"]
