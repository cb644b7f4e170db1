import pytest
import torch

from agoplight import ConfigurationError
from agoplight.data import ModularArithmeticDataModule


@pytest.mark.parametrize("operation", ["+", "-", "*", "/"])
def test_every_pair_is_labelled_with_its_result(operation):
    p = 7
    dm = ModularArithmeticDataModule(p=p, operation=operation, train_fraction=0.5, val_fraction=0.2, seed=1)
    dm.setup()
    x = torch.cat([split.tensors[0] for split in (dm.train_set, dm.val_set, dm.test_set)])
    y = torch.cat([split.tensors[1] for split in (dm.train_set, dm.val_set, dm.test_set)])
    assert x.shape == (p * p - (p if operation == "/" else 0), 2 * p) == (len(y), dm.input_dim)
    assert torch.equal(x.sum(1), torch.full((len(x),), 2.0))  # one-hot a and b

    a, b = x[:, :p].argmax(1), x[:, p:].argmax(1)
    assert len(set(zip(a.tolist(), b.tolist(), strict=True))) == len(x)  # no pair twice
    for ai, bi, ci in zip(a.tolist(), b.tolist(), y.tolist(), strict=True):
        if operation == "/":
            assert (ci * bi) % p == ai
        else:
            assert ci == {"+": ai + bi, "-": ai - bi, "*": ai * bi}[operation] % p
    assert dm.output_dim == p and dm.feature_names[p] == "b=0"


def test_split_is_seeded_and_the_held_out_pairs_are_the_test_set_by_default():
    dm = ModularArithmeticDataModule(p=11, train_fraction=0.3, seed=0)
    dm.setup()
    assert len(dm.train_set) == round(121 * 0.3) and len(dm.test_set) == 121 - len(dm.train_set)
    assert dm.val_set is dm.test_set or torch.equal(dm.val_set.tensors[0], dm.test_set.tensors[0])
    again = ModularArithmeticDataModule(p=11, train_fraction=0.3, seed=0)
    again.setup()
    assert torch.equal(again.train_set.tensors[0], dm.train_set.tensors[0])
    other = ModularArithmeticDataModule(p=11, train_fraction=0.3, seed=1)
    other.setup()
    assert not torch.equal(other.train_set.tensors[0], dm.train_set.tensors[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"p": 1}, "`p` must be an integer >= 2, got 1"),
        ({"operation": "%"}, r"`operation` must be one of \('\+', '-', '\*', '/'\), got '%'"),
        ({"p": 12, "operation": "/"}, "needs a prime `p`.*got p=12"),
        ({"train_fraction": 1.0}, "`train_fraction` must be in \\(0, 1\\).*got 1.0 and 0.0"),
        ({"train_fraction": 0.6, "val_fraction": 0.5}, "with a sum below 1; got 0.6 and 0.5"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        ModularArithmeticDataModule(**kwargs)
