"""Compiled models: the measurement runs the original modules eagerly, and training stays compiled."""

import torch
from torch import nn

from agoplight.callbacks import AGOPMonitor
from agoplight.data import LowRankDataModule
from agoplight.features import agop
from agoplight.models import MLP
from tests.helpers import quiet_trainer


def test_fit_of_a_compiled_module_measures_the_same_agop(tmp_path):
    torch.manual_seed(0)
    net = MLP(input_dim=6, output_dim=1, depth=1, width=8, loss="mse")
    dm = LowRankDataModule(d=6, n_train=64, n_val=16, n_test=16, batch_size=32)
    monitor = AGOPMonitor(layers=["net.0"], every_n_train_steps=2, probe_size=32, log_images="none")
    quiet_trainer(tmp_path, max_steps=2, callbacks=[monitor]).fit(torch.compile(net), dm)

    probe = dm.train_set.tensors[0][monitor._probe_indices]
    eager = MLP(input_dim=6, output_dim=1, depth=1, width=8, loss="mse")
    eager.load_state_dict(net.state_dict())
    expected = agop(eager, probe, ["net.0"])["net.0"]
    assert expected.abs().max() > 0
    torch.testing.assert_close(monitor.last_matrices["net.0"]["agop"], expected.float())
    assert all(torch.isfinite(torch.tensor(v)) for v in monitor.history[-1].values())


def test_module_compile_and_compiled_wrappers():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    x = torch.randn(10, 5)
    expected = agop(net, x)

    net.compile()
    net(x)
    measured = agop(net, x)
    assert net._compiled_call_impl is not None  # still compiled afterwards
    for name in expected:
        torch.testing.assert_close(measured[name], expected[name])
