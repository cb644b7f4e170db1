import pytest
import torch
from torch import nn

from agoplight import ConfigurationError
from agoplight.data import LowRankDataModule
from agoplight.models import MLP
from tests.helpers import quiet_trainer


def test_architecture_options():
    net = MLP(input_dim=5, output_dim=3, depth=3, width=7, activation="tanh", bias=False)
    linears = [m for m in net.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(5, 7), (7, 7), (7, 7), (7, 3)]
    assert all(m.bias is None for m in linears)
    assert sum(isinstance(m, nn.Tanh) for m in net.net) == 3
    assert MLP(input_dim=5, output_dim=3, depth=0).net[0].in_features == 5


def test_init_scale_scales_the_default_initialisation():
    torch.manual_seed(0)
    base = MLP(input_dim=5, output_dim=3, width=8)
    torch.manual_seed(0)
    small = MLP(input_dim=5, output_dim=3, width=8, init_scale=0.1)
    torch.testing.assert_close(small.net[0].weight, 0.1 * base.net[0].weight)
    torch.testing.assert_close(small.net[0].bias, base.net[0].bias)


def test_optimizer_and_schedule_from_factories(tmp_path):
    net = MLP(
        input_dim=4,
        output_dim=1,
        width=8,
        loss="mse",
        optimizer=lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
    )
    config = net.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.SGD) and config["optimizer"].defaults["momentum"] == 0.9
    assert isinstance(config["lr_scheduler"], torch.optim.lr_scheduler.StepLR)


def test_mse_on_class_targets_uses_one_hot():
    net = MLP(input_dim=4, output_dim=3, loss="mse")
    outputs = torch.zeros(2, 3)
    assert net.loss(outputs, torch.tensor([0, 2])).item() == pytest.approx(1 / 3)


def test_regression_learns(tmp_path):
    dm = LowRankDataModule(d=4, n_train=512, n_val=128, batch_size=64)
    net = MLP(input_dim=4, output_dim=1, width=64, loss="mse", optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    trainer = quiet_trainer(tmp_path, max_epochs=15)
    trainer.fit(net, dm)
    assert trainer.callback_metrics["val/r2"] > 0.8


def test_bad_activation():
    with pytest.raises(ConfigurationError, match="`activation` must be one of .* got 'swish'"):
        MLP(activation="swish")
