"""Patch AGOP of convolutions against a brute-force reference built with ``unfold``."""

import pytest
import torch
from torch import nn

from agoplight.features import agop, find_layers, nfm_of
from tests.reference import brute_force_agop

DTYPE = torch.float64


class SmallConvNet(nn.Module):
    def __init__(self, conv: nn.Module, channels: int, spatial: int) -> None:
        super().__init__()
        self.conv = conv
        self.head = nn.LazyLinear(3)
        self.spatial = spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x)).flatten(1))


@pytest.mark.parametrize(
    "conv, shape",
    [
        (nn.Conv2d(2, 4, 3), (2, 6, 6)),
        (nn.Conv2d(2, 4, 3, stride=2, padding=1), (2, 7, 7)),
        (nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)), (3, 7, 6)),
        (nn.Conv2d(2, 3, 1, bias=False), (2, 4, 4)),
        (nn.Conv1d(2, 4, 3, stride=2, padding=1), (2, 9)),
    ],
    ids=["plain", "stride2-padding", "rectangular-dilated", "pointwise", "conv1d"],
)
def test_patch_agop_matches_unfold_brute_force(conv, shape):
    net = SmallConvNet(conv, shape[0], shape[-1]).to(DTYPE)
    x = torch.randn(6, *shape, dtype=DTYPE)
    net(x)  # materialise the lazy head

    measured = agop(net, x, ["conv"])["conv"]
    expected = brute_force_agop(net, x, net.conv)
    patch = conv.weight[0].numel()
    assert measured.shape == (patch, patch)
    torch.testing.assert_close(measured, expected, rtol=1e-10, atol=1e-12)

    sketch = agop(
        net,
        x,
        ["conv"],
        estimator="sketch",
        num_projections=2048,
        chunk_size=512,
        generator=torch.Generator().manual_seed(0),
    )["conv"]
    assert ((sketch - expected).norm() / expected.norm()).item() < 0.1


class GroupsAsConvs(nn.Module):
    """The same network with its grouped convolution written as one ordinary convolution per group."""

    def __init__(self, net: SmallConvNet) -> None:
        super().__init__()
        conv = net.conv
        self.groups, self.head = conv.groups, net.head
        c_in, c_out = conv.in_channels // conv.groups, conv.out_channels // conv.groups
        self.parts = nn.ModuleList(
            nn.Conv2d(c_in, c_out, conv.kernel_size, padding=conv.padding) for _ in range(self.groups)
        )
        with torch.no_grad():
            for g, part in enumerate(self.parts):
                part.weight.copy_(conv.weight[g * c_out : (g + 1) * c_out])
                part.bias.copy_(conv.bias[g * c_out : (g + 1) * c_out])
        self.to(DTYPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = x.chunk(self.groups, dim=1)
        z = torch.cat([part(chunk) for part, chunk in zip(self.parts, chunks, strict=True)], dim=1)
        return self.head(torch.tanh(z).flatten(1))


def test_grouped_convolution_is_measured_per_group():
    net = SmallConvNet(nn.Conv2d(4, 6, 3, padding=1, groups=2), 4, 5).to(DTYPE)
    x = torch.randn(5, 4, 5, 5, dtype=DTYPE)
    net(x)
    split = GroupsAsConvs(net)
    torch.testing.assert_close(split(x), net(x))

    measured = agop(net, x, ["conv"])
    assert list(measured) == ["conv.group0", "conv.group1"]
    for g, view in enumerate(find_layers(net, ["conv"])[0].views()):
        part = split.parts[g].weight.reshape(3, -1)
        torch.testing.assert_close(nfm_of(view), part.T @ part)
        expected = brute_force_agop(split, x, split.parts[g])
        torch.testing.assert_close(measured[f"conv.group{g}"], expected, rtol=1e-10, atol=1e-12)


def test_batchnorm_running_statistics_unchanged_by_a_measurement():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    net.train()
    x = torch.randn(8, 1, 8, 8)
    net(x)  # some running statistics to protect
    state = {key: value.clone() for key, value in net[1].state_dict().items()}

    agop(net, x)

    for key, value in net[1].state_dict().items():
        assert torch.equal(value, state[key]), key
    assert net.training
