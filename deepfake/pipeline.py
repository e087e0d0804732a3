"""Stage functions behind the notebooks, parameter loading and quick-check inputs.

Each pipeline notebook is a thin wrapper around one ``run_*`` function here. The notebooks'
default parameters are a quick-check configuration that reads and writes under
``build/quick/``; ``ensure_quick_*`` builds whatever upstream input such a run lacks, with a
tiny synthetic dataset, so every notebook runs on a fresh clone (``pytest --nbval-lax``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import yaml

from . import paths
from .data import index_dataset, read_split
from .split import SplitConfig, balance_table, check_leakage, split_dataset, write_splits
from .synth import SynthConfig, generate
from .utils import write_json

C = TypeVar("C")

#: The tiny dataset and training run behind the notebooks' default parameters.
QUICK_SYNTH = SynthConfig(n_identities=16, images_per_identity=2, image_size=64, seed=0, workers=1)
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


def run_split(raw_dir: str | os.PathLike, splits_dir: str | os.PathLike, reports_dir: str | os.PathLike, cfg: SplitConfig) -> SplitResult:
    """Index ``raw_dir``, split it, check for leakage and write manifests and reports.

    Writes ``train.csv``/``val.csv``/``test.csv`` under ``splits_dir`` and ``leakage.json`` and
    ``balance.csv`` under ``reports_dir``. Raises ``LeakageError`` before writing anything when a
    group or an identical file would cross splits.
    """
    frame = split_dataset(index_dataset(paths.resolve(raw_dir)), cfg)
    report = check_leakage(frame)
    table = balance_table(frame)
    manifests = write_splits(frame, paths.resolve(splits_dir))
    out = paths.resolve(reports_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "leakage.json", {"groups_across_splits": len(report["groups_across_splits"]),
                                      "identical_files_across_splits": len(report["identical_files_across_splits"]),
                                      "n_groups": report["n_groups"], "n_images": report["n_images"]})
    table.to_csv(out / "balance.csv")
    return SplitResult(frame, report, table, manifests)


def run_train(cfg, raw_dir: str | os.PathLike, splits_dir: str | os.PathLike, model_dir: str | os.PathLike, reports_dir: str | os.PathLike):
    """Train, then write ``history.csv`` (DVC plots) and ``metrics.json`` (DVC metrics) to ``reports_dir``."""
    from .train import train, write_history

    result = train(cfg, paths.resolve(splits_dir), paths.resolve(raw_dir), paths.resolve(model_dir))
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
    if robust.exists() and len(table := pd.read_csv(robust, keep_default_na=True)) > 1:
        figs["robustness_curves"] = lambda: plots.robustness_curves(table)
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


def ensure_quick_cross_dataset(data_dir: str | os.PathLike) -> Path:
    """A second tiny synthetic dataset (other seed, other image size) for the cross-dataset quick check."""
    data = paths.resolve(data_dir)
    if not data.exists():
        generate(data, QUICK_CROSS_SYNTH, progress=False)
    return data
