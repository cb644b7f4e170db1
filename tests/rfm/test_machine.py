import logging

import pytest
import torch

from agoplight import ConfigurationError
from agoplight.rfm.machine import RecursiveFeatureMachine


def _low_rank(n: int, d: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return x, (x[:, 0] * x[:, 1])[:, None]


def test_iterations_learn_the_two_relevant_coordinates():
    x, y = _low_rank(400)
    x_test, y_test = _low_rank(500, seed=1)
    machine = RecursiveFeatureMachine(kernel="laplace", bandwidth=10.0, centering=True, agop_power=0.5)

    M, errors = machine.initial_metric(10), []
    for iteration in range(4):
        step = machine.iterate(x, y, M, iteration)
        predicted = machine.predict(x_test, x.double(), step.coefficients, M)
        errors.append(((predicted - y_test) ** 2).mean().item())
        M = step.next_M
    assert errors[-1] < 0.5 * errors[0]
    assert set(M.diagonal().argsort(descending=True)[:2].tolist()) == {0, 1}
    assert step.agop.dtype == torch.float64 and M.max().item() == pytest.approx(1.0)


def test_fitted_values_and_solvers_agree():
    x, y = _low_rank(300)
    direct_machine = RecursiveFeatureMachine(solver="cholesky", reg=1e-2, dtype="float64")
    direct = direct_machine.iterate(x, y, torch.eye(10), learn=False)
    iterative = RecursiveFeatureMachine(solver="pcg", reg=1e-2, dtype="float64", pcg_tol=1e-10, pcg_rank=100)
    step = iterative.iterate(x, y, torch.eye(10), learn=False)
    torch.testing.assert_close(step.coefficients, direct.coefficients, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(step.fitted, direct.fitted, rtol=1e-6, atol=1e-6)
    assert direct.agop is None and step.solve.iterations > 0


def test_agop_on_a_sample_of_the_training_points():
    x, y = _low_rank(300)
    machine = RecursiveFeatureMachine(agop_samples=100, seed=3)
    step = machine.iterate(x, y, torch.eye(10), iteration=2)
    again = RecursiveFeatureMachine(agop_samples=100, seed=3).iterate(x, y, torch.eye(10), iteration=2)
    everywhere = RecursiveFeatureMachine().iterate(x, y, torch.eye(10), iteration=2)
    torch.testing.assert_close(step.agop, again.agop)
    assert not torch.allclose(step.agop, everywhere.agop)
    assert torch.nn.functional.cosine_similarity(step.agop.flatten(), everywhere.agop.flatten(), dim=0) > 0.9


def test_diagonal_metric_and_auto_choices():
    x, y = _low_rank(200)
    machine = RecursiveFeatureMachine(diag=True)
    step = machine.iterate(x, y, machine.initial_metric(10))
    assert step.next_M.shape == (10,) and step.agop.shape == (10,)
    assert machine.solver_for(20_000) == "cholesky" and machine.solver_for(20_001) == "pcg"
    assert machine.dtype_for(100) == torch.float32


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"reg": -1.0}, "`reg` must be a number >= 0 .*got -1.0"),
        ({"agop_power": 2}, "`agop_power` must be 0.5 or 1, got 2"),
        ({"normalize": "l2"}, r"`normalize` must be one of \('max', 'trace', 'none'\), got 'l2'"),
        ({"solver": "eigenpro"}, "`solver` must be one of .*got 'eigenpro'"),
        ({"dtype": "float16"}, "`dtype` must be 'float32', 'float64' or None, got 'float16'"),
        ({"agop_samples": 0}, "`agop_samples` must be a positive integer or None, got 0"),
        ({"solver": "pcg", "reg": 0.0}, "`solver: pcg` needs a positive `reg`"),
        ({"kernel": "laplace", "bandwidth": -2}, "`bandwidth` must be a positive number, got -2"),
    ],
)
def test_bad_settings_fail_early(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        RecursiveFeatureMachine(**kwargs)


@pytest.mark.parametrize("name", ["laplace", "gaussian"])
def test_one_kernel_matrix_for_solve_and_agop_agrees_with_separate_computations(name):
    x, y = _low_rank(150)
    y = torch.cat([y, -2 * y + 1], 1)
    machine = RecursiveFeatureMachine(kernel=name, bandwidth=4.0, solver="cholesky", dtype="float64", centering=True)
    M = machine.initial_metric(10) + 0.1
    fused = machine.iterate(x, y, M)  # the solve's kernel matrix becomes the AGOP's weights

    expected = machine.solve(x.double(), y.double(), M.double())[0]
    torch.testing.assert_close(fused.coefficients, expected)
    from agoplight.rfm.agop import kernel_agop

    agop = kernel_agop(machine.kernel, x, x, expected, M, centering=True)
    torch.testing.assert_close(fused.agop, agop)


def test_a_failed_float32_factorisation_is_redone_in_float64(caplog):
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    y = x[:, :1].sin()
    machine = RecursiveFeatureMachine(kernel="gaussian", bandwidth=10.0, reg=1e-7)
    with caplog.at_level(logging.INFO, logger="agoplight.rfm.machine"):
        step = machine.iterate(x, y, torch.eye(2))
    assert step.coefficients.dtype == torch.float64 and "solving iteration 0 in float64" in caplog.text
    with pytest.raises(ConfigurationError, match="Raise `reg`"):
        RecursiveFeatureMachine(kernel="gaussian", bandwidth=10.0, reg=1e-7, dtype="float32").iterate(
            x, y, torch.eye(2)
        )
