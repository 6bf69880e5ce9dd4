"""CIFAR-10 (60,000 32x32 colour images, 10 classes) from the shared JPEG archive, and its two
retrieval protocols of the deep hashing literature.

The archive (cifar10_jpeg/cifar10_jpeg_bytes.npz, see its PROVENANCE.txt) holds the JPEG files back
to back with offsets, paths, labels, the official test flag and the class names. Pixels are decoded
with Pillow; `decode_rows` decodes only the rows asked for (feature extraction goes chunk by chunk).

Protocols (seeded, queries never in the database or the training set):
  (a) DPSH / DSDH: 100 queries per class (1,000), 500 training images per class (5,000) from the rest,
      database = the other 59,000 (training images included); mAP over the whole database.
  (b) the 10,000 official test images are the queries, the 50,000 training images the training set
      and the database; mAP@1000.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from hashsearch.datasets import PairedDataset, Split, data_root
from hashsearch.datasets.checks import as_labels
from hashsearch.errors import InvalidInputError

CIFAR10_FILE = Path("cifar10_jpeg") / "cifar10_jpeg_bytes.npz"
ARCHIVE_KEYS = ("jpeg", "offsets", "path", "label", "is_test", "class_names")
PROTOCOLS = {"a": (100, 500), "b": None}  # (queries per class, training items per class); b: the official split
MAP_TOPK = {"a": None, "b": 1000}  # mAP over the whole database (a) or the top 1,000 (b)


class Cifar10Archive:
    """The shared archive's arrays, checked on load: JPEG bytes, offsets, paths, labels, test flags."""

    def __init__(self, root: str | os.PathLike | None = None):
        path = (Path(root) if root is not None else data_root()) / CIFAR10_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no such data file: {path} (set HASHSEARCH_DATA to the shared data folder)")
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ARCHIVE_KEYS if k not in z.files]
            if missing:
                raise InvalidInputError(f"{path}: not a CIFAR-10 JPEG archive, missing {', '.join(missing)}")
            self.jpeg, self.offsets = z["jpeg"], z["offsets"]
            self.paths, self.label = z["path"].astype(str), z["label"].astype(np.int64)
            self.is_test, self.class_names = z["is_test"].astype(bool), tuple(z["class_names"].astype(str))
        n = len(self.label)
        if (len(self.offsets) != n + 1 or len(self.paths) != n or len(self.is_test) != n or self.offsets[0] != 0
                or self.offsets[-1] != len(self.jpeg) or (np.diff(self.offsets) <= 0).any()):
            raise InvalidInputError(f"{path}: offsets, paths, labels and test flags do not describe {n} JPEG files")
        if len(self.class_names) != 10 or self.label.min() < 0 or self.label.max() > 9:
            raise InvalidInputError(f"{path}: expected 10 classes with labels 0..9")
        self.source = path

    def __len__(self) -> int:
        return len(self.label)

    def decode_rows(self, rows: np.ndarray) -> np.ndarray:
        """Pixels of the given rows as uint8 (m, 3, 32, 32) RGB."""
        from PIL import Image

        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), 3, 32, 32), dtype=np.uint8)
        for k, i in enumerate(rows):
            data = self.jpeg[self.offsets[i]:self.offsets[i + 1]].tobytes()
            img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            if img.shape != (32, 32, 3):
                raise InvalidInputError(f"{self.source}: image {self.paths[i]} is {img.shape[1]}x{img.shape[0]}, not 32x32")
            out[k] = img.transpose(2, 0, 1)
        return out


def load_cifar10(root: str | os.PathLike | None = None, progress: bool = True) -> PairedDataset:
    """All 60,000 images as float32 (n, 3, 32, 32) pixels in [0, 1] (decoded here, ~740 MB), one-hot
    labels, class names, file paths as item names, and protocol (a)'s split as `predefined`."""
    from tqdm.auto import tqdm

    archive = Cifar10Archive(root)
    images = np.empty((len(archive), 3, 32, 32), dtype=np.float32)
    step = 5000
    for start in tqdm(range(0, len(archive), step), desc="decoding CIFAR-10", unit_scale=step, disable=not progress):
        rows = np.arange(start, min(start + step, len(archive)))
        images[rows] = archive.decode_rows(rows) / np.float32(255)
    return PairedDataset(name="cifar10", images=images, texts=None, labels=as_labels(archive.label),
                         predefined=cifar10_split(archive.label, archive.is_test, "a"),
                         label_names=archive.class_names, item_names=archive.paths)


def cifar10_split(label: np.ndarray, is_test: np.ndarray, protocol: str = "a", seed: int = 0) -> Split:
    """Protocol (a) or (b) of the module docstring as row indices (sorted int64)."""
    label, is_test = np.asarray(label), np.asarray(is_test, dtype=bool)
    if protocol not in PROTOCOLS:
        raise InvalidInputError(f"unknown CIFAR-10 protocol {protocol!r}: give one of {', '.join(PROTOCOLS)}")
    if protocol == "b":
        query, train = np.flatnonzero(is_test), np.flatnonzero(~is_test)
        return Split(query=query.astype(np.int64), train=train.astype(np.int64), database=train.astype(np.int64))
    n_query, n_train = PROTOCOLS[protocol]
    rng = np.random.default_rng(seed)
    queries, trains = [], []
    for c in np.unique(label):
        members = rng.permutation(np.flatnonzero(label == c))
        if len(members) < n_query + n_train:
            raise InvalidInputError(f"class {c} has {len(members)} images, fewer than {n_query} queries + {n_train} training")
        queries.append(members[:n_query])
        trains.append(members[n_query:n_query + n_train])
    query = np.sort(np.concatenate(queries)).astype(np.int64)
    database = np.setdiff1d(np.arange(len(label), dtype=np.int64), query)
    return Split(query=query, train=np.sort(np.concatenate(trains)).astype(np.int64), database=database)
