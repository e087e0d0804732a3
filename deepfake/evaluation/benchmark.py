"""The benchmark table: a detector's ROC-AUC within its training dataset and across others.

The table every deepfake-detection paper prints (FaceForensics++, SBI, DeepfakeBench): one row per
detector; columns per test set (the training set's own test split, overall and per kind of fake,
then each cross-dataset test set: Celeb-DF v2, DFDC, DFDC preview, ...), each at the frame level
and at the video level. ``collect`` reads what the evaluate stage (``reports/eval/details.json``)
and the cross-dataset stages (``reports/cross/<name>/details.json``) measured into one long table,
a row per (test set, subset, level) with the ROC-AUC, its group-bootstrap interval, AP, EER and
the counts; ``wide_table`` lays it out as papers do, ``figure`` draws it with the intervals, and
``write_benchmark`` writes ``table.csv`` (the long table), ``table.md`` and the figure.

Nothing is computed here that the stages did not measure: a number missing from a stage's
details (no videos in a dataset, a bootstrap switched off) stays empty in the table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..core.utils import atomic_path
from ..data.layouts import DATASET_NAMES
from .plots import save

#: The columns of the long table (``table.csv``).
COLUMNS = [
    "detector",
    "test_set",
    "subset",
    "level",
    "roc_auc",
    "roc_auc_low",
    "roc_auc_high",
    "average_precision",
    "eer",
    "n",
    "n_real",
    "n_fake",
]
#: The name of the whole test set in ``subset`` (kinds of fake have their own rows).
OVERALL = "overall"
#: How the field's tables name the benchmark datasets, by the name their adapter records in the
#: face cache's ``dataset`` column (``deepfake.data.layouts.DATASET_NAMES``).
_SHORT = {"ffpp": "FF++", "celebdf": "CDF-v2", "dfdc": "DFDC", "dfdcp": "DFDCP"}
DISPLAY_NAMES = {DATASET_NAMES[key]: short for key, short in _SHORT.items()}


def _rows(detector: str, test_set: str, details: Mapping[str, Any]) -> list[dict]:
    """The rows of one test set from a stage's ``details.json``."""
    ci = details.get("ci") or {}
    rows = [
        {
            "detector": detector,
            "test_set": test_set,
            "subset": OVERALL,
            "level": "frame",
            "roc_auc": details.get("roc_auc"),
            "roc_auc_low": ci.get("roc_auc_low"),
            "roc_auc_high": ci.get("roc_auc_high"),
            "average_precision": details.get("average_precision"),
            "eer": details.get("eer"),
            "n": details.get("n"),
            "n_real": _sum(details, "tn", "fp"),
            "n_fake": _sum(details, "tp", "fn"),
        }
    ]
    for k in (details.get("per_kind") or {}).get("kinds", []):
        rows.append(
            {
                "detector": detector,
                "test_set": test_set,
                "subset": k["kind"],
                "level": "frame",
                "roc_auc": k.get("roc_auc"),
                "n": (k.get("n") or 0) + (k.get("n_real") or 0),
                "n_real": k.get("n_real"),
                "n_fake": k.get("n"),
            }
        )
    video = details.get("video_level") or {}
    if video.get("applicable"):
        vci = video.get("ci") or {}
        rows.append(
            {
                "detector": detector,
                "test_set": test_set,
                "subset": OVERALL,
                "level": "video",
                "roc_auc": video.get("roc_auc_mean"),
                "roc_auc_low": vci.get("roc_auc_mean_low"),
                "roc_auc_high": vci.get("roc_auc_mean_high"),
                "average_precision": video.get("average_precision_mean"),
                "eer": video.get("eer_mean"),
                "n": video.get("n_videos"),
                "n_real": video.get("n_real_videos"),
                "n_fake": video.get("n_fake_videos"),
            }
        )
        for k in video.get("per_kind") or []:
            rows.append(
                {
                    "detector": detector,
                    "test_set": test_set,
                    "subset": k["kind"],
                    "level": "video",
                    "roc_auc": k.get("roc_auc"),
                    "n": (k.get("n") or 0) + (k.get("n_real") or 0),
                    "n_real": k.get("n_real"),
                    "n_fake": k.get("n"),
                }
            )
    return rows


def _sum(details: Mapping[str, Any], *keys: str) -> int | None:
    values = [details.get(k) for k in keys]
    return None if any(v is None for v in values) else int(sum(values))  # type: ignore[arg-type]


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the stage that writes it first (dvc repro)")
    return json.loads(path.read_text())


def detector_name(details: Mapping[str, Any]) -> str:
    """A detector's name for the table: its architecture and where its weights came from."""
    arch = str(details.get("arch") or "model")
    weights = str(details.get("weights_used") or "")
    init = "random init" if weights.startswith("none") else weights
    return f"{arch} ({init})" if init else arch


def collect(
    eval_dir: str | os.PathLike,
    cross_dirs: Mapping[str, str | os.PathLike],
    train_set: str,
    detector: str | None = None,
) -> pd.DataFrame:
    """The long table: the evaluate stage's test split (named ``train_set``, "(test)" added) and
    each cross-dataset stage's results (``cross_dirs``: test-set name -> its reports folder).

    Args:
        eval_dir: the evaluate stage's reports (``details.json``).
        cross_dirs: the cross-dataset stages' reports folders, by the name the table gives them.
        train_set: the training dataset's name.
        detector: the row's name (default: ``detector_name`` of the evaluation's details).
    """
    details = _read(Path(eval_dir) / "details.json")
    detector = detector or detector_name(details)
    rows = _rows(detector, f"{train_set} (test)", details)
    for name, folder in cross_dirs.items():
        rows += _rows(detector, name, _read(Path(folder) / "details.json"))
    return pd.DataFrame(rows, columns=COLUMNS)


def _cell(row: pd.Series) -> str:
    if pd.isna(row["roc_auc"]):
        return "–"
    text = f"{row['roc_auc']:.3f}"
    if pd.notna(row["roc_auc_low"]) and pd.notna(row["roc_auc_high"]):
        text += f" ({row['roc_auc_low']:.3f}–{row['roc_auc_high']:.3f})"
    return text


def wide_table(long: pd.DataFrame) -> pd.DataFrame:
    """Papers' layout: a row per detector; a column per (test set, subset, level) holding
    "AUC (low–high)", test sets in the order of ``long``, each set's overall column first."""
    if long.empty:
        return pd.DataFrame()
    long = long.reset_index(drop=True)
    order = {(r.test_set, r.subset, r.level): i for i, r in long.iterrows()}
    keys = sorted(
        order,
        key=lambda k: (
            min(order[o] for o in order if o[0] == k[0]),  # test sets as listed
            k[1] != OVERALL,
            min(order[o] for o in order if o[:2] == k[:2]),
            k[2] != "frame",
        ),
    )
    table = {}
    for key in keys:
        sel = long[(long["test_set"] == key[0]) & (long["subset"] == key[1]) & (long["level"] == key[2])]
        name = f"{key[0]} {key[2]} AUC" if key[1] == OVERALL else f"{key[0]} {key[1]} {key[2]} AUC"
        table[name] = {r["detector"]: _cell(r) for _, r in sel.iterrows()}
    out = pd.DataFrame(table)
    out.index.name = "detector"
    return out


def markdown(wide: pd.DataFrame) -> str:
    """The wide table as a GitHub Markdown table (ROC-AUC with its 95% group-bootstrap interval)."""
    if wide.empty:
        return "No results.\n"
    head = ["detector", *wide.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for detector, row in wide.iterrows():
        lines.append("| " + " | ".join([str(detector), *(str(v) if pd.notna(v) else "–" for v in row)]) + " |")
    return "\n".join(lines) + "\n"


def figure(long: pd.DataFrame) -> plt.Figure:
    """ROC-AUC per test set (overall, frame and video level; kinds of fake as smaller points), with
    the intervals as error bars and chance (0.5) marked."""
    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * long["test_set"].nunique() + 2), 3.6))
    sets = list(dict.fromkeys(long["test_set"]))
    offsets = {"frame": -0.12, "video": 0.12}
    colours = {"frame": "#4C72B0", "video": "#DD8452"}
    for level, dx in offsets.items():
        sel = long[(long["level"] == level) & (long["subset"] == OVERALL) & long["roc_auc"].notna()]
        if sel.empty:
            continue
        x = np.array([sets.index(s) for s in sel["test_set"]]) + dx
        y = sel["roc_auc"].to_numpy(float)
        lo = sel["roc_auc_low"].to_numpy(float)
        hi = sel["roc_auc_high"].to_numpy(float)
        err = np.vstack([np.where(np.isnan(lo), 0, y - lo), np.where(np.isnan(hi), 0, hi - y)])
        ax.errorbar(x, y, yerr=err, fmt="o", capsize=3, color=colours[level], label=f"{level} level")
        kinds = long[(long["level"] == level) & (long["subset"] != OVERALL) & long["roc_auc"].notna()]
        if not kinds.empty:
            kx = np.array([sets.index(s) for s in kinds["test_set"]]) + dx
            ax.scatter(kx, kinds["roc_auc"], s=12, marker="_", color=colours[level], alpha=0.8)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xticks(range(len(sets)), sets, rotation=20, ha="right")
    ax.set_ylim(0.0, 1.02)
    ax.set_ylabel("ROC-AUC")
    detectors = ", ".join(dict.fromkeys(long["detector"]))
    ax.set_title(
        f"{detectors}: ROC-AUC per test set (95% group-bootstrap intervals; dashes: kinds of fake)", fontsize=8
    )
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def write_table_outputs(
    table: pd.DataFrame, text: str, fig: plt.Figure, out_dir: str | os.PathLike, figure_name: str
) -> dict[str, Path]:
    """Write a results table as ``table.csv`` (every number), its Markdown ``text`` as ``table.md`` and
    ``fig`` as ``figure_name`` (PNG, with an SVG beside it) under ``out_dir``, each atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"table": out / "table.csv", "markdown": out / "table.md"}
    with atomic_path(written["table"]) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(written["markdown"]) as tmp:
        Path(tmp).write_text(text)
    written["figure"] = save(fig, out / figure_name)
    plt.close(fig)
    return written


def write_benchmark(long: pd.DataFrame, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``table.csv`` (the long table), ``table.md`` (papers' layout) and ``benchmark.png/svg``."""
    return write_table_outputs(long, markdown(wide_table(long)), figure(long), out_dir, "benchmark.png")
