"""One table across detectors: each network trained on the same split and scored on the same test split.

A row per detector (``detector_row``): its test ROC-AUC with the group-bootstrap interval, the
ROC-AUC of each kind of fake against all reals, its size (parameters), what its training cost
(images per second through the optimisation steps) and what it costs to use (single-image
latency, file to probability, exact and int8 where the int8 runtime compiles it, with the
largest probability change int8 brings on the timed images). ``write_comparison`` writes
``table.csv`` (every number), ``table.md`` (the table to read) and ``comparison.png``/``.svg``.
``deepfake.pipeline.compare`` trains and evaluates the detectors; nothing is measured here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .benchmark import write_table_outputs

#: The fixed columns of ``table.csv``; one ``auc_<kind>`` column per kind of fake follows ``ci_level``.
COLUMNS = [
    "detector",
    "arch",
    "weights_used",
    "image_size",
    "parameters",
    "epochs_run",
    "best_epoch",
    "val_roc_auc",
    "test_roc_auc",
    "test_roc_auc_low",
    "test_roc_auc_high",
    "ci_level",
    "test_images",
    "test_groups",
    "train_images_per_second",
    "latency_ms_exact",
    "latency_device",
    "latency_ms_int8",
    "int8_max_probability_change",
    "int8_note",
]
FIGURE = "comparison.png"


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def detector_row(
    detector: str,
    train_summary: Mapping[str, Any],
    train_timings: Mapping[str, Any],
    eval_metrics: Mapping[str, Any],
    int8: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A detector's row from what its training (summary, timings) and evaluation (metrics) measured.

    Args:
        detector: its name in the table.
        int8: ``latency_ms_median``, ``max_probability_change`` and ``note`` (why there is no int8
            number, when there is none).
    """
    ci = eval_metrics.get("ci") or {}
    kinds = (eval_metrics.get("per_kind") or {}).get("kinds") or []
    int8 = int8 or {}
    row: dict[str, Any] = {
        "detector": detector,
        "arch": train_summary.get("arch"),
        "weights_used": train_summary.get("weights_used"),
        "image_size": eval_metrics.get("image_size"),
        "parameters": train_summary.get("parameters"),
        "epochs_run": train_summary.get("epochs_run"),
        "best_epoch": train_summary.get("best_epoch"),
        "val_roc_auc": _num(train_summary.get("best_val_auc")),
        "test_roc_auc": _num(eval_metrics.get("roc_auc")),
        "test_roc_auc_low": _num(ci.get("roc_auc_low")),
        "test_roc_auc_high": _num(ci.get("roc_auc_high")),
        "ci_level": _num(ci.get("level")),
        "test_images": eval_metrics.get("n"),
        "test_groups": ci.get("n_groups"),
        "train_images_per_second": _num(train_timings.get("train_images_per_second")),
        "latency_ms_exact": _num(eval_metrics.get("latency_ms_median")),
        "latency_device": eval_metrics.get("device"),
        "latency_ms_int8": _num(int8.get("latency_ms_median")),
        "int8_max_probability_change": _num(int8.get("max_probability_change")),
        "int8_note": int8.get("note", ""),
    }
    for k in kinds:
        row[f"auc_{k['kind']}"] = _num(k.get("roc_auc"))
    return row


def comparison_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The rows as a frame: ``COLUMNS`` with the per-kind columns after the test interval."""
    table = pd.DataFrame(list(rows))
    kinds = sorted({c for r in rows for c in r if c.startswith("auc_")})
    at = COLUMNS.index("ci_level") + 1
    columns = [*COLUMNS[:at], *kinds, *COLUMNS[at:]]
    return table.reindex(columns=columns)


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _auc_cell(row: pd.Series) -> str:
    text = _fmt(row["test_roc_auc"], ".3f")
    if pd.notna(row["test_roc_auc_low"]) and pd.notna(row["test_roc_auc_high"]):
        text += f" ({row['test_roc_auc_low']:.3f}–{row['test_roc_auc_high']:.3f})"
    return text


def _int8_cell(row: pd.Series) -> str:
    if pd.isna(row["latency_ms_int8"]):
        return "n/a (see int8_note)" if row.get("int8_note") else "–"
    change = row["int8_max_probability_change"]
    return f"{row['latency_ms_int8']:.1f}" + (f" (Δp ≤ {change:.3f})" if pd.notna(change) else "")


def markdown(table: pd.DataFrame) -> str:
    """The table to read: a row per detector, ROC-AUC with its 95% group-bootstrap interval."""
    if table.empty:
        return "No detectors.\n"
    kinds = [c for c in table.columns if c.startswith("auc_")]
    levels = table["ci_level"].dropna()
    ci = f"{100 * levels.iloc[0]:g}% CI" if len(levels) else "no interval: bootstrap off"
    head = [
        "detector",
        "parameters",
        "input",
        f"test ROC-AUC ({ci})",
        *[f"AUC {k.removeprefix('auc_')}" for k in kinds],
        "train images/s",
        "latency ms (exact)",
        "latency ms (int8)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        params = r["parameters"]
        cells = [
            str(r["detector"]),
            f"{params / 1e6:.2f}M" if pd.notna(params) else "–",
            f"{int(r['image_size'])} px" if pd.notna(r["image_size"]) else "–",
            _auc_cell(r),
            *[_fmt(r[k], ".3f") for k in kinds],
            _fmt(r["train_images_per_second"], ".1f"),
            _fmt(r["latency_ms_exact"], ".1f"),
            _int8_cell(r),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {r['detector']}: {r['int8_note']}" for _, r in table.iterrows() if r.get("int8_note")]
    return "\n".join(lines) + "\n" + ("\nint8:\n" + "\n".join(notes) + "\n" if notes else "")


def figure(table: pd.DataFrame) -> plt.Figure:
    """Left: test ROC-AUC per detector with its interval (kinds of fake as dashes); right: ROC-AUC
    against single-image latency (exact: filled; int8: open), marker area by parameters."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.45 * len(table) + 2.6))
    names = list(table["detector"])
    y = np.arange(len(names))
    auc = table["test_roc_auc"].to_numpy(float)
    lo = table["test_roc_auc_low"].to_numpy(float)
    hi = table["test_roc_auc_high"].to_numpy(float)
    err = np.vstack([np.where(np.isnan(lo), 0, auc - lo), np.where(np.isnan(hi), 0, hi - auc)])
    left.errorbar(auc, y, xerr=err, fmt="o", capsize=3, color="#4C72B0", label="test (95% CI)")
    for k in [c for c in table.columns if c.startswith("auc_")]:
        left.scatter(table[k].to_numpy(float), y, marker="|", s=60, alpha=0.7, label=k.removeprefix("auc_"))
    left.axvline(0.5, color="grey", lw=0.8, ls=":")
    left.set_yticks(y, names)
    left.invert_yaxis()
    left.set_xlim(0.0, 1.02)
    left.set_xlabel("ROC-AUC")
    left.set_title("test ROC-AUC (bars: group-bootstrap interval; dashes: kinds of fake)", fontsize=8)
    left.legend(fontsize=6, loc="lower left")
    params = table["parameters"].to_numpy(float)
    size = 20 + 180 * np.sqrt(np.nan_to_num(params) / max(np.nanmax(params), 1))
    for column, filled, label in (("latency_ms_exact", True, "exact"), ("latency_ms_int8", False, "int8")):
        x = table[column].to_numpy(float)
        ok = ~np.isnan(x) & ~np.isnan(auc)
        if ok.any():
            right.scatter(
                x[ok],
                auc[ok],
                s=size[ok],
                facecolors="#DD8452" if filled else "none",
                edgecolors="#DD8452",
                label=label,
            )
    for name, x, a in zip(names, table["latency_ms_exact"].to_numpy(float), auc):
        if not (np.isnan(x) or np.isnan(a)):
            right.annotate(name, (x, a), textcoords="offset points", xytext=(4, 4), fontsize=7)
    right.set_xscale("log")
    right.set_xlabel("single-image latency, file to probability (ms, log scale)")
    right.set_ylabel("test ROC-AUC")
    right.set_title("accuracy against cost (marker area: parameters)", fontsize=8)
    if right.has_data():
        right.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def write_comparison(table: pd.DataFrame, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``table.csv`` (every number), ``table.md`` and ``comparison.png``/``.svg`` under ``out_dir``."""
    return write_table_outputs(table, markdown(table), figure(table), out_dir, FIGURE)
