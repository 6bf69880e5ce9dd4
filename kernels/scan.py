"""Linear-scan Hamming search over codes held as unsigned words of 1 to 8 bytes (`popcount.scan_words`).

Exact top-k and radius search. Distances are small integers (0..nbits), so top-k keeps candidates
below a shrinking threshold and selects with a histogram (counting select) instead of a heap; the
results come out sorted by (distance, position), so ties go to the smaller position. Queries are
processed in groups that share each database block while it sits in L1; when there are fewer
queries than threads, each query's scan is split over database parts and merged (FAISS keeps a
single query on one thread).

An optional `mask` (a packed bitmap of the n rows, `hashsearch.bitmaps`: bit set = the row may be
returned) is tested inside the kernels, only for rows that would otherwise be kept, so top-k is exact
among the allowed rows. The kernels always take a read-only uint8 bitmap (`kernel_mask`; `NO_MASK`, the
empty one, = every row), so that each compiles once per word type, not once per mask kind (None,
writable, read-only); the radius loop tests for the empty bitmap once a block, so the unmasked scan runs
the same loop as before.

Only the top-k task loop is compiled with `parallel=True` (one small prange loop per word type); the
radius search and MIH run nogil kernels on Python threads (`map_threads`).
"""
from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from hashsearch.kernels.popcount import popcount64

PAD_DISTANCE = np.int32(np.iinfo(np.int32).max)  # what FAISS returns past the last result
BLOCK = 256  # database rows per block: 256 rows x 1024 bits = 32 KiB, one L1
QGROUP = 8  # queries that share one database block
MIN_PART = 1 << 15  # fewest database rows worth a thread of their own
SMALL_WORK = 1 << 17  # rows x queries below which a search runs on the calling thread: handing tasks to
# the pool costs more than this scan (~0.1 ms)


def read_only(array: np.ndarray, dtype: type | None = None) -> np.ndarray:
    """A read-only C-contiguous view of `array` (a copy when it is not contiguous or not of `dtype`):
    numba types read-only and writable arrays apart, so a kernel given both would compile twice."""
    view = np.ascontiguousarray(array, dtype).view()
    view.flags.writeable = False
    return view


NO_MASK = read_only(np.zeros(0, np.uint8))  # the empty bitmap: every row may be returned


def kernel_mask(mask: np.ndarray | None) -> np.ndarray:
    """The one mask type the kernels take: a read-only packed uint8 bitmap (as `backends.check_mask`
    makes), `NO_MASK` for None."""
    return NO_MASK if mask is None else read_only(mask)


@njit(inline="always", cache=True)
def lead_words(q: np.ndarray, qi: int) -> tuple:
    """Query qi's first four words (repeating when it has fewer), loaded once per scan: held in
    registers, they let LLVM vectorise loops that also store (it cannot prove a store misses q)."""
    nw = q.shape[1]
    return q[qi, 0], q[qi, 1 % nw], q[qi, 2 % nw], q[qi, 3 % nw]


@njit(inline="always", cache=True)
def row_distance(q: np.ndarray, qi: int, qw: tuple, flat: np.ndarray, nw: int, j: int) -> int:
    """Hamming distance between query qi (`qw` = lead_words(q, qi)) and row j of `flat`, the
    database's nw-word rows as one 1-D array. Widths of 1, 2 and 4 words are written out with
    literal strides: the branch is the same for a whole loop, so LLVM unswitches it and vectorises."""
    if nw == 1:
        return popcount64(qw[0] ^ flat[j])
    if nw == 2:
        return popcount64(qw[0] ^ flat[2 * j]) + popcount64(qw[1] ^ flat[2 * j + 1])
    if nw == 4:
        return (popcount64(qw[0] ^ flat[4 * j]) + popcount64(qw[1] ^ flat[4 * j + 1])
                + popcount64(qw[2] ^ flat[4 * j + 2]) + popcount64(qw[3] ^ flat[4 * j + 3]))
    s = 0
    for w in range(nw):
        s += popcount64(q[qi, w] ^ flat[nw * j + w])
    return s


@njit(inline="always", cache=True)
def allowed(mask: np.ndarray, j: int) -> bool:
    """Whether row j's bit is set in the packed bitmap `mask` (bit j & 7 of byte j >> 3)."""
    return (mask[j >> 3] >> (j & 7)) & 1 != 0


@njit(inline="always", cache=True)
def flat_rows(db: np.ndarray) -> np.ndarray:
    """The (n, nw) word matrix as one 1-D array (a view: rows are C-contiguous); made once per scan."""
    return db.reshape(db.shape[0] * db.shape[1])


@njit(inline="always", cache=True, nogil=True)
def _block_min(q, qi, flat, nw, j0, j1):
    """Minimum distance from query qi to rows j0..j1: a pure reduction, the cheapest way to skip a
    block that holds no candidate."""
    mn = 1 << 30
    qw, blk = lead_words(q, qi), flat[j0 * nw:j1 * nw]
    for t in range(j1 - j0):
        mn = min(mn, row_distance(q, qi, qw, blk, nw, t))
    return mn


@njit(cache=True, nogil=True)
def _block_distances(q, qi, flat, nw, j0, j1, buf):
    """Distances from query qi to rows j0..j1 into buf[:j1 - j0]."""
    qw, blk = lead_words(q, qi), flat[j0 * nw:j1 * nw]
    for t in range(j1 - j0):
        buf[t] = row_distance(q, qi, qw, blk, nw, t)


@njit(cache=True, nogil=True)
def emit_sorted(cd, cj, c, k, maxd, out_d, out_j):
    """Write the first k of candidates (cd, cj)[:c] in (distance, input order) order, padding with
    (PAD_DISTANCE, -1): a stable counting sort, since distances lie in 0..maxd."""
    start = np.zeros(maxd + 2, np.int64)
    for t in range(c):
        start[cd[t] + 1] += 1
    for d in range(1, maxd + 2):
        start[d] += start[d - 1]
    for t in range(c):
        s = start[cd[t]]
        start[cd[t]] = s + 1
        if s < k:
            out_d[s] = cd[t]
            out_j[s] = cj[t]
    for s in range(min(c, k), k):
        out_d[s] = PAD_DISTANCE
        out_j[s] = -1


@njit(cache=True, nogil=True)
def _compact(cd, cj, c, k, hist):
    """Keep the k best of c > k candidates (held in scan order); return the new count and the
    threshold T: later rows qualify only if their distance is < T (ties at T lose to earlier rows)."""
    acc = 0
    t_ = 0
    while acc + hist[t_] < k:
        acc += hist[t_]
        t_ += 1
    keep_eq = k - acc
    kept = 0
    for t in range(c):
        d = cd[t]
        if d < t_ or (d == t_ and keep_eq > 0):
            if d == t_:
                keep_eq -= 1
            cd[kept] = d
            cj[kept] = cj[t]
            kept += 1
    hist[t_] = k - acc
    hist[t_ + 1:] = 0
    return kept, t_


@njit(cache=True, nogil=True)
def _topk_task(q, g0, g1, db, j0, j1, k, maxd, out_d, out_j, part, mask):
    """Top-k of queries g0..g1 over database rows j0..j1 (those allowed by `mask`, or all when it is
    empty) into out_*[query, part, :]."""
    all_rows = mask.shape[0] == 0
    ng = g1 - g0
    cap = min(k + 64, j1 - j0 + 1)  # small: compacting often tightens the threshold sooner
    cd = np.empty((ng, cap), np.int32)
    cj = np.empty((ng, cap), np.int64)
    hist = np.zeros((ng, maxd + 1), np.int64)
    cnt = np.zeros(ng, np.int64)
    thr = np.full(ng, maxd + 1, np.int64)
    buf = np.empty(BLOCK, np.int32)
    flat, nw = flat_rows(db), db.shape[1]
    for b0 in range(j0, j1, BLOCK):
        b1 = min(b0 + BLOCK, j1)
        for g in range(ng):
            t_ = thr[g]
            if _block_min(q, g0 + g, flat, nw, b0, b1) >= t_:
                continue
            _block_distances(q, g0 + g, flat, nw, b0, b1, buf)
            c = cnt[g]
            for t in range(b1 - b0):
                d = buf[t]
                if d < t_ and (all_rows or allowed(mask, b0 + t)):
                    cd[g, c] = d
                    cj[g, c] = b0 + t
                    hist[g, d] += 1
                    c += 1
                    if c == cap:
                        c, t_ = _compact(cd[g], cj[g], c, k, hist[g])
            cnt[g] = c
            thr[g] = t_
    for g in range(ng):
        emit_sorted(cd[g], cj[g], cnt[g], k, maxd, out_d[g0 + g, part], out_j[g0 + g, part])


@njit(parallel=True, cache=True)
def _topk_tasks(q, db, k, maxd, gsize, nparts, mask):
    """Each task of a split top-k (a group of gsize queries x one of nparts database parts) into
    (nq, nparts, k) distances and positions. The one prange loop left: Python threads cost ~0.1 ms
    more a call, as much as a whole pruned top-k scan of 10^6 rows."""
    nq, n = q.shape[0], db.shape[0]
    ngroups = -(-nq // gsize)
    part_d = np.empty((nq, nparts, k), np.int32)
    part_j = np.empty((nq, nparts, k), np.int64)
    for task in prange(ngroups * nparts):
        grp, part = task // nparts, task % nparts
        g0 = grp * gsize
        _topk_task(q, g0, min(g0 + gsize, nq), db, part * n // nparts, (part + 1) * n // nparts,
                   k, maxd, part_d, part_j, part, mask)
    return part_d, part_j


@njit(cache=True, nogil=True)
def _merge_parts(part_d, part_j, k, maxd):
    """Each query's top-k over its database parts (nq, nparts, k): parts hold ascending positions, so
    input order breaks ties."""
    nq = part_d.shape[0]
    out_d = np.empty((nq, k), np.int32)
    out_j = np.empty((nq, k), np.int64)
    for qi in range(nq):
        cd = part_d[qi].ravel()
        cj = part_j[qi].ravel()
        valid = cj >= 0
        emit_sorted(cd[valid], cj[valid], valid.sum(), k, maxd, out_d[qi], out_j[qi])
    return out_d, out_j


def _topk_parallel(q: np.ndarray, db: np.ndarray, k: int, maxd: int, gsize: int, nparts: int,
                   mask: np.ndarray = NO_MASK) -> tuple[np.ndarray, np.ndarray]:
    """Top-k over tasks (a group of gsize queries x one of nparts database parts) on numba's threads;
    the parts of a split query merged."""
    part_d, part_j = _topk_tasks(q, db, k, maxd, gsize, nparts, mask)
    if nparts == 1:
        return part_d[:, 0], part_j[:, 0]
    return _merge_parts(part_d, part_j, k, maxd)


def _split(nq: int, n: int) -> tuple[int, int]:
    """(queries a group, database parts) that keep every thread busy; one task for small work."""
    if nq * n < SMALL_WORK:
        return max(nq, 1), 1
    nthreads = numba.get_num_threads()
    if nq >= nthreads:
        return max(1, min(QGROUP, nq // nthreads)), 1
    return 1, max(1, min(nthreads // max(nq, 1), n // MIN_PART))


def topk(q: np.ndarray, db: np.ndarray, k: int, maxd: int,
         mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of `db` (unsigned words, as `scan_words` gives) for each query, among the
    rows whose `mask` bit is set (all rows when None): (nq, k) int32 distances and int64 positions sorted
    by (distance, position), padded with (PAD_DISTANCE, -1) when fewer than k rows are allowed.
    `maxd` bounds every distance (the code length in bits)."""
    mask = kernel_mask(mask)
    gsize, nparts = _split(q.shape[0], db.shape[0])
    if nparts == 1 and q.shape[0] <= gsize:  # one task: run it here, without waking the thread pool
        out_d = np.empty((q.shape[0], 1, k), np.int32)
        out_j = np.empty((q.shape[0], 1, k), np.int64)
        _topk_task(q, 0, q.shape[0], db, 0, db.shape[0], k, maxd, out_d, out_j, 0, mask)
        return out_d[:, 0], out_j[:, 0]
    return _topk_parallel(q, db, k, maxd, gsize, nparts, mask)


@njit(cache=True, nogil=True)
def range_task(q, g0, g1, db, j0, j1, radii, maxd, mask):
    """Rows j0..j1 (allowed by `mask`, all when it is empty) within radii[qi] of each query qi of g0..g1 in ONE
    pass over the database, a block at a time for the whole group: CSR (lims (g1 - g0 + 1,), distances,
    positions), query by query, each query's rows sorted by (distance, position) (`maxd` bounds every
    distance).
    Hits go to one buffer (tagged with their query) that doubles when a block might not fit, so the
    inner loop stores without a branch."""
    ng = g1 - g0
    all_rows = mask.shape[0] == 0
    buf = np.empty(BLOCK, np.int32)
    flat, nw = flat_rows(db), db.shape[1]
    hd = np.empty(4 * BLOCK, np.int32)
    hj = np.empty(4 * BLOCK, np.int64)
    hg = np.empty(4 * BLOCK, np.int32)
    c = np.int64(0)  # not a literal 0, which would compile _grow a second time for Literal[int](0)
    for b0 in range(j0, j1, BLOCK):
        b1 = min(b0 + BLOCK, j1)
        for g in range(ng):
            r = radii[g0 + g]
            if _block_min(q, g0 + g, flat, nw, b0, b1) > r:
                continue
            _block_distances(q, g0 + g, flat, nw, b0, b1, buf)
            if c + BLOCK > hd.shape[0]:
                hd, hj, hg = _grow(hd, c), _grow(hj, c), _grow(hg, c)
            if all_rows:  # the hits stored unconditionally, counted branch-free
                for t in range(b1 - b0):
                    hd[c] = buf[t]
                    hj[c] = b0 + t
                    hg[c] = g
                    c += buf[t] <= r
            else:
                c = _collect_allowed(buf, b1 - b0, r, b0, g, hd, hj, hg, c, mask)
    counts = np.zeros(ng, np.int64)
    for t in range(c):
        counts[hg[t]] += 1
    lims = np.zeros(ng + 1, np.int64)
    lims[1:] = np.cumsum(counts)
    at = lims[:-1].copy()
    dist = np.empty(c, np.int32)
    pos = np.empty(c, np.int64)
    for t in range(c):  # stable scatter: each query's hits stay in ascending position
        s = at[hg[t]]
        at[hg[t]] = s + 1
        dist[s] = hd[t]
        pos[s] = hj[t]
    sort_rows(lims, dist, pos, maxd)
    return lims, dist, pos


@njit(cache=True, nogil=True)
def _collect_allowed(buf, nb, r, b0, g, hd, hj, hg, c, mask):
    """Append the rows b0 + t (t < nb) within r of query g that `mask` allows to the hits (hd, hj, hg)
    from c on; returns the new count. A function of its own: written out in range_task's body, this loop
    slowed the unmasked one beside it 1.3x."""
    for t in range(nb):
        hd[c] = buf[t]
        hj[c] = b0 + t
        hg[c] = g
        c += (buf[t] <= r) & allowed(mask, b0 + t)
    return c


@njit(cache=True, nogil=True)
def _grow(a, used):
    """A buffer twice the size of `a` holding its first `used` items."""
    out = np.empty(2 * a.shape[0], a.dtype)
    out[:used] = a[:used]
    return out


@njit(cache=True, nogil=True)
def sort_rows(lims, dist, pos, maxd):
    """Sort each CSR row by (distance, position) in place, for rows already in ascending position."""
    for qi in range(lims.shape[0] - 1):
        a, b = lims[qi], lims[qi + 1]
        if b - a > 1:
            tmp_d = dist[a:b].copy()
            tmp_j = pos[a:b].copy()
            emit_sorted(tmp_d, tmp_j, b - a, b - a, maxd, dist[a:b], pos[a:b])


def map_threads(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """[fn(item) for item in items] on `numba.get_num_threads()` threads, the calling one included (one
    thread fewer to wake), each taking the next item when done: for nogil kernels whose results are
    arrays of sizes known only at the end (a prange loop cannot collect those), and in place of a
    prange loop that would compile a parallel region per argument type."""
    nthreads = min(numba.get_num_threads(), len(items))
    if nthreads <= 1:
        return [fn(item) for item in items]
    out: list[Any] = [None] * len(items)
    taken = itertools.count()  # next() is atomic under the GIL

    def work() -> None:
        while (i := next(taken)) < len(items):
            out[i] = fn(items[i])

    helpers = [_pool(nthreads - 1).submit(work) for _ in range(nthreads - 1)]
    try:
        work()
    finally:
        for helper in helpers:
            helper.result()
    return out


def thread_runs(ntasks: int) -> list[tuple[int, int]]:
    """0..ntasks cut into one contiguous run per thread (fewer when there are fewer tasks)."""
    runs = max(1, min(numba.get_num_threads(), ntasks))
    edges = [ntasks * i // runs for i in range(runs + 1)]
    return list(zip(edges[:-1], edges[1:]))


@functools.lru_cache(maxsize=None)
def _pool(nthreads: int) -> ThreadPoolExecutor:
    """One thread pool per size, kept: starting threads costs ~0.15 ms a call, up to a third of a
    batched MIH lookup at 10^6."""
    return ThreadPoolExecutor(nthreads, thread_name_prefix="hashsearch")


@functools.lru_cache(maxsize=256)
def _same_radii(nq: int, radius: int) -> np.ndarray:
    return np.full(nq, radius, np.int64)  # shared by every search of this shape: kernels only read it


def query_radii(radius: int | np.ndarray, nq: int) -> np.ndarray:
    """(nq,) int64 radii: one radius for every query, or one per query (checked)."""
    if isinstance(radius, (int, np.integer)) or np.ndim(radius) == 0:
        return _same_radii(int(nq), int(radius))
    radii = np.ascontiguousarray(radius, dtype=np.int64)
    if radii.shape != (nq,) or (nq and radii.min() < 0):
        raise ValueError(f"per-query radii must be {nq} non-negative integers, got shape {radii.shape}")
    return radii


def _range_parallel(q, db, r, maxd, gsize, nparts, mask=NO_MASK):
    """Radius search (r: one radius or one per query) over tasks (a group of gsize queries x one of nparts database parts), joined
    in task order, which is (query, part) order since gsize or nparts is 1 (as `_split` gives);
    the parts of a split query, each sorted, are sorted together once joined."""
    if gsize > 1 and nparts > 1:
        raise ValueError(f"split queries or the database, not both (gsize={gsize}, nparts={nparts})")
    nq, n = q.shape[0], db.shape[0]
    r = query_radii(r, nq)
    if nparts == 1 and gsize >= nq:  # one task: run it here, as it comes
        return range_task(q, 0, nq, db, 0, n, r, maxd, mask)
    tasks = [(g0, min(g0 + gsize, nq), part * n // nparts, (part + 1) * n // nparts)
             for g0 in range(0, nq, gsize) for part in range(nparts)]
    parts = map_threads(lambda t: range_task(q, t[0], t[1], db, t[2], t[3], r, maxd, mask), tasks)
    lims = np.zeros(nq + 1, np.int64)
    np.cumsum(np.concatenate([np.diff(p[0]) for p in parts]).reshape(nq, nparts).sum(axis=1), out=lims[1:])
    dist = np.concatenate([p[1] for p in parts])
    pos = np.concatenate([p[2] for p in parts])
    if nparts > 1:
        sort_rows(lims, dist, pos, maxd)
    return lims, dist, pos


def range_search(q: np.ndarray, db: np.ndarray, radius: int | np.ndarray, maxd: int,
                 mask: np.ndarray | None = None):
    """All rows of `db` within `radius` (inclusive; one for all queries or an (nq,) array, one each) of
    each query, among the rows whose `mask` bit is set (all when None), in CSR form (lims, distances,
    positions) like `faiss.IndexBinary.range_search`, each row sorted by (distance, position)."""
    gsize, nparts = _split(q.shape[0], db.shape[0])
    return _range_parallel(q, db, radius, maxd, gsize, nparts, kernel_mask(mask))

