import json

import pandas as pd
import pytest

from deepfake.pipeline import tracking


def _row(epoch: int) -> dict:
    return {
        "epoch": epoch,
        "train_loss": 0.7 - 0.1 * epoch,
        "train_accuracy": 0.5 + 0.1 * epoch,
        "train_auc": 0.55 + 0.1 * epoch,
        "val_loss": 0.69 - 0.05 * epoch,
        "val_accuracy": 0.5 + 0.05 * epoch,
        "val_auc": [0.6, 0.8, 0.7][epoch - 1],
        "lr": 1e-3 / epoch,
    }


def test_train_tracker_writes_each_epoch_as_it_ends_and_the_history_reads_back(tmp_path):
    t = tracking.TrainTracker(tmp_path)
    t.epoch(_row(1))
    val_auc = tmp_path / "plots" / "metrics" / "val" / "auc.tsv"
    assert pd.read_csv(val_auc, sep="\t").to_dict("list") == {"step": [1], "auc": [0.6]}  # live, before the end
    for e in (2, 3):
        t.epoch(_row(e))
    t.finish({"best_epoch": 2, "best_val_auc": 0.8}, epochs_run=3)
    history = tracking.read_history(tmp_path)
    expected = pd.DataFrame([_row(e) for e in (1, 2, 3)])
    pd.testing.assert_frame_equal(history[expected.columns], expected, check_dtype=False)
    # the headline, not the last epoch's values; step = epochs run; no timestamps anywhere
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"best_epoch": 2, "best_val_auc": 0.8, "step": 3}
    assert "timestamp" not in val_auc.read_text()


def test_read_history_names_a_folder_without_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no training history"):
        tracking.read_history(tmp_path)


def test_headline_eval_keeps_the_numbers_of_a_table_rounded():
    metrics = {
        "roc_auc": 0.80876543,
        "accuracy": 0.7444444,
        "average_precision": 0.845,
        "eer": 0.27777,
        "n": 360,
        "latency_ms_median": 9.4,
        "ci": {
            "roc_auc_low": 0.7687,
            "roc_auc_high": 0.85016,
            "accuracy_low": 0.71,
            "accuracy_high": 0.775,
            "n_groups": 15,
        },
        "calibration": {"ece_after": 0.0701, "ece_before": 0.158},
        "per_kind": {"column": "manipulation", "kinds": [{"kind": "swap", "roc_auc": 0.8956, "n": 51}]},
    }
    head = tracking.headline_eval(metrics)
    assert head == {
        "roc_auc": 0.8088,
        "roc_auc_low": 0.7687,
        "roc_auc_high": 0.8502,
        "accuracy": 0.7444,
        "accuracy_low": 0.71,
        "accuracy_high": 0.775,
        "average_precision": 0.845,
        "eer": 0.2778,
        "ece": 0.0701,
        "n_images": 360,
        "n_groups": 15,
        "per_kind_auc": {"swap": 0.8956},
    }


def test_log_headline_writes_nested_metrics_through_dvclive(tmp_path):
    tracking.log_headline(tmp_path, {"roc_auc": 0.81, "per_kind_auc": {"swap": 0.9, "partial": 0.65}})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {
        "roc_auc": 0.81,
        "per_kind_auc": {"swap": 0.9, "partial": 0.65},
    }
    assert not (tmp_path / "plots").exists()  # headline numbers only, no plots
