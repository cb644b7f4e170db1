"""A causal language model from transformers: built tiny from a config, or loaded from a local folder.

transformers is imported when a ``CausalLM`` is built, not when this module is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from agoplight.errors import ConfigurationError
from agoplight.models.hparams import save_own_hyperparameters
from agoplight.models.task import TaskMixin

FAMILIES = ("gpt2", "llama")


class CausalLM(TaskMixin, LightningModule):
    """Next-token prediction with a transformers causal LM: GPT-2 or Llama built from a few sizes, or any causal LM
    loaded with ``from_pretrained`` from a local folder (``save_pretrained`` writes one; the hub is never asked).

    The network is ``self.net``, so layer names start with ``net.``: GPT-2's projections are
    ``net.transformer.h.<i>.attn.c_attn`` (measured as ``.q``, ``.k``, ``.v``), ``.attn.c_proj``, ``.mlp.c_fc`` and
    ``.mlp.c_proj``; Llama's ``net.model.layers.<i>.self_attn.{q,k,v,o}_proj`` and ``.mlp.{gate,up,down}_proj``.
    Batches are ``(x, y)`` token ids ``(batch, block)`` with ``y`` the next tokens (``TextDataModule``); the loss
    is the mean cross-entropy over all positions, in nats per token.

    Args:
        family: ``gpt2`` or ``llama``, for a model built from the sizes below (ignored with ``pretrained``).
        vocab_size: number of token ids (linked from the DataModule by the CLI). With ``pretrained`` it is only
            checked against the model's embeddings.
        block_size: the longest sequence the model takes (its position table, or the Llama rotary range).
        n_layer: transformer blocks.
        n_head: attention heads.
        n_embd: width of the residual stream.
        n_kv_head: key/value heads of Llama's grouped-query attention (None: ``n_head``).
        n_inner: hidden width of the MLPs (None: ``4 * n_embd``).
        dropout: dropout on embeddings, attention and residual branches (off while the AGOP is measured).
        attn_implementation: transformers' attention kernel, ``sdpa`` or ``eager``.
        pretrained: a local folder written by ``save_pretrained``, to load instead of building.
        optimizer: optimizer factory, e.g. ``torch.optim.AdamW``; in yaml a ``class_path`` with ``init_args``.
        lr_scheduler: optional scheduler factory, stepped after every optimizer step (warm-up and decay over a
            run of ``max_steps``, e.g. ``torch.optim.lr_scheduler.OneCycleLR``).

    Logged keys: ``train/loss``, ``val/loss``, ``val/acc`` (next-token accuracy), the same under ``test/``, and
    ``data/unigram_entropy`` when the DataModule has one (the loss of the best context-free model, in nats).

    Example::

        >>> lm = CausalLM(family="llama", vocab_size=257, block_size=16, n_layer=1, n_head=2, n_embd=16)
        >>> lm(torch.zeros(3, 16, dtype=torch.long)).shape
        torch.Size([3, 16, 257])
    """

    def __init__(
        self,
        family: Literal["gpt2", "llama"] = "gpt2",
        vocab_size: int = 257,
        block_size: int = 128,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        n_kv_head: int | None = None,
        n_inner: int | None = None,
        dropout: float = 0.0,
        attn_implementation: Literal["sdpa", "eager"] = "sdpa",
        pretrained: str | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        if family not in FAMILIES:
            raise ConfigurationError(f"`family` must be one of {list(FAMILIES)}, got {family!r}.")
        if attn_implementation not in ("sdpa", "eager"):
            raise ConfigurationError(f"`attn_implementation` must be 'sdpa' or 'eager', got {attn_implementation!r}.")
        if n_embd % n_head or (n_kv_head is not None and n_head % n_kv_head):
            raise ConfigurationError(
                f"`n_embd` must be a multiple of `n_head`, and `n_head` of `n_kv_head`; got n_embd={n_embd}, "
                f"n_head={n_head}, n_kv_head={n_kv_head}."
            )
        save_own_hyperparameters(self, ignore=("optimizer", "lr_scheduler"))
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler

        # Attention kernel: "sdpa" (the default) and "eager" both carry the gradients the AGOP needs. The
        # measurement's `torch.autograd.grad(..., is_grads_batched=True)` uses the legacy vmap, which has no batching
        # rule for the CPU flash-attention backward (nor for layer norm's or softmax's) and falls back to a loop over
        # the directions for those ops, with the same results: the tests check both kernels against per-sample
        # Jacobians. Batching directions therefore buys little for transformers on CPU; a small `chunk_size` costs
        # nothing. (Llama's "eager" takes its softmax in float32 even in a float64 model.)
        if pretrained is not None:
            self.net = _load_pretrained(pretrained, attn_implementation)
            if vocab_size > self.net.get_input_embeddings().num_embeddings:
                raise ConfigurationError(
                    f"The data has {vocab_size} token ids, but the model in {pretrained!r} embeds only "
                    f"{self.net.get_input_embeddings().num_embeddings}. Use that model's tokenizer."
                )
        else:
            sizes = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_kv_head=n_kv_head, n_inner=n_inner)
            self.net = _build(family, vocab_size, block_size, dropout, attn_implementation, **sizes)
        self.block_size = _max_positions(self.net.config, block_size)
        self.configure_task("cross_entropy", self.net.config.vocab_size)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.net(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits  # (B, T, V)

    def loss(self, outputs: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), y.reshape(-1))

    def setup(self, stage: str) -> None:
        data_block = getattr(self.trainer.datamodule, "block_size", None)
        if data_block is not None and data_block > self.block_size:
            raise ConfigurationError(
                f"The data's `block_size` is {data_block}, longer than the model takes ({self.block_size}). "
                f"Set the model's `block_size` to at least {data_block}."
            )

    def on_fit_start(self) -> None:
        entropy = getattr(self.trainer.datamodule, "unigram_entropy", None)
        if entropy is None:
            return
        for logger in self.trainer.loggers:
            logger.log_metrics({"data/unigram_entropy": entropy}, step=self.trainer.global_step)
        rank_zero_info(f"Unigram entropy of the training tokens: {entropy:.3f} nats ({entropy / math.log(2):.3f} bits)")

    def on_fit_end(self) -> None:
        metrics = self.trainer.callback_metrics
        entropy = getattr(self.trainer.datamodule, "unigram_entropy", None)
        lines = [f"{key}: {metrics[key].item():.3f} nats" for key in ("train/loss", "val/loss") if key in metrics]
        if entropy is not None:
            lines.append(f"unigram entropy: {entropy:.3f} nats")
        if lines:
            rank_zero_info("CausalLM, loss per token at the end of fit: " + ", ".join(lines))

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.parameters())
        if self.lr_scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.lr_scheduler(optimizer), "interval": "step"}}


def _build(
    family: str,
    vocab_size: int,
    block_size: int,
    dropout: float,
    attn_implementation: str,
    n_layer: int,
    n_head: int,
    n_embd: int,
    n_kv_head: int | None,
    n_inner: int | None,
) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    # No special tokens: the data defines its own (TextDataModule's end-of-document token).
    common = dict(vocab_size=vocab_size, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    common["attn_implementation"] = attn_implementation
    if family == "gpt2":
        config = GPT2Config(
            n_positions=block_size,
            n_layer=n_layer,
            n_head=n_head,
            n_embd=n_embd,
            n_inner=n_inner,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            **common,
        )
        return GPT2LMHeadModel(config)
    config = LlamaConfig(
        max_position_embeddings=block_size,
        num_hidden_layers=n_layer,
        num_attention_heads=n_head,
        num_key_value_heads=n_kv_head or n_head,
        hidden_size=n_embd,
        intermediate_size=n_inner or 4 * n_embd,
        attention_dropout=dropout,
        **common,
    )
    return LlamaForCausalLM(config)


def _load_pretrained(folder: str, attn_implementation: str) -> nn.Module:
    """``AutoModelForCausalLM.from_pretrained`` on a local folder, in float32, with hub access refused."""
    if not Path(folder).is_dir():
        raise ConfigurationError(
            f"`pretrained` {folder!r} is not a folder. Give a local folder written by `save_pretrained`; "
            "agoplight does not download models."
        )
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        folder, local_files_only=True, attn_implementation=attn_implementation, dtype=torch.float32
    )


def _max_positions(config: Any, default: int) -> int:
    """The longest sequence the model takes; rotary models without a table report their configured range."""
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or default
