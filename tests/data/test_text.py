import math
from pathlib import Path

import pytest
import torch

from agoplight import ConfigurationError
from agoplight.data import TextDataModule
from agoplight.data.text import END_OF_DOCUMENT, default_corpus, unigram_entropy


def test_default_corpus_is_english_text_shipped_with_python():
    documents = default_corpus()
    text = "".join(documents)
    assert len(documents) > 50 and len(text) > 200_000
    words = text.split()
    assert sum(word in {"the", "of", "is", "a", "and"} for word in words) > 0.05 * len(words)


def test_blocks_are_next_token_pairs_with_a_seeded_split():
    dm = TextDataModule(block_size=32, val_fraction=0.1, test_fraction=0.05, seed=1)
    dm.setup()
    x, y = dm.train_set.tensors
    assert dm.vocab_size == 257 and x.dtype == torch.long and x.shape[1] == y.shape[1] == 32
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token
    assert int(x.max()) < dm.vocab_size

    n_blocks = len(dm.train_set) + len(dm.val_set) + len(dm.test_set)
    assert len(dm.val_set) == round(0.1 * n_blocks) and len(dm.test_set) == round(0.05 * n_blocks)
    assert n_blocks == len(dm.tokens()) // 33

    again = TextDataModule(block_size=32, val_fraction=0.1, test_fraction=0.05, seed=1)
    again.setup()
    assert torch.equal(again.train_set.tensors[0], x)
    other = TextDataModule(block_size=32, val_fraction=0.1, test_fraction=0.05, seed=2)
    other.setup()
    assert not torch.equal(other.train_set.tensors[0], x)

    batch_x, batch_y = next(iter(dm.train_dataloader()))
    assert batch_x.shape == batch_y.shape == (dm.batch_size, 32)


def test_files_and_folders_are_documents_separated_by_an_end_token(tmp_path):
    (tmp_path / "b.txt").write_text("Zoë", encoding="utf-8")
    (tmp_path / "a.txt").write_text("ab", encoding="utf-8")
    (tmp_path / "notes.md").write_text("skipped by the pattern")

    folder = TextDataModule(path=str(tmp_path), block_size=2)
    assert folder.tokens().tolist() == [97, 98, END_OF_DOCUMENT, *"Zoë".encode(), END_OF_DOCUMENT]
    assert folder.decode(folder.tokens()) == "ab\n\nZoë\n\n"

    single = TextDataModule(path=str(tmp_path / "notes.md"), block_size=2)
    assert single.decode(single.tokens()).startswith("skipped by the pattern")
    markdown = TextDataModule(path=str(tmp_path), pattern="*.md", block_size=2)
    assert markdown.documents() == ["skipped by the pattern"]


def test_unigram_entropy_of_the_training_targets(tmp_path):
    assert unigram_entropy(torch.tensor([0, 1, 0, 1]), 5) == pytest.approx(math.log(2))
    assert unigram_entropy(torch.tensor([3, 3, 3]), 5) == pytest.approx(0.0)

    (tmp_path / "text.txt").write_text("abcd" * 500)
    dm = TextDataModule(path=str(tmp_path / "text.txt"), block_size=5, val_fraction=0.2)
    assert dm.unigram_entropy is None
    dm.setup()
    _, y = dm.train_set.tensors
    counts = torch.bincount(y.reshape(-1)).double()
    p = counts[counts > 0] / counts.sum()
    assert dm.unigram_entropy == pytest.approx(-(p * p.log()).sum().item())
    assert dm.unigram_entropy == pytest.approx(math.log(4), abs=0.05)  # four letters, nearly equally frequent


def test_tokenizer_from_a_local_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    text = "the cat sat on the mat . the dog sat on the log .\n" * 40
    (tmp_path / "corpus.txt").write_text(text)
    words = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.train_from_iterator([text], trainers.WordLevelTrainer(special_tokens=["[UNK]", "</s>"]))
    folder = tmp_path / "tokenizer"
    transformers.PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]", eos_token="</s>").save_pretrained(
        folder
    )

    dm = TextDataModule(path=str(tmp_path / "corpus.txt"), tokenizer=str(folder), block_size=8, val_fraction=0.1)
    assert dm.vocab_size == 10  # the, cat, sat, on, mat, dog, log, ".", [UNK], </s>
    stream = dm.tokens()
    assert stream[:4].tolist() == dm.encode("the cat sat on") and stream[-1] == dm.end_of_document == 1
    assert dm.decode(stream[:3]) == "the cat sat"
    dm.setup()
    assert int(dm.train_set.tensors[0].max()) < dm.vocab_size


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigurationError, match="`path` '.*missing.txt' does not exist"):
        TextDataModule(path=str(tmp_path / "missing.txt"))
    with pytest.raises(ConfigurationError, match="`tokenizer` 'gpt2' is not a folder"):
        TextDataModule(tokenizer="gpt2")  # a hub name: refused, never downloaded
    with pytest.raises(ConfigurationError, match="`block_size` must be a positive integer, got 0"):
        TextDataModule(block_size=0)
    with pytest.raises(ConfigurationError, match="`val_fraction` and `test_fraction`"):
        TextDataModule(val_fraction=0.7, test_fraction=0.4)

    (tmp_path / "short.txt").write_text("too short")
    with pytest.raises(ConfigurationError, match="too few to split"):
        TextDataModule(path=str(tmp_path / "short.txt"), block_size=64).setup()
    Path(tmp_path / "empty").mkdir()
    with pytest.raises(ConfigurationError, match="No file in `path`"):
        TextDataModule(path=str(tmp_path / "empty")).setup()
