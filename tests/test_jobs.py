"""`hashsearch train` -> `encode` -> `build-index` -> `query`, end to end on the synthetic set."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from hashsearch import jobs
from hashsearch.cli import main
from hashsearch.codes import hamming_bruteforce
from hashsearch.datasets import load, standard_split
from hashsearch.errors import InvalidInputError
from hashsearch.models.training import load_model


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    result = invoke("train", "--data", "synthetic", "--method", "dcmh,itq", "--nbits", "16,32",
                    "--epochs", "2", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_train_saves_every_method_and_width_where_bench_reads_them(trained):
    for name in ("DCMH-16", "DCMH-32", "ITQ-16", "ITQ-32"):
        model = load_model(trained / "synthetic" / name)
        assert model.nbits == int(name.split("-")[1])
    assert load_model(trained / "synthetic" / "DCMH-16").epochs == 2


def test_encode_build_query_pipeline_matches_bruteforce(trained, tmp_path):
    model_dir = trained / "synthetic" / "DCMH-32"
    assert invoke("encode", model_dir, "--data", "synthetic", "--out", tmp_path / "db.parquet").exit_code == 0
    assert invoke("encode", model_dir, "--data", "synthetic", "--modality", "text", "--split", "query",
                  "--out", tmp_path / "q.parquet").exit_code == 0
    db, q = pq.read_table(tmp_path / "db.parquet"), pq.read_table(tmp_path / "q.parquet")
    ds = load("synthetic")
    split = standard_split(ds)
    assert db.column("id").to_numpy().tolist() == split.database.tolist()
    assert q.column("id").to_numpy().tolist() == split.query.tolist()
    model = load_model(model_dir)
    db_codes = np.stack([np.frombuffer(b, np.uint8) for b in db.column("code").to_pylist()])
    q_codes = np.stack([np.frombuffer(b, np.uint8) for b in q.column("code").to_pylist()])
    assert np.array_equal(db_codes, model.encode_image(ds.images[split.database]))
    assert np.array_equal(q_codes, model.encode_text(ds.texts[split.query]))

    assert invoke("build-index", tmp_path / "db.parquet", "--out", tmp_path / "ix").exit_code == 0
    result = invoke("query", tmp_path / "ix", tmp_path / "q.parquet", "--topk", "5")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    dist = hamming_bruteforce(q_codes, db_codes)
    for r, row in enumerate(rows):
        order = np.lexsort((split.database, dist[r]))[:5]  # ids are the data set's row numbers
        assert row["ids"] == split.database[order].tolist() and row["distances"] == dist[r][order].tolist()
        # the join back to both rows: the query's text row and each hit's image row, with its labels
        assert row["query_id"] == split.query[r]
        assert [m["labels"] for m in row["metadata"]] == [np.flatnonzero(ds.labels[i]).tolist() for i in row["ids"]]


def test_text_to_image_results_join_back_to_wikipedia_rows_and_class_names(tmp_path):
    """Real data, end to end: train CCA-ITQ, encode images (database) and texts (queries), index, query;
    every result names its text row (query_id) and image rows (ids) with their category names."""
    from hashsearch.datasets import data_root
    from hashsearch.datasets.crossmodal import WIKIPEDIA_CATEGORIES, WIKIPEDIA_FILE

    if not (data_root() / WIKIPEDIA_FILE).is_file():
        pytest.skip("wikipedia data set not found under data_root()")
    assert invoke("train", "--data", "wikipedia", "--method", "cca-itq", "--nbits", "32", "--out", tmp_path).exit_code == 0
    model = tmp_path / "wikipedia" / "CCA-ITQ-32"
    for modality, which in (("image", "database"), ("text", "query")):
        result = invoke("encode", model, "--data", "wikipedia", "--modality", modality, "--split", which,
                        "--out", tmp_path / f"{modality}.parquet")
        assert result.exit_code == 0, result.output
    assert invoke("build-index", tmp_path / "image.parquet", "--out", tmp_path / "ix").exit_code == 0
    result = invoke("query", tmp_path / "ix", tmp_path / "text.parquet", "--topk", 3)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    ds = load("wikipedia")
    split = standard_split(ds)
    assert len(rows) == len(split.query) == 693
    model_ = load_model(model)
    image_codes = model_.encode_image(ds.images)
    for row in rows[:50]:
        text = model_.encode_text(ds.texts[[row["query_id"]]])  # the query is this text row
        assert row["distances"] == hamming_bruteforce(text, image_codes[row["ids"]])[0].tolist()
        for image, meta in zip(row["ids"], row["metadata"]):
            assert image in split.database
            assert meta["labels"] == [WIKIPEDIA_CATEGORIES[c] for c in np.flatnonzero(ds.labels[image])]
    assert sum(row["metadata"][0]["labels"] == [WIKIPEDIA_CATEGORIES[np.argmax(ds.labels[row["query_id"]])]]
               for row in rows) > 0.2 * len(rows)  # the nearest image shares the text's category well above chance


def test_eval_says_no_hits_rather_than_a_zero_precision(trained):
    from hashsearch.evaluation import evaluate_codes, lookup_summary

    db = np.zeros((6, 2), np.uint8)
    far, near = np.full((2, 2), 255, np.uint8), np.array([[0, 0], [255, 255]], np.uint8)
    labels = np.eye(2, dtype=np.uint8)[[0, 0, 0, 1, 1, 1]]
    scores = evaluate_codes(far, db, labels[:2], labels, 16, topk=3)
    assert scores["lookup"]["hit_fraction"] == 0 and lookup_summary(scores).startswith("P@H<=2 no hits")
    scores = evaluate_codes(near, db, labels[[3, 0]], labels, 16, topk=3)  # query 0 finds all 6, query 1 nothing
    assert scores["lookup"]["hit_fraction"] == 0.5 and scores["precision_within_radius"] == 0.5
    assert lookup_summary(scores) == "P@H<=2 0.5000 (50.0% of queries have hits)"
    result = invoke("eval", trained / "synthetic" / "ITQ-16", "--data", "synthetic", "--out", trained / "eval")
    assert result.exit_code == 0, result.output
    assert all("P@H<=2 no hits" in line or "% of queries have hits" in line for line in result.stdout.splitlines())


def test_encode_single_modal_model_and_every_row(trained, tmp_path):
    rows, nbits = jobs.encode(trained / "synthetic" / "ITQ-16", "synthetic", tmp_path / "all.parquet", split="all")
    assert (rows, nbits) == (len(load("synthetic")), 16)


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "synthetic", "--method", "foo", "--out", "{tmp}"], "unknown method 'foo'"),
    (["train", "--data", "synthetic", "--nbits", "12", "--out", "{tmp}"], "--nbits: nbits must be a multiple of 8"),
    (["train", "--data", "synthetic", "--epochs", "0", "--out", "{tmp}"], "--epochs must be at least 1"),
    (["encode", "{model}", "--data", "synthetic", "--out", "{tmp}/nodir/c.parquet"], "nodir/c.parquet: there is no folder"),
    (["train", "--data", "synthetic", "--nbits", "", "--out", "{tmp}"], "at least one code width"),
    (["train", "--data", "nosuchset", "--out", "{tmp}"], "nosuchset"),
    (["encode", "{model}", "--data", "synthetic", "--out", "{tmp}/codes.npy"], ".parquet"),
    (["encode", "{model}", "--data", "synthetic", "--modality", "text", "--out", "{tmp}/c.parquet"], "features"),
])
def test_bad_requests_are_one_line_errors(trained, tmp_path, args, message):
    args = [a.format(tmp=tmp_path, model=trained / "synthetic" / "ITQ-16") for a in args]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.output, result.output
    assert not list(tmp_path.glob("*.parquet"))  # nothing half-written


def test_split_and_modality_names_are_checked():
    with pytest.raises(InvalidInputError, match="split must be one of"):
        jobs.split_rows(standard_split(load("synthetic")), "validation", 10)
    with pytest.raises(InvalidInputError, match="modality must be one of image, text"):
        jobs.modality_code("audio")


@pytest.mark.slow
def test_resume_continues_from_the_model_checkpoint(tmp_path):
    args = ["train", "--data", "synthetic", "--method", "dcmh", "--nbits", "16", "--out", tmp_path]
    assert invoke(*args, "--epochs", "2").exit_code == 0
    first = load_model(tmp_path / "synthetic" / "DCMH-16").history_
    assert (tmp_path / "synthetic" / "DCMH-16" / jobs.CHECKPOINT / "config.json").exists()
    assert invoke(*args, "--epochs", "3", "--resume").exit_code == 0
    resumed = load_model(tmp_path / "synthetic" / "DCMH-16").history_
    assert [h["epoch"] for h in resumed] == [1, 2, 3]
    assert [h["image_loss"] for h in resumed[:2]] == [h["image_loss"] for h in first]  # kept, not retrained
    assert invoke(*args, "--epochs", "1").exit_code == 0  # without --resume: trained afresh
    assert [h["epoch"] for h in load_model(tmp_path / "synthetic" / "DCMH-16").history_] == [1]
