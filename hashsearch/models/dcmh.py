"""Deep Cross-Modal Hashing (Jiang & Li, CVPR 2017), trained as the authors' reference code does.

Objective, with θ = ½ F Gᵀ over the training set and S = (L Lᵀ > 0):
    J = Σ [softplus(θ) − S∘θ] + γ(‖F − B‖² + ‖G − B‖²) + η(‖F·1‖² + ‖G·1‖²)
One epoch: B = sign(γ(F + G)) (sign(0) = +1), then ceil(N / batch) text batches, then as many image
batches; each batch is a fresh random sample, its loss uses the whole F or G buffer, is scaled by
1 / (N · batch), and refreshes its rows of the buffer. Learning rate: log-spaced per epoch.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import nn
from tqdm.auto import tqdm

from hashsearch.codes import check_nbits, encode_sign
from hashsearch.errors import InvalidInputError
from hashsearch.models.backbones import backbone_head, is_image_net_name
from hashsearch.models.nets import CNNF, FeatureMLP, TextNet, hash_layer
from hashsearch.models.training import (
    as_float_tensor, load_checkpoint, save_checkpoint, seed_everything, select_device,
)

# Settings for precomputed features on small sets, tuned on a validation split carved from
# wikipedia's training pairs (never its queries). With the paper's η = 1 the bit-balance term, whose
# column sums cover the whole buffer while each batch moves only its own rows, overshoots batch after
# batch and drives every bit to one sign on those features (mAP at chance); η = 1e-3 converges.
# Adam and dropout stand in for the reference's 500 SGD epochs on 8192-wide layers.
FEATURE_SETTINGS: dict[str, Any] = dict(optimizer="adam", lr=(1e-3, 1e-4), weight_decay=0.0, eta=1e-3,
                                        dropout=0.5, image_hidden=(1024, 1024), text_hidden=1024, epochs=100)

NORMALISATIONS = ("center", "standardize", "none")
OPTIMIZERS = ("sgd", "adam")


def similarity(labels_a: torch.Tensor, labels_b: torch.Tensor) -> torch.Tensor:
    """S_ij = 1 when items i and j share at least one label (multi-hot rows), else 0."""
    return (labels_a @ labels_b.T > 0).to(torch.float32)


def sign_codes(x: torch.Tensor) -> torch.Tensor:
    """±1 signs with sign(0) = +1, so B never holds a third state."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


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


def labels_matrix(labels: np.ndarray, n: int) -> torch.Tensor:
    """Labels as a float (n, c) multi-hot tensor: accepts multi-hot rows or a vector of class ids."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim == 1:
        if not np.issubdtype(labels.dtype, np.integer):
            raise InvalidInputError(f"a label vector must hold integer class ids, got dtype {labels.dtype}")
        _, ids = np.unique(labels, return_inverse=True)
        labels = np.eye(ids.max() + 1, dtype=np.float32)[ids]
    if labels.ndim != 2 or len(labels) != n:
        raise InvalidInputError(f"labels must be (n,) class ids or (n, c) multi-hot with n = {n}, got shape {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise InvalidInputError("multi-hot labels must hold only 0 and 1")
    return torch.from_numpy(labels.astype(np.float32))


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


class DCMH:
    """Deep cross-modal hashing: `DCMH(nbits=64).fit(images, texts, labels)`, then encode either side.

    Images are (n, d) precomputed features (an MLP) or (n, c, h, w) pixels (CNN-F); texts are (n, t)
    bag-of-words. `image_net` / `text_net` may be your own `torch.nn.Module` mapping a batch to
    (batch, nbits). Defaults follow the reference: γ = η = 1, batch 128, 500 epochs, SGD with the
    learning rate log-spaced from 10^-1.5 to 10^-3, weight decay 5e-4, tags zero-meaned.
    """

    def __init__(self, nbits: int = 64, *, gamma: float = 1.0, eta: float = 1.0, batch_size: int = 128,
                 epochs: int = 500, lr: tuple[float, float] = (10 ** -1.5, 1e-3), optimizer: str = "sgd",
                 momentum: float = 0.0, weight_decay: float = 5e-4,
                 image_net: nn.Module | str = "auto", text_net: nn.Module | None = None,
                 image_hidden: tuple[int, ...] = (1024,), text_hidden: int = 8192, dropout: float = 0.0,
                 image_norm: str = "auto", text_norm: str = "center", buffer_init: str = "randn", amp: bool = False,
                 device: str | None = None, seed: int = 0, progress: bool = True,
                 checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int = 10):
        self.nbits = check_nbits(nbits)
        if optimizer not in OPTIMIZERS:
            raise InvalidInputError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if isinstance(image_net, str) and image_net not in ("auto", "cnnf", "mlp") and not is_image_net_name(image_net):
            raise InvalidInputError(f"image_net must be 'auto', 'cnnf', 'mlp' or a torch.nn.Module, got {image_net!r}")
        if batch_size < 1 or epochs < 1 or gamma < 0 or eta < 0:
            raise InvalidInputError("batch_size and epochs must be >= 1, gamma and eta >= 0")
        lr = tuple(float(v) for v in lr) if isinstance(lr, (tuple, list)) else (float(lr), float(lr))
        if len(lr) != 2 or min(lr) <= 0:
            raise InvalidInputError(f"lr must be a positive number or a (start, end) pair, got {lr!r}")
        self.gamma, self.eta, self.batch_size, self.epochs = float(gamma), float(eta), int(batch_size), int(epochs)
        self.lr, self.optimizer, self.momentum, self.weight_decay = lr, optimizer, float(momentum), float(weight_decay)
        self.image_hidden, self.text_hidden, self.dropout = tuple(image_hidden), int(text_hidden), float(dropout)
        if buffer_init not in ("randn", "outputs"):
            raise InvalidInputError(f"buffer_init must be 'randn' or 'outputs', got {buffer_init!r}")
        self.image_norm, self.text_norm, self.buffer_init, self.amp = image_norm, text_norm, buffer_init, bool(amp)
        self.seed, self.progress = seed, progress
        self.checkpoint_dir, self.checkpoint_every = checkpoint_dir, int(checkpoint_every)
        self.device = select_device(device)
        self.image_net_ = image_net if isinstance(image_net, nn.Module) else None
        self.text_net_ = text_net
        self._image_kind = "custom" if isinstance(image_net, nn.Module) else image_net
        self._text_kind = "custom" if text_net is not None else "textnet"
        self.history_: list[dict[str, float]] = []
        self.image_dim_: list[int] | None = None
        self.text_dim_: int | None = None

    # ---- configuration and networks -------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Constructor settings plus what was learnt about the inputs (JSON-serialisable)."""
        return {
            "nbits": self.nbits, "gamma": self.gamma, "eta": self.eta, "batch_size": self.batch_size,
            "epochs": self.epochs, "lr": list(self.lr), "optimizer": self.optimizer, "momentum": self.momentum,
            "weight_decay": self.weight_decay, "image_net": self._image_kind, "text_net": self._text_kind,
            "image_hidden": list(self.image_hidden), "text_hidden": self.text_hidden, "dropout": self.dropout,
            "image_norm": self.image_norm, "text_norm": self.text_norm, "buffer_init": self.buffer_init, "amp": self.amp, "seed": self.seed,
            "image_dim": self.image_dim_, "text_dim": self.text_dim_,
        }

    def _build(self, image_shape: tuple[int, ...], text_dim: int) -> None:
        """Create networks and normalisers for inputs of these shapes (custom modules are kept)."""
        self.image_dim_, self.text_dim_ = list(image_shape), int(text_dim)
        pixels = len(image_shape) == 3
        kind = self._image_kind if self._image_kind != "auto" else ("cnnf" if pixels else "mlp")
        self._image_kind = kind if self._image_kind != "custom" else "custom"
        if kind == "cnnf" and not pixels:
            raise InvalidInputError(f"the CNN-F image net needs pixel images (n, c, h, w), got rows of shape {image_shape}")
        if kind == "mlp" and pixels:
            raise InvalidInputError(f"the MLP image net needs feature vectors (n, d), got rows of shape {image_shape}")
        if self.image_net_ is None:
            self.image_net_ = (CNNF(self.nbits, in_channels=image_shape[0], dropout=self.dropout or 0.5) if kind == "cnnf"
                               else backbone_head(kind, self.nbits, hash_layer) if is_image_net_name(kind)
                               else FeatureMLP(image_shape[0], self.nbits, self.image_hidden, self.dropout))
        if self.text_net_ is None:
            self.text_net_ = TextNet(text_dim, self.nbits, self.text_hidden, self.dropout)
        self.image_net_.to(self.device)
        self.text_net_.to(self.device)
        image_norm = self.image_norm if self.image_norm != "auto" else (
            "none" if is_image_net_name(kind) else "center" if pixels else "standardize")
        self._img_norm, self._txt_norm = _Normaliser(image_norm), _Normaliser(self.text_norm)

    def _make_optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(net.parameters(), lr=self.lr[0], weight_decay=self.weight_decay)
        return torch.optim.SGD(net.parameters(), lr=self.lr[0], momentum=self.momentum, weight_decay=self.weight_decay)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of `epoch` (0-based): log-spaced from lr[0] to lr[1] over the epochs."""
        if self.epochs == 1:
            return self.lr[0]
        return self.lr[0] * (self.lr[1] / self.lr[0]) ** (epoch / (self.epochs - 1))

    # ---- training -------------------------------------------------------------------------------
    def _check_inputs(self, images, texts) -> tuple[torch.Tensor, torch.Tensor]:
        x = as_float_tensor(images, "images", ndim=(2, 4))
        y = as_float_tensor(texts, "texts", ndim=(2,))
        if len(x) != len(y):
            raise InvalidInputError(f"images and texts must have the same number of rows (pairs), got {len(x)} and {len(y)}")
        return x, y

    def fit(self, images: np.ndarray, texts: np.ndarray, labels: np.ndarray,
            resume: str | os.PathLike | None = None) -> "DCMH":
        """Train both networks on paired rows; `resume` continues from a checkpoint directory."""
        x, y = self._check_inputs(images, texts)
        L = labels_matrix(labels, len(x)).to(self.device)
        n = len(x)
        gen = seed_everything(self.seed)
        self.history_ = []
        self._build(tuple(x.shape[1:]), y.shape[1])
        self._img_norm.fit(x)
        self._txt_norm.fit(y)
        x, y = self._img_norm(x), self._txt_norm(y)
        F, G = self._initial_buffers(x, y, gen)
        opt_img, opt_txt = self._make_optimizer(self.image_net_), self._make_optimizer(self.text_net_)
        start = 0
        if resume is not None:
            start, F, G = self._restore_training(resume, opt_img, opt_txt, gen, n)
        per_epoch = math.ceil(n / self.batch_size)
        bar = tqdm(range(start, self.epochs), desc=f"DCMH {self.nbits} bits", disable=not self.progress,
                   initial=start, total=self.epochs)
        for epoch in bar:
            t0 = time.perf_counter()
            lr = self.lr_at(epoch)
            for opt in (opt_img, opt_txt):
                for group in opt.param_groups:
                    group["lr"] = lr
            B = sign_codes(self.gamma * (F + G))
            txt_loss = self._train_side(self.text_net_, opt_txt, y, L, G, F, B, gen, per_epoch)
            img_loss = self._train_side(self.image_net_, opt_img, x, L, F, G, B, gen, per_epoch)
            B = sign_codes(self.gamma * (F + G))
            self.history_.append({"epoch": epoch + 1, "lr": lr, "image_loss": img_loss, "text_loss": txt_loss,
                                  "seconds": time.perf_counter() - t0})
            bar.set_postfix(img=f"{img_loss:.4f}", txt=f"{txt_loss:.4f}")
            done = epoch + 1
            if self.checkpoint_dir is not None and (done % self.checkpoint_every == 0 or done == self.epochs):
                self._save(self.checkpoint_dir, training=(done, F, G, opt_img, opt_txt, gen))
        self.B_ = B.cpu()
        return self

    def _initial_buffers(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """F and G before training: randn as the reference, or the untrained nets' outputs ('outputs').

        Random buffers carry no label structure, so with weak input features (e.g. SIFT bag-of-words)
        both nets first learn a constant code; the nets' own outputs keep the inputs' structure.
        """
        if self.buffer_init == "randn":
            F = torch.randn(len(x), self.nbits, generator=gen)
            G = torch.randn(len(y), self.nbits, generator=gen)
            return F.to(self.device), G.to(self.device)
        ident = _Normaliser("none")
        ident.fit(x[:1])
        F = torch.from_numpy(self._outputs(self.image_net_, ident, x, 1024))
        ident.fit(y[:1])
        G = torch.from_numpy(self._outputs(self.text_net_, ident, y, 1024))
        return F.to(self.device), G.to(self.device)

    def _train_side(self, net: nn.Module, opt: torch.optim.Optimizer, inputs: torch.Tensor, L: torch.Tensor,
                    own: torch.Tensor, other: torch.Tensor, B: torch.Tensor, gen: torch.Generator,
                    batches: int) -> float:
        """One pass of `batches` random batches over one modality; refreshes `own` in place."""
        net.train()
        n, total = len(inputs), 0.0
        for _ in range(batches):
            ind = torch.randperm(n, generator=gen)[: self.batch_size]
            batch = inputs[ind].to(self.device, non_blocking=True)
            ind = ind.to(self.device)
            with torch.autocast(self.device.type, enabled=self.amp and self.device.type == "cuda"):
                out = net(batch)
            out = out.float()
            if out.shape != (len(ind), self.nbits):
                raise InvalidInputError(f"network output has shape {tuple(out.shape)}, expected ({len(ind)}, {self.nbits})")
            loss = batch_loss(out, ind, own, other, B, similarity(L[ind], L), self.gamma, self.eta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            own[ind] = out.detach()
            total += float(loss.detach())
        return total / batches

    # ---- encoding -------------------------------------------------------------------------------
    def _outputs(self, net: nn.Module | None, norm: "_Normaliser", x: torch.Tensor, batch_size: int) -> np.ndarray:
        if net is None:
            raise InvalidInputError("this DCMH model is not trained yet: call fit() or DCMH.load() first")
        net.eval()
        outs = []
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                outs.append(net(norm(x[start:start + batch_size].to(self.device))).float().cpu())
        return torch.cat(outs).numpy()

    def image_outputs(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Real-valued image-net outputs (n, nbits) before the sign."""
        x = as_float_tensor(images, "images", ndim=(2, 4))
        self._check_dims(tuple(x.shape[1:]), self.image_dim_, "images")
        return self._outputs(self.image_net_, getattr(self, "_img_norm", None), x, batch_size)

    def text_outputs(self, texts: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Real-valued text-net outputs (n, nbits) before the sign."""
        y = as_float_tensor(texts, "texts")
        self._check_dims(tuple(y.shape[1:]), None if self.text_dim_ is None else [self.text_dim_], "texts")
        return self._outputs(self.text_net_, getattr(self, "_txt_norm", None), y, batch_size)

    @staticmethod
    def _check_dims(got: tuple[int, ...], want: list[int] | None, name: str) -> None:
        if want is not None and list(got) != list(want):
            raise InvalidInputError(f"{name} rows have shape {got}, but the model was trained on {tuple(want)}")

    def encode_image(self, images: np.ndarray) -> np.ndarray:
        """Packed uint8 codes (n, nbits / 8) of images, ready for `HammingIndex.add/search`."""
        return encode_sign(self.image_outputs(images))

    def encode_text(self, texts: np.ndarray) -> np.ndarray:
        """Packed uint8 codes (n, nbits / 8) of texts, in the same Hamming space as the image codes."""
        return encode_sign(self.text_outputs(texts))

    # ---- checkpoints ----------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "image_net": self.image_net_.state_dict(), "text_net": self.text_net_.state_dict(),
            "image_mean": self._img_norm.mean, "image_scale": self._img_norm.scale, "image_norm": self._img_norm.mode,
            "text_mean": self._txt_norm.mean, "text_scale": self._txt_norm.scale, "text_norm": self._txt_norm.mode,
        }

    def _save(self, path, training=None) -> Path:
        state = self._state()
        config = self.get_config() | {"history": self.history_}
        if training is not None:
            done, F, G, opt_img, opt_txt, gen = training
            state["training"] = {"epoch": done, "F": F.cpu(), "G": G.cpu(), "opt_img": opt_img.state_dict(),
                                 "opt_txt": opt_txt.state_dict(), "gen": gen.get_state(),
                                 "torch_rng": torch.get_rng_state(),  # dropout masks on the CPU...
                                 "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        return save_checkpoint(path, self, config, state)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the trained model (weights, input normalisation, JSON config) into directory `path`."""
        if self.image_net_ is None or self.text_net_ is None or not hasattr(self, "_img_norm"):
            raise InvalidInputError("cannot save an untrained DCMH model: call fit() first")
        return self._save(path)

    def _restore_training(self, path, opt_img, opt_txt, gen, n) -> tuple[int, torch.Tensor, torch.Tensor]:
        """Load nets, optimisers, buffers and RNG states saved mid-training; return (epoch, F, G)."""
        doc, state = load_checkpoint(path, map_location=self.device)
        if "training" not in state:
            raise InvalidInputError(f"checkpoint {path} holds a finished model without training state; cannot resume")
        saved = doc["config"]
        for key in ("nbits", "image_dim", "text_dim"):
            if saved.get(key) != self.get_config()[key]:
                raise InvalidInputError(f"cannot resume from {path}: it was trained with {key}={saved.get(key)}, "
                                        f"this run has {self.get_config()[key]}")
        tr = state["training"]
        if tr["F"].shape[0] != n:
            raise InvalidInputError(f"cannot resume from {path}: it was trained on {tr['F'].shape[0]} pairs, got {n}")
        self.image_net_.load_state_dict(state["image_net"])
        self.text_net_.load_state_dict(state["text_net"])
        opt_img.load_state_dict(tr["opt_img"])
        opt_txt.load_state_dict(tr["opt_txt"])
        gen.set_state(tr["gen"].cpu())
        torch.set_rng_state(tr["torch_rng"].cpu())
        if tr.get("cuda_rng") is not None and self.device.type == "cuda":  # ...and on the GPU
            torch.cuda.set_rng_state(tr["cuda_rng"].cpu(), self.device)
        self.history_ = list(saved.get("history", []))
        return int(tr["epoch"]), tr["F"].to(self.device), tr["G"].to(self.device)

    @classmethod
    def load(cls, path: str | os.PathLike, image_net: nn.Module | None = None, text_net: nn.Module | None = None,
             device: str | None = None) -> "DCMH":
        """Rebuild a saved model; pass `image_net` / `text_net` if it was trained with custom modules."""
        doc, state = load_checkpoint(path)
        cfg = dict(doc["config"])
        history = cfg.pop("history", [])
        image_dim, text_dim = cfg.pop("image_dim"), cfg.pop("text_dim")
        kinds = {"image_net": image_net, "text_net": text_net}
        for key, module in kinds.items():
            if cfg[key] == "custom" and module is None:
                raise InvalidInputError(f"{path} was trained with a custom {key}; pass the same module as {key}=")
            cfg[key] = module if module is not None else cfg[key]
        if cfg["text_net"] == "textnet":
            cfg["text_net"] = None
        cfg["lr"] = tuple(cfg["lr"])
        model = cls(**cfg, device=device, progress=False)
        model._build(tuple(image_dim), text_dim)
        model.image_net_.load_state_dict(state["image_net"])
        model.text_net_.load_state_dict(state["text_net"])
        for side, norm in (("image", model._img_norm), ("text", model._txt_norm)):
            norm.mode, norm.mean, norm.scale = state[f"{side}_norm"], state[f"{side}_mean"], state[f"{side}_scale"]
        model.history_ = history
        return model
