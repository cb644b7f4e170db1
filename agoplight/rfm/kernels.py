r"""Kernels with a learned metric ``M``, and the Jacobian of the kernel machine they define.

A kernel machine predicts ``f(x) = sum_i a_i k_M(x, x_i)`` with centers ``x_i`` (the training inputs) and
coefficients ``a_i`` (one row of ``c`` outputs per center). Three kernels:

.. math::
    \text{Laplace:}\quad k_M(x, z) = \exp(-\|x - z\|_M / L), \qquad \|u\|_M = \sqrt{u^\top M u}

    \text{Gaussian:}\quad k_M(x, z) = \exp(-\|x - z\|_M^2 / (2 L^2))

    \text{product Laplace:}\quad k_M(x, z) = \exp(-\|M^{1/2} (x - z)\|_1 / L)
        = \prod_j \exp(-|(M^{1/2} (x - z))_j| / L)

``M`` is a full ``(d, d)`` matrix or, for a diagonal metric, the vector ``(d,)`` of its diagonal.

The Laplace and Gaussian kernels are radial in ``||x - z||_M``, so ``grad_x k = -w(x, z) M (x - z)`` with a scalar
weight ``w``: ``k / (L r)`` for Laplace, ``k / L^2`` for Gaussian. Hence the Jacobian of the predictor, ``(c, d)``,

.. math:: J(x) = -\Big(\sum_i w(x, x_i)\, a_i (x - x_i)^\top\Big) M .

At ``x = x_i`` (a training point evaluated against itself) the Laplace kernel has a cusp: ``k / r`` diverges and the
gradient does not exist. That self pair is left out (``w = 0``), as the RFM literature does. A point against itself
is recognised as a pair whose squared distance is within round-off of 0 (``mark_same``), and gets exactly ``r = 0``
and ``k = 1``; ``w`` is then read off ``k`` alone, so one kernel matrix serves both the solve and the AGOP. The
AGOP's own computation (``agoplight.rfm.agop``) runs in float64, where that round-off is ~1e-16 of ``|x|^2``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from agoplight.errors import ConfigurationError
from agoplight.features import psd_power

__all__ = ["KERNELS", "GaussianKernel", "Kernel", "LaplaceKernel", "ProductLaplaceKernel", "make_kernel"]

# Elements of one intermediate block (``centers x outputs x features`` or ``points x centers x features``) in a
# Jacobian computation; bounds its memory to a few hundred MB in float64.
BLOCK_ELEMENTS = 2**24


class Kernel:
    """A kernel ``k_M(x, z)`` with bandwidth ``L``; subclasses define the matrix and the predictor's Jacobian.

    Args:
        bandwidth: ``L``, a positive number.
    """

    name = ""

    def __init__(self, bandwidth: float) -> None:
        if not (isinstance(bandwidth, (int, float)) and math.isfinite(bandwidth) and bandwidth > 0):
            raise ConfigurationError(f"`bandwidth` must be a positive number, got {bandwidth!r}.")
        self.bandwidth = float(bandwidth)

    def __call__(self, x: Tensor, z: Tensor, M: Tensor, mark_same: bool = False) -> Tensor:
        """The kernel matrix ``k_M(x_j, z_i)``, ``(m, n)``, for ``x`` ``(m, d)`` and ``z`` ``(n, d)``."""
        raise NotImplementedError

    def jacobian(self, x: Tensor, centers: Tensor, coefficients: Tensor, M: Tensor) -> Tensor:
        """The Jacobian ``df/dx`` of ``f = k_M(., centers) @ coefficients`` at each row of ``x``: ``(m, c, d)``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bandwidth={self.bandwidth})"


class RadialKernel(Kernel):
    """A function of the Mahalanobis distance ``||x - z||_M``: Laplace and Gaussian.

    Subclasses give the kernel from squared distances (``profile``) and the weight ``w`` of its gradient from the
    kernel values alone (``weight``), so that a kernel matrix computed for the solve also gives the AGOP.
    """

    def profile(self, sq: Tensor) -> Tensor:
        """``k`` from squared distances ``sq``, in place."""
        raise NotImplementedError

    def weight(self, k: Tensor) -> Tensor:
        """``w`` in ``grad_x k = -w M (x - z)`` from kernel values ``k``, in place; 0 for one point (``k == 1``)."""
        raise NotImplementedError

    def __call__(self, x: Tensor, z: Tensor, M: Tensor, mark_same: bool = False) -> Tensor:
        """The kernel matrix; with ``mark_same``, pairs that are one point up to round-off get exactly ``k = 1``."""
        sq, _ = squared_distances(x, z, M, mark_same)
        return self.profile(sq)

    def jacobian(self, x: Tensor, centers: Tensor, coefficients: Tensor, M: Tensor) -> Tensor:
        w = self.weight(self(x, centers, M, mark_same=True))  # (m, n)
        return self.jacobian_from_weights(w, x, centers, coefficients, M)

    def jacobian_from_weights(self, w: Tensor, x: Tensor, centers: Tensor, coefficients: Tensor, M: Tensor) -> Tensor:
        """``J(x_j) = -(sum_i w_ji a_i (x_j - x_i)^T) M``, ``(m, c, d)``, from the weights ``w`` (``(m, n)``)."""
        n, c = coefficients.shape
        d = x.shape[1]
        shift = centers.mean(0)  # J is translation invariant; centring keeps the two terms below from cancelling
        x, centers = x - shift, centers - shift

        grads = (w @ coefficients)[:, :, None] * x[:, None, :]  # (m, c, d): sum_i w_ji a_i x_j^T
        step = max(1, BLOCK_ELEMENTS // max(1, n * d))
        for start in range(0, c, step):  # minus sum_i w_ji a_i x_i^T, a few outputs at a time
            a = coefficients[:, start : start + step]  # (n, c_b)
            outer = (a[:, :, None] * centers[:, None, :]).reshape(n, -1)  # (n, c_b * d)
            grads[:, start : start + step] -= (w @ outer).reshape(-1, a.shape[1], d)
        return -apply_metric(grads, M)


class LaplaceKernel(RadialKernel):
    """``exp(-||x - z||_M / L)``: the RFM's default; its predictor is not differentiable at the centers."""

    name = "laplace"

    def profile(self, sq: Tensor) -> Tensor:
        return sq.sqrt_().mul_(-1.0 / self.bandwidth).exp_()

    def weight(self, k: Tensor) -> Tensor:
        # w = k / (L r) with r = -L log k; the self pair (k == 1, r == 0) is the cusp and is left out
        lr = k.log().mul_(-(self.bandwidth**2))  # L r
        return torch.where(k < 1, k / lr, 0.0)


class GaussianKernel(RadialKernel):
    """``exp(-||x - z||_M^2 / (2 L^2))``: smooth everywhere, so no pair needs special care."""

    name = "gaussian"

    def profile(self, sq: Tensor) -> Tensor:
        return sq.mul_(-0.5 / self.bandwidth**2).exp_()

    def weight(self, k: Tensor) -> Tensor:
        return k.div_(self.bandwidth**2)


class ProductLaplaceKernel(Kernel):
    """``exp(-||S (x - z)||_1 / L)`` with ``S = M^{1/2}``: a product of one-dimensional Laplace kernels along the
    directions of ``S``; with a diagonal ``M``, one factor per feature (the choice for one-hot categories).

    Its gradient is ``-(k / L) S sign(S (x - z))``; the self pair's ``sign(0) = 0`` leaves it out by itself.
    """

    name = "product_laplace"

    def __call__(self, x: Tensor, z: Tensor, M: Tensor, mark_same: bool = False) -> Tensor:
        root = _root(M)
        distances = torch.cdist(apply_metric(x, root), apply_metric(z, root), p=1)  # (m, n)
        return distances.mul_(-1.0 / self.bandwidth).exp_()

    def jacobian(self, x: Tensor, centers: Tensor, coefficients: Tensor, M: Tensor) -> Tensor:
        root = _root(M)
        u, v = apply_metric(x, root), apply_metric(centers, root)  # (m, d), (n, d)
        n, d = v.shape
        rows = max(1, BLOCK_ELEMENTS // (n * (d + coefficients.shape[1])))
        parts = []
        for ub in u.split(rows):
            k = torch.cdist(ub, v, p=1).mul_(-1.0 / self.bandwidth).exp_()  # (b, n)
            signs = torch.sign(ub[:, None, :] - v[None, :, :])  # (b, n, d)
            weighted = k[:, :, None] * coefficients[None, :, :]  # (b, n, c)
            parts.append(torch.bmm(weighted.transpose(1, 2), signs))  # (b, c, d)
        return apply_metric(torch.cat(parts), root).mul_(-1.0 / self.bandwidth)


KERNELS: dict[str, type[Kernel]] = {
    "laplace": LaplaceKernel,
    "gaussian": GaussianKernel,
    "product_laplace": ProductLaplaceKernel,
}


def make_kernel(name: str, bandwidth: float) -> Kernel:
    """The kernel called ``name`` (``laplace``, ``gaussian`` or ``product_laplace``) with bandwidth ``L``."""
    if name not in KERNELS:
        raise ConfigurationError(f"`kernel` must be one of {sorted(KERNELS)}, got {name!r}.")
    return KERNELS[name](bandwidth)


def squared_distances(x: Tensor, z: Tensor, M: Tensor, mark_same: bool = False) -> tuple[Tensor, Tensor | None]:
    """``||x_j - z_i||_M^2`` as ``(m, n)``, and with ``mark_same`` a mask of the pairs that are one point.

    The expansion ``x^T M x + z^T M z - 2 x^T M z`` is a matrix product (fast) but loses the last digits of small
    distances: a point against itself comes out as a few ulps of ``x^T M x`` rather than 0. With ``mark_same``,
    pairs within that round-off are marked and set to exactly 0.
    """
    xm = apply_metric(x, M)  # (m, d)
    x_sq = (xm * x).sum(1, keepdim=True)  # (m, 1)
    z_sq = (apply_metric(z, M) * z).sum(1)[None, :]  # (1, n)
    sq = torch.addmm(z_sq, xm, z.T, alpha=-2.0).add_(x_sq)  # (m, n)
    if not mark_same:
        return sq.clamp_min_(0), None

    same = sq <= (x_sq + z_sq).mul_(64 * torch.finfo(sq.dtype).eps)
    return sq.masked_fill_(same, 0.0).clamp_min_(0), same


def apply_metric(x: Tensor, M: Tensor) -> Tensor:
    """``x M`` for rows ``x`` (``(..., d)``): a matrix product for a full ``M``, a scaling for a diagonal one."""
    return x * M if M.dim() == 1 else x @ M


def _root(M: Tensor) -> Tensor:
    """``M^{1/2}``, as a vector for a diagonal ``M``."""
    return M.clamp_min(0).sqrt() if M.dim() == 1 else psd_power(M, 0.5)
