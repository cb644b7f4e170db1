r"""How far a feature matrix is from block-circulant, the structure RFMs and networks learn on modular arithmetic.

For inputs ``[e_a, e_b]`` (two one-hot blocks of ``p``), the learned ``M`` splits into four ``p x p`` blocks. On
``a + b mod p`` each block becomes circulant, ``B[i, j] = g((j - i) mod p)``: its eigenvectors are Fourier modes.
The deviation of a block is the share of its variation off the main diagonal that the nearest circulant matrix
(the mean of each wrapped diagonal) leaves out:

.. math:: \mathrm{dev}(B) = \frac{\|B - \mathcal{C}(B)\|_{F,\,i \ne j}}{\|B - \bar{B}\|_{F,\,i \ne j}} \in [0, 1]

with both norms over the entries ``i != j`` and ``\bar{B}`` their mean: 0 is circulant, 1 has no circulant structure.
The main diagonal is left out because it carries most of a diagonal block's weight and is circulant in any case
(a constant), which would hide the structure of the rest. ``all`` pools the four blocks' squared norms; it is the
summary to watch, since a block whose off-diagonal entries are nearly constant (the diagonal blocks on addition,
once learned) has a ratio of two small numbers.

For ``*`` and ``/`` the blocks are circulant once the residues ``1 .. p-1`` are ordered by their discrete logarithm,
which ``order="log"`` does (residue 0 is left out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from matplotlib.figure import Figure
from torch import Tensor

from agoplight.callbacks.loggers import log_figures
from agoplight.errors import ConfigurationError

__all__ = ["BLOCKS", "CirculantMonitor", "circulant_deviation", "circulant_projection", "discrete_log_order"]

BLOCKS = ("aa", "ab", "ba", "bb")


def circulant_projection(block: Tensor) -> Tensor:
    """The nearest circulant matrix (Frobenius norm) to a square ``block``: each wrapped diagonal's mean."""
    p = block.shape[0]
    i = torch.arange(p, device=block.device)
    diagonal = (i[None, :] - i[:, None]).remainder(p)  # (p, p): which wrapped diagonal each entry is on
    means = block.new_zeros(p).index_add_(0, diagonal.reshape(-1), block.reshape(-1)) / p
    return means[diagonal]


def circulant_deviation(M: Tensor, p: int, order: Literal["natural", "log"] = "natural") -> dict[str, float]:
    """Deviation from circulant of each ``p x p`` block of a ``(2p, 2p)`` matrix, and overall.

    Args:
        M: the matrix, ``(2p, 2p)``, or its diagonal ``(2p,)``.
        p: the modulus.
        order: ``natural`` (residues ``0 .. p-1``, for ``+`` and ``-``) or ``log`` (``1 .. p-1`` by discrete
            logarithm, for ``*`` and ``/``; ``p`` prime).

    Returns:
        ``{"aa", "ab", "ba", "bb", "all"}``; ``all`` pools the four blocks' squared norms.
    """
    M = (torch.diag(M) if M.dim() == 1 else M).double()
    if M.shape != (2 * p, 2 * p):
        raise ConfigurationError(f"Expected a ({2 * p}, {2 * p}) matrix for p={p}, got {tuple(M.shape)}.")
    index = discrete_log_order(p) if order == "log" else list(range(p))

    scores, residual, spread = {}, 0.0, 0.0
    for name in BLOCKS:
        rows = [r + (p if name[0] == "b" else 0) for r in index]
        cols = [c + (p if name[1] == "b" else 0) for c in index]
        block = M[rows][:, cols]
        outside = ~torch.eye(len(index), dtype=torch.bool)  # entries off the main diagonal
        off = (block - circulant_projection(block))[outside].square().sum().item()
        total = (block[outside] - block[outside].mean()).square().sum().item()
        scores[name] = (off / total) ** 0.5 if total > 0 else 0.0
        residual, spread = residual + off, spread + total
    scores["all"] = (residual / spread) ** 0.5 if spread > 0 else 0.0
    return scores


def discrete_log_order(p: int) -> list[int]:
    """``[g^0, g^1, ..., g^(p-2)] mod p`` for the smallest primitive root ``g`` of a prime ``p``."""
    for g in range(2, p) if p > 2 else [1]:
        powers = [pow(g, k, p) for k in range(p - 1)]
        if len(set(powers)) == p - 1:
            return powers
    raise ConfigurationError(f"`order: log` needs a prime modulus, got p={p}.")


class CirculantMonitor(Callback):
    """Log, per RFM iteration, how far the learned ``M`` is from block-circulant, with a picture of the curve.

    Reads ``pl_module.last_step.next_M`` (an ``agoplight.rfm.RFM``) at the end of each training epoch.

    Args:
        p: the modulus of the ``ModularArithmeticDataModule``.
        order: ``natural`` for ``+`` and ``-``, ``log`` for ``*`` and ``/`` (see ``circulant_deviation``).
        log_images: draw the deviation curves and the (reordered) ``M`` every iteration.

    Logged keys: ``circulant/aa``, ``circulant/ab``, ``circulant/ba``, ``circulant/bb``, ``circulant/all``; the
    picture ``circulant/deviation``.

    Example::

        Trainer(max_epochs=25, callbacks=[CirculantMonitor(p=61)])
    """

    def __init__(self, p: int, order: Literal["natural", "log"] = "natural", log_images: bool = True) -> None:
        if not (isinstance(p, int) and p >= 2):
            raise ConfigurationError(f"`p` must be an integer >= 2, got {p!r}.")
        if order not in ("natural", "log"):
            raise ConfigurationError(f"`order` must be 'natural' or 'log', got {order!r}.")
        if order == "log":
            discrete_log_order(p)  # fail early on a modulus that is not prime
        self.p = p
        self.order = order
        self.log_images = log_images
        self.history: list[dict[str, float]] = []
        self._run_dir = Path(".")

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        expected = 2 * self.p
        if getattr(pl_module, "M", None) is None or pl_module.M.shape[0] != expected:
            raise ConfigurationError(
                f"CirculantMonitor(p={self.p}) needs an RFM with a ({expected}, {expected}) metric `M`: use it with "
                f"ModularArithmeticDataModule(p={self.p})."
            )
        self._run_dir = Path(trainer.log_dir or trainer.default_root_dir)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        step = getattr(pl_module, "last_step", None)
        if step is None or step.next_M is None:
            return
        scores = circulant_deviation(step.next_M, self.p, self.order)
        self.history.append(scores)
        pl_module.log_dict({f"circulant/{name}": value for name, value in scores.items()})
        if self.log_images and trainer.is_global_zero:
            iteration = len(self.history) - 1
            log_figures(
                trainer, {"circulant/deviation": self._figure(step.next_M, iteration)}, iteration, self._run_dir
            )

    def state_dict(self) -> dict[str, list[dict[str, float]]]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, list[dict[str, float]]]) -> None:
        self.history = list(state_dict["history"])

    def _figure(self, M: Tensor, iteration: int) -> Figure:
        """The deviation curves so far beside ``M`` in the monitor's order."""
        M = (torch.diag(M) if M.dim() == 1 else M).double().cpu()
        if self.order == "log":
            index = discrete_log_order(self.p)
            index = index + [i + self.p for i in index]
            M = M[index][:, index]

        fig = Figure(figsize=(8.0, 3.4), dpi=90, layout="constrained")
        left, right = fig.subplots(1, 2)
        for name in ("all", "ab"):
            left.plot([entry[name] for entry in self.history], marker="o", markersize=3, label=name)
        left.set_xlabel("iteration")
        left.set_ylabel("deviation from circulant")
        left.set_ylim(0, 1.05)
        left.legend(fontsize=8)
        image = right.imshow(M.numpy(), cmap="viridis", interpolation="nearest")
        right.set_title(f"M ({'discrete-log order' if self.order == 'log' else 'residue order'})", fontsize=10)
        right.set_xticks([])
        right.set_yticks([])
        fig.colorbar(image, ax=right, shrink=0.8)
        fig.suptitle(f"Block-circulant structure, iteration {iteration}", fontsize=11)
        return fig
