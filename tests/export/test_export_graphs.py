"""Pieces of the export graphs that replace a layer by the same maths in another form."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from rlad.workflows.export_graphs import PhaseTransposedConv, with_phase_transposed


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("height, width", [(5, 7), (8, 8), (1, 3)])
def test_phase_transposed_convolution_equals_the_transposed_one(bias, height, width):
    torch.manual_seed(0)
    conv = nn.ConvTranspose2d(3, 5, 4, 2, 1, bias=bias).double()
    x = torch.randn(2, 3, height, width, dtype=torch.float64)
    ours = PhaseTransposedConv(conv)(x)
    assert ours.shape == (2, 5, 2 * height, 2 * width)
    torch.testing.assert_close(ours, conv(x), rtol=0, atol=1e-12)


def test_only_matching_layers_are_replaced_and_the_network_is_left_alone():
    network = nn.Sequential(nn.ConvTranspose2d(2, 2, 4, 2, 1), nn.Sequential(nn.ConvTranspose2d(2, 3, 4, 2, 1)),
                            nn.ConvTranspose2d(3, 3, 3, 1, 1), nn.ConvTranspose2d(3, 3, 4, 2, 1, output_padding=1)).train()
    copy = with_phase_transposed(network)
    assert [type(m).__name__ for m in (copy[0], copy[1][0], copy[2], copy[3])] == [
        "PhaseTransposedConv", "PhaseTransposedConv", "ConvTranspose2d", "ConvTranspose2d"]
    assert all(isinstance(m, nn.ConvTranspose2d) for m in (network[0], network[1][0])) and network.training
    x = torch.randn(1, 2, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(copy(x), network.eval()(x), rtol=1e-5, atol=1e-5)


def test_a_following_batchnorm_and_leaky_relu_fold_into_the_replacement():
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(4, affine=True)
    norm.running_mean.normal_(0, 0.3), norm.running_var.uniform_(0.5, 2.0), norm.weight.data.normal_(1, 0.2), norm.bias.data.normal_(0, 0.2)
    network = nn.Sequential(nn.ConvTranspose2d(3, 4, 4, 2, 1, bias=False), norm, nn.LeakyReLU(0.2), nn.Conv2d(4, 2, 1)).double().eval()
    copy = with_phase_transposed(network)
    assert isinstance(copy[0], PhaseTransposedConv) and isinstance(copy[1], nn.Identity) and isinstance(copy[2], nn.Identity)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(copy(x), network(x), rtol=0, atol=1e-12)
