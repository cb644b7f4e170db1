"""Recursive Feature Machines: kernel machines that learn features through the AGOP, without backpropagation.

- ``kernels``, ``agop``, ``solvers``, ``machine``: the maths (Laplace, Gaussian and product-Laplace kernels with a
  learned metric ``M``, the closed-form AGOP, direct and iterative solvers, one RFM iteration).
- ``RFM``: the LightningModule, one epoch per iteration, on any agoplight DataModule.
- ``RFMClassifier``, ``RFMRegressor``: scikit-learn estimators for tabular data.
- ``CirculantMonitor``: the block-circulant structure learned on modular arithmetic.
"""

from agoplight.rfm.agop import kernel_agop, next_metric
from agoplight.rfm.circulant import CirculantMonitor, circulant_deviation
from agoplight.rfm.kernels import GaussianKernel, Kernel, LaplaceKernel, ProductLaplaceKernel, make_kernel
from agoplight.rfm.machine import Iteration, RecursiveFeatureMachine
from agoplight.rfm.module import RFM
from agoplight.rfm.sklearn import RFMClassifier, RFMRegressor
from agoplight.rfm.solvers import solve_cholesky, solve_pcg

__all__ = [
    "RFM",
    "CirculantMonitor",
    "GaussianKernel",
    "Iteration",
    "Kernel",
    "LaplaceKernel",
    "ProductLaplaceKernel",
    "RFMClassifier",
    "RFMRegressor",
    "RecursiveFeatureMachine",
    "circulant_deviation",
    "kernel_agop",
    "make_kernel",
    "next_metric",
    "solve_cholesky",
    "solve_pcg",
]
