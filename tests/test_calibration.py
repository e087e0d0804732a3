import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from deepfake.calibration import (
    REQUIRED_KEYS,
    T_BOUNDS,
    apply_temperature,
    fit_temperature,
    load_calibration,
    logits_from_probs,
    nll,
    save_calibration,
)


def _overconfident(n=20000, factor=3.0, seed=0):
    """Labels drawn from sigmoid(z); the 'model' reports factor * z."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return factor * z, y


def test_fit_recovers_the_true_temperature():
    logits, y = _overconfident(factor=3.0)
    t, at_bound = fit_temperature(logits, y)
    assert t == pytest.approx(3.0, rel=0.05) and not at_bound
    logits, y = _overconfident(factor=0.5, seed=1)  # under-confident
    assert fit_temperature(logits, y)[0] == pytest.approx(0.5, rel=0.05)


def test_fit_is_the_nll_minimum_on_a_grid():
    logits, y = _overconfident(n=2000, factor=2.0, seed=2)
    t, _ = fit_temperature(logits, y)
    grid = np.exp(np.linspace(np.log(0.1), np.log(10), 2001))
    best = grid[np.argmin([nll(logits, y, g) for g in grid])]
    assert t == pytest.approx(best, rel=0.01)
    assert nll(logits, y, t) <= nll(logits, y, 1.0)


def test_separable_data_stops_at_the_lower_bound():
    t, at_bound = fit_temperature([-3.0, -2.0, 2.0, 3.0], [0, 0, 1, 1])
    assert t == T_BOUNDS[0] and at_bound


def test_temperature_keeps_the_ranking_and_t1_is_identity():
    rng = np.random.default_rng(3)
    p = rng.random(200)
    y = rng.integers(0, 2, 200)
    assert apply_temperature(p, 1.0) == pytest.approx(np.clip(p, 1e-7, 1 - 1e-7), abs=1e-9)
    q = apply_temperature(p, 2.5)
    assert roc_auc_score(y, q) == pytest.approx(roc_auc_score(y, p))
    assert np.all(np.abs(q - 0.5) <= np.abs(p - 0.5) + 1e-12)  # T > 1 pulls towards 0.5


def test_logits_of_saturated_probabilities_are_finite():
    z = logits_from_probs([0.0, 1.0, 0.5])
    assert np.isfinite(z).all() and z[2] == 0 and z[0] == pytest.approx(-z[1]) and 16 < z[1] < 16.2


def test_calibration_file_round_trip(tmp_path):
    path = save_calibration(
        tmp_path / "calibration.json", 1.7, 0.42, "max balanced accuracy on the validation split", n_val=10
    )
    data = json.loads(path.read_text())
    assert (
        set(REQUIRED_KEYS) <= set(data)
        and isinstance(data["temperature"], float)
        and isinstance(data["threshold_rule"], str)
    )
    assert load_calibration(path) == data and data["n_val"] == 10


def test_calibration_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="evaluate stage"):
        load_calibration(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"temperature": 1.0}))
    with pytest.raises(ValueError, match="threshold"):
        load_calibration(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="temperature"):
        save_calibration(tmp_path / "x.json", 0.0, 0.5, "fixed")
