import csv
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger

from agoplight import ConfigurationError
from agoplight.cli import AgoplightCLI
from agoplight.data import LowRankDataModule, TabularDataModule
from agoplight.data.tabular import make_gene_pairs
from agoplight.rfm import RFM, next_metric

ROOT = Path(__file__).resolve().parents[2]


def _trainer(tmp_path: Path, epochs: int, **kwargs) -> Trainer:
    return Trainer(
        max_epochs=epochs,
        default_root_dir=tmp_path,
        logger=CSVLogger(tmp_path, name="", version=""),
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_fit_saves_matrices_pictures_and_checkpoints_and_serves_the_best_iteration(tmp_path):
    dm = LowRankDataModule(d=6, n_train=300, n_val=100, n_test=100, batch_size=128)  # 3 batches per iteration
    model = RFM(input_dim=6, output_dim=1, bandwidth=5.0, top_features=3)
    trainer = _trainer(tmp_path, epochs=3)
    trainer.fit(model, dm)

    assert trainer.global_step == 3 and [entry["iteration"] for entry in model.history] == [0, 1, 2]
    files = sorted((tmp_path / "agop").glob("step_*.pt"))
    assert [f.name for f in files] == [f"step_{i:07d}.pt" for i in range(3)]
    saved = [torch.load(f) for f in files]
    for i, entry in enumerate(saved):
        rfm = entry["matrices"]["rfm"]
        assert entry["step"] == i and rfm["M"].shape == rfm["agop"].shape == (6, 6) and rfm["M"].dtype == torch.float32
        torch.testing.assert_close(rfm["M"].double(), next_metric(rfm["agop"].double(), 0.5, "max"), atol=1e-5, rtol=0)
    assert (tmp_path / "images" / "rfm" / "M" / "step_0000002.png").exists()
    assert (tmp_path / "images" / "rfm" / "top_features" / "step_0000002.png").exists()

    with open(tmp_path / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(r["epoch"]) for r in rows if r.get("rfm/train_r2")] == [0, 1, 2]  # the step counts batches here
    scores = [float(r["val/r2"]) for r in rows if r.get("val/r2")]
    assert len(scores) == 3

    # the best iteration by val/r2 (the earlier on ties) is what the module serves and checkpoints hold
    best = max(range(3), key=lambda i: (scores[i], -i))
    assert model.best_iteration == best and model.best_score == pytest.approx(scores[best])
    used = torch.eye(6) if best == 0 else saved[best - 1]["matrices"]["rfm"]["M"]
    torch.testing.assert_close(model.M.float(), used, atol=1e-6, rtol=0)
    assert model.centers.shape == (300, 6) and model.coefficients.shape == (300, 1)
    x_test = dm.test_set.tensors[0]

    (checkpoint,) = (tmp_path / "checkpoints").glob("*.ckpt")
    restored = RFM.load_from_checkpoint(checkpoint)
    assert restored.best_iteration == best and restored.coefficients.dtype == torch.float32
    torch.testing.assert_close(restored(x_test), model(x_test))
    predictions = trainer.predict(RFM(input_dim=6, output_dim=1, bandwidth=5.0), dm, ckpt_path=checkpoint)
    torch.testing.assert_close(torch.cat(predictions), model(x_test).squeeze(-1))
    with pytest.raises(ConfigurationError, match="fitted with `bandwidth`=5.0 but this RFM has `bandwidth`=10.0"):
        trainer.predict(RFM(input_dim=6, output_dim=1), dm, ckpt_path=checkpoint)
    assert trainer.test(restored, dm, verbose=False)[0]["test/r2"] > scores[0]


def test_classification_logs_accuracy_and_named_top_features(tmp_path, caplog):
    path = make_gene_pairs(tmp_path / "data" / "pairs.csv", n=300)
    dm = TabularDataModule(str(path), target="interaction", drop=["fitness"], batch_size=1000)
    model = RFM(input_dim=dm.input_dim, output_dim=dm.output_dim, log_images="none", save_matrices=False)
    with caplog.at_level(logging.INFO, logger="agoplight.rfm.module"):
        _trainer(tmp_path / "fit", epochs=2, num_sanity_val_steps=0).fit(model, dm)

    assert model.history[-1]["rfm/train_acc"] == pytest.approx(1.0) and "val/acc" in model.history[-1]
    assert "top features by diag(M): expr_" in caplog.text or "top features by diag(M): coexpression" in caplog.text
    assert not (tmp_path / "fit" / "agop").exists()
    labels = torch.cat(_trainer(tmp_path / "predict", epochs=1).predict(model, dm))
    assert labels.dtype == torch.long and set(labels.tolist()) <= {0, 1}


def test_mismatched_data_and_bad_settings_fail_with_a_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError, match="`log_images` must be 'all', 'last' or 'none', got 'some'"):
        RFM(log_images="some")
    with pytest.raises(ConfigurationError, match="`output_dim` must be a positive integer, got 0"):
        RFM(output_dim=0)
    with pytest.raises(ConfigurationError, match="`solver` must be one of"):
        RFM(solver="direct")
    dm = LowRankDataModule(d=5, n_train=50, n_val=10, n_test=10, batch_size=100)
    with pytest.raises(ConfigurationError, match="The training inputs have 5 features but `input_dim` is 7"):
        _trainer(tmp_path, epochs=1, num_sanity_val_steps=0).fit(RFM(input_dim=7, output_dim=1), dm)


@pytest.mark.parametrize("name", ["rfm_digits", "rfm_lowrank", "rfm_modular", "rfm_tabular"])
def test_configs_instantiate(name, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py"])  # the CLI reads `args` below, not pytest's own arguments
    args = ["--config", str(ROOT / "configs" / f"{name}.yaml"), "--trainer.logger", "false"]
    if name == "rfm_tabular":
        args += ["--data.init_args.path", str(make_gene_pairs(tmp_path / "pairs.csv", n=100))]
    cli = AgoplightCLI(
        LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False, args=args
    )
    assert isinstance(cli.model, RFM) and cli.model.M.shape[0] == cli.datamodule.input_dim
    assert cli.model.output_dim == cli.datamodule.output_dim


def test_tabular_config_runs_through_the_main_command(tmp_path):
    path = make_gene_pairs(tmp_path / "pairs.csv", n=300)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    command = [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / "configs" / "rfm_tabular.yaml")]
    command += ["--data.init_args.path", str(path), "--trainer.default_root_dir", str(tmp_path / "runs")]
    command += ["--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    (run_dir,) = (tmp_path / "runs").iterdir()
    with open(run_dir / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert [r["val/acc"] for r in rows if r.get("val/acc")] and [r for r in rows if r.get("rfm/train_acc")]
    assert list((run_dir / "checkpoints").glob("*.ckpt")) and (run_dir / "agop" / "step_0000001.pt").exists()
    assert "configure_optimizers" not in result.stderr
