"""Items of an index looked up by id: which ids it holds and their metadata rows, in the order asked.
What a shard answers before a remove, and what a service returns beside ids and distances.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from hashsearch.errors import UnknownIdError


def find(index: Any, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of `ids` among the index's ascending ids, and a mask of those it holds."""
    ids = np.asarray(ids, dtype=np.int64)
    current = index.ids
    if current.size == 0 or ids.size == 0:
        return np.zeros(ids.size, np.int64), np.zeros(ids.size, bool)
    pos = np.searchsorted(current, ids)
    found = (pos < current.size) & (current[np.minimum(pos, current.size - 1)] == ids)
    return pos, found


def missing(index: Any, ids: np.ndarray) -> np.ndarray:
    """The ids the index does not hold."""
    ids = np.asarray(ids, dtype=np.int64)
    return ids[~find(index, ids)[1]]


def metadata_rows(index: Any, ids: np.ndarray) -> pa.Table | None:
    """The metadata rows of `ids` in the order given (None when the index keeps no metadata);
    an id the index does not hold raises UnknownIdError."""
    if index.metadata is None:
        return None
    pos, found = find(index, ids)
    if not found.all():
        raise UnknownIdError(f"id {np.asarray(ids)[~found][0]} is not in the index")
    return index.metadata.take(pa.array(pos, pa.int64()))
