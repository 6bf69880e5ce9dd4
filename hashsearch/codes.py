"""Binary codes: sign binarisation and bit packing (8 bits a byte, most significant bit first).

A code of `nbits` bits is stored as `nbits // 8` uint8 bytes, the layout FAISS binary indexes use,
so packed codes go to either backend unchanged.
"""
from __future__ import annotations

import numpy as np

from hashsearch.errors import InvalidInputError

MIN_BITS, MAX_BITS = 8, 1024


def check_nbits(nbits: int) -> int:
    """Return `nbits` if it is a multiple of 8 in [8, 1024], else raise."""
    if isinstance(nbits, bool) or not isinstance(nbits, (int, np.integer)):
        raise InvalidInputError(f"nbits must be an integer, got {type(nbits).__name__}")
    if not (MIN_BITS <= nbits <= MAX_BITS and nbits % 8 == 0):
        raise InvalidInputError(f"nbits must be a multiple of 8 between {MIN_BITS} and {MAX_BITS}, got {nbits}")
    return int(nbits)


def binarize(x: np.ndarray) -> np.ndarray:
    """Sign of real-valued outputs as a bool matrix: True where x >= 0 (sign(0) = +1, never a third state)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise InvalidInputError(f"expected a 2-D array (n, nbits) of real values, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise InvalidInputError(f"expected real-valued input, got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
        rows = np.unique(np.nonzero(np.isnan(x))[0])
        raise InvalidInputError(f"input has NaN values in {rows.size} row(s), first at row {rows[0]}")
    check_nbits(x.shape[1])
    return x >= 0


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack a (n, nbits) matrix of 0/1 (or bool) into (n, nbits // 8) uint8 codes."""
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise InvalidInputError(f"expected a 2-D bit matrix (n, nbits), got shape {bits.shape}")
    check_nbits(bits.shape[1])
    if bits.dtype != np.bool_:
        if not np.isin(bits, (0, 1)).all():
            raise InvalidInputError("bit matrix must hold only 0 and 1")
        bits = bits.astype(bool)
    return np.ascontiguousarray(np.packbits(bits, axis=1))


def encode_sign(x: np.ndarray) -> np.ndarray:
    """Packed codes from real-valued network outputs: sign, then 8 bits a byte."""
    return pack_bits(binarize(x))


def unpack_bits(codes: np.ndarray, nbits: int | None = None) -> np.ndarray:
    """Unpack (n, nbits // 8) uint8 codes into a (n, nbits) uint8 matrix of 0/1."""
    codes = validate_codes(codes, nbits)
    return np.unpackbits(codes, axis=1)


def to_signs(codes: np.ndarray, nbits: int | None = None) -> np.ndarray:
    """Packed codes as a float32 matrix of -1/+1 (the B of the hashing papers)."""
    return unpack_bits(codes, nbits).astype(np.float32) * 2 - 1


def validate_codes(codes: np.ndarray, nbits: int | None = None, name: str = "codes") -> np.ndarray:
    """Check that `codes` is a C-contiguous 2-D uint8 array of `nbits // 8` columns; return it unchanged."""
    if not isinstance(codes, np.ndarray):
        raise InvalidInputError(f"{name} must be a numpy array, got {type(codes).__name__}")
    if codes.dtype != np.uint8:
        raise InvalidInputError(f"{name} must have dtype uint8 (packed bits), got {codes.dtype}")
    if codes.ndim != 2:
        raise InvalidInputError(f"{name} must be 2-D (n, nbits // 8), got shape {codes.shape}")
    if not codes.flags.c_contiguous:
        raise InvalidInputError(f"{name} must be C-contiguous; pass np.ascontiguousarray({name})")
    if nbits is not None:
        check_nbits(nbits)
        if codes.shape[1] * 8 != nbits:
            raise InvalidInputError(
                f"{name} hold {codes.shape[1] * 8}-bit codes ({codes.shape[1]} bytes) but nbits is {nbits}"
            )
    else:
        check_nbits(codes.shape[1] * 8)
    return codes


def hamming_bruteforce(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """All (nq, n) Hamming distances with numpy alone: the slow, obvious oracle that tests compare with."""
    x = np.bitwise_xor(queries[:, None, :], database[None, :, :])
    return np.bitwise_count(x).sum(axis=2, dtype=np.int32)
