"""Image DataModules read by torchvision's own classes from tiny files written here in each dataset's format."""

import gzip
import pickle
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets
import torchvision.datasets.utils
from jsonargparse import ArgumentParser
from scipy.io import savemat

from agoplight import ConfigurationError
from agoplight.data import (
    CIFAR10DataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    SVHNDataModule,
    TorchvisionDataModule,
)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test: nothing here may download."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def skip_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    # torchvision checks the CIFAR-10 and SVHN files against the md5 sums of the official release, which tiny test
    # files cannot match. Only that checksum comparison is replaced: torchvision still checks that each file exists,
    # and the parsing is still its own.
    monkeypatch.setattr(torchvision.datasets.utils, "check_md5", lambda *args, **kwargs: True)


def write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format of MNIST: zero, zero, type 0x08 (unsigned byte), number of dimensions, the sizes as big-endian
    32-bit integers, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(folder: Path, n_train: int, n_test: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Unpacked idx files in ``folder`` (``<root>/MNIST/raw``); returns the images ``(n, 1, 28, 28)`` and labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    written = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
        written[prefix] = images[:, None], labels
    return written


def write_cifar10(root: Path, per_batch: int, n_test: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The python version's pickles: five training batches, a test batch and ``batches.meta``, each a dict whose
    ``data`` holds one image a row, ``uint8``, the red, green and blue planes one after the other."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images, labels = {}, {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        images[name] = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        labels[name] = rng.integers(0, 10, n)
        batch = {
            "batch_label": f"{name} of 5" if name != "test_batch" else "testing batch 1 of 1",
            "labels": labels[name].tolist(),
            "data": images[name].reshape(n, 3 * 32 * 32),
            "filenames": [f"image_{i}.png" for i in range(n)],
        }
        with open(folder / name, "wb") as file:
            pickle.dump(batch, file, protocol=2)
    with open(folder / "batches.meta", "wb") as file:
        meta = {"num_cases_per_batch": per_batch, "label_names": CIFAR10_CLASSES, "num_vis": 3 * 32 * 32}
        pickle.dump(meta, file, protocol=2)

    train = [f"data_batch_{i}" for i in range(1, 6)]
    return {
        "train": (np.concatenate([images[n] for n in train]), np.concatenate([labels[n] for n in train])),
        "test": (images["test_batch"], labels["test_batch"]),
    }


def write_svhn(root: Path, n_train: int, n_test: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``X`` as ``(32, 32, 3, n)`` ``uint8`` and ``y`` as ``(n, 1)``, with the digit 0 labelled 10, as SVHN ships.
    Returns the images ``(n, 3, 32, 32)`` and the digits."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        digits = rng.permutation(np.arange(n) % 10)
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
        savemat(root / f"{split}_32x32.mat", {"X": images.transpose(2, 3, 1, 0), "y": y})
        written[split] = images, digits
    return written


def assert_split_matches(split, images: np.ndarray, labels: np.ndarray, dm: TorchvisionDataModule) -> None:
    """Every sample of ``split`` is its source image, normalised with the dataset's mean and std, and its label."""
    indices = getattr(split, "indices", range(len(split)))
    x = torch.stack([split[i][0] for i in range(len(split))])
    y = torch.tensor([split[i][1] for i in range(len(split))])
    assert type(x) is torch.Tensor and x.dtype == torch.float32 and x.shape[1:] == dm.image_shape

    mean, std = (torch.tensor(v)[:, None, None] for v in (dm.mean, dm.std))
    expected = (torch.from_numpy(images[list(indices)]).float() / 255 - mean) / std  # (n, c, h, w)
    torch.testing.assert_close(x, expected)
    assert y.tolist() == labels[list(indices)].tolist()


@pytest.mark.parametrize("data_class", [MNISTDataModule, FashionMNISTDataModule])
def test_mnist_format_files_load_through_torchvision(tmp_path, data_class):
    written = write_mnist(tmp_path / data_class.name / "raw", n_train=20, n_test=6)
    dm = data_class(root=tmp_path, val_fraction=0.25, batch_size=8, seed=1)
    dm.setup("fit")

    assert type(dm.test_set) is getattr(torchvision.datasets, data_class.name)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (15, 5, 6)
    assert sorted(dm.train_set.indices + dm.val_set.indices) == list(range(20))
    assert_split_matches(dm.train_set, *written["train"], dm)
    assert_split_matches(dm.val_set, *written["train"], dm)
    assert_split_matches(dm.test_set, *written["t10k"], dm)

    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 28, 28) and y.dtype == torch.int64
    assert dm.input_shape == dm.image_shape == (1, 28, 28) and dm.input_dim == 784 and dm.output_dim == 10


def test_split_is_seeded_and_limit_train_keeps_the_first_shuffled_samples(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw", n_train=30, n_test=4)

    def splits(**kwargs) -> tuple[list[int], list[int]]:
        dm = MNISTDataModule(root=tmp_path, val_fraction=0.2, **kwargs)
        dm.setup()
        return dm.train_set.indices, dm.val_set.indices

    train, val = splits(seed=3)
    assert splits(seed=3) == (train, val)
    assert splits(seed=4) != (train, val)
    assert train != sorted(train)  # shuffled
    assert splits(seed=3, limit_train=5) == (train[:5], val)
    assert splits(seed=3, limit_train=1000) == (train, val)


def test_cifar_format_files_load_through_torchvision(tmp_path, skip_md5):
    written = write_cifar10(tmp_path, per_batch=3, n_test=4)
    dm = CIFAR10DataModule(root=tmp_path, val_fraction=0.2, batch_size=5)
    dm.setup()

    assert type(dm.test_set) is torchvision.datasets.CIFAR10
    assert dm.test_set.classes == CIFAR10_CLASSES  # read from batches.meta
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (12, 3, 4)
    assert_split_matches(dm.train_set, *written["train"], dm)
    assert_split_matches(dm.val_set, *written["train"], dm)
    assert_split_matches(dm.test_set, *written["test"], dm)

    x, _ = next(iter(dm.val_dataloader()))
    assert x.shape == (3, 3, 32, 32)
    assert dm.input_shape == (3, 32, 32) and dm.input_dim == 3072 and dm.output_dim == 10


def test_svhn_files_load_through_torchvision_with_digit_zero_as_label_zero(tmp_path, skip_md5):
    written = write_svhn(tmp_path, n_train=12, n_test=5)
    dm = SVHNDataModule(root=tmp_path, val_fraction=0.25, limit_train=6)
    dm.setup()

    assert type(dm.test_set) is torchvision.datasets.SVHN
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (6, 3, 5)
    assert_split_matches(dm.train_set, *written["train"], dm)
    assert_split_matches(dm.test_set, *written["test"], dm)
    assert 0 in dm.test_set.labels and 10 not in dm.test_set.labels
    assert dm.input_shape == (3, 32, 32) and dm.output_dim == 10


@pytest.mark.parametrize(
    "data_class, files",
    [
        (MNISTDataModule, [f"MNIST/raw/{name}" for name in IDX_FILES]),
        (FashionMNISTDataModule, [f"FashionMNIST/raw/{name}" for name in IDX_FILES]),
        (CIFAR10DataModule, [f"cifar-10-batches-py/{name}" for name in CIFAR10_FILES]),
        (SVHNDataModule, ["train_32x32.mat", "test_32x32.mat"]),
    ],
)
def test_missing_files_are_a_short_error_naming_them_and_the_cures(tmp_path, data_class, files):
    dm = data_class(root=tmp_path)
    assert dm.download is False
    with pytest.raises(ConfigurationError) as raised:
        dm.setup()

    message = str(raised.value)
    assert message.startswith(f"{data_class.name} files not found.")
    for name in files:
        assert f"  {tmp_path / name}  (missing)" in message
    assert "set `download: true`" in message and "copy the files to those paths" in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # no torchvision traceback
    assert list(tmp_path.iterdir()) == []  # nothing was created, nothing downloaded


def test_missing_message_marks_only_the_missing_files_and_mentions_gzip_archives(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    write_mnist(folder, n_train=4, n_test=2)
    for name in IDX_FILES[2:]:  # the test files as downloaded, still gzipped
        (folder / f"{name}.gz").write_bytes(gzip.compress((folder / name).read_bytes()))
        (folder / name).unlink()

    with pytest.raises(ConfigurationError) as raised:
        MNISTDataModule(root=tmp_path).setup()
    message = str(raised.value)
    for name in IDX_FILES[:2]:
        assert f"  {folder / name}\n" in message
    for name in IDX_FILES[2:]:
        assert f"  {folder / name}  (missing)" in message
    assert "gunzip" in message


def test_files_that_fail_torchvisions_check_are_a_configuration_error(tmp_path):
    write_cifar10(tmp_path, per_batch=1, n_test=1)  # present, but not the official release's md5 sums

    with pytest.raises(ConfigurationError, match="torchvision could not read the CIFAR10 files") as raised:
        CIFAR10DataModule(root=tmp_path).setup()
    assert isinstance(raised.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"val_fraction": 1.0}, r"`val_fraction` must be in \[0, 1\), got 1.0"),
        ({"limit_train": 0}, "`limit_train` must be a positive integer or null, got 0"),
        ({"batch_size": 0}, "`batch_size` must be a positive integer, got 0"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        MNISTDataModule(**kwargs)


def test_config_reaches_every_argument():
    parser = ArgumentParser()
    parser.add_class_arguments(CIFAR10DataModule, "data")
    config = parser.parse_args(["--data.root", "images", "--data.batch_size", "7", "--data.limit_train", "3"])
    assert config.data.root == "images" and config.data.batch_size == 7 and config.data.limit_train == 3
    assert config.data.download is False and config.data.val_fraction == 0.1
