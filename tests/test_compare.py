"""python -m deepfake compare: two tiny detectors trained on the same split and evaluated by the stages'
own functions, one table, its figure and what ran where."""

import json

import pandas as pd
import pytest

from deepfake.__main__ import main

QUIET = [
    "--set",
    "base.device=cpu",
    "--set",
    "train.weights=none",
    "--set",
    "train.batch_size=8",
    "--set",
    "evaluate.bootstrap=50",
    "--set",
    "evaluate.latency_images=4",
]


def _compare(tiny_dataset, tiny_splits, tmp_path, *archs):
    folders = ["--faces-dir", str(tiny_dataset), "--splits-dir", str(tiny_splits)]
    out = ["--out", str(tmp_path / "compare"), "--models-dir", str(tmp_path / "models")]
    size = ["--epochs", "1", "--image-size", "32"]
    return main(["compare", "--arch", *archs, *size, *folders, *out, *QUIET])


def test_two_detectors_one_table(tiny_dataset, tiny_splits, tmp_path, capsys):
    assert _compare(tiny_dataset, tiny_splits, tmp_path, "dilated_cnn", "test_resnet") == 0
    out = tmp_path / "compare"
    table = pd.read_csv(out / "table.csv")
    assert list(table["detector"]) == ["dilated_cnn", "test_resnet"]
    assert list(table["parameters"])[0] == 652_773 and table["image_size"].eq(32).all()
    for _, row in table.iterrows():
        details = json.loads((out / row["detector"] / "eval" / "details.json").read_text())
        assert row["test_roc_auc"] == pytest.approx(details["roc_auc"], abs=1e-6)  # the evaluate stage's own number
        assert row["test_roc_auc_low"] <= row["test_roc_auc"] <= row["test_roc_auc_high"]
        assert row["train_images_per_second"] > 0 and row["latency_ms_exact"] > 0
        assert row["latency_ms_int8"] > 0 and 0 <= row["int8_max_probability_change"] < 1
        assert (tmp_path / "models" / row["detector"] / "best.pt").is_file()
    kinds = [c for c in table.columns if c.startswith("auc_")]
    assert kinds and table[kinds].notna().all().all()  # per kind of fake
    md = (out / "table.md").read_text()
    assert md == capsys.readouterr().out and "| dilated_cnn | 0.65M | 32 px |" in md and "test ROC-AUC (95% CI)" in md
    assert (out / "comparison.png").stat().st_size > 10_000 and (out / "comparison.svg").is_file()
    settings = json.loads((out / "settings.json").read_text())
    assert settings["detectors"] == ["dilated_cnn", "test_resnet"] and settings["compare"]["epochs"] == 1
    assert settings["runs"]["test_resnet"]["config"]["arch"] == "test_resnet"


def test_a_faulty_detector_name_or_a_missing_split_stops_before_any_training(
    tiny_dataset, tiny_splits, tmp_path, capsys
):
    assert _compare(tiny_dataset, tiny_splits, tmp_path, "dilated_cnn", "efficentnet_b0") == 2
    assert "did you mean efficientnet_b0" in capsys.readouterr().err
    assert _compare(tiny_dataset, tiny_splits, tmp_path, "dilated_cnn", "dilated_cnn") == 2
    assert "detectors named twice" in capsys.readouterr().err
    assert not (tmp_path / "compare").exists() and not (tmp_path / "models").exists()
    assert _compare(tiny_dataset, tmp_path / "nowhere", tmp_path, "dilated_cnn") == 1
    assert "run dvc repro split first" in capsys.readouterr().err
