"""Self-blended images: pseudo-fakes made from real faces alone (Shiohara and Yamasaki, CVPR 2022).

A real face crop is blended with a slightly changed copy of itself through a deformed face
mask: the copy is shifted in colour, blurred or sharpened, and scaled and moved by a few
pixels, so the result carries the traces face swaps and composites leave (a blending boundary,
a colour or sharpness mismatch, a slight misalignment) without a second identity. Trained on
them, a detector learns those traces rather than who is in the picture.

``self_blend(image, landmarks, cfg, rng)`` returns the pseudo-fake and its mask. The mask is
the whole face or, with probability ``part``, a part of it (as face-part swaps replace the eyes
or the mouth): the convex hull of the crop's 68 landmarks (of the eyes' or the mouth's) when
the cache holds them, an ellipse fitted to the 5-point landmarks, or, without landmarks, an
ellipse in the face box the crop was cut from (the centre square of side ``size / margin``;
a part is a smaller ellipse inside it). The mask is then elastically deformed, eroded or
dilated, and blurred, and the blend ratio is drawn at random. Everything is drawn from
``rng``, so a pseudo-fake is a function of the image and the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: ``train.self_blend``: ``off``; ``add`` (pseudo-fakes besides the real fakes); ``only`` (real
#: images alone: the split's fakes are dropped from training, each real image also appears blended).
MODES = ("off", "add", "only")


@dataclass(frozen=True)
class BlendConfig:
    """How pseudo-fakes are made.

    Attributes:
        mode: ``MODES``.
        share: with ``add``, pseudo-fakes per real training image and epoch (with ``only``, one each).
        ratio_min: lowest blend ratio (the copy's weight inside the mask; the highest is 1).
        margin: the crop's margin around the face box (for the ellipse mask without landmarks).
        shift: largest shift of the copy, as a share of the side.
        scale: largest relative change of the copy's scale.
        colour: largest per-channel gain change of the copy (and half of it as an offset, in 0-1 units).
        part: probability that the mask is a part of the face (eyes, mouth) rather than all of it.
    """

    mode: str = "off"
    share: float = 0.5
    ratio_min: float = 0.5
    margin: float = 1.3
    shift: float = 0.015
    scale: float = 0.025
    colour: float = 0.08
    part: float = 0.4

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"self_blend must be one of {MODES}, got {self.mode!r}")
        if not 0 < self.share <= 1 or not 0 < self.ratio_min <= 1:
            raise ValueError(f"blend share and ratio_min must be in (0, 1], got {self.share}, {self.ratio_min}")

    @property
    def on(self) -> bool:
        return self.mode != "off"


def face_mask(
    shape: tuple[int, ...],
    landmarks: np.ndarray | None,
    margin: float,
    rng: np.random.Generator | None = None,
    part: float = 0.0,
) -> np.ndarray:
    """A binary (H, W) float32 mask of the face (or, with probability ``part``, of a part of it):
    the landmarks' hull, else an ellipse in the crop's face box."""
    h, w = shape[:2]
    mask = np.zeros((h, w), np.float32)
    partial = rng is not None and rng.random() < part
    if landmarks is not None and len(landmarks) == 68:
        points = landmarks
        if partial:
            points = landmarks[36:48] if rng is not None and rng.random() < 0.5 else landmarks[48:68]  # eyes, mouth
        cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points).astype(np.int32)), 1.0)
        if partial:  # the hull of the eye or lip outline is tight: grow it to the region a swap replaces
            k = max(1, int(0.04 * min(h, w)))
            mask = np.asarray(
                cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))), np.float32
            )
        return mask
    if landmarks is not None and len(landmarks) == 5:  # eye corners and nose base: an ellipse around them
        eyes = landmarks[:4].mean(0)
        nose = landmarks[4]
        span = float(np.linalg.norm(landmarks[0] - landmarks[2]))
        centre = eyes + 0.6 * (nose - eyes)
        axes = (max(2, int(0.9 * span)), max(2, int(1.4 * span)))
        if partial:
            centre, axes = eyes, (max(2, int(0.8 * span)), max(2, int(0.3 * span)))
        angle = float(np.degrees(np.arctan2(landmarks[0][1] - landmarks[2][1], landmarks[0][0] - landmarks[2][0])))
        cv2.ellipse(mask, (int(centre[0]), int(centre[1])), axes, angle, 0, 360, 1.0, -1)
        return mask
    box = min(h, w) / margin  # the face box the crop was cut around, centred
    if partial and rng is not None:  # a region inside the face: where eyes, nose or mouth would be
        cx = w / 2 + rng.uniform(-0.15, 0.15) * box
        cy = h / 2 + rng.uniform(-0.2, 0.25) * box
        axes = (max(2, int(rng.uniform(0.12, 0.3) * box)), max(2, int(rng.uniform(0.08, 0.18) * box)))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, 0, 0, 360, 1.0, -1)
        return mask
    axes = (max(2, int(0.42 * box)), max(2, int(0.55 * box)))
    cv2.ellipse(mask, (w // 2, int(h / 2 + 0.05 * box)), axes, 0, 0, 360, 1.0, -1)
    return mask


def deform_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Elastic deformation, a random erosion or dilation, and a blur of a binary mask: (H, W) float32 in [0, 1]."""
    h, w = mask.shape
    side = min(h, w)
    grid = max(2, side // 16)  # a coarse random displacement field, smoothly upsampled
    alpha = side * rng.uniform(0.01, 0.04)
    dx = cv2.resize(rng.uniform(-1, 1, (grid, grid)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(rng.uniform(-1, 1, (grid, grid)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = cv2.remap(mask, xx + alpha * dx, yy + alpha * dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    k = int(round(side * rng.uniform(0.0, 0.04)))
    if k:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
        out = cv2.erode(out, kernel) if rng.random() < 0.5 else cv2.dilate(out, kernel)
    sigma = side * rng.uniform(0.008, 0.035)
    return np.clip(cv2.GaussianBlur(out, (0, 0), sigma), 0, 1)


def _changed_copy(img: np.ndarray, cfg: BlendConfig, rng: np.random.Generator) -> np.ndarray:
    """The copy blended in: colour, sharpness, scale and position changed slightly; float32 0-255."""
    h, w = img.shape[:2]
    gain = 1 + rng.uniform(-cfg.colour, cfg.colour, 3)
    offset = rng.uniform(-cfg.colour / 2, cfg.colour / 2, 3) * 255
    x: np.ndarray = (img.astype(np.float32) * gain + offset).astype(np.float32)
    if rng.random() < 0.5:  # softer, as an upsampled or re-encoded face is
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.3, 1.0))
    else:  # crisper
        x = cv2.addWeighted(x, 1.4, cv2.GaussianBlur(x, (0, 0), 1.0), -0.4, 0)
    s = 1 + rng.uniform(-cfg.scale, cfg.scale)
    tx, ty = rng.uniform(-cfg.shift, cfg.shift, 2) * (w, h)
    m = np.array([[s, 0, (1 - s) * w / 2 + tx], [0, s, (1 - s) * h / 2 + ty]], np.float32)
    return cv2.warpAffine(x, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def self_blend(
    img: np.ndarray, landmarks: np.ndarray | None, cfg: BlendConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A pseudo-fake of a real (H, W, 3) uint8 face crop and its blending mask ((H, W) float32 in [0, 1]).

    ``landmarks`` are the crop's own (in its pixels) or None. Source and target are the image
    and its changed copy, in random roles.
    """
    mask = deform_mask(face_mask(img.shape, landmarks, cfg.margin, rng, cfg.part), rng)
    mask = mask * rng.uniform(cfg.ratio_min, 1.0)
    copy = _changed_copy(img, cfg, rng)
    base = img.astype(np.float32)
    src, dst = (copy, base) if rng.random() < 0.5 else (base, copy)
    out = dst * (1 - mask[..., None]) + src * mask[..., None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), mask.astype(np.float32)


def training_items(targets: np.ndarray, cfg: BlendConfig) -> tuple[np.ndarray, np.ndarray]:
    """The items of an epoch: ``(rows, blended)``, the split's row each item reads and whether it
    is made a pseudo-fake (its target then 1).

    ``off``: every row. ``add``: every row, then ``round(share * reals)`` pseudo-fakes spread over
    the real rows. ``only``: the real rows, then each real row again as a pseudo-fake (fakes dropped).
    """
    rows = np.arange(len(targets))
    reals = rows[targets == 0]
    if cfg.mode == "off":
        return rows, np.zeros(len(rows), bool)
    if cfg.mode == "only":
        base, extra = reals, reals
    else:
        n = int(round(cfg.share * len(reals)))
        base, extra = rows, reals[np.linspace(0, len(reals) - 1, n).round().astype(int)] if n else reals[:0]
    items = np.concatenate([base, extra])
    return items, np.concatenate([np.zeros(len(base), bool), np.ones(len(extra), bool)])
