"""Hardware popcount for numba: `popcount64` lowers to llvm's `ctpop`, i.e. the `popcnt` instruction
(and `vpopcntq` where a loop vectorises on AVX-512 VPOPCNTDQ), because `np.bitwise_count` does not
compile inside numba."""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic


@intrinsic
def _ctpop_u64(typingctx, x):
    """llvm.ctpop on a uint64, returned as uint64."""
    if x != types.uint64:
        return None
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@njit(inline="always", cache=True)
def popcount64(x: np.uint64) -> np.int64:
    """Number of set bits of a uint64 word."""
    return np.int64(_ctpop_u64(np.uint64(x)))


def scan_words(codes: np.ndarray) -> np.ndarray:
    """The words the scan kernels read: 8-, 16- and 32-bit codes as ONE read-only uint8/16/32 word per
    row, a view (no padded copy: a memory-mapped index stays mapped, and a 16-bit code takes 2 bytes in
    memory, not 8); every other width as `as_words`' uint64 words (rows of several narrow words would
    not vectorise: 24-bit codes as 3 bytes scanned 5x slower than padded to one uint64)."""
    nbytes = codes.shape[1]
    if nbytes not in (1, 2, 4):
        return as_words(codes)
    words = np.ascontiguousarray(codes).view(np.dtype(f"uint{8 * nbytes}"))
    words.flags.writeable = False
    return words


def as_words(codes: np.ndarray) -> np.ndarray:
    """View packed uint8 codes (n, nbytes) as READ-ONLY uint64 words (n, ceil(nbytes / 8)), zero-padding
    each row to a whole word when needed (zero padding leaves Hamming distances unchanged): what the
    multi-index hash tables need, whose substrings are bit ranges of 64-bit words.

    Always read-only and C-contiguous, whether the codes are in memory or a read-only memory map, so
    that numba compiles (and caches) each kernel for one array type only."""
    n, nbytes = codes.shape
    nwords = -(-nbytes // 8)
    if nbytes == nwords * 8:
        words = np.ascontiguousarray(codes).view(np.uint64)
    else:
        padded = np.zeros((n, nwords * 8), dtype=np.uint8)
        padded[:, :nbytes] = codes
        words = padded.view(np.uint64)
    words.flags.writeable = False
    return words
