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
