"""Video-level results: frames grouped into videos, scored by their mean and maximum.

A dataset's frames belong to a video when the cache manifest has a ``video`` column (the
preprocess stage writes one for every sampled frame), or when every group holds frames of a
single class. The video's label is fake when any of its frames is; its score is the mean
(and, reported too, the maximum) of its frames' calibrated probabilities, as the predictor
scores a video.

The video-level numbers the field reports (ROC-AUC of the mean score, with a bootstrap interval
that resamples whole groups: a fake and the videos it was made from are one group; EER; AP; the
number of videos; and per kind of fake, each kind's fake videos against every real video) come
from ``video_metrics``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .classification import binary_metrics, group_bootstrap_ci, per_kind

#: Columns of the per-video table (empty when the data has no videos): ``group`` is the video's
#: group (its identity or source videos), ``kind`` its kind of fake ("" for reals and unknown).
VIDEO_COLUMNS = ["video", "label", "target", "group", "kind", "n_frames", "score_mean", "score_max"]


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


def video_table(preds: pd.DataFrame, unit: str, kind: str | None = None) -> pd.DataFrame:
    """Per video: label (fake when any frame is fake), group and kind of fake (its first frame's),
    frame count, mean and max calibrated score. ``kind`` names the column of the kind of fake."""
    rows = preds[preds[unit].astype(str) != ""]
    g = rows.groupby(unit, sort=True)
    kinds = g[kind].first().fillna("").astype(str).to_numpy() if kind and kind in rows.columns else ""
    out = pd.DataFrame(
        {
            "video": list(g.groups),
            "target": g["target"].max().to_numpy(),
            "group": g["group"].first().astype(str).to_numpy(),
            "kind": kinds,
            "n_frames": g.size().to_numpy(),
            "score_mean": g["score"].mean().round(6).to_numpy(),
            "score_max": g["score"].max().round(6).to_numpy(),
        }
    )
    out.insert(1, "label", np.where(out["target"] == 1, "fake", "real"))
    return out[VIDEO_COLUMNS]


def video_metrics(
    videos: pd.DataFrame,
    threshold: float,
    unit: str,
    reason: str,
    n_boot: int = 0,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Video-level AUC of the mean and of the max frame score, AP, EER and accuracy of the mean at
    ``threshold``; with ``n_boot`` replicates, the interval of the mean's AUC resampling whole
    groups (``ci``); per kind of fake (``per_kind``) when the videos have kinds."""
    mean_m = binary_metrics(videos["target"], videos["score_mean"], threshold)
    max_m = binary_metrics(videos["target"], videos["score_max"], threshold)
    out = {
        "applicable": True,
        "unit": unit,
        "note": reason,
        "n_videos": int(len(videos)),
        "n_real_videos": int((videos["target"] == 0).sum()),
        "n_fake_videos": int((videos["target"] == 1).sum()),
        "n_frames": int(videos["n_frames"].sum()),
        "roc_auc_mean": mean_m["roc_auc"],
        "roc_auc_max": max_m["roc_auc"],
        "average_precision_mean": mean_m["average_precision"],
        "eer_mean": mean_m["eer"],
        "accuracy_mean": mean_m["accuracy"],
        "balanced_accuracy_mean": mean_m["balanced_accuracy"],
    }
    groups = videos["group"] if "group" in videos.columns else videos["video"]
    if n_boot > 0 and len(videos):
        ci = group_bootstrap_ci(videos["target"], videos["score_mean"], groups.tolist(), threshold, n_boot, level, seed)
        out["ci"] = {
            "roc_auc_mean_low": ci["roc_auc_low"],
            "roc_auc_mean_high": ci["roc_auc_high"],
            "level": ci["level"],
            "n_boot": ci["n_boot"],
            "n_groups": ci["n_groups"],
            "unit": "group",
        }
    if "kind" in videos.columns and videos.loc[videos["target"] == 1, "kind"].astype(str).str.strip().ne("").any():
        out["per_kind"] = per_kind(videos["target"], videos["score_mean"], videos["kind"], threshold)
    return out
