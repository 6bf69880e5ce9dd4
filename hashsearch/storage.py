"""An index on disk: packed codes and ids in an Arrow IPC file, optional metadata in Parquet, and a
manifest with the format version, sizes and SHA-256 checksums.

Layout of an index directory:
    manifest.json     format name and version, nbits, count, backend, params, files (bytes + sha256)
    codes.arrow       one uncompressed record batch: `code` fixed_size_binary(nbits/8)[, `id` int64]
    metadata.parquet  optional per-item columns, one row per code, in code order

The codes live in ONE record batch so that `read_index(mmap=True)` hands back zero-copy numpy views
of the memory-mapped file (Arrow's framing is a few hundred bytes, so flat storage costs ~raw bytes).
Ids that are simply start, start+1, ... are not stored: the manifest records the start instead,
which saves 8 bytes an item. Saving is atomic (a temporary sibling directory renamed into place);
loading checks the manifest, sizes, checksums and the Arrow schema before returning anything.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hashsearch.codes import check_nbits, validate_codes
from hashsearch.errors import CorruptIndexError, InvalidInputError

FORMAT_NAME = "hashsearch-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CODES_FILE = "codes.arrow"
METADATA_FILE = "metadata.parquet"
_CHECK_BLOCK = 1 << 20  # rows compared at a time when testing whether ids are a plain range


@dataclass
class StoredIndex:
    """What `read_index` returns: read-only (n, nbits/8) uint8 codes, int64 ids, and the rest.

    Ids that were not stored (start, start+1, ...) are made on first access of `ids`, since an
    array of 100M of them costs 800 MB and seconds of page faults; `id_start` tells without it.
    """

    codes: np.ndarray
    stored_ids: np.ndarray | None
    nbits: int
    backend: str
    params: dict[str, Any]
    metadata: pa.Table | None
    manifest: dict[str, Any] = field(repr=False)

    @property
    def count(self) -> int:
        return int(self.codes.shape[0])

    @property
    def id_start(self) -> int | None:
        """The first id when ids are a plain range (not stored), else None."""
        return None if self.stored_ids is not None else self.manifest["ids"]["start"]

    @functools.cached_property
    def ids(self) -> np.ndarray:
        """int64 ids, one per code: the stored column, or the range from `id_start`."""
        if self.stored_ids is not None:
            return self.stored_ids
        return np.arange(self.id_start, self.id_start + self.count, dtype=np.int64)


# ----------------------------------------------------------------------------------------- writing

def write_index(
    path: str | os.PathLike,
    codes: np.ndarray,
    ids: np.ndarray | None,
    nbits: int,
    *,
    backend: str,
    params: dict[str, Any] | None = None,
    metadata: pa.Table | dict | None = None,
) -> None:
    """Write an index directory atomically; an existing index at `path` is replaced as a whole.

    `ids=None` means 0..n-1. A crash leaves either the old index or the new one, never a mix.
    """
    nbits = check_nbits(nbits)
    codes = validate_codes(np.ascontiguousarray(codes) if isinstance(codes, np.ndarray) else codes, nbits)
    n = codes.shape[0]
    if ids is None:
        id_start = 0  # no id array is made: it would cost 8 bytes an item for nothing
    else:
        ids = check_ids(ids, n)
        id_start = _range_start(ids)
    metadata = check_metadata(metadata, n)
    if not isinstance(backend, str) or not backend:
        raise InvalidInputError(f"backend must be a non-empty string, got {backend!r}")
    params = dict(params or {})
    try:
        json.dumps(params)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"index params must be JSON-serialisable: {exc}") from None

    with staging(path) as tmp:
        files = {CODES_FILE: _write_codes(tmp / CODES_FILE, codes, None if id_start is not None else ids)}
        if metadata is not None:
            pq.write_table(metadata, tmp / METADATA_FILE)
            _fsync_file(tmp / METADATA_FILE)
            files[METADATA_FILE] = _file_entry(tmp / METADATA_FILE)
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "nbits": nbits,
            "count": int(n),
            "ids": {"stored": False, "start": id_start} if id_start is not None else {"stored": True},
            "backend": backend,
            "params": params,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "hashsearch_version": _version(),
            "files": files,
        }
        write_manifest(tmp, manifest)


@contextlib.contextmanager
def staging(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling directory that replaces `path` as a whole when the block succeeds (fsynced,
    renamed) and is removed when it fails; `path` must be absent, empty or an index directory."""
    path = Path(path)
    _check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        yield tmp
        _fsync_dir(tmp)
        _swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """`directory`/manifest.json, fsynced."""
    with open(directory / MANIFEST, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def check_ids(ids: Any, n: int) -> np.ndarray:
    """Ids as a contiguous 1-D int64 array of length n: the one check of user-given ids, shared by
    `HammingIndex.add` (which also refuses negative ids) and `write_index`."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.shape[0] != n:
        raise InvalidInputError(f"ids must be a 1-D array of {n} integers (one per code), got shape {ids.shape}")
    if n and not np.issubdtype(ids.dtype, np.integer):
        raise InvalidInputError(f"ids must be integers, got dtype {ids.dtype}")
    if ids.dtype == np.uint64 and n and ids.max() > np.iinfo(np.int64).max:
        raise InvalidInputError("ids must fit in int64")
    return np.ascontiguousarray(ids, dtype=np.int64)


def unique_ids(ids: Any) -> np.ndarray:
    """Ids to remove as sorted unique int64 values (one id or many), refusing non-integers."""
    ids = np.unique(np.atleast_1d(np.asarray(ids)))
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise InvalidInputError(f"ids must be integers, got dtype {ids.dtype}")
    return ids.astype(np.int64, copy=False)


def _range_start(ids: np.ndarray) -> int | None:
    """`ids[0]` if ids are ids[0], ids[0]+1, ... (then they need no storage), else None."""
    if ids.size == 0:
        return 0
    start = int(ids[0])
    for lo in range(0, ids.size, _CHECK_BLOCK):
        block = ids[lo:lo + _CHECK_BLOCK]
        if not np.array_equal(block, np.arange(start + lo, start + lo + block.size, dtype=np.int64)):
            return None
    return start


def check_metadata(metadata: pa.Table | dict | None, n: int) -> pa.Table | None:
    """Metadata as an Arrow table of n rows (a dict of columns is converted), or None.
    The one check of user-given metadata, shared by `HammingIndex.add` and `write_index`."""
    if metadata is None:
        return None
    if not isinstance(metadata, pa.Table):
        try:
            metadata = pa.table(metadata)
        except (TypeError, ValueError, pa.ArrowException) as exc:
            raise InvalidInputError(f"metadata must be a pyarrow Table or a dict of columns: {exc}") from None
    if metadata.num_rows != n:
        raise InvalidInputError(f"metadata has {metadata.num_rows} rows but there are {n} codes")
    return metadata


def _check_replaceable(path: Path) -> None:
    """Refuse to overwrite anything that is not an index (a file, or a directory of other things)."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise InvalidInputError(f"{path} exists and is not an index directory; not overwriting it")
    if path.is_dir() and any(path.iterdir()) and not (path / MANIFEST).is_file():
        raise InvalidInputError(f"{path} is a non-empty directory without {MANIFEST}; not overwriting it")


def _write_codes(target: Path, codes: np.ndarray, ids: np.ndarray | None) -> dict[str, Any]:
    """Codes (and ids unless implicit) as one uncompressed record batch, wrapped without a copy."""
    n, nbytes = codes.shape
    columns = [pa.Array.from_buffers(pa.binary(nbytes), n, [None, pa.py_buffer(codes)])]
    names = ["code"]
    if ids is not None:
        columns.append(pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(ids)]))
        names.append("id")
    batch = pa.record_batch(columns, names=names)
    with pa.OSFile(str(target), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)
    _fsync_file(target)
    return _file_entry(target)


def _file_entry(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks (never the whole file in memory)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap_into_place(tmp: Path, path: Path) -> None:
    """Rename the finished temporary directory to `path`; an old index is moved aside, then deleted."""
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:12]}"
        os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        if old is not None:
            os.rename(old, path)
        raise
    _fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _version() -> str:
    from hashsearch import __version__

    return __version__


# ----------------------------------------------------------------------------------------- reading

def read_index(path: str | os.PathLike, mmap: bool = True, verify: bool = True) -> StoredIndex:
    """Open an index directory, refusing a corrupt or truncated one with `CorruptIndexError`.

    mmap=True maps codes.arrow and returns zero-copy read-only views of it; mmap=False reads it
    into memory. verify=False skips the SHA-256 pass (slow on huge indexes) but still checks
    file sizes, the Arrow schema and the row count.
    """
    path = Path(path)
    if not path.is_dir():
        aside = sorted(path.parent.glob(f".{path.name}.old-*"))
        hint = f" (a save was interrupted: the previous index is in {aside[-1]})" if aside else ""
        raise FileNotFoundError(f"no index at {path}: not a directory{hint}")
    manifest = read_manifest(path)
    check_files(path, manifest, verify=verify)
    nbits, count = manifest["nbits"], manifest["count"]
    codes, ids = _read_codes(path / CODES_FILE, manifest, mmap)
    metadata = None
    if METADATA_FILE in manifest["files"]:
        try:
            metadata = pq.read_table(path / METADATA_FILE, memory_map=mmap)
        except (pa.ArrowException, OSError) as exc:
            raise CorruptIndexError(f"{path / METADATA_FILE}: unreadable Parquet ({exc})") from None
        if metadata.num_rows != count:
            raise CorruptIndexError(
                f"{path / METADATA_FILE}: {metadata.num_rows} rows but the manifest says {count}")
    return StoredIndex(codes=codes, stored_ids=ids, nbits=nbits, backend=manifest["backend"],
                       params=manifest["params"], metadata=metadata, manifest=manifest)


def load_manifest(path: str | os.PathLike, format_name: str = FORMAT_NAME) -> dict[str, Any]:
    """The manifest of the directory `path` as a dict, refusing a missing, non-JSON or other-format one
    (shared with sharded indexes, whose top manifest has its own format name)."""
    where = Path(path) / MANIFEST
    try:
        with open(where, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise CorruptIndexError(f"{where}: missing; {path} is not a hashsearch index") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptIndexError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != format_name:
        raise CorruptIndexError(f"{where}: not a {format_name} manifest")
    return manifest


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed, structurally checked manifest of the index directory `path`."""
    where = Path(path) / MANIFEST
    manifest = load_manifest(path)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CorruptIndexError(
            f"{where}: unknown format version {version!r} (this hashsearch reads version {FORMAT_VERSION})")
    expect = {"nbits": int, "count": int, "backend": str, "params": dict, "files": dict, "ids": dict}
    for key, kind in expect.items():
        if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool):
            raise CorruptIndexError(f"{where}: field {key!r} is missing or not a {kind.__name__}")
    try:
        check_nbits(manifest["nbits"])
    except InvalidInputError as exc:
        raise CorruptIndexError(f"{where}: {exc}") from None
    if manifest["count"] < 0:
        raise CorruptIndexError(f"{where}: negative count {manifest['count']}")
    ids = manifest["ids"]
    if not isinstance(ids.get("stored"), bool) or (not ids["stored"] and not isinstance(ids.get("start"), int)):
        raise CorruptIndexError(f"{where}: field 'ids' must be {{'stored': true}} or {{'stored': false, 'start': int}}")
    if CODES_FILE not in manifest["files"]:
        raise CorruptIndexError(f"{where}: does not list {CODES_FILE}")
    for name, entry in manifest["files"].items():
        if (name not in (CODES_FILE, METADATA_FILE) or not isinstance(entry, dict)
                or not isinstance(entry.get("bytes"), int) or not isinstance(entry.get("sha256"), str)):
            raise CorruptIndexError(f"{where}: bad entry for file {name!r}")
    return manifest


def check_files(path: str | os.PathLike, manifest: dict[str, Any], verify: bool = True) -> None:
    """Every file the manifest lists exists with the recorded size (and SHA-256 when `verify`)."""
    for name, entry in manifest["files"].items():
        where = Path(path) / name
        if not where.is_file():
            raise CorruptIndexError(f"{where}: missing (listed in {MANIFEST})")
        size = where.stat().st_size
        if size != entry["bytes"]:
            state = "truncated" if size < entry["bytes"] else "has extra bytes"
            raise CorruptIndexError(f"{where}: {state}: {size} bytes, the manifest says {entry['bytes']}")
        if verify and sha256_file(where) != entry["sha256"]:
            raise CorruptIndexError(f"{where}: checksum mismatch (SHA-256 differs from {MANIFEST})")


def _read_codes(where: Path, manifest: dict[str, Any], mmap: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Codes and stored ids (or None) from codes.arrow, checked against the manifest; views of the
    file when mmap."""
    nbits, count, stored_ids = manifest["nbits"], manifest["count"], manifest["ids"]["stored"]
    try:
        source = pa.memory_map(str(where), "r") if mmap else pa.OSFile(str(where), "rb")
        with source:
            reader = pa.ipc.open_file(source)
            schema, nbatches = reader.schema, reader.num_record_batches
            batch = reader.get_batch(0) if nbatches == 1 else None
    except (pa.ArrowException, OSError) as exc:
        raise CorruptIndexError(f"{where}: unreadable Arrow IPC file ({exc})") from None
    expected = [pa.field("code", pa.binary(nbits // 8))] + ([pa.field("id", pa.int64())] if stored_ids else [])
    if [(f.name, f.type) for f in schema] != [(f.name, f.type) for f in expected]:
        raise CorruptIndexError(
            f"{where}: schema {schema.types} does not match the manifest ({nbits}-bit codes"
            f"{', stored ids' if stored_ids else ''})")
    if batch is None:
        raise CorruptIndexError(f"{where}: expected one record batch, found {nbatches}")
    if batch.num_rows != count:
        raise CorruptIndexError(f"{where}: {batch.num_rows} rows but the manifest says {count}")
    codes = _fixed_width_view(batch.column(0), np.uint8, nbits // 8).reshape(count, nbits // 8)
    return codes, _fixed_width_view(batch.column(1), np.int64, 1) if stored_ids else None


def _fixed_width_view(array: pa.Array, dtype: type, width: int) -> np.ndarray:
    """Zero-copy numpy view of a fixed-width Arrow array's value buffer (nulls are corruption)."""
    if array.null_count:
        raise CorruptIndexError(f"column of type {array.type} holds {array.null_count} null values")
    values = array.buffers()[1]
    return np.frombuffer(values, dtype=dtype, count=len(array) * width, offset=array.offset * width * np.dtype(dtype).itemsize)


def index_size(path: str | os.PathLike) -> int:
    """Bytes on disk of every file in an index directory (manifest included)."""
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file())
