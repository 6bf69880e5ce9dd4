"""Index persistence: round trips, zero-copy mmap, atomic replacement, and refusal of damaged indexes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashsearch import storage
from hashsearch.errors import CorruptIndexError, InvalidInputError
from hashsearch.storage import MANIFEST, index_size, read_index, write_index
from conftest import examples


def random_codes(n: int, nbits: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, nbits // 8), dtype=np.uint8)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A 64-bit index of 500 codes with shuffled ids and one metadata column."""
    codes = random_codes(500, 64)
    ids = np.random.default_rng(1).permutation(10_000)[:500].astype(np.int64)
    write_index(tmp_path / "ix", codes, ids, 64, backend="numba", params={"threads": 2},
                metadata=pa.table({"label": np.arange(500) % 7}))
    return tmp_path / "ix", codes, ids


def segment_file(path: Path, kind: str = "codes") -> Path:
    """The file of the first segment holding `kind` (codes, metadata, dead)."""
    manifest = json.loads((path / MANIFEST).read_text())
    return path / manifest["segments"][0]["files"][kind]["name"]


def edit_manifest(path: Path, **changes) -> None:
    manifest = json.loads((path / MANIFEST).read_text())
    manifest.update(changes)
    (path / MANIFEST).write_text(json.dumps(manifest))


def mapped_files(address: int) -> list[str]:
    """Files whose memory mapping in this process contains `address` (Linux /proc/self/maps)."""
    hits = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        if lo <= address < hi and len(parts) >= 6:
            hits.append(parts[5])
    return hits


# ------------------------------------------------------------------------------------ round trips

@settings(max_examples=examples(40), deadline=None)
@given(n=st.integers(0, 60), nbytes=st.integers(1, 128), seed=st.integers(0, 2**16),
       id_kind=st.sampled_from(["none", "range", "shuffled"]), mmap=st.booleans())
def test_round_trip_property(tmp_path_factory, n, nbytes, seed, id_kind, mmap):
    codes = random_codes(n, nbytes * 8, seed)
    ids = {"none": None, "range": np.arange(n) + seed,
           "shuffled": np.random.default_rng(seed).permutation(n) * 3 - 7}[id_kind]
    path = tmp_path_factory.mktemp("rt") / "ix"
    write_index(path, codes, ids, nbytes * 8, backend="mih", params={"m": 2})
    got = read_index(path, mmap=mmap)
    want_ids = np.arange(n) if ids is None else ids
    order = np.argsort(want_ids)  # rows come back in ascending id order
    np.testing.assert_array_equal(got.codes, codes[order])
    np.testing.assert_array_equal(got.ids, want_ids[order])
    assert got.codes.dtype == np.uint8 and got.codes.shape == (n, nbytes)
    assert got.ids.dtype == np.int64
    assert (got.nbits, got.backend, got.params, got.count) == (nbytes * 8, "mih", {"m": 2}, n)


def test_metadata_and_manifest(saved):
    path, codes, ids = saved
    got = read_index(path)
    order = np.argsort(ids)
    assert got.segments[0].metadata.column("label").to_pylist() == list((np.arange(500) % 7)[order])
    m = got.manifest
    assert (m["format"], m["format_version"], m["nbits"], m["count"]) == ("hashsearch-index", 2, 64, 500)
    [seg] = m["segments"]
    assert set(seg["files"]) == {"codes", "metadata"} and seg["rows"] == 500
    for entry in seg["files"].values():
        assert entry["bytes"] == (path / entry["name"]).stat().st_size
        assert entry["sha256"] == storage.sha256_file(path / entry["name"])


def test_dict_metadata_is_accepted(tmp_path):
    write_index(tmp_path / "ix", random_codes(3, 8), None, 8, backend="numba", params={},
                metadata={"name": ["a", "b", "c"]})
    assert read_index(tmp_path / "ix").segments[0].metadata.column("name").to_pylist() == ["a", "b", "c"]


def test_sequential_ids_are_not_stored(tmp_path):
    codes = random_codes(1000, 64)
    write_index(tmp_path / "seq", codes, np.arange(50, 1050), 64, backend="numba", params={})
    write_index(tmp_path / "any", codes, np.arange(1000)[::-1] * 2, 64, backend="numba", params={})
    seq = read_index(tmp_path / "seq")
    assert seq.manifest["segments"][0]["ids"] == {"stored": False, "start": 50}
    assert seq.segments[0].ids is None and seq.segments[0].id_start == 50
    np.testing.assert_array_equal(seq.ids, np.arange(50, 1050))
    assert read_index(tmp_path / "any").segments[0].ids is not None
    extra = index_size(tmp_path / "any") - index_size(tmp_path / "seq")
    assert 8 * 1000 <= extra < 8 * 1000 + 200  # stored ids cost their 8 bytes, little more


# --------------------------------------------------------------------------------- memory mapping

def test_mmap_gives_read_only_views_of_the_file(saved):
    path, codes, ids = saved
    before = pa.total_allocated_bytes()
    got = read_index(path, mmap=True)
    # the small metadata table is read into memory, the codes and ids are not
    assert pa.total_allocated_bytes() - before < codes.nbytes + ids.nbytes
    for arr in (got.codes, got.ids):
        assert not arr.flags.writeable and not arr.flags.owndata
        assert mapped_files(arr.__array_interface__["data"][0]) == [str(segment_file(path).resolve())]
    order = np.argsort(ids)
    np.testing.assert_array_equal(got.codes, codes[order])
    with pytest.raises(ValueError):
        got.codes[0, 0] = 1


def test_without_mmap_reads_into_memory(saved):
    path, codes, _ = saved
    before = pa.total_allocated_bytes()
    got = read_index(path, mmap=False)
    assert pa.total_allocated_bytes() - before >= codes.nbytes
    assert mapped_files(got.codes.__array_interface__["data"][0]) != [str(segment_file(path).resolve())]
    np.testing.assert_array_equal(got.codes, codes[np.argsort(saved[2])])


def test_views_outlive_the_index_object(saved):
    path, codes, ids = saved
    view = read_index(path).codes[:10]
    import gc
    gc.collect()
    np.testing.assert_array_equal(view, codes[np.argsort(ids)][:10])


# ------------------------------------------------------------------------------- atomic replacing

def test_overwrite_needs_the_flag_and_replaces_the_whole_index(saved):
    path, codes, ids = saved
    new = random_codes(20, 128, seed=5)
    with pytest.raises(InvalidInputError, match=r"already holds another index; pass overwrite=True \(--force\)"):
        write_index(path, new, None, 128, backend="faiss", params={})
    np.testing.assert_array_equal(read_index(path).ids, np.sort(ids))  # untouched
    write_index(path, new, None, 128, backend="faiss", params={}, overwrite=True)
    got = read_index(path)
    assert got.nbits == 128 and got.segments[0].metadata is None
    np.testing.assert_array_equal(got.codes, new)
    assert sorted(p.name for p in path.parent.iterdir()) == ["ix"]  # no temporary or old directories
    # the replaced index's files stay one generation (for readers in flight), then go
    write_index(path, new, None, 128, backend="faiss", params={}, overwrite=True)
    assert not list(path.glob("*.parquet")) and len(list(path.glob("*.arrow"))) == 2  # this one + previous


def test_failed_write_leaves_old_index_intact_and_names_the_users_path(saved, monkeypatch):
    path, codes, ids = saved

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.pq, "write_table", boom)
    with pytest.raises(OSError, match="No space left") as err:
        write_index(path, random_codes(500, 64, 9), None, 64, backend="numba", params={},
                    metadata={"x": np.zeros(500)}, overwrite=True)
    assert str(path) in str(err.value) and ".hs-tmp" not in str(err.value)
    got = read_index(path)
    order = np.argsort(ids)
    np.testing.assert_array_equal(got.codes, codes[order])
    np.testing.assert_array_equal(got.ids, ids[order])
    assert sorted(p.name for p in path.parent.iterdir()) == ["ix"]
    assert not [p for p in path.iterdir() if "tmp" in p.name]


def test_refuses_to_write_into_what_is_not_an_index(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("precious")
    (tmp_path / "file").write_text("precious")
    for target in ("docs", "file"):
        for overwrite in (False, True):
            with pytest.raises(InvalidInputError, match="not (overwriting|writing into) it"):
                write_index(tmp_path / target, random_codes(2, 8), None, 8, backend="numba", params={},
                            overwrite=overwrite)
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["thesis.tex"]
    (tmp_path / "empty").mkdir()
    write_index(tmp_path / "empty", random_codes(2, 8), None, 8, backend="numba", params={})
    assert read_index(tmp_path / "empty").count == 2


def test_saves_never_delete_files_they_did_not_write(saved):
    path = saved[0]
    (path / "notes.txt").write_text("mine")
    (path / "seg-notours.codes.arrow").write_text("mine too")
    for _ in range(3):
        write_index(path, random_codes(5, 8), None, 8, backend="numba", params={}, overwrite=True)
    assert (path / "notes.txt").read_text() == "mine" and (path / "seg-notours.codes.arrow").exists()


# -------------------------------------------------------------------------------- refused indexes

def flip_last_code_byte(path: Path) -> None:
    """Change one byte of code data (size unchanged): only the checksum can notice."""
    got = read_index(path, verify=False)
    offset = got.codes.__array_interface__["data"][0] - _file_base(segment_file(path))
    del got
    data = bytearray(segment_file(path).read_bytes())
    data[offset] ^= 0xFF
    segment_file(path).write_bytes(bytes(data))


def _file_base(file: Path) -> int:
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[5] == str(file.resolve()) and int(parts[2], 16) == 0:
            return int(parts[0].split("-")[0], 16)
    raise AssertionError("file not mapped")


def edit_segment(path: Path, **changes) -> None:
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["segments"][0].update(changes)
    (path / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / MANIFEST).unlink(), "manifest.json: missing"),
    (lambda p: (p / MANIFEST).write_text("{not json"), "not valid JSON"),
    (lambda p: edit_manifest(p, format="something-else"), "not a hashsearch-index manifest"),
    (lambda p: edit_manifest(p, format_version=99), "unknown format version 99"),
    (lambda p: edit_manifest(p, nbits="64"), "field 'nbits'"),
    (lambda p: edit_segment(p, name="../x"), "bad segment entry"),
    (lambda p: edit_segment(p, files={"codes": {"name": "../../etc/passwd", "bytes": 1, "sha256": "x"}}),
     "bad file entry"),
    (lambda p: segment_file(p).unlink(), r"codes\.arrow: missing"),
    (lambda p: segment_file(p, "metadata").unlink(), r"meta\.parquet: missing"),
    (lambda p: segment_file(p).write_bytes(segment_file(p).read_bytes()[:-100]), r"codes\.arrow: truncated"),
    (lambda p: segment_file(p).write_bytes(segment_file(p).read_bytes() + b"x"), "has extra bytes"),
    (flip_last_code_byte, r"codes\.arrow: checksum mismatch"),
])
def test_damaged_index_is_refused(saved, damage, message):
    path = saved[0]
    damage(path)
    with pytest.raises(CorruptIndexError, match=message):
        read_index(path)


def test_truncated_file_with_matching_manifest_is_refused(saved):
    """Even if the manifest was rewritten to match, a cut Arrow file does not parse."""
    path = saved[0]
    data = segment_file(path).read_bytes()[:-64]
    segment_file(path).write_bytes(data)
    files = json.loads((path / MANIFEST).read_text())["segments"][0]["files"]
    files["codes"].update(bytes=len(data), sha256=storage.sha256_file(segment_file(path)))
    edit_segment(path, files=files)
    with pytest.raises(CorruptIndexError, match=r"codes\.arrow: unreadable Arrow IPC file"):
        read_index(path)


@pytest.mark.parametrize("where, changes, message", [
    ("segment", {"rows": 499}, "500 rows but the manifest says 499"),
    ("index", {"count": 499}, "500 live rows but the manifest says 499"),
    ("index", {"nbits": 128}, "does not match the manifest"),
    ("segment", {"ids": {"stored": False, "start": 0}}, "does not match the manifest"),
])
def test_manifest_disagreeing_with_arrow_schema_is_refused(saved, where, changes, message):
    path = saved[0]
    (edit_segment if where == "segment" else edit_manifest)(path, **changes)
    with pytest.raises(CorruptIndexError, match=message):
        read_index(path, verify=False)


def test_verify_false_skips_hashing_but_checks_sizes(saved):
    path, codes, ids = saved
    flip_last_code_byte(path)
    got = read_index(path, verify=False)  # same size, valid Arrow: accepted without hashing
    assert (got.codes != codes[np.argsort(ids)]).sum() == 1
    segment_file(path).write_bytes(segment_file(path).read_bytes()[:-8])
    with pytest.raises(CorruptIndexError, match="truncated"):
        read_index(path, verify=False)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no index at"):
        read_index(tmp_path / "nowhere")


def test_interrupted_swap_names_the_old_index(tmp_path):
    """A crash between moving the old index aside and renaming the new one in: say where it is."""
    write_index(tmp_path / "ix", random_codes(4, 8), None, 8, backend="numba", params={})
    (tmp_path / "ix").rename(tmp_path / ".ix.old-123")
    with pytest.raises(FileNotFoundError, match=r"interrupted: the previous index is in .*\.ix\.old-123"):
        read_index(tmp_path / "ix")


# ---------------------------------------------------------------------------------- input errors

@pytest.mark.parametrize("kwargs, message", [
    ({"codes": np.zeros((4, 8), np.int32)}, "dtype uint8"),
    ({"codes": np.zeros((4, 8), np.uint8), "nbits": 32}, "nbits is 32"),
    ({"ids": np.arange(3)}, "one per code"),
    ({"ids": np.arange(4.0)}, "must be integers"),
    ({"metadata": {"x": [1, 2]}}, "metadata has 2 rows but there are 4 codes"),
    ({"params": {"f": object()}}, "JSON-serialisable"),
    ({"backend": ""}, "backend must be"),
])
def test_bad_input_is_refused_before_writing(tmp_path, kwargs, message):
    args = {"codes": np.zeros((4, 8), np.uint8), "ids": None, "nbits": 64, "backend": "numba",
            "params": {}, "metadata": None} | kwargs
    with pytest.raises(InvalidInputError, match=message):
        write_index(tmp_path / "ix", args.pop("codes"), args.pop("ids"), args.pop("nbits"), **args)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ size budget

def test_flat_storage_overhead_is_within_ten_percent(tmp_path):
    """n = 100k 64-bit codes with sequential ids: bytes on disk at most 1.10 x the raw codes."""
    codes = random_codes(100_000, 64)
    write_index(tmp_path / "ix", codes, None, 64, backend="numba", params={})
    assert index_size(tmp_path / "ix") <= 1.10 * codes.nbytes


# ---------------------------------------------------------------- HammingIndex through this format

@pytest.mark.parametrize("backend, params", [("numba", {}), ("faiss", {"nhash": 2}), ("mih", {"m": 2})])
def test_hamming_index_keeps_backend_and_params(tmp_path, backend, params):
    from hashsearch.index import HammingIndex

    index = HammingIndex(32, backend=backend, **params)
    index.add(random_codes(10, 32))
    index.save(tmp_path / "ix")
    loaded = HammingIndex.load(tmp_path / "ix")
    assert (loaded.backend, loaded.params, loaded.nbits, len(loaded)) == (backend, params, 32, 10)


def test_hamming_index_save_load_add_remove(tmp_path):
    """Search results of a loaded index are checked here on FAISS (the CLI tests search the others)."""
    from hashsearch.codes import hamming_bruteforce
    from hashsearch.index import HammingIndex

    codes = random_codes(400, 64, seed=3)
    ids = np.random.default_rng(4).permutation(5000)[:400]
    index = HammingIndex(64, backend="faiss")
    index.add(codes, ids, metadata={"row": np.arange(400)})
    index.save(tmp_path / "ix")

    loaded = HammingIndex.load(tmp_path / "ix", mmap=True)
    assert (loaded.nbits, loaded.backend, len(loaded)) == (64, "faiss", 400)
    assert mapped_files(loaded.codes.__array_interface__["data"][0]) == [str(segment_file(tmp_path / "ix").resolve())]
    queries = random_codes(5, 64, seed=5)
    for got, want in zip(loaded.search(queries, 10), index.search(queries, 10)):
        np.testing.assert_array_equal(got, want)

    more = random_codes(50, 64, seed=6)
    loaded.add(more, np.arange(10_000, 10_050), metadata={"row": np.arange(400, 450)})
    assert loaded.remove(ids[:30]) == 30
    loaded.save(tmp_path / "ix")  # over the directory its own codes are mapped from

    again = HammingIndex.load(tmp_path / "ix", mmap=False)
    keep = np.isin(np.arange(400), np.arange(30), invert=True)
    want_ids = np.concatenate([ids[keep], np.arange(10_000, 10_050)])
    want_codes = np.concatenate([codes[keep], more])
    order = np.argsort(want_ids)
    np.testing.assert_array_equal(again.ids, want_ids[order])
    np.testing.assert_array_equal(again.codes, want_codes[order])
    assert again.metadata.column("row").to_pylist() == np.concatenate(
        [np.arange(400)[keep], np.arange(400, 450)])[order].tolist()
    dist, got_ids = again.search(queries, 3)
    truth = hamming_bruteforce(queries, want_codes)
    for q in range(5):
        best = sorted(zip(truth[q].tolist(), want_ids.tolist()))[:3]
        assert list(zip(dist[q].tolist(), got_ids[q].tolist())) == best


def test_hamming_index_with_default_ids_stores_no_ids(tmp_path):
    from hashsearch.index import HammingIndex

    index = HammingIndex(64)
    index.add(random_codes(100, 64))
    index.save(tmp_path / "ix")
    assert read_index(tmp_path / "ix").manifest["segments"][0]["ids"] == {"stored": False, "start": 0}
    np.testing.assert_array_equal(HammingIndex.load(tmp_path / "ix").ids, np.arange(100))


# ------------------------------------------------------------- incremental saves, old format, crashes

def files_of(path: Path) -> dict[str, int]:
    """name -> inode of every file in the directory (a rewritten file gets a new inode)."""
    return {p.name: p.stat().st_ino for p in path.iterdir()}


def test_incremental_save_writes_only_what_changed(tmp_path):
    from hashsearch.index import HammingIndex

    index = HammingIndex(64, segment_rows=1000)
    index.add(random_codes(5000, 64), metadata={"label": np.arange(5000) % 3})
    index.compact()
    index.save(tmp_path / "ix")
    before = files_of(tmp_path / "ix")
    loaded = HammingIndex.load(tmp_path / "ix")
    loaded.add(random_codes(10, 64, seed=2), metadata={"label": np.zeros(10, np.int64)})
    loaded.remove([3, 4, 5])
    loaded.save(tmp_path / "ix")  # its own directory: no flag needed
    after = files_of(tmp_path / "ix")
    kept = {n for n in before if n.endswith((".codes.arrow", ".meta.parquet"))}
    assert all(after[n] == before[n] for n in kept)  # the big segment was not rewritten
    new = sorted(set(after) - set(before))
    assert len(new) == 3 and sum(n.endswith(".npy") for n in new) == 1  # small segment (codes, meta) + tombstones
    again = HammingIndex.load(tmp_path / "ix")
    assert len(again) == 5007 and not np.isin([3, 4, 5], again.ids).any()
    np.testing.assert_array_equal(again.codes, loaded.codes)
    q = random_codes(4, 64, seed=3)
    for got, want in zip(again.search(q, 9), loaded.search(q, 9)):
        np.testing.assert_array_equal(got, want)
    assert again.metadata.equals(loaded.metadata)


def write_format_1(path: Path, codes: np.ndarray, ids: np.ndarray, metadata: pa.Table) -> None:
    """An index directory exactly as the previous release wrote it (format version 1)."""
    import pyarrow.parquet as pq

    path.mkdir()
    columns = [pa.Array.from_buffers(pa.binary(codes.shape[1]), len(codes), [None, pa.py_buffer(codes)]),
               pa.array(ids, pa.int64())]
    batch = pa.record_batch(columns, names=["code", "id"])
    with pa.OSFile(str(path / "codes.arrow"), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)
    pq.write_table(metadata, path / "metadata.parquet")
    files = {name: {"bytes": (path / name).stat().st_size, "sha256": storage.sha256_file(path / name)}
             for name in ("codes.arrow", "metadata.parquet")}
    (path / MANIFEST).write_text(json.dumps({
        "format": "hashsearch-index", "format_version": 1, "nbits": codes.shape[1] * 8, "count": len(codes),
        "ids": {"stored": True}, "backend": "mih", "params": {"m": 2}, "files": files}))


def test_reads_format_1_and_upgrades_it_in_place_without_rewriting_codes(tmp_path):
    from hashsearch.index import HammingIndex

    codes = random_codes(300, 32, seed=8)
    ids = np.random.default_rng(8).permutation(1000)[:300]
    write_format_1(tmp_path / "old", codes, ids, pa.table({"row": np.arange(300)}))
    index = HammingIndex.load(tmp_path / "old")
    order = np.argsort(ids)
    assert (index.backend, index.params, len(index)) == ("mih", {"m": 2}, 300)
    np.testing.assert_array_equal(index.ids, ids[order])
    np.testing.assert_array_equal(index.codes, codes[order])
    assert index.metadata.column("row").to_pylist() == order.tolist()
    inode = (tmp_path / "old" / "codes.arrow").stat().st_ino
    index.add(random_codes(2, 32), ids=[5000, 5001], metadata={"row": [300, 301]})
    index.save(tmp_path / "old")
    manifest = json.loads((tmp_path / "old" / MANIFEST).read_text())
    assert manifest["format_version"] == 2
    assert (tmp_path / "old" / "codes.arrow").stat().st_ino == inode
    again = HammingIndex.load(tmp_path / "old")
    assert len(again) == 302 and again.ids[-1] == 5001


def test_another_index_is_replaced_only_with_overwrite(tmp_path):
    from hashsearch.index import HammingIndex

    a, b = HammingIndex(8), HammingIndex(8)
    a.add(random_codes(3, 8))
    b.add(random_codes(4, 8))
    a.save(tmp_path / "ix")
    with pytest.raises(InvalidInputError, match="already holds another index"):
        b.save(tmp_path / "ix")
    b.save(tmp_path / "ix", overwrite=True)
    assert len(HammingIndex.load(tmp_path / "ix")) == 4


def test_interrupted_save_is_reported_by_info_and_cleaned_by_the_next_save(tmp_path):
    from hashsearch.index import HammingIndex
    from hashsearch.querying import describe_index

    index = HammingIndex(16)
    index.add(random_codes(50, 16))
    index.save(tmp_path / "ix")
    # what a crash mid-save leaves: a half-written temporary file and a written but uncommitted segment
    (tmp_path / "ix" / ".hs-tmp-0123456789ab.seg-00000000000000aa.codes.arrow").write_bytes(b"partial")
    (tmp_path / "ix" / "seg-00000000000000ab.codes.arrow").write_bytes(b"uncommitted")
    (tmp_path / ".ix.tmp-0123456789ab").mkdir()  # the previous release's leftover
    info = describe_index(tmp_path / "ix")
    assert len(info["leftover_files"]) == 3 and info["count"] == 50
    index.add(random_codes(1, 16))
    index.save(tmp_path / "ix")
    assert describe_index(tmp_path / "ix")["leftover_files"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]


def run_saver(path: Path, *args: str):
    import subprocess
    import sys

    script = Path(__file__).with_name("saver_process.py")
    return subprocess.Popen([sys.executable, str(script), str(path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def load_and_check(path: Path, queries: np.ndarray) -> int:
    """Load the index and check a search against brute force of the version loaded; returns its size."""
    from hashsearch.codes import hamming_bruteforce
    from hashsearch.index import HammingIndex

    index = HammingIndex.load(path)
    dist, ids = index.search(queries, 5)
    full = hamming_bruteforce(queries, index.codes)
    for i in range(len(queries)):
        want = sorted(zip(full[i].tolist(), index.ids.tolist()))[:5]
        assert list(zip(dist[i].tolist(), ids[i].tolist())) == want
    return len(index)


def test_a_reader_never_fails_while_another_process_saves(tmp_path):
    """One process saves every 20 ms; this one loads and queries 150 times: no error, no mismatch
    (benchmarks/bench_live.py --loads 5000 runs the long version)."""
    from hashsearch.index import HammingIndex

    index = HammingIndex(64, segment_rows=64)
    index.add(random_codes(500, 64))
    index.save(tmp_path / "ix")
    saver = run_saver(tmp_path / "ix", "--every", "0.02")
    try:
        saver.stdout.readline()  # it has saved once
        queries = random_codes(3, 64, seed=1)
        sizes = [load_and_check(tmp_path / "ix", queries) for _ in range(150)]
    finally:
        saver.kill()
        out, err = saver.communicate()
    assert not err.strip() or "Traceback" not in err, err
    assert len(set(sizes)) > 1 and int(out.split()[-1]) > 2  # the index did change under the reader


def test_a_killed_save_leaves_a_loadable_index_that_the_next_save_cleans(tmp_path):
    import signal
    import time

    from hashsearch.index import HammingIndex
    from hashsearch.querying import describe_index

    index = HammingIndex(64, segment_rows=128)
    index.add(random_codes(2000, 64))
    index.save(tmp_path / "ix")
    rng = np.random.default_rng(0)
    queries = random_codes(3, 64, seed=1)
    for _ in range(4):
        saver = run_saver(tmp_path / "ix", "--every", "0")
        saver.stdout.readline()  # started and saved once
        time.sleep(float(rng.uniform(0, 0.3)))
        saver.send_signal(signal.SIGKILL)
        saver.wait()
        load_and_check(tmp_path / "ix", queries)  # the old or the new version, whole
    describe_index(tmp_path / "ix")  # reports, never fails
    index = HammingIndex.load(tmp_path / "ix")
    index.add(random_codes(1, 64))
    index.save(tmp_path / "ix")
    assert describe_index(tmp_path / "ix")["leftover_files"] == []
