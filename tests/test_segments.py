"""The live index's segments, tombstones, filters and compaction against a brute-force model, and
many threads reading while others write: every answer is checked against the snapshot it ran on."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings, strategies as st

from hashsearch.codes import hamming_bruteforce
from hashsearch.errors import InvalidInputError, UnknownIdError
from hashsearch.index import HammingIndex
from hashsearch.results import PAD_DISTANCE
from conftest import examples


def oracle_topk(q, codes, ids, k, allowed=None):
    """(distance, id) pairs of the k nearest allowed rows, per query."""
    keep = np.ones(len(ids), bool) if allowed is None else allowed
    full = hamming_bruteforce(q, codes) if len(ids) else np.zeros((len(q), 0), np.int32)
    return [sorted(zip(row[keep].tolist(), ids[keep].tolist()))[:k] for row in full]


def oracle_range(q, codes, ids, r, allowed=None):
    keep = np.ones(len(ids), bool) if allowed is None else allowed
    full = hamming_bruteforce(q, codes) if len(ids) else np.zeros((len(q), 0), np.int32)
    return [sorted((d, i) for d, i in zip(row[keep].tolist(), ids[keep].tolist()) if d <= r) for row in full]


def check_snapshot(snap, q, k, r, filter=None, allowed=None):
    """search and range_search of `snap` equal brute force over the snapshot's own live rows."""
    codes, ids = snap.codes, snap.ids
    assert len(ids) == len(snap) and (len(ids) < 2 or np.all(np.diff(ids) > 0))
    dist, got = snap.search(q, k, filter=filter)
    assert dist.shape == (len(q), min(k, len(snap)))
    want = oracle_topk(q, codes, ids, k, allowed)
    for row_d, row_i, w in zip(dist, got, want):
        real = row_i >= 0
        assert list(zip(row_d[real].tolist(), row_i[real].tolist())) == w
        assert (row_d[~real] == PAD_DISTANCE).all() and real.sum() == len(w)
    lims, dist, got = snap.range_search(q, r, filter=filter)
    want = oracle_range(q, codes, ids, r, allowed)
    for i, w in enumerate(want):
        assert list(zip(dist[lims[i]:lims[i + 1]].tolist(), got[lims[i]:lims[i + 1]].tolist())) == w


ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(1, 40), st.booleans()),
    st.tuples(st.just("remove"), st.floats(0, 0.5), st.booleans()),
    st.tuples(st.just("compact"), st.just(0), st.booleans()),
), min_size=1, max_size=12)


def remove_share(index, model: dict, rng: np.random.Generator, share: float) -> None:
    """Remove each live id of `model` with probability `share`, from the index and the model."""
    live = np.array(sorted(model))
    gone = live[rng.random(live.size) < share]
    index.remove(gone)
    for i in gone:
        del model[int(i)]


@settings(max_examples=examples(25), deadline=None)
@given(ops=ops, nbits=st.sampled_from([8, 24, 64, 128]), backend=st.sampled_from(["numba", "mih", "faiss"]),
       segment_rows=st.integers(1, 50), k=st.integers(1, 30), r=st.integers(0, 140), seed=st.integers(0, 999))
def test_segments_and_tombstones_match_a_brute_force_model(ops, nbits, backend, segment_rows, k, r, seed):
    rng = np.random.default_rng(seed)
    index = HammingIndex(nbits, backend, segment_rows=segment_rows, auto_compact=False)
    model: dict[int, tuple[bytes, int]] = {}  # id -> (code, label)
    q = rng.integers(0, 256, (3, nbits // 8), dtype=np.uint8)
    r = min(r, nbits) if backend != "mih" or r < 10 else r % 10
    for op, size, flag in ops:
        if op == "add":
            codes = rng.integers(0, 256, (size, nbits // 8), dtype=np.uint8)
            codes[: size // 3] = q[0]  # duplicates of a query: ties broken by id
            labels = rng.integers(0, 4, size)
            if flag:  # explicit ids, in any order, never live already (removed ones may come back)
                pool = np.setdiff1d(np.arange(3 * size + len(model) + 50), list(model))
                ids = rng.permutation(pool)[:size]
            else:
                start = max(model, default=-1) + 1
                ids = np.arange(start, start + size)
            index.add(codes, ids=ids if flag else None, metadata={"label": labels})
            model.update({int(i): (c.tobytes(), int(l)) for i, c, l in zip(ids, codes, labels)})
        elif op == "remove" and model:
            live = np.array(sorted(model))
            gone = live[rng.random(live.size) < size]
            assert index.remove(gone) == gone.size
            for i in gone:
                del model[int(i)]
        else:
            index.compact()
        assert len(index) == len(model)
    ids = np.array(sorted(model), np.int64)
    codes = np.array([np.frombuffer(model[i][0], np.uint8) for i in ids]).reshape(-1, nbits // 8)
    labels = np.array([model[i][1] for i in ids])
    snap = index.snapshot()
    np.testing.assert_array_equal(snap.ids, ids)
    np.testing.assert_array_equal(snap.codes, codes)
    if len(ids):
        assert snap.metadata.column("label").to_pylist() == labels.tolist()
    check_snapshot(snap, q, k, r)
    check_snapshot(snap, q, k, r, filter=pc.field("label") == 2, allowed=labels == 2)
    allow = ids[::3]
    check_snapshot(snap, q, k, r, filter=allow, allowed=np.isin(ids, allow))
    before = (snap.search(q, k), snap.range_search(q, r))
    index.compact()  # results before and after compaction are identical
    after = (index.search(q, k), index.range_search(q, r))
    for x, y in zip(before[0] + before[1], after[0] + after[1]):
        np.testing.assert_array_equal(x, y)
    assert len(index.snapshot().segments) <= 1


@contextmanager
def forced_auto(plan, small_rows=None, min_rows=0):
    """Backend auto with every batch planned `plan` ("scan" or an int m: MIH with m substrings, capped
    to a valid m), on segments of any size (`min_rows`) and with small-segment tables below
    `small_rows` rows (None: the default); counts the fused kernel calls in `calls`."""
    from hashsearch import backends, mih, segments
    from hashsearch.planner import Estimate, valid_substrings

    calls = []

    def plan_of(self, nq, k=None, radius=None, mask=None, share=None):
        if plan == "scan":
            return Estimate("scan", None, 0.0, {})
        m = plan if valid_substrings(self.nbits, plan) else -(-self.nbits // 64)
        return Estimate("mih", m, 0.0, {})

    def counted(*args):
        calls.append(args[2])
        return fused_call(*args)

    fused_call = segments.range_segments
    saved = (backends.AutoBackend.plan, backends.MIN_PLANNED_ROWS, mih.SMALL_SEGMENT_ROWS)
    backends.AutoBackend.plan, backends.MIN_PLANNED_ROWS, segments.range_segments = plan_of, min_rows, counted
    mih.SMALL_SEGMENT_ROWS = mih.SMALL_SEGMENT_ROWS if small_rows is None else small_rows
    try:
        yield calls
    finally:
        backends.AutoBackend.plan, backends.MIN_PLANNED_ROWS, mih.SMALL_SEGMENT_ROWS = saved
        segments.range_segments = fused_call


@settings(max_examples=examples(60), deadline=None)
@given(ops=ops, nbits=st.sampled_from([8, 24, 64, 128]), plan=st.sampled_from(["scan", 1, 2, 3, 5]),
       small_rows=st.sampled_from([0, 10**9]), min_rows=st.sampled_from([0, 20]), segment_rows=st.integers(1, 50),
       k=st.integers(1, 30), r=st.integers(0, 12), seed=st.integers(0, 999))
def test_fused_auto_search_matches_a_brute_force_model(ops, nbits, plan, small_rows, min_rows, segment_rows, k, r,
                                                       seed):
    """Backend auto over several segments, one plan per batch for all of them (scan, or MIH with m
    substrings: a large segment's tables for that m, a small one's own, a tiny one scanned), in one
    fused kernel call, with tombstones and filters: brute force, ties by id; answers unchanged after
    compaction."""
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 256, (3, nbits // 8), dtype=np.uint8)
    with forced_auto(plan, small_rows, min_rows) as calls:
        index = HammingIndex(nbits, segment_rows=segment_rows, auto_compact=False)
        model: dict[int, int] = {}  # id -> label
        codes_of: dict[int, np.ndarray] = {}
        for op, size, flag in ops:
            if op == "add":
                codes = rng.integers(0, 256, (size, nbits // 8), dtype=np.uint8)
                codes[: size // 3] = q[0]  # duplicates of a query: ties broken by id
                codes[size // 3: size // 2] = q[1] ^ np.uint8(1)  # near a query: MIH buckets shared
                start = max(model, default=-1) + 1
                labels = rng.integers(0, 4, size)
                index.add(codes, metadata={"label": labels})
                for i in range(size):
                    model[start + i], codes_of[start + i] = int(labels[i]), codes[i]
            elif op == "remove" and model:
                remove_share(index, model, rng, size)
            elif flag:
                index.compact()
            snap = index.snapshot()
            ids = np.array(sorted(model), np.int64)
            labels = np.array([model[i] for i in ids])
            del calls[:]
            check_snapshot(snap, q, k, r)
            if plan != "scan" and any(seg.backend == "auto" and rows for seg, _, rows in snap._unfiltered):
                assert calls, "the radius search ran in one fused call"
            check_snapshot(snap, q, k, r, filter=pc.field("label") == 2, allowed=labels == 2)
            check_snapshot(snap, q, k, r, filter=ids[::3], allowed=np.isin(ids, ids[::3]))
        before = (snap.search(q, k), snap.range_search(q, r))
        index.compact()
        after = (index.search(q, k), index.range_search(q, r))
    for x, y in zip(before[0] + before[1], after[0] + after[1]):
        np.testing.assert_array_equal(x, y)


def test_adds_reuse_the_sealed_part_of_the_fused_list():
    """After an add, a query copies the sealed segments' kept typed list and appends the growing
    segment's entry only; a remove changes a live bitmap, so the sealed entries are made again."""
    from hashsearch import segments

    made = []
    entry = segments._entry
    segments._entry = lambda seg, rows, m: made.append(seg) or entry(seg, rows, m)
    rng = np.random.default_rng(4)
    q = rng.integers(0, 256, (2, 8), dtype=np.uint8)
    try:
        with forced_auto(3):
            index = HammingIndex(64, segment_rows=100, auto_compact=False)
            for _ in range(3):
                index.add(rng.integers(0, 256, (100, 8), dtype=np.uint8))
            index.add(rng.integers(0, 256, (10, 8), dtype=np.uint8))
            check_snapshot(index.snapshot(), q, 5, 20)  # the sealed segments' lists made
            for _ in range(3):
                index.add(rng.integers(0, 256, (10, 8), dtype=np.uint8))
                made.clear()
                check_snapshot(index.snapshot(), q, 5, 20)
                assert made and set(made) == {index.snapshot().segments[-1]}  # the growing one
            index.remove([3])
            made.clear()
            check_snapshot(index.snapshot(), q, 5, 20)
            assert len(set(made)) == 4
    finally:
        segments._entry = entry


def test_background_merges_build_the_planned_tables_before_any_query():
    """A segment made by a background merge comes with the MIH tables that the index's batches planned
    (those its largest segment has built), so that no reader waits for them to be built."""
    rng = np.random.default_rng(6)
    q = rng.integers(0, 256, (2, 8), dtype=np.uint8)
    with forced_auto(3, small_rows=0):
        index = HammingIndex(64, segment_rows=40, merge_factor=2)
        index.add(rng.integers(0, 256, (2000, 8), dtype=np.uint8))
        index.search(q, 5)  # the largest segment builds the planned tables
        assert index.snapshot().segments[0].searcher().built_m == [3]
        for _ in range(30):
            index.add(rng.integers(0, 256, (10, 8), dtype=np.uint8))
        index.wait_for_compaction()
        merged = [seg for seg in index.snapshot().segments[1:-1] if len(seg) > 40]
        assert merged and all(seg.searcher().built_m == [3] for seg in merged)
        check_snapshot(index.snapshot(), q, 5, 6)


def test_adds_do_not_rebuild_sealed_segments():
    rng = np.random.default_rng(0)
    index = HammingIndex(64, "mih", segment_rows=100, auto_compact=False)
    index.add(rng.integers(0, 256, (1000, 8), dtype=np.uint8))
    index.compact()
    [big] = index.snapshot().segments
    searcher = big.searcher()
    for _ in range(5):
        index.add(rng.integers(0, 256, (60, 8), dtype=np.uint8))
        index.remove(index.ids[:3])
    segs = index.snapshot().segments
    assert segs[0] is big and big.searcher() is searcher  # the same tables, never rebuilt
    assert len(segs) == 1 + 2 + 1  # big, two sealed from the growing segment (120 rows each), the growing one


def test_removed_ids_never_come_back_and_topk_stays_full():
    index = HammingIndex(8, segment_rows=4, auto_compact=False)
    codes = np.zeros((10, 1), np.uint8)  # all at distance 0: only ids decide
    index.add(codes)
    index.remove([0, 2, 4, 6, 8])
    dist, ids = index.search(np.zeros((1, 1), np.uint8), 5)
    assert ids.tolist() == [[1, 3, 5, 7, 9]] and (dist == 0).all()
    with pytest.raises(UnknownIdError, match="id 2 is not in the index"):
        index.remove([1, 2])
    assert len(index) == 5  # nothing removed
    index.add(np.ones((1, 1), np.uint8), ids=[4])  # a removed id may be added again
    assert index.search(np.ones((1, 1), np.uint8), 1)[1].tolist() == [[4]]
    with pytest.raises(InvalidInputError, match="duplicate id 3"):
        index.add(np.ones((1, 1), np.uint8), ids=[3])
    index.add(np.ones((1, 1), np.uint8))
    assert index.ids[-1] == 10  # default: next after the largest live id


def test_background_compaction_keeps_answers_and_bounds_segments():
    rng = np.random.default_rng(1)
    index = HammingIndex(32, "mih", segment_rows=50, max_segments=4, max_dead_fraction=0.3)
    db = rng.integers(0, 256, (2000, 4), dtype=np.uint8)
    q = db[:5]
    for lo in range(0, 2000, 50):
        index.add(db[lo:lo + 50])
    index.remove(np.arange(0, 2000, 2))
    index.wait_for_compaction()
    snap = index.snapshot()
    assert index.compaction_error is None
    assert len(snap.segments) <= 5 and all(d < 0.3 * len(s) for s, d in zip(snap.segments, snap.dead))
    check_snapshot(snap, q, 10, 6)


def test_non_contiguous_inputs_are_accepted():
    rng = np.random.default_rng(2)
    wide = rng.integers(0, 256, (50, 16), dtype=np.uint8)
    index = HammingIndex(64)
    index.add(wide[:, ::2])  # strided rows
    np.testing.assert_array_equal(index.codes, wide[:, ::2])
    q = wide[::5, ::2]
    assert not q.flags.c_contiguous
    check_snapshot(index.snapshot(), q, 4, 20)


def test_explain_names_each_segment():
    index = HammingIndex(64, "mih", segment_rows=10, auto_compact=False)
    for n in (10, 10, 5):
        index.add(np.zeros((n, 8), np.uint8))
    plans = index.explain(3, radius=2)
    assert [p["rows"] for p in plans] == [10, 10, 5]
    assert [p["backend"] for p in plans] == ["mih", "mih", "numba"]


def soak_live():
    """benchmarks/soak_live.py, the writers-and-readers driver with its per-snapshot oracle."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "soak_live.py"
    spec = importlib.util.spec_from_file_location("soak_live", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("backend", ["mih", "numba", "auto", "auto:mih"])
def test_threads_reading_while_others_write_see_whole_versions(backend):
    """("auto:mih": auto planning MIH for every batch, on segments of any size.)"""
    rng = np.random.default_rng(5)
    backend, _, forced = backend.partition(":")
    with forced_auto(2) if forced else contextmanager(lambda: (yield []))():
        index = HammingIndex(16, backend, segment_rows=64, max_segments=4, max_dead_fraction=0.1)
        index.add(rng.integers(0, 256, (3000, 2), dtype=np.uint8))
        counts = soak_live().hammer(index, seconds=3, writers=2, readers=3)
    # every checked answer was right; on 2 shared cores only a few are checked in 3 s
    assert counts["checked_queries"] >= 2 and counts["added"] > 0 and counts["removed"] > 0 and counts["saves"]


@pytest.mark.slow
def test_ten_second_soak():
    """The soak of benchmarks/soak_live.py for 10 s on 10^5 codes: 2 writers, 4 readers, zero errors."""
    assert soak_live().main(["--n", "100000", "--seconds", "10"]) == 0


def test_an_index_pickles_with_its_tombstones_and_growing_rows():
    import pickle

    rng = np.random.default_rng(7)
    index = HammingIndex(32, "mih", segment_rows=40, auto_compact=False)
    for _ in range(3):
        index.add(rng.integers(0, 256, (30, 4), dtype=np.uint8), metadata={"label": rng.integers(0, 3, 30)})
    index.remove([1, 5, 70])
    copy = pickle.loads(pickle.dumps(index))
    q = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    for got, want in zip(copy.search(q, 7) + copy.range_search(q, 9), index.search(q, 7) + index.range_search(q, 9)):
        np.testing.assert_array_equal(got, want)
    copy.add(q, metadata={"label": np.zeros(4, np.int64)})  # the copy is a live index of its own
    assert len(copy) == len(index) + 4


merge_ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(1, 60)),
    st.tuples(st.just("remove"), st.floats(0, 0.6)),
    st.tuples(st.just("settle"), st.just(0)),  # let the background merges finish
), min_size=1, max_size=25)


@settings(max_examples=examples(20), deadline=None)
@given(ops=merge_ops, nbits=st.sampled_from([16, 64]), backend=st.sampled_from(["mih", "numba"]),
       segment_rows=st.integers(1, 12), merge_factor=st.integers(2, 4), max_segments=st.integers(2, 8),
       max_dead_fraction=st.sampled_from([0.1, 0.5, 1.0]), k=st.integers(1, 12), r=st.integers(0, 8),
       seed=st.integers(0, 999))
def test_background_merge_policy_matches_a_brute_force_model(ops, nbits, backend, segment_rows, merge_factor,
                                                             max_segments, max_dead_fraction, k, r, seed):
    """Adds, removes and the background merges they trigger (size tiers, the leveled floor, tombstones,
    max_segments), checked against brute force after every step, while merges may still be running."""
    rng = np.random.default_rng(seed)
    index = HammingIndex(nbits, backend, segment_rows=segment_rows, merge_factor=merge_factor,
                         max_segments=max_segments, max_dead_fraction=max_dead_fraction)
    model: dict[int, bytes] = {}
    q = rng.integers(0, 256, (3, nbits // 8), dtype=np.uint8)
    for op, size in ops:
        if op == "add":
            codes = rng.integers(0, 256, (size, nbits // 8), dtype=np.uint8)
            codes[: size // 4] = q[0]  # ties broken by id, across segments
            start = max(model, default=-1) + 1
            index.add(codes)
            model.update({start + i: c.tobytes() for i, c in enumerate(codes)})
        elif op == "remove" and model:
            remove_share(index, model, rng, size)
        else:
            index.wait_for_compaction()
        snap = index.snapshot()
        assert len(snap) == len(model)
        np.testing.assert_array_equal(snap.ids, np.array(sorted(model), np.int64))
        check_snapshot(snap, q, k, r)
    index.wait_for_compaction()
    assert index.compaction_error is None
    with index._lock:
        assert index._pick() == []  # settled: nothing left that the policy would merge
    check_snapshot(index.snapshot(), q, k, r)


def test_small_adds_never_rebuild_the_big_segment_and_segments_stay_few():
    """10^4 rows compacted, then 300 adds of 7 rows: the big segment keeps its tables, the small
    ones merge into the floor segment and size tiers, so few segments are searched."""
    rng = np.random.default_rng(3)
    index = HammingIndex(32, "mih", segment_rows=16, merge_factor=2)
    index.add(rng.integers(0, 256, (10_000, 4), dtype=np.uint8))
    index.compact()
    big = index.snapshot().segments[0]
    tables = big.searcher()
    most = 0
    for _ in range(300):
        index.add(rng.integers(0, 256, (7, 4), dtype=np.uint8))
        index.wait_for_compaction()
        most = max(most, len(index.snapshot().segments))
    segs = index.snapshot().segments
    assert segs[0] is big and big.searcher() is tables and len(big) == 10_000
    # 2,100 added rows: the floor segment (below 16 x 2**3 rows), tiers of 128, 256, 512, 1024 rows at
    # most one each with merge_factor 2, the growing one; never more
    assert most <= 1 + 1 + 4 + 1 and len(segs) <= most
    q = index.codes[::500]
    check_snapshot(index.snapshot(), q, 5, 3)
