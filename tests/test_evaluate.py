import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from deepfake.data.split import read_split
from deepfake.evaluation.evaluate import EvalConfig, evaluate, predictions_frame
from deepfake.evaluation.robustness import perturbation_grid, robustness_table
from deepfake.metrics.calibration import REQUIRED_KEYS, apply_temperature, fit_temperature, logits_from_probs
from deepfake.metrics.classification import choose_threshold
from deepfake.metrics.video_level import video_unit
from deepfake.models.checkpoint import load_checkpoint
from deepfake.pipeline import stages
from deepfake.training.train import TrainConfig, train

FAST = dict(
    device="cpu",
    latency_images=0,
    bootstrap=200,
    robust_jpeg="50",
    robust_blur="",
    robust_downscale="",
    robust_resize="",
)


@pytest.fixture(scope="module")
def checkpoint(tiny_dataset, tiny_splits, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    return train(
        TrainConfig(weights="none", epochs=1, batch_size=8, image_size=32, device="cpu"), tiny_splits, tiny_dataset, out
    ).best_checkpoint


@pytest.fixture(scope="module")
def result(checkpoint, tiny_dataset, tiny_splits):
    cfg = EvalConfig(
        device="cpu",
        latency_images=3,
        bootstrap=200,
        robust_jpeg="70,30",
        robust_blur="1",
        robust_downscale="0.5",
        robust_resize="48",
    )
    return evaluate(checkpoint, read_split(tiny_splits, "test"), tiny_dataset, cfg, val=read_split(tiny_splits, "val"))


def test_evaluate_scores_every_test_image(result, tiny_splits, tmp_path):
    test = read_split(tiny_splits, "test")
    preds, m = result.predictions, result.metrics
    assert len(preds) == len(test) == m["n"]
    assert preds["score"].between(0, 1).all() and preds["score_raw"].between(0, 1).all()
    assert (preds["predicted"] == np.where(preds["score"] >= m["threshold"], "fake", "real")).all()
    assert m["tn"] + m["fp"] + m["fn"] + m["tp"] == len(test)
    assert m["latency_images"] == 3 and m["latency_ms_median"] > 0
    for key in (
        "accuracy",
        "balanced_accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "average_precision",
        "eer",
        "log_loss",
        "brier",
        "mean_confidence_fake",
        "mean_confidence_real",
        "threshold_rule",
        "temperature",
    ):
        assert key in m, key
    assert m["level"] == "frame" and m["ci"]["unit"] == "group" and m["ci"]["n_groups"] == test["group"].nunique()


def test_outputs_and_calibration_file(result, tmp_path):
    paths = stages.write_eval_outputs(result, tmp_path, write_calibration=True, ece_bins=15)
    m = json.loads(paths["details"].read_text())  # every metric
    assert m["n"] == len(result.predictions)
    head = json.loads(paths["metrics"].read_text())  # the headline (DVCLive), what dvc metrics show prints
    assert head["n_images"] == len(result.predictions) and head["roc_auc"] == round(m["roc_auc"], 4)
    assert "latency_ms_median" not in m and "threshold" not in head
    if "latency_ms_median" in result.metrics:
        assert json.loads(paths["timings"].read_text())["latency_ms_median"] == result.metrics["latency_ms_median"]
    cal = json.loads((tmp_path / "calibration.json").read_text())
    assert set(REQUIRED_KEYS) <= set(cal)
    assert (
        isinstance(cal["temperature"], float)
        and isinstance(cal["threshold"], float)
        and isinstance(cal["threshold_rule"], str)
    )
    assert cal["threshold"] == m["threshold"] and cal["temperature"] == m["temperature"] and cal["fit_split"] == "val"
    roc = pd.read_csv(paths["roc"])
    assert roc["fpr"].iloc[0] == 0 and roc["tpr"].iloc[-1] == 1
    for name in ("pr", "reliability_calibrated", "reliability_uncalibrated", "robustness", "videos", "val_predictions"):
        assert paths[name].exists(), name
    rel = pd.read_csv(paths["reliability_calibrated"])
    assert rel["count"].sum() == len(result.predictions)


def test_temperature_and_threshold_come_from_validation_only(result, checkpoint, tiny_dataset, tiny_splits):
    val = result.val_predictions
    y = val["target"].to_numpy()
    t, _ = fit_temperature(logits_from_probs(val["score_raw"]), y)
    assert result.calibration["temperature"] == pytest.approx(t, rel=1e-4)
    expected = choose_threshold(y, apply_temperature(val["score_raw"], t), "balanced_accuracy")
    assert result.calibration["threshold"] == pytest.approx(expected["threshold"], abs=1e-5)
    assert result.calibration["threshold_rule"] == expected["threshold_rule"]
    # another test set (half of it) leaves the operating point unchanged
    test = read_split(tiny_splits, "test")
    other = evaluate(
        checkpoint, test.iloc[: len(test) // 2], tiny_dataset, EvalConfig(**FAST), val=read_split(tiny_splits, "val")
    )
    assert other.calibration["temperature"] == result.calibration["temperature"]
    assert other.calibration["threshold"] == result.calibration["threshold"]


def test_scores_match_a_manual_forward_pass(result, checkpoint, tiny_dataset, tiny_splits):
    from PIL import Image
    from torchvision import transforms as T

    from deepfake.data.inputs import IMAGENET_MEAN, IMAGENET_STD

    test = read_split(tiny_splits, "test")
    model, ckpt = load_checkpoint(checkpoint)
    size = ckpt["image_size"]  # an independent reference: torchvision's evaluation transform on the PIL image
    reference = T.Compose(
        [T.Resize((size, size), antialias=True), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    with Image.open(tiny_dataset / test["path"].iloc[0]) as im:
        x = reference(im.convert("RGB"))
    with torch.no_grad():
        p = torch.sigmoid(model(x.unsqueeze(0))).item()
    assert result.predictions["score_raw"].iloc[0] == pytest.approx(p, abs=1e-5)
    t = result.calibration["temperature"]
    assert result.predictions["score"].iloc[0] == pytest.approx(float(apply_temperature([p], t)[0]), abs=1e-5)


def test_a_given_calibration_is_applied_as_is(checkpoint, tiny_dataset, tiny_splits):
    test = read_split(tiny_splits, "test")
    r = evaluate(
        checkpoint,
        test,
        tiny_dataset,
        EvalConfig(**FAST),
        calibration={"temperature": 2.0, "threshold": 0.3, "threshold_rule": "from elsewhere"},
    )
    assert r.val_predictions is None and r.metrics["threshold_rule"] == "from elsewhere"
    assert r.predictions["score"].to_numpy() == pytest.approx(
        apply_temperature(r.predictions["score_raw"], 2.0), abs=1e-5
    )
    assert (r.predictions["predicted"] == np.where(r.predictions["score"] >= 0.3, "fake", "real")).all()


def test_robustness_rows_and_clean_reference(result):
    rob = result.robustness
    assert rob["perturbation"].tolist() == ["clean", "jpeg_70", "jpeg_30", "blur_1", "downscale_0.5", "resize_48"]
    assert rob.loc[0, "roc_auc"] == pytest.approx(result.metrics["roc_auc"])
    assert rob.loc[0, "delta_auc"] == 0 and (rob["error"] == "").all()
    assert rob.loc[rob["perturbation"] == "resize_48", "input_size"].item() == 48
    assert set(result.metrics["robustness"]) == set(rob["perturbation"])


def test_robustness_records_a_size_the_model_cannot_take(tiny_dataset, tiny_splits):
    class FixedSize(nn.Module):  # a flatten head: only 32x32 inputs work
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 32 * 32, 1)

        def forward(self, x):  # (B, 3, 32, 32) -> (B, 1)
            return self.fc(x.flatten(1))

    test = read_split(tiny_splits, "test")
    clean = np.linspace(0.1, 0.9, len(test))
    rob = robustness_table(
        FixedSize().eval(),
        test,
        tiny_dataset,
        32,
        torch.device("cpu"),
        perturbation_grid("50", "", "", "48"),
        1.0,
        0.5,
        clean,
    )
    assert rob.loc[rob["perturbation"] == "jpeg_50", "error"].item() == ""
    assert "RuntimeError" in rob.loc[rob["perturbation"] == "resize_48", "error"].item()
    assert np.isnan(rob.loc[rob["perturbation"] == "resize_48", "roc_auc"].item())


def test_video_level_aggregates_frames_per_video(checkpoint, tiny_dataset, tiny_splits):
    test = read_split(tiny_splits, "test")
    test["video"] = test["group"] + "_" + test["label"]  # two "videos" per identity, one per class
    r = evaluate(
        checkpoint,
        test,
        tiny_dataset,
        EvalConfig(**FAST),
        calibration={"temperature": 1.0, "threshold": 0.5, "threshold_rule": "t"},
    )
    v = r.metrics["video_level"]
    means = r.predictions.groupby("video").agg(target=("target", "max"), mean=("score", "mean"), max=("score", "max"))
    assert v["applicable"] and v["unit"] == "video" and v["n_videos"] == len(means) == len(r.videos)
    assert v["roc_auc_mean"] == pytest.approx(roc_auc_score(means["target"], means["mean"]), abs=1e-5)
    assert v["roc_auc_max"] == pytest.approx(roc_auc_score(means["target"], means["max"]), abs=1e-5)
    assert v["frame_roc_auc"] == r.metrics["roc_auc"] and r.videos["n_frames"].sum() == len(test)


def test_video_unit_rules():
    base = pd.DataFrame({"path": list("abcd"), "target": [0, 1, 0, 1]})
    assert video_unit(base.assign(group=list("abcd")))[0] is None  # one image per group
    unit, why = video_unit(base.assign(group=["p", "p", "q", "q"]))
    assert unit is None and "identities" in why  # each group holds both classes
    assert video_unit(base.assign(group=["p", "q", "p", "q"]))[0] == "group"
    assert video_unit(base.assign(group=list("abcd"), video=["v", "w", "v", "w"]))[0] == "video"


def test_predictions_frame_threshold():
    frame = pd.DataFrame({"path": ["a", "b"], "group": ["1", "2"], "label": ["real", "fake"], "target": [0, 1]})
    p = predictions_frame(frame, np.array([0.7, 0.69]), threshold=0.7)
    assert list(p["predicted"]) == ["fake", "real"]


def test_bad_config():
    with pytest.raises(ValueError, match="threshold"):
        EvalConfig(threshold=1.0)
    with pytest.raises(ValueError, match="threshold_rule"):
        EvalConfig(threshold_rule="youden")
    with pytest.raises(ValueError, match="JPEG quality"):
        EvalConfig(robust_jpeg="90,0")


def test_cross_dataset_run_applies_the_source_calibration(checkpoint, tmp_path):
    from deepfake.data.preprocess import PreprocessConfig
    from deepfake.data.synth import SynthConfig, generate
    from deepfake.metrics.calibration import save_calibration
    from deepfake.pipeline import stages

    other = generate(
        tmp_path / "other",
        SynthConfig(n_identities=4, images_per_identity=2, image_size=40, seed=9, workers=1),
        progress=False,
    )
    calib = save_calibration(tmp_path / "calibration.json", 1.5, 0.4, "max balanced accuracy on the validation split")
    r = stages.run_cross_evaluate(
        EvalConfig(**FAST),
        checkpoint,
        calib,
        other,
        tmp_path / "faces",
        tmp_path / "cross",
        PreprocessConfig(workers=1),
        progress=False,
    )
    assert (
        r.metrics["n"] == 16
        and r.metrics["preprocess"]["written"] == 16
        and "source" in r.predictions.columns
        and r.metrics["threshold"] == 0.4
        and r.metrics["temperature"] == 1.5
    )
    assert r.metrics["dataset"] == os.path.normpath(other) and "robustness" not in r.metrics
    assert not (tmp_path / "cross" / "calibration.json").exists()  # nothing is fitted on the second dataset
    saved = json.loads((tmp_path / "cross" / "details.json").read_text())
    assert saved["roc_auc"] == pytest.approx(roc_auc_score(r.predictions["target"], r.predictions["score"]))
    headline = json.loads((tmp_path / "cross" / "metrics.json").read_text())  # DVCLive: the table's numbers
    assert headline["roc_auc"] == round(saved["roc_auc"], 4) and headline["n_images"] == 16
    assert "latency_ms_median" not in saved
    assert {"roc_curve.png", "confusion_matrix.png", "confident_mistakes.png"} <= {
        p.name for p in (tmp_path / "cross" / "figures").iterdir()
    }


def test_report_tables_show_the_metrics_and_intervals(result):
    from deepfake.evaluation.tables import calibration_summary, summary_table

    m = result.metrics
    table = summary_table(m)
    assert table.loc["ROC-AUC", "value"] == round(m["roc_auc"], 4)
    assert table.loc["ROC-AUC", "ci"] == f"[{m['ci']['roc_auc_low']:.3f}, {m['ci']['roc_auc_high']:.3f}]"
    assert table.loc["true positives", "value"] == m["tp"] and table.loc["F1 (fake)", "ci"] == ""
    assert "over 3 groups" in table.attrs["ci"]
    cal = calibration_summary(m)
    assert cal.loc[("test", "ECE (15 bins)"), "after"] == m["calibration"]["ece_after"]
    assert cal.loc[("val (fit)", "log-loss"), "before"] == result.calibration["val_nll_before"]
