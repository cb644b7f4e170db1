r"""Solvers for the kernel machine's coefficients: ``(K + reg I) a = y``.

- ``solve_cholesky``: the direct solve of a kernel matrix held in memory (``n^2`` numbers).
- ``solve_pcg``: preconditioned conjugate gradients for training sets whose kernel matrix does not fit in memory.
  Kernel blocks are computed on the fly, ``block_size`` rows at a time, and each block of the symmetric matrix is
  computed once per product; the memory is ``O(block_size^2 + n * rank)``. The preconditioner is a Nyström
  approximation ``K ~ U diag(lambda) U^T`` of rank ``rank`` from a random sample of the training points (Frangella,
  Tropp and Udell, 2023):

  .. math:: P^{-1} = (\lambda_r + reg)\, U (\Lambda + reg I)^{-1} U^\top + (I - U U^\top)

  which makes the conditioning depend on the spectrum beyond the ``rank`` largest eigenvalues only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from agoplight.errors import ConfigurationError
from agoplight.rfm.kernels import Kernel

__all__ = ["CholeskyError", "NystromPreconditioner", "SolveInfo", "kernel_matvec", "solve_cholesky", "solve_pcg"]

log = logging.getLogger(__name__)


class CholeskyError(ConfigurationError):
    """The kernel matrix plus ridge is not positive definite at the working precision."""


@dataclass
class SolveInfo:
    """What a solve did: iterations (0 for a direct solve) and the final relative residual ``||r|| / ||y||``."""

    iterations: int = 0
    residual: float = 0.0


def solve_cholesky(K: Tensor, y: Tensor, reg: float) -> Tensor:
    """``(K + reg I)^{-1} y`` by a Cholesky factorisation.

    Args:
        K: the kernel matrix, ``(n, n)``; its diagonal is raised by ``reg`` for the factorisation and restored.
        y: targets, ``(n, c)``.
        reg: the ridge.

    Raises:
        CholeskyError: the factorisation failed; the message says what to change.
    """
    diagonal = K.diagonal().clone()
    K.diagonal().add_(reg)
    factor, info = torch.linalg.cholesky_ex(K)
    K.diagonal().copy_(diagonal)
    if info.item() != 0 or not torch.isfinite(factor.diagonal()).all():
        raise CholeskyError(
            f"The Cholesky factorisation of K + reg * I failed ({K.shape[0]} training points, `reg`={reg!r}, "
            f"{str(K.dtype).removeprefix('torch.')}): the kernel matrix is numerically singular, as happens with "
            f"duplicate training points, a small `reg` or a wide Gaussian bandwidth. Raise `reg` (try {_larger(reg)}), "
            "compute in float64 (`dtype: float64`), or use `solver: pcg`."
        )
    return torch.cholesky_solve(y.to(K.dtype), factor)


def kernel_matvec(kernel: Kernel, x: Tensor, M: Tensor, v: Tensor, reg: float = 0.0, block_size: int = 2048) -> Tensor:
    """``(K + reg I) v`` for ``K = k_M(x, x)`` without forming ``K``: each ``block_size`` square block of the upper
    triangle is computed once and used for both of its sides.

    Args:
        kernel: the kernel.
        x: the training inputs, ``(n, d)``.
        M: the metric.
        v: ``(n, c)``.
        reg: the ridge.
        block_size: rows of one kernel block; the memory of a product is ``block_size^2`` numbers.
    """
    out = v * reg
    starts = range(0, x.shape[0], block_size)
    for i in starts:
        rows = slice(i, i + block_size)
        for j in starts:
            if j < i:
                continue
            cols = slice(j, j + block_size)
            block = kernel(x[rows], x[cols], M)  # (b, b)
            out[rows] += block @ v[cols]
            if j > i:
                out[cols] += block.T @ v[rows]
    return out


class NystromPreconditioner:
    """``P^{-1}`` of a Nyström approximation of ``K`` from ``rank`` training points drawn with ``generator``.

    Args:
        kernel: the kernel.
        x: the training inputs, ``(n, d)``.
        M: the metric.
        reg: the ridge of the system the preconditioner is for.
        rank: number of sampled points (capped at ``n``).
        generator: draws the points.
        block_size: rows of ``K(x, sample)`` computed at a time.
    """

    def __init__(
        self,
        kernel: Kernel,
        x: Tensor,
        M: Tensor,
        reg: float,
        rank: int,
        generator: torch.Generator | None = None,
        block_size: int = 8192,
    ) -> None:
        n = x.shape[0]
        sample = torch.randperm(n, generator=generator)[: min(rank, n)].to(x.device)
        landmarks = x[sample]
        cross = torch.cat([kernel(part, landmarks, M) for part in x.split(block_size)])  # (n, r)

        # K ~ C W^-1 C^T with W = K(sample, sample) = C[sample]; W^-1/2 through its eigendecomposition
        values, vectors = torch.linalg.eigh(cross[sample].double())
        keep = values > values.max() * 1e-10
        inverse_root = vectors[:, keep] / values[keep].sqrt()  # (r, k)
        factor = cross @ inverse_root.to(cross.dtype)  # (n, k): K ~ factor factor^T
        del cross

        # factor = U diag(sqrt(lambda)) V^T from the small Gram matrix factor^T factor = V diag(lambda) V^T
        lam, right = torch.linalg.eigh((factor.T @ factor).double())
        keep = lam > lam.max() * 1e-10
        lam, right = lam[keep], right[:, keep]
        self.U = factor @ (right / lam.sqrt()).to(factor.dtype)  # (n, k), orthonormal columns
        self.eigenvalues = lam.to(factor.dtype)
        self.reg = reg

    def __call__(self, r: Tensor) -> Tensor:
        """``P^{-1} r`` for ``r`` ``(n, c)``."""
        floor = self.eigenvalues.min() + self.reg
        projected = self.U.T @ r  # (k, c)
        scale = (floor / (self.eigenvalues + self.reg) - 1.0)[:, None]
        return r + self.U @ (scale * projected)


def solve_pcg(
    kernel: Kernel,
    x: Tensor,
    y: Tensor,
    M: Tensor,
    reg: float,
    tol: float = 1e-4,
    max_iters: int = 100,
    rank: int = 1000,
    block_size: int = 2048,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor, SolveInfo]:
    """Conjugate gradients on ``(K + reg I) a = y`` with a Nyström preconditioner, ``K`` never held in memory.

    Each output column runs its own CG recursion; the kernel blocks are shared. Stops when every column's relative
    residual ``||y - (K + reg I) a|| / ||y||`` is below ``tol``, or after ``max_iters`` products (early stopping
    also regularises).

    Args:
        kernel: the kernel.
        x: the training inputs, ``(n, d)``.
        y: targets, ``(n, c)``.
        M: the metric.
        reg: the ridge; must be positive.
        tol: relative residual to reach.
        max_iters: most kernel products.
        rank: points of the Nyström preconditioner (0: none).
        block_size: rows of one kernel block.
        generator: draws the preconditioner's points.
        progress: show a progress bar of the kernel products with the residual (large solves take minutes).

    Returns:
        The coefficients ``(n, c)``, the fitted values ``K a`` at the training points (free by-product of the
        residual), and a ``SolveInfo``.
    """
    if not reg > 0:
        raise ConfigurationError(f"`solver: pcg` needs a positive `reg`, got {reg!r}.")
    y = y.to(x.dtype)
    precondition = NystromPreconditioner(kernel, x, M, reg, rank, generator) if rank > 0 else (lambda r: r)

    a = torch.zeros_like(y)
    residual = y.clone()
    y_norm = y.norm(dim=0).clamp_min(torch.finfo(y.dtype).tiny)
    z = precondition(residual)
    direction = z.clone()
    rz = (residual * z).sum(0)
    relative = residual.norm(dim=0) / y_norm
    iterations = 0
    bar = tqdm(total=max_iters, desc="pcg solve", unit="product", disable=not progress, leave=False)
    while iterations < max_iters and relative.max() > tol:
        product = kernel_matvec(kernel, x, M, direction, reg, block_size)  # (n, c)
        curvature = (direction * product).sum(0)
        alpha = torch.where(curvature > 0, rz / curvature, 0.0)  # a converged (or zero) column stays put
        a += alpha * direction
        residual -= alpha * product
        iterations += 1
        relative = residual.norm(dim=0) / y_norm
        log.debug("pcg iteration %d: relative residual %.3g", iterations, relative.max().item())
        bar.set_postfix(residual=f"{relative.max().item():.2e}", tol=f"{tol:g}")
        bar.update()

        z = precondition(residual)
        rz_next = (residual * z).sum(0)
        direction = z + torch.where(rz > 0, rz_next / rz, 0.0) * direction
        rz = rz_next

    bar.close()
    if relative.max() > tol:
        log.info("pcg stopped after %d iterations at relative residual %.3g (tol %g)", iterations, relative.max(), tol)
    fitted = y - residual - reg * a  # K a, since (K + reg I) a = y - residual
    return a, fitted, SolveInfo(iterations, relative.max().item())


def _larger(reg: float) -> str:
    return f"{max(reg * 100, 1e-6):g}"
