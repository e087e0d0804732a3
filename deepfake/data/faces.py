"""The face crop, its steps in order: detect, landmarks, window or alignment, warp.

Every path that turns a decoded image into a face crop (the preprocess stage, and through
``deepfake.data.inputs`` every scoring path) calls ``crop_image`` (``crop_frames`` for a video's
sampled frames, following one face). The steps, each once, here:

1. **detect** (``find_faces``): every face by the contract's detector (``deepfake.data.detect``),
   largest first; the largest is kept (in a video, the box nearest the previous frame's). With
   ``face_search: adaptive`` the search is cut to what decides that choice: a photo (or a video's
   first frame with a face) is first searched for large faces only (``find_largest``), and each
   later frame in a window around the last box at a scale where the face is a little above the
   detector's smallest (``find_near``); either falls back to the whole image when it finds none;
2. **landmarks** (``deepfake.data.detect``): 5 or 68 points inside the box, when asked for;
3. **window or alignment**: the square window around the box enlarged by ``margin``
   (``crop_window``), or with ``align`` the similarity transform that takes the eyes and mouth to
   ``TEMPLATE`` (``alignment_matrix``); either is a 2x3 matrix from image to crop pixels;
4. **warp** (``crop_face`` / ``warp_crop``): the ``crop_size`` crop, borders replicated, and the
   landmarks mapped into it (``transform_points``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .detect import DEFAULT_MARGIN, FaceBox, get_detector, get_landmarker, key_points, nearest_box
from .inputs import Preprocessing

# --------------------------------------------------------------------------------------------
# 3-4. Window, alignment and warp
# --------------------------------------------------------------------------------------------


#: Where the key points (image-left eye centre, image-right eye centre, mouth centre or nose
#: base) sit in a unit face box: the mean over the 225 shared real portraits whose face dlib's
#: HOG detector found (left-right averaged so the template is symmetric).
TEMPLATE = {
    68: np.array([[0.290, 0.305], [0.710, 0.305], [0.500, 0.760]]),
    5: np.array([[0.290, 0.310], [0.710, 0.310], [0.500, 0.620]]),
}


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity transform (rotation, uniform scale, translation) taking ``src`` points
    nearest to ``dst`` (least squares over ``(n, 2)`` point pairs, n >= 2)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    # x' = a x - b y + tx, y' = b x + a y + ty
    rows = np.zeros((2 * len(src), 4))
    rows[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(len(src)), np.zeros(len(src))])
    rows[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(len(src)), np.ones(len(src))])
    (a, b, tx, ty), *_ = np.linalg.lstsq(rows, dst.reshape(-1), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def alignment_matrix(points: np.ndarray, size: int, margin: float) -> np.ndarray:
    """2x3 transform from image pixels to a ``size`` x ``size`` aligned crop: the key points
    go to ``TEMPLATE`` inside a face box of side ``size / margin`` centred in the crop."""
    template = TEMPLATE[len(points)]
    box_side = size / margin
    dst = (template - 0.5) * box_side + size / 2
    return similarity(key_points(points), dst)


def window_matrix(x0: float, y0: float, side: float, size: int) -> np.ndarray:
    """2x3 transform from image pixels to a ``size`` x ``size`` crop of the square window at
    ``(x0, y0)`` with ``side`` pixels (pixel centres map to pixel centres, as ``cv2.resize`` does)."""
    s = size / side
    return np.array([[s, 0.0, (0.5 - x0) * s - 0.5], [0.0, s, (0.5 - y0) * s - 0.5]])


def warp_crop(rgb: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` x ``size`` crop of ``rgb`` under ``matrix`` (image -> crop), borders replicated.

    When the crop shrinks the image by more than 2x, the image is first reduced with area
    averaging (as ``crop_face`` does), so the crop is not aliased.
    """
    m = np.asarray(matrix, np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5:
        f = min(1.0, 2 * scale)  # pre-shrink so the warp itself shrinks by at most 2x
        h, w = rgb.shape[:2]
        small = cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        fx, fy = small.shape[1] / w, small.shape[0] / h
        # small pixel u = (x + 0.5) * fx - 0.5  ->  x = (u + 0.5) / fx - 0.5
        back = np.array([[1 / fx, 0.0, 0.5 / fx - 0.5], [0.0, 1 / fy, 0.5 / fy - 0.5], [0.0, 0.0, 1.0]])
        m = m @ back
        rgb = small
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``(n, 2)`` points mapped by a 2x3 affine ``matrix``."""
    p = np.asarray(points, np.float64)
    return (p @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]).astype(np.float32)


def square_box(box: FaceBox, margin: float = DEFAULT_MARGIN) -> tuple[int, int, int]:
    """Centre and side of the square crop: the box's longer side enlarged by ``margin``."""
    side = int(round(max(box.w, box.h) * margin))
    return box.x + box.w // 2, box.y + box.h // 2, max(side, 1)


def crop_window(shape: tuple[int, ...], box: FaceBox | None, margin: float = DEFAULT_MARGIN) -> tuple[int, int, int]:
    """Top-left corner and side ``(x0, y0, side)`` of the square ``crop_face`` cuts from an image of ``shape``."""
    h, w = shape[:2]
    if box is None:
        side = min(h, w)
        cx, cy = w // 2, h // 2
    else:
        cx, cy, side = square_box(box, margin)
    return cx - side // 2, cy - side // 2, side


def crop_face(rgb: np.ndarray, box: FaceBox | None, size: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Square crop around ``box`` enlarged by ``margin``, resized to ``size`` x ``size``.

    Parts of the square outside the image are filled by replicating the border, so the face
    stays centred. With ``box=None`` the whole image is centre-cropped to a square instead.
    """
    h, w = rgb.shape[:2]
    x0, y0, side = crop_window(rgb.shape, box, margin)
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    if pad:
        rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad, y0 + pad
    crop = rgb[y0 : y0 + side, x0 : x0 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


# --------------------------------------------------------------------------------------------
# 1-4. The crop of an image or of a video's frames
# --------------------------------------------------------------------------------------------


@dataclass
class Crop:
    """One crop as the preprocess stage makes it.

    Attributes:
        image: the (crop_size, crop_size, 3) uint8 crop (the whole image with ``crop="none"``),
            None when the input is left out.
        how: ``face`` (cropped around ``box``), ``full`` (centre square or whole image) or
            ``none`` (left out: ``reason``).
        box: the detected face followed, in the input's pixels.
        landmarks: ``(n, 2)`` float32 landmarks in the crop's pixels, when asked for and found.
        n_faces: faces the detector found in the input.
        at_border: the face's box touches the input's edge (a cut-off face).
        reason: why the input was left out (a key of ``deepfake.data.media.REASONS``).
    """

    image: np.ndarray | None
    how: str
    box: FaceBox | None = None
    landmarks: np.ndarray | None = None
    n_faces: int = 0
    at_border: bool = False
    reason: str = ""


# --------------------------------------------------------------------------------------------
# 1. Detection
# --------------------------------------------------------------------------------------------

#: ``face_search: adaptive``: a photo is first searched only for faces at least this share of
#: its shorter side (on a copy small enough that smaller faces cannot be found, which costs a
#: fraction of the whole search); the whole search runs only when none is found.
LARGE_FACE = 0.3
#: ``face_search: adaptive``: after a frame with a face, the next is first searched in a square
#: window ``TRACK_WINDOW`` times the face's side around its box, ...
TRACK_WINDOW = 2.5
#: ... at the scale where the face is ``TRACK_FACE`` times the detector's smallest face (so it may
#: shrink by a third between sampled frames and still be found there).
TRACK_FACE = 1.5


def find_faces(rgb: np.ndarray, prep: Preprocessing, video: bool = False) -> list[FaceBox]:
    """Every face in ``rgb`` by the contract's detector, largest first (video frames upsampled as set)."""
    return get_detector(prep.detector).detect(rgb, _upsample(prep, video))


def find_largest(rgb: np.ndarray, prep: Preprocessing, video: bool = False) -> list[FaceBox]:
    """The faces of ``rgb`` that decide which is largest, largest first.

    ``face_search: full`` (or ``several_faces: skip``, which counts every face): ``find_faces``.
    ``adaptive``: first the faces of at least ``LARGE_FACE`` of the shorter side, searched on a
    copy at a level of the whole search's pyramid (so boxes fall on the same sizes and places);
    when one is found, the largest face is among them. Otherwise ``find_faces``.
    """
    if _adaptive(prep):
        det = get_detector(prep.detector)
        full = det.copy_scale(rgb.shape) * 2 ** _upsample(prep, video)
        scale = pyramid_scale(full, det.min_face / (LARGE_FACE * min(rgb.shape[:2])), det.pyramid_step)
        if scale <= full * det.pyramid_step**2:  # a cheaper search than the whole one (< 1/2 its cost)
            boxes = det.search(rgb, scale)
            if boxes:
                return boxes
    return find_faces(rgb, prep, video)


def find_near(rgb: np.ndarray, prep: Preprocessing, box: FaceBox, video: bool = True) -> list[FaceBox]:
    """With ``face_search: adaptive``, the faces in a window around ``box`` (the face followed in
    the previous frame), largest first; ``[]`` when none is found there, or with ``full``.

    The window is ``TRACK_WINDOW`` times the box's longer side, searched at the level of the whole
    search's pyramid where the face is about ``TRACK_FACE`` times the detector's smallest face:
    a few per cent of the pixels the whole frame's search covers.
    """
    if not _adaptive(prep):
        return []
    det = get_detector(prep.detector)
    full = det.copy_scale(rgb.shape) * 2 ** _upsample(prep, video)
    side = max(box.w, box.h, 1)
    scale = pyramid_scale(full, TRACK_FACE * det.min_face / side, det.pyramid_step)
    # The window's corner on the grid of positions the whole search tries on the level where the
    # face is expected and on the next finer one (they coincide every 1 / (1/step - 1) positions:
    # 5 for dlib's 5/6 pyramids), so that both searches place a box alike on either level. Off
    # that grid, a box moves by a position or a level as it does when the frame moves by a pixel.
    step = det.pyramid_step
    level = scale * step ** round(math.log(side * scale / det.min_face) / -math.log(step))
    cell = round(step / (1 - step)) * det.stride / level  # in the image's pixels
    cx, cy = box.center
    half = TRACK_WINDOW * side / 2
    h, w = rgb.shape[:2]
    x0, y0 = (max(0, round(math.floor((c - half) / cell) * cell)) for c in (cx, cy))
    x1, y1 = min(w, round(cx + half)), min(h, round(cy + half))
    if min(x1 - x0, y1 - y0) * scale < det.min_face:  # the window (cut by the border) cannot hold the face
        return []
    return det.search(rgb, scale, region=(x0, y0, x1, y1))


def pyramid_scale(full: float, least: float, step: float) -> float:
    """The scale ``full * step**k`` (``k`` a whole number, maybe negative) nearest ``least`` from above:
    a level of the image pyramid searched at scale ``full``, at least ``least``."""
    k = math.floor(math.log(least / full) / math.log(step) + 1e-9)
    return full * step**k


def _adaptive(prep: Preprocessing) -> bool:
    return prep.face_search == "adaptive" and prep.several_faces == "largest"


def _upsample(prep: Preprocessing, video: bool) -> int:
    return prep.video_upsample if video else prep.upsample


def crop_image(rgb: np.ndarray, prep: Preprocessing) -> Crop:
    """The preprocess stage's crop of a decoded (H, W, 3) uint8 image: around its largest face,
    or the centre square, or the whole image, as ``prep`` says (video frames: ``crop_frames``)."""
    if _too_small(rgb, prep):
        return Crop(None, "none", reason="too_small")
    if not prep.detect:
        return _whole(rgb, prep)
    boxes = find_largest(rgb, prep)
    return crop_around(rgb, boxes[0] if boxes else None, len(boxes), prep)


def crop_frames(frames: list[np.ndarray], prep: Preprocessing) -> list[Crop]:
    """Crops of a video's sampled frames, following one face: the largest in the first frame
    with a face, then in each frame the box nearest the previous one (the track is each crop's ``box``).

    With ``face_search: adaptive`` a frame after one with a face is searched around that face
    first (``find_near``), the whole frame only when it is not found there.
    """
    if not prep.detect:
        return [
            Crop(None, "none", reason="too_small") if _too_small(rgb, prep) else _whole(rgb, prep) for rgb in frames
        ]
    crops: list[Crop] = []
    previous: FaceBox | None = None  # the face followed, as last seen
    last: FaceBox | None = None  # its box in the frame just before, None when that frame had none
    for rgb in frames:
        if _too_small(rgb, prep):
            crops.append(Crop(None, "none", reason="too_small"))
            last = None
            continue
        boxes = find_near(rgb, prep, last) if last is not None else []
        if not boxes:
            boxes = find_largest(rgb, prep, video=True) if previous is None else find_faces(rgb, prep, video=True)
        box = None
        if boxes:
            box = boxes[0] if previous is None else nearest_box(boxes, previous)[0]
            previous = box
        last = box
        crops.append(crop_around(rgb, box, len(boxes), prep))
    return crops


def _too_small(rgb: np.ndarray, prep: Preprocessing) -> bool:
    return min(rgb.shape[:2]) < prep.min_side


def crop_around(rgb: np.ndarray, box: FaceBox | None, n_faces: int, prep: Preprocessing) -> Crop:
    """The face crop of ``rgb`` around ``box`` (one of ``n_faces`` found), with landmarks and
    alignment as ``prep`` says; without a box, the centre square or nothing (``no_face``)."""
    if box is None:
        if prep.no_face == "keep_full":
            return _whole(rgb, prep)
        return Crop(None, "none", reason="no_face")
    at_border = box.touches_border(rgb.shape[1], rgb.shape[0])
    if n_faces > 1 and prep.several_faces == "skip":
        return Crop(None, "none", box, n_faces=n_faces, at_border=at_border, reason="several_faces")
    if at_border and prep.face_at_border == "skip":
        return Crop(None, "none", box, n_faces=n_faces, at_border=at_border, reason="face_at_border")
    points = get_landmarker(prep.landmarks).locate(rgb, box) if prep.landmarks else None
    if prep.align and points is not None:
        matrix = alignment_matrix(points, prep.crop_size, prep.margin)
        image = warp_crop(rgb, matrix, prep.crop_size)
    else:
        image = crop_face(rgb, box, prep.crop_size, prep.margin)
        matrix = window_matrix(*crop_window(rgb.shape, box, prep.margin), prep.crop_size)
    landmarks = transform_points(points, matrix) if points is not None else None
    return Crop(image, "face", box, landmarks, n_faces, at_border)


def _whole(rgb: np.ndarray, prep: Preprocessing) -> Crop:
    """The centre square (or, with ``crop="none"``, the whole image); landmarks found in it when asked for."""
    image = rgb if prep.crop == "none" else crop_face(rgb, None, prep.crop_size)
    landmarks = None
    if prep.landmarks:
        boxes = find_largest(image, prep)
        if boxes:
            landmarks = get_landmarker(prep.landmarks).locate(image, boxes[0])
    return Crop(image, "full", landmarks=landmarks)
