"""Packed row bitmaps: which rows a search may return, one bit a row (bit j of byte j >> 3, little
bit order: FAISS's `IDSelectorBitmap` layout), padding bits zero.

The kernels test a bit instead of reading a bool, so a tombstone mask is 8x smaller: a remove copies
n / 8 bytes (copy-on-write, readers keep their version), not n.
"""
from __future__ import annotations

import numpy as np

__all__ = ["allowed_share", "as_bool", "clear", "count", "is_set", "last_set", "ones", "pack"]


def pack(mask: np.ndarray) -> np.ndarray:
    """(ceil(n / 8),) uint8 bitmap of an (n,) bool mask."""
    return np.packbits(mask, bitorder="little")


def as_bool(bits: np.ndarray, n: int) -> np.ndarray:
    """(n,) bool mask of a bitmap over n rows."""
    return np.unpackbits(bits, count=n, bitorder="little").view(bool)


def ones(n: int) -> np.ndarray:
    """A bitmap with the n rows set (and the padding bits clear)."""
    bits = np.full(-(-n // 8), 255, np.uint8)
    if n % 8:
        bits[-1] = (1 << (n % 8)) - 1
    return bits


def is_set(bits: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Bool array: whether each row position's bit is set."""
    return ((bits[pos >> 3] >> (pos & 7).astype(np.uint8)) & 1).astype(bool)


def clear(bits: np.ndarray, pos: np.ndarray) -> None:
    """Clear the bits of these row positions, in place (repeated bytes are handled)."""
    np.bitwise_and.at(bits, pos >> 3, ~(np.uint8(1) << (pos & 7).astype(np.uint8)))


def count(bits: np.ndarray) -> int:
    """Number of set bits."""
    return int(np.bitwise_count(bits).sum(dtype=np.int64))


def allowed_share(bits: np.ndarray, n: int, samples: int = 4096) -> float:
    """About which share of the n rows is set, from at most `samples` bytes spread over the bitmap."""
    step = max(1, bits.shape[0] // samples)
    sample = bits[::step]
    return count(sample) / max(1, min(8 * sample.shape[0], n))


def last_set(bits: np.ndarray) -> int:
    """Largest set row position, -1 when none; walks back from the end in blocks."""
    block = 1 << 13
    for hi in range(bits.shape[0], 0, -block):
        nonzero = np.flatnonzero(bits[max(0, hi - block):hi])
        if nonzero.size:
            byte = max(0, hi - block) + int(nonzero[-1])
            return 8 * byte + int(bits[byte]).bit_length() - 1
    return -1
