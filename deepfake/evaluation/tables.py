"""Report tables the notebooks show: metrics with their intervals, calibration before and after."""

from __future__ import annotations

import pandas as pd

# --------------------------------------------------------------------------------------------
# Report tables (notebooks)
# --------------------------------------------------------------------------------------------

_SUMMARY_ROWS = (
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("precision", "precision (fake)"),
    ("recall", "recall (fake) = TPR"),
    ("specificity", "specificity (real) = 1 - FPR"),
    ("f1", "F1 (fake)"),
    ("roc_auc", "ROC-AUC"),
    ("average_precision", "average precision"),
    ("eer", "equal error rate"),
    ("log_loss", "log-loss"),
    ("brier", "Brier score"),
    ("mean_confidence_fake", "mean p(fake) on fakes"),
    ("mean_confidence_real", "mean p(real) on reals"),
    ("tn", "true negatives"),
    ("fp", "false positives"),
    ("fn", "false negatives"),
    ("tp", "true positives"),
)


def summary_table(metrics: dict) -> pd.DataFrame:
    """Frame-level metrics as a table with their bootstrap interval where one exists."""
    ci = metrics.get("ci") or {}
    labels, values, cis = [], [], []
    for key, label in _SUMMARY_ROWS:
        v, low, high = metrics.get(key), ci.get(f"{key}_low"), ci.get(f"{key}_high")
        labels.append(label)
        values.append(round(v, 4) if isinstance(v, float) else v)
        cis.append(f"[{low:.3f}, {high:.3f}]" if low is not None and high is not None else "")
    table = pd.DataFrame({"value": pd.array(values, dtype=object), "ci": cis}, index=pd.Index(labels, name="metric"))
    if ci:
        table.attrs["ci"] = (
            f"{ci['level']:.0%} percentile bootstrap over {ci['n_groups']} {ci['unit']}s, {ci['n_boot']} replicates"
        )
    return table


def calibration_summary(metrics: dict) -> pd.DataFrame:
    """ECE, log-loss and Brier score before and after temperature scaling (test, and validation where fitted)."""
    c = metrics["calibration"]
    name = "test" if metrics.get("split", "test") == "test" else "evaluated"
    rows = [
        {"split": name, "measure": f"ECE ({c['ece_bins']} bins)", "before": c["ece_before"], "after": c["ece_after"]},
        {"split": name, "measure": "log-loss", "before": c["log_loss_before"], "after": c["log_loss_after"]},
        {"split": name, "measure": "Brier score", "before": c["brier_before"], "after": c["brier_after"]},
    ]
    if "val_ece_before" in c:
        rows += [
            {
                "split": "val (fit)",
                "measure": f"ECE ({c['ece_bins']} bins)",
                "before": c["val_ece_before"],
                "after": c["val_ece_after"],
            },
            {"split": "val (fit)", "measure": "log-loss", "before": c["val_nll_before"], "after": c["val_nll_after"]},
        ]
    return pd.DataFrame(rows).set_index(["split", "measure"])
