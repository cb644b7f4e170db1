import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_wine
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from agoplight import ConfigurationError
from agoplight.rfm import RFMClassifier, RFMRegressor


def test_classifier_fits_predicts_and_ranks_features():
    X, y = load_wine(return_X_y=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    train, test = order[:100], order[140:]
    model = make_pipeline(StandardScaler(), RFMClassifier(iters=3))
    model.fit(X[train], y[train])
    assert model.score(X[test], y[test]) > 0.85

    rfm = RFMClassifier(iters=3, diag=True).fit((X[train] - X[train].mean(0)) / X[train].std(0), y[train] + 10)
    Z = (X[test] - X[train].mean(0)) / X[train].std(0)
    assert set(rfm.predict(Z)) <= {10, 11, 12} and list(rfm.classes_) == [10, 11, 12]
    proba = rfm.predict_proba(Z)
    assert proba.shape == (len(test), 3) and np.allclose(proba.sum(1), 1) and (proba > 0).all()
    assert np.array_equal(proba.argmax(1), np.searchsorted(rfm.classes_, rfm.predict(Z)))
    assert rfm.feature_importances_.shape == (13,) and rfm.feature_importances_.sum() == pytest.approx(1)
    assert rfm.M_.shape == (13,) and rfm.n_features_in_ == 13
    assert [(e["iteration"], e["agop_power"]) for e in rfm.history_][:3] == [(0, 0.5), (1, 0.5), (1, 1.0)]
    assert len(rfm.history_) == 7  # M = I once, then 3 iterations for each power (no validation data to choose)


def test_eval_set_chooses_the_iteration():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 8))
    y = X[:, 0] * X[:, 1]
    model = RFMRegressor(iters=4).fit(X[:300], y[:300], eval_set=(X[300:400], y[300:400]))
    best = max(model.history_, key=lambda entry: entry["validation_score"])  # the first of equals
    assert (model.best_iteration_, model.best_agop_power_) == (best["iteration"], best["agop_power"])
    assert model.best_iteration_ > 0
    assert len(model.history_) == 7  # M = I, two iterations for each power, then the better power alone
    assert len({entry["agop_power"] for entry in model.history_[5:]}) == 1
    single = RFMRegressor(iters=2, agop_power=1.0).fit(X[:300], y[:300], eval_set=(X[300:400], y[300:400]))
    assert [entry["agop_power"] for entry in single.history_] == [1.0, 1.0, 1.0]
    assert model.score(X[400:], y[400:]) > 0.5
    assert set(np.argsort(model.feature_importances_)[-2:]) == {0, 1}

    held_out = RFMRegressor(iters=2, validation_fraction=0.25).fit(X[:300], y[:300])
    assert "validation_score" in held_out.history_[0] and held_out.centers_.shape == (225, 8)
    two_targets = RFMRegressor(iters=1).fit(X[:200], np.stack([y[:200], -y[:200]], 1))
    assert two_targets.predict(X[:5]).shape == (5, 2)


def test_estimators_follow_scikit_learn_conventions():
    model = RFMClassifier(bandwidth=3.0, reg=0.01)
    assert clone(model).get_params()["bandwidth"] == 3.0
    with pytest.raises(Exception, match="not fitted"):
        model.predict(np.zeros((2, 3)))
    X = np.random.default_rng(0).normal(size=(40, 3))
    fitted = RFMClassifier(iters=1).fit(X, (X[:, 0] > 0).astype(int))
    with pytest.raises(ValueError, match="3 features"):
        fitted.predict(np.zeros((2, 4)))


@pytest.mark.parametrize(
    "model, message",
    [
        (RFMClassifier(iters=-1), "`iters` must be an integer >= 0, got -1"),
        (RFMClassifier(validation_fraction=1.0), r"`validation_fraction` must be in \[0, 1\), got 1.0"),
        (RFMClassifier(kernel="cosine"), "`kernel` must be one of"),
    ],
)
def test_bad_settings(model, message):
    X = np.random.default_rng(0).normal(size=(30, 3))
    with pytest.raises(ConfigurationError, match=message):
        model.fit(X, (X[:, 0] > 0).astype(int))


def test_single_class_is_refused():
    with pytest.raises(ConfigurationError, match="needs at least 2 classes"):
        RFMClassifier().fit(np.zeros((5, 2)), np.ones(5))


def test_real_valued_labels_are_refused_by_the_classifier():
    X = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ConfigurationError, match="needs class labels, got continuous targets.*use RFMRegressor"):
        RFMClassifier(iters=1).fit(X, X[:, 0])


def test_data_frames_keep_their_column_names():
    X, y = load_wine(return_X_y=True, as_frame=True)
    model = make_pipeline(StandardScaler(), RFMClassifier(iters=1)).set_output(transform="pandas").fit(X, y)
    rfm = model[-1]
    assert list(rfm.feature_names_in_) == list(X.columns)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "X has feature names, but ... was fitted without feature names"
        assert (model.predict(X) == y).mean() > 0.95
    with pytest.raises(ValueError, match="feature names"):
        rfm.predict(X.rename(columns={"alcohol": "ethanol"}))
