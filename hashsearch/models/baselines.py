"""Shallow hashing baselines with the same fit / encode API as the deep learners.

Every learner here is a linear hash: code = sign((x - mean) @ W), packed 8 bits a byte by
`hashsearch.codes.encode_sign`, so tables compare like with like.

- `LSH`: random Gaussian hyperplanes through the training mean (Charikar 2002).
- `ITQ`: PCA, then the rotation that minimises the quantisation loss (Gong & Lazebnik, CVPR 2011).
- `CCAITQ`: CCA between images and texts, then one ITQ rotation shared by both modalities, so the
  two modalities land on the same bits (Gong et al., TPAMI 2013, used cross-modally).
- `SCM`: supervised Semantic Correlation Maximization, the sequential variant SCM-seq
  (Zhang & Li, AAAI 2014), the shallow supervised method of DCMH's tables.

When `nbits` exceeds the rank of the embedding (for example 64 bits from Wikipedia's 10-d text
topics) ITQ uses a semi-orthogonal rotation (orthonormal rows, r x nbits): the Procrustes step and
the monotone loss carry over unchanged, and for nbits <= rank it is the paper's square rotation.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import linalg
from scipy.sparse import linalg as sparse_linalg
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from hashsearch.codes import check_nbits, encode_sign
from hashsearch.errors import CorruptIndexError, InvalidInputError, NotFittedError  # noqa: F401 (re-exported)
from hashsearch.models.base import Learner, check_count, check_is_fitted, check_real, multihot_labels, signs
from hashsearch.models.training import as_float_tensor


def check_features(x: Any, name: str, n_features: int | None = None) -> np.ndarray:
    """Check a feature matrix (real, finite, non-empty) and return it as float64 (n, d).

    Arrays with more than two dimensions (images as (n, c, h, w)) are flattened per row;
    `n_features`, when given, is the width the learner was fitted on.
    """
    x = as_float_tensor(x, name, ndim=(2, 3, 4)).numpy()
    x = x.reshape(len(x), -1).astype(np.float64)
    if n_features is not None and x.shape[1] != n_features:
        raise InvalidInputError(f"{name} has {x.shape[1]} features per row but the model was fitted on {n_features}")
    return x


def check_labels(labels: Any, n: int) -> np.ndarray:
    """Labels of `n` items as a (n, c) float64 0/1 matrix (`base.multihot_labels`: class ids or
    multi-hot 0/1 or -1/+1; unlabelled rows refused)."""
    return multihot_labels(labels, n).astype(np.float64)


def _check_pair(images: Any, texts: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = check_features(images, "images"), check_features(texts, "texts")
    if len(x) != len(y):
        raise InvalidInputError(f"images have {len(x)} rows but texts have {len(y)}; rows must be pairs")
    return x, y


def inverse_sqrt_cov(x: np.ndarray, reg: float) -> np.ndarray:
    """(XᵀX/n + εI)^(-1/2) of centred `x`; ε = reg × mean eigenvalue keeps rank-deficient data usable."""
    cov = x.T @ x / len(x)
    eps = reg * max(np.trace(cov) / len(cov), np.finfo(float).tiny)
    vals, vecs = linalg.eigh(cov + eps * np.eye(len(cov)))
    return (vecs / np.sqrt(vals)) @ vecs.T


def top_singular_pairs(m: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k singular triplets (U, s, V) of `m`, each pair's sign fixed (largest |entry| of u positive).

    A dense SVD for small matrices; ARPACK (`scipy.sparse.linalg.svds`, fixed start vector, so
    deterministic) when only a few pairs of a large matrix are wanted.
    """
    if k <= min(m.shape) // 8 and min(m.shape) > 64:
        u, s, vt = sparse_linalg.svds(m, k=k, v0=np.full(min(m.shape), 1 / np.sqrt(min(m.shape))))
        order = np.argsort(s)[::-1]
        u, s, vt = u[:, order], s[order], vt[order]
    else:
        u, s, vt = linalg.svd(m, full_matrices=False)
    u, s, v = u[:, :k], s[:k], vt[:k].T
    flip = np.sign(u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])])
    flip[flip == 0] = 1
    return u * flip, s, v * flip


def top_correlations(
    kx: np.ndarray, cxy: np.ndarray, ky: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k pairs (wx, wy) maximising wxᵀ Cxy wy under whitened norms; returns (Wx, Wy, values).

    The generalised eigenproblem of CCA, solved as an SVD of Kx Cxy Ky (K = C^(-1/2)).
    """
    u, s, v = top_singular_pairs(kx @ cxy @ ky, k)
    return kx @ u, ky @ v, s


def one_blas_thread(fit: Callable) -> Callable:
    """Run a `fit` with BLAS on one thread: its products are small or tall-skinny, gain little from
    threads, and threads thrash on busy cores (ITQ 64 bits on siftsmall: 22 s threaded, 1 s not)."""

    @functools.wraps(fit)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with threadpool_limits(limits=1, user_api="blas"):
            return fit(*args, **kwargs)

    return wrapper


def itq_rotation(v: np.ndarray, nbits: int, n_iter: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """ITQ: alternate B = sign(V R) and the Procrustes R minimising ‖B − V R‖²_F.

    `v` is the (n, r) embedding with r <= nbits; R is (r, nbits) with orthonormal rows, a rotation
    when r == nbits. Returns (R, losses) where losses[t] = ‖sign(V R_t) − V R_t‖²_F for
    t = 0 … n_iter; it never increases, since each step minimises the same loss.
    """
    r = v.shape[1]
    if r > nbits:
        raise InvalidInputError(f"ITQ needs an embedding of at most nbits={nbits} dimensions, got {r}")
    q, _ = np.linalg.qr(rng.standard_normal((nbits, r)))
    rot = q.T
    losses = np.empty(n_iter + 1)
    for t in range(n_iter + 1):
        proj = v @ rot
        b = signs(proj)
        losses[t] = np.sum((b - proj) ** 2)
        if t == n_iter:
            break
        u, _, wt = linalg.svd(v.T @ b, full_matrices=False)
        rot = u @ wt
    return rot, losses


class LinearHash(Learner):
    """Base of the linear learners: per-modality training mean and projection W (d, nbits).

    Subclasses set `modalities` and implement `fit` (calling `_check_params` first); encoding and
    the checkpoint state live here.
    """

    modalities: ClassVar[tuple[str, ...]] = ("x",)

    def __init__(self, nbits: int, seed: int = 0) -> None:
        self.nbits, self.seed = nbits, seed
        self._check_params()

    def _check_params(self) -> None:
        check_nbits(self.nbits)
        check_count(self.seed, "seed")

    def _set(self, modality: str, mean: np.ndarray, projection: np.ndarray) -> None:
        if not hasattr(self, "means_"):
            self.means_: dict[str, np.ndarray] = {}
            self.projections_: dict[str, np.ndarray] = {}
        self.means_[modality] = mean.astype(np.float64)
        self.projections_[modality] = np.ascontiguousarray(projection, dtype=np.float64)

    def _embed(self, x: Any, modality: str, name: str) -> np.ndarray:
        """Real-valued outputs (x − mean) W, before the sign."""
        check_is_fitted(self)
        mean = self.means_[modality]
        x = check_features(x, name, n_features=len(mean))
        return (x - mean) @ self.projections_[modality]

    def _encode(self, x: Any, modality: str, name: str) -> np.ndarray:
        return encode_sign(self._embed(x, modality, name))

    def _fitted_state(self) -> dict[str, Any]:
        state = {f"{m}.mean": torch.from_numpy(self.means_[m]) for m in self.modalities}
        return state | {f"{m}.projection": torch.from_numpy(self.projections_[m]) for m in self.modalities}

    def _restore(self, fitted: dict[str, Any], state: dict[str, Any]) -> None:
        for m in self.modalities:
            mean, proj = state[f"{m}.mean"].numpy(), state[f"{m}.projection"].numpy()
            if mean.ndim != 1 or proj.shape != (len(mean), self.nbits):
                raise CorruptIndexError(
                    f"checkpoint: {m} projection has shape {proj.shape}, expected ({len(mean)}, {self.nbits})"
                )
            self._set(m, mean, proj)


class SingleModalHash(LinearHash):
    """A learner for one modality: `fit(x, labels=None)`, `encode(x)`."""

    def encode(self, x: Any) -> np.ndarray:
        """Packed uint8 codes (n, nbits // 8) of the rows of `x`."""
        return self._encode(x, "x", "x")


class CrossModalHash(LinearHash):
    """A learner for image–text pairs: `fit(images, texts, labels)`, `encode_image`, `encode_text`."""

    modalities = ("image", "text")

    def encode_image(self, x: Any) -> np.ndarray:
        """Packed uint8 codes of image features."""
        return self._encode(x, "image", "images")

    def encode_text(self, y: Any) -> np.ndarray:
        """Packed uint8 codes of text features."""
        return self._encode(y, "text", "texts")


class LSH(SingleModalHash):
    """Random-hyperplane LSH: bit j is the side of Gaussian hyperplane w_j through the training mean.

    For a pair of centred points at angle θ, each bit differs with probability θ/π.
    """

    @one_blas_thread
    def fit(self, x: Any, labels: Any = None) -> "LSH":
        """Record the training mean and draw the hyperplanes (labels are not used)."""
        self._check_params()
        x = check_features(x, "x")
        w = np.random.default_rng(self.seed).standard_normal((x.shape[1], self.nbits))
        self._set("x", x.mean(axis=0), w)
        return self


class ITQ(SingleModalHash):
    """PCA to min(nbits, d) dimensions, then the ITQ rotation (Gong & Lazebnik 2011).

    After `fit`, `loss_history_` holds the quantisation loss per iteration (non-increasing).
    """

    def __init__(self, nbits: int, n_iter: int = 50, seed: int = 0) -> None:
        self.n_iter = n_iter
        super().__init__(nbits, seed)

    def _check_params(self) -> None:
        super()._check_params()
        check_count(self.n_iter, "n_iter")

    @one_blas_thread
    def fit(self, x: Any, labels: Any = None) -> "ITQ":
        """Fit PCA and the rotation on the rows of `x` (labels are not used)."""
        self._check_params()
        x = check_features(x, "x")
        if len(x) < 2:
            raise InvalidInputError(f"ITQ needs at least 2 training rows, got {len(x)}")
        r = min(self.nbits, x.shape[1], len(x))
        pca = PCA(n_components=r, svd_solver="covariance_eigh").fit(x)
        rng = np.random.default_rng(self.seed)
        rot, self.loss_history_ = itq_rotation(pca.transform(x), self.nbits, self.n_iter, rng)
        self._set("x", pca.mean_, pca.components_.T @ rot)
        return self


class CCAITQ(CrossModalHash):
    """CCA between the two modalities, then one ITQ rotation fitted on both projections stacked.

    Canonical directions are scaled by correlation**eig_power, as Gong et al. (TPAMI 2013) scale
    CCA directions by their eigenvalues, so weakly correlated directions weigh little (default 1:
    on a validation split carved from wikipedia's training set, powers 1 and 2 beat 0 and 4).
    `reg` is the ridge added to each covariance, relative to its mean eigenvalue.
    """

    def __init__(self, nbits: int, n_iter: int = 50, reg: float = 1e-4, eig_power: float = 1.0, seed: int = 0) -> None:
        self.n_iter, self.reg, self.eig_power = n_iter, reg, eig_power
        super().__init__(nbits, seed)

    def _check_params(self) -> None:
        super()._check_params()
        check_count(self.n_iter, "n_iter")
        check_real(self.reg, "reg")
        check_real(self.eig_power, "eig_power", False)

    @one_blas_thread
    def fit(self, images: Any, texts: Any, labels: Any = None) -> "CCAITQ":
        """Fit on paired rows (CCA is unsupervised: `labels` is accepted for the common API, unused)."""
        self._check_params()
        x, y = _check_pair(images, texts)
        mx, my = x.mean(axis=0), y.mean(axis=0)
        x, y = x - mx, y - my
        r = min(self.nbits, x.shape[1], y.shape[1])
        kx, ky = inverse_sqrt_cov(x, self.reg), inverse_sqrt_cov(y, self.reg)
        wx, wy, corr = top_correlations(kx, x.T @ y / len(x), ky, r)
        scale = np.clip(corr, 0, None) ** self.eig_power
        wx, wy = wx * scale, wy * scale
        rot, self.loss_history_ = itq_rotation(
            np.vstack([x @ wx, y @ wy]), self.nbits, self.n_iter, np.random.default_rng(self.seed)
        )
        self.correlations_ = corr
        self._set("image", mx, wx @ rot)
        self._set("text", my, wy @ rot)
        return self


def semantic_similarity(labels: np.ndarray) -> np.ndarray:
    """SCM's target S̃ = 2 L̃ L̃ᵀ − 1 (L̃: rows scaled to unit length), i.e. 2·cos − 1 in [−1, 1].

    Materialises n × n: for tests and small sets; `SCM.fit` uses the factored form instead.
    """
    unit = _unit_rows(check_labels(labels, len(labels)))
    return 2 * unit @ unit.T - 1


def _unit_rows(labels: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(labels, axis=1, keepdims=True)
    return labels / np.where(norms == 0, 1, norms)


class SCM(CrossModalHash):
    """Semantic Correlation Maximization, sequential variant SCM-seq (Zhang & Li, AAAI 2014).

    Minimises ‖sign(X Wx) sign(Y Wy)ᵀ − c S̃‖²_F one bit at a time: bit t takes the top
    correlation pair of Xᵀ R_t Y (whitened by Xᵀ X, Yᵀ Y), with the residual
    R_t = c S̃ − Σ_{k<t} b_xᵏ b_yᵏᵀ. Xᵀ S̃ Y is formed as 2 (XᵀL̃)(L̃ᵀY) − (Xᵀ1)(1ᵀY), so
    training is linear in n. As in the authors' code, once the top value stops decreasing the remaining
    bits take CCA directions (where CCA has as many pairs). `objective_history_` holds
    ‖B_x B_yᵀ − c S̃‖²_F on the training set after each bit. SCM-seq is deterministic: `seed` is
    kept for the common learner API only.
    """

    def __init__(self, nbits: int, reg: float = 1e-4, seed: int = 0) -> None:
        self.reg = reg
        super().__init__(nbits, seed)

    def _check_params(self) -> None:
        super()._check_params()
        check_real(self.reg, "reg")

    @one_blas_thread
    def fit(self, images: Any, texts: Any, labels: Any) -> "SCM":
        """Learn both projections from paired rows and their (multi-)labels."""
        self._check_params()
        x, y = _check_pair(images, texts)
        unit = _unit_rows(check_labels(labels, len(x)))
        mx, my = x.mean(axis=0), y.mean(axis=0)
        x, y = x - mx, y - my
        kx, ky = inverse_sqrt_cov(x, self.reg), inverse_sqrt_cov(y, self.reg)
        c = self.nbits
        # Xᵀ R_t Y, whitened (Kx · Ky): starts from Xᵀ (c S̃) Y in factored form (x, y centred, so the
        # 1 1ᵀ part is ~0), then each bit subtracts the rank-1 term (Kx Xᵀ b_x)(Ky Yᵀ b_y)ᵀ.
        residual = kx @ (c * (2 * (x.T @ unit) @ (unit.T @ y) - np.outer(x.sum(0), y.sum(0)))) @ ky
        n_cca = min(c, x.shape[1], y.shape[1])
        cca: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # computed only if the fallback is needed
        wx, wy = np.empty((x.shape[1], c)), np.empty((y.shape[1], c))
        bx, by = np.empty((len(x), c)), np.empty((len(y), c))
        last, use_cca = np.inf, False
        for t in range(c):
            u, val, v = top_singular_pairs(residual, 1)
            px, py = kx @ u[:, 0], ky @ v[:, 0]
            use_cca = (use_cca or val[0] > last) and t < n_cca
            if use_cca:
                cca = cca or top_correlations(kx, x.T @ y, ky, n_cca)
                px, py = cca[0][:, t], cca[1][:, t]
            last = min(last, val[0])
            wx[:, t], wy[:, t] = px, py
            bx[:, t], by[:, t] = signs(x @ px), signs(y @ py)
            residual -= np.outer(kx @ (x.T @ bx[:, t]), ky @ (y.T @ by[:, t]))
        self.objective_history_ = _scm_objectives(bx, by, unit, c)
        self._set("image", mx, wx)
        self._set("text", my, wy)
        return self


def _scm_objectives(bx: np.ndarray, by: np.ndarray, unit: np.ndarray, c: int) -> np.ndarray:
    """‖B_x[:, :t] B_y[:, :t]ᵀ − c S̃‖²_F for t = 1 … c, without forming n × n matrices.

    Expands to ‖Bx Byᵀ‖² − 2c tr(Bxᵀ S̃ By) + c²‖S̃‖² with S̃ = 2 L̃L̃ᵀ − 11ᵀ; the first two
    terms are accumulated one bit at a time from (c, c) Gram matrices and (n, classes) products.
    """
    n = len(bx)
    ones = np.ones(n)
    gram = unit.T @ unit
    s_norm2 = 4 * np.sum(gram * gram) - 4 * np.sum((unit.T @ ones) ** 2) + n * n
    out, cross, fit = np.empty(c), 0.0, 0.0
    gx, gy = bx.T @ bx, by.T @ by  # (c, c) Gram matrices give ‖Bx_t By_tᵀ‖² = Σ_{k,l<=t} gx[k,l] gy[k,l]
    for t in range(c):
        cross += 2 * np.sum(gx[t, :t] * gy[t, :t]) + gx[t, t] * gy[t, t]
        s_bt = 2 * (bx[:, t] @ unit) @ (unit.T @ by[:, t]) - bx[:, t].sum() * by[:, t].sum()
        fit += s_bt
        out[t] = cross - 2 * c * fit + c * c * s_norm2
    return out
