"""The steps behind `hashsearch build-index`, `query` and `info`: build an index in batches,
search in batches, write results as JSON lines or Parquet, describe an index on disk.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from hashsearch.codefiles import CodeFile
from hashsearch.errors import InvalidInputError
from hashsearch.storage import index_size, leftovers, read_index


# ---------------------------------------------------------------------------- the three commands

def parse_params(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Backend parameters from KEY=VALUE strings; VALUE is read as JSON when it parses (4, 1.5, true)."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"parameter {pair!r} is not KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def build_index(codes: CodeFile, out: str | os.PathLike, *, backend: str, ids: np.ndarray | None = None,
                params: dict[str, Any] | None = None, batch_size: int = 1 << 22, overwrite: bool = False):
    """Add the codes (with their ids and metadata columns, if any) to a new HammingIndex in batches,
    with a progress bar when there are several, compact it to one segment and save it atomically to
    `out` (an index already there is replaced only with `overwrite`). Returns the index."""
    from hashsearch.index import HammingIndex

    if batch_size < 1:
        raise InvalidInputError(f"--batch-size must be positive, got {batch_size}")
    ids = codes.ids if ids is None else ids
    n = codes.codes.shape[0]
    if ids is not None and ids.shape[0] != n:
        raise InvalidInputError(f"{ids.shape[0]} ids for {n} codes")
    index = HammingIndex(codes.nbits, backend=backend, **(params or {}))
    with tqdm(total=n, unit="code", desc="adding", disable=n <= batch_size, leave=False) as bar:
        for lo in range(0, n, batch_size):
            hi = min(lo + batch_size, n)
            index.add(np.ascontiguousarray(codes.codes[lo:hi]), None if ids is None else ids[lo:hi],
                      None if codes.metadata is None else codes.metadata.slice(lo, hi - lo))
            bar.update(hi - lo)
    index.compact()
    index.save(out, overwrite=overwrite)
    return index


INT64_MAX = np.iinfo(np.int64).max


@dataclass
class ResultBatch:
    """Results of consecutive queries in CSR form: query r's hits are ids[offsets[r]:offsets[r+1]],
    best first (top-k padding dropped), with their distances and, when the index stores metadata,
    their metadata rows (one per hit, same order)."""

    first: int  # row number of the first query in the query file
    query_ids: np.ndarray  # the queries' own ids (the `id` column of the query file, else row numbers)
    offsets: np.ndarray
    ids: np.ndarray
    distances: np.ndarray
    metadata: pa.Table | None = None


def check_search_arguments(topk: int | None, radius: int | None, batch_size: int) -> None:
    """The rules of `hashsearch query`: exactly one of --topk K (1 <= K < 2**63; a K above the index
    size returns every item) or --radius R (R >= 0; above nbits it means every item within nbits)."""
    if (topk is None) == (radius is None):
        raise InvalidInputError("give exactly one of --topk K or --radius R")
    if topk is not None and not 1 <= topk <= INT64_MAX:
        raise InvalidInputError(f"--topk must be between 1 and 2**63-1, got {topk}")
    if radius is not None and not 0 <= radius <= INT64_MAX:
        raise InvalidInputError(f"--radius must be between 0 and 2**63-1, got {radius}")
    if batch_size < 1:
        raise InvalidInputError(f"--batch-size must be positive, got {batch_size}")


def search_batches(index, queries: np.ndarray, *, topk: int | None = None, radius: int | None = None,
                   batch_size: int = 1024, query_ids: np.ndarray | None = None, where: Any = None) -> Iterator[ResultBatch]:
    """Results batch by batch (see ResultBatch), each hit with its metadata when the index has some;
    `where` is a filter (id allow-list or pyarrow expression over the metadata, see filters.py).
    The arguments are checked at once, before the first batch is searched; top-k asks the index for
    at most len(index) results, so a huge K allocates nothing extra."""
    check_search_arguments(topk, radius, batch_size)
    if query_ids is not None and len(query_ids) != len(queries):
        raise InvalidInputError(f"{len(query_ids)} query ids for {len(queries)} queries")
    if topk is not None:
        topk = max(1, min(topk, len(index)))
    else:
        radius = min(radius, index.nbits)
    return _search(index, queries, topk, radius, batch_size, query_ids, where)


def _search(index, queries, topk, radius, batch_size, query_ids, where):
    nq = queries.shape[0]
    rows = MetadataRows(index)
    with tqdm(total=nq, unit="query", desc="searching", disable=nq <= batch_size, leave=False) as bar:
        for lo in range(0, nq, batch_size):
            batch = np.ascontiguousarray(queries[lo:lo + batch_size])
            if topk is not None:
                dist, ids = index.search(batch, topk, filter=where)
                found = ids >= 0
                offsets = np.concatenate([[0], np.cumsum(found.sum(axis=1))])
                ids, dist = ids[found], dist[found]
            else:
                offsets, dist, ids = index.range_search(batch, radius, filter=where)
                offsets = np.asarray(offsets)
            qids = np.arange(lo, lo + len(batch)) if query_ids is None else query_ids[lo:lo + len(batch)]
            yield ResultBatch(lo, qids, offsets, ids, dist, rows.of(ids))
            bar.update(batch.shape[0])


class MetadataRows:
    """The stored metadata rows of hits, looked up by id (an index keeps codes in ascending id order)."""

    def __init__(self, index):
        self.table = index.metadata
        self.ids = None if self.table is None else np.asarray(index.ids)

    def of(self, ids: np.ndarray) -> pa.Table | None:
        if self.table is None:
            return None
        return self.table.take(pa.array(np.searchsorted(self.ids, ids), pa.int64()))


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling path renamed to `path` only when the block succeeds (no half-written
    results). Failing to write names `path`, not the hidden temporary name."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: there is no folder {path.parent}")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if str(tmp) not in str(exc):
            raise
        raise type(exc)(str(exc).replace(str(tmp), str(path))) from None
    finally:
        tmp.unlink(missing_ok=True)


def json_value(value: Any) -> Any:
    """Metadata values JSON has no type for (dates, bytes, decimals) as text."""
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def write_jsonl(batches: Iterable[ResultBatch], stream: IO[str]) -> int:
    """One line per query: {"query": row, "query_id": id, "ids": [...], "distances": [...]} and, when the
    index stores metadata, "metadata": [{column: value}, ...] one per hit; returns the number of lines."""
    lines = 0
    for b in batches:
        meta = None if b.metadata is None else b.metadata.to_pylist()
        for r in range(b.offsets.size - 1):
            lo, hi = int(b.offsets[r]), int(b.offsets[r + 1])
            row = {"query": b.first + r, "query_id": int(b.query_ids[r]), "ids": b.ids[lo:hi].tolist(),
                   "distances": b.distances[lo:hi].tolist()}
            if meta is not None:
                row["metadata"] = meta[lo:hi]
            stream.write(json.dumps(row, ensure_ascii=False, default=json_value) + "\n")
        lines += b.offsets.size - 1
    return lines


def write_results(batches, fmt: str, out: str | os.PathLike | None, stdout: IO[str]) -> int:
    """Results as JSON lines (to `out`, or `stdout` when out is None) or Parquet (to `out`); a result
    file appears only once complete. Returns the number of queries written."""
    if out is None:
        if fmt != "jsonl":
            raise InvalidInputError(f"--format {fmt} needs --out FILE")
        return write_jsonl(batches, stdout)
    with atomic_output(out) as tmp:
        if fmt == "parquet":
            return write_parquet(batches, tmp)
        with open(tmp, "w", encoding="utf-8") as stream:
            return write_jsonl(batches, stream)


def write_parquet(batches: Iterable[ResultBatch], out: str | os.PathLike) -> int:
    """Columns query (row number), query_id, ids (list), distances (list) and, when the index stores
    metadata, metadata (a list of per-hit structs); one row per query. Returns the number of rows."""
    rows, writer = 0, None
    try:
        for b in batches:
            offsets = pa.array(b.offsets, pa.int64())
            columns = {
                "query": pa.array(np.arange(b.first, b.first + len(b.offsets) - 1), pa.int64()),
                "query_id": pa.array(b.query_ids, pa.int64()),
                "ids": pa.LargeListArray.from_arrays(offsets, pa.array(b.ids, pa.int64())),
                "distances": pa.LargeListArray.from_arrays(offsets, pa.array(b.distances, pa.int32())),
            }
            if b.metadata is not None:
                meta = b.metadata.combine_chunks()
                hits = pa.StructArray.from_arrays([c.chunk(0) if c.num_chunks else pa.array([], c.type)
                                                   for c in meta.columns], names=meta.column_names)
                columns["metadata"] = pa.LargeListArray.from_arrays(offsets, hits)
            batch = pa.record_batch(list(columns.values()), names=list(columns))
            if writer is None:
                writer = pq.ParquetWriter(out, batch.schema)
            writer.write_batch(batch)
            rows += len(b.offsets) - 1
    finally:
        if writer is not None:
            writer.close()
    return rows


def describe_index(path: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """What `hashsearch info` prints: shape, backend, segments and tombstones, bytes on disk against
    raw codes, checksums, and files left by interrupted saves (the next save deletes them); a sharded
    index directory is described shard by shard (`sharded.describe_sharded`)."""
    from hashsearch.sharded import describe_sharded, is_sharded

    if is_sharded(path):
        return describe_sharded(path, verify=verify)
    stored = read_index(path, mmap=True, verify=verify)
    m = stored.manifest
    disk = index_size(path)
    raw = stored.count * stored.nbits // 8
    segs = stored.segments
    metadata = next((s.metadata for s in segs if s.metadata is not None), None)
    return {
        "path": str(path), "nbits": stored.nbits, "count": stored.count, "backend": stored.backend,
        "params": stored.params, "format_version": m["format_version"], "generation": m.get("generation"),
        "segments": len(segs), "tombstones": sum(0 if s.dead is None else int(s.dead.size) for s in segs),
        "ids_stored": any(s.ids is not None for s in segs),
        "metadata_columns": metadata.column_names if metadata is not None else [],
        "created": m.get("created"), "hashsearch_version": m.get("hashsearch_version"),
        "bytes_on_disk": disk, "bytes_per_item": disk / stored.count if stored.count else None,
        "raw_code_bytes_per_item": stored.nbits // 8,
        "overhead_vs_raw_codes": disk / raw - 1 if raw else None,
        "files": {f["name"]: f["bytes"] for s in segs for f in s.files.values()},
        "checksums": "ok" if verify else "not checked",
        "leftover_files": leftovers(path, m),
    }


def format_info(info: dict[str, Any]) -> list[str]:
    """`describe_index`'s result as the `key: value` lines `hashsearch info` prints."""
    lines = []
    for key, value in info.items():
        if key == "overhead_vs_raw_codes" and value is not None:
            value = f"{100 * value:+.3f} %"
        elif isinstance(value, float):
            value = f"{value:.3f}"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value)
        lines.append(f"{key}: {value}")
    return lines


def model_query(index, model_path: str | os.PathLike, encode: Callable[[Any], np.ndarray], *,
                topk: int | None = None, radius: int | None = None, where: Any = None) -> list[dict[str, Any]]:
    """Search `index` (the items `where` keeps, see search_batches) with the one code `encode(model)`
    makes under a saved model: one dict per result, best first, with its id, Hamming distance and the
    index's metadata for it (file name, labels, ...)."""
    from hashsearch.models.training import load_model

    model = load_model(model_path)
    if int(model.nbits) != index.nbits:
        raise InvalidInputError(f"the model makes {model.nbits}-bit codes but the index holds {index.nbits}-bit codes")
    batch = next(search_batches(index, encode(model), topk=topk, radius=radius, where=where))
    meta = [{}] * len(batch.ids) if batch.metadata is None else batch.metadata.to_pylist()
    return [{"id": item, "distance": d, **extra} for item, d, extra in zip(batch.ids.tolist(), batch.distances.tolist(), meta)]


def image_query(index, model_path: str | os.PathLike, image: str | os.PathLike, *, topk: int | None = None,
                radius: int | None = None, where: Any = None) -> list[dict[str, Any]]:
    """`model_query` with the code of one image file under a saved pixel model."""
    from hashsearch.imagequery import encode_images

    return model_query(index, model_path, lambda model: encode_images(model, [Path(image)]), topk=topk, radius=radius,
                       where=where)


def text_query(index, model_path: str | os.PathLike, text: str, *, topk: int | None = None,
               radius: int | None = None, where: Any = None) -> tuple[list[dict[str, Any]], list[str]]:
    """`model_query` with the code of free text under a saved model with a text vocabulary (see
    textquery.py); also returns the query's words that the vocabulary lacks (they are ignored)."""
    from hashsearch.textquery import text_vector

    unknown: list[str] = []

    def encode(model):
        row, missing = text_vector(model, text)
        unknown.extend(missing)
        return model.encode_text(row)

    return model_query(index, model_path, encode, topk=topk, radius=radius, where=where), unknown
