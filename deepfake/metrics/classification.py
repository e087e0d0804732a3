"""Classification metrics for a fake-probability score (1 = fake).

Everything here is a pure function of labels and scores (numpy in, floats out), checked
against scikit-learn in ``tests/test_metrics.py``:

* :func:`binary_metrics`: the threshold metrics (accuracy, balanced accuracy, precision,
  recall, F1, confusion counts, mean confidence per class) and the ranking and probability
  metrics (ROC-AUC, average precision, EER, log-loss, Brier score).
* :func:`choose_threshold`: the operating point, picked on a validation split by a named rule.
* :func:`expected_calibration_error` / :func:`reliability_table`: calibration.
* :func:`group_bootstrap_ci`: confidence intervals resampling groups (identities, videos),
  not images, since images of one group are not independent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from .calibration import EPS

#: Threshold rules understood by :func:`choose_threshold`.
THRESHOLD_RULES = ("balanced_accuracy", "target_fpr", "fixed")


def _has_both_classes(y: np.ndarray) -> bool:
    return len(np.unique(y)) == 2


def _as_arrays(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length ({y.size} vs {s.size})")
    if y.size == 0:
        raise ValueError("no predictions to score")
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} score(s) are NaN or infinite")
    bad = set(np.unique(y).tolist()) - {0, 1}
    if bad:
        raise ValueError(f"labels must be 0 (real) or 1 (fake), found {sorted(bad)}")
    return y, s


def equal_error_rate(y_true, scores) -> float | None:
    """Equal error rate: the rate where false-positive and false-negative rates are equal.

    Interpolated linearly between the two ROC points that bracket the crossing. ``None`` when
    only one class is present.
    """
    y, s = _as_arrays(y_true, scores)
    if not _has_both_classes(y):
        return None
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    fnr = 1.0 - tpr
    d = fpr - fnr  # non-decreasing from -1 (threshold +inf) to +1 (threshold -inf)
    i = int(np.argmax(d >= 0))
    if d[i] == 0 or i == 0:
        return float(fpr[i])
    t = d[i - 1] / (d[i - 1] - d[i])  # fraction of the way from point i-1 to point i
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def binary_metrics(y_true, scores, threshold: float = 0.5) -> dict[str, float | int | None]:
    """Threshold, ranking and probability metrics of fake-probabilities against labels.

    Args:
        y_true: 0 (real) / 1 (fake) labels.
        scores: probability of fake per image.
        threshold: a score at or above it is called fake.

    Returns:
        accuracy, balanced_accuracy, precision, recall (true-positive rate on fakes),
        specificity (on reals), f1, roc_auc, average_precision and eer (None when only one
        class is present), log_loss and brier (of the scores as probabilities), confusion
        counts tn/fp/fn/tp, mean_confidence_fake (mean fake-probability over true fakes),
        mean_confidence_real (mean real-probability, 1 - score, over true reals), n and
        threshold.
    """
    y, s = _as_arrays(y_true, scores)
    pred = (s >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    both = _has_both_classes(y)
    recall = tp / (tp + fn) if tp + fn else None
    specificity = tn / (tn + fp) if tn + fp else None
    # balanced accuracy over the classes present (sklearn's definition, without its warning)
    balanced = float(np.mean([r for r in (recall, specificity) if r is not None]))
    return {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "balanced_accuracy": balanced,
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "specificity": None if specificity is None else float(specificity),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y, s)) if both else None,
        "average_precision": float(skm.average_precision_score(y, s)) if both else None,
        "eer": equal_error_rate(y, s),
        "log_loss": float(skm.log_loss(y, np.clip(s, EPS, 1 - EPS), labels=[0, 1])),
        "brier": float(skm.brier_score_loss(y, s, pos_label=1)),
        "tn": int(tn),
        "fp": int(fp),
        "fn": int(fn),
        "tp": int(tp),
        "mean_confidence_fake": float(s[y == 1].mean()) if (y == 1).any() else None,
        "mean_confidence_real": float(1.0 - s[y == 0].mean()) if (y == 0).any() else None,
        "n": int(y.size),
        "threshold": float(threshold),
    }


#: Manifest columns naming the kind of fake (the first present with values on fakes is used).
KIND_COLUMNS = ("manipulation", "method", "subtype")


def kind_column(frame: pd.DataFrame) -> str | None:
    """The column of ``frame`` that names each fake's kind (``KIND_COLUMNS``), or None."""
    fakes = frame[frame["target"] == 1] if "target" in frame.columns else frame
    for col in KIND_COLUMNS:
        if col in frame.columns and fakes[col].fillna("").astype(str).str.strip().ne("").any():
            return col
    return None


def per_kind(y_true, scores, kinds, threshold: float) -> list[dict]:
    """Metrics per kind of fake: ROC-AUC of that kind's fakes against all reals, recall at the
    operating point, and n; kinds sorted by name (fakes without a kind are ``unknown``)."""
    y, s = _as_arrays(y_true, scores)
    k = pd.Series(kinds).fillna("").astype(str).str.strip().replace("", "unknown").to_numpy()
    reals = y == 0
    rows = []
    for kind in sorted(set(k[y == 1])):
        sel = (y == 1) & (k == kind)
        both = reals | sel
        rows.append(
            {
                "kind": kind,
                "n": int(sel.sum()),
                "n_real": int(reals.sum()),
                "roc_auc": float(skm.roc_auc_score(y[both], s[both])) if reals.any() else None,
                "recall": float((s[sel] >= threshold).mean()),
            }
        )
    return rows


def roc_points(y_true, scores) -> dict[str, list[float]]:
    """ROC curve points (fpr, tpr, threshold), with an infinite threshold clipped to 1."""
    fpr, tpr, thr = skm.roc_curve(np.asarray(y_true).astype(int), np.asarray(scores, dtype=np.float64))
    thr = np.minimum(thr, 1.0)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "threshold": thr.tolist()}


def pr_points(y_true, scores) -> dict[str, list[float]]:
    """Precision-recall curve points, from the highest threshold (recall 0) down."""
    precision, recall, thr = skm.precision_recall_curve(
        np.asarray(y_true).astype(int), np.asarray(scores, dtype=np.float64)
    )
    # sklearn returns increasing thresholds with one more precision/recall point (recall 0, precision 1)
    thr = np.append(thr, 1.0)
    return {"recall": recall[::-1].tolist(), "precision": precision[::-1].tolist(), "threshold": thr[::-1].tolist()}


# --------------------------------------------------------------------------------------------
# Operating point
# --------------------------------------------------------------------------------------------


def _candidate_thresholds(s: np.ndarray) -> np.ndarray:
    """Midpoints between consecutive distinct scores, plus one below and one above all of them."""
    u = np.unique(s)
    mids = (u[:-1] + u[1:]) / 2
    cands = np.concatenate([[u[0] / 2], mids, [(u[-1] + 1) / 2]])
    return np.unique(np.clip(cands, 1e-6, 1 - 1e-6))


def rates_at(y_true, scores, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates when ``score >= t`` is called fake, for each ``t``."""
    y, s = _as_arrays(y_true, scores)
    t = np.asarray(thresholds, dtype=np.float64)
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    tp = pos.size - np.searchsorted(pos, t, side="left")
    fp = neg.size - np.searchsorted(neg, t, side="left")
    return fp / max(neg.size, 1), tp / max(pos.size, 1)


def choose_threshold(
    y_true, scores, rule: str = "balanced_accuracy", target_fpr: float = 0.05, fixed: float = 0.5
) -> dict[str, float | str | None]:
    """Pick the decision threshold on a validation split.

    Candidates are the midpoints between consecutive distinct scores (so the threshold never
    sits on a validation score), plus one below and one above all scores.

    Args:
        y_true: validation labels.
        scores: validation fake-probabilities (calibrated when the threshold is applied to
            calibrated probabilities).
        rule: ``balanced_accuracy`` (maximise it; ties go to the candidate nearest 0.5),
            ``target_fpr`` (the lowest threshold whose false-positive rate on reals is at most
            ``target_fpr``, i.e. the highest recall under that constraint) or ``fixed``
            (``fixed`` as is).
        target_fpr: the false-positive-rate budget of the ``target_fpr`` rule.
        fixed: the threshold of the ``fixed`` rule, and the fallback when the split lacks the
            class a rule needs.

    Returns:
        ``threshold``, ``threshold_rule`` (a sentence naming the rule and the split), and the
        validation ``val_fpr``, ``val_tpr`` and ``val_balanced_accuracy`` at that threshold.
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; use one of {THRESHOLD_RULES}")
    y, s = _as_arrays(y_true, scores)
    has_pos, has_neg = (y == 1).any(), (y == 0).any()
    if rule == "balanced_accuracy" and has_pos and has_neg:
        cands = _candidate_thresholds(s)
        fpr, tpr = rates_at(y, s, cands)
        ba = (tpr + 1 - fpr) / 2
        best = np.flatnonzero(np.isclose(ba, ba.max(), rtol=0, atol=1e-12))
        t = float(cands[best[np.argmin(np.abs(cands[best] - 0.5))]])
        text = "max balanced accuracy on the validation split"
    elif rule == "target_fpr" and has_neg:
        if not 0 <= target_fpr < 1:
            raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr}")
        cands = _candidate_thresholds(s)
        fpr, _ = rates_at(y, s, cands)
        t = float(cands[fpr <= target_fpr + 1e-12].min())
        text = f"lowest threshold with false-positive rate <= {target_fpr:g} on the validation split"
    else:
        t = float(fixed)
        text = f"fixed threshold {fixed:g}"
        if rule != "fixed":
            text += f" (rule {rule!r} needs both classes in the validation split)"
    fpr, tpr = rates_at(y, s, [t])
    present = [r for r, ok in ((tpr[0], has_pos), (1 - fpr[0], has_neg)) if ok]
    return {
        "threshold": t,
        "threshold_rule": text,
        "val_fpr": float(fpr[0]) if has_neg else None,
        "val_tpr": float(tpr[0]) if has_pos else None,
        "val_balanced_accuracy": float(np.mean(present)),
    }


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


def _bin_index(s: np.ndarray, n_bins: int) -> np.ndarray:
    return np.minimum((s * n_bins).astype(int), n_bins - 1)  # equal-width bins, 1.0 in the last


def reliability_table(y_true, scores, n_bins: int = 15) -> pd.DataFrame:
    """Per equal-width bin of fake-probability: count, mean score and observed share of fakes.

    Empty bins are left out.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    y, s = _as_arrays(y_true, scores)
    b = _bin_index(s, n_bins)
    rows = []
    for k in np.unique(b):
        m = b == k
        rows.append(
            {
                "bin": int(k),
                "bin_lower": k / n_bins,
                "bin_upper": (k + 1) / n_bins,
                "count": int(m.sum()),
                "mean_score": float(s[m].mean()),
                "frac_fake": float(y[m].mean()),
            }
        )
    return pd.DataFrame(rows, columns=["bin", "bin_lower", "bin_upper", "count", "mean_score", "frac_fake"])


def expected_calibration_error(y_true, scores, n_bins: int = 15) -> float:
    """ECE of the fake-probability: sum over equal-width bins of share x |observed - predicted|."""
    t = reliability_table(y_true, scores, n_bins)
    return float((t["count"] * (t["frac_fake"] - t["mean_score"]).abs()).sum() / t["count"].sum())


# --------------------------------------------------------------------------------------------
# Confidence intervals
# --------------------------------------------------------------------------------------------


def _weighted_auc(
    pos_idx: tuple[np.ndarray, np.ndarray], neg_idx: tuple[np.ndarray, np.ndarray], n_unique: int, w: np.ndarray
) -> float | None:
    """ROC-AUC with per-image weights, from each image's rank among the distinct scores.

    ``pos_idx``/``neg_idx`` are the distinct-score ranks of the fakes and the reals; ties
    count one half (as in scikit-learn). None when a class has zero total weight.
    """
    wp = np.bincount(pos_idx[0], weights=w[pos_idx[1]], minlength=n_unique)  # weight of fakes per distinct score
    wn = np.bincount(neg_idx[0], weights=w[neg_idx[1]], minlength=n_unique)  # weight of reals per distinct score
    tp, tn = wp.sum(), wn.sum()
    if tp <= 0 or tn <= 0:
        return None
    below = np.cumsum(wn) - wn  # weight of reals strictly below each distinct score
    return float((wp * (below + 0.5 * wn)).sum() / (tp * tn))


def group_bootstrap_ci(
    y_true, scores, groups: Sequence, threshold: float = 0.5, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, float | int | str | None]:
    """Percentile bootstrap intervals of ROC-AUC and accuracy, resampling whole groups.

    Each replicate draws as many groups as there are, with replacement, and weights every
    image by how often its group was drawn; replicates with a single class get no AUC.

    Args:
        y_true: labels per image.
        scores: fake-probabilities per image.
        groups: group (identity or video) of each image.
        threshold: decision threshold for the accuracy.
        n_boot: replicates.
        level: coverage of the interval (0.95: the 2.5th and 97.5th percentiles).
        seed: seed of the resampling.

    Returns:
        ``roc_auc_low/high``, ``accuracy_low/high``, ``level``, ``n_boot``, ``n_boot_auc``
        (replicates with both classes), ``n_groups`` and ``unit`` (``group``).
    """
    y, s = _as_arrays(y_true, scores)
    if len(groups) != y.size:
        raise ValueError(f"groups and labels differ in length ({len(groups)} vs {y.size})")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    codes, uniques = pd.factorize(pd.Series(list(groups), dtype=str))
    n_groups = len(uniques)
    rng = np.random.default_rng(seed)
    correct = ((s >= threshold).astype(int) == y).astype(np.float64)
    _, rank = np.unique(s, return_inverse=True)
    pos = (rank[y == 1], np.flatnonzero(y == 1))
    neg = (rank[y == 0], np.flatnonzero(y == 0))
    n_unique = int(rank.max()) + 1
    aucs, accs = [], []
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)  # draws per group
        w = counts[codes].astype(np.float64)  # (N,) weight of each image
        accs.append(float((w * correct).sum() / w.sum()))
        auc = _weighted_auc(pos, neg, n_unique, w)
        if auc is not None:
            aucs.append(auc)
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    auc_lo, auc_hi = np.percentile(aucs, [lo, hi]).tolist() if aucs else (None, None)
    acc_lo, acc_hi = np.percentile(accs, [lo, hi]).tolist()
    return {
        "roc_auc_low": auc_lo,
        "roc_auc_high": auc_hi,
        "accuracy_low": float(acc_lo),
        "accuracy_high": float(acc_hi),
        "level": float(level),
        "n_boot": int(n_boot),
        "n_boot_auc": len(aucs),
        "n_groups": int(n_groups),
        "unit": "group",
    }
