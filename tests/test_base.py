"""The one learner contract: scikit-learn parameters for every learner, one NotFittedError, one label check."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone

from hashsearch import learners
from hashsearch.errors import HashsearchError, InvalidInputError, NotFittedError
from hashsearch.models.base import check_is_fitted, label_similarity, multihot_labels, signs

CLASSES = [m.learner_class() for m in learners.METHODS]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_params_round_trip_through_constructor_and_clone(cls):
    model = cls(16, seed=3)
    params = model.get_params()
    assert params["nbits"] == 16 and params["seed"] == 3
    again = type(model)(**model.get_params())
    assert again.get_params() == params
    copy = clone(model)
    assert type(copy) is cls and copy is not model and copy.get_params() == params
    name = "epochs" if "epochs" in params else "seed"
    assert model.set_params(**{name: 7}) is model and model.get_params()[name] == 7
    with pytest.raises(ValueError, match="Invalid parameter"):
        model.set_params(no_such_setting=1)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_unfitted_learner_has_no_fitted_state(cls):
    model = cls(16)
    assert not [k for k in vars(model) if k.endswith("_") and not k.startswith("__")]


def test_not_fitted_error_is_one_class_caught_three_ways():
    class Thing:
        pass

    for kind in (NotFittedError, HashsearchError, ValueError, AttributeError):
        with pytest.raises(kind, match="Thing is not fitted yet"):
            check_is_fitted(Thing())
    fitted = Thing()
    fitted.codes_ = 1
    check_is_fitted(fitted)


def test_labels_class_ids_and_multihot_give_the_same_matrix():
    ids = multihot_labels(np.array([3, 5, 3]), 3)
    assert ids.tolist() == [[1, 0], [0, 1], [1, 0]] and ids.dtype == np.float32
    np.testing.assert_array_equal(multihot_labels(np.array([[1, -1], [-1, 1], [1, -1]]), 3), ids)
    with pytest.raises(InvalidInputError, match="labels have 3 rows but there are 4 items"):
        multihot_labels(np.array([1, 2, 3]), 4)


@pytest.mark.parametrize("labels, message", [
    (np.zeros(4, np.int64), "all zero"),
    (np.zeros((4, 3)), "no label"),
    (np.array([[1, 0], [0, 0], [0, 1], [1, 1]]), "1 item\\(s\\) have no label \\(first at row 1\\)"),
    (np.full(4, 2), "every item shares one class"),
    (np.array([[1, 1], [1, 0], [1, 0], [1, 1]]), "every item shares one class"),
    (None, "labels are required"),
])
def test_useless_labels_are_refused_in_one_line(labels, message):
    with pytest.raises(InvalidInputError, match=message) as err:
        multihot_labels(labels, 4)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["dcmh", "scm", "schn", "dpsh"])
def test_supervised_learners_refuse_all_zero_labels(name):
    method = learners.method_named(name)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 6)).astype(np.float32), rng.random((20, 5)).astype(np.float32)
    model = method.make(8, seed=0, epochs=1 if method.deep else None)
    args = (x, y) if method.kind == learners.CROSS else (x,)
    with pytest.raises(InvalidInputError, match="all zero|no label"):
        model.fit(*args, np.zeros((20, 3)))


def test_similarity_and_sign_helpers():
    a = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert label_similarity(a, a).tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
    x = torch.tensor([[-1.5, 0.0, 2.0, -0.0]])
    assert signs(x).tolist() == [[-1.0, 1.0, 1.0, 1.0]]
    np.testing.assert_array_equal(signs(np.array([0.0, -2.0, 3.0])), [1.0, -1.0, 1.0])
