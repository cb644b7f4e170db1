import csv
import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader

from agoplight import ConfigurationError
from agoplight.callbacks import AGOPMonitor
from agoplight.data import LowRankDataModule
from agoplight.features import agop
from agoplight.models import MLP
from tests.helpers import quiet_trainer


def datamodule(**kwargs) -> LowRankDataModule:
    return LowRankDataModule(d=6, n_train=128, n_val=32, n_test=32, batch_size=32, **kwargs)


def model() -> MLP:
    return MLP(input_dim=6, output_dim=1, depth=2, width=16, loss="mse")


def trainer(tmp_path: Path, callbacks: list, **kwargs) -> Trainer:
    csv = CSVLogger(tmp_path, name="", version="")
    return quiet_trainer(tmp_path, **{"max_epochs": 2, "logger": csv, "callbacks": callbacks, **kwargs})


def probe_inputs(monitor: AGOPMonitor, dm: LowRankDataModule) -> torch.Tensor:
    return dm.train_set.tensors[0][monitor._probe_indices]


def logged(tmp_path: Path, key: str) -> dict[int, float]:
    with open(tmp_path / "metrics.csv") as file:
        return {int(row["step"]): float(row[key]) for row in csv.DictReader(file) if row.get(key)}


def test_fit_measures_on_schedule_and_matches_a_direct_computation(tmp_path):
    monitor = AGOPMonitor(layers=["net.0", "net.2"], every_n_train_steps=3, probe_size=100)
    dm, net = datamodule(), model()
    trainer(tmp_path, [monitor]).fit(net, dm)

    assert [entry["step"] for entry in monitor.history] == [0, 3, 6, 8]  # before training, every 3, the end
    assert sorted(logged(tmp_path, "nfa/net.0/pearson_sqrt")) == [0, 3, 6, 8]
    assert sorted(logged(tmp_path, "nfa/net.0/delta_pearson_sqrt")) == [3, 6, 8]  # W - W0 is zero at step 0
    for key in ("pearson", "cosine_sqrt", "cosine"):
        assert len(logged(tmp_path, f"nfa/net.2/{key}")) == 4
    for key in ("trace", "effective_rank", "eigval_1", "eigval_3"):
        assert len(logged(tmp_path, f"agop/net.0/{key}")) == 4

    assert len(monitor._probe_indices) == 100
    direct = agop(net, probe_inputs(monitor, dm), ["net.0", "net.2"])
    for name in direct:
        torch.testing.assert_close(monitor.last_matrices[name]["agop"], direct[name].float())  # float32 by default
    saved = torch.load(tmp_path / "agop" / "step_0000008.pt")
    torch.testing.assert_close(saved["matrices"]["net.0"]["agop"], direct["net.0"].float())
    assert set(saved["matrices"]["net.0"]) == {"agop", "nfm", "nfm_delta"}


@pytest.mark.parametrize("entry", ["validate", "test"])
def test_validate_and_test_measure_under_inference_mode(tmp_path, entry):
    monitor = AGOPMonitor(layers=["net.0"], probe_size=64)
    dm, net = datamodule(), model()
    getattr(trainer(tmp_path, [monitor]), entry)(net, dm)

    assert monitor.history == []  # the training curve is fit's alone
    assert sorted(logged(tmp_path, "nfa/net.0/pearson_sqrt")) == [0]
    direct = agop(net, probe_inputs(monitor, dm), ["net.0"])["net.0"]
    torch.testing.assert_close(monitor.last_matrices["net.0"]["agop"], direct.float())
    saved = torch.load(tmp_path / "agop" / f"{entry}_step_0000000.pt")
    assert saved["stage"] == entry and not (tmp_path / "agop" / "step_0000000.pt").exists()


def test_validate_on_a_checkpoint_logs_at_its_step(tmp_path):
    first = AGOPMonitor(layers=["net.0"], every_n_train_steps=4, probe_size=32)
    fit = trainer(tmp_path / "fit", [first, ModelCheckpoint(dirpath=tmp_path / "ckpt")], enable_checkpointing=True)
    fit.fit(model(), datamodule())
    (checkpoint,) = (tmp_path / "ckpt").glob("*.ckpt")

    monitor = AGOPMonitor(layers=["net.0"], every_n_train_steps=4, probe_size=32)
    trainer(tmp_path / "eval", [monitor]).validate(model(), datamodule(), ckpt_path=checkpoint)
    assert sorted(logged(tmp_path / "eval", "nfa/net.0/pearson_sqrt")) == [8]
    assert (tmp_path / "eval" / "agop" / "validate_step_0000008.pt").exists()
    assert torch.equal(monitor._probe_indices, first._probe_indices)  # the probe came with the checkpoint


def test_validate_without_training_data_says_what_to_pass(tmp_path):
    dm = datamodule()
    dm.setup()
    monitor = AGOPMonitor(layers=["net.0"])
    with pytest.raises(ConfigurationError, match="this run has none: pass a datamodule"):
        trainer(tmp_path, [monitor]).validate(model(), dataloaders=dm.val_dataloader())

    after_fit = AGOPMonitor(layers=["net.0"], probe_size=16)
    fit = trainer(tmp_path / "fit", [after_fit], max_epochs=1)
    net = model()
    fit.fit(net, dm.train_dataloader(), dm.val_dataloader())
    fit.validate(net, dataloaders=dm.val_dataloader())  # the probe drawn during fit serves again
    assert (tmp_path / "fit" / "agop" / "validate_step_0000004.pt").exists()


def test_resume_continues_the_same_curves(tmp_path):
    def run(directory: Path, max_epochs: int, ckpt_path: str | None = None) -> AGOPMonitor:
        torch.manual_seed(len(str(ckpt_path)))  # resumed model starts from other random weights
        monitor = AGOPMonitor(layers=["net.0"], every_n_train_steps=3, probe_size=50)
        checkpoint = ModelCheckpoint(dirpath=directory, save_last=True)
        fit = trainer(directory, [monitor, checkpoint], max_epochs=max_epochs, enable_checkpointing=True)
        fit.fit(model_from_seed(0) if ckpt_path is None else model(), datamodule(shuffle=False), ckpt_path=ckpt_path)
        return monitor

    whole = run(tmp_path / "whole", max_epochs=4)
    run(tmp_path / "first", max_epochs=2)  # stops at step 8, between two measurements
    resumed = run(tmp_path / "second", max_epochs=4, ckpt_path=str(tmp_path / "first" / "last.ckpt"))

    assert [e["step"] for e in resumed.history] == [e["step"] for e in whole.history] == [0, 3, 6, 9, 12, 15, 16]
    assert sorted(logged(tmp_path / "second", "nfa/net.0/pearson_sqrt")) == [9, 12, 15, 16]  # nothing at 8
    for ours, reference in zip(resumed.history, whole.history, strict=True):
        assert ours.keys() == reference.keys()  # the W - W0 curves continue: W0 came from the checkpoint
        for key, value in reference.items():
            assert ours[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_the_monitor_does_not_change_training(tmp_path):
    def weights(callbacks: list) -> torch.Tensor:
        net = model_from_seed(0)
        trainer(tmp_path, callbacks, max_epochs=2).fit(net, datamodule())  # shuffled batches
        return net.net[0].weight.detach().clone()

    assert torch.equal(weights([]), weights([AGOPMonitor(layers=["net.0"], every_n_train_steps=2)]))


def test_probe_respects_a_subset_sampler(tmp_path):
    dm = datamodule()
    dm.setup()
    train_part = list(range(0, 128, 2))  # a shared dataset; only the even samples are for training
    loader = DataLoader(dm.train_set, batch_size=16, sampler=torch.utils.data.SubsetRandomSampler(train_part))
    monitor = AGOPMonitor(layers=["net.0"], probe_size=40)
    trainer(tmp_path, [monitor], max_epochs=1).fit(model(), loader)
    assert set(monitor._probe_indices.tolist()) <= set(train_part) and len(monitor._probe_indices) == 40


def test_two_monitors_need_two_names(tmp_path):
    exact = AGOPMonitor(layers=["net.0"], estimator="exact")
    sketch = AGOPMonitor(layers=["net.0"], estimator="sketch", name="sketch")
    trainer(tmp_path, [exact, sketch], max_epochs=1).fit(model(), datamodule())
    assert logged(tmp_path, "nfa/net.0/pearson_sqrt") and logged(tmp_path, "sketch/nfa/net.0/pearson_sqrt")
    assert (tmp_path / "agop" / "step_0000004.pt").exists() and (tmp_path / "sketch" / "step_0000004.pt").exists()

    with pytest.raises(RuntimeError, match="state_key` must be unique"):  # Lightning refuses two of one name
        trainer(tmp_path, [AGOPMonitor(), AGOPMonitor(layers=["net.2"])])


@pytest.mark.parametrize("precision", ["32", "64"])
def test_float64_training(tmp_path, precision):
    monitor = AGOPMonitor(layers=["net.0"], probe_size=16, precision=precision)
    net, dm = model(), datamodule()
    trainer(tmp_path, [monitor], max_epochs=1, precision="64-true").fit(net, dm)
    dtype = torch.float64 if precision == "64" else torch.float32
    assert net.net[0].weight.dtype == torch.float64
    assert monitor.last_matrices["net.0"]["agop"].dtype == dtype
    direct = agop(net, probe_inputs(monitor, dm).double(), ["net.0"])["net.0"]
    torch.testing.assert_close(monitor.last_matrices["net.0"]["agop"], direct.to(dtype))


def model_from_seed(seed: int) -> MLP:
    torch.manual_seed(seed)
    return model()


def test_wrong_layer_name_fails_at_fit_start_with_the_layers_that_exist(tmp_path):
    monitor = AGOPMonitor(layers=["net.1", "fc"])
    fit = trainer(tmp_path, [monitor])
    with pytest.raises(ConfigurationError, match=r"Layer `net.1` matches no .* Layers that exist: net.0, net.2, net.4"):
        fit.fit(model(), datamodule())
    assert fit.global_step == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"every_n_train_steps": 0}, "`every_n_train_steps` must be a positive integer, got 0"),
        ({"estimator": "fast"}, "`estimator` must be 'exact' or 'sketch', got 'fast'"),
        ({"measure_on": ["predict"]}, "`measure_on` takes 'fit', 'validate', 'test'; got \\['predict'\\]"),
        ({"measure_on": "fit", "layers": []}, "`layers` must be a non-empty list of layer names or patterns"),
        ({"layers": [1]}, "`layers` must be a non-empty list"),
        ({"top_eigenvalues": -1}, "`top_eigenvalues` must be a non-negative integer, got -1"),
        ({"save_max_dim": 0}, "`save_max_dim` must be a positive integer, got 0"),
        ({"split": {"head": {"a": 0}}}, "`split\\['head'\\]` must map suffixes to positive slice counts"),
        ({"name": "my run"}, "`name` must be letters, digits"),
        ({"every_n_train_steps": True}, "`every_n_train_steps` must be a positive integer, got True"),
    ],
)
def test_bad_arguments_fail_in_init(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        AGOPMonitor(**kwargs)


class DictBatchModel(LightningModule):
    """A user's module: dict batches, dropout and BatchNorm, its own layer names, SGD."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.3))
        self.head = nn.Linear(12, 3)
        self.spare = nn.Linear(12, 3)  # never called: `layers=None` skips it with a warning
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.modes.append(self.training)
        return nn.functional.cross_entropy(self(batch["features"]), batch["label"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        data = [{"features": torch.randn(6), "label": torch.tensor(i % 3)} for i in range(40)]
        return DataLoader(data, batch_size=8, shuffle=True)


def test_dict_batches_without_forward_fn_get_a_hint(tmp_path):
    with pytest.raises(ConfigurationError, match=r"keys \['features', 'label'\] failed .* Pass `forward_fn="):
        trainer(tmp_path, [AGOPMonitor(layers=["head"])], max_epochs=1).fit(DictBatchModel())


def test_any_lightning_module_with_a_forward_fn(tmp_path):
    net = DictBatchModel()
    monitor = AGOPMonitor(every_n_train_steps=2, probe_size=16, forward_fn=lambda m, batch: m(batch["features"]))
    with pytest.warns(UserWarning, match=r"skipping layers the forward pass does not call: \['spare'\]"):
        trainer(tmp_path, [monitor], max_epochs=1).fit(net)

    assert [view.name for view in monitor.views] == ["encoder.0", "head"]
    assert all(net.modes)  # every training step ran in train mode: the measurements restored it
    assert [entry["step"] for entry in monitor.history] == [0, 2, 4, 5]

    probe = torch.stack([net.train_dataloader().dataset[i]["features"] for i in monitor._probe_indices.tolist()])
    net.eval()  # the monitor measures in eval mode: BatchNorm running statistics, no dropout
    torch.testing.assert_close(monitor.last_matrices["head"]["agop"], agop(net, probe, ["head"])["head"].float())


def test_tensorboard_gets_the_scalars_and_the_pictures(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    from lightning.pytorch.loggers import TensorBoardLogger

    monitor = AGOPMonitor(layers=["net.0"], every_n_train_steps=4, log_images="all")
    logger = TensorBoardLogger(tmp_path, name="", version="")
    quiet_trainer(tmp_path, max_epochs=2, logger=logger, callbacks=[monitor]).fit(model(), datamodule())

    events = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    steps = [event.step for event in events.Scalars("nfa/net.0/pearson_sqrt")]
    assert steps == [0, 4, 8]
    assert "agop/net.0/effective_rank" in events.Tags()["scalars"]
    for picture in ("matrices", "spectrum"):
        images = events.Images(f"pictures/net.0/{picture}")
        assert [image.step for image in images] == [0, 4, 8] and images[0].width > 100
    assert list((tmp_path / "images" / "pictures" / "net.0" / "matrices").glob("step_*.png"))


def test_wandb_offline_run_holds_the_step_axis_pictures_and_table(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monitor = AGOPMonitor(layers=["net.0"], every_n_train_steps=4)
    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    quiet_trainer(tmp_path, max_epochs=2, logger=logger, callbacks=[monitor]).fit(model(), datamodule())
    logger.experiment.finish()

    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    media = run / "files" / "media"
    for picture in ("matrices", "spectrum"):  # eigenvectors are drawn for image inputs only
        assert list((media / "images" / "pictures" / "net.0").glob(f"{picture}_*.png")), picture
    (table,) = (media / "table" / "nfa").glob("table_*.table.json")
    content = json.loads(table.read_text())
    assert content["columns"][:2] == ["step", "layer"] and len(content["data"]) == 3  # steps 0, 4 and 8

    # The run file is W&B's binary record log: the step axis definitions stand in it as plain strings; a step that
    # went backwards would have been dropped, with W&B's warning in the run's logs.
    data = next(run.glob("*.wandb")).read_bytes()
    assert b"nfa/*" in data and b"agop/*" in data and b"trainer/global_step" in data
    logs = "".join(path.read_text(errors="replace") for path in run.rglob("*.log"))
    assert "ignoring partial history record" not in logs and "less than the current step" not in logs
    assert "handler" in logs  # the internal log that would hold the warning is there


def test_a_diverging_model_logs_nan_and_training_goes_on(tmp_path):
    monitor = AGOPMonitor(layers=["net.0"], every_n_train_steps=2, log_images="all")
    net = MLP(input_dim=6, output_dim=1, depth=2, width=16, loss="mse", optimizer=lambda p: torch.optim.SGD(p, lr=1e12))
    with pytest.warns(UserWarning, match="net.0 are not finite .* diverged"):
        trainer(tmp_path, [monitor], max_epochs=1).fit(net, datamodule())

    values = logged(tmp_path, "nfa/net.0/pearson_sqrt")
    assert sorted(values) == [0, 2, 4] and values[0] == values[0]  # finite before the first step
    assert values[4] != values[4]  # NaN once the weights blew up
    assert list((tmp_path / "images" / "pictures" / "net.0" / "matrices").glob("step_0000000.png"))
    assert not list((tmp_path / "images" / "pictures" / "net.0" / "matrices").glob("step_0000004.png"))
