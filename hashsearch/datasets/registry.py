"""`load(name_or_path)`: a data set by its short name or from a .mat/.npz/.parquet file."""
from __future__ import annotations

import os
from pathlib import Path

from hashsearch.datasets import PairedDataset
from hashsearch.datasets.cifar10 import load_cifar10
from hashsearch.datasets.crossmodal import load_mirflickr, load_nuswide, load_paired_file, load_wikipedia
from hashsearch.datasets.images import load_digits, load_mnist5k
from hashsearch.datasets.synthetic import synthetic_paired
from hashsearch.errors import InvalidInputError

NAMES = {
    "wikipedia": load_wikipedia,
    "mirflickr": load_mirflickr,
    "mirflickr25k": load_mirflickr,
    "nuswide": load_nuswide,
    "mnist": load_mnist5k,
    "mnist5k": load_mnist5k,
    "digits": load_digits,
    "cifar10": load_cifar10,
    "synthetic": synthetic_paired,
}
FILE_SUFFIXES = (".mat", ".npz", ".parquet")


def load(name_or_path: str | os.PathLike) -> PairedDataset:
    """A known data set by name (see NAMES; siftsmall has its own `load_sift_small`), or a paired file."""
    key = str(name_or_path)
    if key.lower() in NAMES:
        return NAMES[key.lower()]()
    if Path(key).suffix.lower() in FILE_SUFFIXES:
        return load_paired_file(key)
    raise InvalidInputError(
        f"unknown data set {key!r}: give one of {', '.join(sorted(NAMES))} or a {'/'.join(FILE_SUFFIXES)} file"
    )
