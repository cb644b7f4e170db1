"""Which modules count as layers, and how to read their weight and output gradients.

A layer computes ``z = W h (+ b)`` at every position (a token, a patch, or just the sample). The AGOP of its
input ``h`` needs only two things from it: the weight as an ``(out, in)`` matrix, and the output gradients
``dF/dz`` laid out as rows of length ``out``, one per sample and position. Each layer type below supplies those
two; everything else (hooks, estimators, NFM) is shared.

A layer may be measured as several *views*: slices of its output channels with their own rows of ``W``.
GPT-2's fused ``c_attn`` splits into query, key and value this way (by default), attention projections into heads
(on request, ``split="heads"``), and a grouped convolution into its groups (each group sees its own input
channels, so its patch is its own space).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from agoplight.errors import ConfigurationError

__all__ = ["Layer", "Split", "View", "find_layers", "find_views", "layer_names", "supported"]

# How a layer's outputs are cut into views: ``{suffix: n}`` equal slices, or ``"heads"`` (see ``Layer.views``).
Split = dict[str, int] | str


class Layer:
    """A named module whose weight multiplies an input at each position.

    Args:
        name: the module's qualified name in the model, e.g. ``"net.0"``.
        module: the module itself.
        parts: the named parts of a fused layer, its default views, e.g. ``{"q": 1, "k": 1, "v": 1}`` for GPT-2's
            ``c_attn``; None for a layer measured whole.
        heads: the per-head slices of an attention projection, e.g. ``{"q": 12, "k": 12, "v": 12}``; None when
            the layer is not one.
    """

    def __init__(
        self, name: str, module: nn.Module, parts: dict[str, int] | None = None, heads: dict[str, int] | None = None
    ) -> None:
        self.name = name
        self.module = module
        self.parts = parts
        self.heads = heads

    def weight(self) -> Tensor:
        """The weight as ``(out, in)``, ``in`` being the size of one position's input."""
        return self.module.weight

    def rows(self, grad_z: Tensor) -> Tensor:
        """Output gradients ``(..., out)`` as rows ``(N, out)``, one per sample, position and projection."""
        return grad_z.reshape(-1, grad_z.shape[-1])

    @property
    def groups(self) -> int:
        return 1

    def views(self, split: Split | None = None) -> list[View]:
        """The views measured for this layer: the whole layer, or its groups, or named equal slices.

        Args:
            split: None for the layer's own parts (query, key and value of a fused ``c_attn``; otherwise the whole
                layer); ``{}`` for the whole layer; ``"heads"`` for one view per attention head; or ``{suffix: n}``
                pairs, each cutting its equal share of the output channels into ``n`` equal slices named
                ``<layer>.<suffix><i>`` (``n == 1`` drops the index).

        Raises:
            ConfigurationError: ``"heads"`` for a layer that is no recognised attention projection; slices that do
                not cut the output channels into equal, non-empty parts.
        """
        out = self.weight().shape[0]
        if self.groups > 1:
            size = out // self.groups
            return [View(f"{self.name}.group{g}", self, slice(g * size, (g + 1) * size)) for g in range(self.groups)]
        if split is None:
            split = self.parts
        elif isinstance(split, str):
            if split != "heads" or self.heads is None:
                raise ConfigurationError(
                    f"`split` for `{self.name}` is {split!r}; 'heads' works for attention query, key and value "
                    "projections (GPT-2's c_attn, q_proj/k_proj/v_proj of attention modules with `head_dim`), "
                    "otherwise pass {suffix: n} slices."
                )
            split = self.heads
        if not split:
            return [View(self.name, self, slice(0, out))]

        counts = list(split.values())
        if any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in counts) or (
            out % len(split) or any((out // len(split)) % n for n in counts)
        ):
            raise ConfigurationError(
                f"`split` for `{self.name}` is {split}, which does not cut its {out} output channels into equal "
                f"parts: each of the {len(split)} suffixes owns {out}/{len(split)} channels, cut into its count of "
                "equal slices. Choose counts that divide them, or {} for the whole layer."
            )
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
                module = dict(model.named_modules()).get(pattern)
                kind = "" if module is None else f" (it is a `{type(module).__name__}`, which has no weight to measure)"
                raise ConfigurationError(
                    f"Layer `{pattern}` matches no measurable layer of `{type(model).__name__}`{kind}. "
                    f"Layers that exist: {_listing(available)}."
                )
            chosen.extend(name for name in matches if name not in chosen)

    modules = dict(model.named_modules())
    layers = []
    for name in chosen:
        layer = supported(modules[name])(name, modules[name])
        parent, _, attr = name.rpartition(".")
        layer.parts, layer.heads = _attention_slices(modules[parent], attr, layer.weight().shape[0])
        layers.append(layer)
    return layers


def find_views(
    model: nn.Module, names: Sequence[str] | None = None, split: Mapping[str, Split] | None = None
) -> list[View]:
    """The views measured for the chosen layers: ``find_layers`` then ``Layer.views`` with each layer's split.

    Args:
        model: the network.
        names: layer names or ``fnmatch`` patterns; None selects every supported layer.
        split: ``{layer name or pattern: split}`` (see ``Layer.views``); an exact name wins over patterns, and
            among patterns the first that matches. Layers not named keep their own parts.

    Raises:
        ConfigurationError: a ``split`` key matches no chosen layer.
    """
    layers = find_layers(model, names)
    split = dict(split or {})
    used = set()
    views = []
    for layer in layers:
        patterns = (key for key in split if fnmatch.fnmatchcase(layer.name, key))
        key = layer.name if layer.name in split else next(patterns, None)
        if key is not None:
            used.add(key)
        views.extend(layer.views(split.get(key)))
    unknown = set(split) - used
    if unknown:
        measured = _listing(layer.name for layer in layers)
        raise ConfigurationError(f"`split` names {sorted(unknown)}, which match no measured layer: {measured}.")
    return views


def _attention_slices(attention: nn.Module, attr: str, out: int) -> tuple[dict[str, int] | None, dict[str, int] | None]:
    """``(parts, heads)`` of a query/key/value projection, read from its attention module; ``(None, None)`` else.

    Recognised: GPT-2's fused ``c_attn`` (query, key, value; key and value in cross-attention) and ``q_attn``,
    and the ``q_proj``/``k_proj``/``v_proj`` of attention modules that store their ``head_dim`` (Llama and the
    families built like it; grouped-query key/value projections have fewer heads).
    """
    head_dim = getattr(attention, "head_dim", None)
    if not isinstance(head_dim, int) or head_dim < 1 or out % head_dim:
        return None, None
    embed_dim = getattr(attention, "embed_dim", None)
    if attr == "c_attn" and isinstance(embed_dim, int) and out in (2 * embed_dim, 3 * embed_dim):
        names = ("q", "k", "v")[-(out // embed_dim) :]  # (query,) key, value, in the order GPT-2 splits them
        return dict.fromkeys(names, 1), dict.fromkeys(names, embed_dim // head_dim)
    if attr in ("q_proj", "k_proj", "v_proj", "q_attn"):
        return None, {"head": out // head_dim}
    return None, None


def _listing(names: Iterable[str], limit: int = 40) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names) - limit} more)"


def output_rows(view: View, grad_z: Tensor) -> Tensor:
    """The rows ``(N, out_v)`` of one view from the output gradient of its layer."""
    return view.layer.rows(grad_z)[:, view.out]
