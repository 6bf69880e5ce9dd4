"""Ray Data pipelines: Parquet code files read and packed in parallel into a sharded index directory
(`build-index --shards`), and a data set encoded by a trained model across Ray workers into a folder
of Parquet files (`encode --ray`).
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hashsearch.cluster import connect
from hashsearch.codefiles import ID_COLUMN, _column_matrix, _guess_code_column, column_ids, to_packed
from hashsearch.errors import InvalidInputError
from hashsearch.sharded import write_sharded

CODE_COLUMN = "code"


def _fixed_binary(codes: np.ndarray) -> pa.Array:
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(codes.shape[1]), len(codes),
                                                [None, pa.py_buffer(np.ascontiguousarray(codes))])


def build_sharded(source: str | os.PathLike, out: str | os.PathLike, shards: int, *, backend: str = "numba",
                  params: dict[str, Any] | None = None, column: str | None = None, nbits: int | None = None,
                  with_metadata: bool = True, address: str | None = None) -> list[int]:
    """Read a Parquet file or folder of files with Ray Data (in parallel, codes packed on the
    workers), then write a sharded index directory (ids: the `id` column, else the row number).
    Returns the per-shard counts."""
    source = Path(source)
    files = sorted(source.rglob("*.parquet")) if source.is_dir() else [source]
    if not files or not files[0].is_file():
        raise FileNotFoundError(f"{source}: no Parquet file here")
    schema = pq.read_schema(files[0])
    column = column or _guess_code_column(schema, files[0])
    if column not in schema.names:
        raise InvalidInputError(f"{files[0]}: no column {column!r} (columns: {', '.join(schema.names)})")
    has_ids = ID_COLUMN in schema.names and column != ID_COLUMN
    others = [c for c in schema.names if c not in (column, ID_COLUMN)] if with_metadata else []

    def pack(batch: pa.Table) -> pa.Table:  # runs on the Ray workers
        codes, _ = to_packed(_column_matrix(batch.column(column), f"{source}:{column}"), nbits, f"{source}:{column}")
        return pa.table({CODE_COLUMN: _fixed_binary(codes), **{c: batch.column(c) for c in others},
                         **({ID_COLUMN: batch.column(ID_COLUMN)} if has_ids else {})})

    ray = connect(address)
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # row numbers are ids
    ds = ray.data.read_parquet([str(f) for f in files]).select_columns([column] + [ID_COLUMN] * has_ids + others)
    table = pa.concat_tables(ds.map_batches(pack, batch_format="pyarrow").iter_batches(
        batch_format="pyarrow", batch_size=None)) if ds.count() else None
    if table is None or table.num_rows == 0:
        raise InvalidInputError(f"{source}: no codes (0 rows)")
    codes = _column_matrix(table.column(CODE_COLUMN), f"{source}:{column}")
    ids = column_ids(table, source) if has_ids else None
    return write_sharded(out, codes, ids, shards, backend=backend, params=params,
                         metadata=table.select(others) if others else None)


class _Encoder:
    """One Ray Data worker: loads the model once, then encodes batches of row numbers."""

    def __init__(self, model_path: str, x_ref: Any, modality: str):
        import ray
        import torch

        from hashsearch.models.training import load_model

        torch.set_num_threads(1)
        # the rows, shared through the object store (Ray Data passes constructor args unresolved)
        self.model, self.x, self.modality = load_model(model_path), ray.get(x_ref), modality

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        from hashsearch import learners

        rows = batch["id"]
        codes = learners.encode(self.model, np.asarray(self.x[batch["pos"]]), self.modality)
        return pa.table({ID_COLUMN: pa.array(rows, pa.int64()), CODE_COLUMN: _fixed_binary(codes)})


def encode_parallel(model_path: str | os.PathLike, data: str, out: str | os.PathLike, *, modality: str = "image",
                    split: str = "database", seed: int = 0, workers: int | None = None, batch_size: int = 4096,
                    address: str | None = None) -> int:
    """Encode one modality of `data` (the rows of `split`) with a saved model across Ray workers
    into a folder of Parquet files of (id, code) rows, published atomically; returns the rows."""
    from hashsearch import datasets, jobs, learners

    out = Path(out)
    if out.exists():
        raise InvalidInputError(f"{out} exists; name a new folder for the Parquet files")
    dataset = datasets.load(data)
    rows = jobs.split_rows(datasets.standard_split(dataset, seed=seed), split, len(dataset))
    code = jobs.modality_code(modality)
    x = learners.rows_of(dataset, code)
    ray = connect(address)
    cpus = ray.cluster_resources().get("CPU", 1.0)
    workers = workers or max(1, int(cpus) - 1)
    # the encoders leave one CPU to Ray Data's read and write tasks, which would wait for it forever
    share = max(0.01, min(1.0, (cpus - 1) / workers))
    table = pa.table({"pos": pa.array(rows, pa.int64()), "id": pa.array(rows, pa.int64())})
    ds = ray.data.from_arrow(table).repartition(max(workers, -(-len(rows) // batch_size)))
    ds = ds.map_batches(_Encoder, fn_constructor_args=(str(model_path), ray.put(x), code), batch_size=batch_size,
                        batch_format="numpy", concurrency=workers, num_cpus=share)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        ds.write_parquet(str(tmp))
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(rows)
