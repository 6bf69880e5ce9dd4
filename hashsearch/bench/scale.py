"""Scale: databases of codes that look like learned ones (clustered and duplicated, from
hashsearch.synthetic_codes; or real learned codes replicated with bit noise), memory growth with n,
and the latency of every engine on them."""
from __future__ import annotations

import numpy as np

from hashsearch import synthetic_codes
from hashsearch.bench.engines import ENGINES
from hashsearch.bench.storage import index_footprint


def database_codes(n: int, nbits: int, seed: int = 0) -> np.ndarray:
    """`n` clustered, partly duplicated codes: the stand-in for a learned code database."""
    return synthetic_codes.clustered_codes(n, nbits, seed=seed)


def flip_bits(codes: np.ndarray, flips: int, seed: int = 0) -> np.ndarray:
    """A copy of `codes` with exactly `flips` distinct random bits flipped in every row."""
    rng = np.random.default_rng(seed)
    n, nbytes = codes.shape
    nbits = nbytes * 8
    out = np.unpackbits(codes, axis=1)
    cols = np.argsort(rng.random((n, nbits)), axis=1)[:, :flips]
    out[np.arange(n)[:, None], cols] ^= 1
    return np.packbits(out, axis=1)


def query_codes(codes: np.ndarray, nq: int, flips: int = 2, seed: int = 0) -> np.ndarray:
    """Queries near the database: `nq` random database rows with `flips` bits flipped."""
    rng = np.random.default_rng(seed + 1)
    rows = codes[rng.choice(len(codes), size=nq, replace=nq > len(codes))]
    return flip_bits(rows, flips, seed + 2)


def replicate_with_noise(codes: np.ndarray, n: int, flip_prob: float = 0.02, seed: int = 0) -> np.ndarray:
    """`n` codes made by tiling learned `codes` and flipping each bit with probability `flip_prob`
    (the first copy is left exact), so the database keeps the learned codes' cluster structure."""
    rng = np.random.default_rng(seed)
    reps = -(-n // len(codes))
    tiled = np.ascontiguousarray(np.tile(codes, (reps, 1))[:n])
    nbits = codes.shape[1] * 8
    for start in range(len(codes), n, 1 << 16):  # in chunks: the noise mask is nbits floats a row
        rows = slice(start, min(start + (1 << 16), n))
        noise = rng.random((rows.stop - rows.start, nbits), dtype=np.float32) < flip_prob
        tiled[rows] ^= np.packbits(noise, axis=1)
    return tiled


def memory_growth(sizes: tuple[int, ...], nbits: int, seed: int = 0, engines: tuple[str, ...] = ENGINES) -> list[dict]:
    """Index memory and disk bytes per item of every engine at every n."""
    rows = []
    for n in sizes:
        rows += index_footprint(database_codes(n, nbits, seed), nbits, engines)
    return rows
