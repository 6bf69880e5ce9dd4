"""Paired image-text data sets: wikipedia, MIRFLICKR-25K and NUS-WIDE, and any .mat/.npz/.parquet file
laid out the way the cross-modal hashing literature ships them.

Variable names looked up, first match wins (case-sensitive):
  images  IAll, XAll, images, image, img, I            (features (n, d) or pixels, any axis order)
  texts   YAll, TAll, texts, text, tags, txt, T, Y    (bag-of-words / topic vectors (n, t))
  labels  LAll, labels, label, L                      (multi-hot (n, c), or one category per item)
or, for each role, a pair <I|T|L>_tr + <I|T|L>_te (as in wikiData.mat) or _db + _te: the rows are
concatenated train/database first, then test, and the file's own split (test = queries, train =
database) is kept as `PairedDataset.predefined`. Images are optional; labels and texts-or-images are not.
The words of bag-of-words text columns (`PairedDataset.text_vocabulary`) come from a string array in an
.npz (VOCABULARY_NAMES) or, for MIRFLICKR and NUS-WIDE, their vocabulary file beside the data file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hashsearch.datasets import PairedDataset, Split, data_root
from hashsearch.datasets.checks import as_features, as_images, as_labels, orient_labels
from hashsearch.datasets.formats import read_arrays
from hashsearch.errors import InvalidInputError

ROLE_NAMES = {
    "images": ("IAll", "XAll", "images", "image", "img", "I"),
    "texts": ("YAll", "TAll", "texts", "text", "tags", "txt", "T", "Y"),
    "labels": ("LAll", "labels", "label", "L"),
}
ROLE_PREFIX = {"images": "I", "texts": "T", "labels": "L"}
SPLIT_SUFFIXES = (("_tr", "_te"), ("_db", "_te"))
VOCABULARY_NAMES = ("tag_vocab", "vocabulary", "vocab")

WIKIPEDIA_FILE = Path("wikipedia") / "wikiData.mat"
# Rasiwasia et al.'s 10 categories in the order of their numbers 1..10 (per-class counts of wikiData.mat,
# 138/272/.../347 training and 34/88/.../104 test pairs, match the original categories.list).
WIKIPEDIA_CATEGORIES = ("art & architecture", "biology", "geography & places", "history", "literature & theatre",
                        "media", "music", "royalty & nobility", "sport & recreation", "warfare")
MIRFLICKR_FILE = Path("mirflickr25k_dcmh20015_tags_labels") / "mirflickr25k_20015_tags1386_labels24.npz"
# The 24 label columns: the alphabetical order of MIRFLICKR's potential-label files. The DCMH copy does not
# document it; the per-label counts fit it (PROVENANCE), and so do the tags: for each of dog, sunset, clouds,
# beach (sea), baby, car, flower, night, bird, food, tree and portrait, the label most over-represented
# among the items with that tag is the one named here (e.g. 94 % of items tagged dog have label dog, 3 % overall).
MIRFLICKR_LABELS = ("animals", "baby", "bird", "car", "clouds", "dog", "female", "flower", "food", "indoor", "lake",
                    "male", "night", "people", "plant_life", "portrait", "river", "sea", "sky", "structures",
                    "sunset", "transport", "tree", "water")
MIRFLICKR_VOCABULARY = "common_tags.txt"  # MIRFLICKR's doc/common_tags.txt: "<tag> <count>" lines, column order
NUSWIDE_FILE = Path("nuswide10500_tags_labels") / "nuswide10500_tags1000_labels21.npz"
NUSWIDE_VOCABULARY = "TagList1k.txt"  # one tag per line, column order


def _find(arrays: dict[str, np.ndarray], role: str) -> tuple[np.ndarray, int | None] | None:
    """The array for `role` and, if it came as a (train, test) pair, the number of train rows."""
    for name in ROLE_NAMES[role]:
        if name in arrays:
            return arrays[name], None
    prefix = ROLE_PREFIX[role]
    for first, second in SPLIT_SUFFIXES:
        a, b = arrays.get(prefix + first), arrays.get(prefix + second)
        if a is not None and b is not None:
            a, b = np.asarray(a), np.asarray(b)
            if role == "labels" and a.ndim == 2 and a.shape[0] == 1 and b.ndim == 2 and b.shape[0] == 1:
                a, b = a.T, b.T  # category row vectors
            if a.ndim != b.ndim or a.shape[1:] != b.shape[1:]:
                raise InvalidInputError(
                    f"{prefix}{first} {a.shape} and {prefix}{second} {b.shape} disagree in shape beyond the rows"
                )
            return np.concatenate([a, b]), len(a)
    return None


def _names_tried(role: str) -> str:
    pairs = [f"{ROLE_PREFIX[role]}{a}+{ROLE_PREFIX[role]}{b}" for a, b in SPLIT_SUFFIXES]
    return ", ".join(ROLE_NAMES[role] + tuple(pairs))


def paired_from_arrays(arrays: dict[str, np.ndarray], name: str, source: str = "arrays") -> PairedDataset:
    """Assemble a `PairedDataset` from named arrays (see the module docstring for the names)."""
    found = {role: _find(arrays, role) for role in ROLE_NAMES}
    available = ", ".join(f"{k} {np.shape(v)}" for k, v in arrays.items()) or "nothing"
    if found["labels"] is None:
        raise InvalidInputError(f"{source}: no label variable (tried {_names_tried('labels')}); it holds {available}")
    if found["images"] is None and found["texts"] is None:
        raise InvalidInputError(
            f"{source}: neither images (tried {_names_tried('images')}) nor texts (tried {_names_tried('texts')}); "
            f"it holds {available}"
        )
    others = [found[role][0] for role in ("images", "texts") if found[role] is not None]
    labels = as_labels(orient_labels(found["labels"][0], others), name=f"{source}: labels")
    n = len(labels)
    images = as_images(found["images"][0], n, f"{source}: images") if found["images"] else None
    texts = as_features(found["texts"][0], n, f"{source}: texts") if found["texts"] else None
    n_train = {v[1] for v in found.values() if v is not None}
    if len(n_train) > 1:
        raise InvalidInputError(f"{source}: modalities disagree on the train/test boundary (train rows {sorted(n_train, key=str)})")
    predefined = None
    (boundary,) = n_train
    if boundary is not None:
        train = np.arange(boundary, dtype=np.int64)
        predefined = Split(query=np.arange(boundary, n, dtype=np.int64), train=train, database=train.copy())
    return PairedDataset(name=name, images=images, texts=texts, labels=labels, predefined=predefined)


def read_vocabulary(path: Path, beside: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The words of the text columns: a string array named in VOCABULARY_NAMES inside an .npz, else
    the first field of each line of a file named in `beside` in the data file's folder; None if neither."""
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as z:
            name = next((n for n in VOCABULARY_NAMES if n in z.files), None)
            if name is not None:
                return tuple(str(w) for w in z[name])
    for file in (path.parent / b for b in beside):
        if file.is_file():
            return tuple(line.split()[0] for line in file.read_text(encoding="utf-8").splitlines() if line.strip())
    return None


def load_paired_file(path: str | os.PathLike, name: str | None = None,
                     vocabulary_files: tuple[str, ...] = ()) -> PairedDataset:
    """A paired data set from a .mat (v5 or v7.3), .npz or .parquet file, with its text vocabulary
    where it has one (see `read_vocabulary`; `vocabulary_files` are looked for beside `path`)."""
    path = Path(path)
    dataset = paired_from_arrays(read_arrays(path), name=name or path.stem, source=str(path))
    words = read_vocabulary(path, vocabulary_files)
    if words is not None and dataset.texts is not None:
        if len(words) != dataset.texts.shape[1]:
            raise InvalidInputError(f"{path}: the text vocabulary has {len(words)} words but the texts have "
                                    f"{dataset.texts.shape[1]} columns")
        dataset.text_vocabulary = words
    return dataset


def _resolve(path: str | os.PathLike | None, default: Path) -> Path:
    """`path` if given (a file, or a folder holding the default file name), else the shared data file."""
    if path is None:
        return data_root() / default
    path = Path(path)
    return path / default.name if path.is_dir() else path


def load_wikipedia(root: str | os.PathLike | None = None) -> PairedDataset:
    """Wikipedia (Rasiwasia et al. 2010): 2,866 pairs, 128-d SIFT BoW images, 10-d LDA texts, 10 classes.
    Rows 0..2172 are the given train set (= database), rows 2173..2865 the 693 test queries."""
    root = Path(root) if root is not None else data_root()
    dataset = load_paired_file(root / WIKIPEDIA_FILE, name="wikipedia")
    dataset.label_names = WIKIPEDIA_CATEGORIES
    return dataset


def load_mirflickr(path: str | os.PathLike | None = None) -> PairedDataset:
    """MIRFLICKR-25K as DCMH uses it (20,015 pairs, 1,386-d tags, 24 labels), with the tag vocabulary
    (the shared archive's, or common_tags.txt beside a user's file). The shared copy has no image
    features (images=None); a user's full FLICKR-25K.mat (IAll/YAll/LAll) loads with images. Label
    names: MIRFLICKR_LABELS, when there are 24 label columns."""
    dataset = load_paired_file(_resolve(path, MIRFLICKR_FILE), name="mirflickr25k",
                               vocabulary_files=(MIRFLICKR_VOCABULARY,))
    if dataset.labels.shape[1] == len(MIRFLICKR_LABELS):
        dataset.label_names = MIRFLICKR_LABELS
    return dataset


def load_nuswide(path: str | os.PathLike | None = None) -> PairedDataset:
    """NUS-WIDE (tags + 21 concept labels) with its tag vocabulary (TagList1k.txt beside a user's file).
    The shared copy: 10,500 items, 1,000-d tags, no images."""
    return load_paired_file(_resolve(path, NUSWIDE_FILE), name="nuswide", vocabulary_files=(NUSWIDE_VOCABULARY,))
