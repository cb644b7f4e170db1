import numpy as np
import pandas as pd
import pytest
import torch

from agoplight import ConfigurationError
from agoplight.data import TabularDataModule
from agoplight.data.tabular import make_gene_pairs


def test_gene_pairs_become_standardised_numbers_and_one_hot_categories(tmp_path):
    path = make_gene_pairs(tmp_path / "pairs.csv", n=200, genes=12)
    frame = pd.read_csv(path)
    dm = TabularDataModule(str(path), target="interaction", drop=["fitness"], seed=2)
    dm.setup()
    x_train, y_train = dm.train_set.tensors
    numeric = ["expr_a", "expr_b", "coexpression", "noise_1", "noise_2", "noise_3", "noise_4"]
    assert dm.feature_names[: len(numeric)] == numeric
    assert "gene_a=G00" in dm.feature_names and "pathway_b=P3" in dm.feature_names
    assert dm.input_dim == len(dm.feature_names) == x_train.shape[1] and dm.output_dim == 2 and dm.classes == [0, 1]
    assert y_train.dtype == torch.long and sum(map(len, (dm.train_set, dm.val_set, dm.test_set))) == 200

    torch.testing.assert_close(x_train[:, :7].mean(0), torch.zeros(7), atol=1e-5, rtol=0)  # missing values are 0
    torch.testing.assert_close(x_train[:, 1:7].std(0, unbiased=False), torch.ones(6), atol=1e-4, rtol=0)
    one_hot = x_train[:, [i for i, name in enumerate(dm.feature_names) if name.startswith("gene_a=")]]
    assert set(one_hot.sum(1).tolist()) == {1.0}
    assert frame["expr_a"].isna().any()


def test_parquet_regression_and_unseen_categories(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "dose": rng.normal(size=60),
            "cell": ["a"] * 30 + ["b"] * 29 + ["z"],
            "treated": rng.random(60) < 0.5,
            "response": rng.normal(size=60),
        }
    )
    frame.to_parquet(tmp_path / "screen.parquet")
    dm = TabularDataModule(str(tmp_path / "screen.parquet"), target="response", val_fraction=0.1, test_fraction=0.1)
    dm.setup()
    assert dm.output_dim == 1 and dm.classes is None and dm.train_set.tensors[1].shape[1:] == (1,)
    assert dm.feature_names[0] == "dose" and "treated=True" in dm.feature_names
    x = torch.cat([s.tensors[0] for s in (dm.train_set, dm.val_set, dm.test_set)])
    cells = [i for i, name in enumerate(dm.feature_names) if name.startswith("cell=")]
    assert x[:, cells].sum(1).min() >= 0 and x[:, cells].sum(1).max() == 1  # a category unseen in training is 0s


def test_auto_task_picks_classes_for_few_integers_and_strings(tmp_path):
    rng = np.random.default_rng(1)
    pd.DataFrame({"f": rng.normal(size=30), "label": rng.choice(["x", "y", "w"], 30)}).to_csv(tmp_path / "s.csv")
    dm = TabularDataModule(str(tmp_path / "s.csv"), target="label", drop=["Unnamed: 0"])
    assert dm.classes is None and dm.output_dim == 3 and dm.classes == ["w", "x", "y"]
    pd.DataFrame({"f": rng.normal(size=30), "count": rng.integers(0, 100, 30)}).to_csv(tmp_path / "c.tsv", sep="\t")
    assert TabularDataModule(str(tmp_path / "c.tsv"), target="count").output_dim == 1


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: TabularDataModule(str(p / "x.xlsx"), target="y"), r"`path` must be a \.csv, .*got '.*x\.xlsx'"),
        (lambda p: TabularDataModule(str(p / "missing.csv"), target="y"), "`path` '.*missing.csv' is not a file"),
        (
            lambda p: TabularDataModule(str(p / "pairs.csv"), target="label").input_dim,
            "`target` 'label' is not a column",
        ),
        (lambda p: TabularDataModule(str(p / "pairs.csv"), target="fitness", numeric=["gene"]).input_dim, "not in"),
        (lambda p: TabularDataModule(str(p / "pairs.csv"), target="interaction", val_fraction=0.9), "sum below 1"),
        (
            lambda p: TabularDataModule(str(p / "pairs.csv"), target="interaction", categorical=["interaction"]),
            "The target 'interaction' is also listed in `categorical`: .* give the answer away",
        ),
    ],
)
def test_bad_settings(tmp_path, make, message):
    make_gene_pairs(tmp_path / "pairs.csv", n=30)
    with pytest.raises(ConfigurationError, match=message):
        make(tmp_path)
