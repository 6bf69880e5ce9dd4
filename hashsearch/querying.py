"""The steps behind `hashsearch build-index`, `query` and `info`: build an index in batches,
search in batches, write results as JSON lines or Parquet, describe an index on disk.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import IO, Any, Iterator

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
        raise InvalidInputError(f"batch size must be positive, got {batch_size}")
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


def search_batches(index, queries: np.ndarray, *, topk: int | None = None, radius: int | None = None,
                   batch_size: int = 1024, where: Any = None) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Results batch by batch as (first query number, offsets, ids, distances) in CSR form:
    row i's results are ids[offsets[i]:offsets[i+1]], best first; top-k padding is dropped.
    The arguments are checked at once, before the first batch is searched."""
    if (topk is None) == (radius is None):
        raise InvalidInputError("give exactly one of --topk K or --radius R")
    if topk is not None and topk < 1:
        raise InvalidInputError(f"--topk must be at least 1, got {topk}")
    if radius is not None and radius < 0:
        raise InvalidInputError(f"--radius must be non-negative (nbits or more: every item), got {radius}")
    if batch_size < 1:
        raise InvalidInputError(f"batch size must be positive, got {batch_size}")
    return _search(index, queries, topk, radius, batch_size, where)


def _search(index, queries, topk, radius, batch_size, where=None):
    nq = queries.shape[0]
    with tqdm(total=nq, unit="query", desc="searching", disable=nq <= batch_size, leave=False) as bar:
        for lo in range(0, nq, batch_size):
            batch = np.ascontiguousarray(queries[lo:lo + batch_size])
            if topk is not None:
                dist, ids = index.search(batch, topk, filter=where)
                found = ids >= 0
                offsets = np.concatenate([[0], np.cumsum(found.sum(axis=1))])
                yield lo, offsets, ids[found], dist[found]
            else:
                lims, dist, ids = index.range_search(batch, radius, filter=where)
                yield lo, np.asarray(lims), ids, dist
            bar.update(batch.shape[0])


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling path renamed to `path` only when the block succeeds (no half-written results)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_jsonl(batches, stream: IO[str]) -> int:
    """One line per query: {"query": i, "ids": [...], "distances": [...]}; returns the number of lines."""
    rows = 0
    for first, offsets, ids, dist in batches:
        for r in range(offsets.size - 1):
            a, b = offsets[r], offsets[r + 1]
            stream.write(json.dumps({"query": first + r, "ids": ids[a:b].tolist(),
                                     "distances": dist[a:b].tolist()}) + "\n")
        rows += offsets.size - 1
    return rows


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


RESULT_SCHEMA = pa.schema([("query", pa.int64()), ("ids", pa.large_list(pa.int64())),
                           ("distances", pa.large_list(pa.int32()))])


def write_parquet(batches, out: str | os.PathLike) -> int:
    """Columns query, ids (list), distances (list), one row per query; returns the number of rows."""
    rows = 0
    with pq.ParquetWriter(out, RESULT_SCHEMA) as writer:
        for first, offsets, ids, dist in batches:
            offsets = pa.array(offsets, pa.int64())
            writer.write_batch(pa.record_batch([
                pa.array(np.arange(first, first + len(offsets) - 1), pa.int64()),
                pa.LargeListArray.from_arrays(offsets, pa.array(ids, pa.int64())),
                pa.LargeListArray.from_arrays(offsets, pa.array(dist, pa.int32())),
            ], schema=RESULT_SCHEMA))
            rows += len(offsets) - 1
    return rows


def describe_index(path: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """What `hashsearch info` prints: shape, backend, segments and tombstones, bytes on disk against
    raw codes, checksums, and files left by interrupted saves (the next save deletes them)."""
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
