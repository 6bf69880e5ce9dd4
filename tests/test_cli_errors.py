"""What a new user hits on the command line: every bad file or option is one line on stderr that names
the file or the option, a non-zero exit status and no traceback; `--help` reads in full."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from hashsearch.cli import main
from hashsearch.index import HammingIndex


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, *names: str) -> None:
    """Exit status non-zero, exactly one stderr line starting with "error:", naming each of `names`."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    assert "Traceback" not in result.output and "Aborted" not in result.output


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An index of 50 random 64-bit codes, 4 query codes, and files that are not what their name says."""
    tmp = tmp_path_factory.mktemp("errors")
    rng = np.random.default_rng(0)
    np.save(tmp / "db.npy", rng.integers(0, 256, (50, 8), dtype=np.uint8))
    np.save(tmp / "q.npy", rng.integers(0, 256, (4, 8), dtype=np.uint8))
    assert run("build-index", tmp / "db.npy", "--out", tmp / "ix").exit_code == 0
    (tmp / "empty.npy").write_bytes(b"")
    (tmp / "text.npy").write_text("id,code\n1,0xff\n")
    (tmp / "text.mat").write_text("not a MATLAB file\n")
    (tmp / "text.npz").write_text("not an archive\n")
    (tmp / "empty.parquet").write_bytes(b"")
    np.save(tmp / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return tmp


@pytest.mark.parametrize("name, message", [
    ("empty.npy", "the file is empty"),
    ("text.npy", "has no NumPy header"),
    ("objects.npy", "holds Python objects"),
    ("empty.parquet", "not a readable Parquet file"),
])
def test_unreadable_code_files(files, name, message):
    assert_one_line_error(run("build-index", files / name, "--out", files / "new"), name, message)
    assert_one_line_error(run("query", files / "ix", files / name, "--topk", 3), name, message)
    assert not (files / "new").exists()


def test_text_file_as_ids_is_refused(files):
    result = run("build-index", files / "db.npy", "--ids", files / "text.npy", "--out", files / "new")
    assert_one_line_error(result, "text.npy", "has no NumPy header")
    assert "allow_pickle" not in result.output  # never advise loading untrusted pickles


@pytest.mark.parametrize("name, message", [
    ("text.mat", "not a readable MATLAB file"),
    ("text.npz", "not a readable .npz archive"),
    ("empty.parquet", "not a readable Parquet file"),
])
@pytest.mark.parametrize("command", [["train", "--out", "{tmp}/models"], ["demo"]])
def test_unreadable_data_files(files, name, message, command):
    args = [a.format(tmp=files) for a in command] + ["--data", files / name]
    assert_one_line_error(run(*args), name, message)


@pytest.mark.parametrize("value, message", [
    ("0", "--topk must be between 1 and 2**63-1"),
    ("-5", "--topk must be between 1 and 2**63-1"),
    (str(2**63), "--topk must be between 1 and 2**63-1"),
    ("ten", "Invalid value for '--topk'"),
])
def test_bad_topk(files, value, message):
    assert_one_line_error(run("query", files / "ix", files / "q.npy", "--topk", value), message)


@pytest.mark.parametrize("k", [10**12, 2**63 - 1, 10**7])
def test_topk_above_the_index_size_returns_everything_and_asks_for_no_more(files, monkeypatch, k):
    asked = []
    search = HammingIndex.search
    monkeypatch.setattr(HammingIndex, "search", lambda self, q, kk, **kw: asked.append(kk) or search(self, q, kk, **kw))
    result = run("query", files / "ix", files / "q.npy", "--topk", k)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [len(r["ids"]) for r in rows] == [50] * 4
    assert asked and max(asked) == 50  # never allocates k columns


def test_radius_above_nbits_means_every_code(files):
    """The rule the API follows too: a radius above nbits is everything within nbits."""
    big = run("query", files / "ix", files / "q.npy", "--radius", 1000)
    full = run("query", files / "ix", files / "q.npy", "--radius", 64)
    assert big.exit_code == 0 and big.stdout == full.stdout
    assert [len(json.loads(line)["ids"]) for line in big.stdout.splitlines()] == [50] * 4
    assert_one_line_error(run("query", files / "ix", files / "q.npy", "--radius", -1), "--radius")


def test_write_errors_name_the_users_path(files):
    result = run("query", files / "ix", files / "q.npy", "--topk", 2, "--out", files / "no-such-dir" / "r.jsonl")
    assert_one_line_error(result, "no-such-dir/r.jsonl")
    assert ".tmp" not in result.output


@pytest.mark.parametrize("command", [["train", "--out", "{tmp}/models"], ["demo"]])
def test_bad_width_is_refused_before_the_data_is_read(files, command):
    args = [a.format(tmp=files) for a in command] + ["--data", "no-such-data-set", "--nbits", "12"]
    assert_one_line_error(run(*args), "--nbits", "multiple of 8")


def test_usage_errors_are_one_line(files):
    assert_one_line_error(run("query"), "Missing argument 'INDEX_DIR'", "hashsearch query --help")
    assert_one_line_error(run("build-index", files / "db.npy"), "--out")
    assert_one_line_error(run("query", files / "ix", files / "q.npy", "--format", "csv"), "--format")
    assert_one_line_error(run("no-such-command"), "No such command")


def test_help_is_not_cut_short():
    result = run("--help")
    commands = result.stdout.split("Commands:")[1]
    assert result.exit_code == 0 and "..." not in commands, commands
    for command in ("build-index", "query", "info", "bench", "demo", "train", "encode", "eval"):
        assert f"\n  {command} " in commands


def test_query_and_build_help_say_what_is_needed():
    text = " ".join(run("query", "--help").stdout.split())
    assert "exactly one of --topk K or --radius R" in text and "query_id" in text and "metadata" in text
    text = " ".join(run("build-index", "--help").stdout.split())
    for backend, keys in {"numba": ["none"], "faiss": ["nhash=INT"], "mih": ["m=INT", "probe_cost=FLOAT"]}.items():
        assert f"{backend}: {', '.join(keys)}" in text
