"""``RFMClassifier`` and ``RFMRegressor``: the RFM with scikit-learn's ``fit`` / ``predict`` for tabular data.

Features are used as given: put a ``StandardScaler`` (and a ``OneHotEncoder`` for categories) in front, in a
``Pipeline``, as for any kernel method. ``agoplight.data.TabularDataModule`` does the same preparation for the
LightningModule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import Tensor

from agoplight.errors import ConfigurationError
from agoplight.rfm.agop import next_metric
from agoplight.rfm.machine import Iteration, RecursiveFeatureMachine

__all__ = ["RFMClassifier", "RFMRegressor"]


class _RFMEstimator(BaseEstimator):
    """What the classifier and the regressor share: settings, the iteration loop, the best-iteration choice."""

    def __init__(
        self,
        kernel: str = "laplace",
        bandwidth: float = 10.0,
        reg: float = 1e-3,
        iters: int = 5,
        diag: bool = False,
        centering: bool = False,
        agop_power: float | str = "auto",
        normalize: str = "max",
        solver: str = "auto",
        dtype: str | None = None,
        agop_samples: int | None = None,
        validation_fraction: float = 0.0,
        random_state: int = 0,
    ) -> None:
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.reg = reg
        self.iters = iters
        self.diag = diag
        self.centering = centering
        self.agop_power = agop_power
        self.normalize = normalize
        self.solver = solver
        self.dtype = dtype
        self.agop_samples = agop_samples
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def fit(self, X: Any, y: Any, eval_set: tuple[Any, Any] | None = None) -> _RFMEstimator:
        """Run ``iters`` feature-learning iterations (``iters + 1`` fits, the first with ``M = I``; per power with
        ``agop_power="auto"``) and keep the fit that scores best on ``eval_set`` (or on a ``validation_fraction`` of
        ``X`` held out; the last fit when neither is given). Classification scores by accuracy, ties broken by the
        squared error to the one-hot labels; regression by R^2.

        Args:
            X: ``(n, d)`` numeric features.
            y: class labels, or regression targets ``(n,)`` / ``(n, k)``.
            eval_set: ``(X_val, y_val)`` to choose the iteration on.
        """
        if not (isinstance(self.iters, int) and self.iters >= 0):
            raise ConfigurationError(f"`iters` must be an integer >= 0, got {self.iters!r}.")
        if not 0 <= self.validation_fraction < 1:
            raise ConfigurationError(f"`validation_fraction` must be in [0, 1), got {self.validation_fraction!r}.")
        X, y = validate_data(self, X, y, reset=True, dtype=np.float64, multi_output=True, y_numeric=False)
        X = np.require(X, requirements="W")  # a DataFrame's values may be read-only; torch wants writable memory
        powers = (0.5, 1.0) if self.agop_power == "auto" else (self.agop_power,)
        machines = {power: self._machine(power) for power in powers}
        machine = machines[powers[0]]

        targets = self._encode_targets(y)
        validation = None
        if eval_set is not None:
            X_val, y_val = validate_data(
                self, *eval_set, reset=False, dtype=np.float64, multi_output=True, y_numeric=False
            )
            validation = (torch.as_tensor(np.require(X_val, requirements="W")), y_val)
        elif self.validation_fraction > 0:
            order = np.random.default_rng(self.random_state).permutation(len(X))
            held = order[: max(1, round(len(X) * self.validation_fraction))]
            kept = order[len(held) :]
            validation = (torch.as_tensor(X[held]), y[held])
            X, targets = X[kept], targets[kept]
        x = torch.as_tensor(X)
        centers = x.to(machine.dtype_for(len(x)))

        self.history_: list[dict[str, float]] = []
        best: tuple[tuple[float, ...], int, float, Tensor, Tensor] | None = None

        power_best: dict[float, tuple[float, ...]] = {}

        def consider(step: Iteration, iteration: int, power: float) -> None:
            nonlocal best
            entry = {
                "iteration": iteration,
                "agop_power": power,
                **{f"{k}_seconds": v for k, v in step.seconds.items()},
            }
            score: tuple[float, ...] = (float(iteration),)  # without validation data, the last fit wins
            if validation is not None:
                outputs = machine.predict(validation[0], centers, step.coefficients, step.M)
                score = self._score_outputs(outputs, validation[1])
                entry["validation_score"] = score[0]
            self.history_.append(entry)
            if best is None or score > best[0]:  # ties keep the earlier fit
                best = (score, iteration, power, step.M, step.coefficients)
            if iteration > 0:
                power_best[power] = max(power_best.get(power, score), score)

        first = machine.iterate(x, targets, machine.initial_metric(x.shape[1]), 0, learn=self.iters > 0)
        consider(first, 0, powers[0])
        # every power starts from the same plain kernel machine (M = I) and its AGOP
        metrics = {power: next_metric(first.agop, power, self.normalize) for power in powers} if self.iters else {}
        for iteration in range(1, self.iters + 1):
            for power, M in metrics.items():
                step = machines[power].iterate(x, targets, M.to(first.M.dtype), iteration, learn=iteration < self.iters)
                consider(step, iteration, power)
                metrics[power] = step.next_M
            if iteration == 2 and validation is not None and len(metrics) > 1:
                # after two iterations each, only the power with the better validation score goes on
                leader = max(metrics, key=lambda power: power_best[power])
                metrics = {leader: metrics[leader]}

        _, self.best_iteration_, self.best_agop_power_, self.M_, self.coefficients_ = best
        self.centers_ = centers
        self.machine_ = machine
        return self

    def _machine(self, agop_power: float) -> RecursiveFeatureMachine:
        return RecursiveFeatureMachine(
            kernel=self.kernel,
            bandwidth=self.bandwidth,
            reg=self.reg,
            diag=self.diag,
            centering=self.centering,
            agop_power=agop_power,
            normalize=self.normalize,
            solver=self.solver,
            dtype=self.dtype,
            agop_samples=self.agop_samples,
            seed=self.random_state,
        )

    def _outputs(self, X: Any) -> Tensor:
        """The kernel machine's raw outputs for ``X``, ``(m, c)``."""
        check_is_fitted(self, "coefficients_")
        X = np.require(validate_data(self, X, dtype=np.float64, reset=False), requirements="W")
        return self.machine_.predict(torch.as_tensor(X), self.centers_, self.coefficients_, self.M_)

    @property
    def feature_importances_(self) -> np.ndarray:
        """``diag(M)`` of the chosen fit, summing to 1: how much the learned metric weighs each feature."""
        check_is_fitted(self, "M_")
        diagonal = (self.M_ if self.M_.dim() == 1 else self.M_.diagonal()).clamp_min(0).double()
        total = diagonal.sum()
        return (diagonal / total if total > 0 else diagonal).numpy()

    def _encode_targets(self, y: np.ndarray) -> Tensor:
        raise NotImplementedError

    def _score_outputs(self, outputs: Tensor, y: np.ndarray) -> tuple[float, ...]:
        """The validation score of outputs, as a tuple compared in order (larger is better)."""
        raise NotImplementedError


class RFMClassifier(ClassifierMixin, _RFMEstimator):
    """Recursive Feature Machine classifier: kernel regression on one-hot labels, the class with the largest output.

    Args:
        kernel: ``laplace``, ``gaussian`` or ``product_laplace``.
        bandwidth: the kernel's ``L``.
        reg: ridge on the kernel matrix's diagonal.
        iters: feature-learning iterations (``M`` updates).
        diag: learn a diagonal ``M``.
        centering: centre the gradients in the AGOP.
        agop_power: ``M = AGOP^agop_power``, 0.5 or 1, or ``auto``: both, from the same first fit; with validation
            data, the power with the better score after two iterations each goes on alone. The square root suits
            targets that depend on a few directions (it shrinks the others gradually); the AGOP itself sharpens
            faster and suits many tabular sets.
        normalize: scaling of each new ``M``: ``max``, ``trace`` or ``none``.
        solver: ``auto``, ``cholesky`` or ``pcg``.
        dtype: ``float32`` or ``float64`` for the solves (default float32, float64 when a factorisation fails).
        agop_samples: training points at which the AGOP is taken (all when None).
        validation_fraction: share of the training data held out to choose the iteration when ``fit`` gets no
            ``eval_set`` (0: keep the last iteration).
        random_state: seeds the held-out share and the AGOP sample.

    Attributes:
        classes_: the labels, sorted.
        M_: the chosen fit's metric; ``feature_importances_`` is its normalised diagonal.
        best_iteration_: which fit was chosen (0 is the plain kernel machine, ``M = I``); ``best_agop_power_`` its
            power.
        history_: per fit, its iteration and power, the seconds spent and the validation accuracy.

    Example::

        >>> from sklearn.datasets import load_wine
        >>> X, y = load_wine(return_X_y=True)
        >>> model = RFMClassifier(iters=2).fit((X - X.mean(0)) / X.std(0), y)
        >>> model.feature_importances_.shape
        (13,)
    """

    def predict(self, X: Any) -> np.ndarray:
        """The class with the largest output."""
        outputs = self._outputs(X)
        return self.classes_[outputs.argmax(1).numpy()]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Outputs clipped at a small positive floor and normalised to sum to 1 per row.

        A kernel machine fitted to one-hot labels gives scores, not calibrated probabilities; these keep its
        ranking of the classes.
        """
        scores = self._outputs(X).clamp_min(1e-3)
        return (scores / scores.sum(1, keepdim=True)).numpy()

    def _encode_targets(self, y: np.ndarray) -> Tensor:
        if y.ndim != 1:
            raise ConfigurationError(f"RFMClassifier takes one label per sample, got targets of shape {y.shape}.")
        if type_of_target(y) not in ("binary", "multiclass"):
            raise ConfigurationError(
                f"RFMClassifier needs class labels, got {type_of_target(y)} targets (e.g. {y[:3].tolist()}); "
                "use RFMRegressor for real-valued targets."
            )
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ConfigurationError(f"RFMClassifier needs at least 2 classes, got {self.classes_.tolist()}.")
        return torch.nn.functional.one_hot(torch.as_tensor(codes), len(self.classes_)).double()

    def _score_outputs(self, outputs: Tensor, y: np.ndarray) -> tuple[float, ...]:
        # accuracy, ties broken by the Brier-like squared error to the one-hot labels: small validation sets tie often
        accuracy = float(np.mean(self.classes_[outputs.argmax(1).numpy()] == y))
        one_hot = torch.as_tensor(y[:, None] == self.classes_[None, :], dtype=outputs.dtype)
        return accuracy, -(outputs - one_hot).square().sum(1).mean().item()


class RFMRegressor(RegressorMixin, _RFMEstimator):
    """Recursive Feature Machine regressor; targets are standardised for the fit and restored in ``predict``.

    Takes the same arguments as ``RFMClassifier``; the iteration is chosen by R^2.

    Example::

        >>> X = np.random.default_rng(0).normal(size=(300, 10))
        >>> model = RFMRegressor(iters=3).fit(X, X[:, 0] * X[:, 1])
        >>> int(model.feature_importances_.argmax()) in (0, 1)
        True
    """

    def predict(self, X: Any) -> np.ndarray:
        """The regression targets, ``(m,)`` or ``(m, k)`` as in ``fit``."""
        outputs = (self._outputs(X) * self.y_scale_ + self.y_mean_).numpy()
        return outputs[:, 0] if self.y_ndim_ == 1 else outputs

    def _encode_targets(self, y: np.ndarray) -> Tensor:
        y = np.asarray(y, dtype=np.float64)
        self.y_ndim_ = y.ndim
        y = y.reshape(len(y), -1)
        scale = y.std(0)
        self.y_mean_ = torch.as_tensor(y.mean(0))
        self.y_scale_ = torch.as_tensor(np.where(scale > 0, scale, 1.0))
        return (torch.as_tensor(y) - self.y_mean_) / self.y_scale_

    def _score_outputs(self, outputs: Tensor, y: np.ndarray) -> tuple[float, ...]:
        predicted = (outputs * self.y_scale_ + self.y_mean_).numpy().reshape(len(y), -1)
        y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        spread = ((y - y.mean(0)) ** 2).sum()
        error = ((predicted - y) ** 2).sum()
        return (float(1 - error / spread) if spread > 0 else -float(error),)
