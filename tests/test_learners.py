"""The learner table: names, fitting on either kind of data set, and encoding rows of one modality."""
from __future__ import annotations

import numpy as np
import pytest

from hashsearch import learners
from hashsearch.codes import validate_codes
from hashsearch.datasets import PairedDataset, standard_split, synthetic_paired
from hashsearch.errors import InvalidInputError
from hashsearch.models.baselines import ITQ


def test_method_named_ignores_case_and_dashes():
    assert learners.method_named("cca-itq").name == "CCA-ITQ"
    assert learners.method_named("CCAITQ").name == "CCA-ITQ"
    assert learners.method_named("dcmh").deep
    with pytest.raises(InvalidInputError, match="unknown method 'foo'.*DCMH"):
        learners.method_named("foo")


def test_make_cuts_deep_budget_and_sets_progress():
    model = learners.method_named("dcmh").make(16, seed=3, epochs=2, quiet=False)
    assert model.epochs == 2 and model.progress and model.seed == 3
    assert model.eta == "auto" and learners.method_named("dcmh").recommended() == {}  # DCMH's defaults follow its input
    assert not learners.method_named("dcmh").make(16, seed=0, epochs=None).progress


def test_cross_and_single_fit_encode_shapes():
    ds = synthetic_paired(n=200, seed=1)
    split = standard_split(ds, seed=0)
    cca = learners.fit(learners.method_named("cca-itq"), ds, split, 16)
    for m, x in (("I", ds.images), ("T", ds.texts)):
        validate_codes(learners.encode(cca, x[:7], m), 16)
    itq = learners.fit(learners.method_named("itq"), ds, split, 16, modality="T")
    assert np.array_equal(learners.encode(itq, ds.texts[:5], "T"), itq.encode(ds.texts[:5]))


def test_shallow_learners_get_flat_rows():
    rng = np.random.default_rng(0)
    pixels = rng.normal(size=(60, 1, 4, 4)).astype(np.float32)
    ds = PairedDataset("px", pixels, None, np.eye(3, dtype=np.uint8)[rng.integers(0, 3, 60)])
    split = standard_split(ds, seed=0)
    model = learners.fit(learners.method_named("itq"), ds, split, 8)
    assert isinstance(model, ITQ)
    assert np.array_equal(learners.encode(model, pixels[:4], "I"), model.encode(pixels[:4].reshape(4, 16)))


def test_missing_modality_is_named():
    ds = synthetic_paired(n=100, seed=0)
    ds = PairedDataset(ds.name, ds.images, None, ds.labels)
    with pytest.raises(InvalidInputError, match="has no text modality"):
        learners.fit(learners.method_named("lsh"), ds, standard_split(ds), 16, modality="T")
    with pytest.raises(InvalidInputError, match="has no text modality"):
        learners.fit(learners.method_named("scm"), ds, standard_split(ds), 16)
