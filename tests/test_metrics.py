import numpy as np
import pytest
from sklearn import metrics as skm

from deepfake.metrics import binary_metrics, roc_points


def test_known_values():
    y = [0, 0, 1, 1, 1, 0]
    s = [0.1, 0.6, 0.8, 0.4, 0.9, 0.2]
    m = binary_metrics(y, s, threshold=0.5)
    # predictions: 0 1 1 0 1 0 -> tn=2 fp=1 fn=1 tp=2
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (2, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["roc_auc"] == pytest.approx(8 / 9)  # 8 of 9 (fake, real) pairs ordered correctly
    assert m["mean_confidence_fake"] == pytest.approx((0.8 + 0.4 + 0.9) / 3)
    assert m["n"] == 6


def test_agrees_with_sklearn_on_random_inputs():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.clip(y * 0.3 + rng.random(500) * 0.7, 0, 1)
    m = binary_metrics(y, s, 0.45)
    p = (s >= 0.45).astype(int)
    assert m["f1"] == pytest.approx(skm.f1_score(y, p))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert m["average_precision"] == pytest.approx(skm.average_precision_score(y, s))


def test_single_class_has_no_auc():
    m = binary_metrics([1, 1], [0.7, 0.2])
    assert m["roc_auc"] is None and m["accuracy"] == 0.5


def test_bad_inputs():
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="length"):
        binary_metrics([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="no predictions"):
        binary_metrics([], [])


def test_roc_points_start_at_origin_and_end_at_one():
    r = roc_points([0, 1, 0, 1], [0.2, 0.9, 0.4, 0.3])
    assert r["fpr"][0] == 0 and r["tpr"][-1] == 1 and max(r["threshold"]) <= 1
