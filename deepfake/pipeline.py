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
