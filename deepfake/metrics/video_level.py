"""Video-level results: frames grouped into videos, scored by their mean and maximum.

A dataset's frames belong to a video when the cache manifest has a ``video`` column (the
preprocess stage writes one for every sampled frame), or when every group holds frames of a
single class. The video's label is fake when any of its frames is; its score is the mean
(and, reported too, the maximum) of its frames' calibrated probabilities, as the predictor
scores a video.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .classification import binary_metrics

#: Columns of the per-video table (empty when the data has no videos).
VIDEO_COLUMNS = ["video", "label", "target", "n_frames", "score_mean", "score_max"]


def video_unit(frame: pd.DataFrame) -> tuple[str | None, str]:
    """The column that identifies videos in ``frame``, or None, with the reason.

    A ``video`` column is used when present (rows without a video are left out of the video
    level). Otherwise ``group`` is used when some group holds several frames and every group
    holds one class; groups that mix real and fake images are identities, not videos.
    """
    if "video" in frame.columns and (frame["video"].astype(str) != "").any():
        return "video", "frames grouped by the 'video' column"
    sizes = frame.groupby("group")["target"].agg(["size", "nunique"])
    if (sizes["size"] <= 1).all():
        return None, "no videos: every group holds a single image"
    if (sizes["nunique"] > 1).any():
        return None, (
            f"no videos: {int((sizes['nunique'] > 1).sum())} of {len(sizes)} groups hold both real and fake "
            "images (identities, not videos)"
        )
    return "group", "frames grouped by 'group' (each group holds frames of one class)"


def video_table(preds: pd.DataFrame, unit: str) -> pd.DataFrame:
    """Per video: label (fake when any frame is fake), frame count, mean and max calibrated score."""
    rows = preds[preds[unit].astype(str) != ""]
    g = rows.groupby(unit, sort=True)
    out = pd.DataFrame(
        {
            "video": list(g.groups),
            "target": g["target"].max().to_numpy(),
            "n_frames": g.size().to_numpy(),
            "score_mean": g["score"].mean().round(6).to_numpy(),
            "score_max": g["score"].max().round(6).to_numpy(),
        }
    )
    out.insert(1, "label", np.where(out["target"] == 1, "fake", "real"))
    return out[VIDEO_COLUMNS]


def video_metrics(videos: pd.DataFrame, threshold: float, unit: str, reason: str) -> dict:
    """Video-level AUC of the mean and of the max frame score, and accuracy of the mean at ``threshold``."""
    mean_m = binary_metrics(videos["target"], videos["score_mean"], threshold)
    max_m = binary_metrics(videos["target"], videos["score_max"], threshold)
    return {
        "applicable": True,
        "unit": unit,
        "note": reason,
        "n_videos": int(len(videos)),
        "n_frames": int(videos["n_frames"].sum()),
        "roc_auc_mean": mean_m["roc_auc"],
        "roc_auc_max": max_m["roc_auc"],
        "average_precision_mean": mean_m["average_precision"],
        "accuracy_mean": mean_m["accuracy"],
        "balanced_accuracy_mean": mean_m["balanced_accuracy"],
    }
