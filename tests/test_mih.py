"""Multi-index hashing: exact against the brute-force oracle whether it probes or falls back."""
import math

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
    keys = np.empty((4, 50), np.uint64)
    kernels.substring_keys(w, mi.lo, mi.ln, 0, 50, keys)
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


def probes(bits: int, radius: int) -> int:
    """Keys a probing MIH enumerates per substring of `bits` bits within `radius`."""
    return sum(math.comb(bits, i) for i in range(radius + 1))


@settings(max_examples=examples(60), deadline=None)
@given(code_sets(max_n=300), st.integers(0, 8), st.data())
def test_range_segments_over_several_segments_matches_oracle(data, r, draw):
    """One kernel call over MIH segments (probing or not, short substrings or long) and scanned ones,
    with live bitmaps, stored or range ids and per-query radii: the brute-force answer by (distance, id)."""
    from hashsearch import bitmaps
    from hashsearch.mih import range_segments
    from hashsearch.segments import Segment, _fuse

    nbits, q, db = data
    rng = np.random.default_rng(draw.draw(st.integers(0, 2**32 - 1)))
    cuts = np.sort(rng.integers(0, len(db) + 1, draw.draw(st.integers(0, 3))))
    ids = rng.permutation(np.arange(3 * len(db)))[:len(db)]  # disjoint ids, interleaved across segments
    parts, want_rows = [], []
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(db)]):
        seg_ids = np.sort(ids[a:b])
        kind = draw.draw(st.sampled_from(["mih", "mih-probe", "scan", "range"]))
        if kind == "range":
            seg_ids = np.arange(10 * len(db) + a, 10 * len(db) + b)
        backend, params = ("numba", {}) if kind in ("scan", "range") else ("mih", {"m": draw.draw(st.sampled_from([1, 2, 4, 6]))})
        if kind == "mih-probe":
            params["probe_cost"] = 0.0
        if backend == "mih" and -(-nbits // params["m"]) > 64:
            params["m"] = -(-nbits // 64)
        while kind == "mih-probe" and probes(-(-nbits // params["m"]), r // params["m"]) > 10**5:
            params["m"] += 1  # m=1 at r=8 over 64 bits would enumerate ~5e9 keys (minutes a case)
        seg = Segment(db[a:b], None if kind == "range" else seg_ids, int(seg_ids[0]) if kind == "range" and b > a else 0,
                      nbits, None, backend, params)
        live = rng.random(b - a) < draw.draw(st.sampled_from([1.0, 0.7, 0.0]))
        allowed = int(live.sum())
        parts.append((seg, None if live.all() else bitmaps.pack(live), allowed))
        want_rows += [(i, j) for i, j, ok in zip(seg_ids, range(a, b), live) if ok]
    fused = _fuse([(seg, live) for seg, live, allowed in parts if allowed])
    radii = rng.integers(0, r + 1, len(q)) if draw.draw(st.booleans()) else r
    if fused is None:  # no live row anywhere
        assert not want_rows
        return
    lims, dist, got = range_segments(as_words(q), radii, fused, nbits, len(db))
    full = np.bitwise_count(q[:, None, :] ^ db[None, :, :]).sum(axis=2)
    want_ids = np.array([i for i, _ in want_rows], np.int64)
    want_pos = np.array([j for _, j in want_rows], np.int64)
    for t in range(len(q)):
        d = full[t, want_pos] if want_pos.size else np.zeros(0, np.int64)
        rt = radii if np.ndim(radii) == 0 else radii[t]
        inside = np.flatnonzero(d <= rt)
        order = inside[np.lexsort((want_ids[inside], d[inside]))]
        assert np.array_equal(dist[lims[t]:lims[t + 1]], d[order])
        assert np.array_equal(got[lims[t]:lims[t + 1]], want_ids[order])
