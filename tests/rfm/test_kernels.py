import pytest
import torch

from agoplight import ConfigurationError
from agoplight.rfm.kernels import make_kernel, squared_distances
from tests.rfm.reference import jacobians, kernel_matrix, random_metric

KERNELS = ["laplace", "gaussian", "product_laplace"]


@pytest.mark.parametrize("diag", [False, True])
@pytest.mark.parametrize("name", KERNELS)
def test_kernel_matrix_matches_the_definition(name, diag):
    x, z = torch.randn(6, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    M = random_metric(4, diag)
    kernel = make_kernel(name, bandwidth=1.7)
    torch.testing.assert_close(kernel(x, z, M), kernel_matrix(name, x, z, M, 1.7))


@pytest.mark.parametrize("diag", [False, True])
@pytest.mark.parametrize("name", KERNELS)
def test_jacobian_matches_autograd_away_from_the_centers(name, diag):
    centers, points = torch.randn(7, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    coefficients = torch.randn(7, 2, dtype=torch.float64)
    M = random_metric(3, diag, seed=1)
    kernel = make_kernel(name, bandwidth=1.3)
    expected = jacobians(name, points, centers, coefficients, M, 1.3, skip_self=False)
    torch.testing.assert_close(kernel.jacobian(points, centers, coefficients, M), expected)


@pytest.mark.parametrize("name", KERNELS)
def test_jacobian_at_the_centers_leaves_the_self_pair_out(name):
    # Laplace's gradient does not exist at its own center (a cusp): the closed form drops that term, and so must
    # the reference; the Gaussian's self term has zero gradient, so dropping it changes nothing.
    centers = torch.randn(6, 3, dtype=torch.float64)
    coefficients = torch.randn(6, 2, dtype=torch.float64)
    M = random_metric(3, diag=False, seed=2)
    kernel = make_kernel(name, bandwidth=2.0)
    jac = kernel.jacobian(centers, centers, coefficients, M)
    assert torch.isfinite(jac).all()
    expected = jacobians(name, centers, centers, coefficients, M, 2.0, skip_self=True)
    torch.testing.assert_close(jac, expected)


def test_self_pairs_are_exactly_zero_in_float32():
    # x^T M x + z^T M z - 2 x^T M z leaves round-off of the size of |x|^2 for a point against itself
    x = 30 * torch.randn(50, 8)
    sq, same = squared_distances(x, x, torch.eye(8), mark_same=True)
    assert torch.equal(same, torch.eye(50, dtype=torch.bool))
    assert torch.equal(sq.diagonal(), torch.zeros(50)) and (sq >= 0).all()
    raw, _ = squared_distances(x, x, torch.eye(8))
    assert (raw.diagonal() >= 0).all()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: make_kernel("rbf", 1.0), "`kernel` must be one of"),
        (lambda: make_kernel("laplace", 0.0), "`bandwidth` must be a positive number, got 0.0"),
        (lambda: make_kernel("gaussian", float("nan")), "`bandwidth` must be a positive number, got nan"),
    ],
)
def test_bad_kernel_settings(make, message):
    with pytest.raises(ConfigurationError, match=message):
        make()
