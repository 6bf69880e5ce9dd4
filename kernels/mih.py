"""Multi-index hashing kernels (Norouzi, Punjani & Fleet): probe substring tables, verify, dedupe.

Codes are uint64 words; substring i is the bit range [lo[i], lo[i] + ln[i]) of the row read as one
little-endian bit string (padding bits are zero, so only the first nbits are used). Table i is the
substring keys sorted (`skeys[i]`), the row positions in that order (`perm[i]`) and the codes in that
order (`scodes[i]`), so that a bucket's candidates are verified by reading memory sequentially.
A row within radius r of a query has some substring i within radii[i] = floor((i + r + 1 - m) / m)
(the tight pigeonhole rule); each row is reported by the first such table only, which dedupes
without a bitmap. Queries whose probe count times `cost` (rows a probe is worth) exceeds n fall back to a linear scan.
An optional `mask` (a packed bitmap by row position, `hashsearch.bitmaps`; empty = all, as
`scan.kernel_mask` gives) drops rows at verification, so top-k by growing radius counts allowed rows
only and stays exact.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from hashsearch.kernels.popcount import popcount64
from hashsearch.kernels.scan import (BLOCK, _block_distances, _block_min, _grow, _topk_task, allowed, emit_sorted,
                                     flat_rows, range_task)

PROBE_COST = 2048.0  # a probe (binary search + bucket walk) costs about as much as scanning this many rows


@njit(inline="always", cache=True)
def substring(words, row, lo, ln):
    """Bits [lo, lo + ln) of a row of uint64 words as an integer key (ln <= 64)."""
    w = lo >> 6
    b = lo & 63
    key = words[row, w] >> np.uint64(b)
    if b + ln > 64:
        key |= words[row, w + 1] << np.uint64(64 - b)
    if ln < 64:
        key &= (np.uint64(1) << np.uint64(ln)) - np.uint64(1)
    return key


@njit(cache=True, nogil=True)
def substring_keys(words, lo, ln, j0, j1, keys):
    """Keys of rows j0..j1 for each substring into keys[:, j0:j1] ((m, n)), a substring at a time (rows
    inside: 4-6x faster than substrings inside, which stores with a stride)."""
    for i in range(lo.shape[0]):
        lo_i, ln_i = lo[i], ln[i]
        for j in range(j0, j1):
            keys[i, j] = substring(words, j, lo_i, ln_i)


@njit(cache=True)
def radii(m, r):
    """Substring radii of the tight rule: floor((i + r + 1 - m) / m), -1 meaning 'not probed'."""
    return fill_radii(np.empty(m, np.int64), r)


@njit(cache=True, nogil=True)
def fill_radii(out, r):
    """`radii(out.shape[0], r)` written into `out` (no allocation: it runs once per query and table set)."""
    m = out.shape[0]
    for i in range(m):
        out[i] = (i + r + 1 - m) // m
    return out


@njit(cache=True, nogil=True)
def scratch(m):
    """Work arrays of one query's probe, allocated once per kernel call instead of per query: substring
    radii, query keys, flipped-bit positions, a block of distances."""
    return np.empty(m, np.int64), np.empty(m, np.uint64), np.empty(64, np.int64), np.empty(BLOCK, np.int32)


@njit(cache=True)
def probe_count(ln, rad):
    """Number of bucket probes for substring radii `rad`: sum of C(ln[i], s) for s <= rad[i]."""
    total = 0.0
    for i in range(ln.shape[0]):
        c = 1.0
        for s in range(rad[i] + 1):
            if s > 0:
                c = c * (ln[i] - s + 1) / s
            total += c
    return total


@njit(cache=True, nogil=True)
def _append(od, oj, c, d, j):
    """Append (d, j) at c, doubling the buffers when full; returns the (maybe new) buffers."""
    if c == od.shape[0]:
        od, oj = _grow(od, c), _grow(oj, c)
    od[c] = d
    oj[c] = j
    return od, oj


@njit(inline="always", cache=True, nogil=True)
def _probe_query(q, qi, scodes, skeys, perm, starts, lo, ln, r, mask, od, oj, c, work):
    """Append every row within r of query qi that `mask` allows (unsorted); returns buffers and new count.
    `work`: `scratch(m)`, its radii already `fill_radii(.., r)`."""
    m = lo.shape[0]
    masked = mask.shape[0] > 0
    rad, qk, idx, buf = work
    for i in range(m):
        qk[i] = substring(q, qi, lo[i], ln[i])
    nw = scodes.shape[2]
    for i in range(m):
        keys, rows = skeys[i], scodes[i]  # rows: the codes in this table's order, read bucket by bucket
        flat = flat_rows(rows)
        for s in range(min(rad[i], ln[i]) + 1):
            for t in range(s):  # first combination of s flipped bits
                idx[t] = t
            while True:
                key = qk[i]
                for t in range(s):
                    key ^= np.uint64(1) << np.uint64(idx[t])
                if starts.shape[0]:  # short substrings: the bucket's bounds by direct addressing
                    begin, end = np.int64(starts[i, key]), np.int64(starts[i, key + np.uint64(1)])
                else:
                    begin, end = np.searchsorted(keys, key), np.searchsorted(keys, key, side="right")
                for b0 in range(begin, end, BLOCK):  # distances a block at a time
                    b1 = min(b0 + BLOCK, end)
                    _block_distances(q, qi, flat, nw, b0, b1, buf)
                    for a in range(b0, b1):
                        d = np.int64(buf[a - b0])  # (an int32 would compile _append twice)
                        if d > r or (masked and not allowed(mask, np.int64(perm[i, a]))):
                            continue
                        first = True
                        for i2 in range(i):
                            if popcount64(substring(rows, a, lo[i2], ln[i2]) ^ qk[i2]) <= rad[i2]:
                                first = False  # an earlier table reports this row
                                break
                        if first:
                            od, oj = _append(od, oj, c, d, np.int64(perm[i, a]))
                            c += 1
                # next combination of s positions out of ln[i]
                t = s - 1
                while t >= 0 and idx[t] == ln[i] - s + t:
                    t -= 1
                if t < 0:
                    break
                idx[t] += 1
                for u in range(t + 1, s):
                    idx[u] = idx[u - 1] + 1
    return od, oj, c


POSITION_BITS = 52  # sort keys are distance << 52 | position: distances <= 1024, positions < 2**52


@njit(cache=True, nogil=True)
def _sort_segment(od, oj, a, b):
    """Sort od/oj[a:b] by (distance, position): one sort of packed int64 keys, no argsort or gathers."""
    if b - a > 1:
        key = (od[a:b].astype(np.int64) << POSITION_BITS) | oj[a:b]
        key.sort()
        od[a:b] = key >> POSITION_BITS
        oj[a:b] = key & ((1 << POSITION_BITS) - 1)


@njit(inline="always", cache=True, nogil=True)
def _range_one(q, qi, words, scodes, skeys, perm, starts, lo, ln, rq, cost, mask, od, oj, c, work):
    """Rows within rq[qi] of query qi appended sorted by (distance, position): by probing the tables,
    or by a linear scan when probing would cost more. `work`: `scratch(m)`."""
    n = words.shape[0]
    r = rq[qi]
    start = c
    if probe_count(ln, fill_radii(work[0], r)) * cost > n:
        _, dist, pos = range_task(q, qi, qi + 1, words, np.int64(0), n, rq, 64 * words.shape[1], mask)  # sorted
        while c + dist.shape[0] > od.shape[0]:
            od, oj = _grow(od, c), _grow(oj, c)
        od[c:c + dist.shape[0]] = dist
        oj[c:c + dist.shape[0]] = pos
        c += dist.shape[0]
    else:
        od, oj, c = _probe_query(q, qi, scodes, skeys, perm, starts, lo, ln, r, mask, od, oj, c, work)
        _sort_segment(od, oj, start, c)
    return od, oj, c


@njit(cache=True, nogil=True)
def range_chunk(q, q0, q1, words, scodes, skeys, perm, starts, lo, ln, rq, cost, mask):
    """Radius search for queries q0..q1, query qi within rq[qi]: CSR (lims (q1 - q0 + 1,), distances,
    positions), rows sorted."""
    lims = np.zeros(q1 - q0 + 1, np.int64)
    od = np.empty(1024, np.int32)
    oj = np.empty(1024, np.int64)
    c = np.int64(0)  # not a literal 0: that would compile the callee a second time, for Literal[int](0)
    work = scratch(lo.shape[0])
    for qi in range(q0, q1):
        od, oj, c = _range_one(q, qi, words, scodes, skeys, perm, starts, lo, ln, rq, cost, mask, od, oj, c, work)
        lims[qi - q0 + 1] = c
    return lims, od[:c].copy(), oj[:c].copy()


@njit(cache=True, nogil=True)
def knn_chunk(q, q0, q1, words, scodes, skeys, perm, starts, lo, ln, k, maxd, cost, mask, out_d, out_j):
    """Top-k for queries q0..q1 by growing the radius until k allowed rows lie within it (exact: the
    k-th nearest allowed row is then inside); queries whose probing would cost more than a scan are
    scanned."""
    n = words.shape[0]
    m = lo.shape[0]
    od = np.empty(max(1024, 2 * k), np.int32)
    oj = np.empty(od.shape[0], np.int64)
    rq = np.zeros(q.shape[0], np.int64)  # the radius of the pass, where _range_one reads it
    work = scratch(m)
    for qi in range(q0, q1):
        r = np.int64(0)  # (non-literal zeros: see range_chunk)
        while True:
            if probe_count(ln, fill_radii(work[0], r)) * cost > n:
                _topk_task(q, qi, qi + 1, words, np.int64(0), n, k, maxd, out_d, out_j, np.int64(0), mask)
                break
            rq[qi] = r
            od, oj, c = _range_one(q, qi, words, scodes, skeys, perm, starts, lo, ln, rq, cost, mask, od, oj,
                                   np.int64(0), work)
            if c >= k or r >= maxd:
                emit_sorted(od, oj, c, k, maxd, out_d[qi, 0], out_j[qi, 0])
                break
            r += 1


@njit(cache=True, nogil=True)
def _scan_one(q, qi, words, r, mask, buf, od, oj, c):
    """Append the rows of `words` within r of query qi that `mask` allows (in position order), a block
    at a time, skipping blocks without one: the few hits of a small segment, no allocation."""
    flat, nw, n = flat_rows(words), words.shape[1], words.shape[0]
    all_rows = mask.shape[0] == 0
    for b0 in range(0, n, BLOCK):
        b1 = min(b0 + BLOCK, n)
        if _block_min(q, qi, flat, nw, b0, b1) > r:
            continue
        _block_distances(q, qi, flat, nw, b0, b1, buf)
        for t in range(b1 - b0):
            if buf[t] <= r and (all_rows or allowed(mask, b0 + t)):
                od, oj = _append(od, oj, c, np.int64(buf[t]), np.int64(b0 + t))
                c += 1
    return od, oj, c


@njit(cache=True, nogil=True)
def range_segments(q, q0, q1, segments, rq, maxd):
    """Radius search of queries q0..q1 (query qi within rq[qi]) over several segments in ONE call, so a
    live index pays one kernel call per batch, not one per segment plus a merge. `segments`: a typed
    list of (words, scodes, skeys, perm, starts, lo, ln, cost, mask, ids, id_start), one per segment:
    its MIH tables (m = 0: none, the rows are scanned), a packed bitmap of the rows it may return
    (empty: all) and its ascending ids (empty: id_start + position). Returns CSR (lims, distances, ids)
    over all segments, each query's rows sorted by (distance, id) (in a segment, position order is id
    order). Segment by segment (each list item is read once), then the runs are merged query by query."""
    nseg, nq = len(segments), q1 - q0
    od = np.empty(1024, np.int32)  # hits of segment after segment, query after query
    oj = np.empty(1024, np.int64)
    bounds = np.empty((nseg, nq + 1), np.int64)  # segment s, query q0 + t: od[bounds[s, t]:bounds[s, t + 1]]
    c = np.int64(0)
    for s in range(nseg):
        words, scodes, skeys, perm, starts, lo, ln, cost, mask, ids, id_start = segments[s]
        work = scratch(lo.shape[0])
        for qi in range(q0, q1):
            start = c
            bounds[s, qi - q0] = c
            if lo.shape[0] == 0:  # no tables: scan
                od, oj, c = _scan_one(q, qi, words, rq[qi], mask, work[3], od, oj, c)
                _sort_segment(od, oj, start, c)
            else:
                od, oj, c = _range_one(q, qi, words, scodes, skeys, perm, starts, lo, ln, rq, cost, mask, od, oj, c,
                                       work)
            if ids.shape[0] == 0:
                for t in range(start, c):
                    oj[t] += id_start
            else:
                for t in range(start, c):
                    oj[t] = ids[oj[t]]
        bounds[s, nq] = c
    lims = np.zeros(nq + 1, np.int64)
    out_d = np.empty(c, np.int32)
    out_i = np.empty(c, np.int64)
    heads = np.empty(nseg, np.int64)
    o = 0
    for t in range(nq):  # merge the segments' runs by (distance, id): few runs, few hits
        for s in range(nseg):
            heads[s] = bounds[s, t]
            o += bounds[s, t + 1] - bounds[s, t]
        lims[t + 1] = o
        for e in range(lims[t], o):
            best, bd, bi = -1, 0, 0
            for s in range(nseg):
                h = heads[s]
                if h < bounds[s, t + 1] and (best < 0 or od[h] < bd or (od[h] == bd and oj[h] < bi)):
                    best, bd, bi = s, od[h], oj[h]
            out_d[e], out_i[e] = bd, bi
            heads[best] += 1
    return lims, out_d, out_i
