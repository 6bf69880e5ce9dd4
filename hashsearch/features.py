"""Frozen-backbone image features, computed once and cached on disk.

The cache lives under $HASHSEARCH_CACHE/features (default ~/.cache/hashsearch/features), one folder
per (data set, backbone, weights checksum, resolution[, view][, prefix depth]); each file there holds the
features of a set of rows (`rows`, `features` arrays), written to a temporary name then renamed, so an
interrupted extraction keeps every finished chunk and the next call computes only the missing rows.
Beside the pooled features, the maps of the frozen first blocks (float16) can be cached in the same pass:
fine-tuning only the last blocks then never reruns the rest of the network (`cifar10_maps`).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hashsearch.errors import InvalidInputError


def cache_root() -> Path:
    """$HASHSEARCH_CACHE/features, else ~/.cache/hashsearch/features."""
    env = os.environ.get("HASHSEARCH_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "hashsearch") / "features"


class FeatureCache:
    """Features of rows of one data set under one backbone setting, stored in chunk files under `folder`;
    each row an array of shape `dim` (an int or a tuple), stored as `dtype`."""

    def __init__(self, folder: str | os.PathLike, dim: int | tuple[int, ...], dtype: type = np.float32):
        self.folder, self.dtype = Path(folder), np.dtype(dtype)
        self.shape = tuple(int(d) for d in np.atleast_1d(dim))

    def stored_rows(self) -> set[int]:
        """Rows with a stored chunk (reads only the row arrays)."""
        found: set[int] = set()
        for path in self.folder.glob("rows-*.npz"):
            with np.load(path, allow_pickle=False) as z:
                found.update(z["rows"].tolist())
        return found

    def stored(self) -> dict[int, np.ndarray]:
        """Row -> feature vector for every row in the folder's chunk files (each checked on read)."""
        found: dict[int, np.ndarray] = {}
        for path in sorted(self.folder.glob("rows-*.npz")):
            with np.load(path, allow_pickle=False) as z:
                rows, feats = z["rows"], z["features"]
            if feats.shape != (len(rows), *self.shape) or not np.isfinite(feats).all():
                raise InvalidInputError(f"feature cache file {path} is corrupt (shape {feats.shape}); delete it")
            found.update(zip(rows.tolist(), feats))
        return found

    def write(self, rows: np.ndarray, features: np.ndarray) -> Path:
        """Store one chunk: temporary file, then an atomic rename."""
        self.folder.mkdir(parents=True, exist_ok=True)
        rows = np.asarray(rows, dtype=np.int64)
        digest = hashlib.sha1(rows.tobytes()).hexdigest()[:16]
        path = self.folder / f"rows-{rows[0]:06d}-{len(rows)}-{digest}.npz"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, rows=rows, features=np.asarray(features, dtype=self.dtype))
        os.replace(tmp, path)
        return path

    def get(self, rows: np.ndarray, compute: Callable[[np.ndarray], np.ndarray], chunk: int = 1000,
            progress: bool = True, desc: str = "features") -> np.ndarray:
        """Features of `rows` (in that order), computing missing ones with `compute(rows)` chunk by
        chunk (in the order asked, so the first rows are ready first) and storing each chunk."""
        from tqdm.auto import tqdm

        rows = np.asarray(rows, dtype=np.int64)
        found = self.stored()
        missing = np.array([r for r in dict.fromkeys(rows.tolist()) if r not in found], dtype=np.int64)
        with tqdm(total=len(missing), desc=desc, unit="img", disable=not progress or not len(missing)) as bar:
            for start in range(0, len(missing), chunk):
                part = missing[start:start + chunk]
                feats = np.asarray(compute(part), dtype=self.dtype)
                if feats.shape != (len(part), *self.shape):
                    raise InvalidInputError(f"feature function returned shape {feats.shape}, expected {(len(part), *self.shape)}")
                self.write(part, feats)
                found.update(zip(part.tolist(), feats))
                bar.update(len(part))
        return np.stack([found[r] for r in rows.tolist()]) if len(rows) else np.empty((0, *self.shape), self.dtype)


def inference_module(net, image_shape: tuple[int, int, int]):
    """`net` (a module of images) traced and frozen by TorchScript for inference on images of
    `image_shape`: batch norm folded into the convolutions, channels-last; 2x faster on CPU than eager
    (MobileNet v1 at 96 px, 2 threads), features equal within 1e-4."""
    import warnings

    import torch

    net = net.eval().to(memory_format=torch.channels_last)
    example = torch.rand(2, *image_shape).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks fixed for one image shape
        return torch.jit.freeze(torch.jit.trace(net, example))


def backbone_features(net, pixels_uint8: np.ndarray, batch_size: int = 128) -> np.ndarray | tuple[np.ndarray, ...]:
    """Outputs of uint8 (m, 3, h, w) pixels through a network in eval mode, no gradients: one array,
    or a tuple of arrays for a network returning a tuple (as `backbones.PrefixAndFeatures`)."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(pixels_uint8), batch_size):
            x = torch.from_numpy(pixels_uint8[i:i + batch_size]).float().div_(255)
            y = net(x.contiguous(memory_format=torch.channels_last))
            out.append(tuple(t.float().contiguous().numpy() for t in y) if isinstance(y, tuple) else y.float().numpy())
    if not out:
        return np.empty((0, 1024), np.float32)
    if isinstance(out[0], tuple):
        return tuple(np.concatenate(parts, dtype=np.float32) for parts in zip(*out))
    return np.concatenate(out, dtype=np.float32)


def cifar10_cache(kind: str, resolution: int, weights: str | os.PathLike | None = None, flip: bool = False,
                  depth: int = 0) -> FeatureCache:
    """The cache of CIFAR-10 pooled features (`kind` "features") or of the maps after the first `depth`
    MobileNet blocks ("maps", float16), keyed by weights checksum, resolution and view (flipped or not)."""
    from hashsearch.models.backbones import MobileNetV1, file_checksum, mobilenet_weights_path

    key = f"cifar10-mobilenet_v1-{file_checksum(mobilenet_weights_path(weights))[:16]}-{resolution}px"
    key += "-hflip" if flip else ""
    if kind == "features":
        return FeatureCache(cache_root() / key, MobileNetV1.feature_dim)
    if kind != "maps" or not 1 <= depth <= 13:
        raise InvalidInputError(f"cache kind must be 'features' or 'maps' with depth in 1..13, got {kind!r}, {depth!r}")
    return FeatureCache(cache_root() / f"{key}-block{depth}", MobileNetV1.maps_shape(depth, resolution), np.float16)


def cifar10_features(rows: np.ndarray | None = None, *, resolution: int = 96, weights: str | os.PathLike | None = None,
                     root: str | os.PathLike | None = None, chunk: int = 1000, progress: bool = True,
                     flip: bool = False, maps_depth: int = 0) -> np.ndarray:
    """Frozen ImageNet MobileNet v1 features (global average pool, 1024-d) of CIFAR-10 `rows` (default
    all 60,000, in archive order), upscaled to `resolution` pixels (`flip`: mirrored left-right); cached
    (see the module docstring). `maps_depth` d > 0: the same pass also caches the rows' block-d maps."""
    return _cifar10_outputs("features", rows, resolution, weights, root, chunk, progress, flip, maps_depth)


def cifar10_maps(rows: np.ndarray | None = None, *, depth: int, resolution: int = 96,
                 weights: str | os.PathLike | None = None, root: str | os.PathLike | None = None, chunk: int = 1000,
                 progress: bool = True, flip: bool = False) -> np.ndarray:
    """float16 maps (m, c, h, w) after the first `depth` frozen MobileNet blocks for CIFAR-10 `rows`, the
    input of a hasher built with `image_net_options={"input_block": depth, ...}`; cached, and the same
    pass caches the rows' pooled features (`cifar10_features`)."""
    return _cifar10_outputs("maps", rows, resolution, weights, root, chunk, progress, flip, depth)


def _cifar10_outputs(kind: str, rows, resolution, weights, root, chunk, progress, flip, depth) -> np.ndarray:
    """Rows of one cache (`kind`), computing the missing ones together with the other cache's output."""
    from hashsearch.datasets.cifar10 import Cifar10Archive
    from hashsearch.models.backbones import PrefixAndFeatures, make_image_net, mobilenet_weights_path

    archive = Cifar10Archive(root)
    rows = np.arange(len(archive)) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(archive)):
        raise InvalidInputError(f"CIFAR-10 rows must be in 0..{len(archive) - 1}")
    wpath = mobilenet_weights_path(weights)
    feats_cache = cifar10_cache("features", resolution, wpath, flip)
    maps_cache = cifar10_cache("maps", resolution, wpath, flip, depth) if depth else None
    other = {"features": maps_cache, "maps": feats_cache}[kind]
    other_rows = other.stored_rows() if other is not None else set()
    net = None

    def compute(part: np.ndarray) -> np.ndarray:
        nonlocal net
        if net is None:
            backbone = make_image_net("mobilenet_v1", weights=wpath, resolution=resolution)
            net = inference_module(PrefixAndFeatures(backbone, depth) if depth else backbone, (3, 32, 32))
        pixels = archive.decode_rows(part)
        out = backbone_features(net, pixels[..., ::-1].copy() if flip else pixels)
        if not depth:
            return out
        maps, feats = out
        new = np.array([r not in other_rows for r in part.tolist()])
        if new.any():
            other.write(part[new], (feats if kind == "maps" else maps)[new])
        return maps if kind == "maps" else feats

    what = f"MobileNet {'block-%d maps' % depth if kind == 'maps' else 'features'} @{resolution}px" + (" flipped" if flip else "")
    return (maps_cache if kind == "maps" else feats_cache).get(rows, compute, chunk=chunk, progress=progress, desc=what)
