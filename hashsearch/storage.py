"""An index on disk: immutable segment files and one manifest, the single commit point.

Layout of an index directory (format version 2):
    manifest.json                    format, nbits, live count, backend, params, settings, lineage uid,
                                     generation, the segments (rows, ids, files with bytes + SHA-256) and
                                     the files of the previous generation (kept one more save for readers)
    seg-<16 hex>.codes.arrow         one uncompressed record batch: `code` fixed_size_binary(nbits/8)[, `id`]
    seg-<16 hex>.meta.parquet        optional per-item columns of that segment, in row order
    seg-<16 hex>.dead-<16 hex>.npy   the segment's tombstoned row positions (named by their checksum)
    .hashsearch.lock                 serialises saving processes

Files are written under a hidden temporary name, fsynced and renamed; then the manifest is replaced
atomically. A file never changes once named, so a save writes only what is new: segments already in
the directory (same name and checksum) are kept. A reader reads the manifest once, then the files it
names; if a later save collected one meanwhile it reads the new manifest and tries again. Files are
deleted only when neither the new manifest nor the previous one names them, and only files this
format writes (never a user's). Format version 1 (one `codes.arrow` + `metadata.parquet`, written by
the previous release) is still read, and is upgraded in place by an incremental save.

Codes live in ONE record batch per segment so that `read_index(mmap=True)` hands back zero-copy views
of the memory-mapped file. Ids that are simply start, start+1, ... are not stored (8 bytes an item).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import io
import json
import os
import re
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
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
LOCK_FILE = ".hashsearch.lock"
CODES_FILE = "codes.arrow"  # format version 1
METADATA_FILE = "metadata.parquet"  # format version 1
_SEGMENT_NAME = re.compile(r"seg-[0-9a-f]{16}")
_OWN_FILE = re.compile(r"(seg-[0-9a-f]{16}\.(codes\.arrow|meta\.parquet|dead-[0-9a-f]{16}\.npy)"
                       r"|\.hs-tmp-[0-9a-f]{12}\..+|manifest\.json\.hs-tmp-[0-9a-f]{12})")
READ_ATTEMPTS = 20  # manifests re-read when a save collects files under a reader


@dataclass
class SegmentRows:
    """One segment as stored: codes, ids (None: id_start, id_start+1, ...), metadata, tombstoned
    positions (sorted, or None) and its manifest `files` entry (None until written)."""

    name: str
    codes: np.ndarray
    ids: np.ndarray | None
    id_start: int
    metadata: pa.Table | None
    dead: np.ndarray | None
    files: dict[str, Any] | None = None


@dataclass
class StoredIndex:
    """What `read_index` returns: the segments (read-only, memory-mapped codes when asked) and the rest."""

    nbits: int
    backend: str
    params: dict[str, Any]
    settings: dict[str, Any]
    uid: str
    segments: list[SegmentRows]
    manifest: dict[str, Any] = field(repr=False)

    @property
    def count(self) -> int:
        """Live rows."""
        return sum(len(s.codes) - (0 if s.dead is None else s.dead.size) for s in self.segments)

    def _live(self, column) -> np.ndarray:
        """A column of the live rows in ascending id order (zero-copy for one segment without tombstones)."""
        parts, ids = [], []
        for s in self.segments:
            keep = slice(None) if s.dead is None else np.isin(np.arange(len(s.codes)), s.dead, invert=True)
            parts.append(column(s)[keep])
            ids.append((s.ids if s.ids is not None else np.arange(s.id_start, s.id_start + len(s.codes)))[keep])
        if len(parts) == 1:
            return parts[0]
        order = np.argsort(np.concatenate(ids), kind="stable")
        return np.concatenate(parts)[order]

    @property
    def codes(self) -> np.ndarray:
        if not self.segments:
            return np.zeros((0, self.nbits // 8), np.uint8)
        return self._live(lambda s: s.codes)

    @property
    def ids(self) -> np.ndarray:
        if not self.segments:
            return np.zeros(0, np.int64)
        return self._live(lambda s: s.ids if s.ids is not None else np.arange(s.id_start, s.id_start + len(s.codes)))


# ----------------------------------------------------------------------------------------- checks

# ------------------------------------------------ whole-directory writes (sharded indexes' top level)

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


def replace_manifest(directory: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Replace `directory`/manifest.json atomically (temporary name, fsync, rename): a commit point."""
    _write_file(Path(directory), MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True)),
                checksum=False)


def restore_manifest(path: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Make `manifest`, an earlier generation of the index at `path` whose files are still there (a
    save keeps the previous generation's), the index again: undoes a save that a sharded index's
    top manifest never committed. Raises CorruptIndexError when one of its files is gone."""
    path = Path(path)
    with _locked(path):
        try:
            check_files(path, _referenced(manifest).values(), verify=False)
        except _Vanished as exc:
            raise CorruptIndexError(f"cannot restore generation {manifest.get('generation')} of {path}: {exc}") from None
        replace_manifest(path, manifest)


def _check_replaceable(path: Path) -> None:
    """Refuse to overwrite anything that is not an index (a file, or a directory of other things)."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise InvalidInputError(f"{path} exists and is not an index directory; not overwriting it")
    if path.is_dir() and any(path.iterdir()) and not (path / MANIFEST).is_file():
        raise InvalidInputError(f"{path} is a non-empty directory without {MANIFEST}; not overwriting it")


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


def unique_ids(ids: Any) -> np.ndarray:
    """Ids to remove as sorted unique int64 values (one id or many), refusing non-integers."""
    ids = np.unique(np.atleast_1d(np.asarray(ids)))
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise InvalidInputError(f"ids must be integers, got dtype {ids.dtype}")
    return ids.astype(np.int64, copy=False)


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


def is_own_file(name: str) -> bool:
    """Whether a file name is one this format writes (the only files a save may delete)."""
    return _OWN_FILE.fullmatch(name) is not None


# ----------------------------------------------------------------------------------------- writing

def write_index(path: str | os.PathLike, codes: np.ndarray, ids: np.ndarray | None, nbits: int, *,
                backend: str, params: dict[str, Any] | None = None, metadata: pa.Table | dict | None = None,
                overwrite: bool = False) -> None:
    """Write codes (ids=None: 0..n-1) as a new one-segment index directory; an index already at
    `path` is replaced only with overwrite=True."""
    nbits = check_nbits(nbits)
    codes = validate_codes(np.ascontiguousarray(codes) if isinstance(codes, np.ndarray) else codes, nbits)
    n = codes.shape[0]
    metadata = check_metadata(metadata, n)
    id_start = 0
    if ids is not None:
        ids = check_ids(ids, n)
        if n > 1 and not np.all(ids[1:] > ids[:-1]):
            order = np.argsort(ids, kind="stable")
            if np.any(ids[order][1:] == ids[order][:-1]):
                raise InvalidInputError("ids must be unique")
            codes, ids = codes[order], ids[order]
            metadata = None if metadata is None else metadata.take(pa.array(order))
        if n == 0 or int(ids[-1]) - int(ids[0]) == n - 1:
            id_start, ids = (int(ids[0]) if n else 0), None
    rows = SegmentRows(f"seg-{uuid.uuid4().hex[:16]}", codes, ids, id_start, metadata, None)
    write_segments(path, [rows], nbits=nbits, backend=backend, params=params or {}, settings={},
                   uid=uuid.uuid4().hex, overwrite=overwrite)


def write_segments(path: str | os.PathLike, segments: list[SegmentRows], *, nbits: int, backend: str,
                   params: dict[str, Any], settings: dict[str, Any], uid: str, overwrite: bool) -> list[dict[str, Any]]:
    """Commit these segments as the index at `path`, writing only files not already there; returns
    each segment's `files` entry. The index with lineage `uid` may always save over its own directory;
    another index there is replaced only with overwrite=True; any other non-empty directory is refused."""
    if not isinstance(backend, str) or not backend:
        raise InvalidInputError(f"backend must be a non-empty string, got {backend!r}")
    try:
        json.dumps([params, settings])
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"index params must be JSON-serialisable: {exc}") from None
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise InvalidInputError(f"{path} exists and is not an index directory; not overwriting it")
    if path.is_dir() and not (path / MANIFEST).exists():
        foreign = sorted(p.name for p in path.iterdir() if not is_own_file(p.name) and p.name != LOCK_FILE)
        if foreign:
            raise InvalidInputError(f"{path} is a non-empty directory that is not a hashsearch index "
                                    f"(it holds {foreign[0]!r} and no {MANIFEST}); not overwriting it")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            return _commit(path, segments, nbits, backend, params, settings, uid, overwrite)
    except OSError as exc:  # name the user's path, never a temporary one
        raise type(exc)(f"cannot save the index to {path}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the directory's save lock (one saving process at a time)."""
    with open(path / LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _commit(path: Path, segments: list[SegmentRows], nbits: int, backend: str, params: dict[str, Any],
            settings: dict[str, Any], uid: str, overwrite: bool) -> list[dict[str, Any]]:
    current = None
    if (path / MANIFEST).exists():
        try:
            current = read_manifest(path)
        except CorruptIndexError:
            if not overwrite:
                raise
    if current is not None and _uid(current) != uid and not overwrite:
        raise InvalidInputError(f"{path} already holds another index; pass overwrite=True (--force) to replace it")
    known = _referenced(current) if current is not None else {}
    entries, written = [], []
    for seg in segments:
        files = {"codes": _reuse(path, seg.files, "codes", known) or _write_file(
            path, f"{seg.name}.codes.arrow", lambda tmp: _write_codes(tmp, seg.codes, seg.ids))}
        if seg.metadata is not None:
            files["metadata"] = _reuse(path, seg.files, "metadata", known) or _write_file(
                path, f"{seg.name}.meta.parquet", lambda tmp: pq.write_table(seg.metadata, tmp))
        if seg.dead is not None and seg.dead.size:
            files["dead"] = _write_dead(path, seg.name, seg.dead, known)
        written.append(files)
        entries.append({"name": seg.name, "rows": int(seg.codes.shape[0]),
                        "ids": {"stored": True} if seg.ids is not None else {"stored": False, "start": int(seg.id_start)},
                        "files": files})
    manifest = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "uid": uid,
        "generation": (current.get("generation", 0) + 1) if current is not None else 1,
        "nbits": nbits, "count": int(sum(e["rows"] - (e["files"]["dead"]["count"] if "dead" in e["files"] else 0)
                                         for e in entries)),
        "backend": backend, "params": params, "settings": settings,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hashsearch_version": _version(), "segments": entries,
        "previous_files": sorted(known),
    }
    _write_file(path, MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True)), checksum=False)
    collect(path, manifest)
    _remove_legacy_siblings(path)
    return written


def _uid(manifest: dict[str, Any]) -> str:
    """The manifest's lineage; a version-1 index gets one from its codes' checksum."""
    if manifest["format_version"] == 1:
        return "v1-" + manifest["files"][CODES_FILE]["sha256"]
    return manifest["uid"]


def _referenced(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """File name -> entry (bytes, sha256) of every file the manifest's index consists of."""
    if manifest["format_version"] == 1:
        return dict(manifest["files"])
    return {f["name"]: f for seg in manifest["segments"] for f in seg["files"].values()}


def _reuse(path: Path, files: dict[str, Any] | None, kind: str, known: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The segment's existing file entry when the directory's manifest lists that very file."""
    entry = (files or {}).get(kind)
    if entry is None or entry["name"] not in known or known[entry["name"]]["sha256"] != entry["sha256"]:
        return None
    where = path / entry["name"]
    return entry if where.is_file() and where.stat().st_size == entry["bytes"] else None


def _write_dead(path: Path, name: str, dead: np.ndarray, known: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Tombstoned positions as .npy, named by their checksum: unchanged tombstones are not rewritten."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(dead, np.int64), allow_pickle=False)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    fname = f"{name}.dead-{digest[:16]}.npy"
    if fname in known and (path / fname).is_file() and (path / fname).stat().st_size == len(data):
        entry = dict(known[fname])
    else:
        entry = _write_file(path, fname, lambda tmp: tmp.write_bytes(data))
    entry["count"] = int(dead.size)
    return entry


def _write_file(path: Path, name: str, write, checksum: bool = True) -> dict[str, Any]:
    """Write `name` in `path` through a hidden temporary file: write, fsync, rename, fsync the directory."""
    tmp = path / (f".hs-tmp-{uuid.uuid4().hex[:12]}.{name}" if name != MANIFEST
                  else f"{MANIFEST}.hs-tmp-{uuid.uuid4().hex[:12]}")
    try:
        write(tmp)
        _fsync_file(tmp)
        entry = {"name": name, "bytes": tmp.stat().st_size, **({"sha256": sha256_file(tmp)} if checksum else {})}
        os.replace(tmp, path / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path)
    return entry


def collect(path: Path, manifest: dict[str, Any]) -> list[str]:
    """Delete this format's files that neither `manifest` nor its previous generation names, and
    temporary files of interrupted saves (call with the save lock held). Returns their names."""
    keep = set(_referenced(manifest)) | set(manifest.get("previous_files", ()))
    gone = []
    for p in path.iterdir():
        if p.name not in keep and (is_own_file(p.name) or p.name in (CODES_FILE, METADATA_FILE)) and p.is_file():
            p.unlink(missing_ok=True)
            gone.append(p.name)
    return gone


def leftovers(path: str | os.PathLike, manifest: dict[str, Any]) -> list[str]:
    """Files of interrupted saves or older generations that the next save will delete (what
    `hashsearch info` reports), and sibling directories left by the previous release's saves."""
    path = Path(path)
    keep = set(_referenced(manifest)) | set(manifest.get("previous_files", ()))
    found = sorted(p.name for p in path.iterdir() if p.name not in keep and is_own_file(p.name))
    return found + [str(p) for p in _legacy_siblings(path)]


def _legacy_siblings(path: Path) -> list[Path]:
    """`.NAME.tmp-*` / `.NAME.old-*` directories that format-1 saves left when interrupted."""
    pattern = re.compile(re.escape(f".{path.name}.") + r"(tmp|old)-[0-9a-f]{12}")
    return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir())


def _remove_legacy_siblings(path: Path) -> None:
    for p in _legacy_siblings(path):
        shutil.rmtree(p, ignore_errors=True)


def _write_codes(target: Path, codes: np.ndarray, ids: np.ndarray | None) -> None:
    """Codes (and ids unless implicit) as one uncompressed record batch, wrapped without a copy."""
    codes = np.ascontiguousarray(codes)
    n, nbytes = codes.shape
    columns = [pa.Array.from_buffers(pa.binary(nbytes), n, [None, pa.py_buffer(codes)])]
    names = ["code"]
    if ids is not None:
        columns.append(pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(np.ascontiguousarray(ids))]))
        names.append("id")
    batch = pa.record_batch(columns, names=names)
    with pa.OSFile(str(target), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)


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


def _version() -> str:
    from hashsearch import __version__

    return __version__


# ----------------------------------------------------------------------------------------- reading

class _Vanished(CorruptIndexError):
    """A file the manifest names is gone: maybe a later save collected it (then read again)."""


def read_index(path: str | os.PathLike, mmap: bool = True, verify: bool = True) -> StoredIndex:
    """Open an index directory, refusing a corrupt or truncated one with `CorruptIndexError`.

    mmap=True maps the codes files and returns zero-copy read-only views; mmap=False reads them into
    memory. verify=False skips the SHA-256 pass (slow on huge indexes) but still checks file sizes,
    the Arrow schema and the row counts. While another process saves, this returns the old or the
    new version, never an error."""
    path = Path(path)
    if not path.is_dir():
        aside = sorted(path.parent.glob(f".{path.name}.old-*"))
        hint = f" (a save was interrupted: the previous index is in {aside[-1]})" if aside else ""
        raise FileNotFoundError(f"no index at {path}: not a directory{hint}")
    for _ in range(READ_ATTEMPTS):
        manifest = read_manifest(path)
        try:
            return _read(path, manifest, mmap, verify)
        except _Vanished:
            if read_manifest(path) == manifest:
                raise
    raise CorruptIndexError(f"{path}: the index changed {READ_ATTEMPTS} times while being read")


def _read(path: Path, manifest: dict[str, Any], mmap: bool, verify: bool) -> StoredIndex:
    nbits = manifest["nbits"]
    if manifest["format_version"] == 1:
        files = {"codes": {"name": CODES_FILE, **manifest["files"][CODES_FILE]}}
        if METADATA_FILE in manifest["files"]:
            files["metadata"] = {"name": METADATA_FILE, **manifest["files"][METADATA_FILE]}
        segs = [{"name": "seg-" + files["codes"]["sha256"][:16], "rows": manifest["count"],
                 "ids": manifest["ids"], "files": files}]
    else:
        segs = manifest["segments"]
    out = []
    for seg in segs:
        files = seg["files"]
        check_files(path, files.values(), verify=verify)
        stored = seg["ids"]["stored"]
        codes, ids = _read_codes(path / files["codes"]["name"], nbits, seg["rows"], stored, mmap)
        metadata = dead = None
        if "metadata" in files:
            metadata = _read_metadata(path / files["metadata"]["name"], seg["rows"], mmap)
        if "dead" in files:
            dead = _read_dead(path / files["dead"]["name"], seg["rows"])
        if ids is not None and ids.size > 1 and not np.all(ids[1:] > ids[:-1]):
            if dead is not None:
                raise CorruptIndexError(f"{path / files['codes']['name']}: ids are not ascending")
            codes, ids, metadata = _sorted_by_id(path / files["codes"]["name"], codes, ids, metadata)
        out.append(SegmentRows(seg["name"], codes, ids, 0 if stored else seg["ids"]["start"], metadata, dead,
                               files=files))
    live = sum(len(s.codes) - (0 if s.dead is None else s.dead.size) for s in out)
    if live != manifest["count"]:
        raise CorruptIndexError(f"{path / MANIFEST}: {live} live rows but the manifest says {manifest['count']}")
    return StoredIndex(nbits=nbits, backend=manifest["backend"], params=manifest["params"],
                       settings=manifest.get("settings", {}), uid=_uid(manifest), segments=out, manifest=manifest)


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
    """The parsed, structurally checked manifest of the index directory `path` (version 1 or 2)."""
    where = Path(path) / MANIFEST
    manifest = load_manifest(path)
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CorruptIndexError(f"{where}: unknown format version {version!r} "
                                f"(this hashsearch reads versions {', '.join(map(str, READABLE_VERSIONS))})")
    expect = {"nbits": int, "count": int, "backend": str, "params": dict}
    expect.update({"files": dict, "ids": dict} if version == 1 else {"segments": list, "uid": str, "generation": int})
    for key, kind in expect.items():
        if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool):
            raise CorruptIndexError(f"{where}: field {key!r} is missing or not a {kind.__name__}")
    try:
        check_nbits(manifest["nbits"])
    except InvalidInputError as exc:
        raise CorruptIndexError(f"{where}: {exc}") from None
    if manifest["count"] < 0:
        raise CorruptIndexError(f"{where}: negative count {manifest['count']}")
    if version == 1:
        _check_v1(manifest, where)
    else:
        for seg in manifest["segments"]:
            _check_segment_entry(seg, where)
    return manifest


def _check_ids_entry(ids: Any, where: Path) -> None:
    if not isinstance(ids, dict) or not isinstance(ids.get("stored"), bool) or (
            not ids["stored"] and not isinstance(ids.get("start"), int)):
        raise CorruptIndexError(f"{where}: field 'ids' must be {{'stored': true}} or {{'stored': false, 'start': int}}")


def _check_v1(manifest: dict[str, Any], where: Path) -> None:
    _check_ids_entry(manifest["ids"], where)
    if CODES_FILE not in manifest["files"]:
        raise CorruptIndexError(f"{where}: does not list {CODES_FILE}")
    for name, entry in manifest["files"].items():
        if (name not in (CODES_FILE, METADATA_FILE) or not isinstance(entry, dict)
                or not isinstance(entry.get("bytes"), int) or not isinstance(entry.get("sha256"), str)):
            raise CorruptIndexError(f"{where}: bad entry for file {name!r}")


def _check_segment_entry(seg: Any, where: Path) -> None:
    if not isinstance(seg, dict) or not isinstance(seg.get("name"), str) or not _SEGMENT_NAME.fullmatch(seg["name"]):
        raise CorruptIndexError(f"{where}: bad segment entry {str(seg)[:80]}")
    if not isinstance(seg.get("rows"), int) or seg["rows"] < 0:
        raise CorruptIndexError(f"{where}: segment {seg['name']}: bad 'rows'")
    _check_ids_entry(seg.get("ids"), where)
    files = seg.get("files")
    if not isinstance(files, dict) or "codes" not in files or not set(files) <= {"codes", "metadata", "dead"}:
        raise CorruptIndexError(f"{where}: segment {seg['name']}: 'files' must list codes [, metadata, dead]")
    for entry in files.values():
        if (not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or "/" in entry["name"]
                or entry["name"].startswith(".") or not isinstance(entry.get("bytes"), int)
                or not isinstance(entry.get("sha256"), str)):
            raise CorruptIndexError(f"{where}: segment {seg['name']}: bad file entry {entry!r}")


def check_files(path: str | os.PathLike, entries, verify: bool = True) -> None:
    """Every listed file exists with the recorded size (and SHA-256 when `verify`)."""
    for entry in entries:
        where = Path(path) / entry["name"]
        try:
            size = where.stat().st_size
        except FileNotFoundError:
            raise _Vanished(f"{where}: missing (listed in {MANIFEST})") from None
        if size != entry["bytes"]:
            state = "truncated" if size < entry["bytes"] else "has extra bytes"
            raise CorruptIndexError(f"{where}: {state}: {size} bytes, the manifest says {entry['bytes']}")
        if verify:
            try:
                digest = sha256_file(where)
            except FileNotFoundError:
                raise _Vanished(f"{where}: missing (listed in {MANIFEST})") from None
            if digest != entry["sha256"]:
                raise CorruptIndexError(f"{where}: checksum mismatch (SHA-256 differs from {MANIFEST})")


def _read_codes(where: Path, nbits: int, count: int, stored_ids: bool, mmap: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Codes and stored ids (or None) from a codes file, checked against the manifest; views of the
    file when mmap."""
    try:
        source = pa.memory_map(str(where), "r") if mmap else pa.OSFile(str(where), "rb")
        with source:
            reader = pa.ipc.open_file(source)
            schema, nbatches = reader.schema, reader.num_record_batches
            batch = reader.get_batch(0) if nbatches == 1 else None
    except FileNotFoundError:
        raise _Vanished(f"{where}: missing (listed in {MANIFEST})") from None
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
    ids = _fixed_width_view(batch.column(1), np.int64, 1) if stored_ids else None
    return codes, ids


def _sorted_by_id(where: Path, codes: np.ndarray, ids: np.ndarray, metadata: pa.Table | None):
    """Rows of a format-1 file (which kept ids in any order) sorted by id, in memory."""
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if np.any(ids[1:] == ids[:-1]):
        raise CorruptIndexError(f"{where}: duplicate ids")
    return codes[order], ids, None if metadata is None else metadata.take(pa.array(order))


def _fixed_width_view(array: pa.Array, dtype: type, width: int) -> np.ndarray:
    """Zero-copy numpy view of a fixed-width Arrow array's value buffer (nulls are corruption)."""
    if array.null_count:
        raise CorruptIndexError(f"column of type {array.type} holds {array.null_count} null values")
    values = array.buffers()[1]
    return np.frombuffer(values, dtype=dtype, count=len(array) * width, offset=array.offset * width * np.dtype(dtype).itemsize)


def _read_metadata(where: Path, rows: int, mmap: bool) -> pa.Table:
    try:
        metadata = pq.read_table(where, memory_map=mmap)
    except FileNotFoundError:
        raise _Vanished(f"{where}: missing (listed in {MANIFEST})") from None
    except (pa.ArrowException, OSError) as exc:
        raise CorruptIndexError(f"{where}: unreadable Parquet ({exc})") from None
    if metadata.num_rows != rows:
        raise CorruptIndexError(f"{where}: {metadata.num_rows} rows but the manifest says {rows}")
    return metadata


def _read_dead(where: Path, rows: int) -> np.ndarray:
    try:
        dead = np.load(where, allow_pickle=False)
    except FileNotFoundError:
        raise _Vanished(f"{where}: missing (listed in {MANIFEST})") from None
    except ValueError as exc:
        raise CorruptIndexError(f"{where}: unreadable tombstones ({exc})") from None
    if (dead.ndim != 1 or dead.dtype != np.int64 or (dead.size and (dead[0] < 0 or dead[-1] >= rows))
            or np.any(dead[1:] <= dead[:-1])):
        raise CorruptIndexError(f"{where}: tombstones must be ascending row positions below {rows}")
    return dead


def index_size(path: str | os.PathLike) -> int:
    """Bytes on disk of the current version of an index: its manifest and every file it names."""
    path = Path(path)
    names = set(_referenced(read_manifest(path))) | {MANIFEST}
    return sum((path / name).stat().st_size for name in names)
