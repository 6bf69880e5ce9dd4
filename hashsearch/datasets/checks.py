"""Turn raw arrays into the shapes `PairedDataset` promises, with errors that name the problem:
labels as (n, c) uint8 multi-hot, features as (n, d) float32, pixels as (n, c, h, w).
"""
from __future__ import annotations

import numpy as np

from hashsearch.errors import InvalidInputError


def as_labels(raw: np.ndarray, name: str = "labels", allow_empty_rows: bool = False) -> np.ndarray:
    """(n, c) uint8 multi-hot labels from a multi-hot matrix (0/1, or -1/+1) or a vector of categories.

    A vector (or a single column) holds one category per item; its distinct values become the columns
    in sorted order (wikipedia's 1..10 -> 10 one-hot columns). Rows are items (see `orient_labels`).
    """
    raw = np.asarray(raw)
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw.ravel()
    if raw.size == 0:
        raise InvalidInputError(f"{name} are empty (shape {raw.shape})")
    if not np.issubdtype(raw.dtype, np.number) and raw.dtype != np.bool_:
        raise InvalidInputError(f"{name} must be numeric, got dtype {raw.dtype}")
    if np.issubdtype(raw.dtype, np.floating) and np.isnan(raw).any():
        raise InvalidInputError(f"{name} contain NaN")
    if raw.ndim == 1:
        if np.issubdtype(raw.dtype, np.floating) and (raw != np.round(raw)).any():
            raise InvalidInputError(f"{name}: a category vector must hold integers, got fractional values")
        classes, inverse = np.unique(raw, return_inverse=True)
        out = np.zeros((raw.size, classes.size), dtype=np.uint8)
        out[np.arange(raw.size), inverse] = 1
        return out
    if raw.ndim != 2:
        raise InvalidInputError(f"{name} must be a vector of categories or an (n, c) matrix, got shape {raw.shape}")
    values = np.unique(raw)
    if not (np.isin(values, (0, 1)).all() or np.isin(values, (-1, 1)).all()):
        raise InvalidInputError(f"{name}: a label matrix must hold 0/1 (or -1/+1), found values {values[:6].tolist()}")
    out = np.ascontiguousarray(raw > 0, dtype=np.uint8)
    empty = np.flatnonzero(out.sum(axis=1) == 0)
    if empty.size and not allow_empty_rows:
        raise InvalidInputError(
            f"{name}: {empty.size} item(s) have no label (first at row {empty[0]}); relevance is undefined for them "
            "- drop those rows first"
        )
    return out


def orient_labels(raw: np.ndarray, modalities: list[np.ndarray]) -> np.ndarray:
    """Labels with items on the rows: a (c, n) matrix (or a 1 x n category row) is transposed when its
    columns, not its rows, match the length of the other modalities' item axis."""
    raw = np.asarray(raw)
    lengths = {np.shape(m)[0] for m in modalities} | {np.shape(m)[-1] for m in modalities}
    if raw.ndim == 2 and raw.shape[0] not in lengths and raw.shape[1] in lengths:
        return raw.T
    return raw


def _check_finite(x: np.ndarray, name: str) -> None:
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise InvalidInputError(f"{name} have NaN or infinite values in {rows.size} row(s), first at row {rows[0]}")


def as_features(raw: np.ndarray, n: int, name: str) -> np.ndarray:
    """(n, d) float32 features; a (d, n) matrix stored the other way round is transposed."""
    x = np.asarray(raw)
    if x.ndim == 1 and x.size == n:
        x = x[:, None]
    if x.ndim != 2:
        raise InvalidInputError(f"{name} must be a 2-D (n, d) matrix, got shape {x.shape}")
    if x.shape[0] != n and x.shape[1] == n:
        x = x.T
    if x.shape[0] != n:
        raise InvalidInputError(f"{name} have {x.shape[0]} rows but the labels have {n}: the modalities must pair row by row")
    if not np.issubdtype(x.dtype, np.number) and x.dtype != np.bool_:
        raise InvalidInputError(f"{name} must be numeric, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    _check_finite(x, name)
    return x


def as_images(raw: np.ndarray, n: int, name: str = "images") -> np.ndarray:
    """Features (n, d) as float32, or pixels as (n, c, h, w): the item axis is found by its length n and
    moved first; channel-last (h, w, c) and grey (h, w) images are reordered. uint8 pixels stay uint8
    (224x224x3 float32 copies of 20,000 images would take 12 GB); other dtypes become float32."""
    x = np.asarray(raw)
    if x.ndim <= 2:
        return as_features(x, n, name)
    if x.ndim not in (3, 4):
        raise InvalidInputError(f"{name} must be (n, d) features or (n, c, h, w) pixels, got shape {x.shape}")
    axes = [a for a, size in enumerate(x.shape) if size == n]
    if not axes:
        raise InvalidInputError(f"{name} of shape {x.shape} have no axis of length {n} (the number of labelled items)")
    item_axis = 0 if 0 in axes else axes[-1]
    x = np.moveaxis(x, item_axis, 0)
    if x.ndim == 3:
        x = x[:, None]
    elif x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.number):
            raise InvalidInputError(f"{name} must be numeric, got dtype {x.dtype}")
        x = x.astype(np.float32)
        _check_finite(x, name)
    return np.ascontiguousarray(x)
