"""HammingIndex: the three backends return exactly what a brute-force scan returns, ids included.
segment_rows=1 seals every add into a segment searched by the backend under test (not the scan of
the growing segment)."""
import faiss
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from hashsearch.codes import hamming_bruteforce
from hashsearch.errors import InvalidInputError, UnknownIdError
from hashsearch.index import PAD_DISTANCE, HammingIndex
from hashsearch.storage import StoredIndex
from test_kernels import code_sets
from conftest import examples

BACKENDS = [("numba", {}), ("faiss", {}), ("faiss", {"nhash": 2}), ("mih", {}), ("mih", {"probe_cost": 0.01})]


def oracle(q, db, ids, k, r):
    """Top-k (min(k, n) columns) and radius results by brute force, ties by ascending id."""
    full = hamming_bruteforce(q, db)
    k = min(k, len(db))
    D = np.full((len(q), k), PAD_DISTANCE, np.int32)
    I = np.full((len(q), k), -1, np.int64)
    lims, dist, out = [0], [], []
    for i in range(len(q)):
        order = np.lexsort((ids, full[i]))
        top = order[:k]
        D[i, :top.size], I[i, :top.size] = full[i][top], ids[top]
        inside = order[full[i][order] <= r]
        dist.append(full[i][inside])
        out.append(ids[inside])
        lims.append(lims[-1] + inside.size)
    return D, I, np.array(lims), np.concatenate(dist), np.concatenate(out)


def check(index, q, db, ids, k, r):
    D, I, lims, dist, out = oracle(q, db, ids, k, r)
    d, i = index.search(q, k)
    assert d.dtype == np.int32 and i.dtype == np.int64
    assert (d == D).all() and (i == I).all()
    l2, d2, i2 = index.range_search(q, r)
    assert (l2 == lims).all() and (d2 == dist).all() and (i2 == out).all()


@pytest.mark.parametrize("backend,params", BACKENDS)
@settings(max_examples=examples(25), deadline=None)
@given(data=code_sets(max_n=200), k=st.integers(1, 210), r=st.integers(0, 1024), seed=st.integers(0, 99))
def test_backends_match_bruteforce_with_custom_ids_and_removal(backend, params, data, k, r, seed):
    nbits, q, db = data
    r = min(r, nbits) if backend == "numba" or r < 8 else r % 8  # keep probing backends quick
    rng = np.random.default_rng(seed)
    ids = rng.permutation(10 * len(db) + 1)[:len(db)]
    index = HammingIndex(nbits, backend, segment_rows=1, **params)
    half = len(db) // 2
    index.add(db[:half], ids[:half])
    index.add(db[half:], ids[half:])
    assert len(index) == index.ntotal == len(db)
    check(index, q, db, ids, k, r)
    gone = ids[::3]
    assert index.remove(gone) == gone.size
    keep = np.ones(len(db), bool)
    keep[::3] = False
    check(index, q, db[keep], ids[keep], k, r)


def test_k_above_n_gives_n_columns_and_padding_only_where_a_filter_leaves_fewer():
    rng = np.random.default_rng(0)
    db = rng.integers(0, 256, (3, 8), dtype=np.uint8)
    flat = faiss.IndexBinaryFlat(64)
    flat.add(db)
    D, I = flat.search(db[:2], 3)
    for backend, params in BACKENDS:
        index = HammingIndex(64, backend, segment_rows=1, **params)
        index.add(db)
        d, i = index.search(db[:2], 10**12)  # never allocates for the k asked
        assert (d == D).all() and (i == I).all(), backend
        d, i = index.search(db[:2], 6, filter=[1])
        assert i.shape == (2, 3) and (i[:, 0] == 1).all() and (i[:, 1:] == -1).all()
        assert (d[:, 1:] == PAD_DISTANCE).all()


@pytest.mark.parametrize("backend,params", BACKENDS)
def test_empty_index_and_empty_queries(backend, params):
    index = HammingIndex(16, backend, segment_rows=1, **params)
    q = np.zeros((2, 2), np.uint8)
    d, i = index.search(q, 3)
    assert d.shape == i.shape == (2, 0)
    lims, dist, ids = index.range_search(q, 16)
    assert lims.tolist() == [0, 0, 0] and dist.size == ids.size == 0
    index.add(np.zeros((1, 2), np.uint8))
    assert index.search(np.zeros((0, 2), np.uint8), 2)[0].shape == (0, 1)  # min(k, len) columns
    assert index.search(np.zeros(2, np.uint8), 2)[1].tolist() == [[0]]  # one code as a 1-D array


def test_radius_is_inclusive_at_the_boundary():
    db = np.array([[0b0000_0000], [0b0000_0111], [0b0000_1111]], np.uint8)
    for backend, params in BACKENDS:
        index = HammingIndex(8, backend, segment_rows=1, **params)
        index.add(db)
        lims, dist, ids = index.range_search(np.zeros((1, 1), np.uint8), 3)
        assert dist.tolist() == [0, 3] and ids.tolist() == [0, 1], backend


def test_default_ids_continue_after_the_largest():
    index = HammingIndex(8)
    index.add(np.zeros((2, 1), np.uint8))
    index.add(np.ones((1, 1), np.uint8), ids=[10])
    index.add(np.ones((2, 1), np.uint8))
    assert index.ids.tolist() == [0, 1, 10, 11, 12]
    index.add(np.full((1, 1), 3, np.uint8), ids=[5])  # out of order: kept sorted by id
    assert index.ids.tolist() == [0, 1, 5, 10, 11, 12]
    assert index.codes[2, 0] == 3


def test_bad_inputs_raise_errors_that_name_the_problem():
    index = HammingIndex(16)
    index.add(np.zeros((3, 2), np.uint8))
    with pytest.raises(InvalidInputError, match="uint8"):
        index.add(np.zeros((1, 2), np.int32))
    with pytest.raises(InvalidInputError, match="nbits is 16"):
        index.add(np.zeros((1, 3), np.uint8))
    with pytest.raises(InvalidInputError, match="duplicate id 1"):
        index.add(np.zeros((1, 2), np.uint8), ids=[1])
    with pytest.raises(InvalidInputError, match="duplicate id 7"):
        index.add(np.zeros((2, 2), np.uint8), ids=[7, 7])
    with pytest.raises(InvalidInputError, match="non-negative"):
        index.add(np.zeros((1, 2), np.uint8), ids=[-4])
    with pytest.raises(InvalidInputError, match="ids must be a 1-D array of 2"):
        index.add(np.zeros((2, 2), np.uint8), ids=[9])
    with pytest.raises(InvalidInputError, match="k must be"):
        index.search(np.zeros((1, 2), np.uint8), 0)
    with pytest.raises(InvalidInputError, match="radius"):
        index.range_search(np.zeros((1, 2), np.uint8), -1)
    with pytest.raises(InvalidInputError, match="queries"):
        index.search(np.zeros((1, 4), np.uint8), 1)
    with pytest.raises(UnknownIdError, match="id 42"):
        index.remove([0, 42])
    assert len(index) == 3  # nothing removed
    with pytest.raises(InvalidInputError, match="unknown backend"):
        HammingIndex(16, "annoy")
    with pytest.raises(InvalidInputError, match="takes no parameter 'm'"):
        HammingIndex(16, "numba", m=2)
    with pytest.raises(InvalidInputError, match="multiple of 8"):
        HammingIndex(12)


def test_metadata_follows_its_codes():
    index = HammingIndex(8)
    index.add(np.array([[1], [2]], np.uint8), ids=[5, 9], metadata={"name": ["a", "b"]})
    index.add(np.array([[3]], np.uint8), ids=[7], metadata=pa.table({"name": ["c"]}))
    assert index.metadata.column("name").to_pylist() == ["a", "c", "b"]
    index.remove([5])
    assert index.metadata.column("name").to_pylist() == ["c", "b"]
    with pytest.raises(InvalidInputError, match="metadata"):
        index.add(np.array([[4]], np.uint8))
    with pytest.raises(InvalidInputError, match="rows"):
        index.add(np.array([[4]], np.uint8), metadata={"name": ["x", "y"]})


@pytest.mark.parametrize("backend,params", BACKENDS)
@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_then_add_and_remove(tmp_path, backend, params, mmap):
    rng = np.random.default_rng(3)
    db = rng.integers(0, 256, (300, 4), dtype=np.uint8)
    ids = rng.permutation(1000)[:300]
    index = HammingIndex(32, backend, segment_rows=1, **params)
    index.add(db, ids, metadata={"row": np.arange(300)})
    index.save(tmp_path / "ix")
    loaded = HammingIndex.load(tmp_path / "ix", mmap=mmap)
    assert (loaded.nbits, loaded.backend, loaded.params, len(loaded)) == (32, backend, index.params, 300)
    q = db[:5]
    check(loaded, q, db, ids, 10, 4)
    assert loaded.metadata.equals(index.metadata)
    more = rng.integers(0, 256, (20, 4), dtype=np.uint8)
    loaded.add(more, ids=np.arange(2000, 2020), metadata={"row": np.arange(300, 320)})
    loaded.remove(ids[:50])
    check(loaded, q, np.vstack([db[50:], more]), np.concatenate([ids[50:], np.arange(2000, 2020)]), 10, 4)


def test_plain_range_ids_are_not_stored(tmp_path, monkeypatch):
    index = HammingIndex(64)
    index.add(np.zeros((1000, 8), np.uint8), ids=np.arange(5, 1005))
    index.compact()  # seals the growing segment, whose ids are a plain range
    assert index.nbytes == 8000  # no id array: overhead 0 over the raw codes
    index.save(tmp_path / "ix")
    # loading must not build the range of ids (800 MB at 100M codes)
    monkeypatch.setattr(StoredIndex, "ids", property(lambda self: pytest.fail("StoredIndex.ids was built")))
    loaded = HammingIndex.load(tmp_path / "ix")
    assert loaded.nbytes == 8000 and loaded.ids.tolist() == list(range(5, 1005))
    assert loaded.search(np.zeros((1, 8), np.uint8), 2)[1].tolist() == [[5, 6]]


def test_many_small_adds_grow_by_doubling():
    """1,000 adds of one code each (ids from a range, then explicit) give what one add gives, with
    O(log n) reallocations of the buffer, also after loading a read-only memory map."""
    rng = np.random.default_rng(4)
    db = rng.integers(0, 256, (1000, 8), dtype=np.uint8)
    index = HammingIndex(64)
    buffers = set()
    for i in range(1000):
        index.add(db[i:i + 1], ids=None if i < 500 else [2 * i])  # all in the growing segment
        buffers.add(id(index._g_codes._data))
    assert len(buffers) <= 12  # capacity 1, 2, 4, ..., 1024
    ids = np.concatenate([np.arange(500), 2 * np.arange(500, 1000)])
    assert (index.codes == db).all() and (index.ids == ids).all()
    check(index, db[:3], db, ids, 5, 20)


@pytest.mark.parametrize("backend,params", BACKENDS)
@pytest.mark.parametrize("nbits", [8, 64, 512])
def test_edge_cases_match_bruteforce(backend, params, nbits):
    """n = 0 and 1, all-equal codes, duplicates, k > n, r = 0 and r = nbits, for every backend."""
    rng = np.random.default_rng(nbits)
    pool = rng.integers(0, 256, (3, nbits // 8), dtype=np.uint8)
    cases = [pool[:0], pool[:1], np.repeat(pool[:1], 7, axis=0), pool[rng.integers(0, 3, 40)]]
    for db in cases:
        index = HammingIndex(nbits, backend, segment_rows=1, **params)
        index.add(db)
        q = np.ascontiguousarray(np.vstack([pool, ~pool[:1]]))  # ~: the farthest code, at distance nbits
        for r in (0, 1, nbits):
            check(index, q, db, np.arange(len(db)), len(db) + 3, r)


def test_real_sift_codes_agree_across_backends():
    """64- and 256-bit sign-of-random-projection codes of the real siftsmall descriptors."""
    from hashsearch.datasets import data_root
    from hashsearch.datasets.sift import load_sift_small
    from hashsearch.codes import encode_sign

    if not (data_root() / "siftsmall_texmex").is_dir():
        pytest.skip("siftsmall data not present")
    sift = load_sift_small()
    rng = np.random.default_rng(0)
    for nbits in (64, 256):
        proj = rng.standard_normal((128, nbits)).astype(np.float32)
        mean = sift.base.mean(axis=0)
        db = encode_sign((sift.base - mean) @ proj)
        q = encode_sign((sift.queries[:20] - mean) @ proj)
        for backend, params in BACKENDS:
            index = HammingIndex(nbits, backend, segment_rows=1, **params)
            index.add(db)
            check(index, q, db, np.arange(len(db)), 100, nbits // 8)
