"""Spectral helpers for symmetric positive semi-definite matrices (AGOP, NFM)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Spectrum", "all_finite", "effective_rank", "eigenvalues", "gram", "psd_power"]


@dataclass(frozen=True)
class Spectrum:
    """One symmetric eigendecomposition of a PSD matrix, reused for its powers, eigenvalues and effective rank.

    Eigenvalues are clamped at 0: round-off makes some slightly negative. A matrix with NaN or infinite entries
    (a diverged model) has NaN eigenvalues and vectors, so that everything drawn from it is NaN, not an error.
    """

    values: Tensor  # (d,), ascending
    vectors: Tensor  # (d, d), columns

    @classmethod
    def of(cls, matrix: Tensor) -> Spectrum:
        if not all_finite(matrix):
            return cls(matrix.new_full(matrix.shape[:1], float("nan")), torch.full_like(matrix, float("nan")))
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
        if not total > 0:  # the zero matrix, or NaN
            return total if total.isnan() else total.new_zeros(())
        p = self.values / total
        return torch.exp(-torch.special.xlogy(p, p).sum())


def all_finite(*matrices: Tensor) -> bool:
    """Whether every entry of every matrix is a finite number (a diverged model's are not)."""
    return all(bool(torch.isfinite(matrix).all()) for matrix in matrices)


def psd_power(matrix: Tensor, alpha: float) -> Tensor:
    """``M^alpha`` through a symmetric eigendecomposition, eigenvalues clamped at 0."""
    return matrix if alpha == 1 else Spectrum.of(matrix).power(alpha)


def eigenvalues(matrix: Tensor) -> Tensor:
    """Eigenvalues of a symmetric matrix in descending order, clamped at 0 (NaN for a non-finite matrix)."""
    if not all_finite(matrix):
        return matrix.new_full(matrix.shape[:1], float("nan"))
    return torch.linalg.eigvalsh(matrix).flip(0).clamp_min(0)


def effective_rank(matrix: Tensor) -> Tensor:
    """Entropy effective rank of a PSD matrix (see ``Spectrum.effective_rank``)."""
    return Spectrum(eigenvalues(matrix).flip(0), torch.empty(0)).effective_rank()


def gram(rows: Tensor, blocks: int = 4) -> Tensor:
    """``rows^T rows`` for ``rows`` of shape ``(m, d)``, each block of the upper triangle computed once and mirrored.

    With 4 column blocks that is 10 of 16 block products: 25-40% less time than ``rows.T @ rows`` on a CPU for
    ``d`` from 256 up (narrower matrices gain nothing and take the plain product). The outer products of the AGOP's
    gradient rows are this.
    """
    d = rows.shape[1]
    if d < 256:
        return rows.T @ rows
    step = -(-d // blocks)
    out = rows.new_empty(d, d)
    for start in range(0, d, step):
        stop = min(start + step, d)
        upper = rows[:, start:stop].T @ rows[:, start:]  # (stop - start, d - start)
        out[start:stop, start:] = upper
        out[stop:, start:stop] = upper[:, stop - start :].T
    return out
