"""Pretrained ImageNet backbones for the image side of the deep hashers.

- `MobileNetV1`: TF-slim MobileNet v1 1.0 (Howard et al. 2017) loading the shared ImageNet weights by
  their TensorFlow names (TF "SAME" padding, batch norm eps 1e-3, ReLU6, RGB input in [-1, 1]); it ends
  in a global average pool giving 1024 features at any input size.
- `torchvision:resnet18` etc.: a torchvision architecture with the user's own state dict (torchvision
  is not a dependency; it must import beside this torch).
`make_image_net(name, ...)` is the hook the hashers call: pixels in [0, 1] (n, 3, h, w) -> features,
resized to `resolution` and scaled as the backbone expects. Nothing is downloaded at run time.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hashsearch.errors import InvalidInputError

MOBILENET_FILE = Path("mobilenet_v1_imagenet") / "mobilenet_v1_1.0_224_imagenet_weights.npz"
# (output channels, depthwise stride) of blocks 1..13
MOBILENET_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
                    (512, 1), (512, 1), (1024, 2), (1024, 1))
BN_EPS = 1e-3
PREFIX = "MobilenetV1/"


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) along one axis: the odd extra pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvBN(nn.Module):
    """Conv (no bias, TF SAME padding) -> batch norm (eps 1e-3) -> ReLU6; depthwise when `groups` = channels."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int = 1):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel > 1:
            ph, pw = (same_padding(s, self.kernel, self.stride) for s in x.shape[-2:])
            x = F.pad(x, (*pw, *ph))
        return F.relu6(self.bn(self.conv(x)))


class MobileNetV1(nn.Module):
    """MobileNet v1 1.0: `forward(x)` maps RGB in [-1, 1] (n, 3, h, w) to 1024 pooled features;
    `logits(x)` to the 1001 ImageNet logits (index 0 = background)."""

    feature_dim = 1024

    def __init__(self):
        super().__init__()
        layers = [ConvBN(3, 32, 3, 2)]
        cin = 32
        for cout, stride in MOBILENET_BLOCKS:
            layers.append(nn.Sequential(ConvBN(cin, cin, 3, stride, groups=cin), ConvBN(cin, cout, 1, 1)))
            cin = cout
        self.blocks = nn.Sequential(*layers)  # blocks[0] = Conv2d_0, blocks[i] = Conv2d_i (depthwise, pointwise)
        self.classifier = nn.Conv2d(1024, 1001, 1)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Pooled features of pixels (`start` 0) or of the maps that blocks[:start] output."""
        return self.blocks[start:](x).mean(dim=(2, 3))

    def prefix(self, x: torch.Tensor, depth: int) -> torch.Tensor:
        """The feature maps after the first `depth` blocks (what `forward(maps, start=depth)` takes)."""
        return self.blocks[:depth](x)

    @staticmethod
    def channels_after(depth: int) -> int:
        """Channels of the maps after the first `depth` blocks (3: pixels)."""
        return 3 if depth == 0 else 32 if depth == 1 else MOBILENET_BLOCKS[depth - 2][0]

    @classmethod
    def maps_shape(cls, depth: int, resolution: int) -> tuple[int, int, int]:
        """(channels, h, w) of the maps after the first `depth` >= 1 blocks for square `resolution` input."""
        side = -(-resolution // 2)  # Conv2d_0, stride 2, SAME padding
        for _, stride in MOBILENET_BLOCKS[:depth - 1]:
            side = -(-side // stride)
        return cls.channels_after(depth), side, side

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward(x)[:, :, None, None]).flatten(1)

    def load_tf_weights(self, path: str | os.PathLike) -> None:
        """Copy the arrays of the shared .npz (TensorFlow names and layouts) into this module; every
        parameter and buffer must be filled and every array used, else InvalidInputError."""
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        state = {}
        for name, tf_name in self._tf_names().items():
            if tf_name not in arrays:
                raise InvalidInputError(f"{path}: missing weight array {tf_name!r}")
            arr = arrays.pop(tf_name)
            if tf_name.endswith("depthwise_weights"):  # (kh, kw, C, 1) -> (C, 1, kh, kw)
                arr = arr.transpose(2, 3, 0, 1)
            elif arr.ndim == 4:  # (kh, kw, Cin, Cout) -> (Cout, Cin, kh, kw)
                arr = arr.transpose(3, 2, 0, 1)
            state[name] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        if arrays:
            raise InvalidInputError(f"{path}: {len(arrays)} unused arrays, e.g. {sorted(arrays)[0]!r}")
        own = self.state_dict()
        bad = [k for k, v in state.items() if own[k].shape != v.shape]
        if bad:
            raise InvalidInputError(f"{path}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, expected {tuple(own[bad[0]].shape)}")
        self.load_state_dict(state, strict=False)  # strict except BN's num_batches_tracked (not in TF)

    def _tf_names(self) -> dict[str, str]:
        """Our parameter / buffer name -> TensorFlow variable name."""
        bn = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
        scopes = {"blocks.0": "Conv2d_0"}
        for i in range(1, len(MOBILENET_BLOCKS) + 1):
            scopes[f"blocks.{i}.0"] = f"Conv2d_{i}_depthwise"
            scopes[f"blocks.{i}.1"] = f"Conv2d_{i}_pointwise"
        names = {}
        for ours, scope in scopes.items():
            conv_w = "depthwise_weights" if scope.endswith("depthwise") else "weights"
            names[f"{ours}.conv.weight"] = f"{PREFIX}{scope}/{conv_w}"
            names.update({f"{ours}.bn.{k}": f"{PREFIX}{scope}/BatchNorm/{v}" for k, v in bn.items()})
        names["classifier.weight"] = f"{PREFIX}Logits/Conv2d_1c_1x1/weights"
        names["classifier.bias"] = f"{PREFIX}Logits/Conv2d_1c_1x1/biases"
        return names

    def freeze(self, trainable_blocks: int | None) -> None:
        """Train only the last `trainable_blocks` of the 14 conv blocks (0: frozen, None: all)."""
        n = len(self.blocks)
        if trainable_blocks is None:
            trainable_blocks = n
        if isinstance(trainable_blocks, bool) or not isinstance(trainable_blocks, int) or not 0 <= trainable_blocks <= n:
            raise InvalidInputError(f"trainable_blocks must be an integer in 0..{n} or None (all), got {trainable_blocks!r}")
        for i, block in enumerate(self.blocks):
            block.requires_grad_(i >= n - trainable_blocks)
        self.classifier.requires_grad_(False)  # not on the feature path
        self.frozen_blocks = n - trainable_blocks

    def train(self, mode: bool = True) -> "MobileNetV1":
        """Frozen blocks stay in eval mode (their batch norm statistics are ImageNet's)."""
        super().train(mode)
        for block in self.blocks[:getattr(self, "frozen_blocks", 0)]:
            block.eval()
        return self


def mobilenet_weights_path(weights: str | os.PathLike | None = None) -> Path:
    """The MobileNet weight file: `weights` if given, else $HASHSEARCH_DATA/mobilenet_v1_imagenet/...,
    else ../shared/data/...; FileNotFoundError naming what is missing (nothing is downloaded)."""
    from hashsearch.datasets import data_root

    path = Path(weights) if weights is not None else data_root() / MOBILENET_FILE
    if not path.is_file():
        how = "the weights= argument" if weights is not None else "$HASHSEARCH_DATA (or ../shared/data)"
        raise FileNotFoundError(f"MobileNet v1 ImageNet weights not found at {path} (from {how}); "
                                f"pass weights='/path/to/{MOBILENET_FILE.name}' or set HASHSEARCH_DATA")
    return path


def file_checksum(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (hex), to key caches by the exact weights used."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_mobilenet_v1(weights: str | os.PathLike | None = None, pretrained: bool = True) -> MobileNetV1:
    """MobileNetV1 with the ImageNet weights (see `mobilenet_weights_path`), or random init when
    `pretrained` is False (for tests and training from scratch)."""
    net = MobileNetV1()
    if pretrained:
        net.load_tf_weights(mobilenet_weights_path(weights))
    return net


def torchvision_net(arch: str, weights: str | os.PathLike | None) -> tuple[nn.Module, int]:
    """A torchvision classifier `arch` with its final layer removed, loaded from the user's state dict
    file `weights`; returns (module, feature width)."""
    try:
        import torchvision.models as tv_models
    except ImportError as exc:  # also raised when torchvision is built for another torch
        raise InvalidInputError(f"image_net='torchvision:{arch}' needs torchvision, which does not import beside "
                                f"this torch ({exc}); install a torchvision matching torch {torch.__version__}") from exc
    if not hasattr(tv_models, arch):
        raise InvalidInputError(f"torchvision has no model {arch!r}")
    if weights is None or not Path(weights).is_file():
        raise FileNotFoundError(f"image_net='torchvision:{arch}' needs weights= a state dict file; got {weights!r}")
    net = getattr(tv_models, arch)()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    last = net.fc if hasattr(net, "fc") else net.classifier[-1]
    width = last.in_features
    if hasattr(net, "fc"):
        net.fc = nn.Identity()
    else:
        net.classifier[-1] = nn.Identity()
    return net, width


class Frozen(nn.Module):
    """A module without gradients that stays in eval mode (its batch norm keeps the ImageNet statistics)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "Frozen":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ImageBackbone(nn.Module):
    """Pixels in [0, 1] (n, 3, h, w) -> backbone features: bilinear resize to `resolution`, scale to the
    backbone's input range, run it. `feature_dim` is the output width.

    With `input_block` d > 0 (MobileNet) it also takes the maps its first d blocks output for pixels
    (`prefix(pixels, d)`, e.g. cached once when those blocks are frozen) and runs only the rest on them:
    fine-tuning the last blocks then costs only their share of the network."""

    def __init__(self, net: nn.Module, feature_dim: int, resolution: int, mean: tuple[float, ...],
                 std: tuple[float, ...], input_block: int = 0):
        super().__init__()
        self.net, self.feature_dim, self.resolution = net, feature_dim, int(resolution)
        self.input_block = int(input_block)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels resized to `resolution` and scaled to the backbone's input range."""
        if tuple(x.shape[-2:]) != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def prefix(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Maps after the first `depth` (default `input_block`) MobileNet blocks for pixels `x`."""
        return self.net.prefix(self.scaled(x), self.input_block if depth is None else depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.net.channels_after(self.input_block) if self.input_block else None
        if x.ndim == 4 and maps is not None and x.shape[1] == maps:
            return self.net(x, self.input_block)
        if x.ndim != 4 or x.shape[1] != 3:
            also = f" or the maps of its first {self.input_block} blocks (n, {maps}, h, w)" if maps else ""
            raise InvalidInputError(f"the image backbone expects RGB pixels (n, 3, h, w){also}, got shape {tuple(x.shape)}")
        return self.net(self.scaled(x))


class PrefixAndFeatures(nn.Module):
    """Pixels -> (maps after the first `depth` blocks, pooled features) of a MobileNet `ImageBackbone` in
    one pass: what a frozen-prefix cache stores beside the frozen features."""

    def __init__(self, backbone: ImageBackbone, depth: int):
        super().__init__()
        self.backbone, self.depth = backbone, int(depth)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.backbone.prefix(x, self.depth)
        return maps, self.backbone.net(maps, self.depth)


IMAGE_NETS = ("mobilenet_v1", "torchvision:<arch>")


def make_image_net(name: str, *, weights: str | os.PathLike | None = None, resolution: int = 128,
                   trainable_blocks: int | None = 0, pretrained: bool = True, input_block: int = 0) -> ImageBackbone:
    """The backbone called `name` ("mobilenet_v1" or "torchvision:resnet18" etc.) for pixels in [0, 1].

    `trainable_blocks`: 0 keeps the backbone frozen, k fine-tunes its last k blocks (MobileNet), None
    fine-tunes all of it. `pretrained=False` (MobileNet only) starts from random init. `input_block`
    d (MobileNet, blocks 0..d-1 frozen): the module also takes the maps of its first d blocks as input
    (see `ImageBackbone`; `hashsearch.features.cifar10_maps` caches them).
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 32:
        raise InvalidInputError(f"resolution must be an integer >= 32 pixels, got {resolution!r}")
    if name == "mobilenet_v1":
        net = load_mobilenet_v1(weights, pretrained)
        net.freeze(trainable_blocks)
        if isinstance(input_block, bool) or not isinstance(input_block, int) or not 0 <= input_block <= net.frozen_blocks:
            raise InvalidInputError(f"input_block must be an integer in 0..{net.frozen_blocks} (the frozen blocks "
                                    f"with trainable_blocks={trainable_blocks!r}), got {input_block!r}")
        return ImageBackbone(net, MobileNetV1.feature_dim, resolution, (0.5,) * 3, (0.5,) * 3,  # [0,1] -> [-1,1]
                             input_block)
    if input_block:
        raise InvalidInputError("input_block (cached prefix maps) is a MobileNet option")
    if name.startswith("torchvision:"):
        if trainable_blocks not in (0, None):
            raise InvalidInputError("torchvision backbones are frozen (trainable_blocks=0) or fully trained (None)")
        net, width = torchvision_net(name.partition(":")[2], weights)
        if trainable_blocks == 0:
            net = Frozen(net)
        return ImageBackbone(net, width, resolution, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    raise InvalidInputError(f"unknown image_net {name!r}: give one of {', '.join(IMAGE_NETS)}")


def is_image_net_name(name: object) -> bool:
    """Whether `name` names a backbone `make_image_net` builds ("mobilenet_v1", "torchvision:...")."""
    return isinstance(name, str) and (name == "mobilenet_v1" or name.startswith("torchvision:"))


def backbone_head(name: str, out_features: int, head: Callable[[int, int], nn.Module], **options) -> nn.Sequential:
    """The backbone `name` (see `make_image_net`, `options` passed on) followed by `head(width, out_features)`:
    the image network of a hasher whose pixel path uses a pretrained backbone."""
    backbone = make_image_net(name, **options)
    return nn.Sequential(backbone, head(backbone.feature_dim, out_features))
