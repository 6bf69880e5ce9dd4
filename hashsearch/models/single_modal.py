"""Shared parts of the single-modal deep hashers (SCHN, DPSH): image encoders, label checks,
batched encoding to packed codes, and checkpoints in `training.py`'s format.

No pretrained ImageNet weights can be downloaded here, so pixels go through a small CNN trained
from scratch (`SmallCNN`) and precomputed features through an MLP (`FeatureNet`).
"""
from __future__ import annotations

import inspect
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from hashsearch.codes import check_nbits, encode_sign
from hashsearch.errors import HashsearchError, InvalidInputError
from hashsearch.models import training
from hashsearch.models.backbones import backbone_head


class SmallCNN(nn.Module):
    """Two conv/ReLU/max-pool blocks (16, 32 channels) and a ReLU fully connected layer: `feature_dim`
    features per image. Sized for small grey images (MNIST 28x28, digits 8x8) and a shared CPU.
    The batch norm matters: without it, from-scratch outputs are nearly equal for every input at the
    start and DPSH's pairwise loss collapses them to one code (seen on digits: mAP 0.10 -> 0.92).
    """

    def __init__(self, input_shape: tuple[int, int, int], feature_dim: int = 256):
        super().__init__()
        c, h, w = input_shape
        if h < 4 or w < 4:
            raise InvalidInputError(f"images must be at least 4x4 pixels for SmallCNN, got {h}x{w}")
        self.conv = nn.Sequential(
            nn.Conv2d(c, 16, kernel_size=3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(nn.Linear(32 * (h // 4) * (w // 4), feature_dim), nn.BatchNorm1d(feature_dim),
                                nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


class FeatureNet(nn.Module):
    """MLP for precomputed feature vectors: d -> 512 -> ReLU -> feature_dim -> batch norm -> ReLU."""

    def __init__(self, input_dim: int, feature_dim: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(input_dim, 512), nn.ReLU(inplace=True), nn.Linear(512, feature_dim),
                                 nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class HashEncoder(nn.Module):
    """Feature network followed by a linear hash layer of `nbits` outputs (tanh optional).

    `forward` returns (features, real-valued codes), as the SCHN authors' networks do.
    """

    def __init__(self, input_shape: tuple[int, ...], nbits: int, feature_dim: int = 256, tanh: bool = True,
                 image_net: str | None = None, image_net_options: dict | None = None):
        super().__init__()
        if image_net is not None:  # pretrained backbone (backbones.py) + FeatureNet on its features
            self.features = backbone_head(image_net, feature_dim, FeatureNet, **(image_net_options or {}))
        elif len(input_shape) == 3:
            self.features = SmallCNN(input_shape, feature_dim)
        elif len(input_shape) == 1:
            self.features = FeatureNet(input_shape[0], feature_dim)
        else:
            raise InvalidInputError(f"input rows must be (c, h, w) images or 1-D feature vectors, got {input_shape}")
        self.hash_layer = nn.Sequential(nn.Linear(feature_dim, nbits), nn.Tanh() if tanh else nn.Identity())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(x)
        return feats, self.hash_layer(feats)


def as_images(x: np.ndarray, name: str = "x") -> torch.Tensor:
    """Check model input: (n, d) features, (n, h, w) grey images (given a channel), or (n, c, h, w)."""
    t = training.as_float_tensor(x, name, ndim=(2, 3, 4))
    return t.unsqueeze(1) if t.ndim == 3 else t


def as_multihot(labels: np.ndarray, n: int, n_classes: int | None = None) -> torch.Tensor:
    """Labels as a float32 (n, c) 0/1 matrix: accepts (n,) class ids or an (n, c) multi-hot matrix."""
    if labels is None:
        raise InvalidInputError("labels are required: this hasher is supervised")
    lab = np.asarray(labels)
    if lab.shape[:1] != (n,):
        raise InvalidInputError(f"labels have {lab.shape[0] if lab.ndim else 0} rows but the input has {n}")
    if lab.ndim == 1:
        if not np.issubdtype(lab.dtype, np.integer) or (lab < 0).any():
            raise InvalidInputError(f"1-D labels must be non-negative integer class ids, got dtype {lab.dtype}")
        c = n_classes or int(lab.max()) + 1
        if lab.max() >= c:
            raise InvalidInputError(f"class id {int(lab.max())} is out of range for {c} classes")
        out = np.zeros((n, c), np.float32)
        out[np.arange(n), lab] = 1
        return torch.from_numpy(out)
    if lab.ndim != 2 or not np.isin(lab, (0, 1)).all():
        raise InvalidInputError(f"labels must be class ids (n,) or a 0/1 multi-hot matrix (n, c), got shape {lab.shape}")
    if n_classes is not None and lab.shape[1] != n_classes:
        raise InvalidInputError(f"labels have {lab.shape[1]} classes, expected {n_classes}")
    return torch.from_numpy(lab.astype(np.float32))


def label_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """S_ij = 1 where items i and j share at least one label, else 0 (float)."""
    return (a @ b.T > 0).float()


def sign_plus(x: torch.Tensor) -> torch.Tensor:
    """Sign with sign(0) = +1, so codes never take a third value."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


class DeepImageHasher:
    """Base of the single-modal deep hashers: fit(x, labels) in subclasses, encode(x) -> packed uint8.

    Subclasses set `self.encoder` (a HashEncoder) in `fit`; every constructor argument is stored
    under its own name, so `save`/`load` rebuild the learner from `config.json` alone.
    """

    encoder_tanh = True

    def __init__(self, nbits: int, seed: int = 0, feature_dim: int = 256, lr: float = 1e-3,
                 weight_decay: float = 1e-5, batch_size: int = 64, device: str | None = None,
                 verbose: bool = True, image_net: str | None = None, image_net_options: dict | None = None):
        self.nbits = check_nbits(nbits)
        self.image_net, self.image_net_options = image_net, dict(image_net_options or {})
        self.seed, self.feature_dim, self.lr = seed, int(feature_dim), float(lr)
        self.weight_decay, self.batch_size = float(weight_decay), int(batch_size)
        if self.batch_size < 2:
            raise InvalidInputError(f"batch_size must be at least 2 (pairs are needed), got {batch_size}")
        self.device, self.verbose = device, verbose
        self.encoder: HashEncoder | None = None
        self.input_shape: tuple[int, ...] | None = None
        self.x_mean, self.x_std = 0.0, 1.0

    # ----- setup shared by fit implementations
    def _start_fit(self, x: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.device]:
        """Validate data, seed, standardise pixels with the training mean/std, build the encoder."""
        xt = as_images(x)
        lt = as_multihot(labels, len(xt))
        training.seed_everything(self.seed)
        dev = training.select_device(self.device)
        self.input_shape = tuple(xt.shape[1:])
        self.x_mean, self.x_std = (0.0, 1.0) if self.image_net else (float(xt.mean()), float(xt.std()) or 1.0)
        self.encoder = HashEncoder(self.input_shape, self.nbits, self.feature_dim, tanh=self.encoder_tanh,
                                   image_net=self.image_net, image_net_options=self.image_net_options).to(dev)
        return (xt - self.x_mean) / self.x_std, lt, dev

    def _batches(self, n: int, gen: torch.Generator):
        """Index tensors of one shuffled epoch in batches of `batch_size`; a last batch of one item
        (which batch norm cannot train on) joins the one before it."""
        perm = torch.randperm(n, generator=gen)
        batches = [perm[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches[-2:] = [torch.cat(batches[-2:])]
        return batches

    # ----- inference
    def _check_fitted(self) -> None:
        if self.encoder is None:
            raise HashsearchError(f"{type(self).__name__} is not fitted: call fit(x, labels) first")

    def real_codes(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """The hash layer's real-valued outputs (n, nbits) float32, before the sign."""
        self._check_fitted()
        xt = as_images(x)
        if tuple(xt.shape[1:]) != self.input_shape:
            raise InvalidInputError(f"input rows have shape {tuple(xt.shape[1:])}, the model was fitted on {self.input_shape}")
        return self._hash_outputs((xt - self.x_mean) / self.x_std, batch_size)

    def _hash_outputs(self, xt: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
        """Hash-layer outputs of already standardised input, in eval mode and batches."""
        dev = next(self.encoder.parameters()).device
        was_training = self.encoder.training
        self.encoder.eval()
        with torch.no_grad():
            outs = [self.encoder(xt[i:i + batch_size].to(dev))[1].cpu() for i in range(0, len(xt), batch_size)]
        self.encoder.train(was_training)
        return torch.cat(outs).numpy()

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Packed uint8 codes (n, nbits // 8) of images or feature rows, by the sign of the hash layer."""
        return encode_sign(self.real_codes(x))

    # ----- persistence (training.py's checkpoint format, so training.load_model works)
    def get_params(self) -> dict[str, Any]:
        """Constructor arguments by name (what config.json stores)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted encoder and its settings into checkpoint directory `path`."""
        self._check_fitted()
        config = {"params": self.get_params(), "input_shape": list(self.input_shape),
                  "x_mean": self.x_mean, "x_std": self.x_std}
        training.save_checkpoint(path, self, config, {"encoder": self.encoder.state_dict()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DeepImageHasher":
        """Rebuild a fitted learner from a directory written by `save`, on CUDA when available, else CPU."""
        doc, state = training.load_checkpoint(path)
        if doc["class"] != training.class_path(cls):
            raise InvalidInputError(f"checkpoint {path} holds a {doc['class']}, not a {training.class_path(cls)}")
        cfg = doc["config"]
        model = cls(**cfg["params"])
        model.input_shape = tuple(cfg["input_shape"])
        model.x_mean, model.x_std = float(cfg["x_mean"]), float(cfg["x_std"])
        model.encoder = HashEncoder(model.input_shape, model.nbits, model.feature_dim, tanh=cls.encoder_tanh,
                                    image_net=model.image_net, image_net_options={**model.image_net_options, "pretrained": False})
        model.encoder.load_state_dict(state["encoder"])
        model.encoder.to(training.select_device(None))
        return model
