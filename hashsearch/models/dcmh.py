"""Deep Cross-Modal Hashing (Jiang & Li, CVPR 2017), with settings chosen by what fit() is given.

Objective, with θ = ½ F Gᵀ over the training set and S = (L Lᵀ > 0):
    J = Σ [softplus(θ) − S∘θ] + γ(‖F − B‖² + ‖G − B‖²) + η(‖F·1‖² + ‖G·1‖²)
One epoch: B = sign(F + G + 2μT) (sign(0) = +1; μ = 0 is the paper's B = sign(γ(F + G))), then
ceil(N / batch) text batches, then as many image batches; each batch is a fresh random sample, its
loss uses the whole F or G buffer, is scaled by 1 / (N · batch), and refreshes its rows of the
buffer. Learning rate: log-spaced per epoch.

Our extension, the label codes T (`label_codes` = μ): each class gets a centre code (`class_centres`:
the best separated of 256 seeded random draws, no two bits the same split of the classes) and item i
the sign of the sum of its classes' centres. With μ = 1, B takes T except where both nets agree
confidently (|F + G| > 2) against it. Why: the paper's B is the sign of the nets' own outputs, so
nothing ties the codes of different items of a class together beyond the pairwise term, which is
satisfied by inner products far from ±nbits: on wikipedia the image and text codes of related items
ended a median 12 bits apart, hash lookup at r ≤ 2 found nothing and bits stuck at one sign. With
shared class centres as the quantisation target, both nets pull every item of a class towards one
code, so codes of related items meet in Hamming space, and the centres' balance carries over to
the bits (the role of the η term, which we keep small). With few classes the codes' bits are the
centres' bits, so a split drawn twice gave two identical bits (wikipedia, 64 bits: |corr| 1.00);
`distinct_bits` replaces repeats. (A design choosing only balanced, least-correlated splits lowered
wikipedia's mAP by .01-.02 at 16 and 32 bits: benchmarks/results/dcmh_defaults.md.)

Texts alone (fit(None, texts, labels), for tag-only data such as the shared MIRFLICKR and NUS-WIDE
copies): the same J with F = G, so θ = ½ G Gᵀ and B = sign(2G + 2μT); only the text net is trained (feature
recipe) and its codes are searched with text codes (T→T), by free text when fit() was given the
`text_vocabulary`.

Settings ("auto" arguments, resolved in fit() and recorded in `params_` and the saved config):
- pixels (n, c, h, w): the paper's schedule: CNN-F, SGD 500 epochs, lr 10^-1.5 → 10^-3, weight
  decay 5e-4, γ = η = 1, text layer 8192, μ = 0 (the reference).
- feature vectors (n, d): `FEATURE_SETTINGS`: MLPs 512-512 / 512 with dropout 0.5, Adam lr
  1e-3 → 1e-4, γ = 0.1·n, η = 1e-3, μ = 1, epochs from n (about 250,000 item passes, 20..100 epochs).
  Tuned on a validation split carved from wikipedia's training pairs (never its queries). γ grows
  with n because the likelihood term of each item sums over all n others while its quantisation term
  does not: with γ = 1 the target B barely moves the nets (on that validation split: no text query
  had an image within 2 bits, one bit was constant); γ = 0.1·n (170) puts 67 % of the text queries
  within 2 bits of an image (P@r≤2 0.83) and raised T→I mAP from 0.54 to 0.73 (γ = 1,500: the same
  within 0.01-0.04). With the paper's η = 1 the bit-balance term, whose column sums cover the whole
  buffer while each batch moves only its own rows, overshoots batch after batch and drives every bit
  to one sign on those features; η = 1e-3 does not.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import nn
from tqdm.auto import tqdm

from hashsearch.codes import check_nbits, encode_sign
from hashsearch.errors import InvalidInputError
from hashsearch.models.base import (
    CUSTOM, Learner, check_count, check_is_fitted, check_real, label_similarity, multihot_labels, signs,
)
from hashsearch.models.backbones import backbone_head, is_image_net_name
from hashsearch.models.nets import CNNF, FeatureMLP, TextNet, hash_layer
from hashsearch.models.training import as_float_tensor, load_checkpoint, seed_everything, select_device
from hashsearch.textquery import Vocabulary

AUTO = "auto"
NO_IMAGES = "none"  # params_["image_net"] of a model fitted on texts alone
PAPER_SETTINGS: dict[str, Any] = dict(optimizer="sgd", lr=(10 ** -1.5, 1e-3), weight_decay=5e-4, gamma=1.0, eta=1.0,
                                      dropout=0.0, image_hidden=(1024,), text_hidden=8192, epochs=500, label_codes=0.0)
FEATURE_SETTINGS: dict[str, Any] = dict(optimizer="adam", lr=(1e-3, 1e-4), weight_decay=0.0, gamma=AUTO, eta=1e-3,
                                        dropout=0.5, image_hidden=(512, 512), text_hidden=512, epochs=AUTO,
                                        label_codes=1.0)
FEATURE_ITEM_PASSES = 250_000  # feature recipe: epochs = this / n, within FEATURE_EPOCHS
FEATURE_EPOCHS = (20, 100)
GAMMA_PER_ITEM = 0.1  # feature recipe: γ = this × n, so the quantisation term keeps pace with the likelihood's n terms
NORMALISATIONS = ("center", "standardize", "none")
OPTIMIZERS = ("sgd", "adam")


def dcmh_objective(F: torch.Tensor, G: torch.Tensor, B: torch.Tensor, S: torch.Tensor,
                   gamma: float = 1.0, eta: float = 1.0) -> torch.Tensor:
    """The paper's J over whole (N, c) matrices F, G, B and the (N, N) similarity S, unscaled."""
    theta = 0.5 * F @ G.T
    loglik = (nnf.softplus(theta) - S * theta).sum()
    quant = ((F - B) ** 2).sum() + ((G - B) ** 2).sum()
    balance = (F.sum(0) ** 2).sum() + (G.sum(0) ** 2).sum()
    return loglik + gamma * quant + eta * balance


def batch_loss(out: torch.Tensor, ind: torch.Tensor, own: torch.Tensor, other: torch.Tensor,
               B: torch.Tensor, S: torch.Tensor, gamma: float, eta: float) -> torch.Tensor:
    """J's terms that depend on the rows `ind` of one modality, scaled by 1 / (N · batch).

    `out` holds the network outputs for rows `ind` (distinct); `own` is that modality's buffer (its
    rows `ind` may be stale), `other` the other modality's buffer, `S` the (batch, N) similarity.
    The gradient w.r.t. `out` equals ∂J/∂F[ind] / (N · batch).
    """
    n = own.shape[0]
    theta = 0.5 * out @ other.T
    loglik = (nnf.softplus(theta) - S * theta).sum()
    quant = ((B[ind] - out) ** 2).sum()
    colsum = own.sum(0) - own[ind].sum(0) + out.sum(0)
    balance = (colsum ** 2).sum()
    return (loglik + gamma * quant + eta * balance) / (n * len(ind))


def class_centres(n_classes: int, nbits: int, weights: np.ndarray | None = None, seed: int = 0,
                  tries: int = 256) -> np.ndarray:
    """(n_classes, nbits) ±1 centre codes: of `tries` seeded random draws, the one whose closest two
    centres are farthest apart, then whose bits are best balanced over the classes (weighted by
    `weights`, the class frequencies) and least alike; then no bit repeats another (`distinct_bits`)."""
    rng = np.random.default_rng(seed)
    w = np.full(n_classes, 1 / n_classes) if weights is None else np.asarray(weights, float) / np.sum(weights)
    best, best_key = None, None
    for _ in range(tries):
        c = rng.choice((-1.0, 1.0), size=(n_classes, nbits))
        dist = (nbits - c @ c.T) / 2
        np.fill_diagonal(dist, nbits)
        mean = w @ c
        key = (-dist.min(), np.abs(mean).max(), _max_abs_corr(c, w))
        if best_key is None or key < best_key:
            best, best_key = c, key
    return distinct_bits(best, w, rng)


def _max_abs_corr(c: np.ndarray, w: np.ndarray) -> float:
    """The largest |correlation| of two bit columns of `c` over the classes weighted by `w`."""
    if len(c) < 2:
        return 0.0
    cols = c - w @ c
    cov = cols.T @ (cols * w[:, None])
    sd = np.sqrt(np.clip(np.diag(cov), 1e-12, None))
    return float(np.abs(cov / np.outer(sd, sd) - np.eye(c.shape[1])).max())


def distinct_bits(c: np.ndarray, w: np.ndarray, rng: np.random.Generator, draws: int = 4096) -> np.ndarray:
    """`c` with every bit that repeats an earlier one (the same split of the classes, or its negation)
    or is constant over the classes replaced by the most balanced of `draws` random splits that repeats
    none: a repeated bit wastes code length. Random centres repeat splits once nbits nears the
    2^(c-1) - 1 distinct ones (10 classes: 511; 64 random bits repeat one with probability ~0.98).
    Leaves `c` as it is where it has no repeat; with too few classes for nbits distinct splits, the
    rest stay repeats."""
    c = c.copy()
    key = lambda col: tuple(col * col[0])  # noqa: E731 - a split and its negation are one bit
    constant = tuple(np.ones(len(c)))
    seen = {constant}
    pool = rng.choice((-1.0, 1.0), size=(draws, len(c)))
    pool = pool[np.argsort(np.abs(pool @ w), kind="stable")]  # most balanced first
    for j in range(c.shape[1]):
        if key(c[:, j]) in seen:
            fresh = next((col for col in pool if key(col) not in seen), None)
            if fresh is not None:
                c[:, j] = fresh
        seen.add(key(c[:, j]))
    return c


def label_targets(labels: torch.Tensor, nbits: int, seed: int) -> torch.Tensor:
    """T: each item's code, the sign of the sum of its classes' centres (`class_centres`)."""
    centres = class_centres(labels.shape[1], nbits, labels.sum(0).cpu().numpy(), seed)
    return signs(labels @ torch.from_numpy(centres).to(labels))


class _Normaliser:
    """Per-feature centring (and optional scaling) learnt on the training inputs, kept for encoding."""

    def __init__(self, mode: str):
        if mode not in NORMALISATIONS:
            raise InvalidInputError(f"normalisation must be one of {NORMALISATIONS}, got {mode!r}")
        self.mode, self.mean, self.scale = mode, None, None

    def fit(self, x: torch.Tensor) -> None:
        self.mean = x.mean(0) if self.mode != "none" else torch.zeros(x.shape[1:])
        std = x.std(0) if self.mode == "standardize" else torch.ones(x.shape[1:])
        self.scale = torch.where(std > 1e-8, std, torch.ones_like(std))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.scale.to(x.device)


class DCMH(Learner):
    """Deep cross-modal hashing: `DCMH(nbits=64).fit(images, texts, labels)`, then encode either side.

    Images are (n, d) precomputed features (an MLP), (n, c, h, w) pixels (CNN-F) or None (texts
    alone); texts are (n, t) bag-of-words. `image_net` / `text_net` may be your own `torch.nn.Module` mapping a batch to
    (batch, nbits). Defaults follow the reference: γ = η = 1, batch 128, 500 epochs, SGD with the
    learning rate log-spaced from 10^-1.5 to 10^-3, weight decay 5e-4, tags zero-meaned.
    Constructor arguments are kept as given (scikit-learn's contract); `params_` holds the settings
    fit() resolved ("auto" choices, the (start, end) learning rates, the device), and
    `text_vocabulary_` the words of the text columns when fit() was given them (else None).
    """

    def __init__(self, nbits: int = 64, *, gamma: float | str = AUTO, eta: float | str = AUTO, batch_size: int = 128,
                 epochs: int | str = AUTO, lr: float | tuple[float, float] | str = AUTO, optimizer: str = AUTO,
                 momentum: float = 0.0, weight_decay: float | str = AUTO, label_codes: float | str = AUTO,
                 image_net: nn.Module | str = AUTO, text_net: nn.Module | None = None,
                 image_hidden: tuple[int, ...] | str = AUTO, text_hidden: int | str = AUTO, dropout: float | str = AUTO,
                 image_norm: str = AUTO, text_norm: str = "center", buffer_init: str = "randn", amp: bool = False,
                 device: str | None = None, seed: int = 0, progress: bool = True,
                 checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int = 10):
        self.nbits, self.gamma, self.eta, self.batch_size, self.epochs = nbits, gamma, eta, batch_size, epochs
        self.label_codes = label_codes
        self.lr, self.optimizer, self.momentum, self.weight_decay = lr, optimizer, momentum, weight_decay
        self.image_net, self.text_net = image_net, text_net
        self.image_hidden, self.text_hidden, self.dropout = image_hidden, text_hidden, dropout
        self.image_norm, self.text_norm, self.buffer_init, self.amp = image_norm, text_norm, buffer_init, amp
        self.device, self.seed, self.progress = device, seed, progress
        self.checkpoint_dir, self.checkpoint_every = checkpoint_dir, checkpoint_every
        self._check_params()

    def _check_params(self) -> None:
        check_nbits(self.nbits)
        if self.optimizer not in (*OPTIMIZERS, AUTO):
            raise InvalidInputError(f"optimizer must be 'auto' or one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not (isinstance(self.image_net, nn.Module) or self.image_net in ("auto", "cnnf", "mlp")
                or is_image_net_name(self.image_net)):
            raise InvalidInputError(f"image_net must be 'auto', 'cnnf', 'mlp', a pretrained backbone such as "
                                    f"'mobilenet_v1', or a torch.nn.Module, got {self.image_net!r}")
        if self.text_net is not None and not isinstance(self.text_net, nn.Module):
            raise InvalidInputError(f"text_net must be None (the paper's text net) or a torch.nn.Module, got {self.text_net!r}")
        for name in ("batch_size", "epochs", "checkpoint_every"):
            value = getattr(self, name)
            if value != AUTO and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise InvalidInputError(f"{name} must be a positive integer{' or auto' if name == 'epochs' else ''}, got {value!r}")
        for name in ("gamma", "eta", "weight_decay", "label_codes", "dropout", "momentum"):
            if getattr(self, name) != AUTO:
                check_real(getattr(self, name), name, strictly_positive=False)
        if self.lr != AUTO:
            lr = self.lr if isinstance(self.lr, (tuple, list)) else (self.lr, self.lr)
            if len(lr) != 2 or min(lr) <= 0:
                raise InvalidInputError(f"lr must be a positive number, a (start, end) pair or 'auto', got {self.lr!r}")
        if self.buffer_init not in ("randn", "outputs"):
            raise InvalidInputError(f"buffer_init must be 'randn' or 'outputs', got {self.buffer_init!r}")
        for name in ("image_norm", "text_norm"):
            if getattr(self, name) not in (*NORMALISATIONS, "auto"):
                raise InvalidInputError(f"{name} must be 'auto' or one of {NORMALISATIONS}, got {getattr(self, name)!r}")
        check_count(self.seed, "seed")

    def _resolve(self, image_shape: tuple[int, ...] | None, n: int) -> dict[str, Any]:
        """The settings fit() uses for `n` inputs of this shape: every "auto" replaced by the pixel recipe
        (the paper's) or the feature recipe (`FEATURE_SETTINGS`), lr as a (start, end) pair."""
        pixels = image_shape is not None and len(image_shape) == 3
        image_kind = CUSTOM if isinstance(self.image_net, nn.Module) else self.image_net
        if image_shape is None:
            if image_kind != AUTO:
                raise InvalidInputError(f"image_net={image_kind!r} needs images, but fit() was given texts only")
            image_kind = NO_IMAGES
        elif image_kind == AUTO:
            image_kind = "cnnf" if pixels else "mlp"
        if image_kind == "cnnf" and not pixels:
            raise InvalidInputError(f"the CNN-F image net needs pixel images (n, c, h, w), got rows of shape {image_shape}")
        if image_kind == "mlp" and pixels:
            raise InvalidInputError(f"the MLP image net needs feature vectors (n, d), got rows of shape {image_shape}")
        if is_image_net_name(image_kind) and not pixels:
            raise InvalidInputError(f"the {image_kind} backbone needs pixel images (n, c, h, w), got rows of shape {image_shape}")
        recipe = dict(PAPER_SETTINGS if pixels else FEATURE_SETTINGS)
        if recipe["epochs"] == AUTO:
            recipe["epochs"] = int(np.clip(round(FEATURE_ITEM_PASSES / n), *FEATURE_EPOCHS))
        if recipe["gamma"] == AUTO:
            recipe["gamma"] = GAMMA_PER_ITEM * n
        p = {k: recipe[k] if getattr(self, k) == AUTO else getattr(self, k) for k in recipe}
        lr = p["lr"] if isinstance(p["lr"], (tuple, list)) else (p["lr"], p["lr"])
        return {
            "recipe": "pixels (the paper's)" if pixels else "features", "nbits": int(self.nbits),
            "gamma": float(p["gamma"]), "eta": float(p["eta"]), "label_codes": float(p["label_codes"]),
            "batch_size": int(self.batch_size), "epochs": int(p["epochs"]), "lr": [float(v) for v in lr],
            "optimizer": p["optimizer"], "momentum": float(self.momentum), "weight_decay": float(p["weight_decay"]),
            "image_net": image_kind, "text_net": CUSTOM if self.text_net is not None else "textnet",
            "image_hidden": [int(h) for h in p["image_hidden"]], "text_hidden": int(p["text_hidden"]),
            "dropout": float(p["dropout"]),
            "image_norm": self.image_norm if self.image_norm != AUTO else (
                "none" if is_image_net_name(image_kind) else "center" if pixels else "standardize"),
            "text_norm": self.text_norm, "buffer_init": self.buffer_init, "amp": bool(self.amp),
        }

    def _build(self, image_shape: tuple[int, ...] | None, text_dim: int) -> None:
        """Create networks and normalisers for inputs of these shapes, as `params_` says."""
        p = self.params_
        self.device_ = select_device(self.device)
        self.image_dim_ = None if image_shape is None else list(image_shape)
        self.text_dim_ = int(text_dim)
        if image_shape is None:
            self.image_net_ = None
        elif isinstance(self.image_net, nn.Module):
            self.image_net_ = self.image_net
        elif is_image_net_name(p["image_net"]):  # a pretrained backbone (backbones.py) under a hash layer
            self.image_net_ = backbone_head(p["image_net"], self.nbits, hash_layer)
        elif p["image_net"] == "cnnf":
            self.image_net_ = CNNF(self.nbits, in_channels=image_shape[0], dropout=p["dropout"] or 0.5)
        else:
            self.image_net_ = FeatureMLP(image_shape[0], self.nbits, p["image_hidden"], p["dropout"])
        self.text_net_ = (self.text_net if self.text_net is not None
                          else TextNet(text_dim, self.nbits, p["text_hidden"], p["dropout"]))
        if self.image_net_ is not None:
            self.image_net_.to(self.device_)
        self.text_net_.to(self.device_)
        self._img_norm = None if image_shape is None else _Normaliser(p["image_norm"])
        self._txt_norm = _Normaliser(p["text_norm"])

    def _make_optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        p = self.params_
        if p["optimizer"] == "adam":
            return torch.optim.Adam(net.parameters(), lr=p["lr"][0], weight_decay=p["weight_decay"])
        return torch.optim.SGD(net.parameters(), lr=p["lr"][0], momentum=p["momentum"], weight_decay=p["weight_decay"])

    def lr_at(self, epoch: int) -> float:
        """Learning rate of `epoch` (0-based): log-spaced from lr[0] to lr[1] over the epochs."""
        (start, end), epochs = self.params_["lr"], self.params_["epochs"]
        if epochs == 1:
            return start
        return start * (end / start) ** (epoch / (epochs - 1))

    # ---- training -------------------------------------------------------------------------------
    def _check_inputs(self, images, texts) -> tuple[torch.Tensor | None, torch.Tensor]:
        y = as_float_tensor(texts, "texts", ndim=(2,))
        if images is None:
            return None, y
        x = as_float_tensor(images, "images", ndim=(2, 4))
        if len(x) != len(y):
            raise InvalidInputError(f"images and texts must have the same number of rows (pairs), got {len(x)} and {len(y)}")
        return x, y

    def fit(self, images: np.ndarray | None, texts: np.ndarray, labels: np.ndarray,
            resume: str | os.PathLike | None = None, text_vocabulary: Sequence[str] | None = None) -> "DCMH":
        """Train both networks on paired rows; `resume` continues from a checkpoint directory.

        `text_vocabulary`: the words of the bag-of-words text columns, in order; kept with the model
        (`text_vocabulary_`) so it can encode free text (`hashsearch query --text`). `images=None`
        trains the text network alone (the objective with F = G), for tag-only data sets whose
        text codes are searched by text (T->T).
        """
        self._check_params()
        x, y = self._check_inputs(images, texts)
        n = len(y)
        self.text_vocabulary_ = None if text_vocabulary is None else Vocabulary.from_training(text_vocabulary, y.numpy())
        gen = seed_everything(self.seed)
        image_shape = None if x is None else tuple(x.shape[1:])
        self.params_ = self._resolve(image_shape, n)
        self._build(image_shape, y.shape[1])
        L = torch.from_numpy(multihot_labels(labels, n)).to(self.device_)
        p, self.history_ = self.params_, []
        if x is not None:
            self._img_norm.fit(x)
            x = self._img_norm(x)
        self._txt_norm.fit(y)
        y = self._txt_norm(y)
        F, G = self._initial_buffers(x, y, gen)
        T = label_targets(L, self.nbits, self.seed) * (2 * p["label_codes"]) if p["label_codes"] > 0 else 0.0
        opt_img = None if x is None else self._make_optimizer(self.image_net_)
        opt_txt = self._make_optimizer(self.text_net_)
        start = 0
        if resume is not None:
            start, F, G = self._restore_training(resume, opt_img, opt_txt, gen, n)
        per_epoch = math.ceil(n / p["batch_size"])
        bar = tqdm(range(start, p["epochs"]), desc=f"DCMH {self.nbits} bits", disable=not self.progress,
                   initial=start, total=p["epochs"])
        for epoch in bar:
            t0 = time.perf_counter()
            lr = self.lr_at(epoch)
            for opt in (opt_img, opt_txt) if x is not None else (opt_txt,):
                for group in opt.param_groups:
                    group["lr"] = lr
            if x is None:  # texts alone: F = G
                B = signs(2 * G + T)
                txt_loss = self._train_side(self.text_net_, opt_txt, y, L, G, G, B, gen, per_epoch)
                img_loss = None
            else:
                B = signs(F + G + T)
                txt_loss = self._train_side(self.text_net_, opt_txt, y, L, G, F, B, gen, per_epoch)
                img_loss = self._train_side(self.image_net_, opt_img, x, L, F, G, B, gen, per_epoch)
            self.history_.append({"epoch": epoch + 1, "lr": lr, "image_loss": img_loss, "text_loss": txt_loss,
                                  "seconds": time.perf_counter() - t0})
            bar.set_postfix(txt=f"{txt_loss:.4f}", **({} if img_loss is None else {"img": f"{img_loss:.4f}"}))
            done = epoch + 1
            if self.checkpoint_dir is not None and (done % self.checkpoint_every == 0 or done == p["epochs"]):
                self._save(self.checkpoint_dir, {"training": self._training_state(done, F, G, opt_img, opt_txt, gen)})
        return self

    def _initial_buffers(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """F and G before training: randn as the reference, or the untrained nets' outputs ('outputs').

        Random buffers carry no label structure, so with weak input features (e.g. SIFT bag-of-words)
        both nets first learn a constant code; the nets' own outputs keep the inputs' structure.
        """
        ident = _Normaliser("none")
        if self.params_["buffer_init"] == "randn":
            F = None if x is None else torch.randn(len(x), self.nbits, generator=gen)
            G = torch.randn(len(y), self.nbits, generator=gen)
        else:
            if x is not None:
                ident.fit(x[:1])
                F = torch.from_numpy(self._outputs(self.image_net_, ident, x, 1024))
            else:
                F = None
            ident.fit(y[:1])
            G = torch.from_numpy(self._outputs(self.text_net_, ident, y, 1024))
        return None if F is None else F.to(self.device_), G.to(self.device_)

    def _train_side(self, net: nn.Module, opt: torch.optim.Optimizer, inputs: torch.Tensor, L: torch.Tensor,
                    own: torch.Tensor, other: torch.Tensor, B: torch.Tensor, gen: torch.Generator,
                    batches: int) -> float:
        """One pass of `batches` random batches over one modality; refreshes `own` in place."""
        p = self.params_
        net.train()
        n, total = len(inputs), 0.0
        for _ in range(batches):
            ind = torch.randperm(n, generator=gen)[: p["batch_size"]]
            batch = inputs[ind].to(self.device_, non_blocking=True)
            ind = ind.to(self.device_)
            with torch.autocast(self.device_.type, enabled=p["amp"] and self.device_.type == "cuda"):
                out = net(batch)
            out = out.float()
            if out.shape != (len(ind), self.nbits):
                raise InvalidInputError(f"network output has shape {tuple(out.shape)}, expected ({len(ind)}, {self.nbits})")
            loss = batch_loss(out, ind, own, other, B, label_similarity(L[ind], L), p["gamma"], p["eta"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            own[ind] = out.detach()
            total += float(loss.detach())
        return total / batches

    # ---- encoding -------------------------------------------------------------------------------
    def _outputs(self, net: nn.Module, norm: "_Normaliser", x: torch.Tensor, batch_size: int) -> np.ndarray:
        net.eval()
        outs = []
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                outs.append(net(norm(x[start:start + batch_size].to(self.device_))).float().cpu())
        return torch.cat(outs).numpy()

    def image_outputs(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Real-valued image-net outputs (n, nbits) before the sign."""
        check_is_fitted(self)
        if self.image_net_ is None:
            raise InvalidInputError("this DCMH was trained on texts alone: it has no image side to encode images with")
        x = as_float_tensor(images, "images", ndim=(2, 4))
        self._check_dims(tuple(x.shape[1:]), self.image_dim_, "images")
        return self._outputs(self.image_net_, self._img_norm, x, batch_size)

    def text_outputs(self, texts: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Real-valued text-net outputs (n, nbits) before the sign."""
        check_is_fitted(self)
        y = as_float_tensor(texts, "texts")
        self._check_dims(tuple(y.shape[1:]), [self.text_dim_], "texts")
        return self._outputs(self.text_net_, self._txt_norm, y, batch_size)

    @staticmethod
    def _check_dims(got: tuple[int, ...], want: list[int], name: str) -> None:
        if list(got) != list(want):
            raise InvalidInputError(f"{name} rows have shape {got}, but the model was trained on {tuple(want)}")

    def encode_image(self, images: np.ndarray) -> np.ndarray:
        """Packed uint8 codes (n, nbits / 8) of images, ready for `HammingIndex.add/search`."""
        return encode_sign(self.image_outputs(images))

    def encode_text(self, texts: np.ndarray) -> np.ndarray:
        """Packed uint8 codes (n, nbits / 8) of texts, in the same Hamming space as the image codes."""
        return encode_sign(self.text_outputs(texts))

    # ---- checkpoints (base.Learner's format) ---------------------------------------------------
    def _fitted_config(self) -> dict[str, Any]:
        vocab = getattr(self, "text_vocabulary_", None)
        return {"params": self.params_, "image_dim": self.image_dim_, "text_dim": self.text_dim_,
                "history": self.history_, "text_vocabulary": None if vocab is None else vocab.to_json()}

    def _fitted_state(self) -> dict[str, Any]:
        images = self.image_net_ is not None
        return {
            "image_net": self.image_net_.state_dict() if images else None, "text_net": self.text_net_.state_dict(),
            "image_mean": self._img_norm.mean if images else None, "image_scale": self._img_norm.scale if images else None,
            "text_mean": self._txt_norm.mean, "text_scale": self._txt_norm.scale,
        }

    def _restore(self, fitted: dict[str, Any], state: dict[str, Any]) -> None:
        self.params_ = fitted["params"]
        image_dim = fitted["image_dim"]
        self._build(None if image_dim is None else tuple(image_dim), fitted["text_dim"])
        if self.image_net_ is not None:
            self.image_net_.load_state_dict(state["image_net"])
            self._img_norm.mean, self._img_norm.scale = state["image_mean"], state["image_scale"]
        self.text_net_.load_state_dict(state["text_net"])
        self._txt_norm.mean, self._txt_norm.scale = state["text_mean"], state["text_scale"]
        vocab = fitted.get("text_vocabulary")
        self.text_vocabulary_ = None if vocab is None else Vocabulary.from_json(vocab, self.text_dim_, "DCMH checkpoint")
        self.history_ = list(fitted.get("history", []))

    def _training_state(self, done, F, G, opt_img, opt_txt, gen) -> dict[str, Any]:
        """What resuming needs beyond the model: epoch, buffers, optimisers and RNG states."""
        return {"epoch": done, "F": None if F is None else F.cpu(), "G": G.cpu(),
                "opt_img": None if opt_img is None else opt_img.state_dict(),
                "opt_txt": opt_txt.state_dict(), "gen": gen.get_state(),
                "torch_rng": torch.get_rng_state(),  # dropout masks on the CPU...
                "cuda_rng": torch.cuda.get_rng_state(self.device_) if self.device_.type == "cuda" else None}

    def _restore_training(self, path, opt_img, opt_txt, gen, n) -> tuple[int, torch.Tensor, torch.Tensor]:
        """Load nets, optimisers, buffers and RNG states saved mid-training; return (epoch, F, G)."""
        doc, state = load_checkpoint(path, map_location=self.device_)
        if "training" not in state:
            raise InvalidInputError(f"checkpoint {path} holds a finished model without training state; cannot resume")
        saved = doc["config"].get("fitted", {})
        mine = self._fitted_config()
        for key in ("image_dim", "text_dim"):
            if saved.get(key) != mine[key]:
                raise InvalidInputError(f"cannot resume from {path}: it was trained with {key}={saved.get(key)}, "
                                        f"this run has {mine[key]}")
        for key, value in saved.get("params", {}).items():
            if value != mine["params"].get(key) and key not in ("epochs",):
                raise InvalidInputError(f"cannot resume from {path}: it was trained with {key}={value}, "
                                        f"this run has {mine['params'].get(key)}")
        tr = state["training"]
        if tr["G"].shape[0] != n:
            raise InvalidInputError(f"cannot resume from {path}: it was trained on {tr['G'].shape[0]} pairs, got {n}")
        if self.image_net_ is not None:
            self.image_net_.load_state_dict(state["image_net"])
            opt_img.load_state_dict(tr["opt_img"])
        self.text_net_.load_state_dict(state["text_net"])
        opt_txt.load_state_dict(tr["opt_txt"])
        gen.set_state(tr["gen"].cpu())
        torch.set_rng_state(tr["torch_rng"].cpu())
        if tr.get("cuda_rng") is not None and self.device_.type == "cuda":  # ...and on the GPU
            torch.cuda.set_rng_state(tr["cuda_rng"].cpu(), self.device_)
        self.history_ = list(saved.get("history", []))
        return int(tr["epoch"]), None if tr["F"] is None else tr["F"].to(self.device_), tr["G"].to(self.device_)
