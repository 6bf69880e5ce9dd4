"""MobileNet v1 backbone: TF padding, weight loading by TF names, freezing, the hashers' image_net hook,
and (with the shared weights) ImageNet behaviour on real CIFAR-10 images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from hashsearch.datasets import data_root
from hashsearch.errors import InvalidInputError
from hashsearch.models import backbones
from hashsearch.models.backbones import (
    MOBILENET_FILE, ConvBN, MobileNetV1, make_image_net, mobilenet_weights_path, same_padding,
)

SHARED_WEIGHTS = data_root() / MOBILENET_FILE
CIFAR = data_root() / "cifar10_jpeg" / "cifar10_jpeg_bytes.npz"


def tf_arrays(net: MobileNetV1) -> dict[str, np.ndarray]:
    """The module's parameters under their TF names and layouts (inverse of load_tf_weights)."""
    state = net.state_dict()
    out = {}
    for ours, tf in net._tf_names().items():
        arr = state[ours].numpy()
        if tf.endswith("depthwise_weights"):
            arr = arr.transpose(2, 3, 0, 1)
        elif arr.ndim == 4:
            arr = arr.transpose(2, 3, 1, 0)
        out[tf] = arr
    return out


@pytest.fixture
def random_weights(tmp_path):
    torch.manual_seed(0)
    net = MobileNetV1()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial statistics so a wrong mapping shows
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "w.npz"
    np.savez(path, **tf_arrays(net))
    return net, path


@pytest.mark.parametrize("size,kernel,stride,expected", [
    (32, 3, 2, (0, 1)), (33, 3, 2, (1, 1)), (32, 3, 1, (1, 1)), (7, 1, 1, (0, 0)), (1, 3, 2, (1, 1)),
])
def test_same_padding_matches_tensorflow(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected
    # TF's rule: output = ceil(size / stride)
    before, after = expected
    assert (size + before + after - kernel) // stride + 1 == -(-size // stride)


def test_convbn_stride2_pads_after_only():
    layer = ConvBN(1, 1, 3, 2).eval()
    with torch.no_grad():
        layer.conv.weight.fill_(1.0)
    x = torch.ones(1, 1, 4, 4)
    y = layer.conv(F.pad(x, (0, 1, 0, 1)))  # what SAME means at an even size
    expected = F.relu6(layer.bn(y))
    assert torch.equal(layer(x), expected)
    assert layer(x).shape == (1, 1, 2, 2)


@pytest.mark.parametrize("size", [32, 57, 96])
def test_random_init_features_have_1024_dims(size):
    net = MobileNetV1().eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, size, size)).shape == (2, 1024)
        assert net.logits(torch.randn(1, 3, size, size)).shape == (1, 1001)


def test_load_tf_weights_round_trip(random_weights):
    source, path = random_weights
    net = MobileNetV1()
    net.load_tf_weights(path)
    for name, value in source.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            assert torch.equal(net.state_dict()[name], value), name
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.allclose(net.eval()(x), source.eval()(x))


def test_load_tf_weights_rejects_missing_and_extra_arrays(random_weights, tmp_path):
    source, _ = random_weights
    arrays = tf_arrays(source)
    arrays.pop("MobilenetV1/Conv2d_5_pointwise/weights")
    np.savez(tmp_path / "missing.npz", **arrays)
    with pytest.raises(InvalidInputError, match="Conv2d_5_pointwise/weights"):
        MobileNetV1().load_tf_weights(tmp_path / "missing.npz")
    np.savez(tmp_path / "extra.npz", **tf_arrays(source), **{"Other/x": np.zeros(3)})
    with pytest.raises(InvalidInputError, match="unused"):
        MobileNetV1().load_tf_weights(tmp_path / "extra.npz")
    bad = tf_arrays(source)
    bad["MobilenetV1/Conv2d_0/weights"] = np.zeros((3, 3, 3, 16), np.float32)
    np.savez(tmp_path / "shape.npz", **bad)
    with pytest.raises(InvalidInputError, match="shape"):
        MobileNetV1().load_tf_weights(tmp_path / "shape.npz")


def test_weights_path_order_and_clear_error(monkeypatch, tmp_path, random_weights):
    _, path = random_weights
    assert mobilenet_weights_path(path) == path
    monkeypatch.setenv("HASHSEARCH_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="mobilenet_v1_imagenet.*HASHSEARCH_DATA"):
        mobilenet_weights_path()
    (tmp_path / MOBILENET_FILE).parent.mkdir()
    (tmp_path / MOBILENET_FILE).write_bytes(path.read_bytes())
    assert mobilenet_weights_path() == tmp_path / MOBILENET_FILE
    with pytest.raises(FileNotFoundError, match="weights= argument"):
        mobilenet_weights_path(tmp_path / "nope.npz")


def test_trainable_blocks_freeze_the_rest():
    backbone = make_image_net("mobilenet_v1", pretrained=False, trainable_blocks=2, resolution=32)
    net = backbone.net
    trainable = [i for i, b in enumerate(net.blocks) if all(p.requires_grad for p in b.parameters())]
    assert trainable == [12, 13]
    assert not any(p.requires_grad for b in net.blocks[:12] for p in b.parameters())
    backbone.train()
    assert not net.blocks[0].training and net.blocks[13].training  # frozen batch norm keeps ImageNet statistics
    assert make_image_net("mobilenet_v1", pretrained=False, trainable_blocks=None).net.blocks[0].training
    with pytest.raises(InvalidInputError, match="trainable_blocks"):
        make_image_net("mobilenet_v1", pretrained=False, trainable_blocks=15)


def test_image_backbone_resizes_and_checks_input():
    backbone = make_image_net("mobilenet_v1", pretrained=False, resolution=48).eval()
    with torch.no_grad():
        assert backbone(torch.rand(3, 3, 32, 32)).shape == (3, 1024)
    with pytest.raises(InvalidInputError, match="RGB"):
        backbone(torch.rand(3, 1, 32, 32))
    with pytest.raises(InvalidInputError, match="resolution"):
        make_image_net("mobilenet_v1", pretrained=False, resolution=8)
    with pytest.raises(InvalidInputError, match="unknown image_net"):
        make_image_net("vgg", pretrained=False)


@pytest.mark.parametrize("depth,resolution", [(10, 96), (12, 48), (1, 33)])
def test_suffix_on_cached_prefix_equals_the_full_network(depth, resolution):
    """Fine-tuning the last blocks on cached prefix maps: the maps (of the documented shape) give the full
    network's features."""
    torch.manual_seed(0)
    backbone = make_image_net("mobilenet_v1", pretrained=False, resolution=resolution, trainable_blocks=14 - depth,
                              input_block=depth).eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        full, maps = backbone(x), backbone.prefix(x)
        assert tuple(maps.shape[1:]) == MobileNetV1.maps_shape(depth, resolution)
        assert torch.allclose(backbone(maps), full, atol=1e-6)
        both = backbones.PrefixAndFeatures(backbone, depth)(x)
        assert torch.equal(both[0], maps) and torch.allclose(both[1], full, atol=1e-6)
    with pytest.raises(InvalidInputError, match=f"maps of its first {depth} blocks"):
        backbone(torch.rand(2, 7, 6, 6))


def test_input_block_must_lie_in_the_frozen_prefix():
    with pytest.raises(InvalidInputError, match="input_block"):
        make_image_net("mobilenet_v1", pretrained=False, trainable_blocks=5, input_block=10)
    with pytest.raises(InvalidInputError, match="input_block"):
        make_image_net("mobilenet_v1", pretrained=False, trainable_blocks=None, input_block=1)


@pytest.mark.parametrize("method", ["dpsh", "schn"])
def test_hashers_fine_tune_last_blocks_on_cached_maps(method):
    """A hasher fitted on prefix maps (only the suffix runs) encodes maps and pixels alike."""
    from hashsearch.models.dpsh import DPSH
    from hashsearch.models.schn import SCHN

    torch.manual_seed(0)
    x = torch.rand(12, 3, 32, 32)
    labels = np.arange(12) % 3
    options = {"pretrained": False, "resolution": 32, "trainable_blocks": 2, "input_block": 11}
    model = (DPSH(8, epochs=1, batch_size=6, verbose=False, image_net="mobilenet_v1", image_net_options=options)
             if method == "dpsh" else
             SCHN(8, max_iter=1, max_epoch=1, num_samples=12, batch_size=6, label_dim=16, latent_dim=16,
                  mlp_hidden=16, verbose=False, image_net="mobilenet_v1", image_net_options=options))
    model._start_fit(x.numpy(), labels)  # fit builds the same seeded encoder: its prefix gives the maps
    with torch.no_grad():
        maps = model.encoder_.features[0].eval().prefix(x).numpy()
    model.fit(maps, labels)
    frozen = [p for b in model.encoder_.features[0].net.blocks[:12] for p in b.parameters()]
    assert not any(p.requires_grad for p in frozen)
    assert np.allclose(model.real_codes(maps), model.real_codes(x.numpy()), atol=1e-5)
    head, blocks = model._param_groups(model.encoder_.parameters())  # fine-tuned blocks: a tenth of the step
    assert "lr" not in head and blocks["lr"] == model.lr * 0.1 and len(blocks["params"]) == 6 * 2


def test_torchvision_missing_gives_clear_error(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_torchvision(name, *args, **kwargs):
        if name.startswith("torchvision"):
            raise ImportError("No module named 'torchvision'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    with pytest.raises(InvalidInputError, match="needs torchvision"):
        make_image_net("torchvision:resnet18", weights=tmp_path / "resnet18.pt")


@pytest.mark.parametrize("method", ["dpsh", "schn"])
def test_hashers_take_image_net(method, tmp_path):
    from hashsearch.models.dpsh import DPSH
    from hashsearch.models.schn import SCHN

    rng = np.random.default_rng(0)
    x = rng.random((12, 3, 32, 32), dtype=np.float32)
    labels = np.arange(12) % 3
    options = {"pretrained": False, "resolution": 32, "trainable_blocks": 1}
    model = (DPSH(8, epochs=1, batch_size=6, verbose=False, image_net="mobilenet_v1", image_net_options=options)
             if method == "dpsh" else
             SCHN(8, max_iter=1, max_epoch=1, num_samples=12, batch_size=6, label_dim=16, latent_dim=16,
                  mlp_hidden=16, verbose=False, image_net="mobilenet_v1", image_net_options=options))
    before = model.__class__(8, verbose=False, image_net="mobilenet_v1", image_net_options=options)
    model.fit(x, labels)
    assert model.x_mean_ == 0.0 and model.x_std_ == 1.0  # the backbone scales pixels itself
    assert isinstance(model.encoder_.features[0], backbones.ImageBackbone)
    codes = model.encode(x)
    assert codes.shape == (12, 1)
    model.save(tmp_path / "m")
    again = type(model).load(tmp_path / "m")
    assert np.array_equal(again.encode(x), codes)
    assert before.image_net == "mobilenet_v1"


@pytest.mark.skipif(not SHARED_WEIGHTS.is_file(), reason="shared MobileNet weights absent")
def test_dcmh_image_side_takes_mobilenet():
    from hashsearch.models.dcmh import DCMH

    model = DCMH(16, image_net="mobilenet_v1", epochs=1, batch_size=8, progress=False)
    model.params_ = model._resolve((3, 32, 32), 8)
    model._build((3, 32, 32), 5)
    assert isinstance(model.image_net_[0], backbones.ImageBackbone)
    assert model._img_norm.mode == "none"


BOATS = {472, 484, 510, 554, 576, 625, 628, 693, 724, 780, 814, 833, 871, 914}  # ImageNet-1k ids of boats/ships


@pytest.mark.skipif(not (SHARED_WEIGHTS.is_file() and CIFAR.is_file()), reason="shared weights or CIFAR-10 absent")
def test_pretrained_mobilenet_sees_ships_in_cifar_ships():
    """ImageNet behaviour: most CIFAR-10 test ships (32 px, upscaled to 224) have a boat class in their
    top 5 of the 1,000 ImageNet classes; random weights would almost never do that."""
    from hashsearch.datasets.cifar10 import Cifar10Archive

    archive = Cifar10Archive()
    ships = np.flatnonzero((archive.label == archive.class_names.index("ship")) & archive.is_test)[:10]
    net = make_image_net("mobilenet_v1", resolution=224).eval()
    x = torch.from_numpy(archive.decode_rows(ships)).float() / 255
    with torch.no_grad():
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        top5 = net.net.logits((x - 0.5) / 0.5).topk(5).indices - 1  # 1001-way: index 0 is background
    hits = sum(bool(BOATS & set(row.tolist())) for row in top5)
    assert hits >= 7, top5.tolist()


def test_frozen_wrapper_stays_in_eval_without_gradients():
    net = backbones.Frozen(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3)))
    net.train()
    assert not net.training and not net.net[1].training
    assert not any(p.requires_grad for p in net.parameters())
    with pytest.raises(InvalidInputError, match="frozen"):
        make_image_net("torchvision:resnet18", trainable_blocks=2)
