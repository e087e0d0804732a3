"""What ``python -m deepfake predict`` and ``info`` print: CSV, a table, and the health check."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from ..core import paths
from ..core.utils import resolve_device
from ..metrics.calibration import Calibration, CalibrationMismatchError
from .predict import (
    DEFAULT_CALIBRATION,
    DEFAULT_CHECKPOINT,
    PredictConfig,
    Prediction,
    PredictionError,
    Predictor,
    VideoPrediction,
)

CSV_COLUMNS = (
    "source",
    "label",
    "probability",
    "logit",
    "box_x",
    "box_y",
    "box_w",
    "box_h",
    "frames",
    "total_ms",
    "error",
)


def _row(r: Prediction | VideoPrediction | PredictionError) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(CSV_COLUMNS, "")
    row["source"] = r.source
    if isinstance(r, PredictionError):
        row["error"] = r.error
        return row
    row.update(label=r.label, probability=f"{r.probability:.6f}", total_ms=f"{r.timing_ms.get('total', 0):.1f}")
    if isinstance(r, Prediction):
        row["logit"] = f"{r.logit:.6f}"
        if r.box:
            row.update(zip(("box_x", "box_y", "box_w", "box_h"), r.box))
    else:
        row["frames"] = len(r.frames)
    return row


def predictions_csv(results: Sequence[Prediction | VideoPrediction | PredictionError]) -> str:
    """One CSV row per input (videos: the video verdict and the number of frames scored)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(_row(r) for r in results)
    return buf.getvalue()


def predictions_table(results: Sequence[Prediction | VideoPrediction | PredictionError], threshold: float) -> str:
    """Aligned plain-text table of verdicts, with a count per label."""
    rows = [_row(r) for r in results]
    width = max([len(r["source"]) for r in rows] + [6])
    lines = [f"{'source':<{width}}  label  p(fake)  face box"]
    for r in rows:
        if r["error"]:
            lines.append(f"{r['source']:<{width}}  ERROR  {r['error']}")
            continue
        box = (
            f"{r['box_x']},{r['box_y']},{r['box_w']},{r['box_h']}"
            if r["box_w"] != ""
            else ("whole image" if not r["frames"] else f"video, {r['frames']} frames")
        )
        lines.append(f"{r['source']:<{width}}  {r['label']:<5}  {float(r['probability']):.4f}   {box}")
    labels = [r["label"] for r in rows if not r["error"]]
    lines.append(
        f"{labels.count('fake')} fake, {labels.count('real')} real, {len(rows) - len(labels)} unreadable "
        f"(threshold {threshold:.3f} on the fake probability)"
    )
    return "\n".join(lines)


def health(
    checkpoint: str | os.PathLike = DEFAULT_CHECKPOINT,
    device: str = "auto",
    calibration_file: str | os.PathLike = DEFAULT_CALIBRATION,
) -> tuple[dict[str, Any], bool]:
    """Versions, device, whether a trained model is present and loads, and whether its calibration file
    belongs to it (``describe_calibration``); ``ok`` when the model loads and the calibration is usable."""
    import platform
    from importlib import metadata

    import PIL
    import torchvision

    from .. import __version__

    info: dict[str, Any] = {
        "deepfake": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "opencv": cv2.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
    }
    try:
        info["ipywidgets"] = metadata.version("ipywidgets")
    except metadata.PackageNotFoundError:
        info["ipywidgets"] = "not installed"
    try:
        dev = resolve_device(device)
        info["device"] = str(dev)
    except RuntimeError as e:
        dev, info["device"] = None, f"unavailable ({e})"
    info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"
    info["cpu_threads"] = torch.get_num_threads()
    path = paths.resolve(checkpoint)
    info["checkpoint"] = str(path)
    ok = False
    if not path.is_file():
        info["model"] = "absent: train one (dvc repro train) or pass --checkpoint"
    elif dev is None:
        info["model"] = "present, not loaded (no device)"
    else:
        try:
            p = Predictor(path, dev, PredictConfig(calibration_file=""))  # the calibration is checked below
            z = p.logits([np.zeros((p.image_size, p.image_size, 3), np.uint8)])
            if not np.isfinite(z).all():
                raise ValueError("the model outputs non-finite logits")
            info["model"] = (
                f"loads: {p.arch}, {p.image_size}x{p.image_size} input, epoch {p.meta.get('epoch')}, "
                f"val AUC {p.meta.get('val_auc')}"
            )
            info["preprocessing"] = p.describe_preprocessing()
            ok = True
        except ValueError as e:  # CheckpointError: the message names the file, the fault and the fix
            info["model"] = f"present but does not load: {e}"
        except Exception as e:  # report any failure to load as unhealthy, with its reason
            info["model"] = f"present but does not load: {type(e).__name__}: {e}"
    info["calibration"], calibration_ok = describe_calibration(calibration_file, path if path.is_file() else None)
    return info, ok and calibration_ok


def describe_calibration(calibration_file: str | os.PathLike, checkpoint: str | os.PathLike | None) -> tuple[str, bool]:
    """One line on the calibration file and whether it may be used with ``checkpoint``.

    A file fitted for another checkpoint, or unreadable, is not usable; one that records no
    checkpoint hash is usable but reported as unverified.
    """
    try:
        cal = Calibration.from_file(paths.resolve(calibration_file) if calibration_file else None, checkpoint)
    except CalibrationMismatchError as e:
        return f"refused: {e}", False
    except ValueError as e:
        return f"invalid: {e}", False
    if cal.source is None:
        return "none (temperature 1, threshold 0.5)", True
    line = f"{cal.source}: temperature {cal.temperature:g}, threshold {cal.threshold:g}"
    if cal.verified:
        return f"{line}, fitted for this checkpoint (SHA-256 matches)", True
    if cal.verified is False:
        return f"{line}; not verified: it records no checkpoint hash (re-run dvc repro evaluate to record it)", True
    return f"{line}; not checked (no checkpoint)", True
