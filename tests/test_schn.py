"""SCHN: every loss term on hand-made cases, DCC descent, gradient routing, the former NaN's cause
(unbounded attention inputs, unnormalised graph) gone, recovery from a non-finite step, settings
chosen from the input, a short real fit, persistence."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hashsearch.codes import validate_codes
from hashsearch.datasets import load_digits, standard_split
from hashsearch.errors import HashsearchError, InvalidInputError
from hashsearch.metrics import mean_average_precision
from hashsearch.models import schn
from hashsearch.models.schn import SCHN
from hashsearch.models.single_modal import NonFiniteError
from hashsearch.models.training import load_model

SMALL = dict(label_dim=32, latent_dim=64, mlp_hidden=64, feature_dim=32)


def test_similarity_loss_hand_case():
    U = torch.tensor([[1.0, -1.0]])
    B = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    S = torch.tensor([[1.0, 0.0]])
    # bits·S = [2, 0], U Bᵀ = [2, −2]: squared errors [0, 4], mean 2, times 12 / 2 bits
    assert schn.similarity_loss(U, B, S).item() == pytest.approx(12.0)


def test_quantization_reconstruction_and_adversarial_hand_cases():
    U = torch.tensor([[0.5, -1.0], [0.0, 1.0]])
    B = torch.tensor([[1.0, -1.0], [1.0, 1.0]])
    assert schn.quantization_loss(U, B).item() == pytest.approx((0.25 + 0 + 1 + 0) / 4)
    assert schn.reconstruction_loss(U, B).item() == pytest.approx(1.25 / 4)
    undecided = torch.zeros(4)  # logit 0: probability 1/2
    assert schn.adversarial_loss(undecided, True).item() == pytest.approx(math.log(2))
    sure = torch.full((2,), math.log(9.0))  # probability 0.9
    assert schn.adversarial_loss(sure, True).item() == pytest.approx(-math.log(0.9))
    assert schn.adversarial_loss(sure, False).item() == pytest.approx(-math.log(0.1))
    saturated = torch.tensor([-200.0, 200.0], requires_grad=True)  # probability 0 / 1 in float32
    loss = schn.adversarial_loss(saturated, True)
    loss.backward()
    assert loss.item() == pytest.approx(100.0) and torch.isfinite(saturated.grad).all()
    assert saturated.grad.abs().max().item() <= 0.5  # |sigmoid − target| / 2 items: bounded, never 1e12


def test_soft_similarity_hand_cases():
    # S± = [1, −1, −1]: r = −1 / 4, so similar stays 1 and dissimilar becomes −0.5
    got = schn.soft_similarity(torch.tensor([[1.0, 0.0, 0.0]]))
    torch.testing.assert_close(got, torch.tensor([[1.0, -0.5, -0.5]]))
    balanced = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(schn.soft_similarity(balanced), 2 * balanced - 1)
    torch.testing.assert_close(schn.soft_similarity(torch.ones(2, 2)), torch.ones(2, 2))  # no dissimilar pair


@pytest.mark.parametrize("seed", range(5))
def test_dcc_update_never_increases_its_objective(seed):
    """DCC minimises ‖B Uᵀ‖² − 2 tr(Bᵀ P), P = bits·SᵀU + γU + αU_label + βU_latent, one bit at a time."""
    g = torch.Generator().manual_seed(seed)
    m, bits, gamma, alpha, beta = 30, 8, 10.0, 2.0, 0.1
    U, Ul, Ulat = (torch.rand(m, bits, generator=g) * 2 - 1 for _ in range(3))
    S = schn.soft_similarity((torch.rand(m, m, generator=g) > 0.7).float())
    B = torch.where(torch.rand(m, bits, generator=g) > 0.5, 1.0, -1.0)
    P = bits * S.T @ U + gamma * U + alpha * Ul + beta * Ulat

    def objective(b):
        return ((b @ U.T) ** 2).sum() - 2 * (b * P).sum()

    new = schn.dcc_update(B, U, S, gamma, Ul, Ulat, alpha, beta)
    assert set(new.unique().tolist()) <= {-1.0, 1.0}
    assert objective(new) <= objective(B) + 1e-3
    again = schn.dcc_update(new, U, S, gamma, Ul, Ulat, alpha, beta)
    assert objective(again) <= objective(new) + 1e-3


def tiny_setup(nbits=16, batch=6, n_classes=3):
    model = SCHN(nbits, verbose=False, device="cpu", **SMALL)  # these tests feed whole tensors, on the CPU
    x = np.random.default_rng(0).random((batch, 1, 8, 8)).astype(np.float32)
    labels = np.arange(batch) % n_classes
    xt, lt, dev = model._start_fit(x, labels)
    label_net, cycle, disc = model.build_networks(n_classes, dev)
    adj = schn.label_similarity(lt, lt)
    return model, label_net, cycle, disc, xt, lt, adj


def test_every_term_has_the_right_shape_and_gradients_reach_the_right_networks():
    model, label_net, cycle, disc, xt, lt, adj = tiny_setup()
    out = model.forward_all(label_net, cycle, xt, lt, adj)
    for key in ("image", "label", "latent", "image_rec", "label_rec"):
        assert out[key].shape == (6, 16), key
    assert ((out["latent"] > 0) & (out["latent"] < 1)).all()  # sigmoid latent codes, as the authors
    B = torch.where(torch.randn(6, 16) >= 0, 1.0, -1.0)
    terms = model.cycle_losses(out, B, adj)
    assert set(terms) == {f"{t}_{s}" for t in ("sim", "quant") for s in ("image", "label", "latent")} | {
        "rec_image", "rec_label", "total"}
    for name, term in terms.items():
        assert term.ndim == 0 and torch.isfinite(term), name
    assert terms["total"].item() == pytest.approx(sum(v.item() for k, v in terms.items() if k != "total"), rel=1e-5)
    for name, net in (("sim_image", model.encoder_), ("sim_label", label_net), ("sim_latent", cycle.gcn),
                      ("rec_image", cycle.image_rec), ("rec_label", cycle.label_rec)):
        grads = torch.autograd.grad(terms[name], list(net.parameters()), retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name} does not reach its network"
    # the cycle net sees detached features: the latent term must not train the image encoder
    grads = torch.autograd.grad(terms["sim_latent"], list(model.encoder_.parameters()), retain_graph=True, allow_unused=True)
    assert all(g is None for g in grads)
    logits = disc(out["image_rec"], out["label_rec"])
    assert logits.shape == (12,) and torch.isfinite(logits).all()
    authors = torch.cat([(disc.image(out["image_rec"])[1] + 1) / 2, (disc.label(out["label_rec"])[1] + 1) / 2]).view(-1)
    torch.testing.assert_close(torch.sigmoid(logits), authors)  # (tanh z + 1) / 2 = sigmoid(2z)
    gen = schn.adversarial_loss(logits, True)
    grads = torch.autograd.grad(gen, list(cycle.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_weights_scale_their_terms():
    model, label_net, cycle, disc, xt, lt, adj = tiny_setup()
    model.encoder_.eval(), cycle.eval()  # no dropout / batch statistics: identical forward passes
    B = torch.where(torch.randn(6, 16) >= 0, 1.0, -1.0)
    with torch.no_grad():
        out = model.forward_all(label_net, cycle, xt, lt, adj)
        base = model.cycle_losses(out, B, adj)
        model.semantic_weight, model.rec_weight, model.gamma = 3.0, 0.5, 20.0
        scaled = model.cycle_losses(out, B, adj)
    assert scaled["sim_label"].item() == pytest.approx(3 * base["sim_label"].item(), rel=1e-5)
    assert scaled["rec_image"].item() == pytest.approx(0.5 * base["rec_image"].item(), rel=1e-5)
    assert scaled["quant_image"].item() == pytest.approx(2 * base["quant_image"].item(), rel=1e-5)


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    split = standard_split(data, seed=0, queries_per_class=25, n_train=500)  # train: a slice of the database
    return data.images, data.labels, split.query, split.train


@pytest.mark.slow
def test_short_fit_on_digits_beats_untrained_encoder(digits, tmp_path):
    x, y, q, db = digits
    settings = dict(max_iter=2, max_epoch=2, num_samples=500, verbose=False, **SMALL)
    untrained = SCHN(16, **{**settings, "lr": 0.0, "max_iter": 1, "max_epoch": 1}).fit(x[db], y[db])  # initial weights
    model = SCHN(16, **settings).fit(x[db], y[db])
    codes = model.encode(x[db])
    validate_codes(codes, 16)
    validate_codes(model.train_codes_, 16)
    assert len(model.train_codes_) == len(db) and len(model.history_) == 2
    maps = [mean_average_precision(m.encode(x[q]), m.encode(x[db]), y[q], y[db], 16) for m in (untrained, model)]
    assert maps[1] > maps[0] + 0.2, maps
    model.save(tmp_path / "schn")
    loaded = load_model(tmp_path / "schn")
    assert isinstance(loaded, SCHN) and loaded.alpha == 2.0 and loaded.latent_dim == SMALL["latent_dim"]
    np.testing.assert_array_equal(loaded.encode(x[q]), model.encode(x[q]))


def test_divergence_is_named_not_left_to_a_later_crash():
    schn.check_finite({"total": torch.tensor(3.0), "codes": torch.ones(2, 8)})  # finite: no error
    with pytest.raises(NonFiniteError, match="diverged: non-finite sim_image, codes"):
        schn.check_finite({"sim_image": torch.tensor(float("nan")), "total": torch.tensor(1.0),
                           "codes": torch.tensor([[0.0, float("inf")]])})


def test_normalized_adjacency_hand_case_and_degree_free_scale():
    S = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # item 2 has no label: no self-loop in S
    A = schn.normalized_adjacency(S)
    torch.testing.assert_close(A, torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]))
    for k in (2, 8, 64):  # k items of one class: the propagated features keep their scale (raw S: x k)
        x = torch.ones(k, 3)
        torch.testing.assert_close(schn.normalized_adjacency(torch.ones(k, k)) @ x, x)


@pytest.mark.parametrize("scale", [1.0, 1e4, 1e6])
def test_cycle_net_stays_finite_for_huge_features(scale):
    """The former divergence: features of the latent graph layer grew without bound during training
    (x80 in 60 steps at lr 1e-2 on digits), attention logits grew with their square and the attention
    backward returned NaN. Before the fix, inputs of scale 1e6 gave NaN gradients here (1e4: 1.6e6)."""
    torch.manual_seed(0)
    lab = torch.nn.functional.one_hot(torch.arange(64) % 10, 10).float()
    cycle = schn.CycleNet(32, 16, 32, 64, 64)
    f_image, f_label = torch.rand(64, 32) * scale, torch.rand(64, 32) * scale
    out = cycle(f_image, f_label, schn.label_similarity(lab, lab))
    sum(v.sum() for v in out.values()).backward()
    grads = [p.grad for p in cycle.parameters() if p.grad is not None]
    assert all(torch.isfinite(v).all() for v in out.values())
    assert all(torch.isfinite(g).all() for g in grads) and max(g.abs().max() for g in grads) < 1e4
    with torch.no_grad():  # the attention weights do not depend on the scale of the label features
        q = cycle.norm_label(f_label)
        torch.testing.assert_close(q, cycle.norm_label(f_label * 1e3), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_fit_that_used_to_diverge_now_trains(digits):
    """Before the fix this fit (1,000 digits rows, 64-d, lr 1e-2, widths 64/128/128) went NaN at step
    76 of 96 with "non-finite sim_latent, quant_latent, rec_image, rec_label, total", the message of
    the reported default run; now it needs no recovery and its losses fall."""
    x, y = digits[0].reshape(len(digits[0]), -1)[:1000], digits[1][:1000]
    model = SCHN(32, lr=1e-2, label_dim=64, latent_dim=128, mlp_hidden=128, feature_dim=64, max_iter=6,
                 max_epoch=1, verbose=False).fit(x, y)
    assert [h["round"] for h in model.history_] == list(range(6))  # no "recovered" event
    assert model.history_[-1]["total"] < model.history_[0]["total"]


def test_a_non_finite_step_is_recovered_and_recorded(digits, monkeypatch):
    x, y, _, db = digits
    calls = {"n": 0}
    real = SCHN.cycle_losses

    def once_nan(self, out, B, S):
        terms = real(self, out, B, S)
        calls["n"] += 1
        if calls["n"] == 7:  # round 1, a few steps in
            terms["sim_latent"] = terms["sim_latent"] * float("nan")
        return terms

    monkeypatch.setattr(SCHN, "cycle_losses", once_nan)
    rows = x[db[:200]].reshape(200, -1)
    model = SCHN(16, max_iter=2, verbose=False, **SMALL).fit(rows, y[db[:200]])
    events = [h for h in model.history_ if h.get("event") == "recovered"]
    assert len(events) == 1 and events[0]["round"] == 1 and "sim_latent" in events[0]["error"]
    assert events[0]["lr"] == pytest.approx(5e-4)
    assert [h["round"] for h in model.history_ if "event" not in h] == [0, 1]
    assert model.history_[-1]["lr"] == pytest.approx(5e-4)
    validate_codes(model.encode(rows), 16)


def test_recovery_gives_up_with_a_clear_error(digits, monkeypatch):
    x, y, _, db = digits
    monkeypatch.setattr(schn, "similarity_loss", lambda U, B, S: U.sum() * float("nan"))
    with pytest.raises(HashsearchError, match="still diverging after 6 restarts.*lr now"):
        SCHN(16, max_iter=1, verbose=False, **SMALL).fit(x[db[:100]].reshape(100, -1), y[db[:100]])


def test_auto_settings_follow_the_input_and_can_be_overridden(digits):
    x, y, _, db = digits
    features = SCHN(16)._resolve_params((64,), 1000, 10)
    assert features["input_kind"] == "features" and features["label_dim"] == 128 and features["latent_dim"] == 256
    assert features["num_samples"] == 1000 and features["max_epoch"] == 1 and features["max_iter"] == 10
    big = SCHN(16)._resolve_params((1, 28, 28), 20000, 10)
    assert big["input_kind"] == "pixels" and big["mlp_hidden"] == 512 and big["num_samples"] == 2000
    assert big["max_iter"] == 50  # capped
    mid = SCHN(16)._resolve_params((784,), 4000, 10)
    assert mid["max_iter"] == 16  # about 8 passes over the set
    fixed = SCHN(16, latent_dim=48, max_iter=3)._resolve_params((64,), 1000, 10)
    assert fixed["latent_dim"] == 48 and fixed["max_iter"] == 3 and fixed["label_dim"] == 128
    model = SCHN(16, max_iter=1, verbose=False, **SMALL)
    assert model.max_epoch == "auto"  # stored unchanged
    model.fit(x[db[:100]].reshape(100, -1), y[db[:100]])
    assert model.max_epoch == "auto" and model.params_["max_epoch"] == 1 and model.params_["feature_dim"] == 32


def test_params_round_trip_and_clone():
    from sklearn.base import clone

    model = SCHN(32, latent_dim=48, lr=5e-4)
    again = type(model)(**model.get_params())
    assert again.get_params() == model.get_params() and clone(model).get_params() == model.get_params()
    assert clone(model).max_iter == "auto"


def test_invalid_settings_are_named():
    with pytest.raises(InvalidInputError, match="gamma"):
        SCHN(16, gamma=-1)
    with pytest.raises(InvalidInputError, match="max_iter must be a positive integer or \"auto\", got 0"):
        SCHN(16, max_iter=0)
    with pytest.raises(InvalidInputError, match="latent_dim"):
        SCHN(16, latent_dim="big")
    model = SCHN(16)
    model.set_params(gcn_dropout=1.0)  # set_params does not check; fit does
    with pytest.raises(InvalidInputError, match="gcn_dropout must be below 1"):
        model.fit(np.zeros((4, 8), np.float32), np.arange(4) % 2)
    with pytest.raises(InvalidInputError, match="labels are required"):
        SCHN(16, verbose=False).fit(np.zeros((4, 1, 8, 8), np.float32), None)


def test_augmented_fit_on_images_is_seeded_and_differs_from_plain(digits):
    x, y, q, db = digits
    fit = lambda augment: SCHN(8, max_iter=1, verbose=False, augment=augment, **SMALL).fit(x[db[:100]], y[db[:100]])
    a, b, plain = fit(True), fit(True), fit(False)
    np.testing.assert_array_equal(a.encode(x[q]), b.encode(x[q]))
    assert not np.array_equal(a.encode(x[q]), plain.encode(x[q]))
