"""The cost model behind backend "auto": estimated seconds of a linear scan and of multi-index hashing
(MIH, for each substring count m) for one query batch, from n, nbits, k or radius, the batch size,
the threads and the share of rows a mask allows.

Two inputs:
- `Costs`: machine constants (nanoseconds per scanned row, per MIH probe, per verified candidate...),
  measured once by `calibrate()` (a few seconds) and stored as JSON in `$HASHSEARCH_CACHE` or
  `~/.cache/hashsearch/costs.json`; built-in defaults (measured on a 2-core AMD EPYC) when absent.
- `CodeStats`: the codes' own distance profile, gathered once from a sample (database rows standing in
  for queries): how many rows lie within each distance (which sets the radius MIH top-k must reach)
  and how many candidates each substring table would verify (which sets MIH's work).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

from hashsearch.kernels import mih as mih_kernels
from hashsearch.kernels.popcount import as_words, popcount64
from hashsearch.kernels.scan import BLOCK, MIN_PART, QGROUP, SMALL_WORK
from hashsearch.mih import DIRECT_BITS, MAX_SUBSTRING_BITS, SMALL_TABLE_ROWS, default_substrings

COSTS_FILE = "costs.json"
CALIBRATION_ROWS = 1 << 16  # rows of the calibration scans (the codes sit in the caches)
LARGE_ROWS = 1 << 22  # rows of the scans that price codes beyond the caches (row costs ramp between the two)
TOPK_ROWS = 1 << 20  # rows of the top-k calibration runs
PROBE_SIZES = (16, 20)  # log2 of the table sizes MIH is timed over
OTHER_M_MARGIN = 1.5  # a substring count other than the usual one must look this much faster: the model
# prices tables less well than the scan, and a wrong m costs more than the usual one's small loss
SAMPLE_ROWS, SAMPLE_QUERIES = 65536, 64
MIH_FEATURES = ("pass", "table", "probe", "verified", "hit")  # the work of an MIH pass, priced by pass_ns,
# table_ns, probe(n), verify_row and mih_hit


@dataclass(frozen=True)
class Costs:
    """Machine constants of the model, in nanoseconds (calls in microseconds); the defaults were
    calibrated on the team's shared 2-core AMD EPYC (AVX-512, KVM) at load average ~7, December 2026."""

    scan_row_single: float = 0.22  # per row and query, one query alone (64-bit codes)
    scan_row_batch: float = 0.19  # per row and query, queries sharing each block (groups of 8)
    open_row: float = 0.89  # per row of a block that top-k reads a second time (it may hold a candidate)
    insert_ns: float = 0.98  # per candidate top-k keeps, times 1 + k / 64 (the compactions it causes)
    probe_ns: tuple = (103.0, 210.0)  # per MIH bucket probe over 2**PROBE_SIZES rows (log-linear
    # between and beyond; the binary searches miss cache more as n grows)
    direct_probe_ns: float = 24.0  # per probe of a table of substrings of at most DIRECT_BITS bits (its
    # bucket bounds read from an array, no binary search)
    pass_ns: float = 150.0  # per query and radius pass of MIH (set-up, sort)
    table_ns: float = 48.0  # per table and radius pass (its substring, radii, bucket bounds)
    verify_row: float = 0.72  # per candidate row MIH verifies (64-bit codes)
    mih_hit: float = 33.0  # per row MIH reports (dedupe against earlier tables, gather, sort)
    hit: float = 6.8  # per result row of a scan (gather and sort)
    scan_call_us: float = 3.1  # fixed cost of one scan call
    mih_call_us: float = 3.5  # fixed cost of one MIH call
    word_cost: tuple = (0.78, 1.0, 1.78, 3.97)  # row cost of 32-, 64-, 128-, 256-bit codes against 64-bit ones
    large_cost: tuple = (0.56, 0.79, 0.99, 1.02)  # row cost of those widths over LARGE_ROWS rows against
    # CALIBRATION_ROWS rows (the rows stream from memory instead of the caches)
    parallel_eff: float = 0.05  # what each thread beyond the first adds in a typical (median) split call
    # (1: a perfect speed-up; low on a busy machine, where the other core is taken)
    pool_us: float = 7900.0  # fixed cost of a typical split call: waking the threads and waiting for the last
    # (on a busy machine the time a thread waits to be scheduled; ~10 us on a quiet one)
    parallel_eff_fast: float = 1.0  # the same two in the fastest split calls (the other core free)
    pool_fast_us: float = 160.0

    def threads(self, used: int, fast: bool = False) -> float:
        """Effective threads when `used` threads share a task's work (in a typical or the fastest call)."""
        return 1 + (max(used, 1) - 1) * (self.parallel_eff_fast if fast else self.parallel_eff)

    def split(self, work_ns: float, used: int) -> float:
        """ns of `work_ns` (one thread's worth) shared by `used` threads: the geometric mean of its price
        in a typical call and in the fastest one. On a shared machine a split call is either; a plan
        priced so is within the smallest ratio of the better one in both states (minimax of the ratio)."""
        if used <= 1:
            return work_ns
        typical = work_ns / self.threads(used) + self.pool_us * 1e3
        fast = work_ns / self.threads(used, fast=True) + self.pool_fast_us * 1e3
        return math.sqrt(typical * fast)

    def words_factor(self, nbits: int, n: int = CALIBRATION_ROWS) -> float:
        """Cost of reading one row of `nbits` bits out of n, relative to a 64-bit row out of CALIBRATION_ROWS:
        the width's cost, times a ramp (log-linear in n) to its cost over LARGE_ROWS."""
        nw = -(-nbits // 64)
        i, scale = (0, 1.0) if nbits <= 32 else (nw, 1.0) if nw <= 2 else (3, nw / 4)
        lo, hi = math.log2(CALIBRATION_ROWS), math.log2(LARGE_ROWS)
        ramp = min(max((math.log2(max(n, 2)) - lo) / (hi - lo), 0.0), 1.0)
        return self.word_cost[i] * scale * (1 + (self.large_cost[i] - 1) * ramp)

    def topk_extra(self, k: int, open_rows: float, inserts: float, row: float = 1.0) -> float:
        """ns one query's top-k adds to its scan: the blocks it reads twice (`open_rows`, rows of
        `row` relative cost) and the candidates it keeps (see `topk_work`)."""
        return open_rows * self.open_row * row + inserts * self.insert_ns * (1 + k / 64)

    def probe(self, n: int) -> float:
        """ns of one MIH bucket probe over n rows: log-linear between the calibrated sizes, the last
        slope beyond them."""
        x = math.log2(max(n, 2))
        xs, ys = PROBE_SIZES, self.probe_ns
        if x >= xs[-1]:
            y = ys[-1] + max(ys[-1] - ys[-2], 0.0) / (xs[-1] - xs[-2]) * (x - xs[-1])
        else:
            y = float(np.interp(x, xs, ys))
        return max(y, 0.5 * ys[0])

    @staticmethod
    def path() -> Path:
        """Where calibrated constants live: $HASHSEARCH_CACHE or ~/.cache/hashsearch."""
        root = os.environ.get("HASHSEARCH_CACHE") or Path.home() / ".cache" / "hashsearch"
        return Path(root) / COSTS_FILE

    @classmethod
    def load(cls) -> "Costs":
        """The stored constants, or the built-in defaults when none were stored (or they are unreadable)."""
        try:
            data = json.loads(cls.path().read_text())
            names = {f.name for f in fields(cls)}
            return cls(**{k: (tuple(v) if isinstance(v, list) else float(v)) for k, v in data.items() if k in names})
        except (OSError, ValueError, TypeError):
            return cls()

    def save(self) -> Path:
        """Write the constants atomically (temporary sibling, then rename)."""
        path = self.path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)
        return path


# ----------------------------------------------------------------------------------------------- stats

@njit(parallel=True, cache=True)
def _sample_counts(qw, qrow, sw, srow, lo, ln, maxd, maxs):
    """For each sample query: rows of the sample at each distance, and for each substring table the
    rows at each substring distance (a query never counts its own row)."""
    nq, ns, m = qw.shape[0], sw.shape[0], lo.shape[0]
    dist = np.zeros((nq, maxd + 1), np.int64)
    sub = np.zeros((nq, m, maxs + 1), np.int64)
    for a in prange(nq):
        qk = np.empty(m, np.uint64)
        for i in range(m):
            qk[i] = mih_kernels.substring(qw, a, lo[i], ln[i])
        for b in range(ns):
            if srow[b] == qrow[a]:
                continue
            d = 0
            for w in range(qw.shape[1]):
                d += popcount64(qw[a, w] ^ sw[b, w])
            dist[a, d] += 1
            for i in range(m):
                sub[a, i, popcount64(mih_kernels.substring(sw, b, lo[i], ln[i]) ^ qk[i])] += 1
    return dist, sub


def substring_bounds(nbits: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(first bit, length) of each of m substrings, as `MultiIndexHash` splits them."""
    bounds = np.linspace(0, nbits, m + 1).astype(np.int64)
    return bounds[:-1].copy(), np.diff(bounds)


def valid_substrings(nbits: int, m: int) -> bool:
    return 1 <= m <= nbits and -(-nbits // m) <= MAX_SUBSTRING_BITS


def candidate_substrings(nbits: int, n: int) -> list[int]:
    """The substring counts worth pricing: the usual nbits / log2(n) and its neighbours."""
    m0 = default_substrings(nbits, n)
    return [m for m in (m0 - 1, m0, m0 + 1, m0 + 2) if valid_substrings(nbits, m)]


class CodeStats:
    """The distance profile of a set of codes, from a sample: expected rows within each distance of a
    query, and candidates each substring table verifies, per sample query (scaled to n rows)."""

    def __init__(self, codes: np.ndarray, nbits: int, ms: list[int], seed: int = 0):
        n = codes.shape[0]
        rng = np.random.default_rng(seed)
        srow = np.sort(rng.choice(n, min(n, SAMPLE_ROWS), replace=False)) if n > SAMPLE_ROWS else np.arange(n)
        qrow = np.sort(rng.choice(n, min(n, SAMPLE_QUERIES), replace=False))
        sw, qw = as_words(codes[srow]), as_words(codes[qrow])
        self.n, self.nbits, self.scale = n, nbits, n / max(1, srow.size - (1 if n <= SAMPLE_ROWS else 0))
        self.within: np.ndarray | None = None  # (queries, nbits + 1): expected rows within distance d
        self.verified: dict[int, np.ndarray] = {}  # m -> (queries, m, max substring + 1) cumulative
        for m in ms:
            lo, ln = substring_bounds(nbits, m)
            dist, sub = _sample_counts(qw, qrow, sw, srow, lo, ln, nbits, int(ln.max()))
            if self.within is None:
                self.within = np.cumsum(dist, axis=1) * self.scale
            self.verified[m] = np.cumsum(sub, axis=2) * self.scale

    def verify_rows(self, m: int, r: int) -> np.ndarray:
        """Per sample query: candidate rows verified by MIH with m tables at radius r (all tables)."""
        cum = self.verified[m]
        rad = mih_kernels.radii(m, r)
        out = np.zeros(cum.shape[0])
        for i, s in enumerate(rad):
            if s >= 0:
                out += cum[:, i, min(s, cum.shape[2] - 1)]
        return out


def topk_work(within: np.ndarray, n: int, rows: int, k: int, allowed: float = 1.0) -> tuple[float, float]:
    """(rows of blocks read twice, candidates kept) of one query's scan top-k over `rows` rows in random
    order, averaged over the sample queries of `within` (expected rows within each distance among n).
    After j rows the kernel keeps only rows below the k-th distance seen so far, the distance where
    k / j of the allowed rows lie; a block is read twice when one of its BLOCK rows is below it."""
    first = min(k + 64, rows)  # before the first compaction every allowed row is kept, every block read
    if rows <= first:
        return float(rows), float(rows) * allowed
    frac = within / max(n, 1)
    j = np.geomspace(first, rows, 48)
    below = np.empty((frac.shape[0], j.size))
    for a in range(frac.shape[0]):
        t = np.searchsorted(frac[a] * allowed, k / j)  # the threshold: first distance holding k / j
        below[a] = np.where(t > 0, frac[a][np.maximum(t - 1, 0)], 0.0)
    opened = 1 - (1 - np.minimum(below, 1.0)) ** BLOCK

    def integral(y: np.ndarray) -> float:
        return float(np.mean(np.sum((y[:, 1:] + y[:, :-1]) / 2 * np.diff(j), axis=1)))

    return first + integral(opened), (first + integral(below)) * allowed


# ----------------------------------------------------------------------------------------------- model

@dataclass
class Estimate:
    """What a batch would cost each way (seconds) and the choice."""

    plan: str  # "scan" or "mih"
    m: int | None
    scan_s: float
    mih_s: dict

    def as_dict(self) -> dict:
        return {"plan": self.plan, "m": self.m, "scan_s": self.scan_s, "mih_s": self.mih_s}


class CostModel:
    """Seconds for a scan or an MIH search of one batch over the codes `stats` describes."""

    def __init__(self, costs: Costs, stats: CodeStats):
        self.c, self.s = costs, stats
        self.n, self.nbits = stats.n, stats.nbits
        self.row = costs.words_factor(self.nbits, self.n)  # a scanned row
        self.word = costs.words_factor(self.nbits)  # a row read again, or from one bucket
        self._per_query: dict = {}

    def topk_extra(self, k: int, rows: int, allowed: float = 1.0) -> float:
        """ns one query's top-k over `rows` of these codes adds to reading them once."""
        key = ("scan-topk", k, rows, round(allowed, 3))
        if key not in self._per_query:
            opened, kept = topk_work(self.s.within, self.n, rows, k, allowed)
            self._per_query[key] = self.c.topk_extra(k, opened, kept, self.word)
        return self._per_query[key]

    # --- the linear scan (mirrors kernels.scan._split)
    def scan(self, nq: int, threads: int, k: int | None = None, hits: float = 0.0, allowed: float = 1.0) -> float:
        c, n = self.c, self.n
        if nq * n < SMALL_WORK:  # one task on the calling thread, all queries sharing each block
            threads = 1
        if nq >= threads:
            g = max(1, min(QGROUP, nq // threads))
            per_row = c.scan_row_batch + (c.scan_row_single - c.scan_row_batch) * (1 / g - 1 / QGROUP) / (1 - 1 / QGROUP)
            tasks = -(-nq // g)
            work = tasks * g * n * per_row * self.row + hits * c.hit
            if k is not None:
                work += nq * self.topk_extra(k, n, allowed)
            t = c.split(work, min(threads, tasks))
        else:  # each query split over parts, each part keeping its own top-k, merged after (serially)
            parts = max(1, min(threads // nq, n // MIN_PART))
            work = n * c.scan_row_single * self.row
            if k is not None:
                work += parts * self.topk_extra(k, -(-n // parts), allowed)
                hits += (parts - 1) * k * nq
            t = c.split(work, parts) + hits * c.hit
        return (t + c.scan_call_us * 1e3) * 1e-9

    # --- multi-index hashing, per query (averaged over the sample queries)
    def probe(self, m: int) -> float:
        """ns of one bucket probe with m tables: an array read when the substrings are short enough
        for direct addressing, else binary searches over n rows."""
        return self.c.direct_probe_ns if substring_bounds(self.nbits, m)[1].max() <= DIRECT_BITS else self.c.probe(self.n)

    def _pass(self, m: int, r: int, allowed: float) -> tuple[np.ndarray, np.ndarray | None]:
        """Per sample query, one MIH radius-r pass with m tables: its MIH_FEATURES (the work each
        constant prices), or the ns of the linear scan it falls back to instead (then None features)."""
        _, ln = substring_bounds(self.nbits, m)
        probes = mih_kernels.probe_count(ln, mih_kernels.radii(m, r))
        hits = self.s.within[:, min(r, self.nbits)] * allowed
        if probes * mih_kernels.PROBE_COST > self.n:
            return self.n * self.c.scan_row_single * self.row + hits * self.c.hit, None
        ones = np.ones_like(hits)
        return np.zeros_like(hits), np.stack([ones, m * ones, probes * ones, self.s.verify_rows(m, r) * self.word, hits], 1)

    def mih_features(self, m: int, k: int | None = None, radius: int | None = None,
                     allowed: float = 1.0) -> tuple[np.ndarray, float]:
        """Mean over the sample queries of one query's MIH_FEATURES and of the ns of scans it falls back
        to: a radius search is one pass; top-k grows the radius from 0 until k allowed rows lie within
        it, each pass from scratch."""
        key = ("features", m, k, radius, round(allowed, 3))
        if key not in self._per_query:
            if k is None:
                scanned, feats = self._pass(m, radius, allowed)
                feats = np.zeros((scanned.size, len(MIH_FEATURES))) if feats is None else feats
            else:
                nq_s = self.s.within.shape[0]
                scanned, feats = np.zeros(nq_s), np.zeros((nq_s, len(MIH_FEATURES)))
                open_ = np.ones(nq_s, bool)
                for r in range(self.nbits + 1):
                    ns, f = self._pass(m, r, allowed)
                    if f is None:
                        scanned += np.where(open_, ns + self.topk_extra(k, self.n, allowed), 0.0)
                        break
                    feats += f * open_[:, None]
                    open_ &= self.s.within[:, r] * allowed < k
                    if not open_.any():
                        break
            self._per_query[key] = (feats.mean(axis=0), float(scanned.mean()))
        return self._per_query[key]

    def mih_query(self, m: int, k: int | None = None, radius: int | None = None, allowed: float = 1.0) -> float:
        """ns of one query's MIH search with m tables (top-k when k is given, else radius search)."""
        feats, scanned = self.mih_features(m, k, radius, allowed)
        c = self.c
        return float(feats @ np.array([c.pass_ns, c.table_ns, self.probe(m), c.verify_row, c.mih_hit])) + scanned

    def mih(self, per_query_ns: float, nq: int, threads: int) -> float:
        """Queries run in one chunk a thread (all on the calling thread over small tables, as
        `mih._query_chunks` splits them)."""
        chunks = 1 if nq <= 1 or self.n < SMALL_TABLE_ROWS else min(threads, nq)
        return (self.c.mih_call_us * 1e3 + self.c.split(per_query_ns * nq, chunks)) * 1e-9

    # --- the choice
    def choose(self, nq: int, threads: int, ms: list[int], k: int | None = None, radius: int | None = None,
               allowed: float = 1.0) -> Estimate:
        threads = max(1, threads)
        if k is not None:
            scan_s = self.scan(nq, threads, k=min(k, self.n), allowed=allowed)
            mih_s = {m: self.mih(self.mih_query(m, k=k, allowed=allowed), nq, threads) for m in ms}
        else:
            hits = float(self.s.within[:, min(radius, self.nbits)].mean()) * allowed * nq
            scan_s = self.scan(nq, threads, hits=hits)
            mih_s = {m: self.mih(self.mih_query(m, radius=radius, allowed=allowed), nq, threads) for m in ms}
        best = min(mih_s, key=mih_s.get) if mih_s else None
        usual = default_substrings(self.nbits, self.n)
        if best is not None and usual in mih_s and mih_s[best] * OTHER_M_MARGIN > mih_s[usual]:
            best = usual
        if best is None or scan_s <= mih_s[best]:
            return Estimate("scan", None, scan_s, mih_s)
        return Estimate("mih", best, scan_s, mih_s)


# ----------------------------------------------------------------------------------------------- calibration

def _best_time(fn, repeats: int = 5) -> float:
    fn()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _probe_costs(seed: int) -> tuple[tuple, float]:
    """ns of one MIH bucket probe over 2**PROBE_SIZES rows (never lower for more rows), and of one probe
    by direct addressing: uniform codes hold a row or so a bucket, so a pass is a fixed part plus its
    probes. Binary searches: 2 tables of 32 bits (radius 0: 1 probe, radius 2: 34); direct: 4 tables
    of 16 bits over 2**16 rows (radius 3: 4 probes, radius 7: 68)."""
    from hashsearch.mih import MultiIndexHash

    rng = np.random.default_rng(seed)
    qs = as_words(rng.integers(0, 256, (256, 8), dtype=np.uint8))

    def per_probe(mi: MultiIndexHash, r0: int, r1: int, probes: int) -> float:
        t0, t1 = (_best_time(lambda: mi.range_search(qs, r), 5) / qs.shape[0] for r in (r0, r1))
        return max(t1 - t0, 0.0) / probes * 1e9

    out = []
    for size in PROBE_SIZES:
        mi = MultiIndexHash(as_words(rng.integers(0, 256, (1 << size, 8), dtype=np.uint8)), 64, 2, probe_cost=0.0)
        out.append(max(per_probe(mi, 0, 2, 33), out[-1] if out else 0.0))
    mi = MultiIndexHash(as_words(rng.integers(0, 256, (1 << PROBE_SIZES[0], 8), dtype=np.uint8)), 64, 4, probe_cost=0.0)
    return tuple(out), per_probe(mi, 3, 7, 64)


def _calibrate_mih(seed: int) -> tuple[float, float, tuple, float, float, float, float]:
    """(pass ns, table ns, probe ns per PROBE_SIZES, verify ns a row, ns a reported row, call us, direct
    probe ns) of MIH.
    Probes are timed alone (`_probe_costs`); the other prices are a least-squares fit (relative errors) of
    the time left over, in radius (0 to 4) and top-k (k = 1, 10, 100) searches of clustered codes (a cluster's rows share
    buckets, as learned codes' do) with 2 to 8 tables at two sizes, against the work the model itself
    counts for each (`CostModel.mih_features`)."""
    from hashsearch.mih import MultiIndexHash
    from hashsearch.synthetic_codes import clustered_codes

    probe_ns, direct_ns = _probe_costs(seed)
    nq, ms = 64, (2, 3, 4, 5, 8)
    cols, times = [], []
    for size in PROBE_SIZES:
        packed = clustered_codes((1 << size) + nq, 64, 2000, 0.05, seed)
        db, qs = as_words(packed[nq:]), as_words(packed[:nq])
        model = CostModel(Costs(probe_ns=probe_ns, direct_probe_ns=direct_ns), CodeStats(packed[nq:], 64, list(ms), seed))
        for m in ms:
            mi = MultiIndexHash(db, 64, m)
            runs = [({"radius": r}, lambda r=r: mi.range_search(qs, r)) for r in range(5)]
            runs += [({"k": k}, lambda k=k: mi.search(qs, k)) for k in (1, 10, 100)]
            for args, fn in runs:
                feats, scanned = model.mih_features(m, **args)
                if scanned > 0:  # the model has this search fall back to a scan: not MIH's work
                    continue
                t = _best_time(fn, 3) / nq * 1e9
                cols.append(feats[[0, 1, 3, 4]])
                times.append((t - feats[2] * model.probe(m), t))
            del mi
    a, (y, t) = np.array(cols), np.array(times).T
    w = 1 / np.maximum(t, 1.0)
    pass_ns, table_ns, verify, hit = _nonneg_lstsq(a * w[:, None], y * w)
    tiny = MultiIndexHash(db[:256], 64, 2)
    call = _best_time(lambda: tiny.range_search(qs[:1], 0), 50) * 1e9 - pass_ns - 2 * table_ns - probe_ns[0]
    return float(pass_ns), float(table_ns), probe_ns, float(verify), float(hit), max(call, 0.0) / 1e3, direct_ns


def _split_prices(searches: list, repeats: int = 25, gap_s: float = 0.04) -> tuple[float, float, float, float]:
    """(efficiency of a second thread, pool us) of a typical (median) 2-thread call and of the fastest,
    from a small and a larger search (two of the same shape, split in groups of queries): each state's
    2-thread times against the work's 1-thread time W fit T = W / (1 + eff) + pool. The 2-thread calls
    of the two searches alternate, so that both see the same states of the machine, and are spread over
    a second (`gap_s` apart): on a shared machine the other core is free in some stretches, taken in others."""
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = [_best_time(fn, 9) for fn in searches]
        numba.set_num_threads(2)
        for fn in searches:
            fn()
        two = [[], []]
        for _ in range(repeats):
            time.sleep(gap_s)
            for fn, into in zip(searches, two):
                t0 = time.perf_counter()
                fn()
                into.append(time.perf_counter() - t0)
    finally:
        numba.set_num_threads(before)
    out = []
    for stat in (np.median, np.min):
        small, large = (float(stat(t)) for t in two)
        eff = min(max((one[1] - one[0]) / max(large - small, 1e-9) - 1, 0.05), 1.0)
        out += [eff, max(small - one[0] / (1 + eff), 0.0) * 1e6]
    return tuple(out)


def _nonneg_lstsq(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0."""
    from scipy.optimize import nnls

    return nnls(a, y)[0]


def calibrate(save: bool = True, seed: int = 0) -> Costs:
    """Measure the model's constants on this machine (one thread, a few seconds; short runs, best of
    several, so that a busy machine disturbs them less) and store them."""
    from hashsearch.kernels import scan
    from hashsearch.kernels.popcount import scan_words
    from hashsearch.synthetic_codes import clustered_codes

    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        rng = np.random.default_rng(seed)
        n = CALIBRATION_ROWS
        per_row, large = {}, {}
        for b in (32, 64, 128, 256):
            w = scan_words(rng.integers(0, 256, (LARGE_ROWS, b // 8), dtype=np.uint8))
            q = scan_words(rng.integers(0, 256, (QGROUP, b // 8), dtype=np.uint8))
            for rows, into in ((n, per_row), (LARGE_ROWS, large)):
                single = _best_time(lambda: scan.topk(q[:1], w[:rows], 1, b), 15 if rows == n else 5) / rows
                batch = _best_time(lambda: scan.topk(q, w[:rows], 1, b), 9 if rows == n else 3) / (rows * QGROUP)
                into[b] = (single, batch)
            if b == 64:
                w64, q64 = w[:TOPK_ROWS], q
            del w
        row_single, row_batch = per_row[64]
        # top-k beyond k = 1, on uniform and on clustered codes (blocks read twice and candidates kept
        # weigh differently in the two): the extra time against the work `topk_work` predicts
        extra, works = [], []
        nt = TOPK_ROWS
        for packed in (rng.integers(0, 256, (nt + 1, 8), dtype=np.uint8), clustered_codes(nt + 1, 64, 256, 0.05, seed)):
            w, qc = scan_words(packed[1:]), scan_words(packed[:1])
            within = CodeStats(packed[1:], 64, [2], seed).within
            base_open, base_kept = topk_work(within, nt, nt, 1)
            t1 = _best_time(lambda: scan.topk(qc, w, 1, 64), 9)
            for k in (10, 100, 1000):
                opened, kept = topk_work(within, nt, nt, k)
                extra.append(max(_best_time(lambda: scan.topk(qc, w, k, 64), 9) - t1, 0.0) * 1e9)
                works.append((opened - base_open, kept * (1 + k / 64) - base_kept * (1 + 1 / 64)))
        open_row, insert = (float(x) for x in _nonneg_lstsq(np.array(works), np.array(extra)))
        scan_call = _best_time(lambda: scan.topk(q64[:1], w64[:256], 1, 64), 50) - 256 * row_single
        hit_n = 1 << 12
        t_hits = _best_time(lambda: scan.range_search(q64, w64[:hit_n], 64, 64), 9)
        hit = max(t_hits - QGROUP * hit_n * row_batch, 0.0) / (QGROUP * hit_n)
        pass_ns, table_ns, probe_ns, verify, mih_hit, mih_call, direct_ns = _calibrate_mih(seed)
        split = (Costs.parallel_eff, Costs.pool_us, Costs.parallel_eff_fast, Costs.pool_fast_us)
        if numba.config.NUMBA_NUM_THREADS >= 2:
            split = _split_prices([lambda rows=rows: scan.topk(q64, w64[:rows], 1, 64)
                                   for rows in (SMALL_WORK // QGROUP * 2, TOPK_ROWS // 4)])
        costs = Costs(
            scan_row_single=row_single * 1e9, scan_row_batch=row_batch * 1e9,
            open_row=open_row, insert_ns=insert,
            probe_ns=probe_ns, pass_ns=pass_ns, table_ns=table_ns, verify_row=verify, mih_hit=mih_hit, hit=hit * 1e9,
            scan_call_us=max(scan_call, 0.0) * 1e6, mih_call_us=float(mih_call),
            word_cost=tuple(float(np.mean(per_row[b]) / np.mean(per_row[64])) for b in (32, 64, 128, 256)),
            large_cost=tuple(float(np.mean(large[b]) / np.mean(per_row[b])) for b in (32, 64, 128, 256)),
            parallel_eff=split[0], pool_us=split[1], parallel_eff_fast=split[2], pool_fast_us=split[3],
            direct_probe_ns=direct_ns,
        )
    finally:
        numba.set_num_threads(threads)
    if save:
        costs.save()
    return costs
