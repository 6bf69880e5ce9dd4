"""`hashsearch train` and `hashsearch encode`: the data set -> model -> codes steps of the command line.

`train` fits learners on a data set's standard split and saves each to OUT/<data set>/<METHOD>-<nbits>,
the layout `hashsearch eval` and `hashsearch bench --models OUT` read. `encode` turns a data set's rows
into packed codes in a Parquet file (columns `id`, the row number, and `code`) that
`hashsearch build-index` and `hashsearch query` take, with a `labels` column (class names where the
data set has them) and, where it has a text vocabulary, a `tags` column (each item's words), that an
index keeps as metadata and returns with each hit.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hashsearch import datasets, learners
from hashsearch.codefiles import CODE_COLUMN, ID_COLUMN
from hashsearch.codes import check_nbits
from hashsearch.errors import InvalidInputError
from hashsearch.models.training import load_model
from hashsearch.querying import atomic_output

LABEL_COLUMN = "labels"
TAG_COLUMN = "tags"  # each item's words of the text vocabulary, where the data set has one
CHECKPOINT = "checkpoint"  # training state inside a model folder
SPLITS = ("database", "query", "train", "all")


def modality_code(modality: str) -> str:
    """"image" -> "I", "text" -> "T", with a clear error for anything else."""
    if modality not in learners.MODALITIES:
        raise InvalidInputError(f"modality must be one of {', '.join(learners.MODALITIES)}, got {modality!r}")
    return learners.MODALITIES[modality]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Train with `threads` torch threads (None: torch's default, every core), then restore the setting.
    One thread is the fast choice for the feature MLPs on a small machine: on the shared 2-core test
    machine two threads spent 6x the CPU time of one per DCMH epoch on wikipedia."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_widths(nbits: Sequence[int]) -> None:
    """At least one code width, each a multiple of 8 in [8, 1024], or an error naming --nbits."""
    if not nbits:
        raise InvalidInputError("give at least one code width (--nbits)")
    for width in nbits:
        try:
            check_nbits(width)
        except InvalidInputError as exc:
            raise InvalidInputError(f"--nbits: {exc}") from None


def model_dir(out: str | os.PathLike, dataset: str, method: learners.Method, nbits: int) -> Path:
    """Where `train` saves one model (and `bench --models` looks for it)."""
    return Path(out) / dataset / f"{method.name}-{nbits}"


def train(data: str, methods: Sequence[str], nbits: Sequence[int], out: str | os.PathLike, *,
          modality: str = "image", epochs: int | None = None, seed: int = 0, resume: bool = False,
          threads: int | None = None, echo: Callable[[str], None] = print) -> list[Path]:
    """Fit each method at each width on `data`'s standard training split and save it; returns the
    model folders. `epochs` overrides the deep learners' budget (their recommended settings otherwise);
    `threads` sets torch's threads while training (None: torch's default).
    Learners that checkpoint (DCMH) save their training state in <model folder>/checkpoint as they go;
    `resume` continues from it after an interruption."""
    chosen = [learners.method_named(m) for m in methods]
    check_widths(nbits)  # every argument is checked before the data set is read
    if epochs is not None and epochs < 1:
        raise InvalidInputError(f"--epochs must be at least 1, got {epochs}")
    if threads is not None and threads < 1:
        raise InvalidInputError(f"--threads must be at least 1, got {threads}")
    code = modality_code(modality)
    dataset = datasets.load(data)
    split = datasets.standard_split(dataset, seed=seed)
    if any(m.kind == learners.SINGLE for m in chosen):
        learners.rows_of(dataset, code)  # fail before any training when the modality is missing
    echo(f"data: {dataset.name}{' [SYNTHETIC]' if dataset.synthetic else ''}: {len(split.train)} training rows, "
         f"{len(split.query)} queries, {len(split.database)} in the database")
    saved = []
    with torch_threads(threads):
        for method, width in ((m, w) for m in chosen for w in nbits):
            t0 = time.perf_counter()
            dest = model_dir(out, dataset.name, method, width)
            model = learners.fit(method, dataset, split, width, modality=code, seed=seed,
                                 epochs=epochs if method.deep else None, quiet=False,
                                 checkpoint_dir=dest / CHECKPOINT, resume=resume)
            model.save(dest)
            vocab = getattr(model, "text_vocabulary_", None)
            words = f", with its {len(vocab.words)}-word text vocabulary" if vocab is not None else ""
            echo(f"{method.name} {width} bits: trained in {time.perf_counter() - t0:.1f} s, saved to {dest}{words}")
            saved.append(dest)
    return saved


def split_rows(split: datasets.Split, which: str, n: int) -> np.ndarray:
    """Row numbers of one part of the split, or of every row ("all")."""
    if which not in SPLITS:
        raise InvalidInputError(f"split must be one of {', '.join(SPLITS)}, got {which!r}")
    return np.arange(n, dtype=np.int64) if which == "all" else np.asarray(getattr(split, which), dtype=np.int64)


def names_column(present: np.ndarray, names: Sequence[str] | None) -> pa.Array:
    """Per row of the matrix `present`, the names of its non-zero columns (their numbers without names)."""
    present = np.asarray(present) > 0
    item, column = np.nonzero(present)
    offsets = pa.array(np.concatenate([[0], np.cumsum(present.sum(axis=1))]), pa.int32())
    if names is not None:
        values = pa.array(np.asarray(names, dtype=object)[column], pa.string())
    else:
        values = pa.array(column, pa.int32())
    return pa.ListArray.from_arrays(offsets, values)


def label_column(dataset: datasets.PairedDataset, rows: np.ndarray) -> pa.Array:
    """Each row's labels as a list: class names where the data set has them, else label numbers."""
    return names_column(dataset.labels[rows], dataset.label_names)


def encode(model_path: str | os.PathLike, data: str, out: str | os.PathLike, *, modality: str = "image",
           split: str = "database", seed: int = 0) -> tuple[int, int]:
    """Encode one modality of `data` (the rows of `split`) with a saved model into a Parquet file of
    (id, code, labels) rows, and `tags` (the item's words) where the data set has a text vocabulary,
    written atomically; returns (rows, nbits)."""
    if Path(out).suffix != ".parquet":
        raise InvalidInputError(f"--out must name a .parquet file, got {str(out)!r}")
    code = modality_code(modality)
    if split not in SPLITS:
        raise InvalidInputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    model = load_model(model_path)
    dataset = datasets.load(data)
    rows = split_rows(datasets.standard_split(dataset, seed=seed), split, len(dataset))
    codes = learners.encode(model, learners.rows_of(dataset, code)[rows], code)
    columns = {LABEL_COLUMN: label_column(dataset, rows)}
    if dataset.text_vocabulary is not None:
        columns[TAG_COLUMN] = names_column(dataset.texts[rows], dataset.text_vocabulary)
    write_codes(out, rows, codes, **columns)
    return len(rows), int(model.nbits)


def write_codes(out: str | os.PathLike, ids: np.ndarray, codes: np.ndarray, **columns: Sequence) -> None:
    """A Parquet file of (id, code, *columns) rows, written atomically; extra columns become the
    index's per-item metadata in `build-index`."""
    table = pa.table({ID_COLUMN: pa.array(ids, pa.int64()),
                      CODE_COLUMN: pa.FixedSizeBinaryArray.from_buffers(
                          pa.binary(codes.shape[1]), len(codes), [None, pa.py_buffer(np.ascontiguousarray(codes))]),
                      **columns})
    with atomic_output(out) as tmp:
        pq.write_table(table, tmp)


def encode_images(model_path: str | os.PathLike, images: str, out: str | os.PathLike) -> tuple[int, int]:
    """Encode image files (a folder, a glob or one file) with a saved pixel model into a Parquet file of
    (id, code, file) rows: ids 0.. in sorted file order, `file` the absolute path; returns (rows, nbits)."""
    from hashsearch import imagequery

    if Path(out).suffix != ".parquet":
        raise InvalidInputError(f"--out must name a .parquet file, got {str(out)!r}")
    model = load_model(model_path)
    paths = imagequery.image_paths(images)
    codes = imagequery.encode_images(model, paths)
    write_codes(out, np.arange(len(paths), dtype=np.int64), codes,
                **{imagequery.FILE_COLUMN: [str(p.resolve()) for p in paths]})
    return len(paths), int(model.nbits)
