"""agoplight's RFM against xRFM on the same splits, in one run: ``python -m agoplight.bench.rfm``.

Tasks: scikit-learn's bundled digits, breast_cancer, wine (accuracy) and diabetes (R^2), split 60/20/20 with a
seed and standardised on the training split, and the low-rank task ``y = x_1 * x_2``, ``x ~ N(0, I_100)`` (2,000
training, 1,000 validation and 10,000 test points; R^2). Both models get the same arrays and choose their iteration
on the same validation split; each fit is timed ``--repeats`` times, alternating the two models, and the median is
printed. Scores are in points (accuracy or R^2 times 100). xRFM runs with its defaults on the CPU; it is not an
agoplight dependency: ``pip install xrfm`` to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn import datasets

from agoplight.data.base import split_indices
from agoplight.rfm import RFMClassifier, RFMRegressor

TASKS = ("digits", "breast_cancer", "wine", "diabetes", "lowrank")


@dataclass
class Task:
    """Standardised train/validation/test arrays of one data set."""

    name: str
    classification: bool
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


def load_task(name: str, seed: int = 0) -> Task:
    """One of ``TASKS`` with its seeded split; features standardised with the training split's statistics."""
    if name == "lowrank":
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(13_000, 100))
        y = x[:, 0] * x[:, 1]
        train, val, test = np.arange(2000), np.arange(2000, 3000), np.arange(3000, 13_000)
        classification = False
    else:
        x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        train, val, test = (idx.numpy() for idx in split_indices(len(x), 0.2, 0.2, seed))
        classification = name != "diabetes"
        mean, std = x[train].mean(0), x[train].std(0)
        x = (x - mean) / np.where(std > 0, std, 1.0)
    y = y if classification else y.astype(np.float64)
    return Task(name, classification, *((x[idx], y[idx]) for idx in (train, val, test)))


def score(task: Task, predicted: np.ndarray) -> float:
    """Test accuracy or R^2, in points."""
    y = task.test[1]
    predicted = np.asarray(predicted).reshape(y.shape)
    if task.classification:
        return 100 * float(np.mean(predicted == y))
    return 100 * float(1 - ((predicted - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def fit_ours(task: Task, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """agoplight's RFM with its defaults (Laplace, L = 10, 5 iterations, centred AGOP^1/2)."""
    model = (RFMClassifier if task.classification else RFMRegressor)(iters=5, random_state=seed)
    model.fit(*task.train, eval_set=task.val)
    return model.predict


def fit_xrfm(task: Task, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """xRFM with its defaults on the CPU, validation split passed as its tuning set."""
    from xrfm import xRFM

    x_train, y_train = task.train
    x_val, y_val = task.val
    if not task.classification:  # xRFM tells regression from classification by the targets' dtype
        y_train, y_val = y_train.astype(np.float32), y_val.astype(np.float32)
    model = xRFM(device="cpu", random_state=seed, verbose=False)
    with contextlib.redirect_stdout(io.StringIO()):  # xRFM prints its progress
        model.fit(x_train.astype(np.float32), y_train, x_val.astype(np.float32), y_val)

    def predict(x: np.ndarray) -> np.ndarray:
        with contextlib.redirect_stdout(io.StringIO()):
            return np.asarray(model.predict(x.astype(np.float32)))

    return predict


def measure(fit: Callable[[Task, int], Any], task: Task, seed: int) -> tuple[float, float]:
    """One timed fit: its wall time and the test score of the fitted model."""
    start = time.perf_counter()
    predict = fit(task, seed)
    seconds = time.perf_counter() - start
    return score(task, predict(task.test[0])), seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--repeats", type=int, default=3, help="timed fits per model and task (median printed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    models: dict[str, Callable[[Task, int], Any]] = {"agoplight": fit_ours}
    try:
        import xrfm  # noqa: F401
    except ImportError:
        print("xRFM is not installed, so only agoplight's RFM runs. To compare: pip install xrfm\n")
    else:
        models["xRFM"] = fit_xrfm

    names = list(models)
    header = f"{'task':<14}{'n_train':>8}{'d':>5}  {'metric':<9}"
    header += "".join(f"{name + ' score':>16}" for name in names) + "".join(f"{name + ' fit s':>16}" for name in names)
    print(f"threads: {torch.get_num_threads()}, repeats: {args.repeats}, seed: {args.seed}")
    print(header)
    for name in args.tasks:
        task = load_task(name, args.seed)
        results: dict[str, list[tuple[float, float]]] = {model: [] for model in names}
        for _ in range(args.repeats):  # alternate the models, so that load changes on the machine hit both
            for model in names:
                results[model].append(measure(models[model], task, args.seed))
        scores = [results[model][0][0] for model in names]
        times = [statistics.median(seconds for _, seconds in results[model]) for model in names]
        metric = "accuracy" if task.classification else "R^2"
        line = f"{name:<14}{len(task.train[0]):>8}{task.train[0].shape[1]:>5}  {metric:<9}"
        line += "".join(f"{value:>16.2f}" for value in scores) + "".join(f"{value:>16.3f}" for value in times)
        print(line, flush=True)


if __name__ == "__main__":
    main()
