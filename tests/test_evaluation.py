"""Evaluation of learners (both cross-modal directions, single-modal), the report files, and `hashsearch eval`."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from hashsearch import datasets, evaluation, metrics
from hashsearch.cli import main
from hashsearch.errors import InvalidInputError

NBITS = 16


def class_codes(labels: np.ndarray) -> np.ndarray:
    """Perfect codes: one bit per class (first label), so items of one class coincide."""
    return np.packbits(np.eye(NBITS, dtype=np.uint8)[labels.argmax(axis=1)], axis=1)


class LabelPeekingHasher:
    """A stand-in cross-modal learner: looks up each row's class from a table (images give the class
    codes, texts their bitwise complement), so the expected scores are known exactly."""

    nbits = NBITS

    def __init__(self, dataset: datasets.PairedDataset):
        self.rows = {row.tobytes(): i for i, row in enumerate(dataset.images)}
        self.text_rows = {row.tobytes(): i for i, row in enumerate(dataset.texts)}
        self.codes = class_codes(dataset.labels)

    def encode_image(self, x):
        return self.codes[[self.rows[r.tobytes()] for r in x]]

    def encode_text(self, y):
        return np.ascontiguousarray(~self.codes[[self.text_rows[r.tobytes()] for r in y]])


@pytest.fixture(scope="module")
def synthetic():
    ds = datasets.synthetic_paired(300, n_classes=5, max_labels=1, seed=1)
    return ds, datasets.standard_split(ds)


def test_evaluate_codes_agrees_with_metrics(synthetic):
    ds, split = synthetic
    codes = np.random.default_rng(0).integers(0, 256, (len(ds), 2), dtype=np.uint8)
    args = (codes[split.query], codes[split.database], ds.labels[split.query], ds.labels[split.database], NBITS)
    scores = evaluation.evaluate_codes(*args, topk=100)
    assert scores["map_all"] == pytest.approx(metrics.mean_average_precision(*args))
    assert scores["map_at_k"] == pytest.approx(metrics.mean_average_precision(*args, k=100)) and scores["k"] == 100
    assert scores["precision_within_radius"] == pytest.approx(metrics.precision_within_radius(*args, radius=2))
    assert scores["topk_curve"]["k"][0] == 1 and scores["topk_curve"]["k"][-1] == 100
    assert len(scores["pr_curve"]["precision"]) == NBITS + 1
    # top-K capped at the database size
    assert evaluation.evaluate_codes(*args, topk=10**6)["k"] == len(split.database)


def test_crossmodal_routes_query_and_database_modalities(synthetic):
    ds, split = synthetic
    result = evaluation.evaluate_crossmodal(LabelPeekingHasher(ds), ds, split, topk=50)
    assert set(result["tasks"]) == {"I→T", "T→I"} and result["synthetic"] and result["nbits"] == NBITS
    for scores in result["tasks"].values():
        # query codes from one modality against the complemented codes of the other: same class is
        # at distance 16, every other class at 14, so the ranking is inverted and P@H<=2 is empty
        assert scores["map_all"] < 0.3 and scores["precision_within_radius"] == 0.0
    assert result["split"] == {"query": 30, "train": 270, "database": 270}


def test_single_modal_uses_the_one_modality_there_is(synthetic):
    ds, split = synthetic
    hasher = LabelPeekingHasher(ds)
    text_only = datasets.PairedDataset("tags", None, ds.texts, ds.labels)
    result = evaluation.evaluate_model(hasher, text_only, split, topk=50)
    assert list(result["tasks"]) == ["T→T"]
    assert result["tasks"]["T→T"]["map_all"] == pytest.approx(1.0)  # complemented codes still agree with each other
    with pytest.raises(InvalidInputError, match="no image modality"):
        evaluation.evaluate_single(hasher, text_only, split, modality="image")
    with pytest.raises(InvalidInputError, match="neither encode_image/encode_text nor encode"):
        evaluation.evaluate_model(object(), ds, split)


def test_write_report_files(synthetic, tmp_path):
    ds, split = synthetic
    result = evaluation.evaluate_crossmodal(LabelPeekingHasher(ds), ds, split, topk=50)
    report = evaluation.write_report([result, result], tmp_path / "r")
    text = report.read_text()
    assert "SYNTHETIC" in text and "| I→T |" in text and f"{result['tasks']['T→I']['map_all']:.4f}" in text
    assert json.loads((tmp_path / "r" / "results.json").read_text())[0]["tasks"]["I→T"]["k"] == 50
    for png in ("pr_curve.png", "topk_precision.png"):
        assert (tmp_path / "r" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InvalidInputError, match="no results"):
        evaluation.write_report([], tmp_path / "empty")


def test_eval_command_end_to_end(tmp_path):
    baselines = pytest.importorskip("hashsearch.models.baselines")
    ds = datasets.synthetic_paired()  # what `--data synthetic` loads
    split = datasets.standard_split(ds)
    baselines.CCAITQ(NBITS, seed=0).fit(ds.images[split.train], ds.texts[split.train], ds.labels[split.train]).save(tmp_path / "m")
    out = tmp_path / "report"
    run = CliRunner().invoke(main, ["eval", str(tmp_path / "m"), "--data", "synthetic", "--out", str(out), "--topk", "100"])
    assert run.exit_code == 0, run.output
    assert "synthetic 16 bits I→T: mAP@all" in run.output and "T→I" in run.output
    (saved,) = json.loads((out / "results.json").read_text())
    assert saved["model"].endswith("CCAITQ") and saved["tasks"]["I→T"]["map_all"] > 0.5  # synthetic pairs are easy
    bad = CliRunner().invoke(main, ["eval", str(tmp_path / "m"), "--data", "nope"])
    assert bad.exit_code == 1 and "unknown data set 'nope'" in bad.output
