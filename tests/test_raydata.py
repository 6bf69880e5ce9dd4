"""Ray Data pipelines: `build-index --shards` from Parquet equals a single index over the same rows;
`query` searches it; `encode --ray` writes the codes `encode` writes, as a folder of Parquet files."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from hashsearch import HammingIndex, jobs
from hashsearch.cli import main

pytest.importorskip("ray")
from hashsearch.sharded import ShardedIndex  # noqa: E402


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_build_index_shards_reads_parquet_with_ray_data(ray_local, tmp_path):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (700, 4), dtype=np.uint8)
    ids = rng.permutation(10_000)[:700]
    folder = tmp_path / "codes"
    folder.mkdir()
    for part, lo in enumerate(range(0, 700, 250)):  # a folder of Parquet files, codes as lists of bytes
        pq.write_table(pa.table({"id": ids[lo:lo + 250], "code": pa.array([list(c) for c in codes[lo:lo + 250]],
                                                                      pa.list_(pa.uint8())),
                                 "label": [f"l{i}" for i in ids[lo:lo + 250]]}), folder / f"part-{part}.parquet")
    result = invoke("build-index", folder, "--out", tmp_path / "idx", "--shards", 3, "--backend", "mih")
    assert result.exit_code == 0, result.output
    assert "700 codes in 3 shards" in result.output
    single = HammingIndex(32)
    single.add(codes, ids, {"label": [f"l{i}" for i in ids]})
    with ShardedIndex.load(tmp_path / "idx") as index:
        d, i = index.search(codes[:9], 12)
        d0, i0 = single.search(codes[:9], 12)
        assert (d == d0).all() and (i == i0).all() and index.metadata.equals(single.metadata)
    np.save(tmp_path / "q.npy", codes[:3])
    lines = invoke("query", tmp_path / "idx", tmp_path / "q.npy", "--topk", 4).output.splitlines()
    assert [json.loads(line)["ids"] for line in lines] == i0[:3, :4].tolist()
    again = invoke("build-index", folder, "--out", tmp_path / "codes", "--shards", 2)
    assert again.exit_code == 1 and "not overwriting" in again.output  # never replaces what it did not write


def test_encode_with_ray_writes_what_encode_writes(ray_local, tmp_path):
    assert invoke("train", "--data", "synthetic", "--method", "itq", "--nbits", "16", "--out", tmp_path).exit_code == 0
    model = tmp_path / "synthetic" / "ITQ-16"
    jobs.encode(model, "synthetic", tmp_path / "one.parquet")
    result = invoke("encode", model, "--data", "synthetic", "--out", tmp_path / "many", "--ray", "--workers", 2)
    assert result.exit_code == 0, result.output
    want = pq.read_table(tmp_path / "one.parquet").sort_by("id")
    got = pq.read_table(tmp_path / "many").sort_by("id")
    assert got.column("id").equals(want.column("id")) and got.column("code").equals(want.column("code"))
    assert invoke("encode", model, "--data", "synthetic", "--out", tmp_path / "many", "--ray").exit_code == 1
