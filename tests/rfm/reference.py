"""Brute-force references for the RFM tests: kernels entry by entry from their definitions, and predictor Jacobians
by ``torch.func.jacrev``, in float64."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import jacrev


def random_metric(d: int, diag: bool, seed: int = 0) -> Tensor:
    """A random positive definite ``(d, d)`` metric, or a positive diagonal ``(d,)``."""
    generator = torch.Generator().manual_seed(seed)
    if diag:
        return torch.rand(d, generator=generator, dtype=torch.float64) + 0.2
    a = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def full(M: Tensor) -> Tensor:
    return torch.diag(M) if M.dim() == 1 else M


def kernel_value(name: str, u: Tensor, M: Tensor, bandwidth: float) -> Tensor:
    """``k_M`` of one difference ``u = x - z`` from the kernel's definition."""
    M = full(M)
    if name == "laplace":
        return torch.exp(-torch.sqrt(u @ M @ u) / bandwidth)
    if name == "gaussian":
        return torch.exp(-(u @ M @ u) / (2 * bandwidth**2))
    values, vectors = torch.linalg.eigh(M)
    root = vectors @ torch.diag(values.sqrt()) @ vectors.T
    return torch.exp(-(root @ u).abs().sum() / bandwidth)


def kernel_matrix(name: str, x: Tensor, z: Tensor, M: Tensor, bandwidth: float) -> Tensor:
    return torch.stack([torch.stack([kernel_value(name, xj - zi, M, bandwidth) for zi in z]) for xj in x])


def jacobians(
    name: str, points: Tensor, centers: Tensor, coefficients: Tensor, M: Tensor, bandwidth: float, skip_self: bool
) -> Tensor:
    """``df/dx`` at each point, ``(m, c, d)``; with ``skip_self`` the center equal to the point is left out of
    ``f`` (point ``j`` is center ``j``), which is how the closed form treats the self pair."""

    def predictor(x: Tensor, leave_out: int | None) -> Tensor:
        terms = [
            coefficients[i] * kernel_value(name, x - centers[i], M, bandwidth)
            for i in range(centers.shape[0])
            if i != leave_out
        ]
        return torch.stack(terms).sum(0)  # (c,)

    return torch.stack([jacrev(predictor)(x, j if skip_self else None) for j, x in enumerate(points)])  # (m, c, d)


def agop(jac: Tensor, centering: bool) -> Tensor:
    """``mean_j J_j^T J_j`` summed over outputs, optionally of the centred Jacobians."""
    if centering:
        jac = jac - jac.mean(0, keepdim=True)
    return torch.einsum("mcd,mce->de", jac, jac) / jac.shape[0]
