"""One image, one score: the evaluate stage, the cross-dataset stage, the Python predictor and the CLI agree.

Each test trains a small model through the pipeline's own stage functions, then scores the same
source files four ways and compares the calibrated fake-probabilities:

* the evaluate stage (test split of the face cache, ``predictions.csv``),
* the cross-dataset stage pointed at the original dataset (its own preprocess cache),
* ``deepfake.inference.predict.Predictor`` on the original files (the checkpoint's preprocessing contract),
* ``python -m deepfake predict --csv`` on the same files.
"""

import contextlib
import csv
import io
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfake.__main__ import main
from deepfake.data.synth import SynthConfig, generate
from deepfake.inference.predict import PredictConfig, Predictor, VideoPrediction
from deepfake.pipeline import stages
from deepfake.pipeline.params import load_params
from deepfake.pipeline.quick import merge_overrides, write_params

SHARED = Path(__file__).resolve().parents[2] / "shared" / "real-faces" / "yonsei-rffd"
TOL = 1e-5


def _run_pipeline(tmp: Path, raw: Path, overrides: dict):
    """preprocess -> split -> train -> evaluate with the stage functions, on ``raw``; returns the params and folders."""
    base = {
        "data": {"raw_dir": str(raw), "faces_dir": str(tmp / "faces")},
        "base": {"device": "cpu"},
        "train": {"weights": "none", "epochs": 1, "batch_size": 8, "patience": 0},
        "evaluate": {"bootstrap": 0, "latency_images": 0, "robust_jpeg": "", "robust_blur": "", "robust_downscale": ""},
    }
    params_file = write_params(tmp / "params.yaml", merge_overrides(base, overrides))
    p = load_params(params_file)
    reports, models = tmp / "reports", tmp / "models"
    stages.run_preprocess(raw, tmp / "faces", reports / "preprocess", p.preprocess, progress=False)
    stages.run_split(tmp / "faces", reports / "split", reports / "split", p.split)
    stages.run_train(p.train, tmp / "faces", reports / "split", models, reports / "train")
    ev = stages.run_evaluate(p.evaluate, models / "best.pt", tmp / "faces", reports / "split", reports / "eval")
    return p, models / "best.pt", reports / "eval" / "calibration.json", ev


def _scores_four_ways(tmp: Path, p, ckpt: Path, calibration: Path, ev, data: Path, resolve) -> pd.DataFrame:
    """Per test image: the evaluate, cross-dataset, predictor and CLI probabilities (``resolve``: source -> file)."""
    cross = stages.run_cross_evaluate(
        p.evaluate,
        ckpt,
        calibration,
        data,
        tmp / "cross_faces",
        tmp / "reports" / "cross",
        p.preprocess,
        progress=False,
    )
    test = ev.predictions[ev.predictions["source"].astype(str) != ""]
    test = test[test.get("video", pd.Series("", index=test.index)).astype(str) == ""]  # single images
    files = [resolve(s) for s in test["source"]]
    predictor = Predictor(ckpt, "cpu", PredictConfig(calibration_file=str(calibration)))
    by_source = cross.predictions.set_index("source")["score"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(
            ["predict", *map(str, files), "--checkpoint", str(ckpt), "--calibration", str(calibration), "--csv"]
        )
    assert code == 0
    cli = {row["source"]: float(row["probability"]) for row in csv.DictReader(io.StringIO(buf.getvalue()))}
    return pd.DataFrame(
        {
            "evaluate": test["score"].to_numpy(),
            "cross": [by_source[s] for s in test["source"]],
            "predictor": [predictor.predict(f).probability for f in files],
            "cli": [cli[str(f)] for f in files],
        },
        index=list(test["source"]),
    )


def _assert_agree(scores: pd.DataFrame) -> None:
    assert len(scores) >= 4
    spread = scores["evaluate"].max() - scores["evaluate"].min()
    assert spread > 100 * TOL, "the images must score differently for the comparison to mean anything"
    for other in ("cross", "predictor", "cli"):
        diff = (scores[other] - scores["evaluate"]).abs().max()
        assert diff <= TOL, f"{other} differs from the evaluate stage by {diff:.2e}\n{scores}"


def test_embedded_default_scores_agree_on_every_path(tmp_path):
    raw = generate(
        tmp_path / "raw", SynthConfig(n_identities=40, images_per_identity=1, image_size=64, workers=1), progress=False
    )
    frames = [np.asarray(Image.open(f).convert("RGB"))[:, ::-1] for f in sorted((raw / "fake").glob("*.jpg"))[:8]]
    writer = cv2.VideoWriter(str(raw / "fake" / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    for f in frames:
        writer.write(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2BGR))
    writer.release()
    manifest = pd.read_csv(raw / "manifest.csv", dtype=str, keep_default_na=False)
    extra = pd.DataFrame({"file": ["fake/clip.avi"], "label": ["fake"], "group": ["clip"]})
    pd.concat([manifest, extra], ignore_index=True).fillna("").to_csv(raw / "manifest.csv", index=False)
    # crops stored at 64 px, the network at 48 px: the resize is part of the contract every path applies
    overrides = {
        "preprocess": {"size": 64, "workers": 1},
        "train": {"image_size": 48},
        "split": {"val_frac": 0.25, "test_frac": 0.25, "dedupe": True},
    }
    p, ckpt, calibration, ev = _run_pipeline(tmp_path, raw, overrides)
    scores = _scores_four_ways(tmp_path, p, ckpt, calibration, ev, raw, lambda s: raw / s)
    _assert_agree(scores)
    # a video: the predictor's verdict is the cross-dataset stage's video-level score (same sampled frames)
    videos = pd.read_csv(tmp_path / "reports" / "cross" / "videos.csv")
    video = Predictor(ckpt, "cpu", PredictConfig(calibration_file=str(calibration))).predict(raw / "fake" / "clip.avi")
    assert isinstance(video, VideoPrediction) and len(video.frames) == 8
    assert video.probability == pytest.approx(videos.set_index("video").loc["fake/clip.avi", "score_mean"], abs=TOL)


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared real-face photos are not present")
def test_face_detected_photos_score_the_same_on_every_path(tmp_path):
    files = sorted((SHARED / "real").glob("*.jpg"))[:14] + sorted((SHARED / "fake").glob("*.jpg"))[:14]
    lists = tmp_path / "lists"
    lists.mkdir()
    csv_path = lists / "photos.csv"
    pd.DataFrame({"path": [str(f) for f in files], "label": [f.parent.name for f in files]}).to_csv(
        csv_path, index=False
    )
    overrides = {
        "preprocess": {"detect": True, "size": 64, "workers": 1},
        "train": {"image_size": 64},
        "split": {"val_frac": 0.25, "test_frac": 0.25},
    }
    p, ckpt, calibration, ev = _run_pipeline(tmp_path, csv_path, overrides)
    assert Predictor(ckpt, "cpu", PredictConfig(calibration_file="")).preprocessing.crop == "face"
    scores = _scores_four_ways(tmp_path, p, ckpt, calibration, ev, csv_path, lambda s: Path(s))
    _assert_agree(scores)


def test_a_timm_detector_scores_the_same_on_every_path(tmp_path):
    """A timm backbone (test_resnet: inputs normalised to [-1, 1] by its own pretrained_cfg) through the same
    stages: its normalisation travels in the checkpoint, so every path scores alike without being told."""
    raw = generate(
        tmp_path / "raw", SynthConfig(n_identities=40, images_per_identity=1, image_size=64, workers=1), progress=False
    )
    overrides = {
        "preprocess": {"size": 64, "workers": 1},
        "train": {"arch": "test_resnet", "image_size": 48},
        "split": {"val_frac": 0.25, "test_frac": 0.25, "dedupe": True},
    }
    p, ckpt, calibration, ev = _run_pipeline(tmp_path, raw, overrides)
    predictor = Predictor(ckpt, "cpu", PredictConfig(calibration_file=str(calibration)))
    assert predictor.arch == "test_resnet" and predictor.preprocessing.mean == (0.5, 0.5, 0.5)
    assert predictor.describe_preprocessing().endswith("normalised with mean 0.5, 0.5, 0.5 and std 0.5, 0.5, 0.5")
    scores = _scores_four_ways(tmp_path, p, ckpt, calibration, ev, raw, lambda s: raw / s)
    _assert_agree(scores)
    # Grad-CAM at a stage of its feature_info; the int8 runtime runs on it
    source = scores.index[0]
    pred, cam, _ = predictor.explain(raw / source)
    assert pred.probability == pytest.approx(scores.loc[source, "evaluate"], abs=TOL)
    assert cam.layer in {d["module"] for d in predictor.model.feature_info} and min(cam.map_size) >= 6
    fast = Predictor(
        ckpt,
        "cpu",
        PredictConfig(
            calibration_file=str(calibration), backend="int8", int8_calibration=(str(raw),), int8_max_change=None
        ),
    )
    assert fast.describe()["backend"] == "int8"
    assert fast.predict(raw / source).probability == pytest.approx(pred.probability, abs=0.25)
