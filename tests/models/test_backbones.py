from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rlad.errors import ConfigError
from rlad.models.backbones import (
    STAGE_CHANNELS,
    STAGE_LAST_FEATURE,
    STAGE_STRIDE,
    BackboneConfig,
    FeatureExtractor,
    MobileNetV2,
    build_feature_extractor,
    fuse_conv_bn,
    load_mobilenet_v2,
)
from rlad.models.base import ImageNetNorm

WEIGHTS = Path(__file__).resolve().parents[2].parent / "shared" / "weights" / "mobilenet_v2-b0353104.pth"


def _random_net(seed: int = 0) -> MobileNetV2:
    return load_mobilenet_v2("random", seed=seed)


def _weights_or_skip() -> Path:
    if not WEIGHTS.is_file():
        pytest.skip(f"ImageNet MobileNetV2 weights not found at {WEIGHTS} (read from ../shared/weights)")
    return WEIGHTS


def test_state_dict_names_follow_torchvision_layout():
    state = MobileNetV2().state_dict()
    # torchvision's mobilenet_v2: 314 entries (weights, BN statistics and counters).
    assert len(state) == 314
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)  # expansion-1 block: dw first
    assert state["features.1.conv.1.weight"].shape == (16, 32, 1, 1)
    assert state["features.2.conv.0.0.weight"].shape == (96, 16, 1, 1)  # expand, then dw, then project
    assert state["features.2.conv.3.running_var"].shape == (24,)
    assert state["features.18.0.weight"].shape == (1280, 320, 1, 1)
    assert state["classifier.1.weight"].shape == (1000, 1280)


def test_random_init_is_seeded_and_only_on_request():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for explicitly: no warning
        a = load_mobilenet_v2("random", seed=3)
    b = _random_net(seed=3)
    c = _random_net(seed=4)
    assert torch.equal(a.features[5].conv[0][0].weight, b.features[5].conv[0][0].weight)
    assert not torch.equal(a.features[5].conv[0][0].weight, c.features[5].conv[0][0].weight)
    assert not a.training
    # The default is ImageNet weights; with none reachable (the tests' empty cache, no network) that
    # is an error, never a silent random backbone.
    with pytest.raises(ConfigError, match="ImageNet weights are not cached"):
        load_mobilenet_v2("")


def test_missing_weight_file_is_a_config_error_naming_the_path(tmp_path):
    missing = tmp_path / "nope" / "weights.pth"
    with pytest.raises(ConfigError, match=str(missing)):
        load_mobilenet_v2(missing)


def test_wrong_weight_files_are_config_errors(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="garbage.pth: not a readable"):
        load_mobilenet_v2(garbage)
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(ConfigError, match="not a torchvision mobilenet_v2"):
        load_mobilenet_v2(other)
    wrong_shape = tmp_path / "wrong_shape.pth"
    state = MobileNetV2().state_dict()
    state["classifier.1.weight"] = torch.zeros(10, 1280)
    state["classifier.1.bias"] = torch.zeros(10)
    torch.save(state, wrong_shape)
    with pytest.raises(ConfigError, match="shapes do not match"):
        load_mobilenet_v2(wrong_shape)


def test_own_saved_state_dict_loads_strictly(tmp_path):
    net = _random_net(seed=1)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": net.state_dict()}, path)  # a wrapped checkpoint is accepted too
    loaded = load_mobilenet_v2(path)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x))


@pytest.mark.parametrize("stages", [[5, 5], [7], [], ["a"]])
def test_bad_stage_lists_are_config_errors(stages):
    with pytest.raises(ConfigError, match="model.backbone.stages"):
        FeatureExtractor(stages)


def test_extractor_shapes_and_values_match_the_plain_network():
    net = _random_net(seed=2)
    extractor = FeatureExtractor([4, 1, 2], net, micro_batch=2)
    assert extractor.stages == [1, 2, 4]
    images = torch.rand(3, 3, 64, 64)
    levels = extractor(images)
    for stage, level in zip(extractor.stages, levels):
        stride = STAGE_STRIDE[stage]
        assert level.shape == (3, STAGE_CHANNELS[stage], 64 // stride, 64 // stride)
    # The fused, channels-last, micro-batched path must compute what the unfused network computes.
    expected = []
    with torch.no_grad():
        x = ImageNetNorm()(images)
        for index, module in enumerate(net.features):
            x = module(x)
            if index in {STAGE_LAST_FEATURE[s] for s in extractor.stages}:
                expected.append(x)
            if index == STAGE_LAST_FEATURE[4]:
                break
    for got, want in zip(levels, expected):
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_cpu_extractor_runs_its_frozen_copy_with_the_eager_features():
    extractor = FeatureExtractor([1, 4], _random_net(seed=3), micro_batch=2)
    images = torch.rand(3, 3, 64, 48)
    eager = extractor._forward_one(images)
    first = extractor(images)
    assert extractor._frozen.state == "built"
    again = extractor(images)
    for f, a, e in zip(first, again, eager):
        assert torch.equal(f, a)  # one path for every call: the same images give the same features
        assert torch.allclose(f, e, atol=1e-5, rtol=1e-5)
    other = torch.rand(1, 3, 80, 80)  # a traced copy must not be tied to the first call's shape
    for f, e in zip(extractor(other), extractor._forward_one(other)):
        assert f.shape == e.shape and torch.allclose(f, e, atol=1e-5, rtol=1e-5)
    import copy
    import pickle

    for clone in (copy.deepcopy(extractor), pickle.loads(pickle.dumps(extractor))):
        assert clone._frozen.state == "unused"
        assert all(torch.equal(c, f) for c, f in zip(clone(images), first))


def test_extractor_stays_eager_when_tracing_fails(monkeypatch):
    extractor = FeatureExtractor([2], _random_net(seed=4))

    def refuse(*args, **kwargs):
        raise RuntimeError("tracing is not available here")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    images = torch.rand(2, 3, 32, 32)
    got = extractor(images)
    assert extractor._frozen.state == "failed"
    assert torch.equal(got[0], extractor._forward_one(images)[0])


def test_fuse_conv_bn_keeps_eval_outputs():
    net = _random_net(seed=5)
    # Non-trivial BN statistics so that folding them is actually exercised.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    block = net.features[:4]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = block(x)
        import copy

        got = fuse_conv_bn(copy.deepcopy(block))(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fuse_conv_bn(copy.deepcopy(block)).modules())
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_weights_state_round_trip_gives_identical_features():
    extractor = FeatureExtractor([2, 4], _random_net(seed=7))
    state = extractor.weights_state()
    assert all(k.startswith("features.") for k in state)
    assert max(int(k.split(".")[1]) for k in state) == STAGE_LAST_FEATURE[4]  # truncated
    rebuilt = FeatureExtractor.from_weights_state([2, 4], state)
    images = torch.rand(2, 3, 64, 64)
    for a, b in zip(extractor(images), rebuilt(images)):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="do not match"):
        FeatureExtractor.from_weights_state([2, 6], state)  # deeper stage than the saved weights


def test_build_feature_extractor_validates_stages_before_loading(tmp_path):
    with pytest.raises(ConfigError, match="model.backbone.stages"):
        build_feature_extractor(BackboneConfig(weights=str(tmp_path / "missing.pth"), stages=[9]))
    with pytest.raises(ConfigError, match="missing.pth"):
        build_feature_extractor(BackboneConfig(weights=str(tmp_path / "missing.pth"), stages=[2]))


def _imagenet_top1(net: MobileNetV2, image: np.ndarray) -> torch.Tensor:
    """Resize the short side to 256, centre-crop 224 (torchvision's evaluation transform)."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    h, w = x.shape[-2:]
    scale = 256 / min(h, w)
    x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True, align_corners=False)
    top, left = (x.shape[-2] - 224) // 2, (x.shape[-1] - 224) // 2
    x = x[..., top : top + 224, left : left + 224]
    with torch.no_grad():
        return net(ImageNetNorm()(x)).softmax(1)[0]


def test_imagenet_weights_load_strictly_and_classify_real_photos():
    import skimage.data

    path = _weights_or_skip()
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(state) == set(MobileNetV2().state_dict())  # every key matched, none left over
    net = load_mobilenet_v2(path)
    cat = _imagenet_top1(net, skimage.data.chelsea())
    assert int(cat.argmax()) in {281, 282, 285}  # tabby, tiger cat, Egyptian cat
    coffee = _imagenet_top1(net, skimage.data.coffee())
    assert int(coffee.argmax()) == 967  # espresso
    # A random network is not confidently right: the check above could fail for unloaded weights.
    random_cat = _imagenet_top1(_random_net(), skimage.data.chelsea())
    assert float(random_cat.max()) < 0.1
