"""Seeded synthetic multi-label image-text pairs, for fast unit tests only (never for reported figures).

Each class has a random prototype in both feature spaces; an item's features are the sum of its
classes' prototypes plus Gaussian noise, so the two modalities share the label structure.
"""
from __future__ import annotations

import numpy as np

from hashsearch.datasets import PairedDataset
from hashsearch.errors import InvalidInputError


def synthetic_paired(
    n: int = 600,
    n_classes: int = 6,
    image_dim: int = 32,
    text_dim: int = 24,
    max_labels: int = 2,
    noise: float = 0.5,
    seed: int = 0,
) -> PairedDataset:
    """`n` pairs with 1..max_labels labels each among `n_classes` (flagged synthetic=True)."""
    if n < 2 or n_classes < 1 or image_dim < 1 or text_dim < 1:
        raise InvalidInputError(f"synthetic_paired needs n >= 2 and positive sizes, got n={n}, n_classes={n_classes}")
    if not 1 <= max_labels <= n_classes:
        raise InvalidInputError(f"max_labels must be in 1..n_classes={n_classes}, got {max_labels}")
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, n_classes), dtype=np.uint8)
    counts = rng.integers(1, max_labels + 1, size=n)
    for i, count in enumerate(counts):
        labels[i, rng.choice(n_classes, size=count, replace=False)] = 1
    image_protos = rng.normal(size=(n_classes, image_dim))
    text_protos = rng.normal(size=(n_classes, text_dim))
    images = labels @ image_protos + noise * rng.normal(size=(n, image_dim))
    texts = labels @ text_protos + noise * rng.normal(size=(n, text_dim))
    return PairedDataset(
        name="synthetic",
        images=images.astype(np.float32),
        texts=texts.astype(np.float32),
        labels=labels,
        synthetic=True,
    )
