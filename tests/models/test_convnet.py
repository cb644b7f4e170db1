import pytest
import torch
from torch import nn

from agoplight import ConfigurationError
from agoplight.callbacks import AGOPMonitor
from agoplight.data import DigitsDataModule
from agoplight.features import agop, layer_names
from agoplight.models import ConvNet
from tests.helpers import quiet_trainer


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_architectures_classify_images(arch, batch_norm):
    net = ConvNet(
        input_shape=(3, 9, 9), output_dim=4, arch=arch, channels=[4, 6], convs_per_stage=2, batch_norm=batch_norm
    )
    assert net(torch.randn(2, 3, 9, 9)).shape == (2, 4)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == batch_norm


def test_layer_names_are_stable():
    vgg = ConvNet(channels=[4, 8])
    assert layer_names(vgg) == ["features.0", "features.4", "classifier"]
    resnet = ConvNet(arch="resnet", channels=[4, 8], batch_norm=False)
    assert layer_names(resnet) == [
        "stem.0",
        "stages.0.0.conv1",
        "stages.0.0.conv2",
        "stages.1.0.conv1",
        "stages.1.0.conv2",
        "stages.1.0.shortcut",
        "classifier",
    ]


def test_flat_inputs_are_refused_with_the_cure():
    with pytest.raises(ConfigurationError, match=r"input_shape=\(C, H, W\)`, got \(64,\).*`as_images: true`"):
        ConvNet(input_shape=(64,))


def test_monitor_measures_every_convolution_during_fit(tmp_path):
    dm = DigitsDataModule(as_images=True, batch_size=128)
    net = ConvNet(channels=[4, 8])
    monitor = AGOPMonitor(layers=["features.*"], every_n_train_steps=5, probe_size=64, log_images="none")
    quiet_trainer(tmp_path, max_steps=10, callbacks=[monitor]).fit(net, dm)

    assert [view.name for view in monitor.views] == ["features.0", "features.4"]
    assert [entry["step"] for entry in monitor.history] == [0, 5, 10]
    assert all(f"nfa/{name}/pearson_sqrt" in monitor.history[-1] for name in ("features.0", "features.4"))
    assert monitor.last_matrices["features.4"]["agop"].shape == (4 * 9, 4 * 9)  # 4 input channels, 3x3 patches

    probe = dm.train_set.tensors[0][monitor._probe_indices]
    running = net.features[1].running_mean.clone()
    torch.testing.assert_close(
        monitor.last_matrices["features.0"]["agop"], agop(net, probe, ["features.0"])["features.0"].float()
    )
    assert torch.equal(net.features[1].running_mean, running)
