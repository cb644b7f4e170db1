"""The monitor under ``strategy="ddp"`` on two CPU processes gives the single-process AGOP of the same probe set."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agoplight.data import LowRankDataModule
from agoplight.features import agop
from agoplight.models import MLP

SCRIPT = Path(__file__).with_name("ddp_run.py")


def run_ddp(tmp_path: Path, probe_size: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), str(probe_size)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return torch.load(tmp_path / "result.pt", weights_only=False)


@pytest.mark.parametrize("probe_size", [101, 1], ids=["odd-probe", "empty-shard-on-rank-1"])
def test_ddp_agop_equals_single_process(tmp_path, probe_size):
    result = run_ddp(tmp_path, probe_size)
    assert result["world_size"] == 2
    assert len(result["indices"]) == probe_size
    assert [entry["step"] for entry in result["history"]] == [0, 2, 4]

    net = MLP(input_dim=6, output_dim=1, depth=2, width=16, loss="mse")
    net.load_state_dict(result["state_dict"])
    dm = LowRankDataModule(d=6, n_train=160, n_val=32, n_test=32, batch_size=16)
    dm.setup()
    probe = dm.train_set.tensors[0][result["indices"]]
    single = agop(net, probe, ["net.0", "net.2"])
    for name, expected in single.items():
        torch.testing.assert_close(result["matrices"][name]["agop"], expected.float(), rtol=1e-5, atol=1e-8)

    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert sum("nfa" in row or row[:1].isdigit() for row in rows) >= 3  # rank zero wrote the log, once
