import pytest
import torch

from agoplight import ConfigurationError
from agoplight.rfm.circulant import CirculantMonitor, circulant_deviation, circulant_projection, discrete_log_order


def _circulant(values: torch.Tensor) -> torch.Tensor:
    p = len(values)
    i = torch.arange(p)
    return values[(i[None, :] - i[:, None]) % p]


def test_projection_keeps_circulants_and_averages_wrapped_diagonals():
    c = _circulant(torch.randn(7, dtype=torch.float64))
    torch.testing.assert_close(circulant_projection(c), c)
    b = torch.randn(7, 7, dtype=torch.float64)
    projected = circulant_projection(b)
    torch.testing.assert_close(projected[0, 3], torch.stack([b[k, (k + 3) % 7] for k in range(7)]).mean())


def test_block_circulant_matrix_has_zero_deviation_and_noise_does_not():
    p = 11
    blocks = [_circulant(torch.randn(p, dtype=torch.float64)) for _ in range(3)]
    M = torch.cat([torch.cat([blocks[0], blocks[1]], 1), torch.cat([blocks[1].T, blocks[2]], 1)])
    scores = circulant_deviation(M, p)
    assert set(scores) == {"aa", "ab", "ba", "bb", "all"}
    assert max(scores.values()) < 1e-12

    noise = circulant_deviation(torch.randn(2 * p, 2 * p), p)
    assert all(0.8 < value <= 1.0 for value in noise.values())
    assert circulant_deviation(torch.ones(2 * p), p)["all"] == 0.0  # a diagonal M (the identity) is circulant


def test_discrete_log_order_makes_multiplicative_structure_circulant():
    p = 13
    order = discrete_log_order(p)
    assert sorted(order) == list(range(1, p)) and order[0] == 1 and order[1] == 2  # 2 generates (Z/13)^*
    log = {value: k for k, value in enumerate(order)}
    g = torch.randn(p - 1, dtype=torch.float64)
    block = torch.zeros(p, p, dtype=torch.float64)  # B[i, j] depends on log(j) - log(i); residue 0 unused
    for i in range(1, p):
        for j in range(1, p):
            block[i, j] = g[(log[j] - log[i]) % (p - 1)]
    M = torch.block_diag(block, block)
    assert circulant_deviation(M, p, order="log")["aa"] < 1e-12
    assert circulant_deviation(M, p, order="natural")["aa"] > 0.5


def test_bad_settings():
    with pytest.raises(ConfigurationError, match=r"Expected a \(14, 14\) matrix for p=7"):
        circulant_deviation(torch.eye(10), 7)
    with pytest.raises(ConfigurationError, match="needs a prime modulus, got p=12"):
        CirculantMonitor(p=12, order="log")
    with pytest.raises(ConfigurationError, match="`order` must be 'natural' or 'log'"):
        CirculantMonitor(p=7, order="fourier")
