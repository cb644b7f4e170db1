import csv
import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger

from agoplight import ConfigurationError
from agoplight.callbacks import AGOPMonitor
from agoplight.cli import AgoplightCLI
from agoplight.data import TextDataModule
from agoplight.features import find_views
from agoplight.models import CausalLM

transformers = pytest.importorskip("transformers")
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(family: str = "gpt2", **kwargs) -> CausalLM:
    sizes = dict(vocab_size=257, block_size=16, n_layer=2, n_head=4, n_embd=32)
    return CausalLM(family=family, **{**sizes, **kwargs})


def test_gpt2_and_llama_from_sizes():
    gpt2 = tiny("gpt2", dropout=0.1, attn_implementation="eager")
    assert isinstance(gpt2.net, transformers.GPT2LMHeadModel)
    assert gpt2.net.config._attn_implementation == "eager" and gpt2.net.config.resid_pdrop == 0.1
    assert gpt2(torch.zeros(2, 16, dtype=torch.long)).shape == (2, 16, 257)
    assert [view.name for view in find_views(gpt2, ["net.transformer.h.1.*"])] == [
        "net.transformer.h.1.attn.c_attn.q",
        "net.transformer.h.1.attn.c_attn.k",
        "net.transformer.h.1.attn.c_attn.v",
        "net.transformer.h.1.attn.c_proj",
        "net.transformer.h.1.mlp.c_fc",
        "net.transformer.h.1.mlp.c_proj",
    ]

    llama = tiny("llama", n_kv_head=2, n_inner=48)
    assert isinstance(llama.net, transformers.LlamaForCausalLM)
    assert llama.net.config._attn_implementation == "sdpa"
    views = {view.name: view.shape for view in find_views(llama, ["net.model.layers.0.*"])}
    assert views["net.model.layers.0.self_attn.k_proj"] == (16, 32)  # 2 key/value heads of 8
    assert views["net.model.layers.0.mlp.down_proj"] == (32, 48)
    assert llama(torch.zeros(2, 16, dtype=torch.long)).shape == (2, 16, 257)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_from_pretrained_loads_a_local_folder(tmp_path, family):
    original = tiny(family).net
    original.save_pretrained(tmp_path)

    loaded = CausalLM(pretrained=str(tmp_path), vocab_size=100)
    assert type(loaded.net) is type(original) and loaded.hparams.pretrained == str(tmp_path)
    x = torch.randint(0, 257, (2, 16))
    original.eval()
    torch.testing.assert_close(loaded(x), original(input_ids=x).logits)


def test_pretrained_refuses_what_it_cannot_load_locally(tmp_path):
    with pytest.raises(ConfigurationError, match="`pretrained` 'gpt2' is not a folder"):
        CausalLM(pretrained="gpt2")  # a hub name: never downloaded
    tiny().net.save_pretrained(tmp_path)
    with pytest.raises(ConfigurationError, match="The data has 300 token ids, but the model in .* embeds only 257"):
        CausalLM(pretrained=str(tmp_path), vocab_size=300)


def test_bad_arguments():
    with pytest.raises(ConfigurationError, match="`family` must be one of \\['gpt2', 'llama'\\], got 'bert'"):
        CausalLM(family="bert")
    with pytest.raises(ConfigurationError, match="`n_embd` must be a multiple of `n_head`"):
        CausalLM(n_embd=30, n_head=4)


def test_fit_learns_and_the_monitor_measures_every_block(tmp_path):
    dm = TextDataModule(block_size=16, batch_size=32, seed=0)
    model = tiny(optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2))
    monitor = AGOPMonitor(
        layers=["net.transformer.h.*"],
        every_n_train_steps=20,
        probe_size=8,
        estimator="sketch",
        num_projections=4,
        chunk_size=2,
        split={"net.transformer.h.1.attn.c_attn": "heads"},
        log_images="none",
    )
    trainer = Trainer(
        max_steps=40,
        limit_val_batches=4,
        val_check_interval=40,
        logger=CSVLogger(tmp_path, name="", version=""),
        callbacks=[monitor],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, dm)

    assert trainer.callback_metrics["val/loss"] < 0.85 * math.log(257)  # a uniform guess costs log(257)
    assert [entry["step"] for entry in monitor.history] == [0, 20, 40]
    heads = [name for name in monitor.last_matrices if name.startswith("net.transformer.h.1.attn.c_attn.")]
    assert len(monitor.views) == 6 + 3 + 12 and len(heads) == 12
    assert monitor.last_matrices["net.transformer.h.0.mlp.c_proj"]["agop"].shape == (128, 128)

    with open(tmp_path / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    entropy = [float(row["data/unigram_entropy"]) for row in rows if row.get("data/unigram_entropy")]
    assert entropy == [pytest.approx(dm.unigram_entropy)] and 3 < entropy[0] < math.log(257)
    assert sum(bool(row.get("nfa/net.transformer.h.1.attn.c_attn.k3/pearson_sqrt")) for row in rows) == 3

    trainer.save_checkpoint(tmp_path / "lm.ckpt")
    restored = CausalLM.load_from_checkpoint(tmp_path / "lm.ckpt").eval()
    x = dm.val_set.tensors[0][:2]
    torch.testing.assert_close(restored(x), model.eval()(x))


def test_data_blocks_longer_than_the_model_takes_fail_at_fit(tmp_path):
    trainer = Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ConfigurationError, match="The data's `block_size` is 32, longer than the model takes \\(16\\)"):
        trainer.fit(tiny(), TextDataModule(block_size=32))


@pytest.mark.parametrize("config, family", [("gpt_bytes.yaml", "gpt2"), ("llama_bytes.yaml", "llama")])
def test_configs_build_and_fit_a_few_steps(tmp_path, monkeypatch, config, family):
    monkeypatch.setattr("sys.argv", ["train.py"])
    overrides = ["--model.init_args.n_layer", "1", "--model.init_args.n_embd", "32"]
    overrides += ["--trainer.max_steps", "2", "--trainer.callbacks.init_args.every_n_train_steps", "1"]
    overrides += ["--trainer.callbacks.init_args.probe_size", "2", "--trainer.limit_val_batches", "1"]
    overrides += ["--trainer.val_check_interval", "2", "--trainer.logger", "false"]
    overrides += ["--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"]
    cli = AgoplightCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=["--config", str(CONFIGS / config), *overrides],
    )
    assert isinstance(cli.model, CausalLM) and isinstance(cli.datamodule, TextDataModule)
    assert cli.model.hparams.vocab_size == cli.datamodule.vocab_size == 257  # linked by the CLI
    assert cli.model.hparams.family == family

    cli.trainer.fit(cli.model, cli.datamodule)
    (monitor,) = [callback for callback in cli.trainer.callbacks if isinstance(callback, AGOPMonitor)]
    assert monitor.estimator == "sketch" and [entry["step"] for entry in monitor.history] == [0, 1, 2]
    assert len(monitor.views) == (6 if family == "gpt2" else 7)  # every projection of the one block
