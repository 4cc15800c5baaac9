"""The three backbones against torchvision, without torchvision: `../shared/weights/refs/` holds, per
architecture, every state-dict key with its shape and dtype, and the outputs of its stages for a fixed
input when every tensor is filled by a formula (see that folder's README). Filling our networks by the
same formula must reproduce those outputs, through the plain network and through the fused,
channels-last, micro-batched FeatureExtractor that the models use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rlad.models.backbones import ARCHS, FeatureExtractor, arch_of_state
from rlad.models.base import ImageNetNorm

REFS = Path(__file__).resolve().parents[2].parent / "shared" / "weights" / "refs"
# Reference module name -> our stage number (mobilenet's features.18 is the 1280-channel head, not a stage).
STAGE_OF = {
    "mobilenet_v2": {"features.3": 1, "features.6": 2, "features.13": 4},
    "resnet18": {"layer1": 1, "layer2": 2, "layer3": 3, "layer4": 4},
    "wide_resnet50_2": {"layer1": 1, "layer2": 2, "layer3": 3, "layer4": 4},
}


def _reference(arch: str) -> dict:
    path = REFS / f"{arch}.json"
    if not path.is_file():
        pytest.skip(f"backbone reference vectors not found at {path} (read from ../shared/weights/refs)")
    return json.loads(path.read_text())


def _formula(name: str, like: torch.Tensor) -> torch.Tensor:
    if name.endswith("num_batches_tracked"):
        return torch.zeros_like(like)
    h = sum(name.encode("utf-8")) % 1000
    # The formula repeats every 9973 elements: compute one period and tile it (wide_resnet50_2 has 69M).
    wave = np.resize(np.sin(0.37 * np.arange(min(9973, like.numel())) + 0.11 * h), like.numel())
    values = 1 + 0.5 * np.abs(wave) if name.endswith("running_var") else 0.02 * wave
    return torch.from_numpy(values).to(like.dtype).reshape(like.shape)


def _fixed_input() -> torch.Tensor:
    b, c, y, x = np.meshgrid(np.arange(2), np.arange(3), np.arange(64), np.arange(64), indexing="ij")
    return torch.from_numpy(np.sin(0.05 * (y + 1) * (c + 1)) * np.cos(0.03 * (x + 1) * (b + 1))).float()


def _formula_network(arch: str) -> torch.nn.Module:
    with torch.device("meta"):
        network = ARCHS[arch].build()
    network = network.to_empty(device="cpu")
    network.load_state_dict({k: _formula(k, v) for k, v in network.state_dict().items()}, strict=True)
    return network.eval()


def _assert_matches(got: torch.Tensor, want: dict, where: str, rtol: float = 1e-5) -> None:
    assert list(got.shape) == want["shape"], where
    flat = got.double().flatten()
    scale = max(float(flat.abs().max()), 1e-12)
    np.testing.assert_allclose(float(flat.sum()), want["sum"], rtol=rtol, atol=rtol * scale * flat.numel() ** 0.5, err_msg=where)
    np.testing.assert_allclose(float(flat.abs().sum()), want["abs_sum"], rtol=rtol, err_msg=where)
    np.testing.assert_allclose(flat[:8].numpy(), want["first8"], rtol=rtol, atol=rtol * scale, err_msg=where)
    sampled = flat[::997][: len(want["sample_every_997"])].numpy()
    np.testing.assert_allclose(sampled, want["sample_every_997"], rtol=rtol, atol=rtol * scale, err_msg=where)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_key_shape_and_dtype_equals_torchvisions(arch):
    reference = _reference(arch)
    with torch.device("meta"):
        state = ARCHS[arch].build().state_dict()
    ours = {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in state.items()}
    assert list(ours) == list(reference["keys"])  # same keys, same order
    assert ours == reference["keys"]


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_stage_outputs_equal_torchvisions_under_formula_weights(arch):
    reference = _reference(arch)
    network = _formula_network(arch)
    captured = {}
    modules = dict(network.named_modules())
    hooks = [modules[name].register_forward_hook(lambda m, i, out, name=name: captured.__setitem__(name, out))
             for name in reference["stages"]]
    x = _fixed_input()
    with torch.no_grad():
        network(x)
    for hook in hooks:
        hook.remove()
    for name, want in reference["stages"].items():
        _assert_matches(captured[name], want, f"{arch} {name}")

    # The extractor the models use: BatchNorm folded, channels-last, one image per pass, normalising
    # its input itself (so it gets the input that normalises to the reference's).
    stages = STAGE_OF[arch]
    extractor = FeatureExtractor(sorted(stages.values()), network, micro_batch=1, arch=arch)
    norm = ImageNetNorm()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (norm.mean, norm.std))
    levels = dict(zip(extractor.stages, extractor(x * std + mean)))
    for name, stage in stages.items():
        _assert_matches(levels[stage], reference["stages"][name], f"{arch} extractor stage {stage}", rtol=1e-4)
    assert extractor.channels == [reference["stages"][n]["shape"][1] for n, _ in sorted(stages.items(), key=lambda t: t[1])]


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_saved_extractor_weights_rebuild_the_same_architecture(arch):
    network = _formula_network(arch)
    stages = sorted(STAGE_OF[arch].values())[:2]
    extractor = FeatureExtractor(stages, network, arch=arch)
    state = extractor.weights_state()
    assert set(state) <= set(network.state_dict())  # torchvision's names, truncated
    assert arch_of_state(state) == arch
    rebuilt = FeatureExtractor.from_weights_state(stages, state)
    x = torch.rand(1, 3, 64, 64)
    for a, b in zip(extractor(x), rebuilt(x)):
        assert torch.equal(a, b)
