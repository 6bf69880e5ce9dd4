"""DPSH: the pairwise loss against a naive computation, gradients, a short real fit, recovery from a
non-finite step, settings chosen from the input, persistence."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hashsearch.codes import validate_codes
from hashsearch.datasets import load_digits, standard_split
from hashsearch.errors import HashsearchError, InvalidInputError
from hashsearch.metrics import mean_average_precision
from hashsearch.models import dpsh
from hashsearch.models.dpsh import DPSH, dpsh_loss
from hashsearch.models.training import load_model


def naive_dpsh_loss(u, U, S, eta):
    """Σ log(1 + e^θ) − sθ over pairs, plus η Σ (u − sign u)², over |batch|·N: loops, floats."""
    total = 0.0
    for i in range(len(u)):
        for j in range(len(U)):
            theta = 0.5 * float(np.dot(u[i], U[j]))
            total += (theta + math.log1p(math.exp(-theta)) if theta > 0 else math.log1p(math.exp(theta))) - S[i, j] * theta
        total += eta * sum((v - (1.0 if v >= 0 else -1.0)) ** 2 for v in u[i])
    return total / (len(u) * len(U))


def test_loss_matches_naive_computation():
    rng = np.random.default_rng(0)
    u, U = rng.normal(size=(3, 8)), rng.normal(size=(5, 8))
    S = (rng.random((3, 5)) > 0.5).astype(float)
    got = dpsh_loss(torch.tensor(u), torch.tensor(U), torch.tensor(S), eta=0.7).item()
    assert got == pytest.approx(naive_dpsh_loss(u, U, S, 0.7), rel=1e-10)


def test_loss_is_stable_for_large_inner_products_and_gradients_flow():
    u = torch.full((2, 16), 30.0, requires_grad=True)  # θ = ½·16·900 = 7200: e^θ overflows
    S = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = dpsh_loss(u, u.detach(), S, eta=1.0)
    assert torch.isfinite(loss)
    # dissimilar pair at θ = 7200 costs ≈ θ, the similar one ≈ 0; quantisation 29² per entry
    assert loss.item() == pytest.approx((2 * 7200 + 32 * 29**2) / 4, rel=1e-6)
    loss.backward()
    assert u.grad.shape == (2, 16) and torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0


def test_quantization_weight_is_exactly_eta():
    u, U = torch.randn(4, 8), torch.randn(6, 8)
    S = torch.zeros(4, 6)
    diff = dpsh_loss(u, U, S, eta=2.0) - dpsh_loss(u, U, S, eta=0.0)
    assert diff.item() == pytest.approx(2.0 * ((u - torch.sign(u)) ** 2).sum().item() / 24, rel=1e-5)


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    split = standard_split(data, seed=0, queries_per_class=25, n_train=600)  # train: a slice of the database
    return data.images, data.labels, split.query, split.train


@pytest.mark.slow
def test_short_fit_on_digits_beats_untrained_encoder_and_codes_are_packed(digits):
    x, y, q, db = digits
    untrained = DPSH(16, lr=0.0, epochs=1, verbose=False).fit(x[db], y[db])  # lr 0: initial weights
    model = DPSH(16, epochs=4, verbose=False).fit(x[db], y[db])
    codes = model.encode(x[db])
    validate_codes(codes, 16)
    maps = [mean_average_precision(m.encode(x[q]), m.encode(x[db]), y[q], y[db], 16) for m in (untrained, model)]
    assert maps[1] > maps[0] + 0.2, maps
    assert len(model.history_) == 4


def test_seeded_fit_is_deterministic_and_save_load_round_trip(digits, tmp_path):
    x, y, q, db = digits
    a = DPSH(8, epochs=1, verbose=False, seed=3).fit(x[db[:200]], y[db[:200]])
    b = DPSH(8, epochs=1, verbose=False, seed=3).fit(x[db[:200]], y[db[:200]])
    np.testing.assert_array_equal(a.encode(x[q]), b.encode(x[q]))
    a.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, DPSH) and loaded.nbits == 8 and loaded.eta == a.eta
    np.testing.assert_array_equal(loaded.encode(x[q]), a.encode(x[q]))


def test_augmented_fit_is_seeded_saved_and_differs_from_plain(digits, tmp_path):
    x, y, q, db = digits
    fit = lambda augment: DPSH(8, epochs=1, verbose=False, seed=3, augment=augment).fit(x[db[:200]], y[db[:200]])
    a, b, plain = fit(True), fit(True), fit(False)
    np.testing.assert_array_equal(a.encode(x[q]), b.encode(x[q]))
    assert not np.array_equal(a.encode(x[q]), plain.encode(x[q]))
    a.save(tmp_path / "m")
    assert load_model(tmp_path / "m").augment is True


def test_clear_errors():
    x = np.random.default_rng(0).random((10, 1, 8, 8)).astype(np.float32)
    with pytest.raises(HashsearchError, match="not fitted"):
        DPSH(16).encode(x)
    with pytest.raises(InvalidInputError, match="multiple of 8"):
        DPSH(12)
    bad = x.copy()
    bad[3, 0, 1, 1] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        DPSH(16, verbose=False).fit(bad, np.arange(10) % 2)
    with pytest.raises(InvalidInputError, match="rows"):
        DPSH(16, verbose=False).fit(x, np.arange(9) % 2)
    with pytest.raises(InvalidInputError, match="labels are required"):
        DPSH(16, verbose=False).fit(x, None)
    with pytest.raises(InvalidInputError, match="augment=True needs images"):
        DPSH(16, verbose=False, augment=True).fit(x.reshape(10, -1), np.arange(10) % 2)
    with pytest.raises(InvalidInputError, match="augment must be"):
        DPSH(16, augment=1)
    model = DPSH(8, epochs=1, verbose=False).fit(x, np.arange(10) % 2)
    with pytest.raises(InvalidInputError, match="fitted on"):
        model.encode(np.zeros((2, 1, 9, 9), np.float32))


def test_a_non_finite_step_is_recovered_and_recorded(digits, monkeypatch):
    x, y, q, db = digits
    calls = {"n": 0}

    def once_nan(u, U, S, eta):
        calls["n"] += 1
        loss = dpsh_loss(u, U, S, eta)
        return loss * float("nan") if calls["n"] == 5 else loss  # epoch 1 of 4 batches each

    monkeypatch.setattr(dpsh, "dpsh_loss", once_nan)
    model = DPSH(16, epochs=3, verbose=False).fit(x[db[:200]], y[db[:200]])
    events = [h for h in model.history_ if h.get("event") == "recovered"]
    assert len(events) == 1 and events[0]["epoch"] == 1 and "loss" in events[0]["error"]
    assert events[0]["lr"] == pytest.approx(5e-4)
    assert [h["epoch"] for h in model.history_ if "event" not in h] == [0, 1, 2]
    assert all(np.isfinite(h["loss"]) for h in model.history_ if "loss" in h)
    validate_codes(model.encode(x[q]), 16)


def test_auto_epochs_follow_the_set_size_and_can_be_overridden():
    assert DPSH(16)._resolve_params((64,), 4000, 10)["epochs"] == 30
    assert DPSH(16)._resolve_params((64,), 1000, 10)["epochs"] == 38  # 16 batches an epoch: >= 600 steps
    assert DPSH(16, batch_size=128)._resolve_params((1, 8, 8), 300, 10)["epochs"] == 200
    resolved = DPSH(16, epochs=2, feature_dim=64)._resolve_params((1, 8, 8), 300, 10)
    assert resolved["epochs"] == 2 and resolved["feature_dim"] == 64 and resolved["input_kind"] == "pixels"


def test_params_round_trip_clone_and_saved_settings(digits, tmp_path):
    from sklearn.base import clone

    x, y, q, db = digits
    model = DPSH(8, epochs=1, eta=3.0, verbose=False)
    assert clone(model).get_params() == model.get_params() == type(model)(**model.get_params()).get_params()
    model.fit(x[db[:100]], y[db[:100]])
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.params_ == model.params_ and loaded.params_["feature_dim"] == 256 and loaded.feature_dim == "auto"
    assert loaded.history_ == model.history_
