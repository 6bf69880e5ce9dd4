"""DPSH: the pairwise loss against a naive computation, gradients, a short real fit, persistence."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hashsearch.codes import validate_codes
from hashsearch.datasets import load_digits, standard_split
from hashsearch.errors import HashsearchError, InvalidInputError
from hashsearch.metrics import mean_average_precision
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
    assert len(model.loss_history) == 4


def test_seeded_fit_is_deterministic_and_save_load_round_trip(digits, tmp_path):
    x, y, q, db = digits
    a = DPSH(8, epochs=1, verbose=False, seed=3).fit(x[db[:200]], y[db[:200]])
    b = DPSH(8, epochs=1, verbose=False, seed=3).fit(x[db[:200]], y[db[:200]])
    np.testing.assert_array_equal(a.encode(x[q]), b.encode(x[q]))
    a.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, DPSH) and loaded.nbits == 8 and loaded.eta == a.eta
    np.testing.assert_array_equal(loaded.encode(x[q]), a.encode(x[q]))


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
    model = DPSH(8, epochs=1, verbose=False).fit(x, np.arange(10) % 2)
    with pytest.raises(InvalidInputError, match="fitted on"):
        model.encode(np.zeros((2, 1, 9, 9), np.float32))
