"""Exploring a run by hand (``notebooks/06_explore.ipynb``): DVC experiments side by side (queued,
running, finished and failed ones, from DVC's own records: ``python -m deepfake experiments``), the
test metrics sliced by group, kind of fake and image size, and the most confident mistakes with
their Grad-CAM.

Nothing here is a pipeline stage: each function reads what the stages wrote (``predictions.csv``,
the metrics files DVC tracks, the checkpoint) and returns a table or a figure. Grad-CAMs go
through ``Predictor.explain``, the route the demo widget takes, so a mistake is cropped and
scored exactly as the evaluation scored it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score

from ..core import paths
from ..data.shortcuts import file_properties
from ..evaluation.plots import confident_mistakes
from ..inference.gradcam import GradCam, add_colorbar
from ..inference.predict import get_predictor
from ..inference.prediction import InputError, PredictConfig, Prediction

log = logging.getLogger(__name__)

#: Metrics shown per experiment: keys of any metrics file DVC tracks, nested ones joined by dots
#: (``ci.roc_auc_low`` in a full evaluation dictionary, ``roc_auc_low`` in a headline file).
HEADLINE_METRICS = (
    "roc_auc",
    "roc_auc_low",
    "roc_auc_high",
    "accuracy",
    "average_precision",
    "eer",
    "ece",
    "best_epoch",
    "best_val_auc",
)
#: Image sides (pixels, the square root of width x height) where the image-size slices begin.
SIZE_EDGES = (128, 256, 512, 1024)
#: Label of rows whose slicing value is missing (a fake without a kind, an unreadable original).
UNKNOWN = "unknown"


# --------------------------------------------------------------------------------------------
# Experiments
# --------------------------------------------------------------------------------------------


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _empty(message: str, failed: bool = False) -> pd.DataFrame:
    """An empty table whose ``attrs["message"]`` says why it is empty; ``attrs["failed"]``: DVC could not
    be asked (not installed, not a DVC repository, an error), as opposed to no experiment yet."""
    frame = pd.DataFrame()
    frame.attrs["message"] = message
    frame.attrs["failed"] = failed
    return frame


def _metric_prefix(file: str) -> str:
    """``eval`` for ``reports/eval/metrics.json``, ``cross/ffpp`` for ``reports/cross/ffpp/metrics.json``."""
    parent = Path(file).parent.as_posix()
    return parent.removeprefix("reports/") if parent not in ("", ".") else Path(file).stem


def _state_row(state: dict, kind: str, baseline: str, status: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """The identity and metrics of one ``dvc exp show`` entry, and its flattened params."""
    data = state.get("data") or {}
    rev = str(state.get("rev") or "")
    row: dict[str, Any] = {
        "experiment": state.get("name") or (rev if rev == "workspace" else rev[:7]),
        "state": status,
        "kind": kind,
        "rev": rev if rev == "workspace" else rev[:7],
        "baseline": baseline,
        "created": data.get("timestamp"),
        "error": (state.get("error") or {}).get("msg", ""),
    }
    for file, content in sorted((data.get("metrics") or {}).items()):
        values = _flatten((content or {}).get("data") or {})
        for key in HEADLINE_METRICS:
            value = values.get(key, values.get(f"ci.{key}"))
            if value is not None:
                row[f"{_metric_prefix(file)}.{key}"] = value
    params: dict[str, Any] = {}
    for content in (data.get("params") or {}).values():
        params.update(_flatten((content or {}).get("data") or {}))
    return row, params


#: States of an experiment as ``dvc exp show --json`` gives them (its executor's), in the order listed.
STATES = ("queued", "running", "success", "failed")


def experiments_frame(records: list[dict]) -> pd.DataFrame:
    """The parsed output of ``dvc exp show --json``: one row per revision, with the headline metrics
    (``eval.roc_auc``, ``eval.roc_auc_low``, ``train.best_val_auc``...) and the params whose values
    differ between rows.

    Rows are the workspace, each baseline commit and the experiments derived from it, each with its
    ``state`` as DVC records it: ``queued`` (``dvc exp run --queue``, not started), ``running``,
    ``success`` or ``failed`` (an experiment run in the workspace, which DVC keeps only when it
    finished, is ``success``). A queued experiment shows the params it will run with, and metrics only
    once it has run. With no experiment at all the table is empty and ``attrs["message"]`` says how to
    run one.
    """
    rows, params = [], []
    for record in records:
        rev = str(record.get("rev") or "")
        baseline = record.get("name") or (rev if rev == "workspace" else rev[:7])
        row, p = _state_row(record, "workspace" if rev == "workspace" else "baseline", baseline)
        rows.append(row)
        params.append(p)
        for exp_range in record.get("experiments") or []:
            status = str((exp_range.get("executor") or {}).get("state") or "success")
            for state in exp_range.get("revs") or []:
                state = {**state, "name": state.get("name") or exp_range.get("name")}
                row, p = _state_row(state, "experiment", baseline, status)
                rows.append(row)
                params.append(p)
    n_exp = sum(r["kind"] == "experiment" for r in rows)
    if not n_exp:
        return _empty(
            "No DVC experiments yet: run one with e.g. `dvc exp run -S train.lr=0.0003`, or queue several "
            "(`dvc exp run --queue -S ...`, then `dvc queue start`); `dvc exp show` then lists them here "
            "beside their baseline."
        )
    table = pd.DataFrame(rows)
    settings = pd.DataFrame(params)
    changed = [c for c in settings.columns if settings[c].astype(str).where(settings[c].notna()).nunique() > 1]
    table = pd.concat([table, settings[changed]], axis=1)
    if not table["error"].astype(bool).any():
        table = table.drop(columns="error")
    counts = table.loc[table["kind"] == "experiment", "state"].value_counts()
    states = ", ".join(f"{counts[s]} {s}" for s in (*STATES, *sorted(set(counts.index) - set(STATES))) if s in counts)
    table.attrs["message"] = (
        f"{n_exp} experiment(s) ({states}) beside {len(records)} baseline row(s); "
        f"params that differ: {', '.join(changed) if changed else 'none'}"
    )
    table.attrs["failed"] = False
    return table


def _dvc(args: list[str], repo: Path, timeout: float) -> subprocess.CompletedProcess | str:
    """``dvc ARGS`` in ``repo`` as ``python -m dvc`` of this environment; a message when it could not run."""
    cmd = [sys.executable, "-m", "dvc", *args]
    try:
        return subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`dvc {' '.join(args)}` could not run in {repo}: {type(e).__name__}: {e}"


def queue_workers(repo_dir: str | os.PathLike = paths.ROOT, timeout: float = 120) -> str:
    """The worker line of ``dvc queue status`` (``Worker status: 2 active, 0 idle``), or "" when it gives none."""
    proc = _dvc(["queue", "status"], paths.resolve(repo_dir), timeout)
    if isinstance(proc, str) or proc.returncode != 0:
        return ""
    return next((line.strip() for line in proc.stdout.splitlines() if line.startswith("Worker status:")), "")


def _queue_hints(table: pd.DataFrame, workers: str) -> list[str]:
    """What a person needs to know about the queue: why a run failed, whether queued runs will start."""
    hints = []
    exps = table[table["kind"] == "experiment"]
    failed = exps.loc[exps["state"] == "failed", "experiment"].tolist()
    if failed:
        hints.append(f"why a run failed: {'; '.join(f'dvc queue logs {name}' for name in failed)}")
    if (exps["state"] == "queued").any():
        active = re.match(r"Worker status: (\d+) active, (\d+) idle", workers)
        if shutil.which("dvc") is None:
            hints.append(
                "DVC's queue workers start `dvc` from PATH, where there is none: activate the environment "
                "(source .venv/bin/activate), then dvc queue start -j 2"
            )
        elif active and active.group(1) == active.group(2) == "0":
            hints.append("no queue worker runs: start them with dvc queue start -j 2 (two experiments at a time)")
    return hints


def experiments_table(repo_dir: str | os.PathLike = paths.ROOT, timeout: float = 300) -> pd.DataFrame:
    """``dvc exp show --json`` of ``repo_dir`` as a table (see ``experiments_frame``), its message ending
    with the queue's workers (``dvc queue status``) and what to run next when a queued experiment waits
    for a worker or one failed.

    DVC runs as ``python -m dvc`` of this Python environment. When DVC is not installed, ``repo_dir``
    is not in a DVC repository or DVC fails, the table is empty, ``attrs["failed"]`` is true and
    ``attrs["message"]`` says why; with no experiment it is empty and says how to run one.
    """
    repo = paths.resolve(repo_dir)
    if importlib.util.find_spec("dvc") is None:
        return _empty(
            f"DVC is not installed in this Python environment ({sys.executable}): `make install` installs it "
            "with the project (or pip install dvc)",
            failed=True,
        )
    if not any((folder / ".dvc").is_dir() for folder in (repo, *repo.parents)):
        return _empty(
            f"{repo} is not inside a DVC repository (no .dvc folder there or above): run this in the project's clone",
            failed=True,
        )
    proc = _dvc(["exp", "show", "--json"], repo, timeout)
    if isinstance(proc, str):
        return _empty(proc, failed=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        return _empty(f"`dvc exp show` failed in {repo} (exit {proc.returncode}): {last}", failed=True)
    try:
        records = json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        return _empty(
            f"`dvc exp show --json` in {repo} printed no JSON ({e}); run it in a terminal to see why", failed=True
        )
    table = experiments_frame(records)
    if table.empty:
        return table
    workers = queue_workers(repo, timeout)
    notes = [
        f"queue workers: {workers.removeprefix('Worker status: ')}" if workers else "",
        *_queue_hints(table, workers),
    ]
    table.attrs["message"] = "; ".join([table.attrs["message"], *filter(None, notes)])
    return table


# --------------------------------------------------------------------------------------------
# Metrics by slice
# --------------------------------------------------------------------------------------------


def read_predictions(eval_reports: str | os.PathLike) -> pd.DataFrame:
    """``predictions.csv`` of an evaluation folder, text columns kept as text (empty, not NaN)."""
    return pd.read_csv(
        paths.resolve(eval_reports) / "predictions.csv",
        dtype={"group": str, "path": str, "source": str},
        keep_default_na=False,
    )


def _labels(values: pd.Series) -> pd.Series:
    """Slice labels: categories kept in their order, anything else as stripped text, missing as ``unknown``."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values
    text = values.astype("string").fillna("").str.strip()
    return text.mask(text == "", UNKNOWN)


def _set_on_fakes_only(preds: pd.DataFrame, by: str) -> bool:
    """Whether ``by`` has values on fakes and none on reals (the kind of fake)."""
    given = preds[by].astype("string").fillna("").str.strip() != ""
    fake = preds["target"] == 1
    return bool(given[fake].any() and not given[~fake].any())


def _scores(part: pd.DataFrame) -> dict[str, Any]:
    y = part["target"].to_numpy(int)
    called = (part["predicted"] == "fake").to_numpy()
    n_fake = int(y.sum())
    both = 0 < n_fake < len(y)
    return {
        "n": len(y),
        "n_real": len(y) - n_fake,
        "n_fake": n_fake,
        "roc_auc": float(roc_auc_score(y, part["score"])) if both else math.nan,
        "accuracy": float((called == (y == 1)).mean()) if len(y) else math.nan,
        "recall": float(called[y == 1].mean()) if n_fake else math.nan,
    }


def slice_metrics(preds: pd.DataFrame, by: str) -> pd.DataFrame:
    """n, ROC-AUC, accuracy and recall of each value of column ``by`` of ``predictions.csv``.

    A column set only on fakes (the kind of fake, ``metrics.kind_column``) scores each kind's
    fakes against all reals, as ``metrics.per_kind`` does; any other column splits the rows.
    Accuracy and recall (fakes called fake) are at the operating point (the ``predicted``
    column); the AUC is NaN in a slice without both classes, the recall in one without fakes.

    Returns:
        One row per slice: ``by``, n, n_real, n_fake, roc_auc, accuracy, recall.
    """
    if by not in preds.columns:
        raise KeyError(f"predictions have no column {by!r}; columns: {', '.join(preds.columns)}")
    labels = _labels(preds[by])
    rows = []
    if _set_on_fakes_only(preds, by):
        reals = preds[preds["target"] == 0]
        for kind in sorted(set(labels[preds["target"] == 1])):
            part = pd.concat([reals, preds[(preds["target"] == 1) & (labels == kind)]])
            rows.append({by: kind, **_scores(part)})
    else:
        for value, part in preds.groupby(labels, observed=True, sort=True):
            rows.append({by: value, **_scores(part)})
    return pd.DataFrame(rows, columns=[by, "n", "n_real", "n_fake", "roc_auc", "accuracy", "recall"])


def size_bins(pixels: pd.Series, edges: tuple[int, ...] | list[int] = SIZE_EDGES) -> pd.Series:
    """Bins of the image side (square root of the pixel count): ``< 128 px``, ``128-255 px``... ``unknown``."""
    edges = sorted(int(e) for e in edges)
    bounds = [0, *edges, math.inf]
    names = [f"< {edges[0]} px"] if edges else []
    names += [f"{lo}-{hi - 1} px" for lo, hi in zip(edges, edges[1:])]
    names += [f">= {edges[-1]} px"] if edges else ["all sizes"]
    side = np.sqrt(pixels.astype(float))
    bins = pd.cut(side, bounds, right=False, labels=names)
    return bins.cat.add_categories([UNKNOWN]).fillna(UNKNOWN)


def with_image_size(
    preds: pd.DataFrame, raw_dir: str | os.PathLike, edges: tuple[int, ...] | list[int] = SIZE_EDGES
) -> pd.DataFrame:
    """``preds`` with ``pixels`` (width x height of the original file, its ``source`` under ``raw_dir``;
    NaN when it cannot be read) and ``size`` (``size_bins`` of it)."""
    root = paths.resolve(raw_dir)
    sources = preds["source"].astype(str)
    pixels = {s: file_properties(Path(s) if Path(s).is_absolute() else root / s)["pixels"] for s in sources.unique()}
    out = preds.assign(pixels=sources.map(pixels).astype(float))
    missing = int(out["pixels"].isna().sum())
    if missing:
        log.warning(
            f"{missing} of {len(out)} originals unreadable under {paths.shown(root)}: their size is {UNKNOWN!r}"
        )
    return out.assign(size=size_bins(out["pixels"], edges))


# --------------------------------------------------------------------------------------------
# Confident mistakes and their Grad-CAM
# --------------------------------------------------------------------------------------------


def mistakes_table(preds: pd.DataFrame, k: int = 6) -> pd.DataFrame:
    """The ``k`` most confident false positives and false negatives (``plots.confident_mistakes``), one table."""
    fp, fn = confident_mistakes(preds, k)
    table = pd.concat([fp.assign(mistake="false positive"), fn.assign(mistake="false negative")])
    first = ["mistake", "path", "group", "label", "score"]
    return table[[c for c in first if c in table.columns] + [c for c in table.columns if c not in first]]


@dataclass
class ExplainedMistake:
    """A confident mistake scored again by the predictor, with its Grad-CAM.

    Attributes:
        row: its row of ``predictions.csv``.
        mistake: ``false positive`` or ``false negative``.
        prediction: the predictor's verdict (the evaluation's, up to float rounding).
        cam: Grad-CAM of the predicted class.
        crop: (S, S, 3) uint8 network input.
    """

    row: dict[str, Any]
    mistake: str
    prediction: Prediction
    cam: GradCam
    crop: np.ndarray


@dataclass
class MistakeCams:
    """Explained mistakes and a message: what was explained, or why nothing was."""

    items: list[ExplainedMistake]
    message: str


def explain_mistakes(
    preds: pd.DataFrame,
    raw_dir: str | os.PathLike,
    checkpoint: str | os.PathLike,
    calibration_file: str | os.PathLike | None = None,
    k: int = 4,
    device: str = "cpu",
) -> MistakeCams:
    """Grad-CAMs of the ``k`` most confident false positives and false negatives.

    Each original (``source`` under ``raw_dir``) goes through ``Predictor.explain``, as in the
    demo widget. Without the checkpoint the result holds no item and a message saying what to
    run; originals that cannot be read or hold no face are listed in the message.
    """
    ckpt = paths.resolve(checkpoint)
    if not ckpt.is_file():
        return MistakeCams(
            [],
            f"No model at {paths.shown(ckpt)}, so no Grad-CAM: fetch it with `dvc pull` or train it with "
            "`dvc repro train`; the tables above need only predictions.csv.",
        )
    cfg = PredictConfig(calibration_file=str(paths.resolve(calibration_file))) if calibration_file else None
    predictor = get_predictor(ckpt, device, cfg)
    root = paths.resolve(raw_dir)
    fp, fn = confident_mistakes(preds, k)
    items, skipped = [], []
    for mistake, rows in (("false positive", fp), ("false negative", fn)):
        for row in rows.to_dict("records"):
            source = Path(str(row["source"]))
            if str(row.get("video", "") or "") not in ("", "nan"):
                skipped.append(f"{source} (a video frame)")
                continue
            try:
                pred, cam, prep = predictor.explain(source if source.is_absolute() else root / source)
            except InputError as e:
                skipped.append(f"{source} ({type(e).__name__}: {e})")
                continue
            items.append(ExplainedMistake(row, mistake, pred, cam, prep.crop))
    message = (
        f"Grad-CAM of {len(items)} confident mistakes with {paths.shown(ckpt)} (originals from {paths.shown(root)})"
    )
    if skipped:
        message += f"; not explained: {'; '.join(skipped)}"
    return MistakeCams(items, message)


def mistakes_figure(items: list[ExplainedMistake]) -> Figure:
    """Each mistake as a column: the network input (top) and the Grad-CAM of the predicted class (bottom)."""
    cols = max(len(items), 1)
    fig = Figure(figsize=(1.55 * cols + 0.5, 4.2), layout="constrained")
    axes = np.atleast_2d(fig.subplots(2, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for c, item in enumerate(items):
        row = item.row
        kind = str(row.get("manipulation", "") or "")
        axes[0, c].imshow(item.crop)
        axes[0, c].set_title(
            f"{'FP' if item.mistake == 'false positive' else 'FN'} p(fake) {item.prediction.probability:.3f}\n"
            f"{Path(str(row['source'])).name[:22]}\n{row.get('group', '')}{' · ' + kind if kind else ''}",
            fontsize=7,
        )
        axes[1, c].imshow(item.cam.overlay)
        axes[1, c].set_title(f"evidence for {item.cam.target}", fontsize=7)
    axes[0, 0].set_ylabel("network input", fontsize=8)
    axes[1, 0].set_ylabel("Grad-CAM", fontsize=8)
    if items:  # one scale for the row: each map shows the evidence for its (wrong) verdict
        add_colorbar(fig, list(axes[1, :]), target="the verdict")
    layer = items[0].cam.layer if items else "none"
    fig.suptitle(f"most confident mistakes and the evidence for the wrong verdict (Grad-CAM of {layer})", fontsize=9)
    return fig
