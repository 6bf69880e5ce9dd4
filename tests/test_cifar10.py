"""CIFAR-10 archive reader and its two protocols, on a small archive written here (same layout as the
shared one) and, when present, on the shared copy."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from hashsearch.datasets import data_root
from hashsearch.datasets.cifar10 import CIFAR10_FILE, Cifar10Archive, cifar10_split
from hashsearch.errors import InvalidInputError

CLASSES = np.array(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])


def write_archive(root, per_class: int = 2, size: int = 32, drop: str | None = None):
    """A CIFAR-10-shaped archive of flat-colour JPEGs (class c has red level 25 * c); returns the pixels."""
    rng = np.random.default_rng(0)
    blobs, labels, paths, pixels = [], [], [], []
    for c in range(10):
        for k in range(per_class):
            img = np.zeros((size, size, 3), np.uint8)
            img[..., 0], img[..., 1] = 25 * c, rng.integers(0, 256)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=95)
            blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
            labels.append(c)
            paths.append(f"{'test' if k == 0 else 'train'}/{CLASSES[c]}/{k:04d}.jpg")
            pixels.append(img)
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    arrays = dict(jpeg=np.concatenate(blobs), offsets=offsets, path=np.array(paths), label=np.array(labels, np.uint8),
                  is_test=np.array([p.startswith("test") for p in paths]), class_names=CLASSES)
    if drop:
        arrays.pop(drop)
    (root / CIFAR10_FILE).parent.mkdir(parents=True, exist_ok=True)
    np.savez(root / CIFAR10_FILE, **arrays)
    return np.stack(pixels)


def test_archive_decodes_rows(tmp_path):
    pixels = write_archive(tmp_path)
    archive = Cifar10Archive(tmp_path)
    assert len(archive) == 20 and archive.class_names[8] == "ship"
    got = archive.decode_rows(np.array([5, 0, 19]))
    assert got.shape == (3, 3, 32, 32) and got.dtype == np.uint8
    expected = pixels[[5, 0, 19]].transpose(0, 3, 1, 2).astype(int)
    assert np.abs(got.astype(int) - expected).max() <= 8  # JPEG error only
    assert archive.paths[19] == "train/truck/0001.jpg" and archive.is_test[18]


def test_archive_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar10_jpeg_bytes.npz"):
        Cifar10Archive(tmp_path)
    write_archive(tmp_path, drop="is_test")
    with pytest.raises(InvalidInputError, match="missing is_test"):
        Cifar10Archive(tmp_path)
    write_archive(tmp_path, size=16)
    with pytest.raises(InvalidInputError, match="not 32x32"):
        Cifar10Archive(tmp_path).decode_rows([0])


def test_protocol_a_counts_disjoint_and_seeded():
    label = np.repeat(np.arange(10), 700)
    rng = np.random.default_rng(3)
    label = label[rng.permutation(len(label))]
    split = cifar10_split(label, np.zeros(len(label), bool), "a", seed=7)
    assert np.bincount(label[split.query]).tolist() == [100] * 10
    assert np.bincount(label[split.train]).tolist() == [500] * 10
    assert len(split.database) == len(label) - 1000
    assert not np.intersect1d(split.query, split.database).size
    assert np.isin(split.train, split.database).all()
    again = cifar10_split(label, np.zeros(len(label), bool), "a", seed=7)
    assert np.array_equal(split.query, again.query) and np.array_equal(split.train, again.train)
    other = cifar10_split(label, np.zeros(len(label), bool), "a", seed=8)
    assert not np.array_equal(split.query, other.query)


def test_protocol_b_is_the_official_split():
    label = np.arange(30) % 10
    is_test = np.arange(30) >= 20
    split = cifar10_split(label, is_test, "b")
    assert split.query.tolist() == list(range(20, 30))
    assert split.train.tolist() == split.database.tolist() == list(range(20))
    with pytest.raises(InvalidInputError, match="protocol"):
        cifar10_split(label, is_test, "c")
    with pytest.raises(InvalidInputError, match="fewer than"):
        cifar10_split(label, is_test, "a")


SHARED = data_root() / CIFAR10_FILE


@pytest.mark.skipif(not SHARED.is_file(), reason="shared CIFAR-10 archive absent")
def test_shared_archive_has_the_documented_layout():
    archive = Cifar10Archive()
    assert len(archive) == 60000 and archive.is_test.sum() == 10000
    assert np.bincount(archive.label[~archive.is_test]).tolist() == [5000] * 10
    split = cifar10_split(archive.label, archive.is_test, "a")
    assert len(split.query) == 1000 and len(split.train) == 5000 and len(split.database) == 59000
    assert archive.decode_rows(split.query[:4]).shape == (4, 3, 32, 32)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_file(), reason="shared CIFAR-10 archive absent")
def test_load_by_name_decodes_everything():
    from hashsearch.datasets import load, standard_split

    data = load("cifar10")
    assert data.images.shape == (60000, 3, 32, 32) and data.images.dtype == np.float32
    assert 0 <= data.images.min() and data.images.max() <= 1
    assert data.label_names[0] == "airplane" and data.item_names[0].endswith(".jpg")
    assert len(standard_split(data).query) == 1000
