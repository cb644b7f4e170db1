"""Spectral helpers for symmetric positive semi-definite matrices (AGOP, NFM)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Spectrum", "effective_rank", "eigenvalues", "psd_power"]


@dataclass(frozen=True)
class Spectrum:
    """One symmetric eigendecomposition of a PSD matrix, reused for its powers, eigenvalues and effective rank.

    Eigenvalues are clamped at 0: round-off makes some slightly negative.
    """

    values: Tensor  # (d,), ascending
    vectors: Tensor  # (d, d), columns

    @classmethod
    def of(cls, matrix: Tensor) -> Spectrum:
        values, vectors = torch.linalg.eigh(matrix)
        return cls(values.clamp_min(0), vectors)

    def power(self, alpha: float) -> Tensor:
        """``M^alpha``."""
        return (self.vectors * self.values**alpha) @ self.vectors.T

    def descending(self) -> Tensor:
        """The eigenvalues, largest first."""
        return self.values.flip(0)

    def effective_rank(self) -> Tensor:
        r"""Entropy effective rank (Roy and Vetterli, 2007): ``exp(H(p))`` with ``p = lambda / sum(lambda)``.

        .. math:: \mathrm{erank}(M) = \exp\Big(-\sum_i p_i \log p_i\Big), \qquad p_i = \lambda_i / \sum_j \lambda_j

        Between 1 (one direction) and the dimension (isotropic); 0 for the zero matrix.
        """
        total = self.values.sum()
        if total <= 0:
            return total.new_zeros(())
        p = self.values / total
        return torch.exp(-torch.special.xlogy(p, p).sum())


def psd_power(matrix: Tensor, alpha: float) -> Tensor:
    """``M^alpha`` through a symmetric eigendecomposition, eigenvalues clamped at 0."""
    return matrix if alpha == 1 else Spectrum.of(matrix).power(alpha)


def eigenvalues(matrix: Tensor) -> Tensor:
    """Eigenvalues of a symmetric matrix in descending order, clamped at 0."""
    return torch.linalg.eigvalsh(matrix).flip(0).clamp_min(0)


def effective_rank(matrix: Tensor) -> Tensor:
    """Entropy effective rank of a PSD matrix (see ``Spectrum.effective_rank``)."""
    return Spectrum(torch.linalg.eigvalsh(matrix).clamp_min(0), torch.empty(0)).effective_rank()
