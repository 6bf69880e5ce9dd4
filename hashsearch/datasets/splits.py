"""Retrieval splits (query / train / database row indices) and each data set's standard protocol.

Protocols (by `PairedDataset.name`, matched by `protocol_name`: FLICKR-25K.mat -> mirflickr25k):
  wikipedia        the given split: 693 test pairs are the queries, the 2,173 train pairs are both
                   the training set and the database (any file with _tr/_te variables likewise).
  mirflickr25k     DCMH: 2,000 random queries, database = all the rest, 10,000 training pairs drawn
  iaprtc12         from the database.
  nuswide          2,100 queries, 10,500 training pairs from the database. The shared copy has only
                   10,500 items, so its database is 8,400 and training is capped at the database
                   (train = database); a warning says so.
  mnist5k          100 queries per class (1,000), database = the other 4,000, train = database.
  digits           50 queries per class (500), database = the other 1,297, train = database.
  anything else    10% of the items (at most 2,000) as queries, train = database (at most 10,000).
All draws use numpy's default_rng(seed); index arrays are sorted int64; queries never enter the
database or the training set.
"""
from __future__ import annotations

import warnings

import numpy as np

from hashsearch.datasets import PairedDataset, Split
from hashsearch.errors import InvalidInputError

RANDOM_PROTOCOLS = {"mirflickr25k": (2000, 10000), "iaprtc12": (2000, 10000), "nuswide": (2100, 10500)}
PER_CLASS_PROTOCOLS = {"mnist5k": 100, "digits": 50}
PROTOCOL_PREFIXES = {"mirflickr": "mirflickr25k", "flickr": "mirflickr25k", "iapr": "iaprtc12", "nuswide": "nuswide",
                     "mnist": "mnist5k"}


def protocol_name(name: str) -> str:
    """The protocol a data set name refers to: lower case, letters and digits only, so that files
    named FLICKR-25K.mat, IAPR-TC12.mat or NUS-WIDE.mat get their literature protocol."""
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    for prefix, protocol in PROTOCOL_PREFIXES.items():
        if key.startswith(prefix):
            return protocol
    return key


def _train_from(database: np.ndarray, n_train: int | None, rng: np.random.Generator) -> np.ndarray:
    if n_train is None or n_train >= len(database):
        if n_train is not None and n_train > len(database):
            warnings.warn(
                f"asked for {n_train} training items but the database has {len(database)}: training on the whole database",
                stacklevel=3,
            )
        return database.copy()
    if n_train < 1:
        raise InvalidInputError(f"n_train must be positive, got {n_train}")
    return np.sort(rng.choice(database, size=n_train, replace=False))


def random_split(n: int, n_query: int, n_train: int | None = None, seed: int = 0) -> Split:
    """`n_query` random queries, the rest the database, `n_train` items drawn from the database
    (None: the whole database)."""
    if not 1 <= n_query < n:
        raise InvalidInputError(f"n_query must be in 1..{n - 1} for {n} items, got {n_query}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n).astype(np.int64)
    query, database = np.sort(perm[:n_query]), np.sort(perm[n_query:])
    return Split(query=query, train=_train_from(database, n_train, rng), database=database)


def per_class_split(labels: np.ndarray, queries_per_class: int, n_train: int | None = None, seed: int = 0) -> Split:
    """`queries_per_class` random queries from each class of single-label (one-hot) data; the rest is
    the database, and training items come from the database (None: all of it)."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or (labels.sum(axis=1) != 1).any():
        raise InvalidInputError("per-class splits need one-hot labels (exactly one class per item)")
    rng = np.random.default_rng(seed)
    classes = labels.argmax(axis=1)
    picks = []
    for c in range(labels.shape[1]):
        members = np.flatnonzero(classes == c)
        if len(members) <= queries_per_class:
            raise InvalidInputError(f"class {c} has {len(members)} items, not more than {queries_per_class} queries")
        picks.append(rng.choice(members, size=queries_per_class, replace=False))
    query = np.sort(np.concatenate(picks)).astype(np.int64)
    database = np.setdiff1d(np.arange(len(labels), dtype=np.int64), query)
    return Split(query=query, train=_train_from(database, n_train, rng), database=database)


def standard_split(
    dataset: PairedDataset,
    seed: int = 0,
    *,
    n_query: int | None = None,
    n_train: int | None = None,
    queries_per_class: int | None = None,
) -> Split:
    """The data set's standard protocol (module docstring); the keyword arguments override it."""
    n, protocol = len(dataset), protocol_name(dataset.name)
    if queries_per_class is not None:
        return per_class_split(dataset.labels, queries_per_class, n_train, seed)
    if n_query is None and n_train is None:
        if dataset.predefined is not None:
            return dataset.predefined
        if protocol in PER_CLASS_PROTOCOLS:
            return per_class_split(dataset.labels, PER_CLASS_PROTOCOLS[protocol], None, seed)
    fallback_query = min(2000, max(1, n // 10))
    fallback_train = 10000 if n - fallback_query > 10000 else None
    default_query, default_train = RANDOM_PROTOCOLS.get(protocol, (fallback_query, fallback_train))
    return random_split(
        n,
        n_query if n_query is not None else default_query,
        n_train if n_train is not None else default_train,
        seed,
    )
