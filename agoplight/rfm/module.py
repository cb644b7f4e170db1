"""``RFM``: the Recursive Feature Machine as a LightningModule, so that it trains on the DataModules, loggers,
configs and checkpoints the networks use. One epoch is one RFM iteration."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torchmetrics.functional import accuracy, mean_squared_error, r2_score

from agoplight.callbacks.loggers import log_figures
from agoplight.errors import ConfigurationError
from agoplight.features import effective_rank
from agoplight.models.hparams import save_own_hyperparameters
from agoplight.models.task import TaskMixin
from agoplight.plots import matrix_panels
from agoplight.rfm.machine import Iteration, RecursiveFeatureMachine
from agoplight.rfm.pictures import feature_bars, top_features

__all__ = ["RFM"]

log = logging.getLogger(__name__)


# Settings that define the served predictor together with its buffers.
PREDICTOR_SETTINGS = ("input_dim", "output_dim", "kernel", "bandwidth", "diag")


class Predictor(NamedTuple):
    """A fitted kernel machine: ``f(x) = k_M(x, centers) @ coefficients``, from iteration ``iteration``."""

    iteration: int
    M: Tensor
    centers: Tensor
    coefficients: Tensor


class RFM(TaskMixin, LightningModule):
    r"""Recursive Feature Machine: a kernel machine that learns its metric ``M`` from its own AGOP.

    Each training epoch is one iteration over the whole training set: the batches of the epoch are gathered, the
    coefficients solve ``(K_M + reg I) a = y`` (one-hot ``y`` for classes), the AGOP of the fitted predictor
    ``f(x) = sum_i a_i k_M(x, x_i)`` gives the next ``M = normalize(AGOP^agop_power)``, and validation then scores
    the predictor. The best iteration by validation score (``val/acc`` for classes, ``val/r2`` for regression; ties
    keep the earlier) is what the module serves after fit and what checkpoints hold: its ``M``, centers and
    coefficients are buffers, so ``trainer.predict`` and ``RFM.load_from_checkpoint`` work from any checkpoint.
    Give the DataModule a ``batch_size`` at least the training set's size: an epoch is then one batch, and the
    loggers' step is the iteration. See ``RecursiveFeatureMachine`` for the maths settings.

    Args:
        input_dim: features per sample (linked from the DataModule by the CLI).
        output_dim: classes, or regression targets (linked from the DataModule by the CLI).
        kernel: ``laplace``, ``gaussian`` or ``product_laplace``.
        bandwidth: the kernel's ``L``.
        reg: ridge on the kernel matrix's diagonal.
        diag: learn a diagonal ``M``.
        centering: centre the gradients in the AGOP.
        agop_power: ``M = AGOP^agop_power``, 0.5 or 1.
        normalize: scaling of each new ``M``: ``max``, ``trace`` or ``none``.
        solver: ``auto``, ``cholesky`` or ``pcg`` (kernel blocks on the fly, for large training sets).
        dtype: ``float32`` or ``float64`` for kernel matrices and solves (default float32, with a float64 retry
            when a Cholesky factorisation fails).
        agop_samples: training points at which the AGOP is taken (all when None).
        pcg_tol: relative residual at which ``pcg`` stops.
        pcg_max_iters: most kernel products per ``pcg`` solve.
        pcg_rank: points of ``pcg``'s Nyström preconditioner.
        block_size: rows of one kernel block in ``pcg``.
        seed: seeds the AGOP sample and the preconditioner.
        top_features: how many features by ``diag(M)`` to draw and log.
        log_images: ``all`` (every iteration), ``last`` (end of fit) or ``none``: the learned ``M`` beside its AGOP,
            and the top features. W&B and TensorBoard get images; other loggers PNG files under the run folder.
        save_matrices: write each iteration's learned ``M`` and AGOP (float32, ``(d, d)``) to
            ``<run_dir>/agop/step_<iteration>.pt`` as ``{"step", "matrices": {"rfm": {"M", "agop"}}}``, the AGOP
            monitor's format.

    Logged keys, per iteration:
        - ``rfm/train_acc`` (classes) or ``rfm/train_r2`` and ``rfm/train_mse`` (regression): fit on the training set.
        - ``rfm/solve_seconds``, ``rfm/agop_seconds``, ``rfm/solver_iterations``, ``rfm/solver_residual``.
        - ``rfm/agop_trace``, ``rfm/M_effective_rank``: of the AGOP and the learned ``M``.
        - ``val/acc`` or ``val/r2`` and ``val/mse``, ``val/loss``; ``rfm/best_iteration``, ``rfm/best_score``.
        - ``test/...`` likewise under ``trainer.test``.
        - pictures ``rfm/M`` and ``rfm/top_features``.

    Example::

        trainer = Trainer(max_epochs=8)  # 8 RFM iterations
        trainer.fit(RFM(input_dim=100, output_dim=1), LowRankDataModule(d=100, batch_size=100_000))
    """

    def __init__(
        self,
        input_dim: int = 64,
        output_dim: int = 10,
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
        top_features: int = 10,
        log_images: Literal["all", "last", "none"] = "all",
        save_matrices: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("input_dim", input_dim), ("output_dim", output_dim)):
            if not (isinstance(value, int) and value >= 1):
                raise ConfigurationError(f"`{name}` must be a positive integer, got {value!r}.")
        if log_images not in ("all", "last", "none"):
            raise ConfigurationError(f"`log_images` must be 'all', 'last' or 'none', got {log_images!r}.")
        if not (isinstance(top_features, int) and top_features >= 0):
            raise ConfigurationError(f"`top_features` must be an integer >= 0, got {top_features!r}.")
        save_own_hyperparameters(self)
        self.automatic_optimization = False
        self.machine = RecursiveFeatureMachine(
            kernel=kernel,
            bandwidth=bandwidth,
            reg=reg,
            diag=diag,
            centering=centering,
            agop_power=agop_power,
            normalize=normalize,
            solver=solver,
            dtype=dtype,
            agop_samples=agop_samples,
            pcg_tol=pcg_tol,
            pcg_max_iters=pcg_max_iters,
            pcg_rank=pcg_rank,
            block_size=block_size,
            seed=seed,
        )
        self.configure_task("mse", output_dim)
        self.top_features = top_features
        self.log_images = log_images
        self.save_matrices = save_matrices

        # the served predictor: the best iteration so far (an empty machine predicts zeros)
        self.register_buffer("M", self.machine.initial_metric(input_dim))
        self.register_buffer("centers", torch.zeros(0, input_dim))
        self.register_buffer("coefficients", torch.zeros(0, output_dim))

        self.iteration = 0  # index of the next iteration
        self.next_M = self.machine.initial_metric(input_dim)
        self.best_iteration: int | None = None
        self.best_score: float | None = None
        self.history: list[dict[str, float]] = []
        self.last_step: Iteration | None = None
        self._current: Predictor | None = None
        self._batches: list[tuple[Tensor, Tensor]] = []
        self._feature_names: list[str] | None = None
        self._run_dir = Path(".")

    @property
    def is_classifier(self) -> bool:
        return self.output_dim > 1

    def forward(self, x: Tensor) -> Tensor:
        """Outputs ``(m, output_dim)`` of the iteration being validated during fit, of the best one otherwise."""
        predictor = self._current or Predictor(self.best_iteration or 0, self.M, self.centers, self.coefficients)
        outputs = self.machine.predict(x.flatten(1), predictor.centers, predictor.coefficients, predictor.M)
        return outputs.to(x.dtype if x.is_floating_point() else torch.float32)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Hack: an RFM has nothing to optimise, but Lightning counts progress in optimizer steps (`global_step`, which
        # decides when ModelCheckpoint saves, and `max_steps`). One step of this no-op optimizer (a zero-size
        # placeholder, learning rate 0) per iteration makes `global_step` the number of iterations done.
        return torch.optim.SGD([torch.zeros(0, requires_grad=True)], lr=0.0)

    # ---- Lightning hooks -------------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        # TODO: several devices. The solve needs every training point on one rank; the AGOP and the kernel blocks of
        # `pcg` could be sharded across ranks (summed with a collective), which is where multi-device support starts.
        if self.trainer.world_size > 1:
            raise ConfigurationError(
                f"RFM fits on one device, got a world size of {self.trainer.world_size}: set `trainer.devices: 1`."
            )
        self._run_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        names = getattr(self.trainer.datamodule, "feature_names", None)
        self._feature_names = list(names) if names is not None and len(names) == self.M.shape[0] else None

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self._batches.append((x.detach(), y.detach()))
        if self.trainer.is_last_batch:
            self._iterate()
            self.optimizers().step()  # counts the iteration (see configure_optimizers)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or self._current is None or self.trainer.state.fn != TrainerFn.FITTING:
            return
        name = "acc" if self.is_classifier else "r2"
        metric = self.metrics[f"val_{name}"]
        if metric.update_count == 0:
            return
        score = metric.compute().item()
        self.history[-1][f"val/{name}"] = score
        if self.best_score is None or score > self.best_score:
            self.best_score = score
            self._serve(self._current)
        self.log_dict({"rfm/best_iteration": float(self.best_iteration), "rfm/best_score": self.best_score})

    def on_train_end(self) -> None:
        if self.log_images == "last" and self.last_step is not None:
            self._draw(self.last_step, self.iteration - 1)
        self._current = None
        if self.best_iteration is not None and self.trainer.is_global_zero:
            log.info("RFM: serving iteration %d (validation score %s)", self.best_iteration, self.best_score)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rfm"] = {
            "iteration": self.iteration,
            "next_M": self.next_M.cpu(),
            "best_iteration": self.best_iteration,
            "best_score": self.best_score,
            "history": self.history,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the kernel is a setting, not a buffer: coefficients fitted with one kernel predict nonsense with another
        saved = checkpoint.get("hyper_parameters", {})
        for key in PREDICTOR_SETTINGS:
            if key in saved and saved[key] != self.hparams[key]:
                raise ConfigurationError(
                    f"The checkpoint was fitted with `{key}`={saved[key]!r} but this RFM has `{key}`="
                    f"{self.hparams[key]!r}. Load it with `RFM.load_from_checkpoint(path)`, or build the RFM from the "
                    "run's config.yaml."
                )
        state = checkpoint.get("rfm")
        if state is not None:
            self.iteration = state["iteration"]
            self.next_M = state["next_M"]
            self.best_iteration = state["best_iteration"]
            self.best_score = state["best_score"]
            self.history = list(state["history"])

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # the served predictor's buffers take the checkpoint's shape and dtype (a fitted machine has n centers)
        for name in ("M", "centers", "coefficients"):
            saved, own = state_dict.get(prefix + name), getattr(self, name)
            if saved is not None and (saved.shape != own.shape or saved.dtype != own.dtype):
                setattr(self, name, torch.empty_like(saved, device=own.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---- one iteration ---------------------------------------------------------------------------------------

    def _iterate(self) -> None:
        x = torch.cat([batch[0] for batch in self._batches]).flatten(1)  # (n, d)
        y = torch.cat([batch[1] for batch in self._batches])
        self._batches = []
        if x.shape[1] != self.M.shape[0]:
            raise ConfigurationError(
                f"The training inputs have {x.shape[1]} features but `input_dim` is {self.M.shape[0]}; set "
                "`input_dim` to the data's (the CLI links it from the DataModule)."
            )

        step = self.machine.iterate(x, self._targets(y), self.next_M.to(x.device), self.iteration)
        self.last_step = step
        self._current = Predictor(self.iteration, step.M, x.to(step.coefficients.dtype), step.coefficients)
        if self.best_score is None:  # nothing scored yet: serve the newest fit
            self._serve(self._current)

        metrics = self._metrics(step, y)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=False)
        self.history.append({"iteration": self.iteration, **metrics})
        if self.trainer.is_global_zero:
            self._record(step, self.iteration)
        self.next_M = step.next_M
        self.iteration += 1

    def _targets(self, y: Tensor) -> Tensor:
        """One-hot rows for class labels, ``(n, c)`` floats for regression targets."""
        if not torch.is_floating_point(y) and self.is_classifier:
            return F.one_hot(y.long().reshape(-1), self.output_dim).float()
        targets = y.float().reshape(y.shape[0], -1)
        if targets.shape[1] != self.output_dim:
            raise ConfigurationError(
                f"The targets have {targets.shape[1]} columns but `output_dim` is {self.output_dim}: give integer "
                "class labels for classification, or set `output_dim` to the number of regression targets."
            )
        return targets

    def _metrics(self, step: Iteration, y: Tensor) -> dict[str, float]:
        fitted = step.fitted.float()
        if self.is_classifier and not torch.is_floating_point(y):
            labels = y.long().reshape(-1)
            train = {"rfm/train_acc": accuracy(fitted.argmax(1), labels, "multiclass", num_classes=self.output_dim)}
        else:
            target = y.float().reshape(fitted.shape)
            train = {"rfm/train_r2": r2_score(fitted, target), "rfm/train_mse": mean_squared_error(fitted, target)}
        learned = step.next_M if step.next_M.dim() == 2 else torch.diag(step.next_M)
        return {
            **{key: value.item() for key, value in train.items()},
            "rfm/solve_seconds": step.seconds["solve"],
            "rfm/agop_seconds": step.seconds["agop"],
            "rfm/solver_iterations": float(step.solve.iterations),
            "rfm/solver_residual": step.solve.residual,
            "rfm/agop_trace": step.agop.sum().item() if step.agop.dim() == 1 else step.agop.trace().item(),
            "rfm/M_effective_rank": effective_rank(learned).item(),
        }

    def _serve(self, predictor: Predictor) -> None:
        self.M, self.centers, self.coefficients = predictor.M, predictor.centers, predictor.coefficients
        self.best_iteration = predictor.iteration

    def _record(self, step: Iteration, iteration: int) -> None:
        """Save the learned ``M`` and its AGOP, draw them, and log the top features (rank zero)."""
        if self.save_matrices:
            path = self._run_dir / "agop" / f"step_{iteration:07d}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            matrices = {"M": _square(step.next_M).float().cpu(), "agop": _square(step.agop).float().cpu()}
            torch.save({"step": iteration, "matrices": {"rfm": matrices}}, path)
        if self.top_features:
            features = top_features(_diagonal(step.next_M), self._feature_names, self.top_features)
            log.info("RFM iteration %d, top features by diag(M): %s", iteration, _listing(features))
        if self.log_images == "all":
            self._draw(step, iteration)

    def _draw(self, step: Iteration, iteration: int) -> None:
        figures = {
            "rfm/M": matrix_panels({"M": _square(step.next_M), "agop": _square(step.agop)}, f"iteration {iteration}")
        }
        if self.top_features:
            features = top_features(_diagonal(step.next_M), self._feature_names, self.top_features)
            figures["rfm/top_features"] = feature_bars(features, f"top features, iteration {iteration}")
        log_figures(self.trainer, figures, iteration, self._run_dir)


def _square(M: Tensor) -> Tensor:
    """A diagonal metric's vector as the ``(d, d)`` matrix it stands for."""
    return torch.diag(M) if M.dim() == 1 else M


def _diagonal(M: Tensor) -> Tensor:
    return M if M.dim() == 1 else M.diagonal()


def _listing(features: list[tuple[str, float]]) -> str:
    return ", ".join(f"{name} {value:.3g}" for name, value in features)
