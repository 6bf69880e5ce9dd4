"""Kernels (popcount, linear-scan top-k and radius search) against the numpy brute-force oracle."""
import numba
import numpy as np
from hypothesis import given, settings, strategies as st

from hashsearch.codes import hamming_bruteforce
from hashsearch.kernels import scan
from hashsearch.kernels.popcount import as_words, popcount64, scan_words
from conftest import examples

WORD_TYPES = {numba.types.uint8, numba.types.uint16, numba.types.uint32, numba.types.uint64}

NBITS = [8, 16, 24, 64, 72, 128, 200, 512, 1024]


def oracle_topk(q, db, k):
    """(distances, positions) sorted by (distance, position), padded like FAISS."""
    full = hamming_bruteforce(q, db)
    d = np.full((len(q), k), scan.PAD_DISTANCE, np.int32)
    j = np.full((len(q), k), -1, np.int64)
    for i in range(len(q)):
        order = np.lexsort((np.arange(len(db)), full[i]))[:k]
        d[i, :order.size], j[i, :order.size] = full[i][order], order
    return d, j


def oracle_range(q, db, r):
    full = hamming_bruteforce(q, db)
    rows = [np.nonzero(full[i] <= r)[0] for i in range(len(q))]
    rows = [m[np.lexsort((m, full[i][m]))] for i, m in enumerate(rows)]
    lims = np.concatenate([[0], np.cumsum([m.size for m in rows])])
    pos = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    dist = np.concatenate([full[i][m] for i, m in enumerate(rows)]) if rows else np.zeros(0, np.int32)
    return lims, dist, pos


def scan_distances(w):
    """All (n, n) distances between the rows of words `w`, as the scan's top-n of every row gives them."""
    n = w.shape[0]
    d, j = scan.topk(w, w, n, 8 * w.itemsize * w.shape[1])
    full = np.empty((n, n), np.int32)
    np.put_along_axis(full, j, d, axis=1)
    return full


@st.composite
def code_sets(draw, max_n=300):
    """Query and database codes; often drawn from a tiny pool so that duplicates and ties abound."""
    nbits = draw(st.sampled_from(NBITS))
    n = draw(st.integers(0, max_n))
    nq = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    pool = draw(st.sampled_from([0, 1, 2, 5]))  # 0: uniform random codes
    if pool:
        base = rng.integers(0, 256, (pool, nbits // 8), dtype=np.uint8)
        db = base[rng.integers(0, pool, n)]
        q = base[rng.integers(0, pool, nq)]
    else:
        db = rng.integers(0, 256, (n, nbits // 8), dtype=np.uint8)
        q = rng.integers(0, 256, (nq, nbits // 8), dtype=np.uint8)
    return nbits, np.ascontiguousarray(q), np.ascontiguousarray(db)


def test_popcount_matches_numpy():
    x = np.random.default_rng(0).integers(0, 2**63, 1000, dtype=np.int64).view(np.uint64)
    x[:3] = [0, np.iinfo(np.uint64).max, 1 << 63]

    @numba.njit
    def counts(a):
        out = np.empty(a.size, np.int64)
        for i in range(a.size):
            out[i] = popcount64(a[i])
        return out

    assert (counts(x) == np.bitwise_count(x)).all()
    asm = "".join(counts.inspect_asm().values())
    assert "popcnt" in asm  # the hardware instruction, not a bit-twiddling loop


def test_scan_words_view_narrow_codes_and_pad_the_rest():
    rng = np.random.default_rng(2)
    for nbytes, dtype, view in ((1, np.uint8, True), (2, np.uint16, True), (3, np.uint64, False),
                                (4, np.uint32, True), (8, np.uint64, True), (12, np.uint64, False), (24, np.uint64, True)):
        a = rng.integers(0, 256, (7, nbytes), dtype=np.uint8)
        w = scan_words(a)
        assert w.dtype == dtype and np.shares_memory(w, a) == view and not w.flags.writeable
        assert (scan_distances(w) == hamming_bruteforce(a, a)).all()
        d, j = scan.topk(w[:2], w, 7, 8 * nbytes)
        assert (d == np.sort(hamming_bruteforce(a[:2], a), axis=1)).all()


def test_as_words_pads_without_changing_distances():
    rng = np.random.default_rng(1)
    for nbits in (8, 24, 72, 200):
        a = rng.integers(0, 256, (5, nbits // 8), dtype=np.uint8)
        w = as_words(a)
        assert w.dtype == np.uint64 and w.shape == (5, -(-nbits // 64))
        assert (scan_distances(w) == hamming_bruteforce(a, a)).all()


@settings(max_examples=examples(60), deadline=None)
@given(code_sets(), st.integers(1, 320))
def test_topk_matches_oracle(data, k):
    nbits, q, db = data
    d, j = scan.topk(scan_words(q), scan_words(db), k, nbits)
    ed, ej = oracle_topk(q, db, k)
    assert d.dtype == np.int32 and j.dtype == np.int64
    assert (d == ed).all() and (j == ej).all()


@settings(max_examples=examples(60), deadline=None)
@given(code_sets(), st.integers(0, 1024))
def test_range_search_matches_oracle(data, r):
    nbits, q, db = data
    r = min(r, nbits)
    lims, dist, pos = scan.range_search(scan_words(q), scan_words(db), r, nbits)
    el, ed, ep = oracle_range(q, db, r)
    assert (lims == el).all() and (dist == ed).all() and (pos == ep).all()


@settings(max_examples=examples(20), deadline=None)
@given(code_sets(), st.integers(1, 50), st.integers(2, 4))
def test_database_split_over_parts_merges_exactly(data, k, nparts):
    """The path a single query takes on many threads: the scan is split and the parts merged."""
    nbits, q, db = data
    d, j = scan._topk_parallel(scan_words(q), scan_words(db), k, nbits, 1, nparts)
    ed, ej = oracle_topk(q, db, k)
    assert (d == ed).all() and (j == ej).all()
    lims, dist, pos = scan._range_parallel(scan_words(q), scan_words(db), nbits // 3, nbits, 1, nparts)
    el, edist, epos = oracle_range(q, db, nbits // 3)
    assert (lims == el).all() and (dist == edist).all() and (pos == epos).all()


def test_topk_boundaries_hand_computed():
    db = np.array([[0b0000_0000], [0b1111_1111], [0b0000_0001], [0b0000_0001], [0b0000_0011]], np.uint8)
    q = np.array([[0b0000_0000]], np.uint8)
    d, j = scan.topk(scan_words(q), scan_words(db), 7, 8)
    assert d.tolist() == [[0, 1, 1, 2, 8, scan.PAD_DISTANCE, scan.PAD_DISTANCE]]
    assert j.tolist() == [[0, 2, 3, 4, 1, -1, -1]]
    lims, dist, pos = scan.range_search(scan_words(q), scan_words(db), 1, 8)  # inclusive radius
    assert lims.tolist() == [0, 3] and dist.tolist() == [0, 1, 1] and pos.tolist() == [0, 2, 3]
    lims, dist, pos = scan.range_search(scan_words(q), scan_words(db), 8, 8)
    assert pos.tolist() == [0, 2, 3, 4, 1]


def test_topk_on_long_scan_shrinks_threshold_exactly():
    """Enough rows that the candidate buffer is compacted many times; ties at the threshold."""
    rng = np.random.default_rng(2)
    db = rng.integers(0, 256, (20000, 8), dtype=np.uint8)
    db[::7] = db[3]
    q = np.ascontiguousarray(np.vstack([db[3], rng.integers(0, 256, (3, 8), dtype=np.uint8)]))
    d, j = scan.topk(scan_words(q), scan_words(db), 100, 64)
    ed, ej = oracle_topk(q, db, 100)
    assert (d == ed).all() and (j == ej).all()


def test_kernels_compile_once_for_memory_and_read_only_maps(tmp_path):
    """Codes in memory and codes memory-mapped read-only reach the kernels as one array type, masks (None,
    bool, writable and read-only bitmaps) as one mask type, and no kernel is compiled a second time for a
    literal argument: one compile (and cache entry) per word type."""
    from hashsearch import bitmaps, results
    from hashsearch.backends import get_backend
    from hashsearch.index import HammingIndex
    from hashsearch.kernels import mih

    rng = np.random.default_rng(5)
    db = rng.integers(0, 256, (3000, 8), dtype=np.uint8)
    writable = HammingIndex(64, "mih")
    writable.add(db)
    writable.save(tmp_path / "ix")
    mapped = HammingIndex.load(tmp_path / "ix")
    assert not mapped.codes.flags.writeable and not as_words(db).flags.writeable and not scan_words(db).flags.writeable
    for index in (writable, mapped):
        for backend in ("numba", "mih"):
            index.backend, index._engine = backend, None
            index.search(db[:3], 5)
            index.range_search(db[:3], 2)
            index.search(db[:1], 5000)  # MIH: grows the radius until it falls back to the scan
    bits = bitmaps.pack(rng.random(3000) < 0.5)
    for codes in (db, mapped.codes):
        for backend in ("numba", "mih"):
            searcher = get_backend(backend)(codes, 64)
            for mask in (None, bitmaps.as_bool(bits, 3000), bits, scan.read_only(bits)):
                searcher.search(db[:3], 5, mask=mask)
                searcher.range_search(db[:3], 2, mask=mask)
    kernels = [scan.range_task, scan._topk_task, scan._topk_tasks, scan._merge_parts, scan._collect_allowed,
               scan.emit_sorted, scan.sort_rows, mih._range_one, mih._probe_query, mih._append, mih._scan_one,
               mih.range_chunk, mih.knn_chunk, mih.range_segments, mih.substring_keys, results._merge_two_csr,
               results._merge_rows_csr, results._kway]
    # one signature per word type (other tests compile other widths): memory-mapped or not, masked or
    # not, literal argument or not, the same words (and a uint8 bitmap) reach the same compiled kernel
    def word_types(sig):
        return tuple(str(a.dtype) for a in sig if isinstance(a, numba.types.Array) and a.dtype in WORD_TYPES)

    assert [k.py_func.__name__ for k in kernels if len(k.signatures) > len({word_types(s) for s in k.signatures})] == []
