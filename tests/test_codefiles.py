"""Code files: .npy matrices and Parquet columns of bytes, bits, signs or real outputs -> packed codes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hashsearch import codefiles
from hashsearch.codefiles import read_codes, to_packed
from hashsearch.codes import encode_sign, pack_bits
from hashsearch.errors import InvalidInputError

RNG = np.random.default_rng(0)
BITS = RNG.random((50, 64)) < 0.5
PACKED = pack_bits(BITS)


def save_npy(tmp_path: Path, name: str, array: np.ndarray) -> Path:
    np.save(tmp_path / name, array)
    return tmp_path / name


def save_parquet(tmp_path: Path, name: str, columns: dict) -> Path:
    pq.write_table(pa.table(columns), tmp_path / name)
    return tmp_path / name


# ------------------------------------------------------------------------------- reading code files

@pytest.mark.parametrize("matrix, nbits, note", [
    (PACKED, None, None),
    (PACKED, 64, None),
    (BITS, None, "packed a bool bit matrix"),
    (BITS.astype(np.uint8), 64, "packed a 0/1 bit matrix"),
    (BITS.astype(np.int32), None, "packed a 0/1 bit matrix"),
    (BITS.astype(np.int8) * 2 - 1, None, "packed a -1/+1 sign matrix"),
])
def test_npy_matrices_become_packed_codes(tmp_path, matrix, nbits, note):
    got = read_codes(save_npy(tmp_path, "c.npy", matrix), nbits=nbits)
    np.testing.assert_array_equal(got.codes, PACKED)
    assert got.ids is None and got.nbits == 64
    assert (got.note is None) if note is None else (note in got.note)


def test_real_outputs_are_sign_binarised(tmp_path):
    outputs = RNG.normal(size=(30, 32)).astype(np.float32)
    outputs[0, :5] = 0.0  # sign(0) = +1
    got = read_codes(save_npy(tmp_path, "f.npy", outputs))
    np.testing.assert_array_equal(got.codes, encode_sign(outputs))
    assert "sign-binarised float32" in got.note


def test_uint8_bits_without_nbits_are_read_as_bytes(tmp_path):
    """Without --nbits a uint8 matrix is packed bytes: 64 columns are 512-bit codes."""
    got = read_codes(save_npy(tmp_path, "c.npy", BITS.astype(np.uint8)))
    assert got.nbits == 512 and got.note is None


@pytest.mark.parametrize("matrix, nbits, message", [
    (np.zeros((5, 64), np.float64) + (RNG.random((5, 64)) < .5), None, "holds only 0 and 1"),
    (np.full((5, 16), 7, np.int64), None, "values other than 0/1 or -1/\\+1"),
    (np.zeros((5, 8, 2), np.uint8), None, "expected a 2-D matrix"),
    (np.zeros((0, 8), np.uint8), None, "no codes"),
    (np.zeros((5, 3), np.int32), None, "multiple of 8"),
    (PACKED, 128, "8 columns are neither 16 packed bytes nor 128 bits"),
    (BITS, 128, "hold 64-bit codes .* but nbits is 128"),
    (np.array([[np.nan] * 8]), None, "NaN"),
    (np.zeros((2, 8), np.complex64), None, "unsupported dtype"),
])
def test_bad_npy_matrices_are_refused(tmp_path, matrix, nbits, message):
    with pytest.raises(InvalidInputError, match=message):
        read_codes(save_npy(tmp_path, "bad.npy", matrix), nbits=nbits)


def test_unreadable_files_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_codes(tmp_path / "missing.npy")
    (tmp_path / "codes.csv").write_text("1,2\n")
    with pytest.raises(InvalidInputError, match="unknown code file type '.csv'"):
        read_codes(tmp_path / "codes.csv")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInputError, match="holds Python objects"):
        read_codes(tmp_path / "obj.npy")
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(InvalidInputError, match="empty.npy: not a .npy array: the file is empty"):
        read_codes(tmp_path / "empty.npy")
    (tmp_path / "text.npy").write_text("1,2\n")
    with pytest.raises(InvalidInputError, match="text.npy: not a .npy array: the file has no NumPy header"):
        read_codes(tmp_path / "text.npy")
    (tmp_path / "cut.npy").write_bytes((tmp_path / "obj.npy").read_bytes()[:20])
    with pytest.raises(InvalidInputError, match="cut.npy: not a readable .npy array"):
        codefiles.read_ids(tmp_path / "cut.npy", 1)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InvalidInputError, match="not a readable Parquet"):
        read_codes(tmp_path / "junk.parquet")


@pytest.mark.parametrize("column", [
    pa.array([bytes(r) for r in PACKED], pa.binary(8)),
    pa.array([bytes(r) for r in PACKED], pa.binary()),
    pa.array([bytes(r) for r in PACKED], pa.large_binary()),
    pa.array(PACKED.tolist(), pa.list_(pa.uint8())),
    pa.array(BITS.tolist(), pa.list_(pa.bool_())),
    pa.array((BITS * 2.0 - 1).tolist(), pa.list_(pa.float32())),
])
def test_parquet_code_columns(tmp_path, column):
    ids = np.arange(50, dtype=np.int64) * 10
    path = save_parquet(tmp_path, "c.parquet", {"id": ids, "code": column, "title": [str(i) for i in range(50)]})
    got = read_codes(path)
    np.testing.assert_array_equal(got.codes, PACKED)
    np.testing.assert_array_equal(got.ids, ids)
    assert got.metadata is None
    assert read_codes(path, with_metadata=True).metadata.to_pydict() == {"title": [str(i) for i in range(50)]}


def test_the_code_column_encode_writes_is_found_beside_list_columns(tmp_path):
    path = save_parquet(tmp_path, "enc.parquet", {"id": np.arange(50), "code": pa.array([bytes(r) for r in PACKED]),
                                                  "labels": pa.array([["a", "b"]] * 50)})
    np.testing.assert_array_equal(read_codes(path).codes, PACKED)


def test_parquet_column_choice(tmp_path):
    two = {"a": pa.array([bytes(r) for r in PACKED]), "b": pa.array([bytes(r[:4]) for r in PACKED])}
    path = save_parquet(tmp_path, "two.parquet", two)
    with pytest.raises(InvalidInputError, match="several binary/list columns \\(a, b\\).*--column"):
        read_codes(path)
    assert read_codes(path, column="b").nbits == 32
    with pytest.raises(InvalidInputError, match="no column 'c'"):
        read_codes(path, column="c")
    with pytest.raises(InvalidInputError, match="--column applies to Parquet"):
        read_codes(save_npy(tmp_path, "c.npy", PACKED), column="a")


@pytest.mark.parametrize("columns, message", [
    ({"code": pa.array([b"\x01\x02", b"\x03"])}, "different lengths \\(1 to 2\\)"),
    ({"code": pa.array([b"\x01", None])}, "1 null code"),
    ({"code": pa.array([[1], [None]], pa.list_(pa.uint8()))}, "null values inside codes"),
    ({"code": pa.array([b"\x01"]), "id": pa.array(["x"])}, "column 'id' must be integers"),
    ({"x": pa.array([1, 2])}, "no binary/list columns"),
    ({"code": pa.array([1, 2])}, "code: column type int64 cannot hold codes"),
])
def test_bad_parquet_columns_are_refused(tmp_path, columns, message):
    with pytest.raises(InvalidInputError, match=message):
        read_codes(save_parquet(tmp_path, "bad.parquet", columns))


def test_to_packed_agrees_with_the_sign_of_pm1_floats():
    signs = BITS * 2.0 - 1
    np.testing.assert_array_equal(to_packed(signs, None, "x")[0], PACKED)


@pytest.mark.parametrize("matrix", [BITS, BITS.astype(np.int16) * 2 - 1, BITS * 2.0 - 1])
def test_conversion_in_blocks_matches_whole(tmp_path, monkeypatch, matrix):
    """Memory-mapped .npy files are converted 7 rows at a time here: same codes as in one go."""
    monkeypatch.setattr(codefiles, "BLOCK_ROWS", 7)
    got = read_codes(save_npy(tmp_path, "c.npy", matrix))
    assert isinstance(np.load(tmp_path / "c.npy", mmap_mode="r"), np.memmap)
    np.testing.assert_array_equal(got.codes, PACKED)


def test_a_single_stray_value_in_a_late_block_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(codefiles, "BLOCK_ROWS", 7)
    signs = BITS.astype(np.int8) * 2 - 1
    signs[45, 3] = 0
    with pytest.raises(InvalidInputError, match="values other than"):
        read_codes(save_npy(tmp_path, "s.npy", signs))
