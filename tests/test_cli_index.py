"""`hashsearch build-index`, `query` and `info`: code files in, results out, errors as one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from hashsearch.cli import main
from hashsearch.codes import encode_sign, hamming_bruteforce, pack_bits
from hashsearch.index import HammingIndex


def save_parquet(tmp_path: Path, name: str, columns: dict) -> Path:
    pq.write_table(pa.table(columns), tmp_path / name)
    return tmp_path / name


def oracle(queries: np.ndarray, db: np.ndarray, ids: np.ndarray) -> list[list[tuple[int, int]]]:
    """Every (distance, id) per query, sorted: what top-k and radius answers are prefixes/filters of."""
    dist = hamming_bruteforce(queries, db)
    return [sorted(zip(row.tolist(), ids.tolist())) for row in dist]


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, message: str) -> None:
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """300 clustered 64-bit codes (so that small radii find something), shuffled ids, 20 queries."""
    tmp = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(7)
    centres = rng.random((6, 64)) < 0.5
    bits = centres[rng.integers(0, 6, 300)] ^ (rng.random((300, 64)) < 0.04)
    db = pack_bits(bits)
    db[10] = db[11]  # an exact duplicate: tie broken by id
    ids = rng.permutation(100_000)[:300].astype(np.int64)
    queries = pack_bits(centres[rng.integers(0, 6, 20)] ^ (rng.random((20, 64)) < 0.04))
    np.save(tmp / "db.npy", db)
    np.save(tmp / "ids.npy", ids)
    np.save(tmp / "q.npy", queries)
    return tmp, db, ids, queries


@pytest.mark.parametrize("backend", ["numba", "faiss", "mih"])
def test_build_info_query_round_trip(corpus, tmp_path, backend):
    tmp, db, ids, queries = corpus
    out = tmp_path / "ix"
    result = invoke("build-index", tmp / "db.npy", "--out", out, "--backend", backend,
                    "--ids", tmp / "ids.npy", "--batch-size", 64)
    assert result.exit_code == 0, result.output
    assert f"300 codes of 64 bits, backend {backend}" in result.stderr

    info = json.loads(invoke("info", out, "--json").stdout)
    assert (info["nbits"], info["count"], info["backend"], info["checksums"]) == (64, 300, backend, "ok")
    assert info["ids_stored"] and info["bytes_per_item"] >= 16

    truth = oracle(queries, db, ids)
    result = invoke("query", out, tmp / "q.npy", "--topk", 7, "--batch-size", 6)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["query"] for r in rows] == list(range(20))
    for row, want in zip(rows, truth):
        assert list(zip(row["distances"], row["ids"])) == want[:7]

    result = invoke("query", out, tmp / "q.npy", "--radius", 6, "--format", "parquet", "--out", tmp_path / "r.parquet")
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "r.parquet").to_pylist()
    assert any(row["ids"] for row in table), "radius 6 should find neighbours of clustered codes"
    for row, want in zip(table, truth):
        assert list(zip(row["distances"], row["ids"])) == [p for p in want if p[0] <= 6]


def test_topk_beyond_n_returns_every_code(corpus, tmp_path):
    tmp, db, ids, queries = corpus
    invoke("build-index", tmp / "db.npy", "--out", tmp_path / "ix")
    result = invoke("query", tmp_path / "ix", tmp / "q.npy", "--topk", 1000, "--out", tmp_path / "r.jsonl")
    assert result.exit_code == 0 and result.stdout == ""
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    for row, want in zip(rows, oracle(queries, db, np.arange(300))):
        assert list(zip(row["distances"], row["ids"])) == want  # padding dropped: exactly n results


def test_build_from_parquet_and_float_outputs(tmp_path):
    rng = np.random.default_rng(3)
    outputs = rng.normal(size=(40, 32)).astype(np.float32)
    np.save(tmp_path / "f.npy", outputs)
    result = invoke("build-index", tmp_path / "f.npy", "--out", tmp_path / "ix")
    assert result.exit_code == 0 and "sign-binarised float32" in result.stderr
    save_parquet(tmp_path, "c.parquet", {"id": np.arange(40) + 1000, "label": np.arange(40) % 3,
                                          "code": pa.array([bytes(r) for r in encode_sign(outputs)])})
    assert invoke("build-index", tmp_path / "c.parquet", "--out", tmp_path / "ix2", "--batch-size", 16).exit_code == 0
    assert HammingIndex.load(tmp_path / "ix2").metadata.to_pydict() == {"label": list(np.arange(40) % 3)}
    assert invoke("build-index", tmp_path / "c.parquet", "--out", tmp_path / "ix3", "--no-metadata").exit_code == 0
    assert json.loads(invoke("info", tmp_path / "ix3", "--json").stdout)["metadata_columns"] == []
    result = invoke("query", tmp_path / "ix2", tmp_path / "f.npy", "--topk", 1)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["ids"] for r in rows] == [[1000 + i] for i in range(40)]  # each finds itself
    assert all(r["distances"] == [0] for r in rows)


def test_query_index_refused_when_corrupt(corpus, tmp_path):
    tmp, *_ = corpus
    invoke("build-index", tmp / "db.npy", "--out", tmp_path / "ix")
    codes_file = next((tmp_path / "ix").glob("seg-*.codes.arrow"))
    codes_file.write_bytes(codes_file.read_bytes()[:-16])
    assert_one_line_error(invoke("query", tmp_path / "ix", tmp / "q.npy", "--topk", 3), "codes.arrow: truncated")
    assert_one_line_error(invoke("info", tmp_path / "ix"), "codes.arrow: truncated")


@pytest.mark.parametrize("args, message", [
    (["build-index", "{tmp}/nope.npy", "--out", "{out}/ix"], "nope.npy: no such file"),
    (["build-index", "{tmp}/db.npy", "--out", "{out}/ix", "--ids", "{tmp}/q.npy"], "ids must be a 1-D integer array of 300"),
    (["build-index", "{tmp}/db.npy", "--out", "{tmp}"], "not overwriting"),
    (["build-index", "{tmp}/db.npy", "--out", "{out}/ix", "--nbits", "128"], "neither 16 packed bytes nor 128 bits"),
    (["build-index", "{tmp}/db.npy", "--out", "{out}/ix", "--param", "oops"], "not KEY=VALUE"),
    (["build-index", "{tmp}/db.npy", "--out", "{out}/ix", "--batch-size", "0"], "--batch-size must be positive"),
    (["query", "{out}/none", "{tmp}/q.npy", "--topk", "3"], "no index at"),
    (["info", "{tmp}"], "manifest.json: missing"),
])
def test_errors_are_one_line(corpus, tmp_path, args, message):
    tmp = corpus[0]
    result = invoke(*[a.format(tmp=tmp, out=tmp_path) for a in args])
    assert_one_line_error(result, message)
    assert not (tmp_path / "ix").exists()


@pytest.mark.parametrize("args, message", [
    (["--topk", "3", "--radius", "2"], "exactly one of --topk K or --radius R"),
    ([], "exactly one of --topk K or --radius R"),
    (["--topk", "0"], "--topk must be between 1 and 2**63-1, got 0"),
    (["--radius", "-1"], "--radius must be between 0 and 2**63-1, got -1"),
    (["--topk", "3", "--format", "parquet"], "--format parquet needs --out FILE"),
])
def test_query_argument_errors_are_one_line(corpus, tmp_path, args, message):
    tmp = corpus[0]
    invoke("build-index", tmp / "db.npy", "--out", tmp_path / "ix")
    assert_one_line_error(invoke("query", tmp_path / "ix", tmp / "q.npy", *args), message)


def test_query_codes_of_another_width_are_refused(corpus, tmp_path):
    tmp = corpus[0]
    invoke("build-index", tmp / "db.npy", "--out", tmp_path / "ix")
    np.save(tmp_path / "q128.npy", np.zeros((3, 16), np.uint8))
    result = invoke("query", tmp_path / "ix", tmp_path / "q128.npy", "--topk", 3, "--out", tmp_path / "r.jsonl")
    assert_one_line_error(result, "16 columns are neither 8 packed bytes nor 64 bits")
    assert not (tmp_path / "r.jsonl").exists()


def test_real_sift_descriptors_end_to_end(tmp_path):
    """siftsmall: sign of mean-centred descriptors as 128-bit codes, through build-index and query."""
    from hashsearch.datasets import data_root
    from hashsearch.datasets.sift import SIFTSMALL_DIR, load_sift_small

    if not (data_root() / SIFTSMALL_DIR).is_dir():
        pytest.skip("siftsmall data set not found under data_root()")
    sift = load_sift_small()
    mean = sift.base.mean(axis=0)
    np.save(tmp_path / "base.npy", sift.base[:3000] - mean)
    np.save(tmp_path / "queries.npy", sift.queries[:25] - mean)
    result = invoke("build-index", tmp_path / "base.npy", "--out", tmp_path / "ix")
    assert result.exit_code == 0 and "sign-binarised float32 outputs (128 bits" in result.stderr
    result = invoke("query", tmp_path / "ix", tmp_path / "queries.npy", "--topk", 10)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    truth = oracle(encode_sign(sift.queries[:25] - mean), encode_sign(sift.base[:3000] - mean), np.arange(3000))
    assert [list(zip(r["distances"], r["ids"])) for r in rows] == [t[:10] for t in truth]


def test_info_lines(corpus, tmp_path):
    tmp, db, *_ = corpus
    invoke("build-index", tmp / "db.npy", "--out", tmp_path / "ix", "--backend", "mih", "--param", "m=2")
    result = invoke("info", tmp_path / "ix", "--no-verify")
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert (lines["nbits"], lines["count"], lines["backend"], lines["params"]) == ("64", "300", "mih", '{"m": 2}')
    assert lines["checksums"] == "not checked" and lines["ids_stored"] == "False"
    disk = sum(p.stat().st_size for p in (tmp_path / "ix").iterdir())
    assert lines["bytes_on_disk"] == str(disk)
    assert lines["overhead_vs_raw_codes"] == f"{100 * (disk / db.nbytes - 1):+.3f} %"


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_results_carry_query_ids_and_hit_metadata(corpus, tmp_path, fmt):
    """A query file's `id` column comes back as query_id, and every hit brings its stored metadata row."""
    tmp, db, ids, queries = corpus
    names = [f"item-{i}" for i in ids]
    save_parquet(tmp_path, "db.parquet", {"id": ids, "code": pa.array([bytes(r) for r in db]), "name": names,
                                          "tags": [[int(i) % 3, int(i) % 5] for i in ids]})
    query_ids = np.arange(len(queries)) * 7 + 1000
    save_parquet(tmp_path, "q.parquet", {"id": query_ids, "code": pa.array([bytes(r) for r in queries])})
    assert invoke("build-index", tmp_path / "db.parquet", "--out", tmp_path / "ix").exit_code == 0
    out = tmp_path / f"r.{fmt}"
    result = invoke("query", tmp_path / "ix", tmp_path / "q.parquet", "--topk", 4, "--format", fmt, "--out", out,
                    "--batch-size", 3)
    assert result.exit_code == 0, result.output
    rows = ([json.loads(line) for line in out.read_text().splitlines()] if fmt == "jsonl"
            else pq.read_table(out).to_pylist())
    by_id = {int(i): (name, [int(i) % 3, int(i) % 5]) for i, name in zip(ids, names)}
    for r, (row, want) in enumerate(zip(rows, oracle(queries, db, ids))):
        assert (row["query"], row["query_id"]) == (r, query_ids[r])
        assert list(zip(row["distances"], row["ids"])) == want[:4]
        assert [(m["name"], m["tags"]) for m in row["metadata"]] == [by_id[i] for i in row["ids"]]


def test_results_without_ids_or_metadata(corpus, tmp_path):
    tmp, *_ = corpus
    invoke("build-index", tmp / "db.npy", "--out", tmp_path / "ix")
    row = json.loads(invoke("query", tmp_path / "ix", tmp / "q.npy", "--topk", 2).stdout.splitlines()[5])
    assert row["query"] == row["query_id"] == 5 and "metadata" not in row


# --- live index options (helper `live`): --force, --where, --explain, radius above nbits ----------

def test_build_index_replaces_an_index_only_with_force(corpus, tmp_path):
    tmp = corpus[0]
    assert invoke("build-index", tmp / "db.npy", "--out", tmp_path / "ix").exit_code == 0
    assert_one_line_error(invoke("build-index", tmp / "q.npy", "--out", tmp_path / "ix"), "--force")
    assert HammingIndex.load(tmp_path / "ix").ntotal == 300
    assert invoke("build-index", tmp / "q.npy", "--out", tmp_path / "ix", "--force").exit_code == 0
    assert HammingIndex.load(tmp_path / "ix").ntotal == 20


def test_query_where_and_explain(tmp_path):
    rng = np.random.default_rng(3)
    db = rng.integers(0, 256, (200, 8), dtype=np.uint8)
    labels = np.arange(200) % 5
    save_parquet(tmp_path, "db.parquet", {"code": [bytes(row) for row in db], "label": labels})
    np.save(tmp_path / "q.npy", db[:4])
    assert invoke("build-index", tmp_path / "db.parquet", "--out", tmp_path / "ix").exit_code == 0
    result = invoke("query", tmp_path / "ix", tmp_path / "q.npy", "--topk", 6, "--where", "label == 3")
    assert result.exit_code == 0, result.output
    truth = hamming_bruteforce(db[:4], db)
    for row in map(json.loads, result.stdout.splitlines()):
        want = sorted((int(truth[row["query"], j]), j) for j in np.flatnonzero(labels == 3))[:6]
        assert list(zip(row["distances"], row["ids"])) == want
    result = invoke("query", tmp_path / "ix", tmp_path / "q.npy", "--radius", 1000)  # above nbits: everything
    assert all(len(json.loads(line)["ids"]) == 200 for line in result.stdout.splitlines())
    plan = json.loads(invoke("query", tmp_path / "ix", tmp_path / "q.npy", "--topk", 3, "--explain").stdout)
    assert plan["segments"][0]["rows"] == 200 and plan["segments"][0]["backend"] == "auto"  # the default
    assert_one_line_error(invoke("query", tmp_path / "ix", tmp_path / "q.npy", "--topk", 3, "--where", "colour == 1"),
                          "unknown column")
