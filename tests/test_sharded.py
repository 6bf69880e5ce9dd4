"""ShardedIndex on a local Ray instance: exactly what one HammingIndex over the same codes returns,
after adds and removes, across save/load, and through shard actors killed mid-query."""
import threading
import time

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hashsearch import HammingIndex, InvalidInputError, UnknownIdError
from hashsearch.codes import hamming_bruteforce

pytest.importorskip("ray")
from hashsearch.sharded import ShardUnavailableError, ShardedIndex, is_sharded, write_sharded  # noqa: E402

NBITS = 16  # few distinct distances: many ties, so the (distance, id) order is tested


def same_answers(sharded, single, q, k, r):
    d, i = sharded.search(q, k)
    d0, i0 = single.search(q, k)
    assert (d == d0).all() and (i == i0).all()
    got, want = sharded.range_search(q, r), single.range_search(q, r)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and (a == b).all()
    assert len(sharded) == len(single) and (sharded.ids == single.ids).all()


@pytest.fixture(scope="module", params=[(1, None), (3, None), (5, 5)])  # 2 shards: the tests below
def sharded(request, ray_local):
    shards, actors = request.param  # default: 2 actors (the CPUs) holding several shards each
    with ShardedIndex(NBITS, shards=shards, actors=actors) as index:
        yield index


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_matches_one_hamming_index_after_adds_and_removes(sharded, data):
    if len(sharded):
        sharded.remove(sharded.ids)  # a clean slate: the same state as a new index
    single = HammingIndex(NBITS)
    rng = np.random.default_rng(data.draw(st.integers(0, 10**6)))
    n = data.draw(st.integers(0, 60))
    codes = rng.integers(0, 256, (n, NBITS // 8), dtype=np.uint8)
    ids = rng.permutation(4 * n + 5)[:n] if data.draw(st.booleans()) else None
    meta = {"tag": [f"t{j}" for j in range(n)]}
    for index in (sharded, single):
        index.add(codes, ids, meta)
    q = rng.integers(0, 256, (data.draw(st.integers(0, 6)), NBITS // 8), dtype=np.uint8)
    k, r = data.draw(st.integers(1, 70)), data.draw(st.integers(0, NBITS))
    same_answers(sharded, single, q, k, r)
    if n:
        gone = rng.choice(single.ids, data.draw(st.integers(1, n)), replace=False)
        assert sharded.remove(gone) == single.remove(gone)
    more = rng.integers(0, 256, (5, NBITS // 8), dtype=np.uint8)
    for index in (sharded, single):  # default ids continue after the largest remaining id
        index.add(more, None, {"tag": ["new"] * 5})
    same_answers(sharded, single, q, k, r)
    assert sharded.metadata.equals(single.metadata)
    probe = single.ids[::3]
    assert sharded.metadata_rows(probe).equals(single.metadata.take(np.searchsorted(single.ids, probe)))


@pytest.fixture(scope="module")
def two_shards(ray_local):
    with ShardedIndex(NBITS, shards=2, restart_timeout_s=60) as index:
        yield index


def test_bad_calls_name_the_problem_and_change_nothing(two_shards):
    index = two_shards
    codes = np.arange(8, dtype=np.uint8).reshape(4, 2)
    index.add(codes, np.array([1, 2, 3, 4]))
    with pytest.raises(InvalidInputError, match="duplicate id 3"):
        index.add(codes[:2], np.array([3, 10]))
    with pytest.raises(UnknownIdError, match="id 9 is not in the index"):
        index.remove([2, 9])
    with pytest.raises(InvalidInputError, match="k must be a positive integer"):
        index.search(codes, 0)
    with pytest.raises(InvalidInputError, match="32-bit codes"):
        index.search(np.zeros((1, 4), np.uint8), 1)
    with pytest.raises(InvalidInputError, match="metadata must be given with every add or with none"):
        index.add(codes, None, {"x": [1, 2, 3, 4]})
    with pytest.raises(InvalidInputError, match="shards must be an integer >= 1"):
        ShardedIndex(NBITS, shards=0)
    assert len(index) == 4 and index.ids.tolist() == [1, 2, 3, 4]
    index.remove(index.ids)


def test_written_shards_load_save_in_place_and_replicas_cover_for_a_dead_one(ray_local, tmp_path):
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (500, 4), dtype=np.uint8)
    ids = rng.permutation(5000)[:500]
    single = HammingIndex(32, backend="mih")
    single.add(codes, ids)
    assert write_sharded(tmp_path / "idx", codes, ids, 3, backend="mih") == \
        [int(np.count_nonzero(ids % 3 == s)) for s in range(3)]
    assert is_sharded(tmp_path / "idx")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("not ours")
    q = rng.integers(0, 256, (20, 4), dtype=np.uint8)
    with ShardedIndex.load(tmp_path / "idx", replicas=2, actors=2) as index:  # shards 0, 2 in actor 0
        same_answers(index, single, q, 10, 9)
        ray_local.kill(index.actor(0, replica=1), no_restart=True)
        for _ in range(3):  # queries rotate over both replicas of shard 0: the live one answers
            same_answers(index, single, q, 10, 9)
        with pytest.raises(InvalidInputError, match="not overwriting"):
            index.save(tmp_path / "other")
        assert (tmp_path / "other" / "keep.txt").read_text() == "not ours"
        with pytest.raises(ShardUnavailableError, match=r"shards 0, 2 of 3 \(replica 1\)"):
            index.remove(ids[ids % 3 == 0][:1])  # a write must reach every replica: the dead one is named
    single.remove(ids[:3])
    single.add(codes[:2] ^ np.uint8(1))
    with ShardedIndex.load(tmp_path / "idx") as index:
        index.remove(ids[:3])
        index.add(codes[:2] ^ np.uint8(1))
        index.save(tmp_path / "idx")  # in place, while its shards map the old files
        same_answers(index, single, q, 10, 9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "other"]  # no temporary left behind
    assert len(HammingIndex.load(tmp_path / "idx" / "shard-00001")) == int(np.count_nonzero(single.ids % 3 == 1))


def test_a_killed_shard_restarts_and_no_query_is_wrong_or_lost(ray_local, two_shards, tmp_path):
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (3000, 2), dtype=np.uint8)
    single = HammingIndex(16)
    single.add(codes)
    q = rng.integers(0, 256, (8, 2), dtype=np.uint8)
    want = single.search(q, 20)
    index = two_shards
    if index.ids.size:
        index.remove(index.ids)
    index.add(codes[:2000])
    index.save(tmp_path / "f")  # what a restarted shard reopens
    index.add(codes[2000:])  # not saved: the restarted shard gets it by replay
    before = index.actor(1).stats.remote()
    pid = ray_local.get(before)["pid"]
    killer = threading.Timer(0.3, lambda: ray_local.kill(index.actor(1), no_restart=False))
    killer.start()
    answered, deadline = 0, time.monotonic() + 60
    while time.monotonic() < deadline:
        d, i = index.search(q, 20)
        assert (d == want[0]).all() and (i == want[1]).all()
        answered += 1
        if answered > 5 and ray_local.get(index.actor(1).stats.remote())["pid"] != pid:
            break
    killer.join()
    assert ray_local.get(index.actor(1).stats.remote())["pid"] != pid, "the shard was never restarted"
    same_answers(index, single, q, 20, 4)  # nothing lost
    ray_local.kill(index.actor(1), no_restart=True)  # now gone for good: named, never a partial answer
    for _ in range(300):  # ray.kill returns before the actor is gone: wait until it no longer answers
        try:
            ray_local.get(index.actor(1).stats.remote(), timeout=5)
        except Exception:
            break
        time.sleep(0.1)
    with pytest.raises(ShardUnavailableError, match=r"shards? (\d+, )*1 of 2"):  # its actor may hold shard 0 too
        index.search(q, 20)


def _files(root):
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_saving_again_writes_only_the_changed_shard_and_the_top_manifest_commits(ray_local, tmp_path, monkeypatch):
    import hashsearch.sharded as sharded_module

    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, (600, 2), dtype=np.uint8)
    single = HammingIndex(NBITS)
    single.add(codes)
    q = rng.integers(0, 256, (10, 2), dtype=np.uint8)
    idx = tmp_path / "idx"
    with ShardedIndex(NBITS, shards=3) as index:
        index.add(codes)
        index.save(idx)
        before, dirs = _files(idx), {p.name: p.stat().st_ino for p in idx.iterdir() if p.is_dir()}
        more = rng.integers(0, 256, (4, 2), dtype=np.uint8)
        index.add(more, np.array([1000, 1003, 1006, 1009]))  # all route to shard 1
        single.add(more, np.array([1000, 1003, 1006, 1009]))
        index.save(idx)
        after = _files(idx)
        assert {p.name: p.stat().st_ino for p in idx.iterdir() if p.is_dir()} == dirs  # no directory swapped
        for name, stamp in before.items():  # shards 0 and 2 untouched; shard 1's old segment kept as it was
            if name.startswith(("shard-00000/", "shard-00002/")) or name.endswith(".codes.arrow"):
                assert after.get(name) == stamp, name
        new = sorted(set(after) - set(before))
        assert new and all(name.startswith("shard-00001/seg-") for name in new), new
        assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
        same_answers(index, single, q, 15, 5)

        committed = HammingIndex(NBITS)  # what the last save committed
        committed.add(np.concatenate([codes, more]), single.ids)
        single.remove([1, 2, 1003])
        index.remove([1, 2, 1003])  # shards 1 and 2 change

        def crash(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(sharded_module, "replace_manifest", crash)
        with pytest.raises(OSError, match="disk full"):
            index.save(idx)  # the shards saved, the top manifest did not: the save never happened
    monkeypatch.undo()
    info = sharded_module.describe_sharded(idx)
    assert info["shards_ahead_of_manifest"] == [1, 2] and info["count"] == 604
    with ShardedIndex.load(idx) as index:
        same_answers(index, committed, q, 15, 5)
        index.remove([1, 2, 1003])
        index.save(idx)
    with ShardedIndex.load(idx) as index:
        same_answers(index, single, q, 15, 5)
    assert sharded_module.describe_sharded(idx)["shards_ahead_of_manifest"] == []


def test_info_describes_a_sharded_directory_and_its_leftovers(ray_local, tmp_path):
    from click.testing import CliRunner

    from hashsearch.cli import main

    ids = np.arange(0, 700, 7)
    write_sharded(tmp_path / "idx", np.random.default_rng(0).integers(0, 256, (100, 8), dtype=np.uint8), ids, 4)
    (tmp_path / "idx" / "shard-00002" / ".hs-tmp-0123456789ab.seg-0123456789abcdef.codes.arrow").write_bytes(b"x")
    (tmp_path / "idx" / "manifest.json.hs-tmp-0123456789ab").write_text("{")
    (tmp_path / ".idx.tmp-0123456789ab").mkdir()
    result = CliRunner().invoke(main, ["info", str(tmp_path / "idx")])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(": ", 1) for line in result.output.splitlines())
    assert lines["shards"] == "4" and lines["nbits"] == "64" and lines["count"] == "100"
    assert lines["backend"] == "numba" and lines["manifest_version"] == "1" and lines["checksums"] == "ok"
    assert lines["rows_per_shard"] == str([int(np.count_nonzero(ids % 4 == s)) for s in range(4)])
    stray = lines["leftover_files"]
    assert "shard-00002/.hs-tmp-0123456789ab.seg-0123456789abcdef.codes.arrow" in stray
    assert "manifest.json.hs-tmp-0123456789ab" in stray and ".idx.tmp-0123456789ab" in stray
