"""Triton kernels for exact Hamming search on a GPU, parallel over the DATABASE: one query keeps every
multiprocessor busy (FAISS's GPU binary index gives each query one warp walking the whole database).

Why Triton: it is the one GPU compiler on the device machine (torch's own; nothing else installs there),
its kernels are Python that compile for any CUDA GPU torch supports, and the SAME kernels run without a
GPU through Triton's interpreter (TRITON_INTERPRET=1, numpy on the host), so CI tests the code that runs
on the device. CUDA C (torch.utils.cpp_extension) would need a compiler on the device and could not
run in CI; CuPy and others cannot be installed there.

Algorithm (exact top-k for any k, exact inclusive radius search, both in two passes over the codes):
1. `histogram_kernel`: each program takes a contiguous CHUNK of rows and a block of queries, loads each
   tile of rows once for all its queries, and counts distances 0..nbits per (query, chunk). Distances are
   small integers, so the histogram IS the sort: the threshold t (the k-th smallest distance) and how many
   rows at t to keep follow from the summed histogram, and each chunk's exact write offset from the
   per-chunk counts (`plan_topk` / `plan_range`, torch ops on tiny arrays).
2. `select_kernel`: recompute distances and write rows with d < t plus the first rows (by position) with
   d == t, each at its final place, in position order; a stable sort by distance then gives (distance,
   position) order, ties by position exactly as the CPU scan. Radius search is the same kernel with
   t = r + 1 and no row kept at t.
Masked-out rows (tombstones, filters) get a distance past nbits inside the kernels, so they are never
counted nor written. Codes are held word-major, (words, rows) int32, so a tile load is coalesced.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch

# Without CUDA the kernels run in Triton's interpreter unless TRITON_INTERPRET=0 says otherwise (then they
# can still be compiled for a GPU target, as tests/test_gpu.py does). The choice is made once, before
# triton is imported: triton decorates its own helpers (tl.zeros, tl.cumsum...) for one mode at its import.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0" if torch.cuda.is_available() else "1") == "1"
if INTERPRETED:
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        raise ImportError("no CUDA device and triton was imported before hashsearch.kernels.gpu without "
                          "TRITON_INTERPRET=1: set TRITON_INTERPRET=1 before importing triton to run the "
                          "GPU kernels in Triton's interpreter")
    os.environ["TRITON_INTERPRET"] = "1"

import triton  # noqa: E402  (after the interpreter switch above)
import triton.language as tl  # noqa: E402
from triton.language.extra import libdevice  # noqa: E402

PAD_DISTANCE = 2**31 - 1  # = hashsearch.results.PAD_DISTANCE


@triton.jit
def _load_tile(words_ptr, stride, n, allowed_ptr, r0, W, BLOCK_N: tl.constexpr, WP: tl.constexpr,
               HAS_MASK: tl.constexpr):
    """Rows r0..r0+BLOCK_N: (positions, (BLOCK_N, WP) words, allowed) — rows past n are not allowed."""
    rows = r0 + tl.arange(0, BLOCK_N).to(tl.int64)
    wi = tl.arange(0, WP)
    inside = rows < n
    tile = tl.load(words_ptr + wi[None, :].to(tl.int64) * stride + rows[:, None],
                   mask=inside[:, None] & (wi < W)[None, :], other=0)
    ok = inside
    if HAS_MASK:
        ok = ok & (tl.load(allowed_ptr + rows, mask=inside, other=0) != 0)
    return rows, tile, ok


@triton.jit
def _distances(tile, q_ptr, qi, nq, W, WP: tl.constexpr, HW_POPC: tl.constexpr):
    """Hamming distances (BLOCK_N,) from query qi to the tile's rows: popcount of XOR, summed over words.
    HW_POPC: the GPU's popc instruction; else a SWAR popcount (what the interpreter can run)."""
    wi = tl.arange(0, WP)
    qv = tl.load(q_ptr + tl.minimum(qi, nq - 1) * W + wi, mask=wi < W, other=0)  # qi >= nq: discarded
    x = tile ^ qv[None, :]
    if HW_POPC:
        c = libdevice.popc(x)
    else:
        u = x.to(tl.uint32, bitcast=True)
        u = u - ((u >> 1) & 0x55555555)
        u = (u & 0x33333333) + ((u >> 2) & 0x33333333)
        u = (u + (u >> 4)) & 0x0F0F0F0F
        c = ((u * 0x01010101) >> 24).to(tl.int32)
    return tl.sum(c, axis=1)


@triton.jit
def histogram_kernel(words_ptr, stride, n, allowed_ptr, q_ptr, nq, hist_ptr, tiles_per_prog, W,
                     BLOCK_N: tl.constexpr, WP: tl.constexpr, BQ: tl.constexpr, NB: tl.constexpr,
                     HAS_MASK: tl.constexpr, HW_POPC: tl.constexpr):
    """hist[q, chunk, d] = allowed rows of program chunk at distance d from query q (bin NB-1: the rest).
    Grid (chunks, query blocks of BQ); each tile is loaded once for the BQ queries."""
    pn = tl.program_id(0)
    npn = tl.num_programs(0)
    q0 = tl.program_id(1) * BQ
    qs = tl.arange(0, BQ)
    bins = tl.arange(0, NB)
    acc = tl.zeros([BQ, NB], tl.int32)
    for t in range(tiles_per_prog):
        r0 = (pn.to(tl.int64) * tiles_per_prog + t) * BLOCK_N
        rows, tile, ok = _load_tile(words_ptr, stride, n, allowed_ptr, r0, W, BLOCK_N, WP, HAS_MASK)
        for j in tl.static_range(BQ):
            d = tl.where(ok, _distances(tile, q_ptr, q0 + j, nq, W, WP, HW_POPC), NB - 1)
            acc += tl.where(qs[:, None] == j, tl.histogram(d, NB)[None, :], 0)
    out = hist_ptr + ((q0 + qs).to(tl.int64)[:, None] * npn + pn) * NB + bins[None, :]
    tl.store(out, acc, mask=(q0 + qs < nq)[:, None])


@triton.jit
def select_kernel(words_ptr, stride, n, allowed_ptr, q_ptr, nq, thr_ptr, keep_ptr, base_ptr, eq_before_ptr,
                  out_d_ptr, out_p_ptr, tiles_per_prog, W, BLOCK_N: tl.constexpr, WP: tl.constexpr,
                  BQ: tl.constexpr, HAS_MASK: tl.constexpr, HW_POPC: tl.constexpr):
    """Write, in position order from base[q, chunk] on, the allowed rows with d < thr[q] and the rows with
    d == thr[q] whose rank among those (eq_before[q, chunk] come in earlier chunks) is below keep[q]."""
    pn = tl.program_id(0)
    npn = tl.num_programs(0)
    q0 = tl.program_id(1) * BQ
    qs = tl.arange(0, BQ)
    live = q0 + qs < nq
    thr = tl.load(thr_ptr + q0 + qs, mask=live, other=-1)
    keep = tl.load(keep_ptr + q0 + qs, mask=live, other=0)
    at = tl.load(base_ptr + (q0 + qs).to(tl.int64) * npn + pn, mask=live, other=0)
    eq_seen = tl.load(eq_before_ptr + (q0 + qs).to(tl.int64) * npn + pn, mask=live, other=0)
    for t in range(tiles_per_prog):
        r0 = (pn.to(tl.int64) * tiles_per_prog + t) * BLOCK_N
        rows, tile, ok = _load_tile(words_ptr, stride, n, allowed_ptr, r0, W, BLOCK_N, WP, HAS_MASK)
        for j in tl.static_range(BQ):
            pick = qs == j
            t_j = tl.sum(tl.where(pick, thr, 0))
            seen_j = tl.sum(tl.where(pick, eq_seen, 0))
            d = _distances(tile, q_ptr, q0 + j, nq, W, WP, HW_POPC)
            lt = ok & (d < t_j)
            keep_j = tl.sum(tl.where(pick, keep, 0))
            # rows at t_j count only while fewer than keep_j were seen (-1: no distance matches)
            eq = ok & (d == tl.where(seen_j < keep_j, t_j, -1))
            if tl.sum((lt | eq).to(tl.int32)) > 0:  # most tiles hold no candidate: skip the scans
                eq_i = eq.to(tl.int64)
                sel = lt | (eq & (seen_j + tl.cumsum(eq_i, axis=0) - eq_i < keep_j))
                sel_i = sel.to(tl.int64)
                dst = tl.sum(tl.where(pick, at, 0)) + tl.cumsum(sel_i, axis=0) - sel_i
                tl.store(out_d_ptr + dst, d, mask=sel)
                tl.store(out_p_ptr + dst, rows, mask=sel)
                at += tl.where(pick, tl.sum(sel_i), 0)
                eq_seen += tl.where(pick, tl.sum(eq_i), 0)


def next_pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


@dataclass(frozen=True)
class Launch:
    """How a search is cut into programs: rows a tile, queries a program, chunks (programs along rows)."""
    block_rows: int
    block_queries: int
    chunks: int
    tiles_per_chunk: int


def plan_launch(n: int, nq: int, words: int, nbits: int, device: torch.device,
                block_rows: int | None = None, chunks: int | None = None) -> Launch:
    """Tiles of about 4096 words (registers, not spills), up to 8 queries a program (the histogram
    accumulators of BQ x bins stay small), and enough chunks for ~8 programs per multiprocessor."""
    wp = next_pow2(words)
    block = block_rows or max(16, min(1024, 4096 // wp))
    bq = min(next_pow2(nq), max(1, min(8, 4096 // next_pow2(nbits + 2))))
    tiles = max(1, -(-n // block))
    if chunks is None:
        target = 8 * torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
        chunks = -(-target // -(-nq // bq))
    chunks = max(1, min(int(chunks), tiles))
    return Launch(block, bq, chunks, -(-tiles // chunks))


def to_words(codes: torch.Tensor) -> torch.Tensor:
    """(n, nbytes) uint8 codes as word-major (ceil(nbytes / 4), n) int32 words (zero padding leaves
    distances unchanged), on the codes' device."""
    n, nbytes = codes.shape
    nw = -(-nbytes // 4)
    if n == 0:  # an empty tensor has no strides to view through
        return torch.zeros((nw, 0), dtype=torch.int32, device=codes.device)
    if nbytes != 4 * nw:
        codes = torch.nn.functional.pad(codes, (0, 4 * nw - nbytes))
    return codes.contiguous().view(torch.int32).t().contiguous()


def query_words(queries: torch.Tensor) -> torch.Tensor:
    """(nq, nbytes) uint8 queries as row-major (nq, words) int32."""
    return to_words(queries).t().contiguous()


@dataclass
class Codes:
    """One database part as the kernels read it: words[:, :n] of a (words, capacity) int32 tensor, and
    an optional (n,) uint8 allowed mask (1 = may be returned)."""
    words: torch.Tensor
    n: int
    allowed: torch.Tensor | None = None


def _args(codes: Codes, q: torch.Tensor):
    dummy = codes.allowed if codes.allowed is not None else codes.words  # never read without HAS_MASK
    return codes.words, codes.words.stride(0), codes.n, dummy, q, q.shape[0]


def histograms(codes: Codes, q: torch.Tensor, nbits: int, launch: Launch) -> torch.Tensor:
    """(nq, chunks, nbits + 1) int64 counts of allowed rows per distance, query and chunk (pass 1)."""
    nq, w = q.shape
    nb = next_pow2(nbits + 2)
    hist = torch.empty((nq, launch.chunks, nb), dtype=torch.int32, device=q.device)
    grid = (launch.chunks, -(-nq // launch.block_queries))
    histogram_kernel[grid](*_args(codes, q), hist, launch.tiles_per_chunk, w, BLOCK_N=launch.block_rows,
                           WP=next_pow2(w), BQ=launch.block_queries, NB=nb, HAS_MASK=codes.allowed is not None,
                           HW_POPC=not INTERPRETED)
    return hist[:, :, :nbits + 1].to(torch.int64)


def _select(codes: Codes, q: torch.Tensor, hist: torch.Tensor, thr: torch.Tensor, keep: torch.Tensor,
            start: torch.Tensor, size: int, launch: Launch) -> tuple[torch.Tensor, torch.Tensor]:
    """Pass 2: the selected rows of every query, query q's from start[q] on, in position order, into
    (size,) int32 distances and int64 positions (slots left over keep (PAD_DISTANCE, -1))."""
    bins = torch.arange(hist.shape[2], device=hist.device)
    lt = (hist * (bins < thr[:, None, None])).sum(2)
    eq = hist.gather(2, thr.clamp(max=hist.shape[2] - 1)[:, None, None].expand(-1, hist.shape[1], 1))[:, :, 0]
    eq = torch.where(thr[:, None] < hist.shape[2], eq, 0)
    eq_before = torch.cumsum(eq, 1) - eq
    chosen = lt + torch.minimum((keep[:, None] - eq_before).clamp(min=0), eq)
    base = start[:, None] + torch.cumsum(chosen, 1) - chosen
    out_d = torch.full((size,), PAD_DISTANCE, dtype=torch.int32, device=q.device)
    out_p = torch.full((size,), -1, dtype=torch.int64, device=q.device)
    nq, w = q.shape
    grid = (launch.chunks, -(-nq // launch.block_queries))
    select_kernel[grid](*_args(codes, q), thr.to(torch.int32).contiguous(), keep.contiguous(),
                        base.contiguous(), eq_before.contiguous(), out_d, out_p, launch.tiles_per_chunk, w,
                        BLOCK_N=launch.block_rows, WP=next_pow2(w), BQ=launch.block_queries,
                        HAS_MASK=codes.allowed is not None, HW_POPC=not INTERPRETED)
    return out_d, out_p


def topk(codes: Codes, q: torch.Tensor, k: int, nbits: int, launch: Launch) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of each query among the allowed rows: (nq, k) int32 distances and int64 positions
    sorted by (distance, position), padded with (PAD_DISTANCE, -1); any k, up to n and beyond."""
    nq = q.shape[0]
    hist = histograms(codes, q, nbits, launch)
    cum = torch.cumsum(hist.sum(1), 1)  # (nq, nbits + 1): allowed rows at distance <= d
    want = cum[:, -1].clamp(max=k)
    thr = (cum < want[:, None]).sum(1)  # the smallest d holding the want-th row
    keep = want - torch.where(thr > 0, cum.gather(1, (thr - 1).clamp(min=0)[:, None])[:, 0], 0)
    start = torch.arange(nq, device=q.device, dtype=torch.int64) * k
    out_d, out_p = _select(codes, q, hist, thr, keep, start, nq * k, launch)
    out_d, order = torch.sort(out_d.view(nq, k), dim=1, stable=True)
    return out_d, out_p.view(nq, k).gather(1, order)


def range_search(codes: Codes, q: torch.Tensor, radius: int, nbits: int,
                 launch: Launch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every allowed row within `radius` (inclusive) of each query: CSR (lims (nq+1,) int64, distances
    int32, positions int64), each query's rows sorted by (distance, position)."""
    nq = q.shape[0]
    hist = histograms(codes, q, nbits, launch)
    t = min(max(radius + 1, 0), nbits + 1)  # select d < t
    thr = torch.full((nq,), t, dtype=torch.int64, device=q.device)
    counts = hist[:, :, :t].sum((1, 2))
    lims = torch.zeros(nq + 1, dtype=torch.int64, device=q.device)
    torch.cumsum(counts, 0, out=lims[1:])
    total = int(lims[-1])
    out_d, out_p = _select(codes, q, hist, thr, torch.zeros_like(thr), lims[:-1], total, launch)
    rows = torch.repeat_interleave(torch.arange(nq, device=q.device), counts)
    order = torch.sort(rows * (nbits + 1) + out_d, stable=True).indices
    return lims, out_d[order], out_p[order]
