import json
import math
import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from deepfake.models.architectures import build_model
from deepfake.models.checkpoint import TRAINING_STATE_KEYS, load_checkpoint, preprocessing_of, read_checkpoint
from deepfake.training import train as train_mod
from deepfake.training.resume import ResumeError, check_resumable
from deepfake.training.steps import lr_factor
from deepfake.training.train import HISTORY_COLUMNS, TrainConfig, train

FAST = dict(weights="none", epochs=2, batch_size=8, image_size=32, device="cpu", seed=0)
METRICS = ["train_loss", "train_accuracy", "train_auc", "val_loss", "val_accuracy", "val_auc", "lr"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def test_checkpoint_holds_the_whole_training_state(tiny_dataset, tiny_splits, tmp_path):
    cfg = TrainConfig(**{**FAST, "epochs": 1, "schedule": "cosine", "warmup_epochs": 0.5})
    result = train(cfg, tiny_splits, tiny_dataset, tmp_path)
    ckpt = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
    assert {
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "epoch",
        "step",
        "rng",
        "config",
        "progress",
        "history",
    } <= set(ckpt)
    assert ckpt["config"] == {**cfg.__dict__}
    assert ckpt["optimizer"]["state"] and ckpt["scheduler"]["last_epoch"] == 3  # 24 images / 8 = 3 steps
    rng = ckpt["rng"][0]
    assert (
        isinstance(rng["torch"], torch.Tensor)
        and isinstance(rng["numpy"]["key"], torch.Tensor)
        and len(rng["python"]) == 3
    )
    assert ckpt["progress"]["epoch"] == 1 and ckpt["progress"]["step"] == 0 and ckpt["step"] == 0
    model, _ = build_model("resnet18", "none")
    model.load_state_dict(ckpt["model"])


#: What best.pt holds: the weights, the preprocessing contract and the metadata.
MODEL_RECORD = {
    "model",
    "arch",
    "image_size",
    "preprocessing",
    "config",
    "epoch",
    "val_auc",
    "weights_used",
    "package_version",
    "world_size",
    "backbone",
}


@pytest.fixture(scope="module")
def one_step_run(tiny_dataset, tiny_splits, tmp_path_factory):
    """A ResNet18 trained for one batch through the real code path: its best.pt and last.pt."""
    cfg = TrainConfig(**{**FAST, "epochs": 1, "max_batches": 1})
    return cfg, train(cfg, tiny_splits, tiny_dataset, tmp_path_factory.mktemp("one_step"))


def test_best_pt_holds_the_model_and_last_pt_the_training_state(one_step_run):
    _, result = one_step_run
    best = torch.load(result.best_checkpoint, weights_only=True)
    last = torch.load(result.last_checkpoint, weights_only=True)
    assert set(best) == MODEL_RECORD and not set(best) & set(TRAINING_STATE_KEYS)
    assert set(last) == MODEL_RECORD | set(TRAINING_STATE_KEYS)
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])  # one epoch: the same
    weights = sum(t.numel() * t.element_size() for t in best["model"].values())  # ResNet18: 44.8 MB
    best_bytes, last_bytes = result.best_checkpoint.stat().st_size, result.last_checkpoint.stat().st_size
    assert weights < best_bytes < weights * 1.01  # the weights and a few kilobytes of records
    assert last_bytes > 2.9 * weights  # Adam keeps two moments per parameter
    assert best_bytes < 0.4 * last_bytes, (best_bytes, last_bytes)


def test_a_best_pt_with_the_training_state_inside_still_loads_and_scores_the_same(one_step_run, tiny_dataset, tmp_path):
    """Earlier versions wrote best.pt as a copy of last.pt: such files load everywhere, with the same scores."""
    from deepfake.inference.predict import PredictConfig, Predictor, clear_cache, get_predictor

    _, result = one_step_run
    old = tmp_path / "old_best.pt"
    old.write_bytes(result.last_checkpoint.read_bytes())  # one epoch: that epoch's best.pt, as it was written
    assert set(TRAINING_STATE_KEYS) <= set(read_checkpoint(old))
    images = sorted(tiny_dataset.rglob("*.jpg"))[:6]
    new = result.best_checkpoint
    a, b = load_checkpoint(new)[0].state_dict(), load_checkpoint(old)[0].state_dict()  # evaluate's path
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert preprocessing_of(read_checkpoint(old)) == preprocessing_of(read_checkpoint(new))  # cross's path
    cfg = PredictConfig(calibration_file="")
    new_scores = [r.logit for r in Predictor(new, "cpu", cfg).predict(images)]
    old_scores = [r.logit for r in get_predictor(old, "cpu", cfg).predict(images)]  # the widget's and predict's path
    assert new_scores == old_scores and len(set(new_scores)) > 1
    clear_cache()


def test_resuming_from_a_folder_with_best_pt_only_asks_for_last_pt(one_step_run, tiny_dataset, tiny_splits, tmp_path):
    cfg, result = one_step_run
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "best.pt").write_bytes(result.best_checkpoint.read_bytes())
    with pytest.raises(ResumeError, match=r"cannot resume: .*last.pt does not exist, and resuming needs it"):
        train(replace(cfg, resume=True), tiny_splits, tiny_dataset, folder)
    assert (folder / "best.pt").read_bytes() == result.best_checkpoint.read_bytes()  # nothing overwritten
    assert not (folder / "last.pt").exists()
    (folder / "last.pt").write_bytes(result.best_checkpoint.read_bytes())  # best.pt copied as last.pt
    with pytest.raises(ResumeError, match=r"last.pt: it holds no training state \(optimizer, .*resuming needs"):
        train(replace(cfg, resume=True), tiny_splits, tiny_dataset, folder)


def test_training_changes_the_weights(tiny_dataset, tiny_splits, tmp_path):
    torch.manual_seed(0)
    result = train(TrainConfig(**{**FAST, "epochs": 1}), tiny_splits, tiny_dataset, tmp_path)
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
    assert torch.load(result.last_checkpoint, weights_only=True)["scheduler"]["last_epoch"] == 1


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"epochs": 0}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"arch": "vgg"}, "arch"),
        ({"schedule": "step"}, "schedule"),
        ({"optimizer": "sam"}, "optimizer"),
        ({"momentum": 1.0}, "momentum"),
        ({"class_balance": "smote"}, "class_balance"),
        ({"patience": -1}, "patience"),
        ({"jpeg_quality_min": 90, "jpeg_quality_max": 50}, "jpeg_quality_min"),
        ({"blur_prob": 2.0}, r"train\.blur_prob = 2\.0"),
    ],
)
def test_bad_config(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig(**kwargs)


def test_cuda_request_without_cuda_is_a_clear_error(tiny_dataset, tiny_splits, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        train(TrainConfig(**{**FAST, "device": "cuda"}), tiny_splits, tiny_dataset, tmp_path)


def test_dilated_cnn_trains_through_the_same_path_and_reloads(tiny_dataset, tiny_splits, tmp_path):
    from deepfake.models.checkpoint import load_checkpoint

    result = train(TrainConfig(**{**FAST, "arch": "dilated_cnn", "epochs": 1}), tiny_splits, tiny_dataset, tmp_path)
    assert result.summary["parameters"] == 652_773 and result.summary["arch"] == "dilated_cnn"
    model, ckpt = load_checkpoint(result.best_checkpoint)
    assert ckpt["arch"] == "dilated_cnn" and type(model).__name__ == "DilatedCNN" and not model.training
    assert torch.equal(model.state_dict()["classifier.5.weight"], ckpt["model"]["classifier.5.weight"])


def test_a_timm_model_trains_with_its_own_normalisation_frozen_head_first_and_resumes(
    tiny_dataset, tiny_splits, tmp_path
):
    """test_resnet normalises inputs to [-1, 1] (timm's pretrained_cfg): training, its validation and
    the evaluation all use it; its classifier (get_classifier) trains alone while the backbone is frozen."""
    import timm

    from deepfake.data.split import read_split
    from deepfake.evaluation.evaluate import EvalConfig, evaluate

    torch.manual_seed(5)
    pretrained = timm.create_model("test_resnet").state_dict()
    torch.save(pretrained, tmp_path / "pretrained.pt")
    cfg = TrainConfig(
        **{**FAST, "arch": "test_resnet", "weights": str(tmp_path / "pretrained.pt"), "freeze_backbone_epochs": 1}
    )

    def stop(epoch, step):
        if (epoch, step) == (2, 1):
            raise KeyboardInterrupt  # interrupted in epoch 2, after epoch 1's checkpoints

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tiny_splits, tiny_dataset, tmp_path / "run", callback=stop)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["arch"] == "test_resnet" and ckpt["epoch"] == 1
    assert ckpt["preprocessing"]["mean"] == [0.5, 0.5, 0.5] and ckpt["preprocessing"]["std"] == [0.5, 0.5, 0.5]
    assert ckpt["backbone"]["library"] == "timm" and ckpt["backbone"]["version"] == timm.__version__
    assert torch.equal(ckpt["model"]["layer4.0.conv1.weight"], pretrained["layer4.0.conv1.weight"])  # frozen
    # validation during training and the evaluation normalise alike: the same validation AUC
    val = read_split(tiny_splits, "val")
    quiet = dict(bootstrap=0, latency_images=0, robust_jpeg="", robust_blur="", robust_downscale="", robust_resize="")
    ev = evaluate(tmp_path / "run" / "best.pt", val, tiny_dataset, EvalConfig(device="cpu", **quiet))
    assert ev.metrics["roc_auc"] == pytest.approx(ckpt["history"][0]["val_auc"], abs=1e-9)
    resumed = train(replace(cfg, resume=True), tiny_splits, tiny_dataset, tmp_path / "run")
    fresh = train(cfg, tiny_splits, tiny_dataset, tmp_path / "fresh")
    assert list(resumed.history["epoch"]) == [1, 2] and resumed.history[METRICS].equals(fresh.history[METRICS])
    assert resumed.summary["frozen_epochs"] == 1 and fresh.timings["train_images_per_second"] > 0
    w = torch.load(fresh.last_checkpoint, weights_only=True)["model"]
    assert not torch.equal(w["layer4.0.conv1.weight"], pretrained["layer4.0.conv1.weight"])  # unfrozen in epoch 2


# ---------------------------------------------------------------- schedule, balance, freezing, early stopping


def test_learning_rate_schedule():
    assert [lr_factor(s, 4, 20, "constant") for s in (0, 1, 3, 4, 19)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    cos = [lr_factor(s, 4, 20, "cosine") for s in range(20)]
    assert cos[:4] == [0.25, 0.5, 0.75, 1.0] and cos[4] == 1.0
    assert (
        all(a > b for a, b in zip(cos[4:], cos[5:]))
        and cos[12] == pytest.approx(0.5)
        and cos[19] == pytest.approx(0.0096, abs=1e-3)
    )
    assert lr_factor(0, 0, 10, "cosine") == 1.0
    # linear (SBI's): constant for three quarters of the steps, then down to 0 at the end
    lin = [lr_factor(s, 0, 100, "linear") for s in range(100)]
    assert lin[:75] == [1.0] * 75 and lin[75] == 1.0 and lin[90] == pytest.approx(0.4) and lin[99] == 0.04
    assert all(a > b for a, b in zip(lin[75:], lin[76:]))


def test_sgd_with_momentum_is_the_optimizer_asked_for():
    from torch import nn

    from deepfake.training.train import make_optimizer

    net = nn.Linear(2, 1)
    sgd = make_optimizer(net, TrainConfig(optimizer="sgd", momentum=0.8, lr=0.01, weight_decay=1e-4))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.8 and sgd.defaults["weight_decay"] == 1e-4
    assert isinstance(make_optimizer(net, TrainConfig()), torch.optim.Adam)


def test_cosine_schedule_in_training(tiny_dataset, tiny_splits, tmp_path):
    cfg = TrainConfig(**{**FAST, "lr": 1e-3, "schedule": "cosine", "warmup_epochs": 1})
    h = train(cfg, tiny_splits, tiny_dataset, tmp_path).history
    assert h["lr"].tolist() == pytest.approx(
        [1e-3, 0.0], abs=1e-12
    )  # end of warm-up, then decayed to 0 at the last step


def _imbalanced_splits(tiny_splits, tmp_path):
    out = tmp_path / "splits"
    out.mkdir()
    train_df = pd.read_csv(tiny_splits / "train.csv", dtype={"group": str, "path": str}, keep_default_na=False)
    fakes = train_df.index[train_df["target"] == 1]
    train_df.drop(fakes[: len(fakes) // 2]).to_csv(out / "train.csv", index=False)
    for name in ("val", "test"):
        (out / f"{name}.csv").write_bytes((tiny_splits / f"{name}.csv").read_bytes())
    return out, train_df.drop(fakes[: len(fakes) // 2])


@pytest.mark.parametrize("method", ["auto", "sampler", "none"])
def test_class_imbalance_handling(tiny_dataset, tiny_splits, tmp_path, method):
    splits, df = _imbalanced_splits(tiny_splits, tmp_path)
    n_fake = int(df["target"].sum())
    n_real = len(df) - n_fake
    assert n_real > n_fake
    quick = {**FAST, "epochs": 1, "max_batches": 1}
    s = train(TrainConfig(**quick, class_balance=method), splits, tiny_dataset, tmp_path / "m").summary
    expected = {"auto": ("loss", n_real / n_fake), "sampler": ("sampler", None), "none": ("none", None)}[method]
    assert (s["class_balance"], s["pos_weight"]) == expected
    if method == "auto":  # classes of equal size: nothing to correct
        assert train(TrainConfig(**quick), tiny_splits, tiny_dataset, tmp_path / "b").summary["class_balance"] == "none"


def test_pos_weight_enters_the_loss(monkeypatch, tiny_dataset, tiny_splits, tmp_path):
    seen = []
    real_bce = torch.nn.BCEWithLogitsLoss

    def spy(*a, **k):
        seen.append(k.get("pos_weight"))
        return real_bce(*a, **k)

    monkeypatch.setattr(train_mod.nn, "BCEWithLogitsLoss", spy)
    splits, df = _imbalanced_splits(tiny_splits, tmp_path)
    train(
        TrainConfig(**{**FAST, "epochs": 1, "class_balance": "loss", "max_batches": 1}),
        splits,
        tiny_dataset,
        tmp_path / "m",
    )
    n_fake = int(df["target"].sum())
    weights = [w for w in seen if w is not None]
    assert len(weights) == 1 and float(weights[0]) == pytest.approx((len(df) - n_fake) / n_fake)


def test_backbone_freezing_needs_and_keeps_pretrained_weights(tiny_dataset, tiny_splits, tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(4)
    pretrained = resnet18(weights=None).state_dict()
    torch.save(pretrained, tmp_path / "pretrained.pt")
    cfg = TrainConfig(**{**FAST, "weights": str(tmp_path / "pretrained.pt"), "freeze_backbone_epochs": 1, "epochs": 1})
    r1 = train(cfg, tiny_splits, tiny_dataset, tmp_path / "one")
    w1 = torch.load(r1.last_checkpoint, weights_only=True)["model"]
    assert r1.summary["frozen_epochs"] == 1
    assert torch.equal(w1["layer3.0.conv1.weight"], pretrained["layer3.0.conv1.weight"])  # frozen
    assert torch.equal(w1["bn1.running_mean"], pretrained["bn1.running_mean"])  # BN statistics frozen too
    r2 = train(replace(cfg, epochs=2), tiny_splits, tiny_dataset, tmp_path / "two")
    w2 = torch.load(r2.last_checkpoint, weights_only=True)["model"]
    assert not torch.equal(w2["layer3.0.conv1.weight"], pretrained["layer3.0.conv1.weight"])  # unfrozen in epoch 2
    with pytest.warns(UserWarning, match="freeze_backbone_epochs=1 ignored"):
        r3 = train(replace(cfg, weights="none"), tiny_splits, tiny_dataset, tmp_path / "none")
    assert r3.summary["frozen_epochs"] == 0


def test_early_stopping_on_validation_auc(monkeypatch, tiny_dataset, tiny_splits, tmp_path):
    from sklearn.metrics import roc_auc_score

    y = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=np.float32)
    reals = [0.1, 0.2, 0.3, 0.4]
    scores = [
        np.array(reals + fakes, dtype=np.float32)
        for fakes in (
            [0.15, 0.25, 0.5, 0.6],
            [0.5, 0.6, 0.7, 0.8],
            [0.05, 0.5, 0.6, 0.7],
            [0.35, 0.5, 0.6, 0.7],
            [0.5, 0.6, 0.7, 0.8],
        )
    ]
    aucs = [roc_auc_score(y, p) for p in scores]
    assert aucs[1] == 1.0 and max(aucs[2], aucs[3]) < 1.0 and aucs[0] < 1.0
    calls = iter(scores)
    monkeypatch.setattr(
        train_mod, "predict", lambda *a, **k: (0.5, y, next(calls))
    )  # validation scores, epoch by epoch
    result = train(
        TrainConfig(**{**FAST, "epochs": 6, "patience": 2, "max_batches": 1}), tiny_splits, tiny_dataset, tmp_path
    )
    assert result.history["val_auc"].tolist() == pytest.approx(aucs[:4])  # stopped after 2 epochs without a better AUC
    s = result.summary
    assert s["stopped_early"] and s["best_epoch"] == 2 and s["epochs_run"] == 4 and s["best_val_auc"] == 1.0
    assert torch.load(result.best_checkpoint, weights_only=True)["epoch"] == 2

    calls = iter(scores)  # the same scores with min_epochs 5: no stop before epoch 5
    result = train(
        TrainConfig(**{**FAST, "epochs": 6, "patience": 2, "min_epochs": 5, "max_batches": 1}),
        tiny_splits,
        tiny_dataset,
        tmp_path / "min5",
    )
    assert result.summary["epochs_run"] == 5 and result.summary["stopped_early"]


def test_self_blending_only_trains_on_reals_and_reports_it(tiny_dataset, tiny_splits, tmp_path):
    from deepfake.data.split import read_split

    train_df = read_split(tiny_splits, "train")
    reals, fakes = int((train_df["target"] == 0).sum()), int((train_df["target"] == 1).sum())
    result = train(TrainConfig(**{**FAST, "epochs": 1, "self_blend": "only"}), tiny_splits, tiny_dataset, tmp_path)
    s = result.summary
    assert s["self_blend"] == "only" and s["real_fakes_dropped"] == fakes and s["pseudo_fakes_per_epoch"] == reals
    assert s["n_train_items"] == 2 * reals and s["class_balance"] == "none"  # balanced: reals and their blends
    assert math.isfinite(result.history["train_loss"].iloc[0])
    added = train(
        TrainConfig(**{**FAST, "epochs": 1, "self_blend": "add", "blend_share": 0.5}),
        tiny_splits,
        tiny_dataset,
        tmp_path / "add",
    ).summary
    assert added["pseudo_fakes_per_epoch"] == round(0.5 * reals) and added["real_fakes_dropped"] == 0
    assert added["n_train_items"] == len(train_df) + round(0.5 * reals) and added["class_balance"] == "loss"


# ---------------------------------------------------------------- resume


RESUME = dict(
    FAST,
    arch="dilated_cnn",
    epochs=3,
    deterministic=True,
    schedule="cosine",
    warmup_epochs=0.5,
    jpeg_prob=0.5,
    blur_prob=0.3,
    rotation=10.0,
    color_jitter=0.2,
    hflip=0.5,
)
KILLER = textwrap.dedent("""
    import json, os, signal, sys
    from deepfake.training.train import TrainConfig, train

    cfg, splits, raw, out, kill_at = json.loads(sys.argv[1])

    def kill(epoch, step):
        if [epoch, step] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no exception handling: a crash

    train(TrainConfig(**cfg), splits, raw, out, callback=kill)
    """)


@pytest.fixture(scope="module")
def uninterrupted(tiny_dataset, tiny_splits, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    return train(TrainConfig(**RESUME), tiny_splits, tiny_dataset, out)


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint_every", [1, 0], ids=["mid-epoch-checkpoints", "epoch-checkpoints"])
def test_a_run_killed_mid_epoch_resumes_to_the_same_result(
    uninterrupted, tiny_dataset, tiny_splits, tmp_path, checkpoint_every
):
    cfg = dict(RESUME, checkpoint_every=checkpoint_every)
    args = json.dumps([cfg, str(tiny_splits), str(tiny_dataset), str(tmp_path), [2, 2]])
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, "-c", KILLER, args], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]  # SIGKILLed in epoch 2 after its second batch
    killed = torch.load(tmp_path / "last.pt", weights_only=True)
    assert (killed["epoch"], killed["step"]) == ((1, 2) if checkpoint_every else (1, 0))

    resumed = train(TrainConfig(**{**cfg, "resume": True}), tiny_splits, tiny_dataset, tmp_path)
    assert resumed.history[METRICS].equals(uninterrupted.history[METRICS])
    assert resumed.summary["best_epoch"] == uninterrupted.summary["best_epoch"]
    for got, want in [
        (resumed.last_checkpoint, uninterrupted.last_checkpoint),
        (resumed.best_checkpoint, uninterrupted.best_checkpoint),
    ]:
        a = torch.load(got, weights_only=True)["model"]
        b = torch.load(want, weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in b), got.name


def test_resuming_a_finished_run_returns_its_result(tiny_dataset, tiny_splits, tmp_path):
    cfg = TrainConfig(**{**FAST, "epochs": 1, "max_batches": 1})
    first = train(cfg, tiny_splits, tiny_dataset, tmp_path)
    again = train(replace(cfg, resume=True, num_workers=0), tiny_splits, tiny_dataset, tmp_path)
    assert again.history.equals(first.history)


def test_resume_refuses_a_different_config(tiny_dataset, tiny_splits, tmp_path):
    cfg = TrainConfig(**{**FAST, "epochs": 1, "max_batches": 1, "lr": 1e-4})
    train(cfg, tiny_splits, tiny_dataset, tmp_path)
    with pytest.raises(ValueError, match=r"different config \(lr: 0.0001 -> 0.001\)"):
        train(replace(cfg, lr=1e-3, resume=True), tiny_splits, tiny_dataset, tmp_path)
    check_resumable({**cfg.__dict__}, replace(cfg, num_workers=2, resume=True), tmp_path / "last.pt")  # free keys


def test_resume_with_another_world_size_is_refused_only_when_an_epoch_changes_length(
    tiny_dataset, tiny_splits, tmp_path
):
    """The 24 training images make global batches of 10, 10 and 4: the last is kept for up to 2
    processes (2 images each) and dropped for 3. The checkpoint's ``world_size`` is set as a run of
    2 or 3 processes would have written it (this test runs one process)."""
    cfg = TrainConfig(**{**FAST, "epochs": 1, "batch_size": 10})
    first = train(cfg, tiny_splits, tiny_dataset, tmp_path)
    assert first.summary["n_train"] == 24
    last = torch.load(first.last_checkpoint, weights_only=True)
    torch.save({**last, "world_size": 3}, first.last_checkpoint)
    with pytest.raises(
        ResumeError,
        match=r"cannot resume from .*last.pt with 1 process\(es\): it was written by a run of 3, and an epoch has 2 "
        r"optimisation steps with 3 process\(es\) but 3 with 1 .* resume with 3 process\(es\)",
    ):
        train(replace(cfg, resume=True), tiny_splits, tiny_dataset, tmp_path)
    torch.save({**last, "world_size": 2}, first.last_checkpoint)  # 3 steps per epoch with 2 processes too
    again = train(replace(cfg, resume=True), tiny_splits, tiny_dataset, tmp_path)
    assert again.history.equals(first.history)


def test_the_decoded_cache_is_built_once_per_node_before_the_nodes_other_processes_open_it(monkeypatch, tmp_path):
    """Rank 0 first; then the first process of every other node (its disk may be its own); then the rest."""
    from deepfake.training import distributed as D

    turn, built = [0], []
    monkeypatch.setattr(D, "barrier", lambda info: turn.__setitem__(0, turn[0] + 1))

    def build(paths, size, cache_dir, num_workers=0, show=True):
        built.append((rank, turn[0], num_workers, show))
        return object()

    monkeypatch.setattr(train_mod.DecodedCache, "build", build)
    frame = pd.DataFrame({"path": ["a.png"], "target": [0]})
    cfg = TrainConfig(**{**FAST, "num_workers": 3})
    for rank, local_rank in [(0, 0), (1, 1), (2, 0), (3, 1)]:  # two nodes of two processes
        turn[0] = 0
        caches = train_mod._decoded_caches(cfg, tmp_path, (frame, frame), D.DistInfo(rank, local_rank, 4))
        assert len(caches) == 2
    assert built == [(0, 0, 3, True)] * 2 + [(1, 2, 0, False)] * 2 + [(2, 1, 3, False)] * 2 + [(3, 2, 0, False)] * 2
    assert turn[0] == 2  # every process passes the same barriers


def test_resume_without_a_checkpoint_starts_afresh(tiny_dataset, tiny_splits, tmp_path):
    cfg = TrainConfig(**{**FAST, "epochs": 1, "max_batches": 1, "deterministic": True})
    fresh = train(cfg, tiny_splits, tiny_dataset, tmp_path / "a")
    resumed = train(replace(cfg, resume=True), tiny_splits, tiny_dataset, tmp_path / "b")
    assert resumed.history[METRICS].equals(fresh.history[METRICS])


# ---------------------------------------------------------------- speed options


@pytest.mark.slow
def test_torch_compile_trains_on_cpu(monkeypatch, tiny_dataset, tiny_splits, tmp_path):
    import shutil

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile on CPU needs a C compiler")
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config, "fallback_random", True)  # eager's dropout masks, so the runs are comparable
    cfg = TrainConfig(
        **{**FAST, "arch": "dilated_cnn", "epochs": 1, "max_batches": 2, "compile_model": True, "deterministic": True}
    )
    compiled = train(cfg, tiny_splits, tiny_dataset, tmp_path / "c").history
    eager = train(replace(cfg, compile_model=False), tiny_splits, tiny_dataset, tmp_path / "e").history
    assert compiled[METRICS].to_numpy() == pytest.approx(eager[METRICS].to_numpy(), rel=1e-3, abs=1e-5)


def test_cpu_bf16_trains_in_bf16_channels_last_and_stays_close_to_float32(
    monkeypatch, tiny_dataset, tiny_splits, tmp_path
):
    from deepfake.core.utils import cpu_bf16_supported

    if not cpu_bf16_supported():
        pytest.skip("this CPU has no native bf16 instructions (AVX512-BF16 or AMX)")
    seen = []
    real_forward = torch.nn.Conv2d.forward

    def spy(self, x):  # what the first convolution receives and returns under the training settings
        out = real_forward(self, x)
        if not seen:
            seen.append((x.is_contiguous(memory_format=torch.channels_last), out.dtype))
        return out

    cfg = TrainConfig(**{**FAST, "epochs": 1, "max_batches": 2, "cpu_bf16": True, "deterministic": True})
    monkeypatch.setattr(torch.nn.Conv2d, "forward", spy)
    bf16 = train(cfg, tiny_splits, tiny_dataset, tmp_path / "bf16")
    monkeypatch.undo()
    fp32 = train(replace(cfg, cpu_bf16=False), tiny_splits, tiny_dataset, tmp_path / "fp32")
    assert seen[0] == (True, torch.bfloat16)
    assert bf16.summary["precision"] == "bfloat16 autocast" and fp32.summary["precision"] == "float32"
    assert bf16.history["train_loss"].item() == pytest.approx(fp32.history["train_loss"].item(), rel=0.05)
    ckpt = torch.load(bf16.best_checkpoint, weights_only=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in ckpt["model"].values())  # weights stay float32


def test_cpu_bf16_without_cpu_support_warns_and_trains_in_float32(monkeypatch, tiny_dataset, tiny_splits, tmp_path):
    monkeypatch.setattr(train_mod, "cpu_bf16_supported", lambda: False)
    cfg = TrainConfig(**{**FAST, "epochs": 1, "max_batches": 1, "cpu_bf16": True})
    with pytest.warns(UserWarning, match="no native bf16"):
        result = train(cfg, tiny_splits, tiny_dataset, tmp_path)
    assert result.summary["precision"] == "float32"


@pytest.mark.gpu
@pytest.mark.parametrize("arch, first", [("resnet18", "conv1.weight"), ("test_resnet", "conv1.0.weight")])
def test_cuda_amp_channels_last_training(tiny_dataset, tiny_splits, tmp_path, arch, first):
    result = train(
        TrainConfig(
            **{
                **FAST,
                "arch": arch,
                "device": "cuda",
                "amp": True,
                "channels_last": True,
                "jpeg_prob": 0.5,
                "blur_prob": 0.5,
            }
        ),
        tiny_splits,
        tiny_dataset,
        tmp_path,
    )
    assert result.summary["device"].startswith("cuda")
    assert math.isfinite(result.history["train_loss"].iloc[-1])
    ckpt = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["model"][first].dtype == torch.float32  # AMP keeps float32 master weights


@pytest.mark.gpu
def test_cuda_resume_restores_the_grad_scaler_and_cuda_rng(tiny_dataset, tiny_splits, tmp_path):
    cfg = TrainConfig(**{**FAST, "device": "cuda", "arch": "dilated_cnn", "epochs": 2})
    train(replace(cfg, epochs=1), tiny_splits, tiny_dataset, tmp_path)  # a config mismatch (epochs) must be refused...
    with pytest.raises(ValueError, match="epochs"):
        train(replace(cfg, resume=True), tiny_splits, tiny_dataset, tmp_path)
    ckpt = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["rng"][0]["cuda"]  # ...and the CUDA generator state was saved


def test_step_loss_is_the_global_batch_mean_whatever_the_share():
    """Two ranks' scaled gradients average to the single-process gradient of the global batch."""
    from deepfake.training.loading import Batch
    from deepfake.training.steps import EpochStats, StepOptions, train_one_epoch

    torch.manual_seed(0)
    x = torch.randn(6, 3, 2, 2)
    y = torch.tensor([0.0, 1, 1, 0, 1, 0])
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 1))
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="sum", pos_weight=torch.tensor(2.0))

    def grad(rows, world):
        model = __import__("copy").deepcopy(net)
        batch = Batch(x[rows], y[rows], torch.tensor(rows), torch.zeros(len(rows), 6), ready=True)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        opts = StepOptions(torch.device("cpu"), loss_fn, world_size=world, augment=False, show=False)
        stats = train_one_epoch(model, [batch], opt, opts, [6], EpochStats())
        return model[1].weight.grad.clone(), stats

    whole, stats = grad([0, 1, 2, 3, 4, 5], 1)
    r0, _ = grad([0, 2, 4], 2)
    r1, _ = grad([1, 3, 5], 2)
    torch.testing.assert_close((r0 + r1) / 2, whole)  # what DDP's all-reduce computes
    expected = loss_fn(net(x).squeeze(1), y).detach() / 6
    loss_sum, ys, ps = stats.local()
    assert loss_sum / 6 == pytest.approx(float(expected)) and ys.tolist() == y.tolist() and len(ps) == 6


def test_decode_cache_gives_the_same_training(tiny_dataset, tiny_splits, tmp_path, monkeypatch):
    from deepfake.core import paths

    monkeypatch.setattr(paths, "ROOT", tmp_path)  # the cache goes to <root>/build/cache
    cfg = TrainConfig(**{**FAST, "epochs": 1, "max_batches": 2, "deterministic": True, "jpeg_prob": 0.5})
    plain = train(cfg, tiny_splits, tiny_dataset, tmp_path / "plain").history
    cached = train(replace(cfg, decode_cache=True), tiny_splits, tiny_dataset, tmp_path / "cached").history
    assert len(list((tmp_path / "build" / "cache").glob("decoded-32px-*.u8"))) == 2  # train and val
    assert cached[METRICS].equals(plain[METRICS])
