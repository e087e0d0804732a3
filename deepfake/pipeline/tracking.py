"""Experiment tracking with DVCLive: per-epoch metrics while training, headline metrics per stage.

Each tracked stage writes, under its reports folder, the files DVC users know:

- ``metrics.json``: the headline numbers a paper's table would hold (``dvc metrics show``,
  ``dvc exp show``);
- ``plots/metrics/{train,val}/{loss,accuracy,auc}.tsv`` and ``plots/metrics/lr.tsv`` (training):
  one row per epoch, written as each epoch ends, so ``dvc plots show`` / ``dvc plots diff`` and
  the VS Code DVC extension follow a run live.

Details a reader may want but a table does not (the whole summary, per-kind results, the
calibration) go to ``details.json`` beside it, and run times to ``timings.json``: they differ
from run to run, so they are kept out of DVC's metrics and out of git. ``dvc.yaml`` declares
the metrics and plots itself (``dvcyaml=None``); inside ``dvc repro`` / ``dvc exp run`` DVCLive
does not create experiments of its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.utils import write_json

#: Per-epoch training metrics: ``<split>/<name>`` in DVCLive, ``<split>_<name>`` in the history.
EPOCH_METRICS = ("loss", "accuracy", "auc")
SPLITS = ("train", "val")
TIMINGS_FILE = "timings.json"
DETAILS_FILE = "details.json"
METRICS_FILE = "metrics.json"


def live(folder: str | os.PathLike, resume: bool = False) -> Any:
    """A DVCLive logger writing into ``folder`` (no dvc.yaml edits, no experiments or reports of its own)."""
    from dvclive import Live

    return Live(dir=str(folder), resume=resume, report=None, save_dvc_exp=False, dvcyaml=None)


class TrainTracker:
    """Logs each epoch's row of the training history to DVCLive as the epoch ends."""

    def __init__(self, folder: str | os.PathLike, resume: bool = False) -> None:
        self.live = live(folder, resume)

    def epoch(self, row: Mapping[str, Any]) -> None:
        """Log one history row (``epoch``, ``train_loss``, ..., ``val_auc``, ``lr``)."""
        self.live.step = int(row["epoch"])
        for split in SPLITS:
            for name in EPOCH_METRICS:
                self.live.log_metric(f"{split}/{name}", float(row[f"{split}_{name}"]))
        self.live.log_metric("lr", float(row["lr"]))
        self.live.next_step()

    def finish(self, headline: Mapping[str, Any], epochs_run: int) -> None:
        """Write ``metrics.json``: the headline (not the last epoch's values) and ``step``, the epochs run."""
        self.live.summary = dict(headline)
        self.live.step = int(epochs_run)
        self.live.end()


def read_history(folder: str | os.PathLike) -> pd.DataFrame:
    """The per-epoch history from a training report folder (``plots/metrics`` written by ``TrainTracker``).

    Returns the columns ``epoch``, ``train_loss``, ``train_accuracy``, ``train_auc``, ``val_loss``,
    ``val_accuracy``, ``val_auc``, ``lr``.

    Raises:
        FileNotFoundError: the folder holds no training history.
    """
    root = Path(folder) / "plots" / "metrics"
    columns: dict[str, pd.Series] = {}
    names = [(f"{split}_{name}", root / split / f"{name}.tsv") for split in SPLITS for name in EPOCH_METRICS]
    for column, file in [*names, ("lr", root / "lr.tsv")]:
        if not file.exists():
            raise FileNotFoundError(f"{file} not found: {folder} holds no training history (run the train stage)")
        table = pd.read_csv(file, sep="\t")
        columns[column] = table.set_index("step")[table.columns[-1]]
    history = pd.DataFrame(columns).rename_axis("epoch").reset_index()
    return history


def split_timings(values: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``values`` without ``keys`` (the details, the same in every run) and with only them (this run's timings)."""
    return {k: v for k, v in values.items() if k not in keys}, {k: v for k, v in values.items() if k in keys}


def headline_preprocess(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The preprocess numbers of a paper's table: inputs found, crops written, inputs left out, faces."""
    return {k: summary[k] for k in ("images", "videos", "written", "skipped", "faces_found", "no_face")}


def headline_train(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The training numbers of a paper's table: the chosen epoch and its validation scores."""
    keys = ("best_epoch", "epochs_run", "best_val_auc", "best_val_accuracy", "best_val_loss")
    return {k: _rounded(summary[k]) for k in keys if k in summary}


def headline_eval(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluation numbers of a paper's table: ROC-AUC and accuracy with their group-bootstrap
    intervals, average precision, EER, calibration error after temperature scaling, n, and the
    ROC-AUC of each kind of fake (against all reals)."""
    ci = metrics.get("ci") or {}
    head: dict[str, Any] = {"roc_auc": metrics.get("roc_auc")}
    head.update({k: ci[k] for k in ("roc_auc_low", "roc_auc_high") if k in ci})
    head["accuracy"] = metrics.get("accuracy")
    head.update({k: ci[k] for k in ("accuracy_low", "accuracy_high") if k in ci})
    head["average_precision"] = metrics.get("average_precision")
    head["eer"] = metrics.get("eer")
    ece = (metrics.get("calibration") or {}).get("ece_after")
    if ece is not None:
        head["ece"] = ece
    head["n_images"] = metrics.get("n")
    if "n_groups" in ci:
        head["n_groups"] = ci["n_groups"]
    kinds = (metrics.get("per_kind") or {}).get("kinds") or []
    if kinds:
        head["per_kind_auc"] = {k["kind"]: k["roc_auc"] for k in kinds}
    return {k: _rounded(v) for k, v in head.items() if v is not None}


def _rounded(v: Any) -> Any:
    """Four decimals: what a table shows, and a file that reads well in ``dvc metrics show``."""
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    if isinstance(v, float):
        return round(v, 4)
    return v


def log_headline(folder: str | os.PathLike, headline: Mapping[str, Any]) -> None:
    """Write ``folder/metrics.json`` through DVCLive (nested dicts become ``a/b`` metric names)."""
    lv = live(folder)

    def flat(prefix: str, d: Mapping[str, Any]) -> None:
        for k, v in d.items():
            if isinstance(v, Mapping):
                flat(f"{prefix}{k}/", v)
            elif v is not None:
                lv.log_metric(f"{prefix}{k}", v, plot=False)

    flat("", headline)
    lv.end()


def write_stage_reports(
    folder: str | os.PathLike,
    details: Mapping[str, Any],
    timings: Mapping[str, Any] | None = None,
    headline: Mapping[str, Any] | None = None,
) -> None:
    """Write ``details.json``, ``timings.json`` (when given) and, for stages DVCLive does not track,
    ``metrics.json`` (``headline``), atomically."""
    out = Path(folder)
    write_json(out / DETAILS_FILE, dict(details))
    if timings is not None:
        write_json(out / TIMINGS_FILE, dict(timings))
    if headline is not None:
        write_json(out / METRICS_FILE, dict(headline))
