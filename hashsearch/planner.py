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
from hashsearch.kernels.scan import MIN_PART, QGROUP, SMALL_WORK
from hashsearch.mih import MAX_SUBSTRING_BITS, default_substrings

COSTS_FILE = "costs.json"
CALIBRATION_ROWS = 1 << 16
OTHER_M_MARGIN = 1.5  # a substring count other than the usual one must look this much faster: the model
# prices tables less well than the scan, and a wrong m costs more than the usual one's small loss
SAMPLE_ROWS, SAMPLE_QUERIES = 65536, 64


@dataclass(frozen=True)
class Costs:
    """Machine constants of the model, in nanoseconds (calls in microseconds); the defaults were
    calibrated on a shared 2-core AMD EPYC (Zen 5)."""

    scan_row_single: float = 1.07  # per row and query, one query alone (64-bit codes)
    scan_row_batch: float = 0.94  # per row and query, queries sharing each block (groups of 8)
    topk_ns: tuple = (0.0, 2.4e4, 6.0e4, 3.5e5)  # extra ns of one query's top-k, k = 1, 10, 100, 1000, over 2**16 rows
    probe_base: float = 117.0  # per MIH bucket probe over 4096 rows
    probe_log: float = 100.0  # per MIH bucket probe: added per doubling of n (the binary search misses cache)
    pass_ns: float = 640.0  # per query and radius pass of MIH (set-up, sort)
    verify_row: float = 0.18  # per candidate row MIH verifies (64-bit codes)
    hit: float = 21.0  # per result row (gather and sort)
    scan_call_us: float = 13.4  # fixed cost of one scan call
    mih_call_us: float = 80.0  # fixed cost of one MIH call
    word_cost: tuple = (1.02, 1.0, 1.96, 4.0)  # row cost of 32-, 64-, 128-, 256-bit codes against 64-bit ones
    parallel_eff: float = 0.5  # what each thread beyond the first adds (1: a perfect speed-up; low on a busy machine)

    def threads(self, used: int) -> float:
        """Effective threads when `used` threads share a task's work."""
        return 1 + (max(used, 1) - 1) * self.parallel_eff

    def words_factor(self, nbits: int) -> float:
        """Cost of reading one row of `nbits` bits, relative to a 64-bit row."""
        if nbits <= 32:
            return self.word_cost[0]
        nw = -(-nbits // 64)
        if nw <= 1:
            return self.word_cost[1]
        if nw <= 2:
            return self.word_cost[2]
        return self.word_cost[3] * nw / 4

    def topk_extra(self, k: int, n: int) -> float:
        """ns one query's top-k adds to a scan of n rows: the candidates it keeps, about
        k (1 + ln(n / k)) for rows in random order, priced from the calibrated k = 1 ... 1000 runs."""
        lk = min(max(math.log10(max(k, 1)), 0.0), 3.0)
        base = float(np.interp(lk, [0, 1, 2, 3], self.topk_ns)) * (k / 10 ** lk)
        kk = 10 ** lk
        return base * (1 + math.log(max(n / k, 1.0))) / (1 + math.log(max(CALIBRATION_ROWS / kk, 1.0)))

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
        self.row = costs.words_factor(self.nbits)
        self._per_query: dict = {}

    # --- the linear scan (mirrors kernels.scan._split)
    def scan(self, nq: int, threads: int, k: int | None = None, hits: float = 0.0) -> float:
        c, n = self.c, self.n
        if nq * n < SMALL_WORK:  # one task on the calling thread, all queries sharing each block
            threads = 1
        if nq >= threads:
            g = max(1, min(QGROUP, nq // threads))
            per_row = c.scan_row_batch + (c.scan_row_single - c.scan_row_batch) * (1 / g - 1 / QGROUP) / (1 - 1 / QGROUP)
            tasks = -(-nq // g)
            rows_time = tasks * g * n * per_row / c.threads(min(threads, tasks))
            per_query = nq / c.threads(min(threads, tasks))
        else:
            parts = max(1, min(threads // nq, n // MIN_PART))
            rows_time = n * c.scan_row_single / c.threads(parts)
            per_query = 1.0
        t = rows_time * self.row
        if k is not None:
            t += per_query * c.topk_extra(k, n)
        t += hits * c.hit / c.threads(min(threads, max(nq, 1)))
        return (t + c.scan_call_us * 1e3) * 1e-9

    # --- multi-index hashing, per query (averaged over the sample queries)
    def _probe_ns(self) -> float:
        return max(self.c.probe_base + self.c.probe_log * (math.log2(max(self.n, 2)) - 12), 0.5 * self.c.probe_base)

    def _radius_ns(self, m: int, r: int, allowed: float) -> tuple[np.ndarray, bool]:
        """Per sample query: ns of one MIH radius-r pass with m tables, and whether it falls back to a scan."""
        _, ln = substring_bounds(self.nbits, m)
        probes = mih_kernels.probe_count(ln, mih_kernels.radii(m, r))
        if probes * mih_kernels.PROBE_COST > self.n:
            return np.full(self.s.within.shape[0], self.n * self.c.scan_row_single * self.row
                           + self.s.within[:, min(r, self.nbits)] * allowed * self.c.hit), True
        return (self.c.pass_ns + probes * self._probe_ns() + self.s.verify_rows(m, r) * self.c.verify_row * self.row
                + self.s.within[:, min(r, self.nbits)] * allowed * self.c.hit), False

    def mih_query_range(self, m: int, r: int, allowed: float = 1.0) -> float:
        key = ("range", m, r, round(allowed, 3))
        if key not in self._per_query:
            self._per_query[key] = float(self._radius_ns(m, r, allowed)[0].mean())
        return self._per_query[key]

    def mih_query_topk(self, m: int, k: int, allowed: float = 1.0) -> float:
        """Top-k grows the radius from 0 until k allowed rows lie within it, each pass from scratch."""
        key = ("topk", m, k, round(allowed, 3))
        if key not in self._per_query:
            nq_s = self.s.within.shape[0]
            total = np.zeros(nq_s)
            open_ = np.ones(nq_s, bool)
            for r in range(self.nbits + 1):
                ns, fallback = self._radius_ns(m, r, allowed)
                total += np.where(open_, ns + (self.c.topk_extra(k, self.n) if fallback else 0.0), 0.0)
                if fallback:
                    break
                open_ &= self.s.within[:, r] * allowed < k
                if not open_.any():
                    break
            self._per_query[key] = float(total.mean())
        return self._per_query[key]

    def mih(self, per_query_ns: float, nq: int, threads: int) -> float:
        """Queries run in one chunk a thread."""
        return (self.c.mih_call_us * 1e3 + per_query_ns * nq / self.c.threads(min(threads, nq))) * 1e-9

    # --- the choice
    def choose(self, nq: int, threads: int, ms: list[int], k: int | None = None, radius: int | None = None,
               allowed: float = 1.0) -> Estimate:
        threads = max(1, threads)
        if k is not None:
            scan_s = self.scan(nq, threads, k=min(k, self.n))
            mih_s = {m: self.mih(self.mih_query_topk(m, k, allowed), nq, threads) for m in ms}
        else:
            hits = float(self.s.within[:, min(radius, self.nbits)].mean()) * allowed * nq
            scan_s = self.scan(nq, threads, hits=hits)
            mih_s = {m: self.mih(self.mih_query_range(m, radius, allowed), nq, threads) for m in ms}
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


def calibrate(save: bool = True, seed: int = 0) -> Costs:
    """Measure the model's constants on this machine (one thread, a few seconds; short runs, best of
    several, so that a busy machine disturbs them less) and store them."""
    from hashsearch.kernels import scan
    from hashsearch.kernels.popcount import scan_words
    from hashsearch.mih import MultiIndexHash

    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        rng = np.random.default_rng(seed)
        n = CALIBRATION_ROWS
        per_row = {}
        for b in (32, 64, 128, 256):
            w = scan_words(rng.integers(0, 256, (n, b // 8), dtype=np.uint8))
            q = scan_words(rng.integers(0, 256, (QGROUP, b // 8), dtype=np.uint8))
            single = _best_time(lambda: scan.topk(q[:1], w, 1, b), 15) / n
            batch = _best_time(lambda: scan.topk(q, w, 1, b), 9) / (n * QGROUP)
            per_row[b] = (single, batch)
            if b == 64:
                w64, q64 = w, q
                t1 = _best_time(lambda: scan.topk(q[:1], w, 1, b), 15)
                topk = tuple(max(_best_time(lambda: scan.topk(q[:1], w, k, b), 15) - t1, 0.0) * 1e9
                             for k in (1, 10, 100, 1000))
        row_single, row_batch = per_row[64]
        scan_call = _best_time(lambda: scan.topk(q64[:1], w64[:256], 1, 64), 50) - 256 * row_single
        hit_n = 1 << 12
        t_hits = _best_time(lambda: scan.range_search(q64, w64[:hit_n], 64, 64), 9)
        hit = max(t_hits - QGROUP * hit_n * row_batch, 0.0) / (QGROUP * hit_n)
        # MIH: uniform codes in 2 tables of 32 bits hold ~1 row a bucket at most, so a pass costs a
        # fixed part plus its probes; r = 0 probes 2 buckets, r = 2 probes 34: two equations per size
        qs = as_words(rng.integers(0, 256, (500, 8), dtype=np.uint8))
        words = as_words(rng.integers(0, 256, (1 << 18, 8), dtype=np.uint8))
        probe, fixed = [], []
        for size in (1 << 12, 1 << 18):
            mi = MultiIndexHash(words[:size], 64, 2, probe_cost=0.0)
            t0, t2 = (_best_time(lambda: mi.range_search(qs, r), 5) / qs.shape[0] for r in (0, 2))
            probe.append(max(t2 - t0, 0.0) / 32)
            fixed.append(max(t0 - 2 * probe[-1], 0.0))
        probe_base, probe_log = probe[0], max(probe[1] - probe[0], 0.0) / 6
        # MIH verification: every row shares the query's first substring, so one probe walks all rows
        flat = rng.integers(0, 256, (n, 8), dtype=np.uint8)
        flat[:, :4] = 0
        mi = MultiIndexHash(as_words(flat), 64, 2, probe_cost=0.0)
        qv = as_words(np.ascontiguousarray(flat[:QGROUP]))
        verify = _best_time(lambda: mi.range_search(qv, 0), 9) / (QGROUP * n)
        tiny = MultiIndexHash(words[:256], 64, 2, probe_cost=0.0)
        mih_call = _best_time(lambda: tiny.range_search(qs[:1], 0), 50) - fixed[0]
        parallel_eff = Costs.parallel_eff
        if numba.config.NUMBA_NUM_THREADS >= 2:  # one query over 2**18 rows, split in two parts or not
            big = scan_words(rng.integers(0, 256, (1 << 18, 8), dtype=np.uint8))
            one = _best_time(lambda: scan.topk(q64[:1], big, 1, 64), 9)
            numba.set_num_threads(2)
            two = _best_time(lambda: scan.topk(q64[:1], big, 1, 64), 9)
            numba.set_num_threads(1)
            parallel_eff = float(min(max(one / two - 1, 0.05), 1.0))
        costs = Costs(
            scan_row_single=row_single * 1e9, scan_row_batch=row_batch * 1e9,
            topk_ns=topk,
            probe_base=probe_base * 1e9, probe_log=probe_log * 1e9, pass_ns=float(np.mean(fixed)) * 1e9,
            verify_row=verify * 1e9, hit=hit * 1e9,
            scan_call_us=max(scan_call, 0.0) * 1e6, mih_call_us=max(mih_call, 0.0) * 1e6,
            word_cost=tuple(float(np.mean(per_row[b]) / np.mean(per_row[64])) for b in (32, 64, 128, 256)),
            parallel_eff=parallel_eff,
        )
    finally:
        numba.set_num_threads(threads)
    if save:
        costs.save()
    return costs
