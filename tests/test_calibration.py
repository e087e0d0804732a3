import hashlib
import json
import os

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from deepfake.core import paths
from deepfake.metrics.calibration import (
    HASH_KEY,
    REQUIRED_KEYS,
    T_BOUNDS,
    Calibration,
    CalibrationMismatchError,
    apply_temperature,
    checkpoint_record,
    file_sha256,
    fit_temperature,
    load_calibration,
    logits_from_probs,
    nll,
    save_calibration,
)


def _overconfident(n=20000, factor=3.0, seed=0):
    """Labels drawn from sigmoid(z); the 'model' reports factor * z."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return factor * z, y


def test_fit_recovers_the_true_temperature():
    logits, y = _overconfident(factor=3.0)
    t, at_bound = fit_temperature(logits, y)
    assert t == pytest.approx(3.0, rel=0.05) and not at_bound
    logits, y = _overconfident(factor=0.5, seed=1)  # under-confident
    assert fit_temperature(logits, y)[0] == pytest.approx(0.5, rel=0.05)


def test_fit_is_the_nll_minimum_on_a_grid():
    logits, y = _overconfident(n=2000, factor=2.0, seed=2)
    t, _ = fit_temperature(logits, y)
    grid = np.exp(np.linspace(np.log(0.1), np.log(10), 2001))
    best = grid[np.argmin([nll(logits, y, g) for g in grid])]
    assert t == pytest.approx(best, rel=0.01)
    assert nll(logits, y, t) <= nll(logits, y, 1.0)


def test_separable_data_stops_at_the_lower_bound():
    t, at_bound = fit_temperature([-3.0, -2.0, 2.0, 3.0], [0, 0, 1, 1])
    assert t == T_BOUNDS[0] and at_bound


def test_temperature_keeps_the_ranking_and_t1_is_identity():
    rng = np.random.default_rng(3)
    p = rng.random(200)
    y = rng.integers(0, 2, 200)
    assert apply_temperature(p, 1.0) == pytest.approx(np.clip(p, 1e-7, 1 - 1e-7), abs=1e-9)
    q = apply_temperature(p, 2.5)
    assert roc_auc_score(y, q) == pytest.approx(roc_auc_score(y, p))
    assert np.all(np.abs(q - 0.5) <= np.abs(p - 0.5) + 1e-12)  # T > 1 pulls towards 0.5


def test_logits_of_saturated_probabilities_are_finite():
    z = logits_from_probs([0.0, 1.0, 0.5])
    assert np.isfinite(z).all() and z[2] == 0 and z[0] == pytest.approx(-z[1]) and 16 < z[1] < 16.2


def test_calibration_file_round_trip(tmp_path):
    path = save_calibration(
        tmp_path / "calibration.json", 1.7, 0.42, "max balanced accuracy on the validation split", n_val=10
    )
    data = json.loads(path.read_text())
    assert (
        set(REQUIRED_KEYS) <= set(data)
        and isinstance(data["temperature"], float)
        and isinstance(data["threshold_rule"], str)
    )
    assert load_calibration(path) == data and data["n_val"] == 10


def test_calibration_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="evaluate stage"):
        load_calibration(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"temperature": 1.0}))
    with pytest.raises(ValueError, match="threshold"):
        load_calibration(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="temperature"):
        save_calibration(tmp_path / "x.json", 0.0, 0.5, "fixed")


# -- which checkpoint a calibration belongs to ---------------------------------------------------


@pytest.fixture()
def two_checkpoints(tmp_path):
    """Two small files standing in for checkpoints (only their bytes matter to the hash)."""
    a, b = tmp_path / "models" / "best.pt", tmp_path / "other" / "best.pt"
    a.parent.mkdir()
    b.parent.mkdir()
    a.write_bytes(b"weights of model A" * 1000)
    b.write_bytes(b"weights of model B" * 1000)
    return a, b


def test_file_hash_is_the_sha256_of_its_bytes(two_checkpoints):
    a, b = two_checkpoints
    assert file_sha256(a) == hashlib.sha256(a.read_bytes()).hexdigest() and file_sha256(a) != file_sha256(b)
    a.write_bytes(b"retrained")  # a new file at the same path: hashed again, not remembered
    os.utime(a, ns=(os.stat(a).st_atime_ns, os.stat(a).st_mtime_ns + 10**9))
    assert file_sha256(a) == hashlib.sha256(b"retrained").hexdigest()
    assert checkpoint_record(a) == {"checkpoint": str(a), HASH_KEY: file_sha256(a)}  # outside the project: absolute
    assert paths.shown("models/best.pt") == "models/best.pt"  # inside it: from the project root


def test_a_calibration_fitted_for_the_checkpoint_is_verified(two_checkpoints, tmp_path):
    a, _ = two_checkpoints
    path = save_calibration(tmp_path / "calibration.json", 1.5, 0.4, "fixed", **checkpoint_record(a))
    assert json.loads(path.read_text())[HASH_KEY] == hashlib.sha256(a.read_bytes()).hexdigest()
    assert load_calibration(path, checkpoint=a)["temperature"] == 1.5
    cal = Calibration.from_file(path, checkpoint=a)
    assert (cal.temperature, cal.threshold, cal.verified) == (1.5, 0.4, True)
    assert Calibration.from_file(path).verified is None  # no checkpoint given: nothing checked


def test_a_calibration_fitted_for_another_checkpoint_is_refused(two_checkpoints, tmp_path):
    a, b = two_checkpoints
    path = save_calibration(tmp_path / "calibration.json", 1.5, 0.4, "fixed", **checkpoint_record(a))
    for read in (lambda: load_calibration(path, checkpoint=b), lambda: Calibration.from_file(path, checkpoint=b)):
        with pytest.raises(CalibrationMismatchError) as err:
            read()
        text = str(err.value)
        assert str(path) in text and str(b) in text and str(a) in text  # both files, and the one it was fitted for
        assert file_sha256(a)[:12] in text and file_sha256(b)[:12] in text and "dvc repro evaluate" in text


def test_a_calibration_without_a_checkpoint_hash_is_used_with_a_warning(two_checkpoints, tmp_path, caplog):
    a, _ = two_checkpoints
    path = save_calibration(tmp_path / "calibration.json", 2.0, 0.6, "fixed", arch="resnet18")  # an older file
    with caplog.at_level("WARNING", logger="deepfake.metrics.calibration"):
        cal = Calibration.from_file(path, checkpoint=a)
        data = load_calibration(path, checkpoint=a)
    assert (cal.temperature, cal.threshold, cal.verified) == (2.0, 0.6, False) and data["threshold"] == 0.6
    assert len(caplog.records) == 2 and all("cannot be verified" in r.getMessage() for r in caplog.records)
    assert str(a) in caplog.records[0].getMessage() and "dvc repro evaluate" in caplog.records[0].getMessage()


def test_the_evaluate_stage_records_the_checkpoint_it_calibrated(tiny_dataset, tiny_splits, tmp_path):
    from test_predict import write_checkpoint

    from deepfake.data.split import read_split
    from deepfake.evaluation.evaluate import EvalConfig, evaluate

    ckpt = write_checkpoint(tmp_path / "best.pt", sorted(tiny_dataset.rglob("*.jpg")))
    cfg = EvalConfig(device="cpu", latency_images=0, bootstrap=0, robust_jpeg="", robust_blur="", robust_downscale="")
    result = evaluate(ckpt, read_split(tiny_splits, "test"), tiny_dataset, cfg, val=read_split(tiny_splits, "val"))
    assert result.calibration[HASH_KEY] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert result.calibration["checkpoint"] == str(ckpt)
