import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score
from test_predict import write_checkpoint

from deepfake.inference.predict import PredictConfig, get_predictor
from deepfake.metrics.classification import per_kind
from deepfake.pipeline import explore


def _state(rev, name, lr, epochs, auc=None, best_val_auc=None):
    metrics = {}
    if auc is not None:
        metrics["reports/eval/metrics.json"] = {
            "data": {"roc_auc": auc, "n": 360, "ci": {"roc_auc_low": auc - 0.05, "roc_auc_high": auc + 0.05}}
        }
    if best_val_auc is not None:  # a headline file: intervals at the top level
        metrics["reports/train/metrics.json"] = {"data": {"best_epoch": 3, "best_val_auc": best_val_auc}}
        metrics["reports/cross/other/metrics.json"] = {"data": {"roc_auc": 0.6, "roc_auc_low": 0.5, "n_images": 9}}
    params = {"params.yaml": {"data": {"train": {"lr": lr, "epochs": epochs, "arch": "resnet18"}, "base": {"seed": 0}}}}
    return {
        "rev": rev,
        "name": name,
        "data": {"rev": rev, "timestamp": "2026-01-02T03:04:05", "params": params, "metrics": metrics},
        "error": None,
        "experiments": None,
    }


def _records():
    """``dvc exp show --json`` of a workspace, its baseline commit and two experiments from it."""
    baseline = _state("a" * 40, "main", 1e-3, 20, auc=0.81, best_val_auc=0.79)
    baseline["experiments"] = [
        {"revs": [_state("b" * 40, "lower-lr", 3e-4, 20, auc=0.84, best_val_auc=0.82)], "executor": None, "name": None},
        {"revs": [_state("c" * 40, None, 1e-3, 30, auc=0.80)], "executor": None, "name": "longer"},
    ]
    return [_state("workspace", None, 1e-3, 20, auc=0.81, best_val_auc=0.79), baseline]


def test_experiments_frame_has_headline_metrics_and_only_the_changed_params():
    table = explore.experiments_frame(_records())
    assert table["experiment"].tolist() == ["workspace", "main", "lower-lr", "longer"]
    assert table["kind"].tolist() == ["workspace", "baseline", "experiment", "experiment"]
    assert table["rev"].tolist() == ["workspace", "aaaaaaa", "bbbbbbb", "ccccccc"]
    assert table["baseline"].tolist() == ["workspace", "main", "main", "main"]
    assert table["eval.roc_auc"].tolist() == [0.81, 0.81, 0.84, 0.80]
    assert table.loc[2, "eval.roc_auc_low"] == pytest.approx(0.79)  # from the ``ci`` section
    assert table.loc[2, "train.best_val_auc"] == 0.82 and np.isnan(table.loc[3, "train.best_val_auc"])
    assert table.loc[0, "cross/other.roc_auc_low"] == 0.5 and table.loc[0, "cross/other.roc_auc"] == 0.6
    assert not {"eval.n", "cross/other.n_images"} & set(table.columns)  # not headline metrics
    assert table["train.lr"].tolist() == [1e-3, 1e-3, 3e-4, 1e-3] and table["train.epochs"].tolist() == [20, 20, 20, 30]
    assert not {"train.arch", "base.seed", "error"} & set(table.columns)  # unchanged params, no failed run
    assert table.attrs["message"].startswith("2 experiment(s)") and "train.lr, train.epochs" in table.attrs["message"]


def test_no_experiment_gives_an_empty_table_that_says_how_to_run_one():
    table = explore.experiments_frame(_records()[:1] + [_state("a" * 40, "main", 1e-3, 20, auc=0.81)])
    assert table.empty and "dvc exp run" in table.attrs["message"]


def _executor(state):
    """The ``executor`` of an experiment range of ``dvc exp show --json`` (DVC 3)."""
    return {"state": state, "name": "dvc-task", "local": {"task_id": "f" * 40, "returncode": None}}


def _queue_records():
    """Four experiments from one baseline, one in each state DVC gives them."""
    records = _records()
    base = records[1]
    base["experiments"] = [
        {"revs": [_state("d" * 40, "lr-a", 3e-3, 20, auc=0.83)], "executor": _executor("running"), "name": "lr-a"},
        {"revs": [_state("b" * 40, "lr-b", 3e-4, 20, auc=0.84)], "executor": _executor("success"), "name": "lr-b"},
        {"revs": [_state("c" * 40, "lr-c", 1e-2, 20)], "executor": _executor("queued"), "name": "lr-c"},
        {"revs": [{**_state("e" * 40, "lr-d", 3e-2, 20), "error": {"msg": "Experiment run failed", "type": ""}}],
         "executor": _executor("failed"), "name": "lr-d"},
    ]  # fmt: skip
    return records


def test_each_experiment_has_its_state_and_the_message_counts_them():
    table = explore.experiments_frame(_queue_records())
    assert table["experiment"].tolist() == ["workspace", "main", "lr-a", "lr-b", "lr-c", "lr-d"]
    assert table["state"].tolist() == ["", "", "running", "success", "queued", "failed"]
    assert table["error"].tolist()[-1] == "Experiment run failed"
    assert np.isnan(table.loc[4, "eval.roc_auc"]) and table.loc[3, "eval.roc_auc"] == 0.84  # queued: not run yet
    assert "4 experiment(s) (1 queued, 1 running, 1 success, 1 failed)" in table.attrs["message"]
    # an experiment run in the workspace has no executor: DVC keeps it once it finished
    assert explore.experiments_frame(_records())["state"].tolist() == ["", "", "success", "success"]


def _fake_dvc(monkeypatch, records, workers="Worker status: 0 active, 0 idle"):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append((cmd, kwargs["cwd"]))
        out = json.dumps(records) if cmd[3:5] == ["exp", "show"] else f"Task  Name\n\n{workers}\n"
        return subprocess.CompletedProcess(cmd, 0, stdout=out, stderr="")

    monkeypatch.setattr(explore.subprocess, "run", fake_run)
    return calls


def test_experiments_table_runs_this_environments_dvc(tmp_path, monkeypatch):
    (tmp_path / ".dvc").mkdir()
    calls = _fake_dvc(monkeypatch, _records(), "Worker status: 2 active, 0 idle")
    table = explore.experiments_table(tmp_path)
    dvc = [sys.executable, "-m", "dvc"]
    assert calls == [([*dvc, "exp", "show", "--json"], tmp_path), ([*dvc, "queue", "status"], tmp_path)]
    assert len(table) == 4 and table.attrs["message"].endswith("queue workers: 2 active, 0 idle")
    assert not table.attrs["failed"]


def test_the_listing_says_why_a_run_failed_and_how_queued_ones_start(tmp_path, monkeypatch):
    (tmp_path / ".dvc").mkdir()
    _fake_dvc(monkeypatch, _queue_records())
    monkeypatch.setattr(explore.shutil, "which", lambda name: f"/env/bin/{name}")
    message = explore.experiments_table(tmp_path).attrs["message"]
    assert "dvc queue logs lr-d" in message and "no queue worker runs: start them with dvc queue start" in message
    # DVC's workers start `dvc` by name: without it on PATH a queued run would wait for ever
    monkeypatch.setattr(explore.shutil, "which", lambda name: None)
    message = explore.experiments_table(tmp_path).attrs["message"]
    assert "start `dvc` from PATH, where there is none: activate the environment" in message


def test_experiments_table_outside_a_dvc_repository_says_so(tmp_path):
    table = explore.experiments_table(tmp_path)
    message = table.attrs["message"]
    assert table.empty and table.attrs["failed"] and f"{tmp_path} is not inside a DVC repository" in message


def test_experiments_table_without_dvc_installed_says_so(tmp_path, monkeypatch):
    real = explore.importlib.util.find_spec
    monkeypatch.setattr(explore.importlib.util, "find_spec", lambda name: None if name == "dvc" else real(name))
    table = explore.experiments_table(tmp_path)
    assert table.empty and table.attrs["failed"] and "DVC is not installed" in table.attrs["message"]


def test_a_failing_dvc_is_reported_with_its_last_line(tmp_path, monkeypatch):
    (tmp_path / ".dvc").mkdir()
    failing = subprocess.CompletedProcess([], 255, stdout="", stderr="ERROR: this is not a git repository\n")
    monkeypatch.setattr(explore.subprocess, "run", lambda cmd, **kwargs: failing)
    message = explore.experiments_table(tmp_path).attrs["message"]
    assert "`dvc exp show` failed" in message and "(exit 255): ERROR: this is not a git repository" in message


def test_the_command_exits_1_when_dvc_cannot_answer_and_0_without_experiments(tmp_path, monkeypatch, capsys):
    from deepfake.__main__ import main

    monkeypatch.setattr(explore, "experiments_table", lambda: explore._empty("not a DVC repository", failed=True))
    assert main(["experiments"]) == 1 and capsys.readouterr().err == "error: not a DVC repository\n"
    monkeypatch.setattr(explore, "experiments_table", lambda: explore.experiments_frame(_records()[:1]))
    assert main(["experiments"]) == 0 and "No DVC experiments yet" in capsys.readouterr().out


def _preds(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    score = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.25, n), 0, 1)
    kinds = np.array(["swap", "partial", ""])
    return pd.DataFrame(
        {
            "path": [f"{'fake' if t else 'real'}/{i:03d}.png" for i, t in enumerate(y)],
            "source": [f"{'fake' if t else 'real'}/{i:03d}.jpg" for i, t in enumerate(y)],
            "group": [f"g{i % 3}" for i in range(n)],
            "label": np.where(y, "fake", "real"),
            "target": y,
            "manipulation": np.where(y == 1, kinds[np.arange(n) % 3], ""),
            "score": score,
            "predicted": np.where(score >= 0.5, "fake", "real"),
        }
    )


def test_slices_by_group_split_the_rows():
    preds = _preds()
    table = explore.slice_metrics(preds, "group")
    assert table["group"].tolist() == ["g0", "g1", "g2"] and table["n"].sum() == len(preds)
    part = preds[preds["group"] == "g1"]
    row = table.set_index("group").loc["g1"]
    assert row["roc_auc"] == pytest.approx(roc_auc_score(part["target"], part["score"]))
    assert row["accuracy"] == pytest.approx((part["predicted"] == part["label"]).mean())
    fakes = part[part["target"] == 1]
    assert row["recall"] == pytest.approx((fakes["predicted"] == "fake").mean())
    assert row["n_real"] + row["n_fake"] == row["n"] == len(part)


def test_slices_by_kind_of_fake_score_each_kind_against_all_reals_as_per_kind_does():
    preds = _preds()
    table = explore.slice_metrics(preds, "manipulation").set_index("manipulation")
    expected = per_kind(preds["target"], preds["score"], preds["manipulation"], 0.5)
    assert table.index.tolist() == [r["kind"] for r in expected] == ["partial", "swap", "unknown"]
    for r in expected:
        assert table.loc[r["kind"], "n_fake"] == r["n"] and table.loc[r["kind"], "n_real"] == r["n_real"]
        assert table.loc[r["kind"], "roc_auc"] == pytest.approx(r["roc_auc"])
        assert table.loc[r["kind"], "recall"] == pytest.approx(r["recall"])


def test_a_one_class_slice_has_no_auc_and_a_missing_column_is_named():
    preds = _preds()
    table = explore.slice_metrics(preds, "label").set_index("label")
    assert np.isnan(table.loc["real", "roc_auc"]) and np.isnan(table.loc["real", "recall"])
    assert table.loc["fake", "n_real"] == 0
    with pytest.raises(KeyError, match="no column 'quality'"):
        explore.slice_metrics(preds, "quality")


def test_image_sizes_come_from_the_originals_and_fall_in_side_bins(tmp_path):
    sides = {"a.png": (50, 50), "b.png": (200, 100), "c.jpg": (700, 600)}
    for name, size in sides.items():
        Image.new("RGB", size).save(tmp_path / name)
    preds = _preds(4).assign(source=["a.png", "b.png", "c.jpg", "missing.png"])
    sized = explore.with_image_size(preds, tmp_path, edges=(64, 128, 512))
    assert sized["pixels"].tolist()[:3] == [2500, 20000, 420000] and np.isnan(sized["pixels"].iloc[3])
    assert sized["size"].astype(str).tolist() == ["< 64 px", "128-511 px", ">= 512 px", "unknown"]
    table = explore.slice_metrics(sized, "size")
    # in size order, the empty bin (64-127 px) left out
    assert table["size"].tolist() == ["< 64 px", "128-511 px", ">= 512 px", "unknown"]


def test_mistakes_table_lists_false_positives_then_false_negatives():
    preds = _preds()
    table = explore.mistakes_table(preds, k=2)
    assert table["mistake"].tolist() == ["false positive"] * 2 + ["false negative"] * 2
    fp_scores = preds[(preds["target"] == 0) & (preds["predicted"] == "fake")]["score"]
    assert table["score"].iloc[:2].tolist() == sorted(fp_scores, reverse=True)[:2]
    assert table.columns[:5].tolist() == ["mistake", "path", "group", "label", "score"]


def test_without_a_checkpoint_the_gradcam_part_says_what_to_run(tmp_path):
    cams = explore.explain_mistakes(_preds(), tmp_path, tmp_path / "best.pt")
    assert cams.items == [] and "No model at" in cams.message and "dvc pull" in cams.message


def test_confident_mistakes_are_explained_through_the_predictor(tiny_dataset, tmp_path):
    files = sorted(tiny_dataset.rglob("*.jpg"))
    ckpt = write_checkpoint(tmp_path / "best.pt", files)
    calibration = tmp_path / "no-calibration.json"  # absent: temperature 1, threshold 0.5
    predictor = get_predictor(ckpt, "cpu", PredictConfig(calibration_file=str(calibration)))
    probs = np.array([p.probability for p in predictor.predict_batch(files)])
    called = probs >= 0.5
    preds = pd.DataFrame(
        {
            "path": [f.name for f in files],
            "source": [str(f.relative_to(tiny_dataset)) for f in files],
            "group": "g",
            "target": (~called).astype(int),  # every image a mistake
            "label": np.where(called, "real", "fake"),
            "score": probs,
            "predicted": np.where(called, "fake", "real"),
        }
    )
    preds.loc[len(preds)] = {**preds.iloc[int(np.argmax(probs))].to_dict(), "source": "fake/gone.jpg", "score": 1.0}
    cams = explore.explain_mistakes(preds, tiny_dataset, ckpt, calibration, k=2)
    assert [c.mistake for c in cams.items] == ["false positive"] + ["false negative"] * 2  # the missing file skipped
    assert "fake/gone.jpg (UnreadableInputError" in cams.message
    for item in cams.items:
        assert item.prediction.probability == pytest.approx(item.row["score"], abs=1e-5)
        assert item.cam.target == item.row["predicted"] and item.cam.heatmap.shape == item.crop.shape[:2]
    fig = explore.mistakes_figure(cams.items)
    assert len(fig.axes) == 7 and fig.axes[3].images[0].get_array().shape == cams.items[0].cam.overlay.shape
    assert fig.axes[6].get_ylabel() == "evidence for THE VERDICT"  # the colour bar of the Grad-CAM row
