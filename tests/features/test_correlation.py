import re

import numpy as np
import pytest
import torch

from agoplight import ConfigurationError
from agoplight.features import Spectrum, cosine, effective_rank, gram, nfa_correlations, nfm, pearson, psd_power


def random_psd(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T


def test_pearson_and_cosine_match_numpy():
    a, b = random_psd(6, 0), random_psd(6, 1)
    assert pearson(a, b).item() == pytest.approx(np.corrcoef(a.numpy().ravel(), b.numpy().ravel())[0, 1], abs=1e-10)
    expected = np.dot(a.numpy().ravel(), b.numpy().ravel()) / (np.linalg.norm(a.numpy()) * np.linalg.norm(b.numpy()))
    assert cosine(a, b).item() == pytest.approx(expected, abs=1e-10)


def test_psd_power_matches_numpy_and_clamps_negative_eigenvalues():
    m = random_psd(5, 2)
    values, vectors = np.linalg.eigh(m.numpy())
    expected = vectors @ np.diag(np.sqrt(values)) @ vectors.T
    np.testing.assert_allclose(psd_power(m, 0.5).numpy(), expected, atol=1e-10)
    torch.testing.assert_close(psd_power(m, 0.5) @ psd_power(m, 0.5), m)

    almost = torch.diag(torch.tensor([4.0, 1.0, -1e-9], dtype=torch.float64))  # round-off below zero
    torch.testing.assert_close(psd_power(almost, 0.5), torch.diag(torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64)))


def test_spectrum_of_a_non_finite_matrix_is_nan():
    matrix = torch.eye(3)
    matrix[0, 1] = float("inf")
    spectrum = Spectrum.of(matrix)
    assert spectrum.values.isnan().all() and spectrum.power(0.5).isnan().all()
    assert spectrum.effective_rank().isnan() and effective_rank(matrix).isnan()


def test_effective_rank():
    assert effective_rank(torch.eye(7, dtype=torch.float64)).item() == pytest.approx(7.0)
    v = torch.randn(7, 1, dtype=torch.float64)
    assert effective_rank(v @ v.T).item() == pytest.approx(1.0, abs=1e-6)
    p = np.array([3.0, 1.0]) / 4
    expected = np.exp(-(p * np.log(p)).sum())
    assert effective_rank(torch.diag(torch.tensor([3.0, 1.0]))).item() == pytest.approx(expected, rel=1e-6)


def test_nfm_orientation_and_delta():
    w = torch.randn(3, 5, dtype=torch.float64)  # (out, in)
    w0 = torch.randn(3, 5, dtype=torch.float64)
    assert nfm(w).shape == (5, 5)
    torch.testing.assert_close(nfm(w), w.T @ w)
    torch.testing.assert_close(nfm(w, w0), (w - w0).T @ (w - w0))


def test_nfa_correlations_of_a_matrix_with_its_own_square():
    m = random_psd(4, 3)
    scores = nfa_correlations(m, m @ m)
    assert set(scores) == {"pearson_sqrt", "cosine_sqrt", "pearson", "cosine"}
    assert scores["pearson_sqrt"].item() == pytest.approx(1.0, abs=1e-8)
    assert scores["cosine_sqrt"].item() == pytest.approx(1.0, abs=1e-8)
    assert scores["pearson"].item() < 1.0


@pytest.mark.parametrize("shape", [(4,), (2, 3, 3, 3)])
def test_nfm_of_something_that_is_no_weight_matrix_is_an_error(shape):
    with pytest.raises(ConfigurationError, match=rf"shaped \(out, in\), got a tensor of shape {re.escape(str(shape))}"):
        nfm(torch.zeros(shape))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"same shape, got \(2, 2\) and \(3, 3\)"):
        pearson(torch.eye(2), torch.eye(3))


@pytest.mark.parametrize("d", [3, 255, 256, 301, 1024])
def test_gram_matches_the_plain_product(d):
    rows = torch.randn(50, d, dtype=torch.float64)
    torch.testing.assert_close(gram(rows), rows.T @ rows)
