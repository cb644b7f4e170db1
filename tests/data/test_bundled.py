import pytest
import torch

from agoplight import ConfigurationError
from agoplight.data import DigitsDataModule, LowRankDataModule


def test_digits_split_is_seeded_standardised_and_complete():
    dm = DigitsDataModule(seed=3)
    dm.setup("fit")
    x_train, y_train = dm.train_set.tensors
    sizes = [len(dm.train_set), len(dm.val_set), len(dm.test_set)]
    assert sum(sizes) == 1797 and sizes[1] == sizes[2] == round(1797 * 0.2)
    assert x_train.shape[1] == dm.input_dim == 64 and set(y_train.tolist()) == set(range(10))

    varying = x_train.std(0) > 0
    torch.testing.assert_close(x_train.mean(0), torch.zeros(64), atol=1e-5, rtol=0)
    torch.testing.assert_close(x_train.std(0)[varying], torch.ones(int(varying.sum())), atol=1e-5, rtol=0)

    again = DigitsDataModule(seed=3)
    again.setup("validate")  # every split exists whatever the stage
    assert torch.equal(again.train_set.tensors[0], x_train)
    other = DigitsDataModule(seed=4)
    other.setup()
    assert not torch.equal(other.train_set.tensors[1], y_train)


def test_digits_as_images():
    dm = DigitsDataModule(as_images=True)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape[1:] == (1, 8, 8) and dm.input_shape == (1, 8, 8)


def test_low_rank_target_is_the_product_of_the_first_two_coordinates():
    dm = LowRankDataModule(d=7, n_train=50, n_val=10, n_test=20, noise=0.0, seed=1)
    dm.setup()
    for split, n in ((dm.train_set, 50), (dm.val_set, 10), (dm.test_set, 20)):
        x, y = split.tensors
        assert x.shape == (n, 7) and y.shape == (n, 1)
        torch.testing.assert_close(y[:, 0], x[:, 0] * x[:, 1])
    noisy = LowRankDataModule(d=7, n_train=50, noise=0.5, seed=1)
    noisy.setup()
    assert not torch.allclose(noisy.train_set.tensors[1][:, 0], noisy.train_set.tensors[0][:, :2].prod(1))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: LowRankDataModule(d=1), "`d` must be at least 2"),
        (lambda: DigitsDataModule(val_fraction=0.6, test_fraction=0.5), "sum below 1, got 0.6 and 0.5"),
        (lambda: DigitsDataModule(batch_size=0), "`batch_size` must be a positive integer, got 0"),
    ],
)
def test_bad_settings(make, message):
    with pytest.raises(ConfigurationError, match=message):
        make()
