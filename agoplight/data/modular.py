"""Modular arithmetic ``(a, b) -> a op b mod p``: the task on which networks and RFMs "grok", generalising long
after they fit the training pairs, as their features become Fourier-like (block-circulant AGOP)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from agoplight.data.base import TensorDataModule
from agoplight.errors import ConfigurationError

OPERATIONS = ("+", "-", "*", "/")


class ModularArithmeticDataModule(TensorDataModule):
    """Every pair ``(a, b)`` of residues mod ``p`` as the concatenated one-hot vectors ``[e_a, e_b]`` (``2p``
    features), labelled with the class ``a op b mod p``. A seeded share of the pairs trains; the rest are held out.

    Division is multiplication by the inverse ``b^(p-2) mod p`` (Fermat), so it needs a prime ``p`` and leaves out
    the pairs with ``b = 0``.

    Args:
        p: the modulus (>= 2; prime for ``/``).
        operation: ``+``, ``-``, ``*`` or ``/``.
        train_fraction: share of the pairs in the training set.
        val_fraction: share of the pairs in a validation set of its own. With 0 (the default, as in the grokking
            literature) there is one held-out set, used for both validation and test: the per-iteration validation
            curve is then the test curve.
        **kwargs: ``batch_size``, ``num_workers``, ``seed``, ``shuffle`` (see ``TensorDataModule``).

    Example::

        >>> dm = ModularArithmeticDataModule(p=7, operation="*", train_fraction=0.5)
        >>> dm.setup()
        >>> x, y = dm.train_set.tensors
        >>> x.shape, dm.output_dim
        (torch.Size([24, 14]), 7)
    """

    def __init__(
        self, p: int = 61, operation: str = "+", train_fraction: float = 0.5, val_fraction: float = 0.0, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if not (isinstance(p, int) and p >= 2):
            raise ConfigurationError(f"`p` must be an integer >= 2, got {p!r}.")
        if operation not in OPERATIONS:
            raise ConfigurationError(f"`operation` must be one of {OPERATIONS}, got {operation!r}.")
        if operation == "/" and not _is_prime(p):
            raise ConfigurationError(f"`operation: /` needs a prime `p` (every b != 0 invertible), got p={p}.")
        if not (0 < train_fraction < 1 and 0 <= val_fraction < 1 and train_fraction + val_fraction < 1):
            raise ConfigurationError(
                f"`train_fraction` must be in (0, 1) and `val_fraction` in [0, 1), with a sum below 1; got "
                f"{train_fraction!r} and {val_fraction!r}."
            )
        self.p = p
        self.operation = operation
        self.train_fraction = train_fraction
        self.val_fraction = val_fraction

    @property
    def input_dim(self) -> int:
        return 2 * self.p

    @property
    def output_dim(self) -> int:
        return self.p

    @property
    def feature_names(self) -> list[str]:
        """``a=0 .. a=p-1, b=0 .. b=p-1``: which residue each input coordinate encodes."""
        return [f"{side}={r}" for side in "ab" for r in range(self.p)]

    def pairs(self) -> tuple[Tensor, Tensor, Tensor]:
        """All operand pairs ``a``, ``b`` and their results ``a op b mod p``, in lexicographic order."""
        p = self.p
        a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).T
        if self.operation == "/":
            a, b = a[b != 0], b[b != 0]
        if self.operation == "+":
            c = a + b
        elif self.operation == "-":
            c = a - b
        elif self.operation == "*":
            c = a * b
        else:
            inverse = torch.tensor([pow(int(v), p - 2, p) for v in range(p)])
            c = a * inverse[b]
        return a, b, c.remainder(p)

    def build(self) -> tuple[tuple[Tensor, Tensor], ...]:
        a, b, c = self.pairs()
        x = torch.cat([F.one_hot(a, self.p), F.one_hot(b, self.p)], dim=1).float()  # (N, 2p)

        n = len(c)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        n_train, n_val = round(n * self.train_fraction), round(n * self.val_fraction)
        if n_train < 1 or n_train + n_val >= n:
            raise ConfigurationError(
                f"`train_fraction` {self.train_fraction} and `val_fraction` {self.val_fraction} of {n} pairs leave "
                "an empty split; raise `p` or move the fractions away from 0 and 1."
            )
        train, test = order[:n_train], order[n_train + n_val :]
        val = order[n_train : n_train + n_val] if n_val else test
        return tuple((x[idx], c[idx]) for idx in (train, val, test))


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % k for k in range(2, int(p**0.5) + 1))
