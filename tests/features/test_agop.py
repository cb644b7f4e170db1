import dataclasses

import pytest
import torch
from torch import nn

from agoplight import ConfigurationError
from agoplight.features import agop, find_layers, find_views
from agoplight.features.agop import input_space
from tests.reference import brute_force_agop

DTYPE = torch.float64


def mlp(widths=(5, 7, 6, 4), act=nn.Tanh) -> nn.Sequential:
    layers = []
    for d_in, d_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(d_in, d_out), act()]
    return nn.Sequential(*layers[:-1]).to(DTYPE)


class TokenModel(nn.Module):
    """A per-token linear layer (positions add up) followed by a layer that mixes the tokens."""

    def __init__(self, tokens: int = 3, d: int = 4, e: int = 5, c: int = 3) -> None:
        super().__init__()
        self.proj = nn.Linear(d, e)
        self.head = nn.Linear(tokens * e, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.proj(x)).flatten(1))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_exact_matches_brute_force_for_every_linear_layer():
    net = mlp()
    x = torch.randn(16, 5, dtype=DTYPE)
    measured = agop(net, x)

    assert list(measured) == ["0", "2", "4"]
    for name in measured:
        expected = brute_force_agop(net, x, net[int(name)])
        torch.testing.assert_close(measured[name], expected, rtol=1e-10, atol=1e-12)


def test_exact_sums_over_token_positions():
    model = TokenModel().to(DTYPE)
    x = torch.randn(8, 3, 4, dtype=DTYPE)
    measured = agop(model, x, ["proj"])["proj"]
    torch.testing.assert_close(measured, brute_force_agop(model, x, model.proj), rtol=1e-10, atol=1e-12)


def test_in_place_activations_do_not_change_the_result():
    net = nn.Sequential(nn.Linear(5, 9), nn.ReLU(inplace=True), nn.Linear(9, 4), nn.ReLU(inplace=True), nn.Linear(4, 3))
    net = net.to(DTYPE)
    x = torch.randn(12, 5, dtype=DTYPE)
    measured = agop(net, x)
    for name in measured:
        expected = brute_force_agop(net, x, net[int(name)])
        torch.testing.assert_close(measured[name], expected, rtol=1e-10, atol=1e-12)


def test_input_space_accumulation_for_wide_outputs():
    net = mlp(widths=(3, 40, 2))
    view = find_layers(net, ["0"])[0].views()[0]
    assert input_space(view)  # 40 outputs, 3 inputs: accumulate 3x3 rather than 40x40

    x = torch.randn(10, 3, dtype=DTYPE)
    torch.testing.assert_close(agop(net, x, ["0"])["0"], brute_force_agop(net, x, net[0]), rtol=1e-10, atol=1e-12)


def test_chunks_and_batches_do_not_change_the_result():
    net = mlp()
    x = torch.randn(12, 5, dtype=DTYPE)
    whole = agop(net, x)
    pieces = agop(net, [x[:5], x[5:]], chunk_size=1)
    for name in whole:
        torch.testing.assert_close(pieces[name], whole[name], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("k, tolerance", [(64, 0.35), (1024, 0.1)])
def test_sketch_is_close_to_brute_force(k, tolerance):
    """Stated accuracy of the sketch on 16 samples: relative Frobenius error < 0.35 at k=64, < 0.1 at k=1024."""
    net = mlp()
    x = torch.randn(16, 5, dtype=DTYPE)
    generator = torch.Generator().manual_seed(0)
    sketch = agop(net, x, estimator="sketch", num_projections=k, chunk_size=256, generator=generator)
    for name in sketch:
        assert relative_error(sketch[name], brute_force_agop(net, x, net[int(name)])) < tolerance


def test_sketch_is_unbiased():
    net = mlp()
    x = torch.randn(4, 5, dtype=DTYPE)
    expected = brute_force_agop(net, x, net[0])
    generator = torch.Generator().manual_seed(1)
    single = [agop(net, x, ["0"], estimator="sketch", num_projections=8, generator=generator)["0"] for _ in range(150)]
    mean = torch.stack(single).mean(0)
    # 150 sketches of k=8 average like one of k=1200: an unbiased mean is ~12x closer to the truth than a
    # typical single sketch; a biased one would stall at its bias.
    typical = sum(relative_error(s, expected) for s in single) / len(single)
    assert relative_error(mean, expected) < 0.05
    assert relative_error(mean, expected) < 0.25 * typical


def test_sketch_is_reproducible_with_a_generator():
    net = mlp()
    x = torch.randn(6, 5, dtype=DTYPE)
    first = agop(net, x, estimator="sketch", generator=torch.Generator().manual_seed(3))
    second = agop(net, x, estimator="sketch", generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_eval_mode_during_measurement_and_modes_restored():
    net = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Tanh(), nn.Linear(8, 3)).to(DTYPE)
    net.train()
    net[2].eval()  # a user's partly frozen model: each module's own mode must come back
    x = torch.randn(10, 5, dtype=DTYPE)
    running_mean = net[1].running_mean.clone()

    measured = agop(net, x, ["0"])["0"]

    assert net.training and net[1].training and not net[2].training
    assert torch.equal(net[1].running_mean, running_mean)
    net.eval()
    torch.testing.assert_close(measured, brute_force_agop(net, x, net[0]), rtol=1e-10, atol=1e-12)


def test_grads_untouched():
    net = mlp()
    x = torch.randn(6, 5, dtype=DTYPE)
    net[0].weight.grad = torch.full_like(net[0].weight, 7.0)
    agop(net, x)
    assert torch.equal(net[0].weight.grad, torch.full_like(net[0].weight, 7.0))
    assert all(p.grad is None for name, p in net.named_parameters() if name != "0.weight")


def test_under_inference_mode_and_frozen_weights():
    net = mlp()
    for p in net.parameters():
        p.requires_grad_(False)
    with torch.inference_mode():
        x = torch.randn(6, 5, dtype=DTYPE)  # an inference tensor, as validation batches are
        measured = agop(net, x)
    for p in net.parameters():
        p.requires_grad_(True)
    for name in measured:
        expected = brute_force_agop(net, x.clone(), net[int(name)])
        torch.testing.assert_close(measured[name], expected, rtol=1e-10, atol=1e-12)
    assert not any(p.requires_grad is False for p in net.parameters())


def test_unknown_layer_lists_the_layers_that_exist():
    with pytest.raises(ConfigurationError, match=r"Layer `fc1` matches no measurable layer.*0, 2, 4"):
        agop(mlp(), torch.randn(2, 5, dtype=DTYPE), ["fc1"])


def test_a_module_that_is_no_layer_is_named_by_its_type():
    with pytest.raises(ConfigurationError, match=r"Layer `1` .*\(it is a `Tanh`, which has no weight to measure\)"):
        agop(mlp(), torch.randn(2, 5, dtype=DTYPE), ["1"])


@pytest.mark.parametrize("split", [{"a": 3}, {"a": 0}, {"a": 1, "b": 1, "c": 1}])
def test_split_into_unequal_parts_is_refused(split):
    with pytest.raises(ConfigurationError, match="does not cut its 4 output channels into equal parts"):
        find_views(mlp(), ["4"], {"4": split})


def test_batches_the_model_cannot_take_and_losses_ask_for_a_forward_fn():
    @dataclasses.dataclass
    class Batch:
        inputs: torch.Tensor

    net, x = mlp(), torch.randn(2, 5, dtype=DTYPE)
    with pytest.raises(ConfigurationError, match=r"batch of type `Batch` failed .* Pass `forward_fn="):
        agop(net, [Batch(x)])
    assert agop(net, [Batch(x)], forward_fn=lambda model, batch: model(batch.inputs))["0"].shape == (5, 5)
    with pytest.raises(ConfigurationError, match=r"returned a single number \(a loss\?\)"):
        agop(net, x, forward_fn=lambda model, batch: model(batch).sum())


def test_patterns_select_layers():
    assert [layer.name for layer in find_layers(mlp(), ["[02]"])] == ["0", "2"]


def test_bad_estimator_and_empty_input():
    with pytest.raises(ConfigurationError, match="`estimator` must be 'exact' or 'sketch', got 'fast'"):
        agop(mlp(), torch.randn(2, 5, dtype=DTYPE), estimator="fast")
    with pytest.raises(ConfigurationError, match="`batches` is empty"):
        agop(mlp(), [])
