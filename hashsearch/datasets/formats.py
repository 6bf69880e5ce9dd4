"""Readers of the file formats hashing data ships in: MATLAB .mat (v5 and v7.3/HDF5), .npz, Parquet,
and the TEXMEX .fvecs/.ivecs vectors. Each returns plain numpy arrays keyed by variable name.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from hashsearch.errors import InvalidInputError

PathLike = str | os.PathLike


def _existing(path: PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    return path


def read_mat(path: PathLike) -> dict[str, np.ndarray]:
    """Variables of a .mat file; v7.3 (HDF5) arrays are transposed back to MATLAB's shape so both
    versions give the same orientation."""
    import scipy.io

    path = _existing(path)
    try:
        raw = scipy.io.loadmat(path)
    except NotImplementedError:  # scipy's answer to a v7.3 file
        return _read_mat73(path)
    except (ValueError, TypeError, OSError, scipy.io.matlab.MatReadError) as exc:
        raise InvalidInputError(f"{path} is not a readable MATLAB file: {exc}") from exc
    return {k: np.asarray(v) for k, v in raw.items() if not k.startswith("__")}


def _read_mat73(path: Path) -> dict[str, np.ndarray]:
    import h5py

    out = {}
    try:
        with h5py.File(path, "r") as f:
            for key, item in f.items():
                if key.startswith("#") or not isinstance(item, h5py.Dataset):
                    continue
                arr = item[()]
                out[key] = np.asarray(arr).T  # HDF5 stores MATLAB's column-major arrays reversed
    except OSError as exc:
        raise InvalidInputError(f"{path} is not a readable MATLAB v7.3 (HDF5) file: {exc}") from exc
    return out


def npy_dtype(stream) -> np.dtype:
    """The dtype in the .npy header at the start of a binary stream, without reading the data."""
    version = np.lib.format.read_magic(stream)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read_header(stream)[2]


def _npz_dtype(z: np.lib.npyio.NpzFile, key: str) -> np.dtype:
    """An archive member's dtype from its .npy header, without reading the data."""
    with z.zip.open(f"{key}.npy") as member:
        return npy_dtype(member)


def _check_start(path: Path, magic: tuple[bytes, ...], kind: str) -> None:
    """Refuse a file that does not begin the way `kind` files do, before a library guesses at it
    (numpy would offer to unpickle a text file renamed .npz)."""
    with open(path, "rb") as f:
        head = f.read(max(len(m) for m in magic))
    if not any(head.startswith(m) for m in magic):
        raise InvalidInputError(f"{path} is not a readable {kind}: the file "
                                f"{'is empty' if not head else 'does not start like one'}")


def read_npz(path: PathLike, numeric_only: bool = False) -> dict[str, np.ndarray]:
    """Arrays of an .npz archive (no pickled objects); `numeric_only` skips string arrays unread
    (the shared MIRFLICKR archive carries 125 MB of raw tag strings)."""
    path = _existing(path)
    _check_start(path, (b"PK\x03\x04", b"PK\x05\x06"), ".npz archive")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = [k for k in z.files if not numeric_only or _npz_dtype(z, k).kind in "biuf"]
            return {k: z[k] for k in keys}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidInputError(f"{path} is not a readable .npz archive: {exc}") from exc


def read_parquet(path: PathLike) -> dict[str, np.ndarray]:
    """Columns of a Parquet table; list columns of equal length become 2-D arrays (one row per item)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = _existing(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInputError(f"{path} is not a readable Parquet file: {exc}") from exc
    out = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
            lengths = np.asarray(pa.compute.list_value_length(col).fill_null(-1))
            if len(lengths) and (lengths.min() != lengths.max() or lengths[0] < 0):
                raise InvalidInputError(f"{path}: column {name!r} has lists of unequal length (or nulls)")
            flat = np.asarray(pa.compute.list_flatten(col).to_numpy(zero_copy_only=False))
            out[name] = flat.reshape(len(col), -1 if len(col) else 0)
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
    return out


def read_vecs(path: PathLike, dtype: str = "float32") -> np.ndarray:
    """A TEXMEX .fvecs (dtype float32) or .ivecs (int32) file: per vector an int32 dimension, then the values."""
    path = _existing(path)
    raw = np.fromfile(path, dtype=np.int32)
    if raw.size == 0:
        raise InvalidInputError(f"{path} is empty")
    dim = int(raw[0])
    if dim <= 0 or raw.size % (dim + 1):
        raise InvalidInputError(f"{path} is not a .fvecs/.ivecs file: first dimension {dim}, {raw.size * 4} bytes")
    rows = raw.reshape(-1, dim + 1)
    if (rows[:, 0] != dim).any():
        raise InvalidInputError(f"{path}: vectors of differing dimension (first {dim}), not supported")
    return np.ascontiguousarray(rows[:, 1:]).view(np.dtype(dtype))


def read_arrays(path: PathLike) -> dict[str, np.ndarray]:
    """Arrays of a .mat, .npz (numeric arrays only) or .parquet file, chosen by the suffix."""
    suffix = Path(path).suffix.lower()
    readers = {".mat": read_mat, ".npz": lambda p: read_npz(p, numeric_only=True), ".parquet": read_parquet}
    if suffix not in readers:
        raise InvalidInputError(f"unsupported data file {path}: expected one of {', '.join(readers)}")
    return readers[suffix](path)
