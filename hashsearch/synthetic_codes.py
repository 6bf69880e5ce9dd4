"""Synthetic packed binary codes for tests and benchmarks: uniform, or clustered (noisy copies of a
few thousand centres: the structure learned codes have, and the case multi-index hashing is for)."""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from hashsearch.codes import check_nbits

CHUNK = 1 << 20  # rows generated at a time, to bound memory at any n


def random_codes(n: int, nbits: int, seed: int = 0) -> np.ndarray:
    """(n, nbits/8) uint8 codes with independent uniform bits."""
    check_nbits(nbits)
    return np.random.default_rng(seed).integers(0, 256, (n, nbits // 8), dtype=np.uint8)


def clustered_codes(n: int, nbits: int, n_centres: int = 2000, flip_prob: float = 0.05, seed: int = 0,
                    offset: int = 0, progress: bool = False) -> np.ndarray:
    """(n, nbits/8) uint8 codes: each a random centre (of `n_centres`, fixed by `seed`) with every bit
    flipped independently with probability `flip_prob`. `offset` picks a different noise stream, so
    queries (offset = database size, say) come from the same centres as the database."""
    check_nbits(nbits)
    if not 0 <= flip_prob <= 1 or n_centres < 1:
        raise ValueError(f"need flip_prob in [0, 1] and n_centres >= 1, got {flip_prob}, {n_centres}")
    centres = np.random.default_rng(seed).integers(0, 256, (n_centres, nbits // 8), dtype=np.uint8)
    rng = np.random.default_rng([seed, offset])
    out = np.empty((n, nbits // 8), np.uint8)
    for lo in tqdm(range(0, n, CHUNK), desc="clustered codes", unit="chunk", disable=not progress):
        hi = min(lo + CHUNK, n)
        flips = np.packbits(rng.random((hi - lo, nbits), dtype=np.float32) < flip_prob, axis=1)
        np.bitwise_xor(centres[rng.integers(0, n_centres, hi - lo)], flips, out=out[lo:hi])
    return out
