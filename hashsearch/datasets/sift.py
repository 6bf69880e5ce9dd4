"""ANN_SIFT10K ("siftsmall", TEXMEX): 10,000 base and 100 query SIFT vectors with their true 100-NN."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hashsearch.datasets import data_root
from hashsearch.datasets.formats import read_vecs
from hashsearch.errors import InvalidInputError

SIFTSMALL_DIR = Path("siftsmall_texmex")


@dataclass
class SiftSmall:
    """Unlabelled descriptors: relevance is the Euclidean ground truth, not a class."""

    base: np.ndarray  # (10000, 128) float32
    queries: np.ndarray  # (100, 128) float32
    groundtruth: np.ndarray  # (100, 100) int64 row numbers of `base`, nearest first
    name: str = "siftsmall"


def load_sift_small(root: str | os.PathLike | None = None) -> SiftSmall:
    """Read siftsmall_{base,query}.fvecs and siftsmall_groundtruth.ivecs; check they agree."""
    folder = (Path(root) if root is not None else data_root()) / SIFTSMALL_DIR
    base = read_vecs(folder / "siftsmall_base.fvecs", "float32")
    queries = read_vecs(folder / "siftsmall_query.fvecs", "float32")
    truth = read_vecs(folder / "siftsmall_groundtruth.ivecs", "int32").astype(np.int64)
    if base.shape[1] != queries.shape[1]:
        raise InvalidInputError(f"siftsmall: base has {base.shape[1]} dimensions, queries {queries.shape[1]}")
    if len(truth) != len(queries):
        raise InvalidInputError(f"siftsmall: {len(truth)} ground-truth rows for {len(queries)} queries")
    if truth.min() < 0 or truth.max() >= len(base):
        raise InvalidInputError(f"siftsmall: ground-truth ids outside 0..{len(base) - 1}")
    return SiftSmall(base=base, queries=queries, groundtruth=truth)
