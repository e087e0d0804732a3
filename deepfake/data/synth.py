"""Embedded synthetic face-forgery dataset.

No dataset can be downloaded in an offline checkout, so the package renders one: procedural
faces of many identities ("real"), and forgeries made with the manipulations real forgeries
leave traces of ("fake"):

* ``swap``: another identity's inner face, rendered under its own lighting, pasted in with a
  feathered mask (blending boundary, colour and lighting mismatch), as in face-swap videos.
* ``upsample``: the face region downsampled and re-upsampled, with the faint period-2
  checkerboard of transposed convolutions (generator up-sampling fingerprint).
* ``partial``: only the eyes or the mouth replaced by another identity's, as in hand-made
  composites.

Both classes go through the same post-processing (sensor noise, blur, JPEG at the same
quality distribution, same encoder), so no file-format shortcut separates them. Identities
come in families of ``family_size``; swaps and partial edits take their donor from the
target's family, and every image carries its family as ``group``, so a split by group keeps
every face that appears in an image (target and donor) on one side. Output is a
pure function of the seed: image ``(identity, index, label)`` draws from its own generator
seeded by ``(seed, identity, index, label)``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..core import lifetime
from ..core.config import section, setting
from ..core.progress import progress as progress_bar

MANIPULATIONS = ("swap", "upsample", "partial")
MANIFEST_NAME = "manifest.csv"
MANIFEST_FIELDS = ("file", "label", "group", "identity", "manipulation", "donor", "quality")

# Skin tones from light to dark (RGB); identities interpolate between neighbours.
_SKIN = np.array(
    [(250, 220, 196), (238, 193, 160), (224, 172, 125), (198, 134, 90), (150, 95, 60), (95, 60, 40)],
    dtype=np.float32,
)
_HAIR = np.array(
    [(25, 20, 18), (70, 45, 30), (120, 80, 45), (200, 165, 100), (150, 60, 30), (150, 150, 150), (230, 228, 220)],
    dtype=np.float32,
)
_IRIS = np.array([(70, 45, 25), (110, 75, 40), (60, 100, 150), (70, 120, 80), (40, 30, 25)], dtype=np.float32)
_HAIR_STYLES = ("short", "long", "bald", "bun", "curly")


@dataclass(frozen=True)
@section("synth")
class SynthConfig:
    """Size and difficulty of the synthetic dataset.

    Attributes:
        n_identities: number of distinct people (groups).
        images_per_identity: real images per identity; as many fakes are made per identity.
        image_size: side of the square images in pixels.
        seed: master seed; the dataset is a pure function of it and the other fields.
        jpeg_quality: inclusive range of JPEG qualities, the same for both classes.
        manipulations: which forgery types to draw from, uniformly.
        family_size: identities per group; donors come from the target's group.
        workers: processes used to render (0: all cores).
    """

    n_identities: int = setting(min=2)
    images_per_identity: int = setting(min=1)
    image_size: int = setting(min=32, max=1024)
    seed: int = setting(min=0)
    jpeg_quality: tuple[int, int] = setting(min=1, max=100, length=2)
    family_size: int = setting(min=2)
    manipulations: tuple[str, ...] = MANIPULATIONS  # not a params.yaml setting: every kind by default
    workers: int = 0  # rendering processes (0: all cores); not a params.yaml setting

    def __post_init__(self) -> None:
        if not self.family_size <= self.n_identities:
            raise ValueError(
                "synth.family_size must not exceed synth.n_identities (donors come from the family), got "
                f"{self.family_size}"
            )
        lo, hi = self.jpeg_quality
        if lo > hi:
            raise ValueError(
                f"synth.jpeg_quality must be a range [low, high] with low <= high, got {list(self.jpeg_quality)}"
            )
        unknown = set(self.manipulations) - set(MANIPULATIONS)
        if unknown or not self.manipulations:
            raise ValueError(f"manipulations must be a non-empty subset of {MANIPULATIONS}, got {self.manipulations}")
        object.__setattr__(self, "manipulations", tuple(self.manipulations))


# --------------------------------------------------------------------------------------------
# Identities and scenes
# --------------------------------------------------------------------------------------------


def family_members(cfg: SynthConfig, identity: int) -> range:
    """The identities of ``identity``'s family (the last family absorbs any remainder)."""
    n_fam = cfg.n_identities // cfg.family_size
    fam = min(identity // cfg.family_size, n_fam - 1)
    stop = cfg.n_identities if fam == n_fam - 1 else (fam + 1) * cfg.family_size
    return range(fam * cfg.family_size, stop)


def _identity_rng(seed: int, identity: int) -> np.random.Generator:
    return np.random.default_rng([seed, identity, 7])


def sample_identity(seed: int, identity: int) -> dict:
    """Draw the fixed traits of one person."""
    rng = _identity_rng(seed, identity)
    t = rng.uniform(0, len(_SKIN) - 1)
    i = int(t)
    skin = _SKIN[i] * (1 - (t - i)) + _SKIN[min(i + 1, len(_SKIN) - 1)] * (t - i)
    face_w = rng.uniform(0.25, 0.32)
    return {
        "skin": np.clip(skin + rng.normal(0, 6, 3), 0, 255),
        "face_w": face_w,
        "face_h": face_w * rng.uniform(1.2, 1.45),
        "jaw": rng.uniform(0.0, 0.35),  # how much the lower face narrows
        "eye_y": rng.uniform(-0.12, -0.02),
        "eye_dx": rng.uniform(0.36, 0.46),
        "eye_size": rng.uniform(0.13, 0.19),
        "eye_ratio": rng.uniform(0.45, 0.7),
        "iris": _IRIS[rng.integers(len(_IRIS))] + rng.normal(0, 8, 3),
        "brow_thick": rng.uniform(0.025, 0.06),
        "brow_tilt": rng.uniform(-0.15, 0.15),
        "nose_len": rng.uniform(0.22, 0.34),
        "nose_w": rng.uniform(0.12, 0.22),
        "mouth_y": rng.uniform(0.38, 0.5),
        "mouth_w": rng.uniform(0.28, 0.42),
        "lip": np.clip(skin * np.array([0.85, 0.55, 0.55]) + rng.normal(0, 8, 3), 0, 255),
        "lip_thick": rng.uniform(0.04, 0.08),
        "hair": _HAIR[rng.integers(len(_HAIR))] + rng.normal(0, 6, 3),
        "hair_style": _HAIR_STYLES[rng.integers(len(_HAIR_STYLES))],
        "glasses": bool(rng.random() < 0.25),
        "beard": bool(rng.random() < 0.2),
        "moles": rng.uniform(-1, 1, size=(int(rng.integers(0, 4)), 2)) * 0.6,
        "clothes": rng.uniform(20, 235, 3),
    }


def sample_scene(rng: np.random.Generator, size: int) -> dict:
    """Draw the per-image conditions: pose, scale, lighting, background, expression, camera."""
    return {
        "angle": rng.normal(0, 7),
        "scale": rng.uniform(0.85, 1.15),
        "shift": rng.uniform(-0.07, 0.07, 2) * size,
        "yaw": rng.uniform(-0.22, 0.22),
        "light_dir": rng.uniform(0, 2 * math.pi),
        "light_strength": rng.uniform(0.0, 0.35),
        "brightness": rng.uniform(0.8, 1.15),
        "white_balance": rng.normal(1.0, 0.04, 3),
        "bg": (rng.uniform(0, 255, 3), rng.uniform(0, 255, 3), rng.uniform(0, 2 * math.pi)),
        "clutter": int(rng.integers(0, 6)),
        "smile": rng.uniform(-0.3, 1.0),
        "mouth_open": float(rng.random() < 0.3) * rng.uniform(0.2, 1.0),
        "eye_open": rng.uniform(0.6, 1.0),
        "noise": rng.uniform(1.0, 5.0),
        "blur": rng.uniform(0.0, 0.9),
    }


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

_SS = 2  # supersampling factor of the face layer


def _pt(x: float, y: float) -> tuple[int, int]:
    # cv2 draws with 4 fractional bits: sub-pixel positions without aliasing jumps
    return int(round(x * 16)), int(round(y * 16))


def _ellipse(img, c, axes, angle, color, thickness=-1, start=0, end=360) -> None:
    cv2.ellipse(
        img,
        _pt(*c),
        _pt(max(axes[0], 0.5), max(axes[1], 0.5)),
        angle,
        start,
        end,
        tuple(float(v) for v in color),
        thickness if thickness < 0 else max(1, int(thickness)),
        cv2.LINE_AA,
        4,
    )


def _polyline(img, pts, color, thickness, closed=False) -> None:
    arr = np.round(np.asarray(pts) * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(img, [arr], closed, tuple(float(v) for v in color), max(1, int(thickness)), cv2.LINE_AA, 4)


def _render_face_layer(ident: dict, scene: dict, c: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Draw one person in canonical pose on a ``c x c`` canvas.

    Returns the colour layer (c, c, 3) float32, its coverage alpha (c, c) and region masks
    (face, eyes, mouth) in the same frame.
    """
    rgb = np.zeros((c, c, 3), np.float32)
    alpha = np.zeros((c, c), np.float32)
    cx, cy = c / 2, c * 0.48
    fw, fh = ident["face_w"] * c, ident["face_h"] * c
    yaw = scene["yaw"]
    fx = cx + yaw * fw * 0.35  # features slide sideways with head yaw
    skin, hair = ident["skin"], ident["hair"]
    style = ident["hair_style"]

    def draw(fn, *args, color, a=1.0, **kw):
        fn(rgb, *args, color=color, **kw)
        fn(alpha, *args, color=(a,), **kw)

    # shoulders and neck
    draw(_ellipse, (cx, c * 0.98), (fw * 1.9, fh * 0.5), 0, color=ident["clothes"])
    cv2.rectangle(
        rgb,
        _pt(cx - fw * 0.45, cy),
        _pt(cx + fw * 0.45, c * 0.85),
        tuple(float(v) for v in skin * 0.85),
        -1,
        cv2.LINE_AA,
        4,
    )
    cv2.rectangle(alpha, _pt(cx - fw * 0.45, cy), _pt(cx + fw * 0.45, c * 0.85), (1.0,), -1, cv2.LINE_AA, 4)
    if style == "long":
        draw(_ellipse, (cx, cy + fh * 0.2), (fw * 1.25, fh * 1.25), 0, color=hair * 0.9)
    # ears
    for side in (-1, 1):
        ex = cx + side * fw * (1.0 - 0.15 * side * yaw)
        draw(_ellipse, (ex, cy), (fw * 0.16, fh * 0.2), 0, color=skin * 0.92)
    # face: upper ellipse plus a narrowing jaw
    draw(_ellipse, (cx, cy), (fw, fh), 0, color=skin)
    jaw = ident["jaw"]
    face_mask = np.zeros((c, c), np.float32)
    _ellipse(face_mask, (cx, cy), (fw, fh), 0, (1.0,))
    if jaw > 0:
        cut = np.zeros((c, c), np.float32)
        _ellipse(cut, (cx, cy + fh * 0.15), (fw * (1 - jaw), fh * 0.85), 0, (1.0,))
        low = np.zeros((c, c), np.float32)
        low[int(cy + fh * 0.1) :] = 1
        keep = 1 - low * (1 - cut)
        bg_keep = 1 - face_mask * (1 - keep)  # pixels of the face cut away by the jaw
        rgb = rgb * bg_keep[..., None] + (1 - bg_keep)[..., None] * (skin * 0.85)  # becomes neck shade
        face_mask *= keep
    # soft shading towards the face border
    yy, xx = np.mgrid[0:c, 0:c].astype(np.float32)
    rr = ((xx - cx) / fw) ** 2 + ((yy - cy) / fh) ** 2
    rgb *= (1 - 0.18 * np.clip(rr, 0, 1) ** 2 * face_mask)[..., None]
    # cheeks
    for side in (-1, 1):
        blush: np.ndarray = np.zeros((c, c), np.float32)
        _ellipse(blush, (fx + side * fw * 0.5, cy + fh * 0.2), (fw * 0.2, fh * 0.1), 0, (1.0,))
        blush = cv2.GaussianBlur(blush, (0, 0), fw * 0.08)
        rgb += blush[..., None] * np.array([18, -4, -4], np.float32)
    # moles
    for mx, my in ident["moles"]:
        _ellipse(rgb, (fx + mx * fw * 0.8, cy + my * fh * 0.8), (fw * 0.02, fw * 0.02), 0, skin * 0.5)

    # eyes
    eyes_mask = np.zeros((c, c), np.float32)
    ey = cy + ident["eye_y"] * fh
    ew, eh = ident["eye_size"] * fw, ident["eye_size"] * fw * ident["eye_ratio"] * scene["eye_open"]
    for side in (-1, 1):
        ex = fx + side * ident["eye_dx"] * fw
        _ellipse(rgb, (ex, ey), (ew, eh), 0, (245, 245, 240))
        _ellipse(rgb, (ex + yaw * ew * 0.4, ey), (eh * 0.95, eh * 0.95), 0, ident["iris"])
        _ellipse(rgb, (ex + yaw * ew * 0.4, ey), (eh * 0.4, eh * 0.4), 0, (15, 12, 12))
        _ellipse(rgb, (ex + yaw * ew * 0.4 - eh * 0.3, ey - eh * 0.3), (eh * 0.15, eh * 0.15), 0, (255, 255, 255))
        _ellipse(rgb, (ex, ey), (ew, eh), 0, skin * 0.45, thickness=max(1, c // 160), start=180, end=360)
        bx = ex + side * ident["brow_tilt"] * ew
        brow = [
            (ex - ew * 1.1, ey - eh - fh * 0.07 + side * ident["brow_tilt"] * fh * 0.05),
            (bx, ey - eh - fh * 0.1),
            (ex + ew * 1.1, ey - eh - fh * 0.07 - side * ident["brow_tilt"] * fh * 0.05),
        ]
        _polyline(rgb, brow, hair * 0.8, ident["brow_thick"] * fh)
        _ellipse(eyes_mask, (ex, ey - fh * 0.04), (ew * 1.5, eh + fh * 0.12), 0, (1.0,))

    # nose
    nl, nw = ident["nose_len"] * fh, ident["nose_w"] * fw
    ny = ey + nl
    _polyline(
        rgb,
        [(fx + yaw * nw, ey + nl * 0.2), (fx + nw * 0.25 + yaw * nw, ny - nl * 0.1), (fx, ny)],
        skin * 0.7,
        max(1, c // 200),
    )
    for side in (-1, 1):
        _ellipse(rgb, (fx + side * nw * 0.3, ny), (nw * 0.14, nw * 0.08), 0, skin * 0.45)
    shade = np.zeros((c, c), np.float32)
    _ellipse(shade, (fx, ny + nl * 0.05), (nw * 0.6, nl * 0.15), 0, (1.0,))
    rgb *= (1 - 0.1 * cv2.GaussianBlur(shade, (0, 0), nw * 0.2))[..., None]

    # mouth
    mouth_mask = np.zeros((c, c), np.float32)
    my = cy + ident["mouth_y"] * fh
    mw = ident["mouth_w"] * fw
    lt = ident["lip_thick"] * fh
    smile = scene["smile"] * lt * 1.2
    if scene["mouth_open"] > 0:
        _ellipse(rgb, (fx, my + lt * 0.3), (mw * 0.8, lt * (0.6 + scene["mouth_open"])), 0, (50, 20, 25))
        _ellipse(rgb, (fx, my - lt * 0.1), (mw * 0.6, lt * 0.35), 0, (235, 232, 220))
    upper = [
        (fx - mw, my),
        (fx - mw * 0.35, my - lt - smile * 0.3),
        (fx, my - lt * 0.7),
        (fx + mw * 0.35, my - lt - smile * 0.3),
        (fx + mw, my),
    ]
    _polyline(rgb, upper, ident["lip"], lt * 0.7)
    lower = [(fx - mw, my - smile), (fx, my + lt * (0.9 + scene["mouth_open"]) + smile * 0.3), (fx + mw, my - smile)]
    _polyline(rgb, lower, ident["lip"] * 0.92, lt * 0.9)
    _ellipse(mouth_mask, (fx, my + lt * 0.3), (mw * 1.35, lt * 2.6 + fh * 0.05), 0, (1.0,))

    # beard
    if ident["beard"]:
        b = np.zeros((c, c), np.float32)
        _ellipse(b, (cx, cy + fh * 0.45), (fw * 0.95, fh * 0.6), 0, (1.0,))
        b *= face_mask * (yy > ey + nl * 0.8)
        b = cv2.GaussianBlur(b, (0, 0), fw * 0.04) * 0.75
        keep_mouth = 1 - np.clip(cv2.GaussianBlur(mouth_mask, (0, 0), 2), 0, 1) * 0.7
        b *= keep_mouth
        rgb = rgb * (1 - b[..., None]) + hair * b[..., None]

    # hair on top
    if style != "bald":
        cap = np.zeros((c, c), np.float32)
        _ellipse(cap, (cx, cy - fh * 0.35), (fw * 1.08, fh * 0.75), 0, (1.0,))
        forehead = cy - fh * 0.55 + (0.08 if style == "short" else 0.0) * fh
        cap *= yy < forehead + np.abs(xx - cx) * 0.6
        if style == "curly":
            for k in range(14):
                ang = math.pi * (k / 13.0)
                _ellipse(
                    cap,
                    (cx - math.cos(ang) * fw * 1.0, cy - fh * 0.4 - math.sin(ang) * fh * 0.6),
                    (fw * 0.22, fw * 0.22),
                    0,
                    (1.0,),
                )
        if style == "bun":
            _ellipse(cap, (cx, cy - fh * 1.15), (fw * 0.35, fw * 0.3), 0, (1.0,))
        cap = np.clip(cap, 0, 1)
        streak = 1 + 0.08 * np.sin(xx * 0.25 + yy * 0.05)
        rgb = rgb * (1 - cap[..., None]) + (hair * streak[..., None]) * cap[..., None]
        alpha = np.maximum(alpha, cap)
    # glasses
    if ident["glasses"]:
        for side in (-1, 1):
            ex = fx + side * ident["eye_dx"] * fw
            _ellipse(rgb, (ex, ey), (ew * 1.45, ew * 1.1), 0, (30, 30, 30), thickness=max(2, c // 110))
        _polyline(
            rgb,
            [(fx - ident["eye_dx"] * fw + ew * 1.45, ey), (fx + ident["eye_dx"] * fw - ew * 1.45, ey)],
            (30, 30, 30),
            max(2, c // 110),
        )

    return (
        rgb,
        np.clip(alpha, 0, 1),
        {"face": face_mask, "eyes": eyes_mask * face_mask, "mouth": mouth_mask * face_mask},
    )


def _background(scene: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    c1, c2, ang = scene["bg"]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    t = np.clip(0.5 + (xx - 0.5) * math.cos(ang) + (yy - 0.5) * math.sin(ang), 0, 1)[..., None]
    bg = c1 * (1 - t) + c2 * t
    for _ in range(scene["clutter"]):
        color = tuple(float(v) for v in rng.uniform(0, 255, 3))
        p, q = rng.uniform(0, size, 2), rng.uniform(size * 0.05, size * 0.4, 2)
        if rng.random() < 0.5:
            cv2.rectangle(bg, _pt(*p), _pt(*(p + q)), color, -1, cv2.LINE_AA, 4)
        else:
            _ellipse(bg, p, q / 2, rng.uniform(0, 180), color)
    return cv2.GaussianBlur(bg.astype(np.float32), (0, 0), size * 0.01 + 0.5)


def _lighting(scene: dict, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    d = xx * math.cos(scene["light_dir"]) + yy * math.sin(scene["light_dir"])
    gain = scene["brightness"] * (1 + 2 * scene["light_strength"] * d)
    return gain[..., None] * scene["white_balance"].astype(np.float32)


def _pose_matrix(scene: dict, size: int) -> np.ndarray:
    c = size * _SS
    m = cv2.getRotationMatrix2D((c / 2, c / 2), scene["angle"], scene["scale"] / _SS)
    m[:, 2] += (size / 2 - c / 2) + scene["shift"]
    return m


def render(ident: dict, scene: dict, size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render a lit photo-like image (size, size, 3) float32 in 0..255 and its region masks."""
    rgb, alpha, masks = _render_face_layer(ident, scene, size * _SS)
    m = _pose_matrix(scene, size)

    def warp(a: np.ndarray) -> np.ndarray:  # canonical 2x canvas -> posed image
        return cv2.warpAffine(a, m, (size, size), flags=cv2.INTER_LINEAR)

    rgb, alpha = warp(rgb), warp(alpha)
    masks = {k: np.clip(warp(v), 0, 1) for k, v in masks.items()}
    img = _background(scene, size, rng) * (1 - alpha[..., None]) + rgb * alpha[..., None]
    return img * _lighting(scene, size), masks


def _feather(mask: np.ndarray, erode: float, sigma: float) -> np.ndarray:
    if erode > 0:
        k = max(1, int(round(erode)))
        mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    return np.clip(cv2.GaussianBlur(mask, (0, 0), max(sigma, 0.3)), 0, 1)[..., None]


def _colour_transfer(src: np.ndarray, dst: np.ndarray, mask: np.ndarray, strength: float) -> np.ndarray:
    """Move ``src``'s mean colour under ``mask`` towards ``dst``'s (partial colour correction)."""
    w = mask[..., 0] > 0.5
    if w.sum() < 4:
        return src
    shift = dst[w].mean(0) - src[w].mean(0)
    return src + strength * shift


def manipulate(
    base: np.ndarray,
    masks: dict,
    ident: dict,
    donor: dict,
    scene: dict,
    kind: str,
    size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Forge ``base`` (a rendered real image of ``ident`` under ``scene``) with one manipulation."""
    if kind == "upsample":
        f = int(rng.choice([2, 3, 4]))
        small = cv2.resize(base, (size // f, size // f), interpolation=cv2.INTER_AREA)
        up = cv2.resize(
            small, (size, size), interpolation=cv2.INTER_NEAREST if rng.random() < 0.3 else cv2.INTER_LINEAR
        )
        yy, xx = np.mgrid[0:size, 0:size]
        up = up + rng.uniform(3.0, 7.0) * (((xx + yy) % 2) * 2 - 1)[..., None]  # transposed-conv checkerboard
        mask = _feather(masks["face"], size * 0.03, rng.uniform(1.0, 3.0))
        return base * (1 - mask) + up * mask

    # swap and partial: render the donor in the same pose, under its own lighting and slightly off
    donor_scene = dict(scene)
    donor_scene.update(
        shift=scene["shift"] + rng.normal(0, size * 0.006, 2),
        scale=scene["scale"] * rng.normal(1.0, 0.015),
        light_dir=rng.uniform(0, 2 * math.pi),
        light_strength=rng.uniform(0.0, 0.35),
        brightness=scene["brightness"] * rng.normal(1.0, 0.05),
    )
    donor_img, donor_masks = render(donor, donor_scene, size, rng)
    if kind == "swap":
        region = masks["face"] * donor_masks["face"]
        mask = _feather(region, size * rng.uniform(0.02, 0.05), rng.uniform(0.8, 3.0))
    else:  # partial: eyes or mouth
        part = "eyes" if rng.random() < 0.5 else "mouth"
        mask = _feather(np.maximum(masks[part], donor_masks[part]), 0, rng.uniform(0.8, 2.5))
    donor_img = _colour_transfer(donor_img, base, mask, rng.uniform(0.0, 0.8))
    return base * (1 - mask) + donor_img * mask


def postprocess(img: np.ndarray, scene: dict, rng: np.random.Generator) -> np.ndarray:
    """Camera noise and blur, the same for both classes; returns uint8 RGB."""
    img = img + rng.normal(0, scene["noise"], img.shape)
    if scene["blur"] > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), scene["blur"])
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    """Encode with one encoder and settings for every image (PIL, 4:2:0, baseline)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality), subsampling=2, optimize=False)
    return buf.getvalue()


def make_image(cfg: SynthConfig, identity: int, index: int, fake: bool) -> tuple[bytes, dict]:
    """Render one dataset image; returns the JPEG bytes and its manifest row (without ``file``)."""
    rng = np.random.default_rng([cfg.seed, identity, index, int(fake)])
    ident = sample_identity(cfg.seed, identity)
    scene = sample_scene(rng, cfg.image_size)
    img, masks = render(ident, scene, cfg.image_size, rng)
    kind = ""
    donor_id: int | str = ""
    if fake:
        kind = str(rng.choice(cfg.manipulations))
        if kind != "upsample":
            others = [i for i in family_members(cfg, identity) if i != identity]
            donor_id = int(others[rng.integers(len(others))])
            donor = sample_identity(cfg.seed, donor_id)
        else:
            donor = ident
        img = manipulate(img, masks, ident, donor, scene, kind, cfg.image_size, rng)
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    data = encode_jpeg(postprocess(img, scene, rng), quality)
    family = family_members(cfg, identity)[0] // cfg.family_size
    row = {
        "label": "fake" if fake else "real",
        "group": f"fam{family:04d}",
        "identity": f"id{identity:05d}",
        "manipulation": kind,
        "donor": "" if donor_id == "" else f"id{donor_id:05d}",
        "quality": quality,
    }
    return data, row


def _render_job(args: tuple) -> tuple[str, dict]:
    cfg, identity, index, fake, out = args
    data, row = make_image(cfg, identity, index, fake)
    rel = f"{row['label']}/id{identity:05d}_{index:02d}.jpg"
    (Path(out) / rel).write_bytes(data)
    return rel, row


def generate(
    out_dir: str | os.PathLike, cfg: SynthConfig | None = None, overwrite: bool = False, progress: bool = True
) -> Path:
    """Write the dataset to ``out_dir`` (``real/``, ``fake/``, ``manifest.csv``).

    The folder is built under a temporary name and renamed when complete, so an interrupted
    run never leaves a folder that looks finished.

    Returns:
        The dataset folder.
    """
    cfg = cfg or SynthConfig()
    out = Path(out_dir)
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "real").mkdir(parents=True)
    (tmp / "fake").mkdir()
    jobs = [
        (cfg, i, j, fake, str(tmp))
        for i in range(cfg.n_identities)
        for j in range(cfg.images_per_identity)
        for fake in (False, True)
    ]
    workers = cfg.workers or os.cpu_count() or 1
    rows = []
    bar = progress_bar(total=len(jobs), desc="synthesising", unit="images", disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(workers, initializer=lifetime.end_with_parent) as pool:  # no orphans if killed
            for rel, row in pool.map(_render_job, jobs, chunksize=16):
                rows.append({"file": rel, **row})
                bar.update()
    else:
        for job in jobs:
            rel, row = _render_job(job)
            rows.append({"file": rel, **row})
            bar.update()
    bar.close()
    rows.sort(key=lambda r: r["file"])
    with open(tmp / MANIFEST_NAME, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS)
        w.writeheader()
        w.writerows(rows)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def config_dict(cfg: SynthConfig) -> dict:
    """The config as plain types (for YAML/JSON)."""
    d = asdict(cfg)
    d["jpeg_quality"] = list(cfg.jpeg_quality)
    d["manipulations"] = list(cfg.manipulations)
    return d
