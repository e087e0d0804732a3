import numpy as np
import pytest
from sklearn import metrics as skm

from deepfake.metrics.classification import (
    binary_metrics,
    choose_threshold,
    equal_error_rate,
    expected_calibration_error,
    group_bootstrap_ci,  # noqa: E402
    pr_points,
    rates_at,
    reliability_table,
    roc_points,
)


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


# --- full metric set against scikit-learn -------------------------------------------------------


def _random_scores(n=500, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1)
    return y, s


def test_probability_and_balance_metrics_agree_with_sklearn():
    y, s = _random_scores()
    m = binary_metrics(y, s, 0.45)
    p = (s >= 0.45).astype(int)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p))
    assert m["specificity"] == pytest.approx(skm.recall_score(y, p, pos_label=0))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, s))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, s))
    assert m["mean_confidence_real"] == pytest.approx(1 - s[y == 0].mean())


def test_known_values_of_the_new_metrics():
    y = [0, 0, 1, 1, 1, 0]
    s = [0.1, 0.6, 0.8, 0.4, 0.9, 0.2]
    m = binary_metrics(y, s, threshold=0.5)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert m["brier"] == pytest.approx(np.mean([0.01, 0.36, 0.04, 0.36, 0.01, 0.04]))
    assert m["mean_confidence_real"] == pytest.approx(1 - (0.1 + 0.6 + 0.2) / 3)
    # ranking real .1 .2 | fake .4 | real .6 | fake .8 .9: at threshold .5 fpr 1/3, fnr 1/3
    assert m["eer"] == pytest.approx(1 / 3)


def test_eer_extremes_and_brute_force():
    assert equal_error_rate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0
    assert equal_error_rate([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 1
    assert equal_error_rate([1, 1], [0.3, 0.4]) is None
    y, s = _random_scores(2000, seed=1)
    thr = np.unique(s)
    fpr, tpr = rates_at(y, s, thr)
    brute = np.min(np.maximum(fpr, 1 - tpr))  # the best achievable max(FPR, FNR)
    eer = equal_error_rate(y, s)
    assert abs(eer - brute) < 2 / min((y == 0).sum(), (y == 1).sum())


def test_pr_points_match_sklearn():
    y, s = _random_scores(100)
    pts = pr_points(y, s)
    precision, recall, _ = skm.precision_recall_curve(y, s)
    assert pts["recall"] == pytest.approx(recall[::-1].tolist())
    assert pts["precision"] == pytest.approx(precision[::-1].tolist())
    assert pts["recall"][0] == 0 and pts["recall"][-1] == 1


def test_balanced_accuracy_threshold_is_optimal_and_between_scores():
    y, s = _random_scores(300, seed=2)
    c = choose_threshold(y, s, "balanced_accuracy")
    assert c["threshold"] not in set(s.tolist())
    best = max(skm.balanced_accuracy_score(y, (s >= t).astype(int)) for t in np.unique(s))
    assert c["val_balanced_accuracy"] == pytest.approx(best)
    assert skm.balanced_accuracy_score(y, (s >= c["threshold"]).astype(int)) == pytest.approx(best)
    assert "balanced accuracy" in c["threshold_rule"] and "validation" in c["threshold_rule"]


def test_small_known_threshold():
    # reals .1 .2 .3, fakes .6 .7 .9: any threshold in (.3, .6) separates; the midpoint .45 is chosen
    c = choose_threshold([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    assert c["threshold"] == pytest.approx(0.45) and c["val_balanced_accuracy"] == 1


def test_target_fpr_threshold_respects_the_budget_with_most_recall():
    y, s = _random_scores(400, seed=3)
    c = choose_threshold(y, s, "target_fpr", target_fpr=0.1)
    pred = s >= c["threshold"]
    assert pred[y == 0].mean() <= 0.1
    # no lower score would keep the FPR within budget with more recall
    lower = np.unique(s[s < c["threshold"]])
    if lower.size:
        assert (s[y == 0] >= lower.max()).mean() > 0.1
    assert c["val_fpr"] == pytest.approx(pred[y == 0].mean())


def test_fixed_rule_and_single_class_fallback():
    assert choose_threshold([0, 1], [0.2, 0.8], "fixed", fixed=0.3)["threshold"] == 0.3
    c = choose_threshold([1, 1, 1], [0.2, 0.5, 0.8], "balanced_accuracy", fixed=0.6)
    assert c["threshold"] == 0.6 and "needs both classes" in c["threshold_rule"]
    with pytest.raises(ValueError, match="unknown threshold rule"):
        choose_threshold([0, 1], [0.2, 0.8], "youden")


def test_ece_known_value():
    # 2 bins: [0, .5) holds scores .1 .2 (labels 0 1), [.5, 1] holds .8 .9 (labels 1 1)
    y, s = [0, 1, 1, 1], [0.1, 0.2, 0.8, 0.9]
    expected = 0.5 * abs(0.5 - 0.15) + 0.5 * abs(1.0 - 0.85)
    assert expected_calibration_error(y, s, n_bins=2) == pytest.approx(expected)
    t = reliability_table(y, s, n_bins=2)
    assert t["count"].tolist() == [2, 2] and t["frac_fake"].tolist() == [0.5, 1.0]


def test_ece_is_small_for_calibrated_and_large_for_overconfident_scores():
    rng = np.random.default_rng(4)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.02
    assert expected_calibration_error(y, (p > 0.5).astype(float) * 0.98 + 0.01) > 0.2


def test_bootstrap_resamples_groups_not_images():
    y, s = _random_scores(60, seed=5)
    groups = np.arange(60)
    one = group_bootstrap_ci(y, s, groups, n_boot=300, seed=1)
    # every group duplicated 10 times: resampling groups gives exactly the same interval ...
    y10, s10, g10 = np.repeat(y, 10), np.repeat(s, 10), np.repeat(groups, 10)
    ten = group_bootstrap_ci(y10, s10, g10, n_boot=300, seed=1)
    for k in ("roc_auc_low", "roc_auc_high", "accuracy_low", "accuracy_high"):
        assert ten[k] == pytest.approx(one[k])
    assert ten["n_groups"] == 60
    # ... while treating the 600 copies as independent images pretends to be far more precise
    naive = group_bootstrap_ci(y10, s10, np.arange(600), n_boot=300, seed=1)
    assert naive["roc_auc_high"] - naive["roc_auc_low"] < 0.6 * (ten["roc_auc_high"] - ten["roc_auc_low"])


def test_bootstrap_interval_brackets_the_estimate():
    y, s = _random_scores(200, seed=6)
    ci = group_bootstrap_ci(y, s, np.arange(200) // 4, threshold=0.5, n_boot=500)
    m = binary_metrics(y, s, 0.5)
    assert ci["roc_auc_low"] < m["roc_auc"] < ci["roc_auc_high"]
    assert ci["accuracy_low"] < m["accuracy"] < ci["accuracy_high"]
    assert ci["n_boot_auc"] == 500 and ci["level"] == 0.95


def test_weighted_auc_matches_sklearn_with_ties():
    from deepfake.metrics.classification import _weighted_auc

    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) * 0.6 + 0.3 * y, 2)  # many ties
    w = rng.integers(0, 4, 300).astype(float)
    _, r = np.unique(s, return_inverse=True)
    got = _weighted_auc((r[y == 1], np.flatnonzero(y == 1)), (r[y == 0], np.flatnonzero(y == 0)), r.max() + 1, w)
    assert got == pytest.approx(skm.roc_auc_score(y, s, sample_weight=w))


def test_per_kind_ranks_each_kind_of_fake_against_all_reals():
    import pandas as pd

    from deepfake.metrics.classification import kind_column, per_kind

    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.35, 0.05])
    kinds = ["", "", "", "", "swap", "swap", "partial", "partial"]
    rows = {r["kind"]: r for r in per_kind(y, s, kinds, threshold=0.5)}
    assert set(rows) == {"swap", "partial"}
    assert rows["swap"]["roc_auc"] == 1.0 and rows["swap"]["recall"] == 1.0 and rows["swap"]["n"] == 2
    assert rows["partial"]["roc_auc"] == pytest.approx(0.375) and rows["partial"]["recall"] == 0.0
    assert rows["partial"]["n_real"] == 4
    frame = pd.DataFrame({"target": y, "subtype": ["real"] * 4 + ["eyes"] * 4, "manipulation": [""] * 8})
    assert kind_column(frame) == "subtype"  # the first column with values on fakes
    assert kind_column(frame.drop(columns="subtype")) is None
