"""Multi-index hashing: exact against the brute-force oracle whether it probes or falls back."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hashsearch.errors import InvalidInputError
from hashsearch.kernels import mih as kernels
from hashsearch.kernels.popcount import as_words
from hashsearch.mih import MultiIndexHash, default_substrings
from test_kernels import code_sets, oracle_range, oracle_topk
from conftest import examples


def test_default_substrings_follow_nbits_over_log2_n():
    assert default_substrings(64, 2**32) == 2
    assert default_substrings(64, 10**7) == 3
    assert default_substrings(128, 10**9) == 4
    assert default_substrings(192, 2**100) == 3  # never a substring longer than 64 bits
    assert default_substrings(8, 0) == 8


@settings(deadline=None)
@given(st.integers(1, 64), st.integers(0, 1024))
def test_tight_radii_sum_to_r_plus_one(m, r):
    """Pigeonhole: the substring radii (+1 each) add up to r + 1, so no row within r is missed."""
    rad = kernels.radii(m, r)
    assert (rad + 1).sum() == r + 1 and rad.min() >= -1


def test_substring_keys_cover_every_bit_once():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (50, 25), dtype=np.uint8)  # 200 bits: keys straddle word boundaries
    w = as_words(codes)
    mi = MultiIndexHash(w, 200, m=4)
    keys = kernels.substring_keys(w, mi.lo, mi.ln)
    total = sum(np.bitwise_count(keys[i] ^ keys[i][:1]) for i in range(4))
    expect = np.bitwise_count(codes ^ codes[:1]).sum(axis=1)
    assert (total == expect).all()


def test_bad_substring_count_is_refused():
    w = as_words(np.zeros((3, 16), np.uint8))
    with pytest.raises(InvalidInputError, match="substrings"):
        MultiIndexHash(w, 128, m=1)  # 128-bit substrings do not fit a word


@settings(max_examples=examples(50), deadline=None)
@given(code_sets(max_n=200), st.integers(0, 6), st.sampled_from([None, 1, 2, 3, 5]))
def test_probing_range_search_matches_oracle(data, r, m):
    nbits, q, db = data
    if m is not None and -(-nbits // m) > 64:
        m = None
    r = min(r, nbits)
    mi = MultiIndexHash(as_words(db), nbits, m, probe_cost=0.0)  # always probe, never scan
    lims, dist, pos = mi.range_search(as_words(q), r)
    el, ed, ep = oracle_range(q, db, r)
    assert (lims == el).all() and (dist == ed).all() and (pos == ep).all()


@settings(max_examples=examples(40), deadline=None)
@given(code_sets(max_n=200), st.integers(1, 220))
def test_growing_radius_topk_matches_oracle(data, k):
    nbits, q, db = data
    mi = MultiIndexHash(as_words(db), nbits, probe_cost=0.01)  # probes up to 100 n before scanning
    d, j = mi.search(as_words(q), k)
    ed, ej = oracle_topk(q, db, k)
    assert (d == ed).all() and (j == ej).all()


@settings(max_examples=examples(20), deadline=None)
@given(code_sets(max_n=200), st.integers(0, 1024))
def test_large_radius_falls_back_to_scan_exactly(data, r):
    nbits, q, db = data
    r = min(r, nbits)
    mi = MultiIndexHash(as_words(db), nbits)
    lims, dist, pos = mi.range_search(as_words(q), r)
    el, ed, ep = oracle_range(q, db, r)
    assert (lims == el).all() and (dist == ed).all() and (pos == ep).all()


def test_clustered_codes_probe_and_agree():
    """Noisy copies of a few centres (the case MIH is for), many queries over threads."""
    from hashsearch.synthetic_codes import clustered_codes

    db = clustered_codes(20000, 64, n_centres=50, flip_prob=0.03, seed=0)
    q = clustered_codes(30, 64, n_centres=50, flip_prob=0.03, seed=0, offset=20000)
    mi = MultiIndexHash(as_words(db), 64)
    for r in (0, 2, 5):
        lims, dist, pos = mi.range_search(as_words(q), r)
        el, ed, ep = oracle_range(q, db, r)
        assert (lims == el).all() and (dist == ed).all() and (pos == ep).all()
    d, j = mi.search(as_words(q), 10)
    ed, ej = oracle_topk(q, db, 10)
    assert (d == ed).all() and (j == ej).all()
