"""Classification metrics for a fake-probability score (1 = fake)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def _has_both_classes(y: np.ndarray) -> bool:
    return len(np.unique(y)) == 2


def binary_metrics(y_true, scores, threshold: float = 0.5) -> dict[str, float | int | None]:
    """Threshold and ranking metrics of fake-probabilities against labels.

    Args:
        y_true: 0 (real) / 1 (fake) labels.
        scores: probability of fake per image.
        threshold: a score at or above it is called fake.

    Returns:
        accuracy, precision, recall, f1, roc_auc, average_precision (None when only one class
        is present), confusion counts tn/fp/fn/tp, mean_confidence_fake (mean fake-probability
        over true fakes), n and threshold.
    """
    y = np.asarray(y_true).astype(int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length ({y.size} vs {s.size})")
    if y.size == 0:
        raise ValueError("no predictions to score")
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} score(s) are NaN or infinite")
    pred = (s >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    both = _has_both_classes(y)
    return {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y, s)) if both else None,
        "average_precision": float(skm.average_precision_score(y, s)) if both else None,
        "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp),
        "mean_confidence_fake": float(s[y == 1].mean()) if (y == 1).any() else None,
        "n": int(y.size),
        "threshold": float(threshold),
    }


def roc_points(y_true, scores) -> dict[str, list[float]]:
    """ROC curve points (fpr, tpr, threshold), with an infinite threshold clipped to 1."""
    fpr, tpr, thr = skm.roc_curve(np.asarray(y_true).astype(int), np.asarray(scores, dtype=np.float64))
    thr = np.minimum(thr, 1.0)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "threshold": thr.tolist()}
