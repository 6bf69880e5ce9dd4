"""The two DCMH networks, one per modality, each ending in a linear layer of `nbits` outputs.

- `CNNF`: the CNN-F architecture (Chatfield et al., BMVC 2014) that DCMH fine-tunes on raw pixels.
  No pretrained weights can be fetched here, so it is trained from scratch; an adaptive pooling
  before fc6 lets it take any image size from 64x64 up (224x224 as in the paper).
- `FeatureMLP`: an MLP for precomputed image features (e.g. SIFT bag-of-words), our addition.
- `TextNet`: the paper's text net, bag-of-words -> 8192 -> ReLU -> nbits.
No tanh on any output (as the reference); the last layer starts at 0.01 * randn (as the reference).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hashsearch.codes import check_nbits
from hashsearch.errors import InvalidInputError


def hash_layer(in_features: int, nbits: int) -> nn.Linear:
    """The final linear layer to `nbits` real outputs, initialised 0.01 * randn with zero bias."""
    layer = nn.Linear(in_features, check_nbits(nbits))
    nn.init.normal_(layer.weight, std=0.01)
    nn.init.zeros_(layer.bias)
    return layer


def _positive(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return value


class CNNF(nn.Module):
    """CNN-F: conv 64x11/4, 256x5, 256x3 x3 with LRN and max pooling, fc 4096-4096, then the hash layer."""

    def __init__(self, nbits: int, in_channels: int = 3, fc_width: int = 4096, dropout: float = 0.5):
        super().__init__()
        _positive(in_channels, "in_channels")
        _positive(fc_width, "fc_width")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=11, stride=4),
            nn.ReLU(inplace=True),
            nn.LocalResponseNorm(5, alpha=1e-4 * 5, beta=0.75, k=2.0),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.Conv2d(64, 256, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.LocalResponseNorm(5, alpha=1e-4 * 5, beta=0.75, k=2.0),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.AdaptiveMaxPool2d(6),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256 * 6 * 6, fc_width),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc_width, fc_width),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            hash_layer(fc_width, nbits),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or min(x.shape[-2:]) < 64:
            raise InvalidInputError(f"CNNF expects images (n, c, h, w) with h, w >= 64, got shape {tuple(x.shape)}")
        return self.classifier(self.features(x))


class FeatureMLP(nn.Module):
    """Precomputed features -> hidden layers (ReLU, dropout) -> nbits; `hidden=()` is a linear map."""

    def __init__(self, in_features: int, nbits: int, hidden: Sequence[int] = (1024,), dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = _positive(in_features, "in_features")
        for h in hidden:
            layers += [nn.Linear(width, _positive(h, "hidden width")), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(hash_layer(width, nbits))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TextNet(FeatureMLP):
    """The paper's text network: bag-of-words -> `hidden` (8192) -> ReLU -> nbits."""

    def __init__(self, in_features: int, nbits: int, hidden: int = 8192, dropout: float = 0.0):
        super().__init__(in_features, nbits, hidden=(hidden,), dropout=dropout)
