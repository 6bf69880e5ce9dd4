"""DCMH: objective vs a naive loop, stability, B update, gradients, training on real data, checkpoints."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hashsearch.codes import hamming_bruteforce, validate_codes
from hashsearch.datasets import data_root
from hashsearch.errors import InvalidInputError, NotFittedError
from hashsearch.models.base import label_similarity as similarity
from hashsearch.models.base import multihot_labels
from hashsearch.models.base import signs as sign_codes
from hashsearch.models.dcmh import (
    DCMH, FEATURE_SETTINGS, PAPER_SETTINGS, batch_loss, class_centres, dcmh_objective, distinct_bits, label_targets,
)
from hashsearch.models.training import load_model, select_device, seed_everything

FAST = dict(epochs=2, batch_size=32, text_hidden=64, image_hidden=(32,), progress=False)


def naive_objective(F, G, B, S, gamma, eta):
    """J written out term by term with python floats, straight from the paper."""
    n, c = F.shape
    total = 0.0
    for i in range(n):
        for j in range(n):
            theta = 0.5 * sum(F[i, k] * G[j, k] for k in range(c))
            total += math.log1p(math.exp(theta)) - S[i, j] * theta
    total += gamma * (((F - B) ** 2).sum() + ((G - B) ** 2).sum())
    total += eta * ((F.sum(0) ** 2).sum() + (G.sum(0) ** 2).sum())
    return total


@pytest.fixture(scope="module")
def wiki():
    path = data_root() / "wikipedia" / "wikiData.mat"
    if not path.exists():
        pytest.skip("wikipedia data set not found")
    from scipy.io import loadmat

    d = loadmat(path)
    return d["I_tr"], d["T_tr"], d["L_tr"][:, 0].astype(np.int64), d["I_te"], d["T_te"], d["L_te"][:, 0].astype(np.int64)


def test_objective_matches_naive_loop():
    rng = np.random.default_rng(0)
    F, G = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    B = np.where(F + G >= 0, 1.0, -1.0)
    L = rng.integers(0, 2, size=(5, 3))
    S = (L @ L.T > 0).astype(float)
    got = dcmh_objective(*(torch.tensor(a) for a in (F, G, B, S)), gamma=0.7, eta=0.3)
    assert float(got) == pytest.approx(naive_objective(F, G, B, S, 0.7, 0.3), rel=1e-10)


def test_objective_hand_computed_case():
    # one pair, one bit: theta = 0.5 * 2 * 2 = 2, S = 1 -> log(1 + e^2) - 2; B = +1: (2-1)^2 twice; balance 4 + 4
    F = G = torch.tensor([[2.0]], dtype=torch.float64)
    B, S = torch.ones(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64)
    expected = math.log1p(math.e ** 2) - 2 + 1 * (1 + 1) + 1 * (4 + 4)
    assert float(dcmh_objective(F, G, B, S)) == pytest.approx(expected)


def test_objective_stable_for_large_theta():
    F = torch.full((3, 16), 40.0)
    G = torch.full((3, 16), -40.0)  # theta = -12800 for every pair; dissimilar -> likelihood term ~ 0
    S = torch.zeros(3, 3)
    B = sign_codes(F + G)
    J = dcmh_objective(F, G, B, S, gamma=0.0, eta=0.0)
    assert torch.isfinite(J) and float(J) == pytest.approx(0.0, abs=1e-6)
    J_sim = dcmh_objective(F, G, B, torch.ones(3, 3), gamma=0.0, eta=0.0)  # log(1+e^θ) − θ = 12800 per pair
    assert float(J_sim) == pytest.approx(9 * 12800.0, rel=1e-6)
    J_big = dcmh_objective(-F, G, B, S, gamma=0.0, eta=0.0)  # θ = +12800: the naive log(1 + exp) overflows
    assert torch.isfinite(J_big) and float(J_big) == pytest.approx(9 * 12800.0, rel=1e-6)


def test_batch_loss_gradient_is_full_objective_gradient_scaled():
    torch.manual_seed(0)
    n, c, gamma, eta = 12, 8, 1.0, 0.5
    F, G = torch.randn(n, c, dtype=torch.float64), torch.randn(n, c, dtype=torch.float64)
    B = sign_codes(F + G)
    L = torch.randint(0, 2, (n, 4)).to(torch.float64)
    S = similarity(L, L).to(torch.float64)
    ind = torch.tensor([1, 4, 7, 10])
    full = F.clone().requires_grad_(True)
    dcmh_objective(full, G, B, S, gamma, eta).backward()
    out = F[ind].clone().requires_grad_(True)
    stale = F.clone()
    stale[ind] = 0.0  # stale buffer rows must not matter
    batch_loss(out, ind, stale, G, B, S[ind], gamma, eta).backward()
    assert torch.allclose(out.grad * n * len(ind), full.grad[ind], rtol=1e-10, atol=1e-12)


def test_sign_update_has_no_third_state():
    x = torch.tensor([[-1.5, 0.0, 2.0, -0.0]])
    assert sign_codes(x).tolist() == [[-1.0, 1.0, 1.0, 1.0]]


def test_lr_schedule_is_logspaced():
    m = DCMH(16, epochs=5, lr=(1e-1, 1e-3))
    m.params_ = m._resolve((10,), 100)
    assert [m.lr_at(e) for e in range(5)] == pytest.approx(np.logspace(-1, -3, 5).tolist())


def test_fit_updates_every_parameter_and_returns_packed_codes():
    rng = np.random.default_rng(1)
    x, y, labels = rng.normal(size=(64, 20)), rng.random(size=(64, 30)), rng.integers(0, 4, 64)
    model = DCMH(24, **FAST)
    before = None
    model.params_ = model._resolve((20,), 64)
    model._build((20,), 30)
    before = [p.detach().clone() for p in [*model.image_net_.parameters(), *model.text_net_.parameters()]]
    model.image_net_ = model.text_net_ = None  # fit builds afresh with the same seed
    model.fit(x, y, labels)
    after = [*model.image_net_.parameters(), *model.text_net_.parameters()]
    assert len(before) == len(after) and all(not torch.equal(a, b) for a, b in zip(before, after))
    assert len(model.history_) == 2 and all(np.isfinite(h["image_loss"]) for h in model.history_)
    codes_i, codes_t = model.encode_image(x[:10]), model.encode_text(y[:10])
    for codes in (codes_i, codes_t):
        validate_codes(codes, 24)
        assert codes.shape == (10, 3)


def test_bad_inputs_are_named():
    rng = np.random.default_rng(2)
    x, y, labels = rng.normal(size=(16, 5)), rng.random(size=(16, 7)), rng.integers(0, 2, 16)
    with pytest.raises(InvalidInputError, match="same number of rows"):
        DCMH(8, **FAST).fit(x, y[:10], labels)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        DCMH(8, **FAST).fit(bad, y, labels)
    with pytest.raises(NotFittedError, match="not fitted"):
        DCMH(8).encode_text(y)
    model = DCMH(8, **FAST).fit(x, y, labels)
    with pytest.raises(InvalidInputError, match="trained on"):
        model.encode_image(x[:, :4])
    with pytest.raises(InvalidInputError, match="nbits"):
        DCMH(12)


def test_custom_module_and_cnnf_on_pixels():
    rng = np.random.default_rng(3)
    pixels, y, labels = rng.random(size=(8, 1, 64, 64)), rng.random(size=(8, 6)), rng.integers(0, 2, 8)
    model = DCMH(16, epochs=1, batch_size=8, text_hidden=16, progress=False).fit(pixels, y, labels)
    assert type(model.image_net_).__name__ == "CNNF" and model.encode_image(pixels).shape == (8, 2)
    own = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64 * 64, 16))
    custom = DCMH(16, image_net=own, epochs=1, batch_size=8, text_hidden=16, progress=False).fit(pixels, y, labels)
    assert custom.image_net_ is own and custom.encode_image(pixels).shape == (8, 2)


def test_checkpoint_round_trip_and_load_model(tmp_path):
    rng = np.random.default_rng(4)
    x, y, labels = rng.normal(size=(48, 10)), rng.random(size=(48, 12)), rng.integers(0, 3, 48)
    model = DCMH(16, **FAST).fit(x, y, labels)
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    assert isinstance(again, DCMH) and again.get_params() == model.get_params() and again.params_ == model.params_
    assert np.array_equal(again.encode_image(x), model.encode_image(x))
    assert np.array_equal(again.encode_text(y), model.encode_text(y))
    (tmp_path / "m" / "state.pt").write_bytes(b"not a torch file")
    with pytest.raises(Exception, match="cannot read model weights"):
        load_model(tmp_path / "m")


def test_text_vocabulary_is_saved_checked_on_load_and_texts_alone_train(tmp_path):
    import json

    from hashsearch.errors import CorruptIndexError

    rng = np.random.default_rng(6)
    y, labels = (rng.random(size=(48, 5)) < 0.4).astype(np.float32), rng.integers(0, 3, 48)
    words = ("sunset", "beach", "clouds", "dog", "cat")
    model = DCMH(16, **FAST).fit(None, y, labels, text_vocabulary=words)
    assert model.text_vocabulary_.words == words and model.text_vocabulary_.binary
    assert model.image_net_ is None and model.params_["image_net"] == "none"
    assert all(h["image_loss"] is None and np.isfinite(h["text_loss"]) for h in model.history_)
    with pytest.raises(InvalidInputError, match="trained on texts alone"):
        model.encode_image(y)
    with pytest.raises(InvalidInputError, match="needs images"):
        DCMH(16, image_net="mlp", **FAST).fit(None, y, labels)
    with pytest.raises(InvalidInputError, match="5 words but the texts have 4 columns"):
        DCMH(16, **FAST).fit(None, y[:, :4], labels, text_vocabulary=words)
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    assert again.text_vocabulary_ == model.text_vocabulary_ and again.image_net_ is None
    assert np.array_equal(again.encode_text(y), model.encode_text(y))
    config = tmp_path / "m" / "config.json"
    doc = json.loads(config.read_text())
    doc["config"]["fitted"]["text_vocabulary"]["words"].pop()
    config.write_text(json.dumps(doc))
    with pytest.raises(CorruptIndexError, match="4 words but the text network takes 5 columns"):
        load_model(tmp_path / "m")
    assert DCMH(16, **FAST).fit(rng.normal(size=(48, 3)), y, labels).text_vocabulary_ is None


def test_resume_texts_alone(tmp_path):
    rng = np.random.default_rng(7)
    y, labels = rng.random(size=(40, 9)), rng.integers(0, 3, 40)
    kw = dict(FAST, lr=(0.05, 0.05), dropout=0.2)
    straight = DCMH(16, **(kw | {"epochs": 4})).fit(None, y, labels)
    DCMH(16, **(kw | {"epochs": 2}), checkpoint_dir=tmp_path / "ck").fit(None, y, labels)
    resumed = DCMH(16, **(kw | {"epochs": 4})).fit(None, y, labels, resume=tmp_path / "ck")
    assert np.array_equal(resumed.text_outputs(y), straight.text_outputs(y))


def test_resume_continues_exactly(tmp_path):
    rng = np.random.default_rng(5)
    x, y, labels = rng.normal(size=(40, 6)), rng.random(size=(40, 9)), rng.integers(0, 3, 40)
    kw = dict(FAST, lr=(0.05, 0.05), dropout=0.2)
    straight = DCMH(16, **(kw | {"epochs": 4})).fit(x, y, labels)
    DCMH(16, **(kw | {"epochs": 2}), checkpoint_dir=tmp_path / "ck").fit(x, y, labels)
    resumed = DCMH(16, **(kw | {"epochs": 4})).fit(x, y, labels, resume=tmp_path / "ck")
    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3, 4]
    assert np.array_equal(resumed.image_outputs(x), straight.image_outputs(x))
    assert np.array_equal(resumed.text_outputs(y), straight.text_outputs(y))
    with pytest.raises(InvalidInputError, match="nbits"):
        DCMH(24, **kw).fit(x, y, labels, resume=tmp_path / "ck")


def test_cpu_device_path():
    assert select_device("cpu").type == "cpu"
    assert select_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="CUDA is not available"):
            select_device("cuda")
    with pytest.raises(InvalidInputError, match="seed"):
        seed_everything(-1)


@pytest.mark.slow
def test_training_on_real_slice_beats_untrained_and_index_accepts_codes(wiki):
    from hashsearch.index import HammingIndex
    from hashsearch.metrics import mean_average_precision

    I_tr, T_tr, L_tr, I_te, T_te, L_te = wiki
    rng = np.random.default_rng(0)
    # Every training pair (smaller slices collapse to a few codes on these weak features), narrower
    # nets and smaller batches than FEATURE_SETTINGS so that 40 epochs take seconds (mAP ~0.35).
    tr, q = np.arange(len(L_tr)), rng.choice(len(L_te), 150, replace=False)
    kw = {**FEATURE_SETTINGS, "nbits": 16, "text_hidden": 256, "image_hidden": (256, 256), "batch_size": 32, "progress": False}
    trained = DCMH(**kw | {"epochs": 40}).fit(I_tr[tr], T_tr[tr], L_tr[tr])
    untrained = DCMH(**kw | {"epochs": 1, "lr": (1e-12, 1e-12)}).fit(I_tr[tr], T_tr[tr], L_tr[tr])

    onehot = np.eye(max(L_tr.max(), L_te.max()) + 1, dtype=np.uint8)

    def t2i(model):
        return mean_average_precision(model.encode_text(T_te[q]), model.encode_image(I_tr[tr]),
                                      onehot[L_te[q]], onehot[L_tr[tr]], 16)

    before, after = t2i(untrained), t2i(trained)
    assert after > before + 0.15, (before, after)
    db = trained.encode_image(I_tr[tr])
    index = HammingIndex(16)
    index.add(db)
    dist, ids = index.search(trained.encode_text(T_te[q[:5]]), 10)
    oracle = np.sort(hamming_bruteforce(trained.encode_text(T_te[q[:5]]), db), axis=1)[:, :10]
    assert np.array_equal(dist, oracle) and ids.shape == (5, 10)


def test_auto_settings_follow_the_input_and_explicit_ones_win():
    features = DCMH(16)._resolve((128,), 2173)
    assert features["recipe"] == "features" and features["image_net"] == "mlp" and features["optimizer"] == "adam"
    assert features["epochs"] == 100 and features["label_codes"] == 1.0 and features["eta"] == FEATURE_SETTINGS["eta"]
    assert DCMH(16)._resolve((128,), 25_000)["epochs"] == 20  # larger sets: fewer passes
    pixels = DCMH(16)._resolve((3, 224, 224), 10_000)
    assert pixels["image_net"] == "cnnf" and pixels["epochs"] == PAPER_SETTINGS["epochs"] == 500
    assert pixels["lr"] == pytest.approx([10 ** -1.5, 1e-3]) and pixels["label_codes"] == 0.0 and pixels["text_hidden"] == 8192
    mine = DCMH(16, epochs=7, eta=0.5, lr=0.01, label_codes=0)._resolve((128,), 2173)
    assert (mine["epochs"], mine["eta"], mine["lr"], mine["label_codes"]) == (7, 0.5, [0.01, 0.01], 0.0)
    with pytest.raises(InvalidInputError, match="epochs must be a positive integer or auto"):
        DCMH(16, epochs="many")


def test_resolved_settings_are_recorded_and_saved(tmp_path):
    rng = np.random.default_rng(6)
    x, y, labels = rng.normal(size=(40, 6)), rng.random(size=(40, 9)), rng.integers(0, 3, 40)
    model = DCMH(16, **FAST).fit(x, y, labels)
    assert model.get_params()["eta"] == "auto" and model.params_["eta"] == FEATURE_SETTINGS["eta"]
    assert model.params_["epochs"] == 2 and model.params_["recipe"] == "features"
    model.save(tmp_path / "m")
    assert load_model(tmp_path / "m").params_ == model.params_


def _bit_design(c: np.ndarray, w: np.ndarray) -> tuple[int, float, float, int]:
    """(distinct bits up to sign, max |weighted bit mean|, max |weighted bit correlation|, min centre distance)."""
    mean = w @ c
    z = (c - mean) / np.sqrt(1 - mean ** 2)
    corr = (z * w[:, None]).T @ z
    np.fill_diagonal(corr, 0)
    dist = (c.shape[1] - c @ c.T) / 2
    np.fill_diagonal(dist, c.shape[1])
    return len({tuple(col * col[0]) for col in c.T}), np.abs(mean).max(), np.abs(corr).max(), dist.min()


@pytest.mark.parametrize("nbits", [16, 32, 64, 128])
@pytest.mark.parametrize("counts", [None, [138, 272, 244, 248, 202, 178, 186, 144, 214, 347]])  # wikipedia's
def test_class_centres_have_distinct_bits_and_are_seeded(nbits, counts):
    w = np.full(10, 0.1) if counts is None else np.asarray(counts, float) / sum(counts)
    c = class_centres(10, nbits, None if counts is None else np.asarray(counts), seed=0)
    assert c.shape == (10, nbits) and set(np.unique(c)) == {-1.0, 1.0}
    distinct, imbalance, _, separation = _bit_design(c, w)
    # the random draw alone: at 64 bits 3 bits repeat a split (|corr| 1), at 128 bits 14
    assert distinct == nbits and imbalance < 1 and separation >= 0.35 * nbits
    np.testing.assert_array_equal(c, class_centres(10, nbits, None if counts is None else np.asarray(counts), seed=0))


def test_distinct_bits_replaces_only_repeats_and_constants():
    rng = np.random.default_rng(0)
    w = np.full(6, 1 / 6)
    c = rng.choice((-1.0, 1.0), size=(6, 8))
    c = c[:, [len({tuple(col * col[0]) for col in c.T[:j + 1]}) == j + 1 for j in range(8)]]  # no repeat yet
    np.testing.assert_array_equal(distinct_bits(c, w, rng), c)  # nothing to replace: unchanged
    bad = np.hstack([c, -c[:, :1], np.ones((6, 1))])  # a negated copy of bit 0 and a constant bit
    fixed = distinct_bits(bad, w, rng)
    np.testing.assert_array_equal(fixed[:, :c.shape[1]], c)
    assert _bit_design(fixed, w)[0] == fixed.shape[1] and np.abs(w @ fixed).max() < 1


def test_class_centres_with_few_or_many_classes():
    few = class_centres(3, 16, seed=1)  # only 3 distinct splits of 3 classes: they repeat, none is constant
    assert len({tuple(col * col[0]) for col in few.T}) == 3 and np.abs(few.sum(0)).max() < 3
    many = class_centres(24, 64, seed=1)
    assert _bit_design(many, np.full(24, 1 / 24))[0] == 64


def test_label_targets_are_the_signed_sums_of_class_centres():
    L = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    T = label_targets(L, 8, seed=1)
    c2 = torch.from_numpy(class_centres(2, 8, np.array([2.0, 2.0]), seed=1)).float()
    assert torch.equal(T[0], c2[0]) and torch.equal(T[1], c2[1]) and torch.equal(T[2], torch.where(c2.sum(0) >= 0, 1.0, -1.0))


def test_trained_codes_have_no_constant_repeated_or_near_copy_bit():
    """Two real views (top and bottom halves of scikit-learn's digits), 64 bits, the feature recipe
    with a short schedule: over the database codes of either view no bit is constant, no two bits are
    equal or opposite, and no two are near copies (with random class centres: |corr| 0.99 here)."""
    from hashsearch.codes import unpack_bits
    from hashsearch.datasets import load_digits

    d = load_digits()
    top, bottom = d.images[:, 0, :4].reshape(len(d), -1), d.images[:, 0, 4:].reshape(len(d), -1)
    model = DCMH(64, epochs=10, progress=False).fit(top, bottom, d.labels)
    for codes in (model.encode_image(top), model.encode_text(bottom)):
        bits = unpack_bits(codes, 64).astype(np.int8)
        assert bits.std(0).min() > 0, "a constant bit"
        assert len(np.unique(bits ^ bits[:1], axis=1).T) == 64, "two bits equal or opposite on every item"
        corr = np.corrcoef(bits, rowvar=False) - np.eye(64)
        assert np.abs(corr).max() < 0.9, np.abs(corr).max()


def test_label_codes_make_related_codes_meet_in_hamming_space():
    """Two noisy views of 4 classes: with label codes, a text query finds images of its class within
    2 bits (hash lookup), and no bit is constant."""
    from hashsearch.metrics import code_statistics, lookup_statistics

    rng = np.random.default_rng(7)
    n, k = 400, 4
    lab = rng.integers(0, k, n)
    x = rng.normal(size=(k, 20))[lab] * 2 + rng.normal(size=(n, 20))
    y = rng.normal(size=(k, 12))[lab] * 2 + rng.normal(size=(n, 12))
    onehot = np.eye(k)[lab]
    model = DCMH(16, epochs=15, batch_size=64, image_hidden=(64,), text_hidden=64, progress=False).fit(x, y, lab)
    img, txt = model.encode_image(x), model.encode_text(y)
    stats = lookup_statistics(txt[:100], img[100:], onehot[:100], onehot[100:], 16, radius=2)
    assert stats["hit_fraction"] > 0.9 and stats["precision"] > 0.9, stats
    assert code_statistics(img, 16)["constant_bits"] == []
