"""One Recursive Feature Machine iteration, framework-free: solve for the coefficients with the current ``M``, then
take the next ``M`` from the AGOP of the fitted predictor. The LightningModule and the scikit-learn facade both drive
this class; it holds settings, never data.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from agoplight.errors import ConfigurationError
from agoplight.rfm.agop import NORMALIZATIONS, ROW_ELEMENTS, agop_from_jacobians, kernel_agop, next_metric
from agoplight.rfm.kernels import RadialKernel, make_kernel
from agoplight.rfm.solvers import CholeskyError, SolveInfo, solve_cholesky, solve_pcg

__all__ = ["DTYPES", "SOLVERS", "Iteration", "RecursiveFeatureMachine"]

log = logging.getLogger(__name__)

SOLVERS = ("auto", "cholesky", "pcg")
DTYPES = {"float32": torch.float32, "float64": torch.float64}

# ``solver: auto`` solves directly up to this many training points (a float64 kernel matrix of 3.2 GB).
DIRECT_MAX_POINTS = 20_000

# Elements of one ``(points, centers)`` kernel block when predicting.
PREDICT_ELEMENTS = 2**24


# Training sets from this size on show a progress bar while the iterative solver runs (minutes per solve).
LARGE_SOLVE = 20_000


@dataclass
class Iteration:
    """What one RFM iteration produced.

    Attributes:
        M: the metric the predictor was fitted with.
        coefficients: ``(n, c)``.
        fitted: the predictor's outputs at the training points, ``(n, c)``.
        agop: the AGOP of the predictor (``None`` when the iteration skipped it).
        next_M: the metric for the next iteration (``None`` likewise).
        solve: the solver's report.
        seconds: wall time of the solve and of the AGOP.
    """

    M: Tensor
    coefficients: Tensor
    fitted: Tensor
    agop: Tensor | None = None
    next_M: Tensor | None = None
    solve: SolveInfo = field(default_factory=SolveInfo)
    seconds: dict[str, float] = field(default_factory=dict)


class RecursiveFeatureMachine:
    """The RFM's settings and its iteration.

    Args:
        kernel: ``laplace``, ``gaussian`` or ``product_laplace`` (see ``agoplight.rfm.kernels``).
        bandwidth: the kernel's ``L``.
        reg: ridge added to the kernel matrix's diagonal.
        diag: learn a diagonal ``M`` (one weight per feature) instead of a full one.
        centering: centre the gradients before their outer products (the AGOP becomes their covariance).
        agop_power: ``M = AGOP^agop_power`` (before normalisation); 0.5 or 1.
        normalize: scaling of each new ``M``: ``max`` (largest entry 1), ``trace`` (trace ``d``) or ``none``.
        solver: ``cholesky`` (kernel matrix in memory), ``pcg`` (kernel blocks on the fly) or ``auto``
            (``cholesky`` up to 20,000 training points).
        dtype: ``float32`` or ``float64`` for kernel matrices and solves. By default float32, and a direct solve
            whose float32 Cholesky factorisation fails is redone in float64. The AGOP is always summed in float64.
        agop_samples: take the AGOP at this many training points drawn at random each iteration (all when None
            or when the training set is smaller); the predictor still uses every training point.
        pcg_tol: relative residual at which ``pcg`` stops.
        pcg_max_iters: most kernel products per ``pcg`` solve.
        pcg_rank: points of ``pcg``'s Nyström preconditioner.
        block_size: rows of one kernel block in ``pcg``.
        seed: seeds the AGOP sample and the preconditioner's points.

    Example::

        >>> machine = RecursiveFeatureMachine(kernel="laplace", bandwidth=10.0)
        >>> x, y = torch.randn(200, 5), torch.randn(200, 1)
        >>> step = machine.iterate(x, y, machine.initial_metric(5))
        >>> step.next_M.shape
        torch.Size([5, 5])
    """

    def __init__(
        self,
        kernel: str = "laplace",
        bandwidth: float = 10.0,
        reg: float = 1e-3,
        diag: bool = False,
        centering: bool = False,
        agop_power: float = 0.5,
        normalize: Literal["max", "trace", "none"] = "max",
        solver: Literal["auto", "cholesky", "pcg"] = "auto",
        dtype: Literal["float32", "float64"] | None = None,
        agop_samples: int | None = None,
        pcg_tol: float = 1e-4,
        pcg_max_iters: int = 100,
        pcg_rank: int = 1000,
        block_size: int = 2048,
        seed: int = 0,
    ) -> None:
        self.kernel = make_kernel(kernel, bandwidth)
        if not (isinstance(reg, (int, float)) and reg >= 0):
            raise ConfigurationError(f"`reg` must be a number >= 0 (1e-3 is usual), got {reg!r}.")
        if agop_power not in (0.5, 1, 1.0):
            raise ConfigurationError(f"`agop_power` must be 0.5 or 1, got {agop_power!r}.")
        if normalize not in NORMALIZATIONS:
            raise ConfigurationError(f"`normalize` must be one of {NORMALIZATIONS}, got {normalize!r}.")
        if solver not in SOLVERS:
            raise ConfigurationError(f"`solver` must be one of {SOLVERS}, got {solver!r}.")
        if dtype is not None and dtype not in DTYPES:
            raise ConfigurationError(f"`dtype` must be 'float32', 'float64' or None, got {dtype!r}.")
        if agop_samples is not None and not (isinstance(agop_samples, int) and agop_samples > 0):
            raise ConfigurationError(f"`agop_samples` must be a positive integer or None, got {agop_samples!r}.")
        for name, value in (("pcg_max_iters", pcg_max_iters), ("pcg_rank", pcg_rank), ("block_size", block_size)):
            if not (isinstance(value, int) and value >= (0 if name == "pcg_rank" else 1)):
                raise ConfigurationError(f"`{name}` must be a positive integer, got {value!r}.")
        if not pcg_tol > 0:
            raise ConfigurationError(f"`pcg_tol` must be positive, got {pcg_tol!r}.")
        if solver == "pcg" and not reg > 0:
            raise ConfigurationError(f"`solver: pcg` needs a positive `reg` (1e-3 is usual), got {reg!r}.")

        self.reg = float(reg)
        self.diag = diag
        self.centering = centering
        self.agop_power = float(agop_power)
        self.normalize = normalize
        self.solver = solver
        self.dtype = dtype
        self.agop_samples = agop_samples
        self.pcg_tol = pcg_tol
        self.pcg_max_iters = pcg_max_iters
        self.pcg_rank = pcg_rank
        self.block_size = block_size
        self.seed = seed

    def initial_metric(self, d: int, device: torch.device | str | None = None) -> Tensor:
        """The identity: ``(d, d)``, or ``(d,)`` ones for a diagonal metric."""
        return torch.ones(d, device=device) if self.diag else torch.eye(d, device=device)

    def solver_for(self, n: int) -> str:
        """The solver used for ``n`` training points."""
        if self.solver != "auto":
            return self.solver
        return "cholesky" if n <= DIRECT_MAX_POINTS else "pcg"

    def dtype_for(self, n: int) -> torch.dtype:
        """The precision of kernel matrices and solves for ``n`` training points (before any float64 retry)."""
        return DTYPES[self.dtype or "float32"]

    def iterate(self, x: Tensor, targets: Tensor, M: Tensor, iteration: int = 0, learn: bool = True) -> Iteration:
        """Fit the predictor with metric ``M`` on ``(x, targets)``; with ``learn``, also its AGOP and the next ``M``.

        Args:
            x: training inputs ``(n, d)``; they become the centers.
            targets: ``(n, c)``: one-hot classes or regression targets.
            M: the metric, ``(d, d)`` or ``(d,)``.
            iteration: the iteration's index (seeds its AGOP sample).
            learn: compute the AGOP and the next ``M``.
        """
        dtype = self.dtype_for(x.shape[0])
        try:
            return self._iterate(x.to(dtype), targets.to(dtype), M.to(dtype), iteration, learn)
        except CholeskyError:
            if self.dtype is not None or dtype == torch.float64:
                raise
            log.info("The float32 Cholesky factorisation failed; solving iteration %d in float64.", iteration)
            return self._iterate(x.double(), targets.double(), M.double(), iteration, learn)

    def _iterate(self, x: Tensor, targets: Tensor, M: Tensor, iteration: int, learn: bool) -> Iteration:
        if learn and self._reuses_kernel_matrix(x.shape[0]):
            return self._iterate_direct(x, targets, M)

        start = time.perf_counter()
        coefficients, fitted, info = self.solve(x, targets, M, iteration)
        seconds = {"solve": time.perf_counter() - start}
        step = Iteration(M=M, coefficients=coefficients, fitted=fitted, solve=info, seconds=seconds)
        if learn:
            start = time.perf_counter()
            step.agop = self.agop(x, coefficients, M, iteration)
            step.next_M = next_metric(step.agop, self.agop_power, self.normalize).to(M.dtype)
            seconds["agop"] = time.perf_counter() - start
        return step

    def _reuses_kernel_matrix(self, n: int) -> bool:
        """Whether the solve's kernel matrix also gives the AGOP: a direct solve, a radial kernel, every point."""
        every_point = self.agop_samples is None or self.agop_samples >= n
        return self.solver_for(n) == "cholesky" and isinstance(self.kernel, RadialKernel) and every_point

    def _iterate_direct(self, x: Tensor, targets: Tensor, M: Tensor) -> Iteration:
        """One iteration with one kernel matrix: solved with, then turned in place into the gradient weights."""
        start = time.perf_counter()
        K = self.kernel(x, x, M, mark_same=True)  # (n, n), exactly 1 for each point against itself
        coefficients = solve_cholesky(K, targets, self.reg)
        seconds = {"solve": time.perf_counter() - start}

        start = time.perf_counter()
        w = self.kernel.weight(K)  # (n, n)
        rows = max(1, ROW_ELEMENTS // x.shape[0])
        jacobians = (
            self.kernel.jacobian_from_weights(w[i : i + rows], x[i : i + rows], x, coefficients, M)
            for i in range(0, x.shape[0], rows)
        )
        agop = agop_from_jacobians(jacobians, diag=M.dim() == 1, centering=self.centering)
        seconds["agop"] = time.perf_counter() - start
        step = Iteration(M=M, coefficients=coefficients, fitted=targets - self.reg * coefficients, seconds=seconds)
        step.agop, step.next_M = agop, next_metric(agop, self.agop_power, self.normalize).to(M.dtype)
        return step

    def solve(self, x: Tensor, targets: Tensor, M: Tensor, iteration: int = 0) -> tuple[Tensor, Tensor, SolveInfo]:
        """Coefficients of ``(K + reg I) a = targets``, the fitted values ``K a`` and the solver's report."""
        if self.solver_for(x.shape[0]) == "cholesky":
            K = self.kernel(x, x, M)  # (n, n)
            coefficients = solve_cholesky(K, targets, self.reg)
            return coefficients, targets - self.reg * coefficients, SolveInfo()
        return solve_pcg(
            self.kernel,
            x,
            targets,
            M,
            self.reg,
            tol=self.pcg_tol,
            max_iters=self.pcg_max_iters,
            rank=self.pcg_rank,
            block_size=self.block_size,
            generator=torch.Generator().manual_seed(self.seed * 1_000_003 + iteration),
            progress=x.shape[0] >= LARGE_SOLVE,
        )

    def agop(self, x: Tensor, coefficients: Tensor, M: Tensor, iteration: int = 0) -> Tensor:
        """The AGOP (float64) of the predictor with ``centers = x``, at ``agop_samples`` of the points or all."""
        points = x
        if self.agop_samples is not None and self.agop_samples < x.shape[0]:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + iteration)
            points = x[torch.randperm(x.shape[0], generator=generator)[: self.agop_samples].to(x.device)]
        return kernel_agop(self.kernel, points, x, coefficients, M, centering=self.centering)

    def predict(self, x: Tensor, centers: Tensor, coefficients: Tensor, M: Tensor) -> Tensor:
        """``k_M(x, centers) @ coefficients``, ``(m, c)``, in blocks of rows; in the coefficients' dtype."""
        x, centers, M = (t.to(coefficients.dtype) for t in (x, centers, M))
        rows = max(1, PREDICT_ELEMENTS // max(1, centers.shape[0]))
        return torch.cat([self.kernel(part, centers, M) @ coefficients for part in x.split(rows)])
