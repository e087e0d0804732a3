"""Stage functions behind the notebooks, parameter loading and quick-check inputs.

Each pipeline notebook is a thin wrapper around one ``run_*`` function here. The notebooks'
default parameters are a quick-check configuration that reads and writes under
``build/quick/``; ``ensure_quick_*`` builds whatever upstream input such a run lacks, with a
tiny synthetic dataset, so every notebook runs on a fresh clone (``pytest --nbval-lax``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import yaml

from . import paths
from .data import index_dataset, read_split
from .split import SplitConfig, balance_table, check_leakage, has_given_split, keep_given_split, split_dataset, write_splits
from .synth import SynthConfig, generate
from .utils import write_json

C = TypeVar("C")

#: The tiny dataset and training run behind the notebooks' default parameters.
QUICK_SYNTH = SynthConfig(n_identities=32, images_per_identity=1, image_size=64, seed=0, workers=1)
QUICK_TRAIN = {"weights": "none", "epochs": 1, "batch_size": 16, "image_size": 64, "device": "cpu"}
#: A second tiny dataset (other seed and resolution) standing in for a cross-dataset test.
QUICK_CROSS_SYNTH = SynthConfig(n_identities=8, images_per_identity=2, image_size=48, seed=1, workers=1)


def load_params(path: str | os.PathLike = paths.PARAMS_FILE) -> dict[str, Any]:
    """Read ``params.yaml``."""
    with open(path) as f:
        return yaml.safe_load(f) or {}


def make_config(cls: type[C], section: dict[str, Any] | None, **overrides: Any) -> C:
    """Build a config dataclass from a params section; unknown keys fail loudly."""
    values = {**(section or {}), **overrides}
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TypeError(f"unknown {cls.__name__} key(s) {unknown}; valid keys are {sorted(known)}")
    return cls(**values)


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------


@dataclass
class SplitResult:
    frame: pd.DataFrame
    leakage: dict
    balance: pd.DataFrame
    manifests: dict[str, Path]
    duplicates: pd.DataFrame | None = None  # duplicate pairs found by the audit
    audit: dict | None = None  # duplicate counts (also in leakage.json)


def run_split(raw_dir: str | os.PathLike, splits_dir: str | os.PathLike, reports_dir: str | os.PathLike, cfg: SplitConfig) -> SplitResult:
    """Index ``raw_dir``, split it, audit duplicates, check for leakage and write manifests and reports.

    A ``split`` column in the dataset's manifest (the preprocess stage's ``keep_splits``) is
    kept; otherwise groups are assigned by ``split_dataset``. Writes ``train.csv``/``val.csv``/
    ``test.csv`` under ``splits_dir`` and ``leakage.json``, ``balance.csv`` and
    ``duplicates.csv`` under ``reports_dir``. Raises ``DuplicateLeakageError`` (exact or near
    duplicates across splits, unless ``cfg.dedupe``) after writing ``duplicates.csv`` only, and
    ``LeakageError`` before writing anything when a group would cross splits.
    """
    from .audit import audit_duplicates

    root = paths.resolve(raw_dir)
    index = index_dataset(root)
    frame = keep_given_split(index, cfg) if has_given_split(index) else split_dataset(index, cfg)
    out = paths.resolve(reports_dir)
    out.mkdir(parents=True, exist_ok=True)
    audit = audit_duplicates(frame, root, cfg.near_dup_bits, cfg.dedupe, report=out / "duplicates.csv")
    frame = audit.frame
    report = check_leakage(frame)
    table = balance_table(frame)
    manifests = write_splits(frame, paths.resolve(splits_dir))
    write_json(out / "leakage.json", {"groups_across_splits": len(report["groups_across_splits"]),
                                      "identical_files_across_splits": len(report["identical_files_across_splits"]),
                                      "n_groups": report["n_groups"], "n_images": report["n_images"], **audit.summary})
    table.to_csv(out / "balance.csv")
    return SplitResult(frame, report, table, manifests, audit.pairs, audit.summary)


def run_preprocess(raw_dir: str | os.PathLike, out_dir: str | os.PathLike, reports_dir: str | os.PathLike, cfg, progress: bool = True):
    """Build the face-crop cache of ``raw_dir`` in ``out_dir``; write ``summary.json`` and ``skipped.csv`` to ``reports_dir``."""
    from .preprocess import preprocess

    result = preprocess(paths.resolve(raw_dir), paths.resolve(out_dir), cfg, progress=progress)
    out = paths.resolve(reports_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "summary.json", result.summary)
    result.skipped.to_csv(out / "skipped.csv", index=False)
    return result


def run_train(cfg, raw_dir: str | os.PathLike, splits_dir: str | os.PathLike, model_dir: str | os.PathLike, reports_dir: str | os.PathLike):
    """Train, then write ``history.csv`` (DVC plots) and ``metrics.json`` (DVC metrics) to ``reports_dir``."""
    from .train import train, write_history

    result = train(cfg, paths.resolve(splits_dir), paths.resolve(raw_dir), paths.resolve(model_dir))
    if result.is_main:  # under torchrun, rank 0 writes the reports
        out = paths.resolve(reports_dir)
        write_history(result.history, out / "history.csv")
        write_json(out / "metrics.json", result.summary)
    return result


def run_evaluate(cfg, checkpoint: str | os.PathLike, raw_dir: str | os.PathLike, splits_dir: str | os.PathLike, reports_dir: str | os.PathLike,
                 split: str = "test", calibration_split: str = "val"):
    """Evaluate one split with a checkpoint, calibrated and thresholded on another.

    Fits the temperature and picks the threshold on ``calibration_split`` (never the split
    being evaluated), then writes predictions, metrics (with bootstrap intervals, video level
    and robustness), curves and ``calibration.json`` under ``reports_dir``.

    Returns:
        The ``deepfake.evaluate.EvalResult``.
    """
    from .evaluate import evaluate, write_outputs

    if split == calibration_split:
        raise ValueError(f"the threshold and temperature must come from another split than the evaluated one ({split!r})")
    splits = paths.resolve(splits_dir)
    frame, val = read_split(splits, split), read_split(splits, calibration_split)
    result = evaluate(paths.resolve(checkpoint), frame, paths.resolve(raw_dir), cfg, val=val)
    result.metrics = {"split": split, "calibration_split": calibration_split, **result.metrics}
    write_outputs(result, paths.resolve(reports_dir), write_calibration=True, ece_bins=cfg.ece_bins)
    return result


def run_cross_evaluate(cfg, checkpoint: str | os.PathLike, calibration_file: str | os.PathLike, data_dir: str | os.PathLike,
                       reports_dir: str | os.PathLike, figures: bool = True):
    """Score every image of a second dataset with a trained model, without fitting anything on it.

    ``data_dir`` has the layouts ``data.index_dataset`` reads (``real/`` and ``fake/``, or a
    ``manifest.csv``). The temperature and threshold are the in-distribution ones from
    ``calibration_file``. Writes predictions, metrics and curves (and figures) under
    ``reports_dir``, apart from the in-distribution results.

    Returns:
        The ``deepfake.evaluate.EvalResult``.
    """
    from .calibration import load_calibration
    from .evaluate import evaluate, write_outputs

    data = paths.resolve(data_dir)
    calib_path = paths.resolve(calibration_file)
    frame = index_dataset(data, hashes=False)
    result = evaluate(paths.resolve(checkpoint), frame, data, cfg, calibration=load_calibration(calib_path))
    result.metrics = {"dataset": os.path.normpath(data), "split": "all images (cross-dataset, nothing fitted on it)",
                      "calibration_from": os.path.normpath(calib_path), **result.metrics}
    out = paths.resolve(reports_dir)
    write_outputs(result, out, write_calibration=False, ece_bins=cfg.ece_bins)
    if figures:
        threshold = result.calibration["threshold"]
        _draw(_eval_figures(result.predictions, out, threshold, data, result.metrics), out / "figures")
    return result


def _eval_figures(preds: pd.DataFrame, eval_dir: Path, threshold: float, raw_dir: Path, metrics: dict, gallery_size: int = 6) -> dict:
    """The figures drawn from one evaluation's files."""
    from . import plots

    figs = {
        "confusion_matrix": lambda: plots.confusion(preds),
        "roc_curve": lambda: plots.roc_curve(pd.read_csv(eval_dir / "roc.csv"), preds, threshold),
        "pr_curve": lambda: plots.pr_curve(pd.read_csv(eval_dir / "pr.csv"), preds, threshold),
        "score_distributions": lambda: plots.score_distributions(preds, threshold),
    }
    tables = {name: eval_dir / f"reliability_{name}.csv" for name in ("uncalibrated", "calibrated")}
    if all(p.exists() for p in tables.values()):
        cal = metrics.get("calibration", {})
        eces = {"uncalibrated": cal.get("ece_before"), "calibrated": cal.get("ece_after")}
        figs["reliability_diagram"] = lambda: plots.reliability_diagram(
            {k: pd.read_csv(p) for k, p in tables.items()}, {k: v for k, v in eces.items() if v is not None})
    robust = eval_dir / "robustness.csv"
    if robust.exists():  # always drawn (says so when no perturbation is configured): a fixed set of outputs
        figs["robustness_curves"] = lambda: plots.robustness_curves(pd.read_csv(robust, keep_default_na=True))
    if gallery_size > 0:
        figs["confident_mistakes"] = lambda: plots.mistakes_gallery(preds, raw_dir, gallery_size)
    return figs


def _draw(figs: dict, out: Path) -> dict[str, Path]:
    from . import plots

    return {name: plots.save(make(), out / f"{name}.png") for name, make in figs.items()}


def run_plots(train_reports: str | os.PathLike, eval_reports: str | os.PathLike, figures_dir: str | os.PathLike,
              raw_dir: str | os.PathLike, gallery_size: int = 6) -> dict[str, Path]:
    """Draw the standard figures from the train and evaluate reports into ``figures_dir``.

    The threshold drawn is the one of ``calibration.json`` (chosen on validation); the
    gallery shows images from ``raw_dir``.
    """
    import json

    from . import plots
    from .calibration import load_calibration

    train_dir, eval_dir, out = paths.resolve(train_reports), paths.resolve(eval_reports), paths.resolve(figures_dir)
    history = pd.read_csv(train_dir / "history.csv")
    preds = pd.read_csv(eval_dir / "predictions.csv", dtype={"group": str, "path": str}, keep_default_na=False)
    threshold = load_calibration(eval_dir / "calibration.json")["threshold"]
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    figs = {"training_curves": lambda: plots.training_curves(history),
            **_eval_figures(preds, eval_dir, threshold, paths.resolve(raw_dir), metrics, gallery_size)}
    return _draw(figs, out)


# --------------------------------------------------------------------------------------------
# Quick-check inputs (notebook defaults)
# --------------------------------------------------------------------------------------------


def ensure_quick_dataset(raw_dir: str | os.PathLike) -> Path:
    """Create the tiny synthetic dataset at ``raw_dir`` unless a dataset is already there."""
    raw = paths.resolve(raw_dir)
    if not raw.exists():
        generate(raw, QUICK_SYNTH, progress=False)
    return raw


def ensure_quick_splits(raw_dir: str | os.PathLike, splits_dir: str | os.PathLike) -> Path:
    """Quick dataset plus its split manifests, created when missing."""
    ensure_quick_dataset(raw_dir)
    out = paths.resolve(splits_dir)
    if not all((out / f"{s}.csv").exists() for s in ("train", "val", "test")):
        run_split(raw_dir, out, out / "reports", SplitConfig())
    return out


def ensure_quick_model(raw_dir: str | os.PathLike, splits_dir: str | os.PathLike, model_dir: str | os.PathLike,
                       reports_dir: str | os.PathLike) -> Path:
    """Quick splits plus a one-epoch model trained on them, created when missing."""
    from .train import TrainConfig

    ensure_quick_splits(raw_dir, splits_dir)
    best = paths.resolve(model_dir) / "best.pt"
    if not best.exists():
        run_train(TrainConfig(**QUICK_TRAIN), raw_dir, splits_dir, model_dir, reports_dir)
    return best


def ensure_quick_reports(raw_dir: str | os.PathLike, splits_dir: str | os.PathLike, model_dir: str | os.PathLike,
                         train_reports: str | os.PathLike, eval_reports: str | os.PathLike) -> None:
    """Quick model plus its training history and test evaluation (with calibration), created when missing."""
    from .evaluate import EvalConfig

    ensure_quick_model(raw_dir, splits_dir, model_dir, train_reports)
    needed = ("predictions.csv", "calibration.json", "robustness.csv", "reliability_calibrated.csv")
    if not all((paths.resolve(eval_reports) / f).exists() for f in needed):
        run_evaluate(EvalConfig(device="cpu", latency_images=5, bootstrap=200), paths.resolve(model_dir) / "best.pt", raw_dir, splits_dir, eval_reports)


def ensure_quick_mixed_dataset(raw_dir: str | os.PathLike) -> Path:
    """A quick dataset with the awkward inputs real collections have, created when missing.

    The tiny synthetic set plus, listed in its manifest: a zero-byte file, a text file named
    ``.jpg``, a truncated JPEG, a grayscale PNG and an RGBA PNG (both usable after conversion),
    a 12-frame video made of synthetic faces, and a video file that cannot be opened.
    """
    import cv2
    import numpy as np
    from PIL import Image

    raw = paths.resolve(raw_dir)
    if raw.exists():
        return raw
    tmp = raw.with_name(raw.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)  # left by an interrupted run
    generate(tmp, QUICK_SYNTH, progress=False)
    manifest = pd.read_csv(tmp / "manifest.csv", dtype=str, keep_default_na=False)
    real = sorted((tmp / "real").glob("*.jpg"))
    img = np.asarray(Image.open(real[0]).convert("RGB"))
    (tmp / "fake" / "empty.jpg").write_bytes(b"")
    (tmp / "real" / "notes.jpg").write_text("not a photo\n")
    (tmp / "real" / "cut.jpg").write_bytes(real[1].read_bytes()[: real[1].stat().st_size // 2])
    Image.fromarray(img).convert("L").save(tmp / "real" / "grey.png")
    Image.fromarray(img).convert("RGBA").save(tmp / "real" / "alpha.png")
    h, w = img.shape[:2]
    writer = cv2.VideoWriter(str(tmp / "fake" / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    for f in real[:12]:
        writer.write(cv2.cvtColor(np.asarray(Image.open(f).convert("RGB")), cv2.COLOR_RGB2BGR))
    writer.release()
    (tmp / "fake" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    extra = pd.DataFrame({"file": ["fake/empty.jpg", "real/notes.jpg", "real/cut.jpg", "real/grey.png", "real/alpha.png", "fake/clip.avi",
                                   "fake/broken.mp4"],
                          "label": ["fake", "real", "real", "real", "real", "fake", "fake"]})
    pd.concat([manifest, extra], ignore_index=True).fillna("").to_csv(tmp / "manifest.csv", index=False)
    tmp.rename(raw)
    return raw


def ensure_quick_cross_dataset(data_dir: str | os.PathLike) -> Path:
    """A second tiny synthetic dataset (other seed, other image size) for the cross-dataset quick check."""
    data = paths.resolve(data_dir)
    if not data.exists():
        generate(data, QUICK_CROSS_SYNTH, progress=False)
    return data
