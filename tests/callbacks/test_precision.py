"""The monitor measures in float32 (or float64 on request) whatever the training precision."""

import copy

import torch

from agoplight.callbacks import AGOPMonitor
from agoplight.data import LowRankDataModule
from agoplight.features import agop
from agoplight.models import MLP
from tests.helpers import quiet_trainer


def fit(tmp_path, trainer_precision: str, **monitor_args) -> tuple[AGOPMonitor, MLP, torch.Tensor]:
    dm = LowRankDataModule(d=6, n_train=128, n_val=32, n_test=32, batch_size=32)
    net = MLP(input_dim=6, output_dim=1, depth=2, width=16, loss="mse")
    monitor = AGOPMonitor(layers=["net.0", "net.2"], every_n_train_steps=2, probe_size=64, **monitor_args)
    trainer = quiet_trainer(tmp_path, max_steps=4, precision=trainer_precision, callbacks=[monitor])
    trainer.fit(net, dm)
    return monitor, net, dm.train_set.tensors[0][monitor._probe_indices]


def test_bf16_mixed_measures_in_float32(tmp_path):
    # Lightning runs "16-mixed" as "bf16-mixed" on CPU; float16 autocast is a GPU-only path.
    monitor, net, probe = fit(tmp_path, "bf16-mixed")
    for entry in monitor.history:
        assert all(torch.isfinite(torch.tensor(value)) for value in entry.values())
    reference = agop(net.float(), probe, ["net.0", "net.2"])  # float32, no autocast
    for name, expected in reference.items():
        torch.testing.assert_close(monitor.last_matrices[name]["agop"], expected.float(), rtol=1e-6, atol=1e-9)


def test_bf16_true_weights_are_upcast_for_the_measurement(tmp_path):
    monitor, net, probe = fit(tmp_path, "bf16-true")
    assert net.net[0].weight.dtype == torch.bfloat16  # training stays in bf16
    upcast = copy.deepcopy(net).float()
    reference = agop(upcast, probe, ["net.0"])["net.0"]
    torch.testing.assert_close(monitor.last_matrices["net.0"]["agop"], reference.float(), rtol=1e-5, atol=1e-8)
    assert all(torch.isfinite(torch.tensor(v)) for v in monitor.history[-1].values())


def test_float64_on_request(tmp_path):
    monitor, net, probe = fit(tmp_path, "32-true", precision="64")
    reference = agop(copy.deepcopy(net).double(), probe.double(), ["net.0"])["net.0"]
    torch.testing.assert_close(monitor.last_matrices["net.0"]["agop"], reference, rtol=1e-12, atol=1e-15)
    assert net.net[0].weight.dtype == torch.float32
