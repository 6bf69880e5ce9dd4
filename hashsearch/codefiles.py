"""Code matrices from files: .npy arrays or a Parquet column, turned into packed uint8 codes.

Accepted (rows are items): packed uint8 bytes (n, nbits/8); unpacked bits as bool, or as 0/1
integers (uint8 only when `nbits` says the width is in bits); -1/+1 integers or real network
outputs, sign-binarised. Each conversion is reported in `CodeFile.note`. Large .npy files are
memory-mapped and converted in blocks of rows, so only the packed result is held in memory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hashsearch.codes import check_nbits, encode_sign, pack_bits, validate_codes
from hashsearch.datasets.formats import npy_dtype
from hashsearch.errors import InvalidInputError

ID_COLUMN = "id"
CODE_COLUMN = "code"  # the code column `hashsearch encode` writes, read without --column
BLOCK_ROWS = 1 << 16  # rows converted at a time
NPY_MAGIC = b"\x93NUMPY"


@dataclass
class CodeFile:
    """Packed codes read from a file, the ids and other columns it carried (Parquet only), and what
    conversion was applied."""

    codes: np.ndarray
    ids: np.ndarray | None
    note: str | None
    metadata: pa.Table | None = None

    @property
    def nbits(self) -> int:
        return self.codes.shape[1] * 8


# ------------------------------------------------------------------------------------ reading codes

def read_codes(path: str | os.PathLike, *, nbits: int | None = None, column: str | None = None,
               with_metadata: bool = False) -> CodeFile:
    """Packed codes from a .npy matrix or a Parquet column (binary, fixed_size_binary or list);
    with_metadata keeps a Parquet file's other columns (all but the codes and `id`). The code column
    is --column, else `code`, else the file's one binary or list column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if column is not None:
            raise InvalidInputError("--column applies to Parquet files, not .npy")
        codes, note = to_packed(load_npy(path, mmap=True), nbits, str(path))
        return CodeFile(codes, None, note)
    if suffix in (".parquet", ".pq"):
        return _read_parquet_codes(path, nbits, column, with_metadata)
    raise InvalidInputError(f"{path}: unknown code file type {suffix!r} (use .npy or .parquet)")


def read_ids(path: str | os.PathLike, n: int) -> np.ndarray:
    """A 1-D integer id array of length n from a .npy file."""
    ids = load_npy(path)
    if ids.ndim != 1 or ids.shape[0] != n or not np.issubdtype(ids.dtype, np.integer):
        raise InvalidInputError(f"{path}: ids must be a 1-D integer array of {n} values, got {ids.dtype} {ids.shape}")
    return ids.astype(np.int64, copy=False)


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """A numeric array from a .npy file (memory-mapped when `mmap`), checked before numpy reads it:
    an empty file, a file of another kind, or pickled objects get one line naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
            f.seek(0)
            dtype = npy_dtype(f) if head == NPY_MAGIC else None
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (ValueError, EOFError) as exc:
        raise InvalidInputError(f"{path}: not a readable .npy array ({exc})") from None
    if dtype is None:
        what = "is empty" if not head else "has no NumPy header (a .npy file starts with \\x93NUMPY)"
        raise InvalidInputError(f"{path}: not a .npy array: the file {what}")
    if dtype.hasobject:
        raise InvalidInputError(f"{path}: the array holds Python objects (dtype {dtype}), not numbers; "
                                "hashsearch never unpickles files")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError) as exc:  # e.g. fewer bytes than the header promises
        raise InvalidInputError(f"{path}: not a readable .npy array ({exc})") from None


def to_packed(matrix: np.ndarray, nbits: int | None, source: str) -> tuple[np.ndarray, str | None]:
    """Packed uint8 codes from a matrix of bytes, bits, ±1 values or real outputs, with a note saying which."""
    if matrix.ndim != 2:
        raise InvalidInputError(f"{source}: expected a 2-D matrix (items x bytes or bits), got shape {matrix.shape}")
    if matrix.shape[0] == 0:
        raise InvalidInputError(f"{source}: no codes (0 rows)")
    width = matrix.shape[1]
    if matrix.dtype == np.uint8 and nbits is not None and width not in (nbits // 8, nbits):
        raise InvalidInputError(
            f"{source}: {width} columns are neither {nbits // 8} packed bytes nor {nbits} bits (nbits is {nbits})")
    codes, note = _packed(matrix, nbits, source)
    return validate_codes(codes, nbits, name=source), note


def _packed(matrix: np.ndarray, nbits: int | None, source: str) -> tuple[np.ndarray, str | None]:
    width = matrix.shape[1]
    if matrix.dtype == np.uint8 and (nbits is None or nbits == width * 8):
        return np.ascontiguousarray(matrix), None
    kind = _classify(matrix, source)
    check_nbits(width)
    convert = {"bits": pack_bits, "signs": lambda b: pack_bits(b > 0), "real": encode_sign}[kind]
    codes = np.empty((matrix.shape[0], width // 8), np.uint8)
    for lo in range(0, matrix.shape[0], BLOCK_ROWS):
        codes[lo:lo + BLOCK_ROWS] = convert(np.asarray(matrix[lo:lo + BLOCK_ROWS]))
    what = {"bits": f"packed a {'bool' if matrix.dtype == np.bool_ else '0/1'} bit matrix",
            "signs": "packed a -1/+1 sign matrix",
            "real": f"sign-binarised {matrix.dtype} outputs"}[kind]
    return codes, f"{source}: {what} ({width} bits{', x >= 0 -> 1' if kind == 'real' else ''})"


def _classify(matrix: np.ndarray, source: str) -> str:
    """'bits' (bool or 0/1), 'signs' (-1/+1 integers) or 'real' (floats), read block by block."""
    if matrix.dtype == np.bool_:
        return "bits"
    blocks = (np.asarray(matrix[lo:lo + BLOCK_ROWS]) for lo in range(0, matrix.shape[0], BLOCK_ROWS))
    if np.issubdtype(matrix.dtype, np.integer):
        lo, hi = matrix.min(), matrix.max()
        if lo >= 0 and hi <= 1:
            return "bits"
        if lo >= -1 and hi <= 1 and not any((b == 0).any() for b in blocks):
            return "signs"
        raise InvalidInputError(
            f"{source}: {matrix.dtype} matrix holds values other than 0/1 or -1/+1 "
            "(packed codes must be uint8 bytes)")
    if np.issubdtype(matrix.dtype, np.floating):
        if all(((b == 0) | (b == 1)).all() for b in blocks):
            raise InvalidInputError(
                f"{source}: float matrix holds only 0 and 1; sign binarisation would set every bit "
                "(sign(0) = +1): store bits as bool or uint8 instead")
        return "real"
    raise InvalidInputError(f"{source}: unsupported dtype {matrix.dtype} for codes")


def _read_parquet_codes(path: Path, nbits: int | None, column: str | None, with_metadata: bool) -> CodeFile:
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInputError(f"{path}: not a readable Parquet file ({exc})") from None
    column = column or _guess_code_column(schema, path)
    if column not in schema.names:
        raise InvalidInputError(f"{path}: no column {column!r} (columns: {', '.join(schema.names)})")
    has_ids = ID_COLUMN in schema.names and column != ID_COLUMN
    others = [name for name in schema.names if name not in (column, ID_COLUMN)] if with_metadata else []
    table = pq.read_table(path, columns=[column] + [ID_COLUMN] * has_ids + others)
    source = f"{path}:{column}"
    codes, note = to_packed(_column_matrix(table.column(column), source), nbits, source)
    ids = column_ids(table, path) if has_ids else None
    return CodeFile(codes, ids, note, table.select(others) if others else None)


def column_ids(table: pa.Table, source: str | os.PathLike) -> np.ndarray:
    """The table's `id` column as int64, refusing other types and nulls."""
    id_col = table.column(ID_COLUMN)
    if not pa.types.is_integer(id_col.type) or id_col.null_count:
        raise InvalidInputError(f"{source}: column 'id' must be integers without nulls, got {id_col.type}")
    return id_col.to_numpy().astype(np.int64, copy=False)


def _guess_code_column(schema: pa.Schema, path: Path) -> str:
    """The `code` column, else the one binary or list column of the file; several or none -> ask for --column."""
    if CODE_COLUMN in schema.names:
        return CODE_COLUMN
    kinds = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_fixed_size_binary,
             pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    found = [f.name for f in schema if f.name != ID_COLUMN and any(k(f.type) for k in kinds)]
    if len(found) != 1:
        raise InvalidInputError(
            f"{path}: {'several' if found else 'no'} binary/list columns ({', '.join(found) or 'none'}); "
            "name the code column with --column")
    return found[0]


def _column_matrix(col: pa.ChunkedArray, source: str) -> np.ndarray:
    """A 2-D numpy matrix from a column of equal-length binary values or lists."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if arr.null_count:
        raise InvalidInputError(f"{source}: {arr.null_count} null code(s)")
    n, kind = len(arr), arr.type
    if n == 0:
        raise InvalidInputError(f"{source}: no codes (0 rows)")
    if pa.types.is_fixed_size_binary(kind):
        width = kind.byte_width
        return np.frombuffer(arr.buffers()[1], np.uint8, n * width, arr.offset * width).reshape(n, width)
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        offsets = np.frombuffer(arr.buffers()[1], np.int32 if pa.types.is_binary(kind) else np.int64,
                                n + 1, arr.offset * (4 if pa.types.is_binary(kind) else 8))
        _check_equal_lengths(np.diff(offsets), source)
        values = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0]:offsets[-1]]
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        _check_equal_lengths(pc.list_value_length(arr).to_numpy(), source)
        flat = arr.flatten()
        if flat.null_count:
            raise InvalidInputError(f"{source}: null values inside codes")
        values = flat.to_numpy(zero_copy_only=False)
    else:
        raise InvalidInputError(f"{source}: column type {kind} cannot hold codes (use binary or a list)")
    return values.reshape(n, values.size // n)


def _check_equal_lengths(lengths: np.ndarray, source: str) -> None:
    if (lengths != lengths[0]).any():
        raise InvalidInputError(f"{source}: codes of different lengths ({lengths.min()} to {lengths.max()})")
