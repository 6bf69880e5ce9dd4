"""Feature cache: computes each row once, keeps finished chunks, rejects corrupt files; CIFAR-10
features end to end on a small archive with random MobileNet weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hashsearch.errors import InvalidInputError
from hashsearch.features import FeatureCache, cache_root, cifar10_features


def fake_compute(calls):
    def compute(rows):
        calls.append(rows.tolist())
        return np.stack([np.full(3, r, np.float32) for r in rows])
    return compute


def test_cache_computes_missing_rows_once_in_order(tmp_path):
    calls = []
    cache = FeatureCache(tmp_path / "c", 3)
    got = cache.get(np.array([5, 2, 9, 2]), fake_compute(calls), chunk=2, progress=False)
    assert got[:, 0].tolist() == [5, 2, 9, 2]
    assert calls == [[5, 2], [9]]
    got = cache.get(np.array([9, 1, 5]), fake_compute(calls), chunk=2, progress=False)
    assert got[:, 0].tolist() == [9, 1, 5] and calls[2:] == [[1]]
    assert len(list((tmp_path / "c").glob("rows-*.npz"))) == 3
    assert not list((tmp_path / "c").glob(".*tmp*"))


def test_cache_keeps_finished_chunks_when_interrupted(tmp_path):
    cache = FeatureCache(tmp_path, 3)

    def fails_second(rows):
        if rows[0] == 2:
            raise RuntimeError("killed")
        return np.zeros((len(rows), 3), np.float32)

    with pytest.raises(RuntimeError):
        cache.get(np.arange(4), fails_second, chunk=2, progress=False)
    assert sorted(cache.stored()) == [0, 1]


def test_cache_rejects_corrupt_and_wrong_shapes(tmp_path):
    cache = FeatureCache(tmp_path, 3)
    with pytest.raises(InvalidInputError, match="shape"):
        cache.get(np.arange(2), lambda rows: np.zeros((len(rows), 4)), progress=False)
    np.savez(tmp_path / "rows-bad.npz", rows=np.arange(2), features=np.full((2, 3), np.nan, np.float32))
    with pytest.raises(InvalidInputError, match="corrupt"):
        cache.stored()


def test_cache_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HASHSEARCH_CACHE", str(tmp_path))
    assert cache_root() == tmp_path / "features"


def test_cifar10_features_cached_end_to_end(monkeypatch, tmp_path):
    from test_backbones import tf_arrays
    from test_cifar10 import write_archive

    from hashsearch.models.backbones import MobileNetV1

    write_archive(tmp_path, per_class=1)
    torch.manual_seed(0)
    net = MobileNetV1()
    np.savez(tmp_path / "w.npz", **tf_arrays(net))
    monkeypatch.setenv("HASHSEARCH_CACHE", str(tmp_path / "cache"))
    rows = np.array([3, 0, 7])
    first = cifar10_features(rows, resolution=32, weights=tmp_path / "w.npz", root=tmp_path, chunk=2, progress=False)
    assert first.shape == (3, 1024) and np.isfinite(first).all()
    x = torch.from_numpy(__import__("hashsearch.datasets.cifar10", fromlist=["x"]).Cifar10Archive(tmp_path)
                         .decode_rows(rows)).float() / 255
    with torch.no_grad():
        eager = net.eval()((x - 0.5) / 0.5)
    assert np.allclose(first, eager.numpy(), atol=1e-4)  # the frozen TorchScript module computes the same features
    monkeypatch.setattr("hashsearch.features.inference_module", lambda *a: pytest.fail("recomputed cached rows"))
    again = cifar10_features(rows[::-1], resolution=32, weights=tmp_path / "w.npz", root=tmp_path, progress=False)
    assert np.array_equal(again, first[::-1])
    with pytest.raises(InvalidInputError, match="rows"):
        cifar10_features(np.array([20]), resolution=32, weights=tmp_path / "w.npz", root=tmp_path, progress=False)


def test_cifar10_maps_cache_features_in_the_same_pass(monkeypatch, tmp_path):
    """One extraction pass stores the block-d maps and the pooled features; the suffix on the cached
    (float16) maps gives the features; the flipped view is a separate cache of mirrored images."""
    from test_backbones import tf_arrays
    from test_cifar10 import write_archive

    from hashsearch.features import cifar10_cache, cifar10_maps
    from hashsearch.models.backbones import MobileNetV1, make_image_net

    write_archive(tmp_path, per_class=1)
    torch.manual_seed(0)
    net = MobileNetV1()
    for m in net.modules():  # batch statistics as running ones: activations of order 1, not ~1e-12
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        net.train()(torch.rand(8, 3, 32, 32) * 2 - 1)
    np.savez(tmp_path / "w.npz", **tf_arrays(net))
    monkeypatch.setenv("HASHSEARCH_CACHE", str(tmp_path / "cache"))
    kw = dict(resolution=32, weights=tmp_path / "w.npz", root=tmp_path, progress=False)
    rows = np.array([3, 0, 7])
    maps = cifar10_maps(rows, depth=11, chunk=2, **kw)
    assert maps.dtype == np.float16 and maps.shape == (3, *MobileNetV1.maps_shape(11, 32))
    assert cifar10_cache("features", 32, tmp_path / "w.npz").stored_rows() == {0, 3, 7}
    monkeypatch.setattr("hashsearch.features.inference_module", lambda *a: pytest.fail("recomputed cached rows"))
    feats = cifar10_features(rows, **kw)
    backbone = make_image_net("mobilenet_v1", weights=tmp_path / "w.npz", resolution=32, trainable_blocks=3,
                              input_block=11).eval()
    with torch.no_grad():
        suffix = backbone(torch.from_numpy(maps.astype(np.float32))).numpy()
    assert np.abs(feats).mean() > 0.01 and np.allclose(suffix, feats, atol=1e-2 * np.abs(feats).max())
    monkeypatch.undo()
    monkeypatch.setenv("HASHSEARCH_CACHE", str(tmp_path / "cache"))
    from hashsearch.datasets.cifar10 import Cifar10Archive

    flat = Cifar10Archive.decode_rows
    ramp = lambda self, r: np.minimum(flat(self, r) + np.arange(32, dtype=np.uint8) * 4, 255).astype(np.uint8)  # noqa: E731
    monkeypatch.setattr(Cifar10Archive, "decode_rows", ramp)  # flat test images look the same mirrored
    flipped = cifar10_maps(rows, depth=11, flip=True, **kw)
    mirrored = torch.from_numpy(ramp(Cifar10Archive(tmp_path), rows)[..., ::-1].copy()).float() / 255
    with torch.no_grad():
        assert np.allclose(flipped, backbone.prefix(mirrored).numpy(), atol=1e-2 * np.abs(flipped).max())
    assert cifar10_cache("maps", 32, tmp_path / "w.npz", flip=True, depth=11).stored_rows() == {0, 3, 7}
