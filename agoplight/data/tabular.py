"""Tables from CSV or Parquet files: numeric and categorical columns, one target, a seeded split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from agoplight.data.base import TensorDataModule, split_indices
from agoplight.errors import ConfigurationError

READERS = {".csv": "read_csv", ".tsv": "read_csv", ".parquet": "read_parquet", ".pq": "read_parquet"}


class TabularDataModule(TensorDataModule):
    """One row per sample, one column per feature, and a target column, read from a CSV/TSV or Parquet file.

    Numeric columns are standardised with the training split's mean and standard deviation (missing values become
    that mean, i.e. 0). Categorical columns are one-hot encoded with the categories seen in the training split (a
    category first seen later, or a missing value, is all zeros). Columns not named in ``numeric`` or
    ``categorical`` are sorted by their type: numbers are numeric, anything else (strings, booleans) categorical.
    The split is seeded, as for the other DataModules.

    Args:
        path: the ``.csv``, ``.tsv``, ``.parquet`` or ``.pq`` file.
        target: the target column.
        numeric: columns to use as numbers.
        categorical: columns to one-hot encode (e.g. gene identifiers).
        drop: columns to leave out (identifiers, leaks).
        task: ``classification`` (integer class codes, ``classes`` lists the labels), ``regression`` (float
            targets ``(n, 1)``), or ``auto``: classification for a non-numeric target or one with at most
            ``max_classes`` distinct integer values.
        val_fraction: share of rows held out for validation.
        test_fraction: share held out for testing.
        max_classes: see ``task``.
        **kwargs: ``batch_size``, ``num_workers``, ``seed``, ``shuffle`` (see ``TensorDataModule``).

    Example::

        # gene_a, gene_b: gene identifiers; expr_a, expr_b, coexpression: numbers; interaction: 0/1
        dm = TabularDataModule("pairs.csv", target="interaction", categorical=["gene_a", "gene_b"])
        dm.input_dim, dm.output_dim, dm.feature_names[:3]
    """

    def __init__(
        self,
        path: str,
        target: str,
        numeric: Sequence[str] | None = None,
        categorical: Sequence[str] | None = None,
        drop: Sequence[str] = (),
        task: Literal["auto", "classification", "regression"] = "auto",
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        max_classes: int = 20,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if Path(path).suffix.lower() not in READERS:
            raise ConfigurationError(f"`path` must be a {', '.join(READERS)} file, got {path!r}.")
        if not Path(path).is_file():
            raise ConfigurationError(f"`path` {path!r} is not a file.")
        if task not in ("auto", "classification", "regression"):
            raise ConfigurationError(f"`task` must be 'auto', 'classification' or 'regression', got {task!r}.")
        split_indices(10, val_fraction, test_fraction, 0)  # fail early on bad fractions
        self.path = str(path)
        self.target = target
        self.numeric = list(numeric) if numeric is not None else None
        self.categorical = list(categorical) if categorical is not None else None
        self.drop = list(drop)
        for kind, columns in (("numeric", self.numeric), ("categorical", self.categorical), ("drop", self.drop)):
            if columns and target in columns:
                raise ConfigurationError(
                    f"The target {target!r} is also listed in `{kind}`: as a feature it would give the answer away. "
                    f"Remove it from `{kind}`."
                )
        self.task = task
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.max_classes = max_classes
        self.classes: list[Any] | None = None
        self.feature_names: list[str] = []
        self._splits: tuple[tuple[Tensor, Tensor], ...] | None = None

    @property
    def input_dim(self) -> int:
        return self._prepared()[0][0].shape[1]

    @property
    def output_dim(self) -> int:
        self._prepared()
        return len(self.classes) if self.classes is not None else 1

    def build(self) -> tuple[tuple[Tensor, Tensor], ...]:
        return self._prepared()

    def _prepared(self) -> tuple[tuple[Tensor, Tensor], ...]:
        """Read and encode the table once; the CLI asks for ``input_dim`` before ``setup``."""
        if self._splits is None:
            self._splits = self._encode(self._read())
        return self._splits

    def _read(self) -> Any:
        import pandas as pd  # imported here: reading tables is this module's business alone

        suffix = Path(self.path).suffix.lower()
        options = {"sep": "\t"} if suffix == ".tsv" else {}
        frame = getattr(pd, READERS[suffix])(self.path, **options)
        if self.target not in frame.columns:
            raise ConfigurationError(
                f"`target` {self.target!r} is not a column of {self.path!r}; columns: {list(frame.columns)}."
            )
        named = [*(self.numeric or []), *(self.categorical or []), *self.drop]
        missing = [name for name in named if name not in frame.columns]
        if missing:
            raise ConfigurationError(f"Columns {missing} are not in {self.path!r}; columns: {list(frame.columns)}.")
        return frame

    def _encode(self, frame: Any) -> tuple[tuple[Tensor, Tensor], ...]:
        from pandas.api.types import is_bool_dtype, is_numeric_dtype

        rest = [c for c in frame.columns if c != self.target and c not in self.drop]
        numeric, categorical = list(self.numeric or []), list(self.categorical or [])
        for column in rest:
            if column not in numeric and column not in categorical:
                usable = is_numeric_dtype(frame[column]) and not is_bool_dtype(frame[column])
                (numeric if usable else categorical).append(column)
        if not numeric and not categorical:
            raise ConfigurationError(f"{self.path!r} has no feature column besides the target {self.target!r}.")

        train, val, test = split_indices(len(frame), self.val_fraction, self.test_fraction, self.seed)
        train_rows = train.numpy()
        blocks, names = [], []
        if numeric:
            values = frame[numeric].to_numpy(dtype=np.float64)  # (n, numeric)
            mean = np.nanmean(values[train_rows], axis=0)
            std = np.nanstd(values[train_rows], axis=0)
            values = (values - mean) / np.where(std > 0, std, 1.0)
            blocks.append(np.nan_to_num(values, nan=0.0))
            names += numeric
        for column in categorical:
            labels = frame[column].astype("string").fillna("<missing>").to_numpy()
            seen = sorted(set(labels[train_rows]) - {"<missing>"})
            blocks.append((labels[:, None] == np.asarray(seen, dtype=object)[None, :]).astype(np.float64))
            names += [f"{column}={value}" for value in seen]
        self.feature_names = names
        x = torch.tensor(np.concatenate(blocks, axis=1), dtype=torch.float32)  # (n, features)

        y = self._targets(frame[self.target])
        return tuple((x[idx], y[idx]) for idx in (train, val, test))

    def _targets(self, column: Any) -> Tensor:
        from pandas.api.types import is_float_dtype, is_integer_dtype, is_numeric_dtype

        if column.isna().any():
            raise ConfigurationError(f"The target column {self.target!r} has missing values; drop those rows first.")
        task = self.task
        if task == "auto":
            integral = is_integer_dtype(column) or (is_float_dtype(column) and (column % 1 == 0).all())
            few = column.nunique() <= self.max_classes
            task = "classification" if not is_numeric_dtype(column) or (integral and few) else "regression"
        if task == "regression":
            if not is_numeric_dtype(column):
                raise ConfigurationError(f"`task: regression` needs a numeric target, {self.target!r} is not.")
            self.classes = None
            return torch.tensor(column.to_numpy(dtype=np.float64), dtype=torch.float32)[:, None]  # (n, 1)
        self.classes, codes = np.unique(column.to_numpy(), return_inverse=True)
        self.classes = self.classes.tolist()
        if len(self.classes) < 2:
            raise ConfigurationError(f"The target {self.target!r} has a single class {self.classes}.")
        return torch.tensor(codes, dtype=torch.long)


def make_gene_pairs(path: str | Path, n: int = 600, genes: int = 30, seed: int = 0) -> Path:
    """Write a synthetic gene-pair screen to a CSV file: a small, known table for examples and tests.

    Columns: ``gene_a``, ``gene_b`` (identifiers), ``pathway_a``, ``pathway_b`` (one of 4), ``expr_a``, ``expr_b``
    (expression, a few values missing), ``coexpression``, ``noise_1 .. noise_4`` (unrelated), and two targets:
    ``interaction`` (0/1: ``expr_a * expr_b + coexpression`` above 0.3, plus a shared-pathway bonus, 5% of the
    labels flipped) and ``fitness`` (a number from the same quantities). The informative features are ``expr_a``,
    ``expr_b``, ``coexpression`` and the pathways.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    pathway = rng.integers(0, 4, genes)
    expression = rng.normal(size=genes)
    a, b = rng.integers(0, genes, n), rng.integers(0, genes, n)
    expr_a = expression[a] + 0.3 * rng.normal(size=n)
    expr_b = expression[b] + 0.3 * rng.normal(size=n)
    coexpression = rng.normal(size=n)
    same = (pathway[a] == pathway[b]).astype(float)

    score = expr_a * expr_b + coexpression + 0.8 * same
    interaction = (score > 0.3) ^ (rng.random(n) < 0.05)
    table = pd.DataFrame(
        {
            "gene_a": [f"G{g:02d}" for g in a],
            "gene_b": [f"G{g:02d}" for g in b],
            "pathway_a": [f"P{p}" for p in pathway[a]],
            "pathway_b": [f"P{p}" for p in pathway[b]],
            "expr_a": np.where(rng.random(n) < 0.02, np.nan, expr_a),
            "expr_b": expr_b,
            "coexpression": coexpression,
            **{f"noise_{i}": rng.normal(size=n) for i in range(1, 5)},
            "interaction": interaction.astype(int),
            "fitness": score + 0.1 * rng.normal(size=n),
        }
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path
