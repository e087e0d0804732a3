"""The table across detectors: a row from what training and evaluation measured, the table to read
(intervals, kinds of fake, an int8 runtime that did not compile said so), and its figure."""

import pandas as pd

from deepfake.evaluation.comparison import comparison_table, detector_row, markdown, write_comparison

SUMMARY = {"arch": "efficientnet_b0", "weights_used": "none", "parameters": 4_008_829, "best_val_auc": 0.9}
EVAL = {
    "roc_auc": 0.876,
    "n": 1032,
    "image_size": 96,
    "latency_ms_median": 12.3,
    "device": "cpu",
    "ci": {"roc_auc_low": 0.85, "roc_auc_high": 0.9, "n_groups": 43, "level": 0.95},
    "per_kind": {"kinds": [{"kind": "swap", "roc_auc": 0.91}, {"kind": "partial", "roc_auc": 0.7}]},
}


def test_rows_table_and_markdown(tmp_path):
    a = detector_row(
        "efficientnet_b0",
        SUMMARY,
        {"train_images_per_second": 41.5},
        EVAL,
        {"latency_ms_median": 4.2, "max_probability_change": 0.013},
    )
    b = detector_row(
        "vit",
        {**SUMMARY, "arch": "vit", "parameters": 5_000_000},
        {},
        {**EVAL, "roc_auc": 0.7, "per_kind": None, "ci": None},
        {"note": "backend int8 is unavailable for this model, running the exact (eager) model: ..."},
    )
    assert a["test_roc_auc_low"] == 0.85 and a["auc_swap"] == 0.91 and a["test_groups"] == 43
    table = comparison_table([a, b])
    cols = list(table.columns)
    assert cols.index("auc_partial") == cols.index("ci_level") + 1 and cols[-1] == "int8_note"
    md = markdown(table)
    row = "| efficientnet_b0 | 4.01M | 96 px | 0.876 (0.850–0.900) | 0.700 | 0.910 | 41.5 | 12.3 | 4.2 (Δp ≤ 0.013) |"
    assert row in md
    assert "| vit | 5.00M | 96 px | 0.700 | – | – | – | 12.3 | n/a (see int8_note) |" in md
    assert "test ROC-AUC (95% CI)" in md and "- vit: backend int8 is unavailable" in md
    written = write_comparison(table, tmp_path)
    assert pd.read_csv(written["table"])["detector"].tolist() == ["efficientnet_b0", "vit"]
    assert written["figure"].stat().st_size > 10_000
