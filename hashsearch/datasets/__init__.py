"""Loaders for the data sets of the hashing literature, with their standard splits.

Every loader returns a `PairedDataset` (two modalities, or `texts=None` for single-modal image
data); `Split` holds the row indices of the standard protocol (query / train / database).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def data_root() -> Path:
    """Where the real data sets live: $HASHSEARCH_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("HASHSEARCH_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return Path.cwd().parent / "shared" / "data"


@dataclass
class PairedDataset:
    """Rows i of `images`, `texts` and `labels` describe the same item."""

    name: str
    images: np.ndarray | None  # (n, d) float32 features, or (n, c, h, w) float32 pixels
    texts: np.ndarray | None  # (n, t) float32 bag-of-words / topic vectors
    labels: np.ndarray  # (n, c) uint8 multi-hot (single-label sets are one-hot)
    synthetic: bool = False
    predefined: Split | None = None  # the split shipped with the data (e.g. wikipedia's train/test), if any
    label_names: tuple[str, ...] | None = None  # class names of the label columns, where the data set has them
    item_names: np.ndarray | None = None  # (n,) str, e.g. each image's file path, where known
    text_vocabulary: tuple[str, ...] | None = None  # the words of bag-of-words text columns, in order, where known

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Split:
    """Row indices of the retrieval protocol: queries, training items, and the database searched."""

    query: np.ndarray
    train: np.ndarray
    database: np.ndarray


# Loaders, splits and the dispatcher live in submodules; they import the classes above.
from hashsearch.datasets.crossmodal import load_mirflickr, load_nuswide, load_paired_file, load_wikipedia  # noqa: E402
from hashsearch.datasets.images import load_digits, load_mnist5k  # noqa: E402
from hashsearch.datasets.sift import SiftSmall, load_sift_small  # noqa: E402
from hashsearch.datasets.splits import per_class_split, random_split, standard_split  # noqa: E402
from hashsearch.datasets.synthetic import synthetic_paired  # noqa: E402
from hashsearch.datasets.registry import NAMES, load  # noqa: E402

__all__ = [
    "NAMES", "PairedDataset", "SiftSmall", "Split", "data_root", "load", "load_digits", "load_mirflickr",
    "load_mnist5k", "load_nuswide", "load_paired_file", "load_sift_small", "load_wikipedia", "per_class_split",
    "random_split", "standard_split", "synthetic_paired",
]
