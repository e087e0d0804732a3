"""Face detection (OpenCV's bundled Haar cascade, no download) and margin-enlarged square crops."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

#: Crop enlargement around the detected box (the FaceForensics++ / DeepfakeBench convention).
DEFAULT_MARGIN = 1.3


@dataclass(frozen=True)
class FaceBox:
    """An axis-aligned face box in pixel coordinates of the image it was found in."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)


def _cascade_path(name: str) -> Path:
    data = getattr(cv2, "data", None)
    if data is None or not hasattr(data, "haarcascades"):
        raise RuntimeError(
            "this OpenCV build has no bundled Haar cascades (opencv-python-headless 5.x dropped them); "
            "install opencv-python-headless<5"
        )
    path = Path(data.haarcascades) / name
    if not path.is_file():
        raise RuntimeError(f"OpenCV's cascade file {path} is missing; reinstall opencv-python-headless<5")
    return path


@dataclass(frozen=True)
class DetectorConfig:
    """Haar-cascade settings.

    Attributes:
        cascade: file name inside ``cv2.data.haarcascades``.
        scale_factor: image-pyramid step of the cascade.
        min_neighbors: detections needed to keep a box (higher: fewer false faces).
        min_size_frac: smallest face side as a fraction of the shorter image side.
        max_side: images are downscaled to this longer side before detection (speed).
    """

    cascade: str = "haarcascade_frontalface_default.xml"
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size_frac: float = 0.1
    max_side: int = 640


class FaceDetector:
    """Finds faces in RGB uint8 images; one cascade per detector (not thread-safe, so one per thread)."""

    def __init__(self, cfg: DetectorConfig = DetectorConfig()) -> None:
        self.cfg = cfg
        self._cascade = cv2.CascadeClassifier(str(_cascade_path(cfg.cascade)))
        if self._cascade.empty():
            raise RuntimeError(f"OpenCV could not load the cascade {cfg.cascade}")

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        """All faces in ``rgb`` (H, W, 3) uint8, largest first."""
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
        h, w = rgb.shape[:2]
        scale = min(1.0, self.cfg.max_side / max(h, w))
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            gray = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        min_side = max(16, int(min(gray.shape) * self.cfg.min_size_frac))
        found = self._cascade.detectMultiScale(
            gray, scaleFactor=self.cfg.scale_factor, minNeighbors=self.cfg.min_neighbors, minSize=(min_side, min_side)
        )
        boxes = [FaceBox(*(int(round(v / scale)) for v in b)) for b in (found if len(found) else [])]
        return sorted(boxes, key=lambda b: b.area, reverse=True)

    def largest(self, rgb: np.ndarray) -> FaceBox | None:
        """The largest face, or None when no face is found."""
        boxes = self.detect(rgb)
        return boxes[0] if boxes else None


_local = threading.local()


#: Face detectors ``preprocess.detector`` can name.
DETECTORS = ("haar",)


def get_detector(name: str = "haar") -> FaceDetector:
    """A per-thread detector of kind ``name`` (``DETECTORS``); loading one costs ~20 ms, so it is kept."""
    if name not in DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; the detectors are {', '.join(DETECTORS)}")
    if not hasattr(_local, "detector"):
        _local.detector = FaceDetector()
    return _local.detector


def square_box(box: FaceBox, margin: float = DEFAULT_MARGIN) -> tuple[int, int, int]:
    """Centre and side of the square crop: the box's longer side enlarged by ``margin``."""
    side = int(round(max(box.w, box.h) * margin))
    return box.x + box.w // 2, box.y + box.h // 2, max(side, 1)


def crop_face(rgb: np.ndarray, box: FaceBox | None, size: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Square crop around ``box`` enlarged by ``margin``, resized to ``size`` x ``size``.

    Parts of the square outside the image are filled by replicating the border, so the face
    stays centred. With ``box=None`` the whole image is centre-cropped to a square instead.
    """
    h, w = rgb.shape[:2]
    if box is None:
        side = min(h, w)
        cx, cy = w // 2, h // 2
    else:
        cx, cy, side = square_box(box, margin)
    x0, y0 = cx - side // 2, cy - side // 2
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    if pad:
        rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad, y0 + pad
    crop = rgb[y0 : y0 + side, x0 : x0 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)
