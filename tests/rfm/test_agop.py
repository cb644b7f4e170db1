import logging

import pytest
import torch

from agoplight.features import psd_power
from agoplight.rfm.agop import kernel_agop, next_metric
from agoplight.rfm.kernels import make_kernel
from tests.rfm import reference


@pytest.mark.parametrize("centering", [False, True])
@pytest.mark.parametrize("name", ["laplace", "gaussian", "product_laplace"])
def test_agop_at_the_training_points_matches_brute_force(name, centering):
    x = torch.randn(12, 4, dtype=torch.float64)
    coefficients = torch.randn(12, 3, dtype=torch.float64)
    M = reference.random_metric(4, diag=False, seed=3)
    kernel = make_kernel(name, bandwidth=1.5)

    jac = reference.jacobians(name, x, x, coefficients, M, 1.5, skip_self=True)
    expected = reference.agop(jac, centering)
    torch.testing.assert_close(kernel_agop(kernel, x, x, coefficients, M, centering=centering), expected)


def test_diagonal_metric_gives_the_diagonal_of_the_agop():
    x, points = torch.randn(15, 5, dtype=torch.float64), torch.randn(9, 5, dtype=torch.float64)
    coefficients = torch.randn(15, 2, dtype=torch.float64)
    m = reference.random_metric(5, diag=True)
    kernel = make_kernel("laplace", 2.0)
    diagonal = kernel_agop(kernel, points, x, coefficients, m, centering=True)
    full = kernel_agop(kernel, points, x, coefficients, torch.diag(m), centering=True)
    assert diagonal.shape == (5,)
    torch.testing.assert_close(diagonal, full.diagonal())


def test_float32_data_gets_a_float64_agop_without_self_pair_blowups():
    # far from the origin, a float32 distance expansion leaves ~1e-3 at a point against itself, and 1/r would blow
    # the Laplace gradient up; the AGOP is computed in float64 and the self pair is recognised
    x = (torch.randn(40, 6, dtype=torch.float64) + 20).float()
    coefficients = torch.randn(40, 1)
    kernel = make_kernel("laplace", 10.0)
    result = kernel_agop(kernel, x, x, coefficients, torch.eye(6))
    assert result.dtype == torch.float64

    x64, c64 = x.double(), coefficients.double()
    jac = reference.jacobians("laplace", x64, x64, c64, torch.eye(6, dtype=torch.float64), 10.0, skip_self=True)
    torch.testing.assert_close(result, reference.agop(jac, False))


def test_next_metric_powers_and_normalisations():
    a = torch.randn(6, 6, dtype=torch.float64)
    agop = a @ a.T
    root = next_metric(agop, power=0.5, normalize="none")
    torch.testing.assert_close(root @ root, agop)
    torch.testing.assert_close(next_metric(agop, 0.5, "max"), root / root.max())
    assert next_metric(agop, 1.0, "trace").trace().item() == pytest.approx(6.0)
    diagonal = next_metric(torch.tensor([4.0, 1.0, 0.0]), 0.5, "max")
    torch.testing.assert_close(diagonal, torch.tensor([1.0, 0.5, 0.0]))
    torch.testing.assert_close(next_metric(agop, 0.5, "none"), psd_power(agop, 0.5))


def test_zero_agop_resets_the_metric_to_the_identity(caplog):
    with caplog.at_level(logging.WARNING):
        M = next_metric(torch.zeros(3, 3), 0.5, "max")
    assert torch.equal(M, torch.eye(3))
    assert "AGOP is zero" in caplog.text
