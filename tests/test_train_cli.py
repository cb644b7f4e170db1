"""The README's main command, end to end in a subprocess, with tiny settings."""

import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_train(tmp_path: Path, *overrides: str, subcommand: str = "fit") -> subprocess.CompletedProcess:
    tmp_path.mkdir(exist_ok=True)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    config = str(ROOT / "configs" / "mlp_digits.yaml")
    command = [sys.executable, str(ROOT / "train.py"), subcommand, "--config", config]
    command += ["--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false", *overrides]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)


def test_main_command_writes_a_run_folder(tmp_path):
    result = run_train(tmp_path, "--trainer.max_epochs", "2", "--trainer.callbacks.init_args.every_n_train_steps", "10")
    assert result.returncode == 0, result.stderr[-3000:]

    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    with open(run_dir / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    steps = [int(r["step"]) for r in rows if r.get("nfa/net.0/pearson_sqrt")]
    assert steps == [0, 10, 20, 30, 34]
    assert any(r.get("val/acc") for r in rows)
    assert (run_dir / "config.yaml").exists() and list((run_dir / "checkpoints").glob("*.ckpt"))
    assert len(list((run_dir / "agop").glob("step_*.pt"))) == 5

    (wandb_run,) = (run_dir / "wandb").glob("offline-run-*")
    assert list(wandb_run.glob("*.wandb"))
    assert f"wandb sync {wandb_run}" in result.stdout
    assert "net.0" in result.stdout + result.stderr  # the end-of-run summary names the layers


def test_checkpoints_reload_through_the_cli(tmp_path):
    assert run_train(tmp_path / "fit", "--trainer.max_epochs", "1").returncode == 0
    (checkpoint,) = (tmp_path / "fit").glob("*/checkpoints/*.ckpt")
    result = run_train(tmp_path / "validate", "--ckpt_path", str(checkpoint), subcommand="validate")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "val/acc" in result.stdout


def test_bad_settings_are_short_errors(tmp_path):
    result = run_train(tmp_path, "--trainer.callbacks.init_args.every_n_train_steps", "-3")
    assert result.returncode == 2
    assert "error: `every_n_train_steps` must be a positive integer, got -3." in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_layer_name_is_a_short_error(tmp_path):
    result = run_train(tmp_path, "--trainer.max_epochs", "1", "--trainer.callbacks.init_args.layers", "[fc1]")
    assert result.returncode == 2
    assert not any(tmp_path.iterdir())  # the run folder made for it is gone
    expected = "error: Layer `fc1` matches no measurable layer of `MLP`. Layers that exist: net.0, net.2, net.4"
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
