"""Image perturbations for robustness tests: JPEG, blur, down-scaling, other input resolutions.

Each :class:`Perturbation` maps a decoded (H, W, 3) uint8 image to a perturbed one before
it is resized to the network input (``deepfake.data.inputs``), so the test split can be re-scored
under it without writing any file:

* ``jpeg`` (quality 1-95): re-encode with Pillow's JPEG encoder at that quality.
* ``blur`` (sigma in pixels of the image as stored): Gaussian blur.
* ``downscale`` (factor in (0, 1)): shrink by the factor (bilinear), then back to the stored
  size, losing the detail above the new Nyquist frequency.
* ``resize`` (side in pixels): the network sees the image at that input size instead of the
  training size (a scale shift; the models end with global pooling).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageFilter
from torch import nn

from ..core.progress import progress
from ..data.inputs import IMAGENET_MEAN, IMAGENET_STD
from ..metrics.calibration import calibrated
from ..metrics.classification import binary_metrics
from ..training.augment import jpeg_recompress
from ..training.scoring import score_frame

KINDS = ("none", "jpeg", "blur", "downscale", "resize")


@dataclass(frozen=True)
class Perturbation:
    """One perturbation at one level (``none`` is the clean reference)."""

    kind: str
    level: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown perturbation {self.kind!r}; use one of {KINDS}")
        lv = self.level
        if self.kind == "jpeg" and not 1 <= lv <= 100:
            raise ValueError(f"JPEG quality must be in [1, 100], got {lv}")
        if self.kind == "blur" and not lv > 0:
            raise ValueError(f"blur sigma must be positive, got {lv}")
        if self.kind == "downscale" and not 0 < lv < 1:
            raise ValueError(f"downscale factor must be in (0, 1), got {lv}")
        if self.kind == "resize" and not (lv >= 8 and float(lv).is_integer()):
            raise ValueError(f"resize size must be a whole number of pixels >= 8, got {lv}")

    @property
    def name(self) -> str:
        """Short identifier, e.g. ``jpeg_70``, ``blur_1.5``, ``clean``."""
        return "clean" if self.kind == "none" else f"{self.kind}_{self.level:g}"

    def input_size(self, default: int) -> int:
        """Side of the network input under this perturbation."""
        return int(self.level) if self.kind == "resize" else default

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """The perturbed copy of an (H, W, 3) uint8 RGB image (the image itself for ``none`` and ``resize``)."""
        if self.kind == "jpeg":  # the training augmentation's re-compression
            return jpeg_recompress(img, int(self.level))
        if self.kind == "blur":
            return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=float(self.level))))
        if self.kind == "downscale":
            h, w = img.shape[:2]
            im = Image.fromarray(img)
            small = im.resize((max(1, round(w * self.level)), max(1, round(h * self.level))), Image.Resampling.BILINEAR)
            return np.asarray(small.resize((w, h), Image.Resampling.BILINEAR))
        return img  # none, resize: the image itself is unchanged


def parse_levels(value: str | int | float | Iterable | None, kind: str) -> tuple[float, ...]:
    """Levels from a params value: ``"90,70,50"``, a single number, a list, or empty/None for none."""
    if value is None:
        return ()
    items: list[Any]
    if isinstance(value, (int, float)):
        items = [value]
    elif isinstance(value, str):
        items = [v for v in value.replace(";", ",").split(",") if v.strip()]
    else:
        items = list(value)
    try:
        levels = tuple(float(v) for v in items)
    except ValueError as e:
        raise ValueError(f"robustness levels for {kind!r} must be numbers separated by commas, got {value!r}") from e
    for lv in levels:
        Perturbation(kind, lv)  # validates the range
    return levels


def perturbation_grid(jpeg=(), blur=(), downscale=(), resize=()) -> list[Perturbation]:
    """The clean reference followed by every requested perturbation level, in the given order."""
    grid = [Perturbation("none")]
    for kind, levels in (("jpeg", jpeg), ("blur", blur), ("downscale", downscale), ("resize", resize)):
        grid += [Perturbation(kind, lv) for lv in parse_levels(levels, kind)]
    return grid


#: Columns of the robustness table.
ROBUSTNESS_COLUMNS = [
    "perturbation",
    "kind",
    "level",
    "input_size",
    "n",
    "roc_auc",
    "average_precision",
    "accuracy",
    "balanced_accuracy",
    "delta_auc",
    "error",
]


def robustness_table(
    model: nn.Module,
    frame: pd.DataFrame,
    root: str | os.PathLike,
    image_size: int,
    device: torch.device,
    perturbations: list[Perturbation],
    temperature: float,
    threshold: float,
    clean_logits: np.ndarray,
    batch_size: int = 64,
    num_workers: int = 0,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> pd.DataFrame:
    """Re-score ``frame`` under each perturbation with a fixed temperature and threshold.

    The clean reference reuses ``clean_logits``. A network input size the model cannot take
    is recorded in the ``error`` column instead of stopping the evaluation. ``mean`` and ``std``:
    the model's input normalisation.
    """
    y = frame["target"].to_numpy()
    rows, clean_auc = [], None
    bar = progress(total=len(perturbations) * len(frame), desc="robustness", unit="images")
    for pert in perturbations:
        size = pert.input_size(image_size)
        row = {
            "perturbation": pert.name,
            "kind": pert.kind,
            "level": pert.level,
            "input_size": size,
            "n": int(len(frame)),
            "error": "",
        }
        try:
            z = (
                clean_logits
                if pert.kind == "none"
                else score_frame(model, frame, root, size, device, batch_size, num_workers, pert, pert.name, mean, std)
            )
        except (RuntimeError, AssertionError) as e:  # a fixed-size head (or timm's patch embedding) fed another size
            rows.append({**row, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
            bar.update(len(frame))
            continue
        m = binary_metrics(y, calibrated(z, temperature), threshold)
        if pert.kind == "none":
            clean_auc = m["roc_auc"]
        rows.append({**row, **{k: m[k] for k in ("roc_auc", "average_precision", "accuracy", "balanced_accuracy")}})
        bar.update(len(frame))
    bar.close()
    table = pd.DataFrame(rows, columns=ROBUSTNESS_COLUMNS)
    for col in ("level", "roc_auc", "average_precision", "accuracy", "balanced_accuracy", "delta_auc"):
        table[col] = pd.to_numeric(table[col], errors="coerce")
    if clean_auc is not None:
        table["delta_auc"] = table["roc_auc"] - clean_auc
    return table
