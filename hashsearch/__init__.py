"""hashsearch: near-neighbour search through learned binary codes.

Light names (codes, index, metrics) import at once; the torch learners load on first use, so
`import hashsearch` stays fast for users who only search.
"""
from __future__ import annotations

import importlib
from typing import Any

from hashsearch.codes import binarize, encode_sign, pack_bits, to_signs, unpack_bits, validate_codes
from hashsearch.errors import CorruptIndexError, HashsearchError, InvalidInputError, UnknownIdError
from hashsearch.index import HammingIndex

# name -> module that defines it, imported on first attribute access (PEP 562)
_LAZY = {
    "ShardedIndex": "hashsearch.sharded",
    "DCMH": "hashsearch.models.dcmh",
    "SCHN": "hashsearch.models.schn",
    "DPSH": "hashsearch.models.dpsh",
    "LSH": "hashsearch.models.baselines",
    "ITQ": "hashsearch.models.baselines",
    "CCAITQ": "hashsearch.models.baselines",
    "SCM": "hashsearch.models.baselines",
    "load_model": "hashsearch.models.training",
    "load_dataset": "hashsearch.datasets",
    "standard_split": "hashsearch.datasets",
    "mean_average_precision": "hashsearch.metrics",
    "precision_within_radius": "hashsearch.metrics",
    "pr_curve_by_radius": "hashsearch.metrics",
    "topk_precision_curve": "hashsearch.metrics",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'hashsearch' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return getattr(module, "load" if name == "load_dataset" else name)


__all__ = [
    "HammingIndex", "binarize", "encode_sign", "pack_bits", "to_signs", "unpack_bits", "validate_codes",
    "CorruptIndexError", "HashsearchError", "InvalidInputError", "UnknownIdError", *_LAZY,
]
__version__ = "0.1.0"
