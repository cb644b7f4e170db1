"""Text for causal language models: byte-level tokens (no download, no vocabulary file) or a local tokenizer.

The offline default corpus is the Python Language Reference that ships with Python itself (the ~470 kB of
English prose, grammar and examples behind ``help("if")``, stored in the standard library's
``pydoc_data/topics.py``). transformers is imported only when a tokenizer folder is given.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from agoplight.data.base import TensorDataModule, split_indices
from agoplight.errors import ConfigurationError

log = logging.getLogger(__name__)

BYTE_VOCAB = 257  # the 256 byte values, then one end-of-document token
END_OF_DOCUMENT = 256


class TextDataModule(TensorDataModule):
    """Next-token prediction on a text file, a folder of text files or the bundled default corpus.

    Each document (a file, or a topic of the default corpus) is tokenised and followed by an end-of-document
    token; the documents are concatenated and cut into non-overlapping blocks of ``block_size + 1`` tokens, and
    the blocks are split into train, validation and test sets with ``seed``. A batch is ``(x, y)``: ``x`` the
    first ``block_size`` tokens of its blocks, ``y`` the same shifted by one (the next token at every position),
    both ``(batch_size, block_size)`` integers.

    Byte-level tokens need nothing but the text: every byte is a token (UTF-8 text of any language works), and
    token 256 ends a document, so ``vocab_size`` is 257. With ``tokenizer``, a transformers tokenizer saved in a
    local folder (``save_pretrained``) encodes the text instead; it is never looked up on the hub.

    Args:
        path: a text file, or a folder whose files matching ``pattern`` are read in sorted order; None for the
            default corpus.
        block_size: tokens per sample ``x``.
        tokenizer: a local folder holding a transformers tokenizer; None for byte-level tokens.
        pattern: ``glob`` pattern of the files read from a folder ``path``.
        val_fraction: share of the blocks held out for validation.
        test_fraction: share held out for testing.
        **kwargs: ``batch_size``, ``num_workers``, ``seed``, ``shuffle`` (see ``TensorDataModule``).

    Raises:
        ConfigurationError: in ``__init__`` for a missing ``path`` or ``tokenizer`` folder or bad fractions;
            in ``setup`` when the text gives fewer blocks than the splits need.

    Example::

        data:
          class_path: agoplight.data.TextDataModule
          init_args: {path: null, block_size: 128, batch_size: 32}
    """

    def __init__(
        self,
        path: str | None = None,
        block_size: int = 128,
        tokenizer: str | None = None,
        pattern: str = "**/*.txt",
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(block_size, int) or block_size < 1:
            raise ConfigurationError(f"`block_size` must be a positive integer, got {block_size!r}.")
        if path is not None and not Path(path).exists():
            raise ConfigurationError(f"`path` {str(path)!r} does not exist; give a text file or a folder of them.")
        split_indices(10, val_fraction, test_fraction, 0)  # fail early on bad fractions
        self.path = path
        self.block_size = block_size
        self.pattern = pattern
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.tokenizer = _load_tokenizer(tokenizer) if tokenizer is not None else None
        self.unigram_entropy: float | None = None

    @property
    def vocab_size(self) -> int:
        """Token ids are below this: 257 for bytes, the tokenizer's length otherwise."""
        return BYTE_VOCAB if self.tokenizer is None else len(self.tokenizer)

    @property
    def end_of_document(self) -> int | None:
        """The token that follows every document (None when the tokenizer has no end-of-sequence token)."""
        return END_OF_DOCUMENT if self.tokenizer is None else self.tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without the end-of-document token."""
        if self.tokenizer is None:
            return list(text.encode("utf-8"))
        return self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Text of token ids; byte-level ends of documents become blank lines, undecodable bytes U+FFFD."""
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        if self.tokenizer is not None:
            return self.tokenizer.decode(ids)
        pieces = (b"\n\n" if i == END_OF_DOCUMENT else bytes([i]) for i in ids)
        return b"".join(pieces).decode("utf-8", errors="replace")

    def documents(self) -> list[str]:
        """The texts read: the files of ``path``, or the topics of the default corpus."""
        if self.path is None:
            return default_corpus()
        path = Path(self.path)
        files = [path] if path.is_file() else sorted(p for p in path.glob(self.pattern) if p.is_file())
        if not files:
            raise ConfigurationError(f"No file in `path` {self.path!r} matches `pattern` {self.pattern!r}.")
        return [file.read_text(encoding="utf-8", errors="replace") for file in files]

    def tokens(self) -> Tensor:
        """All documents as one token stream ``(n_tokens,)``, each followed by the end-of-document token."""
        end = torch.tensor([] if self.end_of_document is None else [self.end_of_document], dtype=torch.long)
        pieces = []
        for text in self.documents():
            if self.tokenizer is None:
                data = bytearray(text.encode("utf-8"))
                ids = torch.frombuffer(data, dtype=torch.uint8).long() if data else end[:0]
            else:
                ids = torch.tensor(self.encode(text), dtype=torch.long)
            pieces += [ids, end]
        return torch.cat(pieces)

    def build(self) -> tuple[tuple[Tensor, Tensor], ...]:
        stream = self.tokens()
        n_blocks = len(stream) // (self.block_size + 1)
        train, val, test = split_indices(n_blocks, self.val_fraction, self.test_fraction, self.seed)
        if len(train) == 0 or (self.val_fraction > 0 and len(val) == 0):
            raise ConfigurationError(
                f"The text has {len(stream)} tokens: {n_blocks} blocks of `block_size` + 1 = {self.block_size + 1}, "
                "too few to split. Use a smaller `block_size` or more text."
            )
        blocks = stream[: n_blocks * (self.block_size + 1)].view(n_blocks, self.block_size + 1)

        self.unigram_entropy = unigram_entropy(blocks[train][:, 1:], self.vocab_size)
        log.info(
            "%d tokens, %d blocks of %d (train %d, val %d, test %d); unigram entropy of the training targets "
            "%.3f nats (%.3f bits) per token",
            len(stream),
            n_blocks,
            self.block_size,
            len(train),
            len(val),
            len(test),
            self.unigram_entropy,
            self.unigram_entropy / math.log(2),
        )
        return tuple((blocks[idx, :-1], blocks[idx, 1:]) for idx in (train, val, test))


def unigram_entropy(tokens: Tensor, vocab_size: int) -> float:
    """Entropy in nats of the tokens' frequencies: the cross-entropy of the best model that ignores context."""
    counts = torch.bincount(tokens.reshape(-1), minlength=vocab_size).double()
    p = counts[counts > 0] / counts.sum()
    return -(p * p.log()).sum().item()


def default_corpus() -> list[str]:
    """The Python Language Reference topics bundled with the standard library, in sorted topic order."""
    try:
        from pydoc_data.topics import topics
    except ImportError as error:  # some distributions strip pydoc_data from a minimal Python
        raise ConfigurationError(
            "The default corpus (the standard library's `pydoc_data`) is missing from this Python; give a text "
            "file or folder as `path`."
        ) from error
    return [topics[name] for name in sorted(topics)]


def _load_tokenizer(folder: str) -> Any:
    """A transformers tokenizer from a local folder, never from the hub."""
    if not Path(folder).is_dir():
        raise ConfigurationError(
            f"`tokenizer` {folder!r} is not a folder. Give a local folder written by a tokenizer's "
            "`save_pretrained`; agoplight does not download tokenizers."
        )
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)
