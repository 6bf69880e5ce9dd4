"""Shared parts of the single-modal deep hashers (SCHN, DPSH): image encoders, label checks,
settings resolved from the input ("auto"), recovery from non-finite steps, batched encoding to
packed codes, and checkpoints in `training.py`'s format.

No pretrained ImageNet weights can be downloaded here, so pixels go through a small CNN trained
from scratch (`SmallCNN`) and precomputed features through an MLP (`FeatureNet`).
"""
from __future__ import annotations

import copy
import inspect
import math
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from hashsearch.codes import check_nbits, encode_sign
from hashsearch.errors import HashsearchError, InvalidInputError
from hashsearch.models import training


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

    def __init__(self, input_shape: tuple[int, ...], nbits: int, feature_dim: int = 256, tanh: bool = True):
        super().__init__()
        if len(input_shape) == 3:
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


AUTO = "auto"


def input_kind(shape: tuple[int, ...]) -> str:
    """"pixels" for (c, h, w) image rows, "features" for flat feature vectors."""
    return "pixels" if len(shape) == 3 else "features"


def check_setting(name: str, value: Any, kind: type, low: float, high: float = math.inf, auto: bool = False) -> None:
    """Raise a one-line error unless `value` is of `kind` (int or float) in [low, high] (or "auto" where allowed)."""
    if auto and isinstance(value, str) and value == AUTO:
        return
    ok = isinstance(value, (int, np.integer)) if kind is int else isinstance(value, (int, float, np.integer, np.floating))
    if isinstance(value, bool) or not ok or not low <= value <= high:
        allowed = f"{kind.__name__} in [{low}, {high}]" + (' or "auto"' if auto else "")
        raise InvalidInputError(f"{name} must be {allowed}, got {value!r}")


class NonFiniteError(HashsearchError):
    """A loss, code or weight of a training step is NaN or infinite (caught by `Rollback`)."""


def check_finite(values: dict[str, torch.Tensor], what: str = "training") -> None:
    """Raise NonFiniteError naming every entry of `values` that holds a NaN or an infinity."""
    bad = [name for name, v in values.items() if not torch.isfinite(v).all()]
    if bad:
        raise NonFiniteError(f"{what} diverged: non-finite {', '.join(bad)}")


class Rollback:
    """The last finite training state (networks, optimisers, buffers), kept so that a fit that meets a
    non-finite step restores it, halves every optimiser's step size and goes on, instead of aborting.

    `save` is called at the start of each epoch (or round) and refuses to keep a non-finite state."""

    def __init__(self, modules: dict[str, nn.Module], optimizers: list[torch.optim.Optimizer], max_retries: int = 6):
        self.modules, self.optimizers, self.max_retries = modules, optimizers, max_retries
        self.retries = 0
        self.state: dict[str, Any] = {}

    def save(self, **buffers: torch.Tensor) -> None:
        """Keep copies of every module's and optimiser's state and of `buffers` (checked finite first)."""
        check_finite({**{f"{name} weights": torch.cat([p.detach().flatten() for p in m.parameters()])
                         for name, m in self.modules.items()}, **buffers})
        self.state = copy.deepcopy({"modules": {n: m.state_dict() for n, m in self.modules.items()},
                                    "optimizers": [o.state_dict() for o in self.optimizers],
                                    "buffers": buffers})

    def recover(self, error: NonFiniteError, where: dict[str, int]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Restore the saved state with half the step size: (buffers, history record of the event);
        after `max_retries` recoveries in one fit the error is raised, with what was tried."""
        self.retries += 1
        lr = [g["lr"] for g in self.optimizers[0].param_groups][0]
        if self.retries > self.max_retries or not self.state:
            raise HashsearchError(f"{error}; still diverging after {self.retries - 1} restarts from the last finite "
                                  f"state with the step size halved each time (lr now {lr:g}): check the input "
                                  "scale or pass a lower lr") from error
        state = copy.deepcopy(self.state)
        for name, module in self.modules.items():
            module.load_state_dict(state["modules"][name])
        for opt, opt_state in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(opt_state)
            for group in opt.param_groups:
                group["lr"] *= 0.5
        event = {**where, "event": "recovered", "error": str(error), "lr": lr * 0.5}
        return state["buffers"], event


class DeepImageHasher:
    """Base of the single-modal deep hashers: fit(x, labels) in subclasses, encode(x) -> packed uint8.

    The constructor stores its arguments unchanged (scikit-learn's contract); settings left "auto" are
    chosen in `fit` from the input (feature rows or pixels, their number, the labels) by
    `resolve_params`, and every setting used is kept in `params_` and saved with the model.
    Fitted attributes end in `_`: `encoder_`, `params_`, `history_`, `input_shape_`, `x_mean_`, `x_std_`.
    """

    encoder_tanh = True

    def __init__(self, nbits: int, seed: int = 0, feature_dim: int | str = AUTO, lr: float = 1e-3,
                 weight_decay: float = 1e-5, batch_size: int = 64, device: str | None = None,
                 verbose: bool = True):
        self.nbits, self.seed, self.feature_dim, self.lr = nbits, seed, feature_dim, lr
        self.weight_decay, self.batch_size, self.device, self.verbose = weight_decay, batch_size, device, verbose
        self.check_params()

    # ----- settings
    def check_params(self) -> None:
        """Raise a one-line error naming the first invalid constructor argument."""
        check_nbits(self.nbits)
        check_setting("feature_dim", self.feature_dim, int, 1, auto=True)
        check_setting("lr", self.lr, float, 0)
        check_setting("weight_decay", self.weight_decay, float, 0)
        check_setting("batch_size", self.batch_size, int, 2)  # pairs are needed

    def resolve_params(self, input_shape: tuple[int, ...], n: int, n_classes: int) -> dict[str, Any]:
        """Every training setting, "auto" ones chosen for this input: the encoder width (256 features)."""
        params = self.get_params()
        params.pop("verbose")
        params["input_kind"] = input_kind(input_shape)
        if params["feature_dim"] == AUTO:
            params["feature_dim"] = 256
        return params

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor arguments by name, as given (what `type(m)(**m.get_params())` rebuilds)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    # ----- setup shared by fit implementations
    def _start_fit(self, x: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.device]:
        """Validate data and settings, resolve "auto" ones, seed, standardise the input with the training
        mean/std, build the encoder."""
        self.check_params()
        xt = as_images(x)
        lt = as_multihot(labels, len(xt))
        training.seed_everything(self.seed)
        dev = training.select_device(self.device)
        self.input_shape_ = tuple(xt.shape[1:])
        self.params_ = self.resolve_params(self.input_shape_, len(xt), lt.shape[1])
        self.history_: list[dict[str, Any]] = []
        self.x_mean_, self.x_std_ = float(xt.mean()), float(xt.std()) or 1.0
        self.encoder_ = self._build_encoder().to(dev)
        return (xt - self.x_mean_) / self.x_std_, lt, dev

    def _build_encoder(self) -> HashEncoder:
        return HashEncoder(self.input_shape_, self.nbits, self.params_["feature_dim"], tanh=self.encoder_tanh)

    def _batches(self, n: int, gen: torch.Generator):
        """Index tensors of one shuffled epoch in batches of `batch_size`; a last batch of one item
        (which batch norm cannot train on) joins the one before it."""
        perm = torch.randperm(n, generator=gen)
        batches = [perm[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches[-2:] = [torch.cat(batches[-2:])]
        return batches

    def _log(self, record: dict[str, Any]) -> None:
        """Append to `history_`; recoveries are also reported when verbose."""
        self.history_.append(record)
        if self.verbose and record.get("event") == "recovered":
            print(f"{type(self).__name__}: {record['error']}; restored the last finite state, lr now {record['lr']:g}")

    # ----- inference
    def _check_fitted(self) -> None:
        if getattr(self, "encoder_", None) is None:
            raise HashsearchError(f"{type(self).__name__} is not fitted: call fit(x, labels) first")

    def real_codes(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """The hash layer's real-valued outputs (n, nbits) float32, before the sign."""
        self._check_fitted()
        xt = as_images(x)
        if tuple(xt.shape[1:]) != self.input_shape_:
            raise InvalidInputError(f"input rows have shape {tuple(xt.shape[1:])}, the model was fitted on {self.input_shape_}")
        return self._hash_outputs((xt - self.x_mean_) / self.x_std_, batch_size)

    def _hash_outputs(self, xt: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
        """Hash-layer outputs of already standardised input, in eval mode and batches."""
        dev = next(self.encoder_.parameters()).device
        was_training = self.encoder_.training
        self.encoder_.eval()
        with torch.no_grad():
            outs = [self.encoder_(xt[i:i + batch_size].to(dev))[1].cpu() for i in range(0, len(xt), batch_size)]
        self.encoder_.train(was_training)
        return torch.cat(outs).numpy()

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Packed uint8 codes (n, nbits // 8) of images or feature rows, by the sign of the hash layer."""
        return encode_sign(self.real_codes(x))

    # ----- persistence (training.py's checkpoint format, so training.load_model works)
    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted encoder, the constructor arguments and the resolved settings into directory `path`."""
        self._check_fitted()
        config = {"params": self.get_params(), "resolved": self.params_, "input_shape": list(self.input_shape_),
                  "x_mean": self.x_mean_, "x_std": self.x_std_}
        training.save_checkpoint(path, self, config, {"encoder": self.encoder_.state_dict()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DeepImageHasher":
        """Rebuild a fitted learner from a directory written by `save`, on CUDA when available, else CPU."""
        doc, state = training.load_checkpoint(path)
        if doc["class"] != training.class_path(cls):
            raise InvalidInputError(f"checkpoint {path} holds a {doc['class']}, not a {training.class_path(cls)}")
        cfg = doc["config"]
        model = cls(**cfg["params"])
        model.params_ = cfg["resolved"]
        model.input_shape_ = tuple(cfg["input_shape"])
        model.x_mean_, model.x_std_ = float(cfg["x_mean"]), float(cfg["x_std"])
        model.encoder_ = model._build_encoder()
        model.encoder_.load_state_dict(state["encoder"])
        model.encoder_.to(training.select_device(None))
        return model
