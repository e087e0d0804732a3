"""Face detection and facial landmarks: dlib's detectors and shape predictors (and OpenCV's Haar cascade).

Three detectors (``DETECTORS``), all behind ``get_detector(name)``:

- ``dlib_hog``: dlib's HOG + linear SVM frontal detector (``dlib.get_frontal_face_detector``),
  the one FaceForensics++, DeepfakeBench and the self-blended-images code crop with; the default.
- ``dlib_cnn``: dlib's MMOD CNN (``mmod_human_face_detector.dat``): finds rotated and
  profile-ish faces HOG misses, at about 20x its cost on a CPU (dlib-bin's wheels are CPU builds).
- ``haar``: OpenCV's bundled Haar cascade (no model file, lowest recall).

Every detector works on a copy downscaled so its longer side is at most
``DETECT_MAX_SIDE[name]`` (speed; boxes are mapped back to the full image), and ``upsample``
enlarges that copy ``2**upsample`` times for small faces (video frames). ``Detector.search``
searches any region of an image at any scale: how ``deepfake.data.faces`` looks for large faces
first and follows a face from frame to frame (``face_search: adaptive``). A detector finds faces
from about ``min_face`` pixels in the copy it searches up to the copy's size, scanning an image
pyramid whose levels shrink by ``pyramid_step``; a search at scale ``s`` therefore finds faces
from ``min_face / s`` pixels of the image up, and its cost grows with ``s**2``. The dlib model files
come from the ``face-recognition-models`` wheel, located with ``importlib`` (its own
``__init__`` imports ``pkg_resources``, which current setuptools no longer ships).

Landmarks (dlib's 5- and 68-point shape predictors): ``get_landmarker(n)`` locates ``n`` points
inside a detected face box. The 5-point model marks the two corners of each eye and the base of
the nose; the 68-point model follows the iBUG 300-W scheme (jaw 0-16, brows 17-26, nose 27-35,
eyes 36-47, mouth 48-67). The 68-point model was trained on iBUG 300-W, whose licence excludes
commercial use; the 5-point model carries no such restriction.

Landmarks are stored per crop in the cache manifest, in the crop's pixel coordinates
(``format_points`` / ``parse_points``), so later stages use them without detecting again.

Alignment (``deepfake.data.faces.alignment_matrix``): the similarity transform (rotation,
uniform scale, translation) that takes the two eye centres and the mouth centre (68 points) or the nose base
(5 points) to their mean positions in a face box (``TEMPLATE``), the box then enlarged by
the crop margin, so every aligned crop has its eyes level at the same height and distance.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

#: Crop enlargement around the detected box (the FaceForensics++ / DeepfakeBench convention).
DEFAULT_MARGIN = 1.3
#: Face detectors ``preprocess.detector`` can name.
DETECTORS = ("dlib_hog", "dlib_cnn", "haar")
#: Longer side of the image copy each detector searches (portraits' faces are large; the CNN
#: costs ~0.7 s per 320 px image on one CPU core, ~2.8 s at 600 px).
DETECT_MAX_SIDE = {"dlib_hog": 640, "dlib_cnn": 320, "haar": 640}
#: Largest upsampling (each step doubles the searched image's side).
MAX_UPSAMPLE = 2


class FaceModelError(RuntimeError):
    """A detector or landmark model cannot be loaded (package missing, file missing or corrupt)."""


@dataclass(frozen=True)
class FaceBox:
    """An axis-aligned face box in pixel coordinates of the image it was found in.

    ``score`` is the detector's confidence (dlib's SVM score or CNN confidence; 0 for Haar).
    The box may reach past the image's edges (dlib's boxes do for faces cut by the border).
    """

    x: int
    y: int
    w: int
    h: int
    score: float = 0.0

    @property
    def area(self) -> int:
        return self.w * self.h

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)

    def touches_border(self, width: int, height: int) -> bool:
        """True when the box touches or crosses an edge of a ``width`` x ``height`` image (a cut-off face)."""
        return self.x <= 0 or self.y <= 0 or self.x + self.w >= width or self.y + self.h >= height


# --------------------------------------------------------------------------------------------
# Model files
# --------------------------------------------------------------------------------------------


def import_dlib() -> Any:
    """The ``dlib`` module, or ``FaceModelError`` saying how to install it."""
    try:
        import dlib
    except ImportError as e:
        raise FaceModelError(
            f"the dlib detectors need dlib ({e}); install it with `pip install dlib-bin` "
            "(prebuilt wheels), or set preprocess.detector: haar"
        ) from e
    return dlib


def model_file(name: str) -> Path:
    """Path of a dlib model file shipped by the ``face-recognition-models`` package.

    Raises ``FaceModelError`` naming what is missing and how to install it.
    """
    spec = importlib.util.find_spec("face_recognition_models")  # not imported: its __init__ needs pkg_resources
    if spec is None or spec.origin is None:
        raise FaceModelError(
            f"the dlib model file {name} comes with the face-recognition-models package, which is not installed; "
            "run `pip install face-recognition-models`"
        )
    path = Path(spec.origin).parent / "models" / name
    if not path.is_file():
        raise FaceModelError(
            f"{path} is missing; reinstall it with `pip install --force-reinstall face-recognition-models`"
        )
    return path


def load_dlib_model(loader: Any, path: Path) -> Any:
    """``loader(str(path))`` with a corrupt or unreadable file reported as ``FaceModelError`` naming it."""
    try:
        return loader(str(path))
    except (RuntimeError, OSError) as e:  # dlib raises RuntimeError for a truncated or foreign file
        raise FaceModelError(
            f"{path} could not be loaded ({str(e).strip()[:200]}); it is corrupt or not a dlib model: "
            "reinstall it with `pip install --force-reinstall face-recognition-models`"
        ) from e


def _cascade_path(name: str) -> Path:
    data = getattr(cv2, "data", None)
    if data is None or not hasattr(data, "haarcascades"):
        raise FaceModelError(
            "this OpenCV build has no bundled Haar cascades (opencv-python-headless 5.x dropped them); "
            "install opencv-python-headless<5"
        )
    path = Path(data.haarcascades) / name
    if not path.is_file():
        raise FaceModelError(f"OpenCV's cascade file {path} is missing; reinstall opencv-python-headless<5")
    return path


# --------------------------------------------------------------------------------------------
# Detectors
# --------------------------------------------------------------------------------------------


class Detector:
    """Finds faces in RGB uint8 images. Not thread-safe: ``get_detector`` keeps one per thread.

    Attributes:
        min_face: about the smallest face box side, in pixels of the searched copy, the detector reports.
        pyramid_step: the scale between successive levels of the detector's image pyramid.
        stride: pixels of a pyramid level between the positions the detector tries (its grid).
    """

    name = ""
    min_face = 80
    pyramid_step = 5 / 6
    stride = 8

    def _find(self, rgb: np.ndarray, upsample: int) -> list[tuple[float, float, float, float, float]]:
        """Boxes ``(x, y, w, h, score)`` in ``rgb``'s pixels."""
        raise NotImplementedError

    def detect(self, rgb: np.ndarray, upsample: int = 0) -> list[FaceBox]:
        """All faces in ``rgb`` (H, W, 3) uint8, largest first, in its pixel coordinates.

        Args:
            rgb: the image.
            upsample: search a copy enlarged ``2**upsample`` times (finds smaller faces, costs
                about ``4**upsample`` times more).
        """
        if not 0 <= upsample <= MAX_UPSAMPLE:
            raise ValueError(f"upsample must be between 0 and {MAX_UPSAMPLE}, got {upsample}")
        return self.search(rgb, self.copy_scale(rgb.shape), upsample)

    def copy_scale(self, shape: tuple[int, ...]) -> float:
        """Scale of the copy ``detect`` searches in an image of ``shape`` (before upsampling)."""
        return min(1.0, DETECT_MAX_SIDE[self.name] / max(shape[:2]))

    def search(
        self, rgb: np.ndarray, scale: float, upsample: int = 0, region: tuple[int, int, int, int] | None = None
    ) -> list[FaceBox]:
        """The faces in ``rgb`` (or in its ``region`` ``(x0, y0, x1, y1)``) found on a copy resized
        ``scale`` times and upsampled ``2**upsample`` times by the detector; largest first, in
        ``rgb``'s pixel coordinates.

        Finds faces from about ``min_face / (scale * 2**upsample)`` pixels up; costs about
        ``(scale * 2**upsample)**2`` times the searched area.
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
        x0, y0 = 0, 0
        if region is not None:
            x0, y0, x1, y1 = region
            rgb = rgb[y0:y1, x0:x1]
        h, w = rgb.shape[:2]
        small = rgb
        if scale != 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR)
        boxes = [
            FaceBox(
                x0 + round(x / scale),
                y0 + round(y / scale),
                max(1, round(bw / scale)),
                max(1, round(bh / scale)),
                float(s),
            )
            for x, y, bw, bh, s in self._find(np.ascontiguousarray(small), upsample)
        ]
        return sorted(boxes, key=lambda b: (b.area, b.score), reverse=True)

    def largest(self, rgb: np.ndarray, upsample: int = 0) -> FaceBox | None:
        """The largest face, or None when no face is found."""
        boxes = self.detect(rgb, upsample)
        return boxes[0] if boxes else None


class HaarDetector(Detector):
    """OpenCV's frontal-face Haar cascade.

    Attributes:
        scale_factor: image-pyramid step of the cascade.
        min_neighbors: detections needed to keep a box (higher: fewer false faces).
        min_size_frac: smallest face side as a fraction of the shorter searched side.
    """

    name = "haar"
    min_face = 24  # the cascade's window (its minimum size is also a share of the image: min_size_frac)
    stride = 2

    def __init__(
        self,
        cascade: str = "haarcascade_frontalface_default.xml",
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size_frac: float = 0.1,
    ) -> None:
        self.scale_factor, self.min_neighbors, self.min_size_frac = scale_factor, min_neighbors, min_size_frac
        self.pyramid_step = 1 / scale_factor
        self._cascade = cv2.CascadeClassifier(str(_cascade_path(cascade)))
        if self._cascade.empty():
            raise FaceModelError(f"OpenCV could not load the cascade {cascade}")

    def _find(self, rgb: np.ndarray, upsample: int) -> list[tuple[float, float, float, float, float]]:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        up = 2**upsample
        if up > 1:
            gray = cv2.resize(gray, None, fx=up, fy=up, interpolation=cv2.INTER_LINEAR)
        gray = cv2.equalizeHist(gray)
        min_side = max(16, int(min(gray.shape) * self.min_size_frac / up))
        found = self._cascade.detectMultiScale(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_side, min_side)
        )
        return [(x / up, y / up, w / up, h / up, 0.0) for x, y, w, h in (found if len(found) else [])]


class DlibHogDetector(Detector):
    """dlib's HOG frontal face detector (no model file; the detector is compiled into dlib)."""

    name = "dlib_hog"
    min_face = 73  # its 80 px window reports 73 px boxes on the finest level; 5/6 between levels

    def __init__(self) -> None:
        self._detector = import_dlib().get_frontal_face_detector()

    def _find(self, rgb: np.ndarray, upsample: int) -> list[tuple[float, float, float, float, float]]:
        rects, scores, _ = self._detector.run(rgb, upsample, 0.0)
        return [(r.left(), r.top(), r.width(), r.height(), s) for r, s in zip(rects, scores)]


class DlibCnnDetector(Detector):
    """dlib's MMOD CNN face detector (``mmod_human_face_detector.dat``)."""

    name = "dlib_cnn"
    min_face = 80  # smallest box reported on the finest level; 5/6 between levels

    def __init__(self) -> None:
        dlib = import_dlib()
        self._detector = load_dlib_model(dlib.cnn_face_detection_model_v1, model_file("mmod_human_face_detector.dat"))

    def _find(self, rgb: np.ndarray, upsample: int) -> list[tuple[float, float, float, float, float]]:
        found = self._detector(rgb, upsample)
        return [(d.rect.left(), d.rect.top(), d.rect.width(), d.rect.height(), d.confidence) for d in found]


_CLASSES: dict[str, type[Detector]] = {"dlib_hog": DlibHogDetector, "dlib_cnn": DlibCnnDetector, "haar": HaarDetector}
_local = threading.local()


def get_detector(name: str = "dlib_hog") -> Detector:
    """A per-thread detector of kind ``name`` (``DETECTORS``), loaded once and kept."""
    if name not in DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; the detectors are {', '.join(DETECTORS)}")
    cache = _local.__dict__.setdefault("detectors", {})
    if name not in cache:
        cache[name] = _CLASSES[name]()
    return cache[name]


def nearest_box(boxes: list[FaceBox], previous: FaceBox) -> tuple[FaceBox, float]:
    """The box of ``boxes`` whose centre is nearest ``previous``'s, and that distance in units of
    ``previous``'s longer side (how a face is followed from one video frame to the next)."""
    px, py = previous.center
    side = max(previous.w, previous.h, 1)
    dist = [np.hypot(b.center[0] - px, b.center[1] - py) / side for b in boxes]
    i = int(np.argmin(dist))
    return boxes[i], float(dist[i])


# --------------------------------------------------------------------------------------------
# Square crops
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Landmarks
# --------------------------------------------------------------------------------------------


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
