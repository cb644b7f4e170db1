"""``AGOPMonitor``: measure AGOP and NFM of chosen layers during training and log how well they agree."""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler

from agoplight.callbacks.loggers import define_step_axis, log_figures, log_table, measurement_pictures
from agoplight.callbacks.metric import AGOPSums
from agoplight.errors import ConfigurationError
from agoplight.features import (
    Spectrum,
    View,
    agop_from_sums,
    agop_sums,
    all_finite,
    default_forward,
    find_views,
    nfa_correlations,
    nfm_of,
)
from agoplight.features.agop import ForwardFn, UnusedLayersError

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
        estimator: ``"exact"`` (one vector-Jacobian product per output), ``"sketch"`` (``num_projections``
            Gaussian projections; the choice for vocabulary-sized outputs), or ``"auto"``: exact up to 1024 outputs
            per sample (``agoplight.features.agop.EXACT_MAX_OUTPUTS``), the sketch beyond, as for language models.
        num_projections: ``k`` of the sketch.
        chunk_size: output directions per batched backward pass.
        split: per layer name or ``fnmatch`` pattern, slices of its output channels measured as layers of their
            own: ``{suffix: n}``, ``"heads"`` (attention query/key/value projections), or ``{}`` for the whole layer.
            GPT-2's fused ``c_attn`` is measured as query, key and value unless told otherwise.
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
        precision: ``"32"`` measures in float32 whatever the training precision (autocast off, half-precision
            weights upcast for the measurement); ``"64"`` in float64.
        name: names this monitor's state in checkpoints and its folder of matrices (``<run_dir>/<name>/``). Give
            each monitor of a Trainer its own (Lightning refuses two callbacks with one ``state_key``); any name
            but ``"agop"`` also prefixes the logged keys (``<name>/nfa/...``).

    The probe set is drawn from the indices the training loader's sampler visits (a ``SubsetRandomSampler`` is
    respected), collated once, and passed through the Lightning module's batch-transfer hooks and the precision
    plugin like a training batch. Drawing it does not touch the global random state, so adding the monitor does
    not change training. In ``trainer.validate`` and ``trainer.test`` the probe comes from the datamodule's (or the
    module's) ``train_dataloader()``; the measurement is logged at the checkpoint's step and saved as
    ``validate_step_<step>.pt`` or ``test_step_<step>.pt``.

    Under DDP each process measures its shard of the probe set, the sums are added across processes (every
    process takes part) and rank zero logs. FSDP and DeepSpeed shard the weights themselves and are refused.

    Logged keys, for each measured layer ``<layer>``:
        - ``nfa/<layer>/pearson_sqrt``, ``nfa/<layer>/pearson``: Pearson(NFM, AGOP^1/2) and Pearson(NFM, AGOP).
        - ``nfa/<layer>/cosine_sqrt``, ``nfa/<layer>/cosine``: the cosine similarities of the same pairs.
        - ``nfa/<layer>/delta_pearson_sqrt``, ``..._pearson``, ``..._cosine_sqrt``, ``..._cosine``: the same with
          the NFM of ``W - W0`` (from the first step on; at step 0 that NFM is zero).
        - ``agop/<layer>/trace``, ``agop/<layer>/effective_rank``, ``agop/<layer>/eigval_<i>``.
        - W&B only, at the end of fit: ``nfa/table``, every layer's correlations at each measurement.

    Example::

        trainer = Trainer(callbacks=[AGOPMonitor(layers=["net.0"], every_n_train_steps=100)])
    """

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        every_n_train_steps: int = 100,
        probe_size: int = 512,
        probe_batch_size: int = 512,
        seed: int = 0,
        estimator: Literal["exact", "sketch", "auto"] = "auto",
        num_projections: int = 16,
        chunk_size: int = 16,
        split: dict[str, dict[str, int] | str] | None = None,
        forward_fn: ForwardFn | None = None,
        top_eigenvalues: int = 3,
        measure_on: Sequence[str] = ("fit", "validate", "test"),
        save_matrices: bool = True,
        save_max_dim: int = 1024,
        log_images: Literal["last", "all", "none"] = "last",
        image_shape: Sequence[int] | None = None,
        precision: Literal["32", "64"] = "32",
        name: str = "agop",
    ) -> None:
        for option, value in (
            ("every_n_train_steps", every_n_train_steps),
            ("probe_size", probe_size),
            ("probe_batch_size", probe_batch_size),
            ("num_projections", num_projections),
            ("chunk_size", chunk_size),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"`{option}` must be a positive integer, got {value!r}.")
        if estimator not in ("exact", "sketch", "auto"):
            raise ConfigurationError(
                f"`estimator` must be 'exact' or 'sketch', got {estimator!r} (or 'auto', which picks one by the "
                "number of outputs)."
            )
        if str(precision) not in ("32", "64"):
            raise ConfigurationError(f"`precision` must be '32' or '64', got {precision!r}.")
        if log_images not in ("last", "all", "none"):
            raise ConfigurationError(f"`log_images` must be 'last', 'all' or 'none', got {log_images!r}.")
        measure_on = [measure_on] if isinstance(measure_on, str) else list(measure_on)
        unknown = set(measure_on) - {"fit", "validate", "test"}
        if unknown:
            raise ConfigurationError(f"`measure_on` takes 'fit', 'validate', 'test'; got {sorted(unknown)}.")
        if layers is not None:
            names = [layers] if isinstance(layers, str) else list(layers)
            if not names or not all(isinstance(layer, str) and layer for layer in names):
                raise ConfigurationError(
                    f"`layers` must be a non-empty list of layer names or patterns (or None for all), got {layers!r}."
                )
        if not isinstance(top_eigenvalues, int) or top_eigenvalues < 0:
            raise ConfigurationError(f"`top_eigenvalues` must be a non-negative integer, got {top_eigenvalues!r}.")
        if not isinstance(save_max_dim, int) or save_max_dim < 1:
            raise ConfigurationError(f"`save_max_dim` must be a positive integer, got {save_max_dim!r}.")
        for key, value in (split or {}).items():
            if isinstance(value, dict) and not all(isinstance(n, int) and n >= 1 for n in value.values()):
                raise ConfigurationError(f"`split[{key!r}]` must map suffixes to positive slice counts, got {value!r}.")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)):
            raise ConfigurationError(f"`name` must be letters, digits, '_', '.' or '-', got {name!r}.")

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
        self.precision = str(precision)
        self.name = name
        self.prefix = "" if name == "agop" else f"{name}/"
        self.seconds = 0.0  # wall time spent measuring and drawing

        self.views: list[View] = []
        self.history: list[dict[str, float]] = []
        self.last_matrices: dict[str, dict[str, Tensor]] = {}
        self._initial_weights: dict[str, Tensor] | None = None
        self._probe_indices: Tensor | None = None
        self._probe: list[Any] | None = None
        self._last_step: int | None = None
        self._run_dir = Path(".")
        self._sums: AGOPSums | None = None
        self._checkpoint_step: int | None = None
        self._fit_started: float | None = None

    @property
    def state_key(self) -> str:
        # the name alone: changing the schedule or layers of a resumed run must not lose W0 and the probe
        return self._generate_state_key(name=self.name)

    # ---- Lightning hooks -------------------------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        strategy = type(trainer.strategy).__name__
        if strategy.startswith(("FSDP", "DeepSpeed")):
            raise ConfigurationError(
                f"AGOPMonitor needs whole weights for the NFM, and `{strategy}` shards them. Use "
                "`strategy='ddp'` (supported: each process measures a shard of the probe set), or remove the monitor."
            )
        self.views = find_views(pl_module, self.layers, self.split)
        self._sums = AGOPSums(self.views)
        self._run_dir = Path(trainer.log_dir or trainer.default_root_dir)  # a collective: every rank calls it
        if self.image_shape is None:
            self.image_shape = getattr(trainer.datamodule, "image_shape", None)
        define_step_axis(trainer, [f"{self.prefix}nfa", f"{self.prefix}agop"])

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fit_started = time.perf_counter()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._initial_weights is None:
            self._initial_weights = {view.name: view.weight().detach().cpu().clone() for view in self.views}
        if not self.history:  # a resumed run continues its curve instead
            self._measure(trainer, pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if trainer.global_step % self.every_n_train_steps == 0:
            self._measure(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._measure(trainer, pl_module)
        self._log_table(trainer)
        if self.log_images == "last":
            self._log_images(trainer)
        if len(self.history) > 1:
            rank_zero_info(self.summary())

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING and "validate" in self.measure_on:
            self._measure(trainer, pl_module, stage="validate")
            if self.log_images == "last":
                self._log_images(trainer)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "test" in self.measure_on:
            self._measure(trainer, pl_module, stage="test")
            if self.log_images == "last":
                self._log_images(trainer)

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self._checkpoint_step = checkpoint.get("global_step")

    def state_dict(self) -> dict[str, Any]:
        return {
            "initial_weights": self._initial_weights,
            "probe_indices": self._probe_indices,
            "last_step": self._last_step,
            "history": self.history,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        indices = state_dict["probe_indices"]
        if indices is None or self._probe_indices is None or not torch.equal(indices, self._probe_indices):
            self._probe = None  # rebuilt from the loaded indices when next needed
        self._initial_weights = state_dict["initial_weights"]
        self._probe_indices = indices
        self._last_step = state_dict["last_step"]
        self.history = list(state_dict["history"])

    # ---- measurement -----------------------------------------------------------------------------------------

    def measure(self, pl_module: torch.nn.Module, batches: Sequence[Any], step: int = 0) -> dict[str, float]:
        """Measure the chosen layers of ``pl_module`` on ``batches`` and return the metrics this callback logs.

        Under DDP, ``batches`` is this process's shard and every process must call this. The matrices of the
        measurement are kept in ``last_matrices``: ``{layer: {"agop", "nfm", "nfm_delta"}}``.
        """
        device = next(pl_module.parameters()).device
        generator = None
        if self.estimator != "exact":
            generator = torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + step)

        try:
            totals, n = self._sum_over(pl_module, batches, generator, device)
        except UnusedLayersError as error:
            if self.layers is not None:
                raise
            # every supported layer was asked for; some are never called (heads of other tasks, spare layers)
            rank_zero_warn(f"AGOPMonitor: skipping layers the forward pass does not call: {error.names}.")
            self.views = [view for view in self.views if view.layer.name not in error.names]
            self._sums = AGOPSums(self.views)
            totals, n = self._sum_over(pl_module, batches, generator, device)

        # Sums are float64; the matrices and their metrics are taken in the measurement's precision (an
        # eigendecomposition in float64 costs ~3x, and the correlations need no more than float32).
        dtype = torch.float64 if self.precision == "64" else torch.float32
        metrics: dict[str, float] = {}
        self.last_matrices = {}
        for view in self.views:
            agop = agop_from_sums(view, totals[view.name], n).to(dtype)  # (in, in)
            nfm = nfm_of(view, dtype=dtype).to(agop.device)
            matrices = self.last_matrices[view.name] = {"agop": agop.cpu(), "nfm": nfm.cpu()}
            if not all_finite(agop, nfm):  # warned once per layer: the message names no step
                rank_zero_warn(
                    f"AGOPMonitor: the AGOP or the weights of {view.name} are not finite (has the model diverged? a "
                    "lower learning rate or gradient clipping may help); its metrics are NaN from here on."
                )
            spectrum = Spectrum.of(agop)  # one eigendecomposition for AGOP^1/2, the eigenvalues and the ranks
            metrics.update(_layer_metrics(f"{self.prefix}{{}}/{view.name}", agop, nfm, spectrum, self.top_eigenvalues))

            initial = (self._initial_weights or {}).get(view.name)
            if initial is None:
                continue
            delta = nfm_of(view, initial, dtype=dtype).to(agop.device)
            if delta.abs().max() > 0:  # W - W0 is zero until the first step: its correlations are undefined
                matrices["nfm_delta"] = delta.cpu()
                scores = nfa_correlations(delta, agop, spectrum=spectrum)
                key = f"{self.prefix}nfa/{view.name}/delta_"
                metrics.update({key + score: value.item() for score, value in scores.items()})
        return metrics

    def _sum_over(
        self, pl_module: torch.nn.Module, batches: Sequence[Any], generator: torch.Generator | None, device: Any
    ) -> tuple[dict[str, Tensor], Tensor]:
        """This process's sums over its batches, then summed over all processes."""
        self._sums.to(device).reset()
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
                compute_dtype=torch.float64 if self.precision == "64" else None,
            )
            self._sums.update(sums, count)
        totals, n = self._sums.compute()  # summed over processes
        if n == 0:
            raise ConfigurationError("The probe set is empty: the training dataset has no samples to measure.")
        return totals, n

    def _measure(self, trainer: Trainer, pl_module: LightningModule, stage: str = "fit") -> None:
        step = trainer.global_step
        if stage != "fit" and step == 0 and self._checkpoint_step:
            step = self._checkpoint_step  # validate/test on a checkpoint: its step, not the fresh trainer's 0
        if trainer.sanity_checking or (stage == "fit" and step == self._last_step):
            return
        started = time.perf_counter()
        if self._probe is None:
            self._probe = self._build_probe(trainer, pl_module)
        batches = [trainer.strategy.batch_to_device(trainer.precision_plugin.convert_input(b)) for b in self._probe]

        metrics = self.measure(pl_module, batches, step)
        self._last_step = step
        if stage == "fit":
            self.history.append({"step": step, **metrics})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        if self.save_matrices and trainer.is_global_zero:
            label = "" if stage == "fit" else f"{stage}_"
            path = self._run_dir / self.name / f"{label}step_{step:07d}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"step": step, "stage": stage, "matrices": self._kept_matrices()}, path)
        if self.log_images == "all":
            self._log_images(trainer)
        self.seconds += time.perf_counter() - started

    def _log_table(self, trainer: Trainer) -> None:
        """Every measurement's correlations, a row per layer and step, as one W&B table at the end of fit."""
        columns = ["pearson_sqrt", "pearson", "cosine_sqrt", "cosine", "delta_pearson_sqrt"]
        rows = []
        for entry in self.history:
            for view in self.views:
                key = f"{self.prefix}nfa/{view.name}/"
                rows.append([entry["step"], view.name, *(entry.get(key + column) for column in columns)])
        log_table(trainer, f"{self.prefix}nfa/table", ["step", "layer", *columns], rows, self._last_step)

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
        started = time.perf_counter()
        shapes = {view.name: self._picture_shape(view) for view in self.views}
        pictures = measurement_pictures(self._kept_matrices(), shapes, self._last_step, self.prefix)
        log_figures(trainer, pictures, self._last_step, self._run_dir)
        self.seconds += time.perf_counter() - started

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

    def _build_probe(self, trainer: Trainer, pl_module: LightningModule) -> list[Any]:
        """Collate this process's shard of the probe set: ``probe_size`` training samples drawn once with ``seed``
        from the indices the training loader visits, under a forked random state (training is left as it was)."""
        loader = _training_loader(trainer, pl_module)
        dataset = loader.dataset
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise ConfigurationError(
                f"AGOPMonitor draws its probe set by index, and the training dataset `{type(dataset).__name__}` is "
                "iterable-only. Use a map-style dataset (with __len__ and __getitem__) for the training loader."
            )

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)  # random transforms of the dataset, if any, see the same seed every time
            if self._probe_indices is None:
                candidates = torch.as_tensor(_visited_indices(loader), dtype=torch.long)
                order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(self.seed))
                self._probe_indices = candidates[order[: self.probe_size]]
            shard = self._probe_indices[trainer.global_rank :: trainer.world_size].tolist()  # may be empty
            samples = [dataset[i] for i in shard]
        size = self.probe_batch_size
        return [loader.collate_fn(samples[i : i + size]) for i in range(0, len(samples), size)]

    def summary(self) -> str:
        """Per layer, Pearson(NFM, AGOP^1/2) at the first and last measurement; and what the measurements cost."""
        first, last = self.history[0], self.history[-1]
        lines = [f"AGOP monitor: Pearson(NFM, AGOP^1/2), step {first['step']} -> step {last['step']}"]
        for view in self.views:
            key = f"{self.prefix}nfa/{view.name}/pearson_sqrt"
            if key in first and key in last:
                lines.append(f"  {view.name:<40} {first[key]:.3f} -> {last[key]:.3f}")
        cost = f"  {len(self.history)} measurements took {self.seconds:.1f} s"
        if self._fit_started is not None:
            share = self.seconds / max(time.perf_counter() - self._fit_started, 1e-9)
            cost += f", {100 * share:.1f}% of the fit's wall time"
        return "\n".join([*lines, cost])


def _training_loader(trainer: Trainer, pl_module: LightningModule) -> DataLoader:
    """The training DataLoader: the fit's own, else the datamodule's or the module's ``train_dataloader()``."""
    loader = trainer.train_dataloader
    sources = [trainer.datamodule, pl_module] if loader is None else []
    for source in sources:
        if source is None or not is_overridden("train_dataloader", source):
            continue
        try:
            loader = source.train_dataloader()
            break
        except Exception as error:  # a datamodule may build its training set only for fit
            raise ConfigurationError(
                "AGOPMonitor draws its probe set from the training data, but "
                f"`{type(source).__name__}.train_dataloader()` failed outside fit ({error!r}). Build the training set "
                "in `setup()` for every stage, or set `measure_on=['fit']`."
            ) from error
    if loader is None:
        raise ConfigurationError(
            "AGOPMonitor draws its probe set from the training data, and this run has none: pass a datamodule or a "
            "LightningModule with `train_dataloader()` to `trainer.validate`/`trainer.test`, or set "
            "`measure_on=['fit']`."
        )
    if not isinstance(loader, DataLoader):
        raise ConfigurationError(
            "AGOPMonitor needs a single training `DataLoader` to draw its probe set from; "
            f"got `{type(loader).__name__}`."
        )
    return loader


def _visited_indices(loader: DataLoader) -> list[int]:
    """The dataset indices the loader's sampler can visit: a subset sampler's own, else every index."""
    sampler = getattr(loader, "sampler", None)
    indices = getattr(sampler, "indices", None)
    if indices is not None and not isinstance(sampler, DistributedSampler):
        return list(indices)
    return list(range(len(loader.dataset)))


def _layer_metrics(template: str, agop: Tensor, nfm: Tensor, spectrum: Spectrum, top: int) -> dict[str, float]:
    """Scalars of one layer; ``template`` is the key with ``{}`` for the group: ``"{}/net.0"`` -> ``nfa/net.0/...``."""
    nfa, shape = template.format("nfa"), template.format("agop")
    scores = nfa_correlations(nfm, agop, spectrum=spectrum)
    metrics = {f"{nfa}/{key}": value.item() for key, value in scores.items()}
    metrics[f"{shape}/trace"] = agop.trace().item()
    metrics[f"{shape}/effective_rank"] = spectrum.effective_rank().item()
    for i, value in enumerate(spectrum.descending()[:top].tolist(), start=1):
        metrics[f"{shape}/eigval_{i}"] = value
    return metrics
