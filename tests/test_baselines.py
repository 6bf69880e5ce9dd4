"""Tests of the shallow baselines (LSH, ITQ, CCA-ITQ, SCM-seq) against hand-checkable cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ortho_group
from sklearn.decomposition import PCA

from hashsearch.codes import hamming_bruteforce, to_signs, unpack_bits, validate_codes
from hashsearch.datasets import load_sift_small, load_wikipedia, standard_split
from hashsearch.errors import CorruptIndexError, InvalidInputError
from hashsearch.models.baselines import (
    CCAITQ,
    ITQ,
    LSH,
    SCM,
    NotFittedError,
    check_labels,
    itq_rotation,
    semantic_similarity,
    top_singular_pairs,
)
from hashsearch.models.training import load_model
from conftest import examples

SINGLE = [LSH, ITQ]
CROSS = [CCAITQ, SCM]


def _blobs(n=240, d=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) + 3.0, rng.integers(0, 4, size=n)


def _pairs(n=240, dx=12, dy=6, seed=0):
    """Paired views driven by the class: class centres plus independent noise per view."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=n)
    cx, cy = rng.normal(size=(4, dx)) * 3, rng.normal(size=(4, dy)) * 3
    return cx[labels] + rng.normal(size=(n, dx)), cy[labels] + rng.normal(size=(n, dy)), labels


def _fit(cls, nbits=16, seed=0):
    if cls in SINGLE:
        x, labels = _blobs()
        return cls(nbits, seed=seed).fit(x), x
    x, y, labels = _pairs()
    return cls(nbits, seed=seed).fit(x, y, labels), (x, y)


def _encodings(model, data):
    if isinstance(data, tuple):
        return [model.encode_image(data[0]), model.encode_text(data[1])]
    return [model.encode(data)]


# --- common API ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", SINGLE + CROSS)
@pytest.mark.parametrize("nbits", [8, 24, 64])
def test_codes_are_packed_uint8_and_deterministic(cls, nbits):
    model, data = _fit(cls, nbits)
    again, _ = _fit(cls, nbits)
    assert model.nbits == nbits
    for codes, codes2 in zip(_encodings(model, data), _encodings(again, data)):
        validate_codes(codes, nbits)
        assert codes.shape == (240, nbits // 8)
        np.testing.assert_array_equal(codes, codes2)


@pytest.mark.parametrize("cls", SINGLE + CROSS)
def test_encode_is_sign_of_linear_projection(cls):
    """Every baseline is sign((x - mean) W): check against that formula, computed here by hand."""
    model, data = _fit(cls, 32)
    views = data if isinstance(data, tuple) else (data,)
    for modality, x, codes in zip(model.modalities, views, _encodings(model, data)):
        expected = (x - model.means_[modality]) @ model.projections_[modality] >= 0
        np.testing.assert_array_equal(unpack_bits(codes, 32).astype(bool), expected)
    # centred with the TRAINING mean: a row encodes the same alone as in a batch
    row = tuple(v[3:4] for v in views) if isinstance(data, tuple) else data[3:4]
    for one, batch in zip(_encodings(model, row), _encodings(model, data)):
        np.testing.assert_array_equal(one[0], batch[3])


@pytest.mark.parametrize("cls", SINGLE + CROSS)
def test_unfitted_encode_is_a_clear_error(cls):
    model = cls(16)
    encoders = [model.encode] if cls in SINGLE else [model.encode_image, model.encode_text]
    for encode in encoders:
        with pytest.raises(NotFittedError, match="not fitted"):
            encode(np.zeros((2, 5)))


@pytest.mark.parametrize("cls", SINGLE + CROSS)
def test_bad_inputs_name_the_problem(cls):
    model, data = _fit(cls, 16)
    x = data[0] if isinstance(data, tuple) else data
    encode = model.encode_image if isinstance(data, tuple) else model.encode
    with pytest.raises(InvalidInputError, match="13 features per row but the model was fitted on 12"):
        encode(np.zeros((3, 13)))
    bad = x[:5].copy()
    bad[2, 1] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        encode(bad)
    with pytest.raises(InvalidInputError, match="real-valued"):
        encode(np.array([["a"] * 12]))
    with pytest.raises(InvalidInputError, match="nbits"):
        cls(12)
    with pytest.raises(InvalidInputError, match="seed"):
        cls(16, seed=-1)


def test_cross_modal_fit_checks_pairs_and_labels():
    x, y, labels = _pairs()
    with pytest.raises(InvalidInputError, match="images have 240 rows but texts have 239"):
        CCAITQ(16).fit(x, y[:-1])
    with pytest.raises(InvalidInputError, match="labels have 10 rows"):
        SCM(16).fit(x, y, labels[:10])
    inf = y.copy()
    inf[0, 0] = np.inf
    with pytest.raises(InvalidInputError, match="texts has NaN or infinite"):
        SCM(16).fit(x, inf, labels)


def test_check_labels_one_hot_and_multi_hot():
    np.testing.assert_array_equal(check_labels(np.array([7, 3, 7]), 3), [[0, 1], [1, 0], [0, 1]])
    np.testing.assert_array_equal(check_labels(np.array([[-1, 1], [1, 1], [1, -1]]), 3), [[0, 1], [1, 1], [1, 0]])
    with pytest.raises(InvalidInputError, match="no label"):
        check_labels(np.array([[-1, 1], [1, 1], [-1, -1]]), 3)
    with pytest.raises(InvalidInputError, match="0/1"):
        check_labels(np.array([[0, 3], [1, 1], [0, 0]]), 3)


@pytest.mark.parametrize("cls", SINGLE + CROSS)
def test_save_load_round_trip(cls, tmp_path):
    model, data = _fit(cls, 24, seed=3)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is cls and loaded.get_params() == model.get_params()
    for a, b in zip(_encodings(model, data), _encodings(loaded, data)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(NotFittedError):
        cls(16).save(tmp_path / "unfitted")


def test_load_rejects_a_checkpoint_with_wrong_shapes(tmp_path):
    model, _ = _fit(ITQ, 16)
    model.save(tmp_path / "m")
    state = torch.load(tmp_path / "m" / "state.pt", weights_only=True)
    state["x.projection"] = state["x.projection"][:, :8]
    torch.save(state, tmp_path / "m" / "state.pt")
    with pytest.raises(CorruptIndexError, match=r"x projection has shape \(12, 8\), expected \(12, 16\)"):
        load_model(tmp_path / "m")


def test_image_pixels_are_flattened():
    rng = np.random.default_rng(1)
    pixels = rng.random((50, 1, 6, 6))
    model = ITQ(16).fit(pixels)
    np.testing.assert_array_equal(model.encode(pixels), model.encode(pixels.reshape(50, 36)))


# --- LSH ----------------------------------------------------------------------------------------


def test_lsh_bits_flip_exactly_where_the_line_crosses_a_hyperplane():
    """Walk along a line: the Hamming distance between consecutive points = hyperplanes crossed."""
    x, _ = _blobs()
    model = LSH(64, seed=5).fit(x)
    w, mean = model.projections_["x"], model.means_["x"]
    rng = np.random.default_rng(2)
    a, u = rng.normal(size=12) * 3, rng.normal(size=12)
    crossings = -((a - mean) @ w) / (u @ w)  # t at which bit j changes side
    ts = np.linspace(-5, 5, 401)
    codes = model.encode(a + ts[:, None] * u)
    steps = np.bitwise_count(codes[1:] ^ codes[:-1]).sum(axis=1)
    expected = [np.sum((crossings > t0) & (crossings <= t1)) for t0, t1 in zip(ts[:-1], ts[1:])]
    np.testing.assert_array_equal(steps, expected)
    assert steps.sum() > 0


def test_lsh_bit_disagreement_follows_the_angle():
    """Charikar: a Gaussian hyperplane separates two centred points with probability angle / pi."""
    x = np.array([[1.0, 0.0], [-1.0, 0.0]])  # mean 0
    model = LSH(1024, seed=0).fit(x)
    for angle in (np.pi / 6, np.pi / 2, 5 * np.pi / 6):
        pts = np.array([[1.0, 0.0], [np.cos(angle), np.sin(angle)]])
        codes = model.encode(pts)
        frac = hamming_bruteforce(codes[:1], codes[1:])[0, 0] / 1024
        assert abs(frac - angle / np.pi) < 0.05  # 4.5 standard deviations of a binomial mean


def test_lsh_seed_changes_hyperplanes():
    x, _ = _blobs()
    assert not np.array_equal(LSH(32, seed=0).fit(x).encode(x), LSH(32, seed=1).fit(x).encode(x))


# --- ITQ ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("nbits, d", [(16, 40), (64, 12)])  # square rotation; more bits than dimensions
def test_itq_rotation_orthonormal_and_loss_never_increases(nbits, d):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, d)) @ rng.normal(size=(d, d))
    model = ITQ(nbits, n_iter=30).fit(x)
    r = min(nbits, d)
    # W = P R with P the PCA directions (orthonormal columns), so R = Pᵀ W
    pca = PCA(r, svd_solver="covariance_eigh").fit(x)
    rot = pca.components_ @ model.projections_["x"]
    np.testing.assert_allclose(rot @ rot.T, np.eye(r), atol=1e-10)
    losses = model.loss_history_
    assert len(losses) == 31
    assert np.all(np.diff(losses) <= 1e-9 * losses[0])
    assert losses[-1] < losses[0]


@settings(max_examples=examples(40), deadline=None)
@given(
    n=st.integers(1, 60),
    r=st.integers(1, 16),
    nbits=st.sampled_from([8, 16, 24]),
    seed=st.integers(0, 2**32 - 1),
)
def test_itq_rotation_properties_on_random_embeddings(n, r, nbits, seed):
    r = min(r, nbits)
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, r)) * rng.uniform(0.01, 10, size=r)
    rot, losses = itq_rotation(v, nbits, 10, rng)
    assert rot.shape == (r, nbits)
    np.testing.assert_allclose(rot @ rot.T, np.eye(r), atol=1e-9)
    assert np.all(np.diff(losses) <= 1e-9 * max(losses[0], 1.0))


def test_itq_finds_a_planted_hypercube_better_than_its_start():
    """Data = rotated ±1 vertices: the quantisation loss falls well below the random rotation's."""
    rng = np.random.default_rng(0)
    b0 = rng.choice([-1.0, 1.0], size=(300, 16))
    x = b0 @ ortho_group.rvs(16, random_state=0).T
    losses = ITQ(16).fit(x).loss_history_
    assert losses[-1] < 0.6 * losses[0]


# --- CCA-ITQ ------------------------------------------------------------------------------------


def test_ccaitq_planted_shared_factor_lands_on_the_same_bit():
    """Both views share one hidden factor z (everything else independent): a bit carries sign(z)."""
    rng = np.random.default_rng(0)
    n = 1000
    z = rng.normal(size=n)
    x = np.column_stack([z, rng.normal(size=(n, 7))]) @ rng.normal(size=(8, 8)) + 1.0
    y = np.column_stack([z, rng.normal(size=(n, 4))]) @ rng.normal(size=(5, 5)) - 2.0
    y += 0.1 * rng.normal(size=y.shape)
    model = CCAITQ(8).fit(x, y)
    assert model.correlations_[0] > 0.95 and model.correlations_[1] < 0.2
    bx, by = to_signs(model.encode_image(x)), to_signs(model.encode_text(y))
    agree_z = np.abs((bx * np.sign(z)[:, None]).mean(axis=0))
    best = agree_z.argmax()
    assert agree_z[best] > 0.9
    assert np.mean(bx[:, best] == by[:, best]) > 0.95
    np.testing.assert_allclose(model.loss_history_, np.minimum.accumulate(model.loss_history_))


# --- SCM ----------------------------------------------------------------------------------------


def test_top_singular_pairs_sparse_and_dense_paths_agree():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(200, 300)) + 5 * np.outer(rng.normal(size=200), rng.normal(size=300))
    u, s, v = top_singular_pairs(m, 2)  # ARPACK path (k small, matrix large)
    ud, sd, vtd = np.linalg.svd(m)
    np.testing.assert_allclose(s, sd[:2], rtol=1e-8)
    np.testing.assert_allclose(np.abs(u.T @ ud[:, :2]), np.eye(2), atol=1e-6)
    np.testing.assert_allclose(u.T @ m @ v, np.diag(s), rtol=1e-6, atol=1e-6)  # pairs signed consistently
    assert np.all(u[np.abs(u).argmax(axis=0), [0, 1]] > 0)


def test_semantic_similarity_by_hand():
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]])
    c = 1 / np.sqrt(2)  # cosine of [1,0,0] and [1,1,0]
    expected = np.array(
        [
            [1, 2 * c - 1, -1],
            [2 * c - 1, 1, -1],
            [-1, -1, 1],
        ]
    )
    np.testing.assert_allclose(semantic_similarity(labels), expected)


def test_scm_objective_history_matches_the_explicit_objective():
    x, y, labels = _pairs(n=120)
    model = SCM(16).fit(x, y, labels)
    bx, by = to_signs(model.encode_image(x)), to_signs(model.encode_text(y))
    s = semantic_similarity(check_labels(labels, len(labels)))
    explicit = [np.sum((bx[:, :t] @ by[:, :t].T - 16 * s) ** 2) for t in range(1, 17)]
    np.testing.assert_allclose(model.objective_history_, explicit, rtol=1e-9)
    assert explicit[0] < np.sum((16 * s) ** 2)  # the first bit already helps


def test_scm_separable_classes_give_perfect_cross_modal_retrieval():
    """Two classes, each view separates them along one axis: the first bit is the class in both views."""
    rng = np.random.default_rng(3)
    cls = np.repeat([0, 1], 50)
    sign = np.where(cls == 1, 1.0, -1.0)
    x = np.column_stack([2 * sign, rng.normal(size=(100, 3))]) + rng.normal(scale=0.2, size=(100, 4))
    y = np.column_stack([rng.normal(size=(100, 2)), -3 * sign]) + rng.normal(scale=0.2, size=(100, 3))
    model = SCM(8).fit(x, y, cls)
    bx, by = to_signs(model.encode_image(x)), to_signs(model.encode_text(y))
    assert abs(np.mean(bx[:, 0] * sign)) == 1.0 and np.array_equal(bx[:, 0], by[:, 0])
    d = hamming_bruteforce(model.encode_image(x), model.encode_text(y))
    same = cls[:, None] == cls[None, :]
    assert d[same].max() < d[~same].min()


def test_scm_follows_labels_where_cca_follows_a_shared_nuisance():
    """Both views share a strong factor z unrelated to the class: CCA-ITQ spends its bits on z,
    SCM's first bit is the class (as well as the noise allows: 2·Φ(1/0.8) − 1 ≈ 0.79)."""
    rng = np.random.default_rng(4)
    n = 400
    cls = rng.integers(0, 2, n)
    s, z = np.where(cls == 1, 1.0, -1.0), rng.normal(size=n)
    x = np.column_stack([3 * z, s + 0.8 * rng.normal(size=n), rng.normal(size=(n, 3))])
    y = np.column_stack([3 * z + 0.1 * rng.normal(size=n), s + 0.8 * rng.normal(size=n), rng.normal(size=(n, 2))])
    scm = SCM(8).fit(x, y, cls)
    for codes in (scm.encode_image(x), scm.encode_text(y)):
        first = to_signs(codes)[:, 0]
        assert np.mean(first * s) > 0.7 and abs(np.corrcoef(first, z)[0, 1]) < 0.15
    cca_bits = to_signs(CCAITQ(8).fit(x, y).encode_image(x))
    follows_z = [abs(np.corrcoef(b, z)[0, 1]) > 0.5 for b in cca_bits.T]
    assert sum(follows_z) > 4


# --- real data (small, fast) --------------------------------------------------------------------


def _map_all(dist, query_labels, db_labels):
    """mAP over the whole database, stable sort (ties by index), relevance = a shared label."""
    aps = []
    for row, lab in zip(dist, query_labels):
        rel = (db_labels[np.argsort(row, kind="stable")] @ lab) > 0
        hits = np.cumsum(rel)
        aps.append(np.sum(rel * hits / np.arange(1, len(rel) + 1)) / max(hits[-1], 1))
    return float(np.mean(aps))


def _real(loader):
    try:
        return loader()
    except FileNotFoundError as exc:
        pytest.skip(f"real data not found: {exc}")


@pytest.fixture(scope="module")
def wikipedia():
    """Wikipedia's own protocol: 693 test queries, 2,173 training pairs = database."""
    data = _real(load_wikipedia)
    split = standard_split(data)
    return data, split


@pytest.mark.parametrize("cls", CROSS)
def test_wikipedia_cross_modal_map_beats_chance(cls, wikipedia):
    data, split = wikipedia
    tr, q = split.train, split.query
    lab, qlab = data.labels[tr].astype(int), data.labels[q].astype(int)
    model = cls(16).fit(data.images[tr], data.texts[tr], lab)
    i2t = _map_all(hamming_bruteforce(model.encode_image(data.images[q]), model.encode_text(data.texts[tr])), qlab, lab)
    t2i = _map_all(hamming_bruteforce(model.encode_text(data.texts[q]), model.encode_image(data.images[tr])), qlab, lab)
    rng = np.random.default_rng(0)
    rand = _map_all(rng.integers(0, 17, size=(len(qlab), len(lab))), qlab, lab)
    assert rand < 0.14 and i2t > rand + 0.05 and t2i > rand + 0.05


def test_siftsmall_itq_beats_lsh_on_true_neighbours():
    sift = _real(load_sift_small)

    def recall(model):
        d = hamming_bruteforce(model.encode(sift.queries), model.encode(sift.base))
        top = np.argsort(d, axis=1, kind="stable")[:, :100]
        return np.mean([np.isin(t, g).mean() for t, g in zip(top, sift.groundtruth)])

    r_lsh, r_itq = recall(LSH(32).fit(sift.base)), recall(ITQ(32).fit(sift.base))
    assert 0.1 < r_lsh < r_itq  # 100 random items would recall 1 %
