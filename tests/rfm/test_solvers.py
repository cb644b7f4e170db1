import pytest
import torch

from agoplight import ConfigurationError
from agoplight.rfm.kernels import make_kernel
from agoplight.rfm.solvers import NystromPreconditioner, kernel_matvec, solve_cholesky, solve_pcg


def _system(n: int = 300, d: int = 5, c: int = 2, dtype: torch.dtype = torch.float64):
    x = torch.randn(n, d, dtype=dtype)
    y = torch.randn(n, c, dtype=dtype)
    M = torch.eye(d, dtype=dtype)
    return make_kernel("laplace", 3.0), x, y, M


def test_cholesky_matches_torch_solve():
    kernel, x, y, M = _system()
    K = kernel(x, x, M)
    expected = torch.linalg.solve(K + 0.01 * torch.eye(300, dtype=K.dtype), y)
    torch.testing.assert_close(solve_cholesky(K.clone(), y, reg=0.01), expected)


def test_cholesky_failure_names_the_cure():
    x = torch.randn(20, 3, dtype=torch.float64).repeat(2, 1)  # every point twice: K is singular
    K = make_kernel("laplace", 1.0)(x, x, torch.eye(3, dtype=torch.float64))
    K -= 1e-3 * torch.eye(40, dtype=torch.float64)  # and a little indefinite, so no round-off rescues it
    with pytest.raises(ConfigurationError, match=r"reg`=0.*Raise `reg` \(try 1e-06\).*`solver: pcg`"):
        solve_cholesky(K, torch.randn(40, 1, dtype=torch.float64), reg=0)


@pytest.mark.parametrize("block_size", [64, 77, 1000])
def test_blockwise_product_equals_the_dense_one(block_size):
    kernel, x, y, M = _system(n=250)
    expected = kernel(x, x, M) @ y + 0.5 * y
    torch.testing.assert_close(kernel_matvec(kernel, x, M, y, reg=0.5, block_size=block_size), expected)


def test_nystrom_preconditioner_of_full_rank_inverts_the_system():
    kernel, x, y, M = _system(n=120)
    K = kernel(x, x, M)
    P_inv = NystromPreconditioner(kernel, x, M, reg=0.1, rank=120, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        P_inv(y), torch.linalg.solve(K + 0.1 * torch.eye(120, dtype=K.dtype), y) * (P_inv.eigenvalues.min() + 0.1)
    )


def test_pcg_matches_torch_solve_and_the_preconditioner_pays():
    kernel, x, y, M = _system()
    K = kernel(x, x, M)
    expected = torch.linalg.solve(K + 1e-2 * torch.eye(300, dtype=K.dtype), y)

    a, fitted, info = solve_pcg(kernel, x, y, M, reg=1e-2, tol=1e-10, max_iters=300, rank=100, block_size=128)
    torch.testing.assert_close(a, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fitted, K @ a)
    assert info.residual <= 1e-10

    # without the preconditioner, twice as many products are still short of the tolerance
    _, _, plain = solve_pcg(kernel, x, y, M, reg=1e-2, tol=1e-10, max_iters=2 * info.iterations, rank=0)
    assert plain.residual > 1e-10


def test_pcg_in_float32_stops_at_its_tolerance():
    kernel, x, y, M = _system(dtype=torch.float32)
    a, _, info = solve_pcg(kernel, x, y, M, reg=1e-2, tol=1e-4, max_iters=100, rank=50)
    K = kernel(x, x, M).double()
    residual = y.double() - (K + 1e-2 * torch.eye(300, dtype=torch.float64)) @ a.double()
    assert a.dtype == torch.float32 and 0 < info.iterations < 100
    assert (residual.norm(dim=0) / y.double().norm(dim=0)).max() < 2e-4


def test_pcg_handles_a_zero_target_column_and_needs_a_ridge():
    kernel, x, y, M = _system()
    y[:, 1] = 0
    a, _, _ = solve_pcg(kernel, x, y, M, reg=1e-2, tol=1e-6, rank=100)
    assert torch.isfinite(a).all() and torch.equal(a[:, 1], torch.zeros(300, dtype=a.dtype))
    with pytest.raises(ConfigurationError, match="needs a positive `reg`"):
        solve_pcg(kernel, x, y, M, reg=0.0)
