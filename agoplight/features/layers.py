"""Which modules count as layers, and how to read their weight and output gradients.

A layer computes ``z = W h (+ b)`` at every position (a token, a patch, or just the sample). The AGOP of its
input ``h`` needs only two things from it: the weight as an ``(out, in)`` matrix, and the output gradients
``dF/dz`` laid out as rows of length ``out``, one per sample and position. Each layer type below supplies those
two; everything else (hooks, estimators, NFM) is shared.

A layer may be measured as several *views*: slices of its output channels with their own rows of ``W``.
GPT-2's fused ``c_attn`` splits into query, key and value this way, attention projections into heads, and a
grouped convolution into its groups (each group sees its own input channels, so its patch is its own space).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from agoplight.errors import ConfigurationError

__all__ = ["Layer", "View", "find_layers", "layer_names", "supported"]


class Layer:
    """A named module whose weight multiplies an input at each position.

    Args:
        name: the module's qualified name in the model, e.g. ``"net.0"``.
        module: the module itself.
    """

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name = name
        self.module = module

    def weight(self) -> Tensor:
        """The weight as ``(out, in)``, ``in`` being the size of one position's input."""
        return self.module.weight

    def rows(self, grad_z: Tensor) -> Tensor:
        """Output gradients ``(..., out)`` as rows ``(N, out)``, one per sample, position and projection."""
        return grad_z.reshape(-1, grad_z.shape[-1])

    @property
    def groups(self) -> int:
        return 1

    def views(self, split: dict[str, int] | None = None) -> list[View]:
        """The views measured for this layer: the whole layer, or its groups, or named equal slices.

        Args:
            split: optional ``{suffix: n}`` pairs; each cuts the output channels into ``n`` equal slices named
                ``<layer>.<suffix><i>`` (``n == 1`` drops the index). Used for fused query/key/value and heads.
        """
        out = self.weight().shape[0]
        if self.groups > 1:
            size = out // self.groups
            return [View(f"{self.name}.group{g}", self, slice(g * size, (g + 1) * size)) for g in range(self.groups)]
        if not split:
            return [View(self.name, self, slice(0, out))]

        part = out // len(split)  # each suffix owns an equal part of the outputs, e.g. q, k, v of a fused layer
        views = []
        for p, (suffix, n) in enumerate(split.items()):
            size = part // n
            for i in range(n):
                start = p * part + i * size
                label = suffix if n == 1 else f"{suffix}{i}"
                views.append(View(f"{self.name}.{label}", self, slice(start, start + size)))
        return views


class LinearLayer(Layer):
    """``nn.Linear``: ``W`` is stored ``(out, in)``; positions are all leading dimensions (tokens, ...)."""


class ConvLayer(Layer):
    """``nn.Conv1d``/``nn.Conv2d``: each output position applies ``W`` (flattened to ``(c_out, c_in/groups*k*k)``)
    to one patch, so ``dF/dpatch = W^T dF/dz`` there and patch positions simply add up."""

    def weight(self) -> Tensor:
        w = self.module.weight  # (c_out, c_in / groups, *kernel)
        return w.reshape(w.shape[0], -1)

    def rows(self, grad_z: Tensor) -> Tensor:
        # (..., c_out, *spatial) -> (..., *spatial, c_out): channels last, then one row per position
        spatial = self.module.weight.dim() - 2
        return grad_z.movedim(-spatial - 1, -1).reshape(-1, grad_z.shape[-spatial - 1])

    @property
    def groups(self) -> int:
        return self.module.groups


class TransposedWeightLayer(Layer):
    """transformers' ``Conv1D`` (GPT-2): a linear layer whose weight is stored ``(in, out)``."""

    def weight(self) -> Tensor:
        return self.module.weight.t()


@dataclass(frozen=True)
class View:
    """A slice ``out`` of a layer's output channels, measured as a layer of its own."""

    name: str
    layer: Layer
    out: slice

    def weight(self) -> Tensor:
        """This view's rows of ``W``: ``(out_v, in)``."""
        return self.layer.weight()[self.out]

    @property
    def shape(self) -> tuple[int, int]:
        out = self.out.stop - self.out.start
        return out, self.layer.weight().shape[1]


def _transposed_weight_types() -> tuple[type, ...]:
    # transformers is optional at import time: only check for its Conv1D when it is already loaded.
    import sys

    module = sys.modules.get("transformers.pytorch_utils")
    return (module.Conv1D,) if module is not None else ()


def supported(module: nn.Module) -> type[Layer] | None:
    """The ``Layer`` class that handles ``module``, or None when it is not a layer agoplight can measure."""
    if isinstance(module, nn.Linear):
        return LinearLayer
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return ConvLayer
    if isinstance(module, _transposed_weight_types()):
        return TransposedWeightLayer
    return None


def layer_names(model: nn.Module) -> list[str]:
    """Names of every module in ``model`` that agoplight can measure, in registration order."""
    return [name for name, module in model.named_modules() if name and supported(module) is not None]


def find_layers(model: nn.Module, names: Sequence[str] | None = None) -> list[Layer]:
    """Resolve layer names (or ``fnmatch`` patterns such as ``"transformer.h.*.mlp.c_fc"``) to layers.

    Args:
        model: the network.
        names: names or patterns; None selects every supported layer.

    Raises:
        ConfigurationError: a name matches no supported layer; the message lists the layers that exist.
    """
    available = layer_names(model)
    if not available:
        raise ConfigurationError(
            f"`{type(model).__name__}` has no layer agoplight can measure (nn.Linear, nn.Conv1d, nn.Conv2d, "
            "transformers' Conv1D)."
        )
    if names is None:
        chosen = available
    else:
        if isinstance(names, str):
            names = [names]
        chosen = []
        for pattern in names:
            matches = [name for name in available if fnmatch.fnmatchcase(name, pattern)]
            if not matches:
                raise ConfigurationError(
                    f"Layer `{pattern}` matches no measurable layer of `{type(model).__name__}`. "
                    f"Layers that exist: {_listing(available)}."
                )
            chosen.extend(name for name in matches if name not in chosen)

    modules = dict(model.named_modules())
    return [supported(modules[name])(name, modules[name]) for name in chosen]


def _listing(names: Iterable[str], limit: int = 40) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names) - limit} more)"


def output_rows(view: View, grad_z: Tensor) -> Tensor:
    """The rows ``(N, out_v)`` of one view from the output gradient of its layer."""
    return view.layer.rows(grad_z)[:, view.out]
