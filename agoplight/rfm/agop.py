r"""The AGOP of a kernel machine in closed form, and the metric ``M`` the RFM takes from it.

.. math::
    \mathrm{AGOP}(f) = \frac{1}{m} \sum_{j=1}^{m} J(x_j)^\top J(x_j), \qquad J(x) = \partial f(x) / \partial x \in
    \mathbb{R}^{c \times d}

summed over the ``c`` outputs, with ``J`` from the kernel's closed form (``Kernel.jacobian``). Centred, each output's
mean gradient over the points is removed first: ``mean_j (J_j - Jbar)^T (J_j - Jbar)``, the covariance of the
gradients. For a diagonal metric only the diagonal is computed. The points ``x_j`` are the training inputs or a
sample of them; the sums run in float64 by default, where the cancellations of the centred form and of the
distance expansion stay harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import Tensor

from agoplight.errors import ConfigurationError
from agoplight.features import psd_power
from agoplight.rfm.kernels import Kernel

__all__ = ["NORMALIZATIONS", "agop_from_jacobians", "kernel_agop", "next_metric"]

log = logging.getLogger(__name__)

NORMALIZATIONS = ("max", "trace", "none")

# Elements of one ``(points, centers)`` block of the Jacobian computation (several such blocks are alive at once).
ROW_ELEMENTS = 2**22


def kernel_agop(
    kernel: Kernel,
    points: Tensor,
    centers: Tensor,
    coefficients: Tensor,
    M: Tensor,
    centering: bool = False,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """The AGOP of ``f(x) = k_M(x, centers) @ coefficients`` over ``points``.

    Args:
        kernel: the machine's kernel.
        points: where the gradients are taken, ``(m, d)``: the training inputs or a sample of them.
        centers: the machine's centers, ``(n, d)``.
        coefficients: its coefficients, ``(n, c)``.
        M: its metric, ``(d, d)``, or ``(d,)`` for a diagonal one; a diagonal ``M`` gives the AGOP's diagonal.
        centering: remove each output's mean gradient (the covariance of the gradients rather than their second
            moment).
        dtype: precision of the computation (the result has this dtype).

    Returns:
        ``(d, d)``, or ``(d,)`` for a diagonal ``M``.

    Example::

        >>> kernel = LaplaceKernel(bandwidth=10.0)
        >>> x = torch.randn(50, 3, dtype=torch.float64)
        >>> kernel_agop(kernel, x, x, torch.randn(50, 1, dtype=torch.float64), torch.eye(3)).shape
        torch.Size([3, 3])
    """
    points, centers, coefficients, M = (t.to(dtype) for t in (points, centers, coefficients, M))
    batches = points.split(max(1, ROW_ELEMENTS // centers.shape[0]))
    jacobians = (kernel.jacobian(batch, centers, coefficients, M) for batch in batches)
    return agop_from_jacobians(jacobians, diag=M.dim() == 1, centering=centering)


def agop_from_jacobians(jacobians: Iterable[Tensor], diag: bool = False, centering: bool = False) -> Tensor:
    """``mean_j J_j^T J_j`` over batches of Jacobians ``(b, c, d)``, summed in float64.

    Args:
        jacobians: the batches, e.g. a generator, so that only one is in memory at a time.
        diag: return the diagonal ``(d,)`` only.
        centering: remove each output's mean gradient first.
    """
    total, first, m = None, None, 0
    for jac in jacobians:
        jac = jac.double()  # (b, c, d)
        if total is None:
            d = jac.shape[2]
            total = jac.new_zeros(d if diag else (d, d))
            first = jac.new_zeros(jac.shape[1:])  # sum of the Jacobians, (c, d)
        if diag:
            total += jac.square().sum((0, 1))
        else:
            rows = jac.reshape(-1, jac.shape[2])
            total.addmm_(rows.T, rows)
        first += jac.sum(0)
        m += jac.shape[0]
    if total is None:
        raise ValueError("The AGOP needs at least one point.")

    agop = total / m
    if centering:
        mean = first / m  # (c, d)
        agop -= mean.square().sum(0) if diag else mean.T @ mean
    return agop


def next_metric(agop: Tensor, power: float = 0.5, normalize: str = "max") -> Tensor:
    """The RFM's next ``M``: ``AGOP^power``, scaled.

    Args:
        agop: ``(d, d)``, or ``(d,)`` for a diagonal metric.
        power: 1 (the original RFM) or 1/2 (the square root, as the neural feature ansatz suggests); powers go
            through an eigendecomposition with eigenvalues clamped at 0.
        normalize: ``"max"`` divides by the largest entry, ``"trace"`` scales the trace to ``d`` (the identity's,
            so distances keep the scale the bandwidth was chosen for), ``"none"`` keeps the AGOP's own scale.

    Returns:
        ``M`` with the AGOP's shape and dtype. A zero AGOP (a constant predictor) gives the identity back, with a
        warning.
    """
    if not power > 0:
        raise ConfigurationError(f"`agop_power` must be positive (1 or 0.5 are usual), got {power!r}.")
    if normalize not in NORMALIZATIONS:
        raise ConfigurationError(f"`normalize` must be one of {NORMALIZATIONS}, got {normalize!r}.")

    diag = agop.dim() == 1
    M = agop.clamp_min(0) ** power if diag else psd_power(agop, power)
    diagonal = M if diag else M.diagonal()
    scale = {"max": M.max(), "trace": diagonal.sum() / M.shape[0], "none": M.new_ones(())}[normalize]
    if not (torch.isfinite(scale) and scale > 0 and diagonal.max() > 0):
        log.warning("The AGOP is zero (the fitted predictor is constant): M is reset to the identity.")
        return torch.ones_like(M) if diag else torch.eye(M.shape[0], dtype=M.dtype, device=M.device)
    return M / scale
