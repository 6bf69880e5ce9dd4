"""Exact merges: split a brute-force answer into disjoint parts, merge, get the whole answer back."""
import numpy as np
from hypothesis import given, settings, strategies as st

from hashsearch.results import PAD_DISTANCE, empty_range, merge_range, merge_topk
from conftest import examples


def brute(dist_row_major, ids, k, r):
    """Per query: top-k and within-r (distance, id) pairs of all items, padded like the index."""
    nq = dist_row_major.shape[0]
    D = np.full((nq, k), PAD_DISTANCE, np.int32)
    I = np.full((nq, k), -1, np.int64)
    lims, rd, ri = [0], [], []
    for q in range(nq):
        order = np.lexsort((ids, dist_row_major[q]))
        top = order[:k]
        D[q, :top.size], I[q, :top.size] = dist_row_major[q, top], ids[top]
        inside = order[dist_row_major[q, order] <= r]
        rd.append(dist_row_major[q, inside]); ri.append(ids[inside]); lims.append(lims[-1] + inside.size)
    return D, I, (np.array(lims), np.concatenate(rd).astype(np.int32), np.concatenate(ri).astype(np.int64))


@settings(max_examples=examples(200), deadline=None)
@given(nq=st.integers(1, 5), n=st.integers(0, 40), nparts=st.integers(1, 5), k=st.integers(1, 50),
       r=st.integers(0, 8), maxd=st.integers(0, 8), seed=st.integers(0, 10**6))
def test_merges_of_disjoint_parts_equal_the_whole(nq, n, nparts, k, r, maxd, seed):
    rng = np.random.default_rng(seed)
    ids = rng.permutation(3 * n + 1)[:n].astype(np.int64)
    dist = rng.integers(0, maxd + 1, (nq, n)).astype(np.int32)  # few distinct values: many ties
    owner = rng.integers(0, nparts, n)
    D, I, R = brute(dist, ids, k, r)
    topk_parts, range_parts = [], []
    for p in range(nparts):
        sel = owner == p
        kp = int(rng.integers(k, k + 3))  # parts may return more than k columns
        d, i, rr = brute(dist[:, sel], ids[sel], kp, r)
        topk_parts.append((d, i))
        range_parts.append(rr)
    d, i = merge_topk(topk_parts, k)
    assert d.dtype == np.int32 and i.dtype == np.int64
    assert (d == D).all() and (i == I).all()
    lims, rd, ri = merge_range(range_parts)
    assert (lims == R[0]).all() and (rd == R[1]).all() and (ri == R[2]).all()


def test_hand_made_merge_orders_ties_by_id_and_pads():
    a = (np.array([[1, 3]], np.int32), np.array([[7, 2]], np.int64))
    b = (np.array([[1, PAD_DISTANCE]], np.int32), np.array([[5, -1]], np.int64))
    d, i = merge_topk([a, b], 4)
    assert d.tolist() == [[1, 1, 3, PAD_DISTANCE]] and i.tolist() == [[5, 7, 2, -1]]
    lims, dist, ids = merge_range([empty_range(2), (np.array([0, 1, 1]), np.array([2], np.int32), np.array([9]))])
    assert lims.tolist() == [0, 1, 1] and dist.tolist() == [2] and ids.tolist() == [9]
