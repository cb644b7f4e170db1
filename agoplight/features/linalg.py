"""Spectral helpers for symmetric positive semi-definite matrices (AGOP, NFM)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["effective_rank", "eigenvalues", "psd_power"]


def psd_power(matrix: Tensor, alpha: float) -> Tensor:
    """``M^alpha`` through a symmetric eigendecomposition, eigenvalues clamped at 0 (round-off makes some < 0)."""
    if alpha == 1:
        return matrix
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp_min(0) ** alpha) @ vectors.T


def eigenvalues(matrix: Tensor) -> Tensor:
    """Eigenvalues of a symmetric matrix in descending order, clamped at 0."""
    return torch.linalg.eigvalsh(matrix).flip(0).clamp_min(0)


def effective_rank(matrix: Tensor) -> Tensor:
    r"""Entropy effective rank (Roy and Vetterli, 2007): ``exp(H(p))`` with ``p = lambda / sum(lambda)``.

    .. math:: \mathrm{erank}(M) = \exp\Big(-\sum_i p_i \log p_i\Big), \qquad p_i = \lambda_i / \sum_j \lambda_j

    Between 1 (one direction) and the dimension (isotropic); 0 for the zero matrix.
    """
    values = eigenvalues(matrix)
    total = values.sum()
    if total <= 0:
        return total.new_zeros(())
    p = values / total
    return torch.exp(-torch.special.xlogy(p, p).sum())
