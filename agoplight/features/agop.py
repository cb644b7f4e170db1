"""AGOP of layer inputs by the output-gradient mechanism.

A layer computes ``z = W h (+ b)`` at each position, so through that layer ``dF/dh = W^T dF/dz``. With
``G = sum over samples and positions of (dF/dz)(dF/dz)^T``, the layer's AGOP is ``W^T G W / n``. One forward
pass with hooks on the chosen layers records every ``z``; batched vector-Jacobian products of the outputs
``F`` then give ``dF/dz`` at all layers at once, for all samples at once:

- ``exact``: one product per output component (``c`` of them), which sums to ``J^T J`` exactly.
- ``sketch``: ``k`` Gaussian projections ``v^T F``; ``E[J^T v v^T J] = J^T J``, so the mean is unbiased and the
  cost is ``k`` products whatever the output size (language models' vocabularies).

Samples must not interact (eval mode: BatchNorm uses running statistics, dropout is off). Gradients come from
``torch.autograd.grad``: no ``.backward()``, so the users' ``.grad`` stay untouched.

Sums rather than means leave this module, so that probe batches and processes can be added before dividing
by ``n`` (see ``agop_from_sums``). Each view's sum lives in the smaller of two spaces: ``G`` (``out x out``) or
directly the input space (``in x in``), whichever makes the accumulation cheaper.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map_only

from agoplight.errors import ConfigurationError
from agoplight.features.layers import Layer, Split, View, find_views
from agoplight.features.linalg import gram

__all__ = [
    "Estimator",
    "UnusedLayersError",
    "ForwardFn",
    "agop",
    "agop_from_sums",
    "agop_sums",
    "default_forward",
    "input_space",
    "measurement_mode",
    "sum_shape",
]

Estimator = Literal["exact", "sketch", "auto"]
# "auto" is exact up to this many outputs per sample (one backward pass each) and the sketch beyond: language
# models' outputs are vocabulary-sized (a block of 64 tokens over 257 byte values has 16,448 per sample).
EXACT_MAX_OUTPUTS = 1024
ForwardFn = Callable[[nn.Module, Any], Tensor]


def default_forward(model: nn.Module, batch: Any) -> Tensor:
    """Call ``model`` on a batch the way most datasets build it, and return its outputs (logits).

    ``(x, y, ...)`` calls ``model(x)``, a mapping calls ``model(**batch)`` without ``labels``, anything else
    ``model(batch)``. Outputs with a ``logits`` field (transformers) give that field; a tuple its first entry.
    """
    if isinstance(batch, (tuple, list)):
        out = model(batch[0])
    elif isinstance(batch, Mapping):
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        try:
            out = model(**inputs)
        except TypeError as error:  # the batch's keys are not the forward's arguments
            raise ConfigurationError(
                f"Calling `{type(model).__name__}(**batch)` with the batch's keys {sorted(inputs)} failed ({error}). "
                "Pass `forward_fn=lambda model, batch: model(batch[...])` to say how the model takes a batch."
            ) from error
    elif isinstance(batch, Tensor):
        out = model(batch)
    else:
        try:
            out = model(batch)
        except (TypeError, AttributeError) as error:  # e.g. a dataclass or custom batch object
            raise ConfigurationError(
                f"Calling `{type(model).__name__}` on a batch of type `{type(batch).__name__}` failed ({error}). "
                "Pass `forward_fn=lambda model, batch: model(batch.<inputs>)` to say how the model takes a batch."
            ) from error

    if isinstance(out, Tensor):
        return out
    logits = out.get("logits") if isinstance(out, Mapping) else getattr(out, "logits", None)
    if logits is None and isinstance(out, (tuple, list)):
        logits = out[0]
    if not isinstance(logits, Tensor):
        raise ConfigurationError(
            f"The model returned `{type(out).__name__}`, not logits agoplight can differentiate. "
            "Pass `forward_fn=lambda model, batch: <the output tensor>`."
        )
    return logits


def input_space(view: View) -> bool:
    """Whether a view's sum is kept in input space (``in x in``) rather than as ``G`` (``out x out``).

    ``G`` costs ``out^2`` per row; projecting each row to input space first costs ``out*in + in^2``.
    """
    out, inp = view.shape
    return out * out > inp * (out + inp)


def sum_shape(view: View) -> tuple[int, int]:
    """Shape of the sum ``agop_sums`` returns for a view."""
    out, inp = view.shape
    return (inp, inp) if input_space(view) else (out, out)


def agop_from_sums(view: View, total: Tensor, n: int | Tensor) -> Tensor:
    """The view's AGOP ``(in, in)`` from its sum over ``n`` samples: ``W^T G W / n`` or the input-space sum over n."""
    if input_space(view):
        return total / n
    w = view.weight().detach().to(total.dtype)  # (out_v, in)
    return w.T @ total @ w / n


@contextlib.contextmanager
def measurement_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode with gradients on, even inside ``no_grad``/``inference_mode``; autocast off (float32 maths).

    Each submodule's own ``training`` flag is restored afterwards, so partly frozen models stay as they were.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    device_type = next(model.parameters(), torch.empty(0)).device.type
    try:
        with (
            torch.inference_mode(False),
            torch.enable_grad(),
            torch.autocast(device_type=device_type, enabled=False),
            _eager(model),
        ):
            yield
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def _eager(model: nn.Module) -> Iterator[None]:
    """Run compiled modules eagerly: a compiled graph neither calls the hooks added for the measurement nor keeps
    the captured outputs on its gradient path. Undone afterwards, so training stays compiled.

    Covers ``module.compile()``, a forward replaced by ``torch.compile(module.forward)``, and Lightning's handling
    of ``trainer.fit(torch.compile(model))`` (which does the latter and keeps the original in ``_compiler_ctx``).
    """
    undo = []
    for module in model.modules():
        if getattr(module, "_compiled_call_impl", None) is not None:
            undo.append((module, "_compiled_call_impl", module._compiled_call_impl))
            module._compiled_call_impl = None
        original = (getattr(module, "_compiler_ctx", None) or {}).get("original_forward")
        original = original or getattr(module.__dict__.get("forward"), "_torchdynamo_orig_callable", None)
        if original is not None:
            undo.append((module, "forward", module.__dict__["forward"]))
            module.forward = original
    try:
        yield
    finally:
        for module, attribute, value in reversed(undo):
            setattr(module, attribute, value)


def _capture(layers: Sequence[Layer]) -> tuple[dict[str, list[Tensor]], list[Any]]:
    """Forward hooks that record each layer's output ``z`` (every call, for shared layers)."""
    outputs: dict[str, list[Tensor]] = {layer.name: [] for layer in layers}

    def hook_for(name: str) -> Callable:
        def hook(module: nn.Module, args: Any, z: Tensor) -> Tensor:
            if not isinstance(z, Tensor):
                raise ConfigurationError(f"Layer `{name}` returned `{type(z).__name__}`; agoplight needs a tensor.")
            if not z.requires_grad:
                # Nothing upstream needs gradients (frozen weights, integer inputs): make z a leaf of its own.
                z = z.detach().requires_grad_()
            outputs[name].append(z)
            # The rest of the model gets a copy: an in-place op downstream (ReLU(inplace=True)) would otherwise
            # overwrite the z we differentiate with respect to.
            return z.clone()

        return hook

    handles = [layer.module.register_forward_hook(hook_for(layer.name)) for layer in layers]
    return outputs, handles


def _grad_outputs(
    logits: Tensor, estimator: Estimator, num_projections: int, chunk_size: int, generator: torch.Generator | None
) -> Iterator[Tensor]:
    """Chunks ``(m, *logits.shape)`` of output directions: unit vectors (exact) or Gaussians (sketch)."""
    n = logits.shape[0]
    components = logits[0].numel()
    total = components if estimator == "exact" else num_projections
    for start in range(0, total, chunk_size):
        m = min(chunk_size, total - start)
        if estimator == "exact":
            directions = logits.new_zeros(m, n, components)
            directions[torch.arange(m), :, torch.arange(start, start + m)] = 1.0
            yield directions.view(m, *logits.shape)
        else:
            yield torch.randn((m, *logits.shape), generator=generator, device=logits.device, dtype=logits.dtype)


def agop_sums(
    model: nn.Module,
    batch: Any,
    views: Sequence[View],
    *,
    estimator: Estimator = "auto",
    num_projections: int = 16,
    chunk_size: int = 16,
    forward_fn: ForwardFn = default_forward,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    compute_dtype: torch.dtype | None = None,
) -> tuple[dict[str, Tensor], int]:
    """Sums over the batch's samples and positions of each view's gradient outer products, and the sample count.

    Args:
        model: the network; put in eval mode for the measurement and restored afterwards.
        batch: one batch of inputs, as the model's data loader yields it.
        views: the views to measure (``Layer.views()`` of layers from ``find_layers``).
        estimator: ``"exact"``, ``"sketch"``, or ``"auto"``: exact for at most ``EXACT_MAX_OUTPUTS`` outputs per
            sample, the sketch for more.
        num_projections: ``k``, the number of Gaussian projections of the sketch.
        chunk_size: output directions per batched backward pass; bounds memory at ``chunk_size`` gradients.
        forward_fn: ``(model, batch) -> logits``, the outputs ``F`` whose Jacobian is measured.
        generator: random source of the sketch, for reproducible measurements.
        dtype: accumulation dtype.
        compute_dtype: dtype of the forward and backward passes. None keeps float32/float64 models as they are
            and runs half-precision (``bf16-true``, ``16-true``) models in float32; autocast is always off.

    Returns:
        ``({view name: sum of shape sum_shape(view)}, n)``; sketch sums are already divided by ``k``.
    """
    if estimator not in ("exact", "sketch", "auto"):
        raise ConfigurationError(
            f"`estimator` must be 'exact' or 'sketch', got {estimator!r} (or 'auto', which picks one by the number "
            "of outputs)."
        )
    model = getattr(model, "_orig_mod", model)  # torch.compile(model) wraps it; _eager runs the original
    layers = list({id(view.layer): view.layer for view in views}.values())
    device = next(model.parameters()).device
    cast = _cast_dtype(model, compute_dtype)

    with measurement_mode(model):
        batch = tree_map_only(Tensor, lambda t: _probe_tensor(t, device, cast), batch)
        outputs, handles = _capture(layers)
        try:
            logits = _forward(model, batch, forward_fn, cast)
        finally:
            for handle in handles:
                handle.remove()
        _check_logits(logits, outputs)
        if estimator == "auto":
            estimator = "exact" if logits[0].numel() <= EXACT_MAX_OUTPUTS else "sketch"

        captured = [z for layer in layers for z in outputs[layer.name]]
        sums = {view.name: torch.zeros(sum_shape(view), dtype=dtype, device=device) for view in views}
        weights = {view.name: view.weight().detach().to(cast or logits.dtype) for view in views if input_space(view)}
        # Directions are drawn one chunk at a time: a chunk of a language model's are `chunk_size` logit tensors.
        # TODO: each chunk still holds the output gradients of every measured layer at once (chunk_size x tokens x
        # the sum of their widths: 1.4 GB per direction for all blocks of GPT-2 on 16 x 256 tokens). Adding each
        # layer's rows to its sum in a tensor hook during the backward pass would hold one layer's at a time.
        directions_total = logits[0].numel() if estimator == "exact" else num_projections
        last = (directions_total - 1) // chunk_size
        chunks = _grad_outputs(logits.detach(), estimator, num_projections, chunk_size, generator)
        for i, directions in enumerate(chunks):
            grads = torch.autograd.grad(
                logits,
                captured,
                grad_outputs=directions,
                is_grads_batched=True,
                retain_graph=i < last,
                allow_unused=True,
            )  # each (m, *z.shape)
            grads_by_layer = _group(grads, layers, outputs)
            disconnected = [name for name, layer_grads in grads_by_layer.items() if not layer_grads]
            if disconnected:
                raise UnusedLayersError(disconnected)
            for view in views:
                for grad_z in grads_by_layer[view.layer.name]:
                    rows = view.layer.rows(grad_z)[:, view.out]  # (m * n * positions, out_v)
                    if view.name in weights:
                        rows = rows @ weights[view.name]  # (m * n * positions, in): dF/dh itself
                    # the product in the compute dtype (a float64 GEMM costs 2-4x), the running sum in `dtype`
                    sums[view.name] += gram(rows).to(dtype)

    if estimator == "sketch":
        for total in sums.values():
            total /= num_projections
    return sums, logits.shape[0]


def _cast_dtype(model: nn.Module, compute_dtype: torch.dtype | None) -> torch.dtype | None:
    """The dtype to run the measurement in, or None when the model's own parameters already are right."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if compute_dtype is None:
        return torch.float32 if dtypes & {torch.float16, torch.bfloat16} else None
    return None if dtypes == {compute_dtype} else compute_dtype


def _probe_tensor(t: Tensor, device: torch.device, cast: torch.dtype | None) -> Tensor:
    """A probe tensor on the model's device, cloned so that no inference tensor enters the graph."""
    dtype = cast if cast is not None and t.is_floating_point() else t.dtype
    return t.to(device=device, dtype=dtype).clone()


class _Call(nn.Module):
    """``forward_fn(model, batch)`` as a module, so that ``functional_call`` can swap the model's parameters."""

    def __init__(self, model: nn.Module, forward_fn: ForwardFn) -> None:
        super().__init__()
        self.model = model
        self.forward_fn = forward_fn

    def forward(self, batch: Any) -> Tensor:
        return self.forward_fn(self.model, batch)


def _forward(model: nn.Module, batch: Any, forward_fn: ForwardFn, cast: torch.dtype | None) -> Tensor:
    """The outputs, with parameters and buffers cast to ``cast`` for this call only (the model is untouched)."""
    if cast is None:
        return forward_fn(model, batch)
    state = {
        f"model.{name}": tensor.to(cast) if tensor.is_floating_point() else tensor
        for name, tensor in (*model.named_parameters(), *model.named_buffers())
    }
    return torch.func.functional_call(_Call(model, forward_fn), state, (batch,))


class UnusedLayersError(ConfigurationError):
    """Chosen layers that the forward pass never called or the outputs do not depend on; ``names`` lists them."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(
            f"Layers {names} were not called by the forward pass, or the outputs do not depend on them, so they "
            "have no AGOP. Measure layers the model's outputs use, or pass a `forward_fn` that runs them."
        )
        self.names = names


def _check_logits(logits: Tensor, outputs: dict[str, list[Tensor]]) -> None:
    if not isinstance(logits, Tensor) or not torch.is_floating_point(logits):
        raise ConfigurationError("`forward_fn` must return the model's floating-point outputs (logits).")
    if logits.dim() == 0:
        raise ConfigurationError(
            "The forward pass returned a single number (a loss?); the AGOP needs the outputs of each sample, shaped "
            "(batch, ...). Make `forward_fn` return the model's logits, not the loss."
        )
    unused = [name for name, zs in outputs.items() if not zs]
    if unused:
        raise UnusedLayersError(unused)
    if not logits.requires_grad:
        raise ConfigurationError("The outputs do not depend on any chosen layer; no AGOP can be measured.")


def _group(
    grads: Sequence[Tensor | None], layers: Sequence[Layer], outputs: dict[str, list[Tensor]]
) -> dict[str, list[Tensor]]:
    """Split the flat gradient list back into each layer's calls; unused outputs get no gradient."""
    grouped: dict[str, list[Tensor]] = {}
    i = 0
    for layer in layers:
        calls = len(outputs[layer.name])
        grouped[layer.name] = [g for g in grads[i : i + calls] if g is not None]
        i += calls
    return grouped


def agop(
    model: nn.Module,
    batches: Tensor | Iterable[Any],
    layers: Sequence[str] | None = None,
    *,
    split: Mapping[str, Split] | None = None,
    **kwargs: Any,
) -> dict[str, Tensor]:
    r"""AGOP ``mean over samples, sum over positions of (dF/dh)(dF/dh)^T`` of the inputs of chosen layers.

    .. math::
        \mathrm{AGOP}(h) = \frac{1}{n} \sum_{i} \sum_{p} J_{ip}^\top J_{ip},
        \qquad J_{ip} = \partial F(x_i) / \partial h_{ip}

    Args:
        model: the network.
        batches: probe inputs: a tensor (one batch) or an iterable of batches such as a ``DataLoader``.
        layers: layer names or ``fnmatch`` patterns (None: every supported layer).
        split: per layer name or pattern, how its outputs are cut into views: ``{suffix: n}`` slices, ``"heads"``,
            ``{}`` for the whole layer (see ``Layer.views``); GPT-2's ``c_attn`` gives query, key and value unless told.
        **kwargs: passed to ``agop_sums`` (estimator, num_projections, chunk_size, forward_fn, generator, dtype).

    Returns:
        ``{view name: AGOP (in, in)}``.

    Example::

        >>> net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> {name: tuple(m.shape) for name, m in agop(net, torch.randn(32, 5)).items()}
        {'0': (5, 5), '2': (8, 8)}
    """
    model = getattr(model, "_orig_mod", model)  # torch.compile(model): the layers are those of the original
    views = find_views(model, layers, split)
    if isinstance(batches, Tensor):
        batches = [batches]

    totals: dict[str, Tensor] = {}
    n = 0
    for batch in batches:
        sums, count = agop_sums(model, batch, views, **kwargs)
        totals = sums if not totals else {name: totals[name] + sums[name] for name in sums}
        n += count
    if n == 0:
        raise ConfigurationError("`batches` is empty: the AGOP needs at least one probe sample.")
    return {view.name: agop_from_sums(view, totals[view.name], n) for view in views}
