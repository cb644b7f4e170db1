"""``AGOPMonitor``: measure AGOP and NFM of chosen layers during training and log how well they agree."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from agoplight.callbacks.images import log_figures, measurement_figures
from agoplight.errors import ConfigurationError
from agoplight.features import (
    View,
    agop_from_sums,
    agop_sums,
    default_forward,
    effective_rank,
    eigenvalues,
    find_layers,
    nfa_correlations,
    nfm_of,
)
from agoplight.features.agop import ForwardFn

log = logging.getLogger(__name__)


class AGOPMonitor(Callback):
    r"""Measure the AGOP and neural feature matrix (NFM) of chosen layers and log their correlation.

    The neural feature ansatz says a trained layer's ``NFM = W^T W`` is strongly correlated with the AGOP of its
    input ``h``, ``mean over samples of J^T J`` with ``J = dF/dh``, or a power of it. This callback measures both
    on a fixed, seeded probe set drawn from the training data: once before training, every
    ``every_n_train_steps`` optimizer steps, and at the end; also when ``trainer.validate`` or ``trainer.test``
    run. The probe runs in eval mode (the modes are restored), gradients come from ``torch.autograd.grad`` (the
    model's ``.grad`` are untouched), and the initial weights and probe indices are saved in checkpoints, so a
    resumed run continues the same curves.

    Args:
        layers: layer names or ``fnmatch`` patterns (``"blocks.*.mlp.fc"``); None measures every ``nn.Linear``,
            ``nn.Conv1d``, ``nn.Conv2d`` and transformers ``Conv1D``. A name that matches nothing fails at
            fit start with the list of layers that exist.
        every_n_train_steps: measure every this many optimizer steps.
        probe_size: number of training samples in the probe set (all of them when the set is smaller).
        probe_batch_size: samples per forward pass of the measurement; bounds its memory.
        seed: seed of the probe draw and of the sketch's projections.
        estimator: ``"exact"`` (one vector-Jacobian product per output) or ``"sketch"`` (``num_projections``
            Gaussian projections; the choice for vocabulary-sized outputs).
        num_projections: ``k`` of the sketch.
        chunk_size: output directions per batched backward pass.
        split: per layer name, ``{suffix: n}`` slices of its output channels measured as layers of their own
            (fused query/key/value, heads).
        forward_fn: ``(model, batch) -> logits``; the default calls ``model(x)`` on ``(x, y)`` batches.
        top_eigenvalues: how many of the AGOP's largest eigenvalues to log.
        measure_on: which ``Trainer`` entry points measure (``"fit"``, ``"validate"``, ``"test"``).
        save_matrices: write each measurement's AGOP, NFM and ``W - W0`` NFM (float32) to
            ``<trainer.log_dir>/agop/step_<step>.pt``, for reports drawn later.
        save_max_dim: layers whose input is larger than this are left out of those files and pictures (a
            4096-wide layer costs 64 MB per matrix).
        log_images: when to draw pictures (AGOP/NFM heatmaps, spectra, top AGOP eigenvectors as images):
            ``"last"`` (the final measurement of fit, and the measurement of validate/test), ``"all"``, ``"none"``.
            W&B and TensorBoard loggers get images; otherwise PNG files go to ``<trainer.log_dir>/images/``.
        image_shape: shape of one input sample, e.g. ``(1, 28, 28)``, to draw a first linear layer's eigenvectors
            as images; by default the datamodule's ``image_shape`` attribute or the probe's own shape.

    Logged keys, for each measured layer ``<layer>``:
        - ``nfa/<layer>/pearson_sqrt``, ``nfa/<layer>/pearson``: Pearson(NFM, AGOP^1/2) and Pearson(NFM, AGOP).
        - ``nfa/<layer>/cosine_sqrt``, ``nfa/<layer>/cosine``: the cosine similarities of the same pairs.
        - ``nfa/<layer>/delta_pearson_sqrt``, ``..._pearson``, ``..._cosine_sqrt``, ``..._cosine``: the same with
          the NFM of ``W - W0`` (from the first step on; at step 0 that NFM is zero).
        - ``agop/<layer>/trace``, ``agop/<layer>/effective_rank``, ``agop/<layer>/eigval_<i>``.

    Example::

        trainer = Trainer(callbacks=[AGOPMonitor(layers=["net.0"], every_n_train_steps=50)])
    """

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        every_n_train_steps: int = 50,
        probe_size: int = 512,
        probe_batch_size: int = 256,
        seed: int = 0,
        estimator: Literal["exact", "sketch"] = "exact",
        num_projections: int = 16,
        chunk_size: int = 16,
        split: dict[str, dict[str, int]] | None = None,
        forward_fn: ForwardFn | None = None,
        top_eigenvalues: int = 3,
        measure_on: Sequence[str] = ("fit", "validate", "test"),
        save_matrices: bool = True,
        save_max_dim: int = 1024,
        log_images: Literal["last", "all", "none"] = "last",
        image_shape: Sequence[int] | None = None,
    ) -> None:
        for name, value in (
            ("every_n_train_steps", every_n_train_steps),
            ("probe_size", probe_size),
            ("probe_batch_size", probe_batch_size),
            ("num_projections", num_projections),
            ("chunk_size", chunk_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"`{name}` must be a positive integer, got {value!r}.")
        if estimator not in ("exact", "sketch"):
            raise ConfigurationError(f"`estimator` must be 'exact' or 'sketch', got {estimator!r}.")
        if log_images not in ("last", "all", "none"):
            raise ConfigurationError(f"`log_images` must be 'last', 'all' or 'none', got {log_images!r}.")
        unknown = set(measure_on) - {"fit", "validate", "test"}
        if unknown:
            raise ConfigurationError(f"`measure_on` takes 'fit', 'validate', 'test'; got {sorted(unknown)}.")

        self.layers = [layers] if isinstance(layers, str) else (list(layers) if layers is not None else None)
        self.every_n_train_steps = every_n_train_steps
        self.probe_size = probe_size
        self.probe_batch_size = probe_batch_size
        self.seed = seed
        self.estimator = estimator
        self.num_projections = num_projections
        self.chunk_size = chunk_size
        self.split = split or {}
        self.forward_fn = forward_fn or default_forward
        self.top_eigenvalues = top_eigenvalues
        self.measure_on = tuple(measure_on)
        self.save_matrices = save_matrices
        self.save_max_dim = save_max_dim
        self.log_images = log_images
        self.image_shape = tuple(image_shape) if image_shape is not None else None

        self.views: list[View] = []
        self.history: list[dict[str, float]] = []
        self.last_matrices: dict[str, dict[str, Tensor]] = {}
        self._initial_weights: dict[str, Tensor] | None = None
        self._probe_indices: Tensor | None = None
        self._probe: list[Any] | None = None
        self._last_step: int | None = None
        self._run_dir = Path(".")

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=self.layers, every_n_train_steps=self.every_n_train_steps)

    # ---- Lightning hooks -------------------------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        layers = find_layers(pl_module, self.layers)
        unknown = set(self.split) - {layer.name for layer in layers}
        if unknown:
            raise ConfigurationError(
                f"`split` names {sorted(unknown)}, which are not measured layers: {[layer.name for layer in layers]}."
            )
        self.views = [view for layer in layers for view in layer.views(self.split.get(layer.name))]
        self._run_dir = Path(trainer.log_dir or trainer.default_root_dir)  # a collective: every rank calls it
        if self.image_shape is None:
            self.image_shape = getattr(trainer.datamodule, "image_shape", None)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._initial_weights is None:
            self._initial_weights = {view.name: view.weight().detach().cpu().clone() for view in self.views}
        self._measure(trainer, pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if trainer.global_step % self.every_n_train_steps == 0:
            self._measure(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._measure(trainer, pl_module)
        if self.log_images == "last":
            self._log_images(trainer)
        if len(self.history) > 1:
            rank_zero_info(self.summary())

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING and "validate" in self.measure_on:
            self._measure(trainer, pl_module, force=True)
            if self.log_images == "last":
                self._log_images(trainer)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "test" in self.measure_on:
            self._measure(trainer, pl_module, force=True)
            if self.log_images == "last":
                self._log_images(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {
            "initial_weights": self._initial_weights,
            "probe_indices": self._probe_indices,
            "last_step": self._last_step,
            "history": self.history,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._initial_weights = state_dict["initial_weights"]
        self._probe_indices = state_dict["probe_indices"]
        self._last_step = state_dict["last_step"]
        self.history = list(state_dict["history"])
        self._probe = None

    # ---- measurement -----------------------------------------------------------------------------------------

    def measure(self, pl_module: torch.nn.Module, batches: Sequence[Any], step: int = 0) -> dict[str, float]:
        """Measure the chosen layers of ``pl_module`` on ``batches`` and return the metrics this callback logs.

        The matrices of the measurement are kept in ``last_matrices``: ``{layer: {"agop", "nfm"}}``.
        """
        generator = None
        if self.estimator == "sketch":
            device = next(pl_module.parameters()).device
            generator = torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + step)

        totals: dict[str, Tensor] = {}
        n = 0
        for batch in batches:
            sums, count = agop_sums(
                pl_module,
                batch,
                self.views,
                estimator=self.estimator,
                num_projections=self.num_projections,
                chunk_size=self.chunk_size,
                forward_fn=self.forward_fn,
                generator=generator,
            )
            totals = sums if not totals else {name: totals[name] + sums[name] for name in sums}
            n += count

        metrics: dict[str, float] = {}
        self.last_matrices = {}
        for view in self.views:
            agop = agop_from_sums(view, totals[view.name], n)  # (in, in)
            nfm = nfm_of(view).to(agop.device)
            matrices = self.last_matrices[view.name] = {"agop": agop.cpu(), "nfm": nfm.cpu()}
            metrics.update(_layer_metrics(view.name, agop, nfm, self.top_eigenvalues))

            initial = (self._initial_weights or {}).get(view.name)
            if initial is not None and not torch.equal(initial, view.weight().detach().cpu()):
                delta = nfm_of(view, initial).to(agop.device)
                matrices["nfm_delta"] = delta.cpu()
                scores = nfa_correlations(delta, agop)
                metrics.update({f"nfa/{view.name}/delta_{key}": value.item() for key, value in scores.items()})
        return metrics

    def _measure(self, trainer: Trainer, pl_module: LightningModule, force: bool = False) -> None:
        step = trainer.global_step
        if trainer.sanity_checking or (step == self._last_step and not force):
            return
        if self._probe is None:
            self._probe = self._build_probe(trainer)

        metrics = self.measure(pl_module, self._probe, step)
        self._last_step = step
        self.history.append({"step": step, **metrics})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        if self.save_matrices and trainer.is_global_zero:
            path = self._run_dir / "agop" / f"step_{step:07d}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"step": step, "matrices": self._kept_matrices()}, path)
        if self.log_images == "all":
            self._log_images(trainer)

    def _kept_matrices(self) -> dict[str, dict[str, Tensor]]:
        """The last measurement's matrices in float32, without layers wider than ``save_max_dim``."""
        return {
            name: {key: value.float() for key, value in entry.items()}
            for name, entry in self.last_matrices.items()
            if entry["agop"].shape[0] <= self.save_max_dim
        }

    def _log_images(self, trainer: Trainer) -> None:
        if not trainer.is_global_zero or not self.history:
            return
        shapes = {view.name: self._picture_shape(view) for view in self.views}
        figures = measurement_figures(self._kept_matrices(), shapes, self._last_step)
        log_figures(trainer, figures, self._last_step, self._run_dir)

    def _picture_shape(self, view: View) -> tuple[int, ...] | None:
        """How one input of this layer looks as a picture: a conv patch, or the input image of a first layer."""
        weight = view.layer.module.weight
        if weight.dim() == 4:  # Conv2d: (c_out, c_in / groups, k, k)
            return tuple(weight.shape[1:])
        size = view.shape[1]
        shape = self.image_shape
        if shape is None and self._probe is not None and isinstance(self._probe[0], (tuple, list)):
            x = self._probe[0][0]
            shape = tuple(x.shape[1:]) if x.dim() >= 3 else None
        return shape if shape is not None and math.prod(shape) == size else None

    def _build_probe(self, trainer: Trainer) -> list[Any]:
        """Collate the probe set from the training data: ``probe_size`` samples drawn once with ``seed``."""
        loader = trainer.train_dataloader
        if loader is None and trainer.datamodule is not None:
            try:
                loader = trainer.datamodule.train_dataloader()
            except Exception as error:  # the user's datamodule may only build its training set for fit
                raise ConfigurationError(
                    "AGOPMonitor draws its probe set from the training data, but the datamodule's "
                    f"`train_dataloader()` failed outside fit ({error!r}). Build the training set in "
                    "`setup()` for every stage, or measure during `trainer.fit`."
                ) from error
        if not isinstance(loader, DataLoader):
            raise ConfigurationError(
                "AGOPMonitor needs a single training `DataLoader` over a map-style dataset to draw its probe set; "
                f"got `{type(loader).__name__}`."
            )

        dataset = loader.dataset
        if self._probe_indices is None:
            generator = torch.Generator().manual_seed(self.seed)
            self._probe_indices = torch.randperm(len(dataset), generator=generator)[: self.probe_size]
        probe = Subset(dataset, self._probe_indices.tolist())
        return list(DataLoader(probe, batch_size=self.probe_batch_size, collate_fn=loader.collate_fn))

    def summary(self) -> str:
        """One line per layer: the NFA correlation (Pearson(NFM, AGOP^1/2)) at the first and last measurement."""
        first, last = self.history[0], self.history[-1]
        lines = [f"AGOP monitor: Pearson(NFM, AGOP^1/2), step {first['step']} -> step {last['step']}"]
        for view in self.views:
            key = f"nfa/{view.name}/pearson_sqrt"
            if key in first and key in last:
                lines.append(f"  {view.name:<40} {first[key]:.3f} -> {last[key]:.3f}")
        return "\n".join(lines)


def _layer_metrics(name: str, agop: Tensor, nfm: Tensor, top: int) -> dict[str, float]:
    metrics = {f"nfa/{name}/{key}": value.item() for key, value in nfa_correlations(nfm, agop).items()}
    metrics[f"agop/{name}/trace"] = agop.trace().item()
    metrics[f"agop/{name}/effective_rank"] = effective_rank(agop).item()
    for i, value in enumerate(eigenvalues(agop)[:top].tolist(), start=1):
        metrics[f"agop/{name}/eigval_{i}"] = value
    return metrics
