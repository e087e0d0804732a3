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
QUICK_SYNTH = SynthConfig(n_identities=32, images_per_identity=1, image_size=64, seed=0, workers=1)
QUICK_TRAIN = {"weights": "none", "epochs": 1, "batch_size": 16, "image_size": 64, "device": "cpu"}


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
    if result.is_main:  # under torchrun, rank 0 writes the reports
        out = paths.resolve(reports_dir)
        write_history(result.history, out / "history.csv")
        write_json(out / "metrics.json", result.summary)
    return result


def run_evaluate(cfg, checkpoint: str | os.PathLike, raw_dir: str | os.PathLike, splits_dir: str | os.PathLike, reports_dir: str | os.PathLike,
                 split: str = "test"):
    """Score one split with a checkpoint and write predictions, metrics and ROC points."""
    from .evaluate import evaluate, write_outputs

    frame = read_split(paths.resolve(splits_dir), split)
    preds, metrics = evaluate(paths.resolve(checkpoint), frame, paths.resolve(raw_dir), cfg)
    metrics["split"] = split
    write_outputs(preds, metrics, paths.resolve(reports_dir))
    return preds, metrics


def run_plots(train_reports: str | os.PathLike, eval_reports: str | os.PathLike, figures_dir: str | os.PathLike, threshold: float = 0.5) -> dict[str, Path]:
    """Draw the standard figures from the train and evaluate reports into ``figures_dir``."""
    from . import plots

    train_dir, eval_dir, out = paths.resolve(train_reports), paths.resolve(eval_reports), paths.resolve(figures_dir)
    history = pd.read_csv(train_dir / "history.csv")
    preds = pd.read_csv(eval_dir / "predictions.csv", dtype={"group": str}, keep_default_na=False)
    roc = pd.read_csv(eval_dir / "roc.csv")
    figs = {
        "training_curves": plots.training_curves(history),
        "confusion_matrix": plots.confusion(preds),
        "roc_curve": plots.roc_curve(roc, preds),
        "score_distributions": plots.score_distributions(preds, threshold),
    }
    return {name: plots.save(fig, out / f"{name}.png") for name, fig in figs.items()}


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
    """Quick model plus its training history and test evaluation, created when missing."""
    from .evaluate import EvalConfig

    ensure_quick_model(raw_dir, splits_dir, model_dir, train_reports)
    if not (paths.resolve(eval_reports) / "predictions.csv").exists():
        run_evaluate(EvalConfig(device="cpu", latency_images=5), paths.resolve(model_dir) / "best.pt", raw_dir, splits_dir, eval_reports)
