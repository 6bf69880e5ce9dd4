"""Backends: every registered backend returns exactly the brute-force answer by row position, with and
without a mask (all, none, sparse, dense), and refuses bad parameters with one clear line."""
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hashsearch import backends
from hashsearch.backends import PAD_DISTANCE, get_backend
from hashsearch.errors import InvalidInputError
from hashsearch.planner import Costs
from test_kernels import code_sets
from conftest import examples

CASES = [("numba", {}), ("faiss", {}), ("faiss", {"nhash": 2}), ("mih", {}), ("mih", {"probe_cost": 0.01}),
         ("mih", {"probe_cost": 0.0}), ("auto", {}), ("auto:mih", {}), ("auto:scan", {})]
# costs under which auto always picks one plan, so that both of its paths meet the oracle
FREE_MIH = Costs(probe_ns=(0, 0), pass_ns=0, verify_row=0, mih_hit=0, mih_call_us=0)
FREE_SCAN = Costs(scan_row_single=0, scan_row_batch=0, open_row=0, insert_ns=0, hit=0, scan_call_us=0)


@pytest.fixture(autouse=True)
def no_calibrated_costs(tmp_path, monkeypatch):
    """Tests use the built-in cost defaults, never constants calibrated on the machine."""
    monkeypatch.setenv("HASHSEARCH_CACHE", str(tmp_path / "cache"))


def make(name, db, nbits, **params):
    """A backend by registry name; "auto:mih" / "auto:scan" are auto with costs that force that plan."""
    name, _, force = name.partition(":")
    backend = get_backend(name)(db, nbits, **params)
    if force:
        backend.costs = FREE_MIH if force == "mih" else FREE_SCAN
    return backend


def masks(draw_kind: str, n: int, rng: np.random.Generator) -> np.ndarray | None:
    """A mask of the named kind over n rows."""
    if draw_kind == "none-given":
        return None
    p = {"all": 1.0, "nothing": 0.0, "sparse": 0.03, "dense": 0.9, "half": 0.5}[draw_kind]
    return rng.random(n) < p


def oracle(q, db, k, r, mask):
    """Top-k and range results among the allowed rows, by brute force, ties by position."""
    from hashsearch.codes import hamming_bruteforce

    full = hamming_bruteforce(q, db)
    allowed = np.arange(len(db)) if mask is None else np.flatnonzero(mask)
    D = np.full((len(q), k), PAD_DISTANCE, np.int32)
    I = np.full((len(q), k), -1, np.int64)
    lims, dist, pos = [0], [], []
    for i in range(len(q)):
        order = allowed[np.lexsort((allowed, full[i][allowed]))]
        D[i, :min(k, order.size)], I[i, :min(k, order.size)] = full[i][order[:k]], order[:k]
        inside = order[full[i][order] <= r]
        dist.append(full[i][inside])
        pos.append(inside)
        lims.append(lims[-1] + inside.size)
    return D, I, np.array(lims), np.concatenate(dist).astype(np.int32), np.concatenate(pos).astype(np.int64)


def check(backend, q, db, k, r, mask):
    D, I, lims, dist, pos = oracle(q, db, k, r, mask)
    d, i = backend.search(q, k, mask)
    assert d.dtype == np.int32 and i.dtype == np.int64 and d.shape == (len(q), k)
    np.testing.assert_array_equal(d, D)
    np.testing.assert_array_equal(i, I)
    l2, d2, p2 = backend.range_search(q, r, mask)
    assert l2.dtype == np.int64 and d2.dtype == np.int32 and p2.dtype == np.int64
    np.testing.assert_array_equal(l2, lims)
    np.testing.assert_array_equal(d2, dist)
    np.testing.assert_array_equal(p2, pos)


@pytest.mark.parametrize("name,params", CASES)
@settings(max_examples=examples(30), deadline=None)
@given(data=code_sets(max_n=200), k=st.integers(1, 220), r=st.integers(0, 1024), seed=st.integers(0, 99),
       kind=st.sampled_from(["none-given", "all", "nothing", "sparse", "dense", "half"]))
def test_backends_match_bruteforce_with_masks(name, params, data, k, r, seed, kind):
    nbits, q, db = data
    r = min(r, nbits) if name == "numba" or r < 8 else r % 8  # keep probing backends quick
    mask = masks(kind, len(db), np.random.default_rng(seed))
    backend = make(name, db, nbits, **params)
    check(backend, q, db, k, r, mask)


@pytest.mark.parametrize("name,params", CASES)
def test_k_above_allowed_count_pads_and_large_sets_stay_exact(name, params):
    """k larger than the allowed rows: every allowed row, then padding; and a longer scan with ties."""
    rng = np.random.default_rng(3)
    db = rng.integers(0, 256, (5000, 8), dtype=np.uint8)
    db[::5] = db[7]  # many exact ties
    q = np.ascontiguousarray(np.vstack([db[7], rng.integers(0, 256, (3, 8), dtype=np.uint8)]))
    backend = make(name, db, 64, **params)
    for mask in (rng.random(5000) < 0.002, rng.random(5000) < 0.2, None):
        check(backend, q, db, 40, 3, mask)


def test_registry_names_and_unknown_backend():
    assert {"numba", "faiss", "mih", "auto"} <= set(backends.backend_names())
    with pytest.raises(InvalidInputError, match="unknown backend 'annoy'; choose one of numba"):
        get_backend("annoy")


@pytest.mark.parametrize("name,params,match", [
    ("numba", {"m": 2}, "backend 'numba' takes no parameter 'm' \\(it takes: none\\)"),
    ("mih", {"nhash": 2}, "takes no parameter 'nhash' \\(it takes: m, probe_cost\\)"),
    ("mih", {"m": 0}, "'m' must be >= 1"),
    ("mih", {"m": "two"}, "must be a number"),
    ("faiss", {"nhash": -1}, "'nhash' must be >= 0"),
])
def test_bad_build_parameters_are_refused(name, params, match):
    db = np.zeros((10, 8), np.uint8)
    with pytest.raises(InvalidInputError, match=match):
        get_backend(name)(db, 64, **params)


@pytest.mark.parametrize("name", ["numba", "faiss", "mih", "auto"])
def test_bad_mask_and_search_parameters_are_refused(name):
    db = np.zeros((10, 8), np.uint8)
    backend = get_backend(name)(db, 64)
    with pytest.raises(InvalidInputError, match=r"mask must be a \(10,\) bool array"):
        backend.search(db[:1], 3, np.ones(9, bool))
    with pytest.raises(InvalidInputError, match="mask must be"):
        backend.range_search(db[:1], 3, np.ones(10, np.int8))
    with pytest.raises(InvalidInputError, match="takes no search parameter 'nflip'"):
        backend.search(db[:1], 3, nflip=2)


def test_codes_are_not_copied_or_written():
    """A read-only array (as a memory map gives) is searched in place: whole-word codes are viewed."""
    db = np.random.default_rng(0).integers(0, 256, (100, 8), dtype=np.uint8)
    db.flags.writeable = False
    for name in ("numba", "mih", "auto"):
        backend = get_backend(name)(db, 64)
        backend.search(db[:2], 3)
        assert np.shares_memory(backend.words, db)
    assert get_backend("numba")(db, 64).nbytes == 0


@pytest.mark.parametrize("name,params", [("faiss", {"nhash": 2}), ("auto:mih", {}), ("mih", {})])
def test_concurrent_queries_from_many_threads_agree(name, params):
    """Many threads at once (different radii, so FAISS's nflip changes between calls; auto building its
    tables): every answer equals the one computed alone."""
    rng = np.random.default_rng(4)
    db = rng.integers(0, 256, (20000, 4), dtype=np.uint8)
    db[::3] = db[5]
    q = np.ascontiguousarray(db[:8])
    backend = make(name, db, 32, **params)
    radii = [0, 1, 2, 3, 4, 5, 6]
    expect = {r: oracle(q, db, 5, r, None) for r in radii}
    errors = []

    def work(r):
        try:
            for _ in range(3):
                lims, dist, pos = backend.range_search(q, r)
                e = expect[r]
                assert (lims == e[2]).all() and (dist == e[3]).all() and (pos == e[4]).all()
                d, i = backend.search(q, 5)
                assert (d == e[0]).all() and (i == e[1]).all()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in radii]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_explain_says_what_each_backend_does():
    db = np.random.default_rng(0).integers(0, 256, (3000, 8), dtype=np.uint8)
    assert get_backend("numba")(db, 64).explain(1, k=10)["plan"] == "scan"
    assert get_backend("mih")(db, 64, m=2).explain(1, radius=1)["m"] == 2
    faiss_backend = get_backend("faiss")(db, 64, nhash=2)
    assert faiss_backend.explain(1, radius=0)["plan"] == "faiss-multihash"
    assert faiss_backend.explain(1, k=10)["plan"] == "faiss-flat"


def test_auto_follows_its_cost_model_and_explains():
    """Forced costs give the forced plan; the default model scans tiny sets and uses MIH for exact-match
    lookups in a large clustered set; explain reports the estimates it chose by."""
    from hashsearch.synthetic_codes import clustered_codes

    db = clustered_codes(200000, 64, n_centres=50, flip_prob=0.02, seed=0)
    auto = make("auto:mih", db, 64)
    assert auto.plan(1, k=10).plan == "mih" and auto.explain(1, radius=2)["plan"] == "mih"
    assert make("auto:scan", db, 64).plan(100, radius=1).plan == "scan"
    auto = get_backend("auto")(db, 64)
    assert auto._tables == {}  # nothing built before a query needs it
    info = auto.explain(100, radius=0)
    assert info["plan"] == "mih" and info["mih_s"][info["m"]] < info["scan_s"] and "estimated" in info["why"]
    auto.range_search(db[:3], 0)
    assert list(auto._tables) == [info["m"]] and auto.nbytes > 0
    small = get_backend("auto")(db[:300], 64)
    assert small.explain(1, k=10)["plan"] == "scan" and "always scanned" in small.explain(1, k=10)["why"]
    with pytest.raises(InvalidInputError, match="exactly one of k and radius"):
        small.explain(1)


def test_costs_load_save_roundtrip_and_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHSEARCH_CACHE", str(tmp_path / "c"))
    assert Costs.load() == Costs()  # nothing stored: the built-in defaults
    custom = Costs(scan_row_single=0.25, word_cost=(1.0, 1.0, 1.5, 3.0))
    assert custom.save() == tmp_path / "c" / "costs.json"
    assert Costs.load() == custom
    (tmp_path / "c" / "costs.json").write_text("{not json")
    assert Costs.load() == Costs()
