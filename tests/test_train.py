import math

import pytest
import torch

from deepfake.train import HISTORY_COLUMNS, TrainConfig, train

FAST = dict(weights="none", epochs=2, batch_size=8, image_size=32, device="cpu", seed=0)


def test_training_writes_checkpoints_history_and_summary(tiny_dataset, tiny_splits, tmp_path):
    result = train(TrainConfig(**FAST), tiny_splits, tiny_dataset, tmp_path)
    assert list(result.history.columns) == list(HISTORY_COLUMNS)
    assert list(result.history["epoch"]) == [1, 2]
    assert result.history[["train_loss", "val_loss"]].map(math.isfinite).all().all()
    for path in (result.best_checkpoint, result.last_checkpoint):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert ckpt["config"]["image_size"] == 32 and ckpt["arch"] == "resnet18"
        assert "fc.weight" in ckpt["model"]
    last = torch.load(result.last_checkpoint, weights_only=True)
    assert last["epoch"] == 2
    s = result.summary
    assert s["best_epoch"] in (1, 2) and s["weights_used"] == "none" and s["n_train"] > 0
    assert s["best_val_auc"] == pytest.approx(result.history.loc[s["best_epoch"] - 1, "val_auc"])
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_training_changes_the_weights(tiny_dataset, tiny_splits, tmp_path):
    torch.manual_seed(0)
    result = train(TrainConfig(**{**FAST, "epochs": 1}), tiny_splits, tiny_dataset, tmp_path)
    from deepfake.models import build_model

    torch.manual_seed(0)
    init, _ = build_model("resnet18", "none")
    trained = torch.load(result.last_checkpoint, weights_only=True)["model"]
    assert not torch.equal(init.state_dict()["conv1.weight"], trained["conv1.weight"])


def test_same_seed_same_metrics_on_cpu(tiny_dataset, tiny_splits, tmp_path):
    cfg = TrainConfig(**{**FAST, "epochs": 1, "deterministic": True})
    a = train(cfg, tiny_splits, tiny_dataset, tmp_path / "a").history
    b = train(cfg, tiny_splits, tiny_dataset, tmp_path / "b").history
    cols = ["train_loss", "train_accuracy", "val_loss", "val_auc"]
    assert a[cols].equals(b[cols])


def test_max_batches_caps_an_epoch(tiny_dataset, tiny_splits, tmp_path):
    result = train(TrainConfig(**{**FAST, "epochs": 1, "max_batches": 1}), tiny_splits, tiny_dataset, tmp_path)
    assert result.history["epoch"].tolist() == [1]


@pytest.mark.parametrize("kwargs, msg", [({"epochs": 0}, "epochs"), ({"lr": 0.0}, "lr"), ({"batch_size": 0}, "batch_size")])
def test_bad_config(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig(**kwargs)


def test_cuda_request_without_cuda_is_a_clear_error(tiny_dataset, tiny_splits, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        train(TrainConfig(**{**FAST, "device": "cuda"}), tiny_splits, tiny_dataset, tmp_path)


@pytest.mark.gpu
def test_cuda_amp_channels_last_training(tiny_dataset, tiny_splits, tmp_path):
    result = train(TrainConfig(**{**FAST, "device": "cuda", "amp": True, "channels_last": True}), tiny_splits, tiny_dataset, tmp_path)
    assert result.summary["device"].startswith("cuda")
    assert math.isfinite(result.history["train_loss"].iloc[-1])
