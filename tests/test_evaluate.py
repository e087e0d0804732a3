import json

import numpy as np
import pandas as pd
import pytest
import torch

from deepfake.data import read_split
from deepfake.evaluate import EvalConfig, evaluate, load_checkpoint, predictions_frame, write_outputs
from deepfake.train import TrainConfig, train


@pytest.fixture(scope="module")
def checkpoint(tiny_dataset, tiny_splits, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    return train(TrainConfig(weights="none", epochs=1, batch_size=8, image_size=32, device="cpu"), tiny_splits, tiny_dataset, out).best_checkpoint


def test_evaluate_scores_every_test_image(checkpoint, tiny_dataset, tiny_splits, tmp_path):
    test = read_split(tiny_splits, "test")
    preds, m = evaluate(checkpoint, test, tiny_dataset, EvalConfig(device="cpu", latency_images=3))
    assert len(preds) == len(test) == m["n"]
    assert preds["score"].between(0, 1).all()
    assert (preds["predicted"] == np.where(preds["score"] >= 0.5, "fake", "real")).all()
    assert m["tn"] + m["fp"] + m["fn"] + m["tp"] == len(test)
    assert m["latency_images"] == 3 and m["latency_ms_median"] > 0
    paths = write_outputs(preds, m, tmp_path)
    assert json.loads(paths["metrics"].read_text())["n"] == len(test)
    roc = pd.read_csv(paths["roc"])
    assert roc["fpr"].iloc[0] == 0 and roc["tpr"].iloc[-1] == 1


def test_scores_match_a_manual_forward_pass(checkpoint, tiny_dataset, tiny_splits):
    from deepfake.data import FaceDataset, build_transforms

    test = read_split(tiny_splits, "test")
    preds, _ = evaluate(checkpoint, test, tiny_dataset, EvalConfig(device="cpu", latency_images=0))
    model, ckpt = load_checkpoint(checkpoint)
    x, _ = FaceDataset(test.iloc[:1], tiny_dataset, build_transforms(ckpt["image_size"], False))[0]
    with torch.no_grad():
        p = torch.sigmoid(model(x.unsqueeze(0))).item()
    assert preds["score"].iloc[0] == pytest.approx(p, abs=1e-5)


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train a model first"):
        load_checkpoint(tmp_path / "none.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a deepfake checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_predictions_frame_threshold():
    frame = pd.DataFrame({"path": ["a", "b"], "group": ["1", "2"], "label": ["real", "fake"], "target": [0, 1]})
    p = predictions_frame(frame, np.array([0.7, 0.69]), threshold=0.7)
    assert list(p["predicted"]) == ["fake", "real"]


def test_bad_threshold():
    with pytest.raises(ValueError, match="threshold"):
        EvalConfig(threshold=1.0)
