"""Facial landmarks (dlib's 5- and 68-point shape predictors) and aligned crops.

``get_landmarker(n)`` locates ``n`` points inside a detected face box. The 5-point model marks
the two corners of each eye and the base of the nose; the 68-point model follows the iBUG
300-W scheme (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67). The 68-point
model was trained on iBUG 300-W, whose licence excludes commercial use; the 5-point model
carries no such restriction.

Landmarks are stored per crop in the cache manifest, in the crop's pixel coordinates
(``format_points`` / ``parse_points``), so later stages use them without detecting again.

Alignment (``alignment_matrix``): the similarity transform (rotation, uniform scale,
translation) that takes the two eye centres and the mouth centre (68 points) or the nose base
(5 points) to their mean positions in a face box (``TEMPLATE``), the box then enlarged by
the crop margin, so every aligned crop has its eyes level at the same height and distance.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .detect import FaceBox, import_dlib, load_dlib_model, model_file

#: Landmark counts ``preprocess.landmarks`` can name, and their dlib model files.
SHAPE_MODELS = {5: "shape_predictor_5_face_landmarks.dat", 68: "shape_predictor_68_face_landmarks.dat"}


class Landmarker:
    """Locates ``n`` landmarks (5 or 68) in a face box; one per thread (``get_landmarker``)."""

    def __init__(self, n: int) -> None:
        if n not in SHAPE_MODELS:
            raise ValueError(f"landmarks must be one of {sorted(SHAPE_MODELS)}, got {n!r}")
        dlib = import_dlib()
        self.n = n
        self._dlib = dlib
        self._predictor = load_dlib_model(dlib.shape_predictor, model_file(SHAPE_MODELS[n]))

    def locate(self, rgb: np.ndarray, box: FaceBox) -> np.ndarray:
        """``(n, 2)`` float32 landmark coordinates in ``rgb``'s pixels."""
        rect = self._dlib.rectangle(int(box.x), int(box.y), int(box.x + box.w - 1), int(box.y + box.h - 1))
        shape = self._predictor(np.ascontiguousarray(rgb), rect)
        return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


_local = threading.local()


def get_landmarker(n: int) -> Landmarker:
    """A per-thread ``Landmarker`` for ``n`` points, loaded once and kept."""
    cache = _local.__dict__.setdefault("landmarkers", {})
    if n not in cache:
        cache[n] = Landmarker(n)
    return cache[n]


def key_points(points: np.ndarray) -> np.ndarray:
    """``(3, 2)``: the image-left eye centre, the image-right eye centre, and the mouth centre
    (68 points) or the nose base (5 points)."""
    if len(points) == 68:
        return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[48:68].mean(0)])
    if len(points) == 5:  # dlib's order: 0-1 the image-right eye, 2-3 the image-left eye, 4 the nose base
        return np.stack([points[2:4].mean(0), points[0:2].mean(0), points[4]])
    raise ValueError(f"expected 5 or 68 landmarks, got {len(points)}")


def format_points(points: np.ndarray | None) -> str:
    """Landmarks as the manifest stores them: ``"x0 y0 x1 y1 ..."`` in crop pixels, one decimal."""
    if points is None:
        return ""
    return " ".join(f"{v:.1f}" for v in np.asarray(points, np.float64).reshape(-1))


def parse_points(text: Any) -> np.ndarray | None:
    """The ``(n, 2)`` float32 landmarks of a manifest cell (``format_points``), None when empty."""
    if text is None or (isinstance(text, float) and np.isnan(text)) or not str(text).strip():
        return None
    values = np.array(str(text).split(), np.float32)
    if len(values) % 2 or len(values) // 2 not in SHAPE_MODELS:
        raise ValueError(f"a landmarks cell must hold 5 or 68 x y pairs, got {len(values)} numbers")
    return values.reshape(-1, 2)
