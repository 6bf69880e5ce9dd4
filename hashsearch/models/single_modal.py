"""Shared parts of the single-modal deep hashers (SCHN, DPSH): image encoders, label checks,
settings resolved from the input ("auto"), recovery from non-finite steps, batched encoding to
packed codes, and checkpoints in `training.py`'s format.

No pretrained ImageNet weights can be downloaded here, so pixels go through a small CNN trained
from scratch (`SmallCNN`) and precomputed features through an MLP (`FeatureNet`).
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hashsearch.codes import check_nbits, encode_sign
from hashsearch.errors import HashsearchError, InvalidInputError
from hashsearch.models import training
from hashsearch.models.base import Learner, check_count, check_is_fitted, check_real, multihot_labels
from hashsearch.models.backbones import backbone_head, is_image_net_name


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


def as_multihot(labels: np.ndarray, n: int) -> torch.Tensor:
    """Labels as a float32 (n, c) 0/1 tensor (`base.multihot_labels`: class ids or multi-hot)."""
    return torch.from_numpy(multihot_labels(labels, n))


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A training batch of images or backbone maps (n, c, h, w), each mirrored left-right with
    probability 1/2 and shifted by up to 1/8 of its side (at least 1) with zero padding: the usual
    CIFAR augmentation (4 pixels of 32), which also applies to cached maps (1 cell of 6)."""
    n, c, h, w = x.shape
    pad = max(1, round(h / 8))
    flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=gen).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch, channel = torch.arange(n, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None]
    return F.pad(x, (pad, pad, pad, pad))[batch, channel, rows, cols]


AUTO = "auto"


def input_kind(shape: tuple[int, ...]) -> str:
    """"pixels" for (c, h, w) image rows, "features" for flat feature vectors."""
    return "pixels" if len(shape) == 3 else "features"


def check_size(value: Any, name: str) -> None:
    """A setting that is "auto" or a positive integer, else InvalidInputError naming it."""
    if not (isinstance(value, str) and value == AUTO) and check_count(value, name) < 1:
        raise InvalidInputError(f"{name} must be a positive integer or \"auto\", got {value!r}")


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


class DeepImageHasher(Learner):
    """Base of the single-modal deep hashers: fit(x, labels) in subclasses, encode(x) -> packed uint8.

    The constructor stores its arguments unchanged (`base.Learner`, scikit-learn's contract); settings
    left "auto" are chosen in `fit` from the input (feature rows or pixels, their number, the labels)
    by `_resolve_params`, and every setting used is kept in `params_` and saved with the model.
    Fitted attributes: `encoder_`, `params_`, `history_`, `input_shape_`, `x_mean_`, `x_std_`.
    """

    encoder_tanh = True

    def __init__(self, nbits: int, seed: int = 0, feature_dim: int | str = AUTO, lr: float = 1e-3,
                 weight_decay: float = 1e-5, batch_size: int = 64, device: str | None = None,
                 verbose: bool = True, image_net: str | None = None, image_net_options: dict | None = None,
                 backbone_lr_scale: float = 0.1, augment: bool = False):
        self.nbits, self.seed, self.feature_dim, self.lr = nbits, seed, feature_dim, lr
        self.augment = augment
        self.image_net, self.image_net_options, self.backbone_lr_scale = image_net, image_net_options, backbone_lr_scale
        self.weight_decay, self.batch_size, self.device, self.verbose = weight_decay, batch_size, device, verbose
        self._check_params()

    # ----- settings
    def _check_params(self) -> None:
        check_nbits(self.nbits)
        check_count(self.seed, "seed")
        check_size(self.feature_dim, "feature_dim")
        check_real(self.lr, "lr", strictly_positive=False)
        check_real(self.weight_decay, "weight_decay", strictly_positive=False)
        check_real(self.backbone_lr_scale, "backbone_lr_scale", strictly_positive=False)
        if self.image_net is not None and not is_image_net_name(self.image_net):
            raise InvalidInputError(f"image_net must be None or a pretrained backbone such as 'mobilenet_v1', got {self.image_net!r}")
        if not isinstance(self.augment, bool):
            raise InvalidInputError(f"augment must be True or False, got {self.augment!r}")
        if self.image_net_options is not None and not isinstance(self.image_net_options, dict):
            raise InvalidInputError(f"image_net_options must be a dict, got {type(self.image_net_options).__name__}")
        if check_count(self.batch_size, "batch_size") < 2:
            raise InvalidInputError(f"batch_size must be at least 2 (pairs are needed), got {self.batch_size}")

    def _resolve_params(self, input_shape: tuple[int, ...], n: int, n_classes: int) -> dict[str, Any]:
        """Every training setting, "auto" ones chosen for this input; here the encoder width (256)."""
        params = self.get_params()
        params.pop("verbose")
        params["input_kind"] = input_kind(input_shape)
        if params["feature_dim"] == AUTO:
            params["feature_dim"] = 256
        return params

    # ----- setup shared by fit implementations
    def _start_fit(self, x: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.device]:
        """Validate data and settings, resolve "auto" ones, seed, standardise the input with the training
        mean/std, build the encoder."""
        self._check_params()
        xt = as_images(x)
        if self.augment and xt.ndim != 4:
            raise InvalidInputError("augment=True needs images or backbone maps (n, c, h, w), not feature vectors")
        lt = as_multihot(labels, len(xt))
        training.seed_everything(self.seed)
        dev = training.select_device(self.device)
        self.input_shape_ = tuple(xt.shape[1:])
        self.params_ = self._resolve_params(self.input_shape_, len(xt), lt.shape[1])
        self.history_: list[dict[str, Any]] = []
        # a pretrained backbone takes pixels in [0, 1] as they are; other inputs are standardised
        self.x_mean_, self.x_std_ = (0.0, 1.0) if self.image_net else (float(xt.mean()), float(xt.std()) or 1.0)
        self.encoder_ = self._build_encoder().to(dev)
        return (xt - self.x_mean_) / self.x_std_, lt, dev

    def _build_encoder(self, pretrained: bool = True) -> HashEncoder:
        """The encoder `params_` describes; `pretrained=False` skips loading backbone weights (a checkpoint has them)."""
        options = {**(self.image_net_options or {}), **({} if pretrained else {"pretrained": False})}
        return HashEncoder(self.input_shape_, self.nbits, self.params_["feature_dim"], tanh=self.encoder_tanh,
                           image_net=self.image_net, image_net_options=options)

    def _param_groups(self, params) -> list[dict[str, Any]]:
        """Optimiser groups: a pretrained backbone's trainable blocks at `backbone_lr_scale` x lr (small
        fine-tuning steps keep the ImageNet features), every other parameter at lr."""
        backbone = {id(p) for p in self.encoder_.features[0].parameters()} if self.image_net else set()
        params = [p for p in params if p.requires_grad]
        groups = [{"params": [p for p in params if id(p) not in backbone]},
                  {"params": [p for p in params if id(p) in backbone], "lr": self.lr * self.backbone_lr_scale}]
        return [g for g in groups if g["params"]]

    def _batches(self, n: int, gen: torch.Generator):
        """Index tensors of one shuffled epoch in batches of `batch_size`; a last batch of one item
        (which batch norm cannot train on) joins the one before it."""
        perm = torch.randperm(n, generator=gen)
        batches = [perm[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches[-2:] = [torch.cat(batches[-2:])]
        return batches

    def _train_input(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """A training batch as the encoder sees it: augmented (`augment_batch`) when `augment` is set."""
        return augment_batch(x, gen) if self.augment else x

    def _log(self, record: dict[str, Any]) -> None:
        """Append to `history_`; recoveries are also reported when verbose."""
        self.history_.append(record)
        if self.verbose and record.get("event") == "recovered":
            print(f"{type(self).__name__}: {record['error']}; restored the last finite state, lr now {record['lr']:g}")

    # ----- inference
    def real_codes(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """The hash layer's real-valued outputs (n, nbits) float32, before the sign."""
        check_is_fitted(self)
        xt = as_images(x)
        if tuple(xt.shape[1:]) != self.input_shape_ and not self.image_net:  # a backbone checks its own input
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

    # ----- checkpoints (base.Learner's format: the resolved settings and the encoder's weights)
    def _fitted_config(self) -> dict[str, Any]:
        return {"params_": self.params_, "history_": self.history_, "input_shape_": list(self.input_shape_),
                "x_mean_": self.x_mean_, "x_std_": self.x_std_}

    def _fitted_state(self) -> dict[str, Any]:
        return {"encoder_": self.encoder_.state_dict()}

    def _restore(self, fitted: dict[str, Any], state: dict[str, Any]) -> None:
        self.params_, self.history_ = fitted["params_"], fitted["history_"]
        self.input_shape_ = tuple(fitted["input_shape_"])
        self.x_mean_, self.x_std_ = float(fitted["x_mean_"]), float(fitted["x_std_"])
        self.encoder_ = self._build_encoder(pretrained=False)
        self.encoder_.load_state_dict(state["encoder_"])
        self.encoder_.to(training.select_device(None))
