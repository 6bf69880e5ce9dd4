"""Retrieval metrics: hand-computed cases (with ties), a property test against a plain numpy
ranking with a stable argsort, a real-data sanity check, and clear errors."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashsearch import datasets, metrics
from hashsearch.codes import hamming_bruteforce
from hashsearch.errors import InvalidInputError
from hashsearch.index import HammingIndex
from conftest import examples

# Hand-worked case, 8-bit codes. Database (ids 0..3) and three queries:
#   db codes 0x01 0x00 0x03 0x01, labels [1,0,0] [0,1,0] [1,1,0] [0,1,0]
#   q0 = 0x00 labels [1,0,0]: distances 1 0 2 1 -> ranking (ties by id) 1,0,3,2 -> relevance 0,1,0,1
#       AP = (1/2 + 2/4) / 2 = 1/2   (breaking the 0/3 tie the other way would give 5/12)
#   q1 = 0xFF labels [0,1,0]: distances 7 8 6 7 -> ranking 2,0,3,1 -> relevance 1,0,1,1
#       AP = (1 + 2/3 + 3/4) / 3 = 29/36
#   q2 = 0x00 labels [0,0,1]: nothing relevant -> AP 0
DB = np.array([[0x01], [0x00], [0x03], [0x01]], dtype=np.uint8)
DB_LABELS = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 1, 0]], dtype=np.uint8)
Q = np.array([[0x00], [0xFF], [0x00]], dtype=np.uint8)
Q_LABELS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.uint8)
HAND = (Q, DB, Q_LABELS, DB_LABELS, 8)


def test_map_all_hand_computed_with_ties():
    assert metrics.mean_average_precision(*HAND) == pytest.approx((1 / 2 + 29 / 36 + 0) / 3)
    assert metrics.mean_average_precision(Q[:2], DB, Q_LABELS[:2], DB_LABELS, 8) == pytest.approx(47 / 72)


def test_map_at_k_divides_by_relevant_retrieved():
    # k=2: q0 top 2 relevance 0,1 -> (1/2)/1; q1 1,0 -> 1/1; q2 -> 0
    assert metrics.mean_average_precision(*HAND, k=2) == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    # k=1: q0 retrieves nothing relevant -> 0; q1 -> 1
    assert metrics.mean_average_precision(*HAND, k=1) == pytest.approx(1 / 3)
    # k at or beyond the database size is the whole ranking
    assert metrics.mean_average_precision(*HAND, k=99) == pytest.approx(metrics.mean_average_precision(*HAND))


def test_precision_within_radius_is_micro_averaged():
    # r<=2: q0 retrieves all 4 (2 relevant), q1 nothing (nearest at 6), q2 all 4 (0 relevant) -> 2/8
    assert metrics.precision_within_radius(*HAND, radius=2) == pytest.approx(2 / 8)
    # r=0: q0 and q2 each retrieve id 1, irrelevant to both
    assert metrics.precision_within_radius(*HAND, radius=0) == 0.0
    # nothing retrieved at all -> 0.0
    assert metrics.precision_within_radius(Q[1:2], DB, Q_LABELS[1:2], DB_LABELS, 8, radius=5) == 0.0


def test_pr_curve_by_radius_hand_computed():
    precision, recall = metrics.pr_curve_by_radius(*HAND)
    assert precision.shape == recall.shape == (9,)
    # pooled (retrieved, relevant) at r = 0..8 over 5 relevant pairs in all
    retrieved = np.array([2, 6, 8, 8, 8, 8, 9, 11, 12])
    relevant = np.array([0, 1, 2, 2, 2, 2, 3, 4, 5])
    np.testing.assert_allclose(precision, relevant / retrieved)
    np.testing.assert_allclose(recall, relevant / 5)


def test_topk_precision_hand_computed():
    # q0 relevance 0,1,0,1; q1 1,0,1,1; q2 0,0,0,0
    curve = metrics.topk_precision_curve(*HAND, ks=[1, 2, 4])
    np.testing.assert_allclose(curve, [1 / 3, (0.5 + 0.5) / 3, (0.5 + 0.75) / 3])


def test_ranking_comes_from_hamming_index(monkeypatch):
    calls = []
    original = HammingIndex.search

    def spy(self, queries, k):
        calls.append(k)
        return original(self, queries, k)

    monkeypatch.setattr(HammingIndex, "search", spy)
    metrics.mean_average_precision(*HAND)
    assert calls == [4]


# ---- property test against a plain numpy implementation ------------------------------------------

def oracle(q, db, ql, dbl, k, radius, ks):
    """Full distance matrix, stable argsort, per-query loops: the obvious implementation."""
    dist = hamming_bruteforce(q, db)
    rel = (ql.astype(int) @ dbl.T.astype(int)) > 0
    aps_all, aps_k, topk = [], [], []
    for i in range(len(q)):
        order = np.argsort(dist[i], kind="stable")
        r = rel[i, order]
        prec = np.cumsum(r) / np.arange(1, len(r) + 1)
        aps_all.append((prec * r).sum() / r.sum() if r.sum() else 0.0)
        rk = r[:k]
        aps_k.append((prec[:k] * rk).sum() / rk.sum() if rk.sum() else 0.0)
        topk.append([r[:kk].mean() for kk in ks])
    within = dist <= radius
    p_r = rel[within].sum() / within.sum() if within.sum() else 0.0
    return np.mean(aps_all), np.mean(aps_k), p_r, np.mean(topk, axis=0), dist, rel


@st.composite
def retrieval_case(draw):
    nbits = draw(st.sampled_from([8, 16]))
    n = draw(st.integers(1, 25))
    nq = draw(st.integers(1, 6))
    c = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    # few distinct codes -> many ties
    pool = rng.integers(0, 256, (3, nbits // 8), dtype=np.uint8)
    db = pool[rng.integers(0, 3, n)]
    q = rng.integers(0, 256, (nq, nbits // 8), dtype=np.uint8)
    dbl = (rng.random((n, c)) < 0.4).astype(np.uint8)
    ql = (rng.random((nq, c)) < 0.4).astype(np.uint8)
    k = draw(st.integers(1, n))
    radius = draw(st.integers(0, nbits))
    return q, db, ql, dbl, nbits, k, radius


@settings(max_examples=examples(60), deadline=None)
@given(retrieval_case())
def test_metrics_match_numpy_oracle(case):
    q, db, ql, dbl, nbits, k, radius = case
    ks = sorted({1, k, len(db)})
    m_all, m_k, p_r, topk, dist, rel = oracle(q, db, ql, dbl, k, radius, ks)
    assert metrics.mean_average_precision(q, db, ql, dbl, nbits) == pytest.approx(m_all)
    assert metrics.mean_average_precision(q, db, ql, dbl, nbits, k=k) == pytest.approx(m_k)
    assert metrics.precision_within_radius(q, db, ql, dbl, nbits, radius=radius) == pytest.approx(p_r)
    np.testing.assert_allclose(metrics.topk_precision_curve(q, db, ql, dbl, nbits, ks=ks), topk)
    precision, recall = metrics.pr_curve_by_radius(q, db, ql, dbl, nbits)
    assert precision[radius] == pytest.approx(p_r)
    total = rel.sum()
    assert recall[radius] == pytest.approx(rel[dist <= radius].sum() / total if total else 0.0)


def test_batches_stream_without_changing_results(monkeypatch):
    rng = np.random.default_rng(3)
    q = rng.integers(0, 256, (37, 2), dtype=np.uint8)
    db = rng.integers(0, 256, (50, 2), dtype=np.uint8)
    ql, dbl = rng.integers(0, 2, (37, 5)), rng.integers(0, 2, (50, 5))
    whole = metrics.mean_average_precision(q, db, ql, dbl, 16)
    monkeypatch.setattr(metrics, "BATCH_ELEMENTS", 50 * 4)  # 4 queries a batch
    assert metrics.mean_average_precision(q, db, ql, dbl, 16) == pytest.approx(whole)


# ---- real data: perfect and random codes ---------------------------------------------------------

@pytest.fixture(scope="module")
def wikipedia():
    if not (datasets.data_root() / "wikipedia").is_dir():
        pytest.skip("shared data folder missing")
    ds = datasets.load_wikipedia()
    return ds, datasets.standard_split(ds)


def test_wikipedia_perfect_codes_score_one_and_random_codes_near_chance(wikipedia):
    ds, split = wikipedia
    classes = ds.labels.argmax(axis=1)
    perfect = np.packbits(np.eye(16, dtype=np.uint8)[classes], axis=1)  # 2 bits apart across classes
    q, db = perfect[split.query], perfect[split.database]
    ql, dbl = ds.labels[split.query], ds.labels[split.database]
    assert metrics.mean_average_precision(q, db, ql, dbl, 16) == pytest.approx(1.0)
    assert metrics.precision_within_radius(q, db, ql, dbl, 16, radius=0) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (len(ds), 4), dtype=np.uint8)
    chance = (ql.astype(float) @ dbl.T.astype(float) > 0).mean()
    random_map = metrics.mean_average_precision(noise[split.query], noise[split.database], ql, dbl, 32)
    assert abs(random_map - chance) < 0.05


# ---- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: {**a, "query_labels": a["query_labels"][:2]}, "query labels have 2 rows"),
        (lambda a: {**a, "db_labels": a["db_labels"][:, :2]}, "classes"),
        (lambda a: {**a, "nbits": 16}, "nbits is 16"),
        (lambda a: {**a, "db_codes": a["db_codes"].astype(np.int16)}, "uint8"),
        (lambda a: {**a, "db_labels": a["db_labels"].ravel()}, "2-D"),
        (lambda a: {**a, "db_codes": a["db_codes"][:0], "db_labels": a["db_labels"][:0]}, "no codes"),
    ],
)
def test_bad_inputs_are_named(change, message):
    args = dict(query_codes=Q, db_codes=DB, query_labels=Q_LABELS, db_labels=DB_LABELS, nbits=8)
    with pytest.raises(InvalidInputError, match=message):
        metrics.mean_average_precision(**change(args))


def test_bad_k_radius_and_ks():
    with pytest.raises(InvalidInputError, match="k must be a positive integer"):
        metrics.mean_average_precision(*HAND, k=0)
    with pytest.raises(InvalidInputError, match="radius"):
        metrics.precision_within_radius(*HAND, radius=-1)
    with pytest.raises(InvalidInputError, match="exceeds the database size 4"):
        metrics.topk_precision_curve(*HAND, ks=[1, 5])


# --- hash lookup statistics and code statistics (hand-computed) ------------------------------------

def _lookup_case():
    db = np.array([[0b00000000], [0b00000001], [0b00000111], [0b11111111]], dtype=np.uint8)
    db_labels = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    q = np.array([[0b00000000], [0b11111111], [0b11110000]], dtype=np.uint8)
    q_labels = np.array([[1, 0], [0, 1], [1, 0]])
    return q, db, q_labels, db_labels


def test_lookup_statistics_hand_computed():
    # q0 (A) within 2: db0 (A, d 0), db1 (B, d 1) -> P 1/2, finds 1 of the 2 A items
    # q1 (B) within 2: db3 (B, d 0) -> P 1, finds 1 of the 2 B items
    # q2 (A): nearest items 4 bits away -> no hit (left out of P), recall 0
    stats = metrics.lookup_statistics(*_lookup_case(), nbits=8, radius=2)
    assert stats["queries_with_hit"] == 2 and stats["hit_fraction"] == pytest.approx(2 / 3)
    assert stats["precision"] == pytest.approx((0.5 + 1.0) / 2)
    assert stats["recall"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    wide = metrics.lookup_statistics(*_lookup_case(), nbits=8, radius=8)  # everything retrieved
    assert wide["hit_fraction"] == 1.0 and wide["precision"] == pytest.approx(0.5) and wide["recall"] == 1.0


def test_lookup_statistics_without_hits_and_bad_radius():
    q, db, ql, dbl = _lookup_case()
    stats = metrics.lookup_statistics(q[2:], db, ql[2:], dbl, nbits=8, radius=0)
    assert stats == {"radius": 0, "queries_with_hit": 0, "hit_fraction": 0.0, "precision": 0.0, "recall": 0.0}
    with pytest.raises(InvalidInputError, match="radius"):
        metrics.lookup_statistics(q, db, ql, dbl, nbits=8, radius=-1)


def test_code_statistics_hand_computed():
    _, db, _, _ = _lookup_case()
    stats = metrics.code_statistics(db, 8)
    assert stats["distinct"] == 4 and stats["constant_bits"] == []
    assert stats["bit_means"] == pytest.approx([0.25] * 5 + [0.5, 0.5, 0.75])
    assert stats["max_abs_correlation"] == pytest.approx(1.0)  # bits 0..4 are the same bit
    one_bit = metrics.code_statistics(np.array([[0x80], [0x81], [0x81]], dtype=np.uint8), 8)
    assert one_bit["distinct"] == 2 and one_bit["constant_bits"] == list(range(7))
    assert one_bit["max_abs_correlation"] == 0.0 and one_bit["bit_means"][7] == pytest.approx(2 / 3)
    # two bits, opposite: correlation -1
    assert metrics.code_statistics(np.array([[0b10000000], [0b01000000]], dtype=np.uint8), 8)["max_abs_correlation"] == pytest.approx(1.0)


@settings(max_examples=examples(30), deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 16))
def test_lookup_statistics_match_bruteforce(seed, radius):
    rng = np.random.default_rng(seed)
    q, db = (rng.integers(0, 256, size=(n, 2), dtype=np.uint8) & 0b11000011 for n in (9, 30))  # many ties
    ql, dbl = rng.integers(0, 2, size=(9, 3)), rng.integers(0, 2, size=(30, 3))
    within = hamming_bruteforce(q, db) <= radius
    rel = (ql @ dbl.T) > 0
    found, good = within.sum(1), (within & rel).sum(1)
    hit, has_rel = found > 0, rel.sum(1) > 0
    stats = metrics.lookup_statistics(q, db, ql, dbl, nbits=16, radius=radius)
    assert stats["hit_fraction"] == pytest.approx(hit.mean())
    assert stats["precision"] == pytest.approx((good[hit] / found[hit]).mean() if hit.any() else 0.0)
    assert stats["recall"] == pytest.approx((good[has_rel] / rel.sum(1)[has_rel]).mean() if has_rel.any() else 0.0)
