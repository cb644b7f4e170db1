"""MNIST, FashionMNIST, CIFAR-10 and SVHN through torchvision's own dataset classes.

torchvision is imported when data is loaded, not when this module is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Subset

from agoplight.data.base import TensorDataModule, split_indices
from agoplight.errors import ConfigurationError

log = logging.getLogger(__name__)

_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class TorchvisionDataModule(TensorDataModule):
    """An image dataset read by its torchvision class from ``root``: the official training set split with ``seed``
    into train and validation, the official test set as test set, images as normalised float tensors.

    Each pixel becomes ``(value / 255 - mean[c]) / std[c]`` with the per-channel ``mean`` and ``std`` of the
    dataset's training images. Files go where torchvision puts them (``expected_files``, relative to ``root``).
    When some are missing and ``download`` is off, ``setup`` raises a ``ConfigurationError`` that lists them and
    says how to get them; torchvision is never asked to download unless ``download`` is set.

    Subclasses set ``name`` (the torchvision class), ``image_shape``, ``mean``, ``std``, ``expected_files`` and
    ``hint`` (how the files are laid out), and override ``_torchvision_dataset`` if the class is not built with
    ``train=True/False``.

    Args:
        root: folder holding the dataset, laid out as torchvision expects.
        download: let torchvision download the missing files into ``root`` (needs internet access). Under a
            ``Trainer`` this happens in ``prepare_data``, once per node.
        val_fraction: share of the official training set held out for validation, chosen with ``seed``.
        limit_train: keep only the first ``limit_train`` training samples after the seeded shuffle (all of them
            when fewer, or when ``None``), for quick runs. The validation set does not change.
        **kwargs: ``batch_size``, ``num_workers``, ``seed``, ``shuffle`` (see ``TensorDataModule``).

    Raises:
        ConfigurationError: in ``__init__`` for a bad ``val_fraction`` or ``limit_train``; in ``setup`` and
            ``prepare_data`` when the files are missing, unreadable or cannot be downloaded.

    Example::

        data:
          class_path: agoplight.data.MNISTDataModule
          init_args: {root: data, download: false, val_fraction: 0.1, limit_train: 5000, batch_size: 128}
    """

    name: str
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    expected_files: tuple[str, ...]
    hint: str

    def __init__(
        self,
        root: str | Path = "data",
        download: bool = False,
        val_fraction: float = 0.1,
        limit_train: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0 <= val_fraction < 1:
            raise ConfigurationError(f"`val_fraction` must be in [0, 1), got {val_fraction!r}.")
        if limit_train is not None and limit_train < 1:
            raise ConfigurationError(f"`limit_train` must be a positive integer or null, got {limit_train!r}.")
        self.root = Path(root).expanduser()
        self.download = download
        self.val_fraction = val_fraction
        self.limit_train = limit_train

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.image_shape

    @property
    def input_dim(self) -> int:
        return math.prod(self.image_shape)

    @property
    def output_dim(self) -> int:
        return 10

    def missing_files(self) -> list[Path]:
        """The files torchvision needs that are not under ``root``."""
        return [path for path in self._expected_paths() if not path.is_file()]

    def prepare_data(self) -> None:
        """Download the files into ``root`` if ``download`` is set and some are missing; otherwise do nothing."""
        if self.download and self.missing_files():
            for train in (True, False):
                self._open(train, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.prepare_data()  # a no-op under a Trainer, which has called it already
        train_full, test = self._open(train=True), self._open(train=False)

        train, val, _ = split_indices(len(train_full), self.val_fraction, 0.0, self.seed)
        if self.limit_train is not None:
            train = train[: self.limit_train]
        self.train_set = Subset(train_full, train.tolist())
        self.val_set = Subset(train_full, val.tolist())
        self.test_set = test
        log.info("%s: %d train, %d val, %d test samples.", self.name, len(self.train_set), len(self.val_set), len(test))

    def transform(self) -> Callable:
        """PIL image to a normalised ``float32`` tensor of shape ``image_shape``."""
        import torch
        from torchvision.transforms import v2

        to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
        return v2.Compose([*to_tensor, v2.Normalize(self.mean, self.std), v2.ToPureTensor()])

    def _torchvision_dataset(self, train: bool, download: bool) -> Dataset:
        import torchvision.datasets

        dataset_class = getattr(torchvision.datasets, self.name)
        return dataset_class(self.root, train=train, transform=self.transform(), download=download)

    def _open(self, train: bool, download: bool = False) -> Dataset:
        """The official training or test set; torchvision's failures become a ``ConfigurationError``."""
        try:
            return self._torchvision_dataset(train, download)
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            if download:
                message = f"Downloading {self.name} into '{self.root}' failed ({reason}). {self._listing()}"
                raise ConfigurationError(message) from error
            if self.missing_files():
                raise ConfigurationError(f"{self.name} files not found. {self._listing()}") from None
            message = (
                f"torchvision could not read the {self.name} files under '{self.root}' ({reason}). They may be "
                "incomplete or from another release: delete them and set `download: true` on a machine with internet "
                "access, or copy the official files there again."
            )
            raise ConfigurationError(message) from error

    def _expected_paths(self) -> list[Path]:
        return [self.root / name for name in self.expected_files]

    def _listing(self) -> str:
        """Where torchvision looks, which files are missing, and the two ways to get them."""
        missing = set(self.missing_files())
        lines = [f"  {path}{'  (missing)' if path in missing else ''}" for path in self._expected_paths()]
        return (
            f"torchvision reads {self.name} from these files under root '{self.root}' ({self.root.resolve()}):\n"
            + "\n".join(lines)
            + "\nEither set `download: true` in the data's init_args on a machine with internet access, or copy the "
            f"files to those paths. {self.hint}"
        )


class MNISTDataModule(TorchvisionDataModule):
    """MNIST: handwritten digits, ``1x28x28``, 10 classes; 60,000 training and 10,000 test images.

    The files are the four idx files, unpacked, in ``<root>/MNIST/raw/``. See ``TorchvisionDataModule`` for the
    arguments.
    """

    name = "MNIST"
    image_shape = (1, 28, 28)
    mean, std = (0.1307,), (0.3081,)
    expected_files = tuple(f"MNIST/raw/{file}" for file in _IDX_FILES)
    hint = "torchvision reads the unpacked idx files: if you have the `.gz` archives, gunzip them in that folder."


class FashionMNISTDataModule(TorchvisionDataModule):
    """Fashion-MNIST: clothing pictures, ``1x28x28``, 10 classes; 60,000 training and 10,000 test images.

    The files are the four idx files, unpacked, in ``<root>/FashionMNIST/raw/``. See ``TorchvisionDataModule`` for
    the arguments.
    """

    name = "FashionMNIST"
    image_shape = (1, 28, 28)
    mean, std = (0.2860,), (0.3530,)
    expected_files = tuple(f"FashionMNIST/raw/{file}" for file in _IDX_FILES)
    hint = MNISTDataModule.hint


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10: small colour photographs, ``3x32x32``, 10 classes; 50,000 training and 10,000 test images.

    The files are the python pickle batches in ``<root>/cifar-10-batches-py/``. See ``TorchvisionDataModule`` for
    the arguments.
    """

    name = "CIFAR10"
    image_shape = (3, 32, 32)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    expected_files = tuple(
        f"cifar-10-batches-py/{file}"
        for file in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
        + ("test_batch", "batches.meta")
    )
    hint = "They come from the python version of the archive, cifar-10-python.tar.gz, unpacked in root."


class SVHNDataModule(TorchvisionDataModule):
    """SVHN: house-number digits cut from street photographs, ``3x32x32``, 10 classes; 73,257 training and 26,032
    test images (the ``extra`` set is not used).

    The files are ``train_32x32.mat`` and ``test_32x32.mat`` directly in ``<root>``. The files label the digit 0 as
    10; torchvision (and so this module) labels it 0. See ``TorchvisionDataModule`` for the arguments.
    """

    name = "SVHN"
    image_shape = (3, 32, 32)
    mean, std = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
    expected_files = ("train_32x32.mat", "test_32x32.mat")
    hint = "These are the cropped-digits (format 2) files, placed in root itself, not in a subfolder."

    def _torchvision_dataset(self, train: bool, download: bool) -> Dataset:
        from torchvision.datasets import SVHN

        return SVHN(self.root, split="train" if train else "test", transform=self.transform(), download=download)
