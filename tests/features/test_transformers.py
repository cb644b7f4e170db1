"""AGOP of every projection of tiny transformers' GPT-2 and Llama, against brute-force per-sample Jacobians."""

import importlib
import re
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from agoplight import ConfigurationError
from agoplight.features import agop, find_layers, find_views, nfm_of
from agoplight.features.layers import TransposedWeightLayer
from tests.reference import brute_force_agop

transformers = pytest.importorskip("transformers")
# jacrev (functorch's vmap) has no batching rule for the CPU flash-attention backward and loops instead: slow, exact
pytestmark = [
    pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning"),
    pytest.mark.usefixtures("one_thread"),
]

DTYPE = torch.float64
VOCAB, TOKENS = 24, 5


def forward(model: nn.Module, x: Tensor) -> Tensor:
    return model(input_ids=x, use_cache=False).logits


def gpt2(attn_implementation: str = "sdpa", n_layer: int = 2) -> nn.Module:
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=8, n_embd=32, n_layer=n_layer, n_head=4, bos_token_id=None,
        eos_token_id=None, attn_implementation=attn_implementation,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config).to(DTYPE).eval()


def llama(attn_implementation: str = "sdpa", n_layer: int = 2) -> nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=n_layer, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=8, bos_token_id=None, eos_token_id=None,
        attn_implementation=attn_implementation,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).to(DTYPE).eval()


def tokens(n: int = 3) -> Tensor:
    return torch.randint(0, VOCAB, (n, TOKENS))


def reference(model: nn.Module, x: Tensor, view: Any) -> Tensor:
    """Brute-force AGOP of a view: the whole-layer reference when the view is the whole layer."""
    whole = view.out == slice(0, view.layer.weight().shape[0])
    return brute_force_agop(model, x, view.layer.module, forward, out=None if whole else view.out)


def assert_matches_brute_force(model: nn.Module, x: Tensor, names: list[str], split: Any = None) -> list[str]:
    views = find_views(model, names, split)
    measured = agop(model, x, names, split=split, forward_fn=forward, chunk_size=256)
    for view in views:
        expected = reference(model, x, view)
        torch.testing.assert_close(measured[view.name], expected, rtol=1e-9, atol=1e-12, msg=view.name)
    return [view.name for view in views]


def relative_error(a: Tensor, b: Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


# ---- exact estimator against brute force ----------------------------------------------------------------------


def test_gpt2_every_projection_of_every_block_matches_brute_force():
    model, x = gpt2(), tokens()
    names = assert_matches_brute_force(model, x, ["transformer.h.*"])
    assert names[:6] == [
        "transformer.h.0.attn.c_attn.q",
        "transformer.h.0.attn.c_attn.k",
        "transformer.h.0.attn.c_attn.v",
        "transformer.h.0.attn.c_proj",
        "transformer.h.0.mlp.c_fc",
        "transformer.h.0.mlp.c_proj",
    ]
    assert len(names) == 12


def test_llama_every_projection_of_every_block_matches_brute_force():
    model, x = llama(), tokens()
    names = assert_matches_brute_force(model, x, ["model.layers.*"])
    projections = ["q_proj", "k_proj", "v_proj", "o_proj"]
    expected = [f"model.layers.0.self_attn.{p}" for p in projections]
    expected += [f"model.layers.0.mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj")]
    assert names[:7] == expected and len(names) == 14


@pytest.mark.parametrize("build", [gpt2, llama])
def test_eager_attention_gives_the_same_agop_as_sdpa(build):
    x = tokens()
    torch.manual_seed(1)
    sdpa = build("sdpa", n_layer=1)
    torch.manual_seed(1)
    eager = build("eager", n_layer=1)
    first = agop(sdpa, x, forward_fn=forward, chunk_size=256)
    second = agop(eager, x, forward_fn=forward, chunk_size=256)
    # Llama's eager kernel takes its softmax in float32 even in a float64 model; GPT-2's stays in float64.
    rtol = 1e-9 if build is gpt2 else 1e-5
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=rtol, atol=rtol * first[name].abs().max().item())


def test_per_head_views_match_brute_force_and_add_up_to_the_projection():
    model, x = gpt2(n_layer=1), tokens(2)
    name = "transformer.h.0.attn.c_attn"
    heads = find_views(model, [name], {name: "heads"})
    assert [view.name.rpartition(".")[2] for view in heads] == [f"{p}{h}" for p in "qkv" for h in range(4)]
    assert [view.out for view in heads[4:6]] == [slice(32, 40), slice(40, 48)]  # key heads follow the queries

    measured = agop(model, x, [name], split={name: "heads"}, forward_fn=forward, chunk_size=256)
    for view in (heads[1], heads[6]):  # a query head and a key head
        torch.testing.assert_close(measured[view.name], reference(model, x, view), rtol=1e-9, atol=1e-12)
    query = find_views(model, [name])[0]
    torch.testing.assert_close(sum(nfm_of(view) for view in heads[:4]), nfm_of(query))


def test_llama_heads_follow_grouped_query_attention():
    model, x = llama(n_layer=1), tokens(2)
    split = {"model.layers.0.self_attn.[qk]_proj": "heads"}
    views = find_views(model, ["model.layers.0.self_attn.[qk]_proj"], split)
    assert [view.name.rpartition(".")[2] for view in views] == [f"head{h}" for h in range(4)] + ["head0", "head1"]
    assert {view.shape for view in views} == {(8, 32)}
    measured = agop(model, x, ["model.layers.0.self_attn.k_proj"], split=split, forward_fn=forward, chunk_size=256)
    view = views[-1]
    torch.testing.assert_close(measured[view.name], reference(model, x, view), rtol=1e-9, atol=1e-12)


def test_split_options_and_errors():
    model = gpt2(n_layer=1)
    whole = find_views(model, ["transformer.h.0.attn.c_attn"], {"transformer.h.0.attn.c_attn": {}})
    assert [(view.name, view.shape) for view in whole] == [("transformer.h.0.attn.c_attn", (96, 32))]
    with pytest.raises(ConfigurationError, match="'heads' works for attention query, key and value"):
        find_views(model, ["transformer.h.0.mlp.c_fc"], {"transformer.h.0.mlp.c_fc": "heads"})
    with pytest.raises(ConfigurationError, match=re.escape("`split` names ['*.attn.q_proj'], which match no")):
        find_views(model, None, {"*.attn.q_proj": "heads"})


# ---- GPT-2's Conv1D stores its weight (in, out) ----------------------------------------------------------------


def as_linear(model: nn.Module) -> nn.Module:
    """A copy of a GPT-2 whose every Conv1D is the equivalent nn.Linear (weight transposed to (out, in))."""
    copy = type(model)(model.config).to(DTYPE).eval()
    copy.load_state_dict(model.state_dict())
    for name, module in list(copy.named_modules()):
        if isinstance(module, transformers.pytorch_utils.Conv1D):
            linear = nn.Linear(module.weight.shape[0], module.weight.shape[1]).to(DTYPE)
            with torch.no_grad():
                linear.weight.copy_(module.weight.T)
                linear.bias.copy_(module.bias)
            parent, _, attr = name.rpartition(".")
            setattr(copy.get_submodule(parent), attr, linear)
    return copy


def disagreement(model: nn.Module, linear: nn.Module, x: Tensor, names: list[str]) -> dict[str, float]:
    """Largest relative difference of NFM and AGOP between the Conv1D model and its nn.Linear twin, per view."""
    fused = "transformer.h.0.attn.c_attn"
    split = {fused: {"q": 1, "k": 1, "v": 1}} if fused in names else None  # the nn.Linear twin has no fused parts
    ours = {view.name: view for view in find_views(model, names, split)}
    twins = {view.name: view for view in find_views(linear, names, split)}
    agops = agop(model, x, names, split=split, forward_fn=forward, chunk_size=256)
    twin_agops = agop(linear, x, names, split=split, forward_fn=forward, chunk_size=256)
    nfm_errors = {name: relative_error(nfm_of(ours[name]), nfm_of(twins[name])) for name in ours}
    return {name: max(nfm_errors[name], relative_error(agops[name], twin_agops[name])) for name in ours}


ORIENTATION_LAYERS = ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.*"]


def test_conv1d_nfm_and_agop_equal_those_of_the_equivalent_linear():
    model, x = gpt2(n_layer=1), tokens(2)
    linear = as_linear(model)
    torch.testing.assert_close(forward(linear, x), forward(model, x))

    errors = disagreement(model, linear, x, ORIENTATION_LAYERS)
    assert sorted(errors) == sorted(
        ["transformer.h.0.attn.c_attn." + p for p in "qkv"]
        + ["transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj"]
    )
    assert max(errors.values()) < 1e-12
    assert nfm_of(find_views(model, ["transformer.h.0.mlp.c_fc"])[0]).shape == (32, 32)  # W^T W of (128, 32)


def test_a_wrong_conv1d_orientation_would_be_caught(monkeypatch):
    """The attention output projection is square: only the values, not the shapes, reveal (in, out) read as
    (out, in). With the weight left untransposed the comparison above fails there."""
    model, x = gpt2(n_layer=1), tokens(2)
    linear = as_linear(model)
    monkeypatch.setattr(TransposedWeightLayer, "weight", lambda self: self.module.weight)
    errors = disagreement(model, linear, x, ["transformer.h.0.attn.c_proj"])
    assert errors["transformer.h.0.attn.c_proj"] > 0.1


# ---- the sketch estimator ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [gpt2, llama])
def test_sketch_relative_error_against_exact(build):
    """Relative Frobenius error of one sketch per k against the exact AGOP (itself checked against brute force
    above), averaged over the block's views; the error falls like 1/sqrt(k)."""
    model, x = build(n_layer=1), tokens(4)
    exact = agop(model, x, forward_fn=forward, chunk_size=256)
    errors = {}
    for k in (4, 16, 64):
        generator = torch.Generator().manual_seed(k)
        sketch = agop(
            model, x, estimator="sketch", num_projections=k, chunk_size=64, forward_fn=forward, generator=generator
        )
        errors[k] = sum(relative_error(sketch[name], exact[name]) for name in exact) / len(exact)
    summary = ", ".join(f"k={k}: {e:.3f}" for k, e in errors.items())
    print(f"\n{build.__name__}, sketch relative error vs exact: {summary}")

    assert errors[4] > errors[16] > errors[64]
    assert errors[64] < 0.35
    assert errors[4] / errors[64] > 2.5  # 4 for an exact 1/sqrt(k) law


@pytest.mark.parametrize("build", [gpt2, llama])
def test_sketch_converges_to_brute_force(build):
    model, x = build(n_layer=1), tokens(2)
    names = [layer.name for layer in find_layers(model)][:2]
    generator = torch.Generator().manual_seed(0)
    sketch = agop(
        model, x, names, estimator="sketch", num_projections=1024, chunk_size=256, forward_fn=forward,
        generator=generator,
    )  # fmt: skip
    for view in find_views(model, names):
        assert relative_error(sketch[view.name], reference(model, x, view)) < 0.1


def test_auto_estimator_is_exact_for_few_outputs_and_the_sketch_for_vocabulary_sized_ones(monkeypatch):
    model, x = gpt2(n_layer=1), tokens(2)  # 5 tokens x 24 logits = 120 outputs per sample
    names = ["transformer.h.0.mlp.c_fc"]
    exact = agop(model, x, names, estimator="exact", forward_fn=forward, chunk_size=256)
    auto = agop(model, x, names, forward_fn=forward, chunk_size=256)
    torch.testing.assert_close(auto, exact)

    monkeypatch.setattr(importlib.import_module("agoplight.features.agop"), "EXACT_MAX_OUTPUTS", 100)
    options = dict(num_projections=8, forward_fn=forward)
    sketch = agop(model, x, names, estimator="sketch", generator=torch.Generator().manual_seed(0), **options)
    auto = agop(model, x, names, estimator="auto", generator=torch.Generator().manual_seed(0), **options)
    torch.testing.assert_close(auto, sketch)
