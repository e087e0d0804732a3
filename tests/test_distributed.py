import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from deepfake.pipeline.quick import write_params
from deepfake.pipeline.tracking import read_history
from deepfake.training import distributed as D
from deepfake.training.train import TrainConfig, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_single_process_helpers_are_no_ops(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = D.setup("cpu")
    assert info == D.DistInfo() and info.is_main and not info.enabled
    a, b = np.arange(3), np.ones(2)
    assert D.gather_arrays(info, a, b) == (a, b)
    assert D.all_gather_objects({"x": 1}, info) == [{"x": 1}] and D.broadcast_object(5, info) == 5
    D.barrier(info)
    D.teardown(info)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "test_resnet"])  # torchvision's, and a timm backbone
def test_torchrun_with_two_gloo_processes_matches_single_process_training(tiny_dataset, tiny_splits, tmp_path, arch):
    """Two CPU processes under torchrun train what one process trains with the same global batch.

    The comparison uses a frozen pretrained backbone (its BatchNorm layers use their running
    statistics): without SyncBatchNorm, which needs CUDA, per-rank batch statistics would
    legitimately differ from whole-batch ones. Everything else is shared: the global batches
    and their per-image augmentations, the loss averaged over the global batch (DDP's gradient
    all-reduce; weight decay makes Adam's update sensitive to a wrong gradient scale), the
    schedule, and metrics over every image gathered from both ranks.
    """
    torch.manual_seed(7)
    if arch == "resnet18":
        from torchvision.models import resnet18

        torch.save(resnet18(weights=None).state_dict(), tmp_path / "pretrained.pt")
    else:
        import timm

        torch.save(timm.create_model(arch).state_dict(), tmp_path / "pretrained.pt")
    train_cfg = {
        "arch": arch,
        "weights": str(tmp_path / "pretrained.pt"),
        "freeze_backbone_epochs": 2,
        "epochs": 2,
        "batch_size": 8,
        "image_size": 32,
        "lr": 1e-3,
        "weight_decay": 0.05,
        "schedule": "cosine",
        "warmup_epochs": 0.5,
        "jpeg_prob": 0.5,
        "blur_prob": 0.5,
        "deterministic": True,
    }
    write_params(tmp_path / "params.yaml", {"base": {"seed": 3, "device": "cpu"}, "train": train_cfg})
    ddp = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "deepfake",
        "train",
        "--params",
        str(tmp_path / "params.yaml"),
        "--faces-dir",
        str(tiny_dataset),
        "--splits-dir",
        str(tiny_splits),
        "--model-dir",
        str(ddp / "model"),
        "--reports-dir",
        str(ddp / "reports"),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "TQDM_DISABLE": "1",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("best epoch") == 1  # rank 0 alone reports

    single = train(TrainConfig(**train_cfg, seed=3, device="cpu"), tiny_splits, tiny_dataset, tmp_path / "single")
    summary = json.loads((ddp / "reports" / "details.json").read_text())
    history = read_history(ddp / "reports")  # DVCLive's per-epoch files, written by rank 0
    assert summary["world_size"] == 2 and single.summary["world_size"] == 1
    assert summary["n_val"] == single.summary["n_val"] and summary["best_epoch"] == single.summary["best_epoch"]
    cols = ["train_loss", "train_accuracy", "train_auc", "val_loss", "val_accuracy", "val_auc", "lr"]
    np.testing.assert_allclose(history[cols].to_numpy(), single.history[cols].to_numpy(), rtol=1e-4, atol=1e-5)

    a = torch.load(ddp / "model" / "last.pt", weights_only=True)
    b = torch.load(single.last_checkpoint, weights_only=True)
    assert a["world_size"] == 2 and len(a["rng"]) == 2  # each rank's random state, for an exact resume
    for k in b["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-6, msg=k)
