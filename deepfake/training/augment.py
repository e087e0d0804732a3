"""Training augmentations, split between the data workers and one batched pass on the device.

Every image draws its augmentation from its own generator, seeded by the sampler with a
number that depends only on ``(seed, epoch, position in the epoch)`` (see
``deepfake.training.loading.EpochBatchSampler``). Augmentations therefore do not depend on the number
of workers, of GPUs, or on whether a run was resumed.

* In the worker, on the decoded ``uint8`` image (these need the CPU): Gaussian blur and JPEG
  re-compression, the degradations detectors must be robust to.
* Batched, on ``uint8`` batches moved to the training device (GPU or CPU): horizontal flip
  and rotation (one ``grid_sample``), colour jitter (brightness, contrast, saturation, hue as
  one per-image colour matrix) and normalisation. The worker only samples their parameters,
  one row of ``N_PARAMS`` numbers per image.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

#: Columns of the per-image parameter row: flip (0/1), angle (degrees), brightness, contrast, saturation, hue.
PARAM_NAMES = ("flip", "angle", "brightness", "contrast", "saturation", "hue")
N_PARAMS = len(PARAM_NAMES)
IDENTITY_PARAMS = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 0.0], dtype=np.float32)


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentations.

    Attributes:
        hflip: probability of a horizontal flip.
        rotation: maximum rotation in degrees, uniform in ``[-rotation, rotation]`` (0 disables).
        color_jitter: brightness, contrast and saturation factors uniform in ``[1 - j, 1 + j]``;
            hue shift uniform in ``[-j/4, j/4]`` of a turn (0 disables). Applied in that order.
        jpeg_prob: probability of re-compressing the image as JPEG.
        jpeg_quality: inclusive range the re-compression quality is drawn from.
        blur_prob: probability of a Gaussian blur (before any re-compression).
        blur_sigma: range the blur's standard deviation (pixels, at the network input size) is drawn from.
    """

    hflip: float = 0.5
    rotation: float = 10.0
    color_jitter: float = 0.2
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (30, 95)
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    def __post_init__(self) -> None:
        for name in ("hflip", "jpeg_prob", "blur_prob"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"augment {name} is a probability, got {v}")
        lo: float
        hi: float
        lo, hi = self.jpeg_quality
        if not 1 <= lo <= hi <= 100:
            raise ValueError(f"jpeg quality range must satisfy 1 <= min <= max <= 100, got {self.jpeg_quality}")
        lo, hi = self.blur_sigma
        if not 0 < lo <= hi:
            raise ValueError(f"blur sigma range must satisfy 0 < min <= max, got {self.blur_sigma}")
        if self.rotation < 0 or self.color_jitter < 0:
            raise ValueError(f"rotation and color_jitter must be >= 0, got {self.rotation} and {self.color_jitter}")

    @property
    def hue(self) -> float:
        return min(self.color_jitter / 4, 0.5)


@dataclass(frozen=True)
class SampleAugment:
    """What one image gets: worker-side degradations and the device-side parameter row."""

    params: np.ndarray  # (N_PARAMS,) float32
    blur_sigma: float = 0.0  # 0: no blur
    jpeg_quality: int = 0  # 0: no re-compression


def sample_augment(cfg: AugmentConfig, rng: np.random.Generator) -> SampleAugment:
    """Draw one image's augmentation. The draws happen in a fixed order, whatever is enabled."""
    u = rng.random(9)  # one uniform per decision, so enabling one augmentation does not shift the others
    j = cfg.color_jitter
    params = np.array(
        [
            float(u[0] < cfg.hflip),
            (2 * u[1] - 1) * cfg.rotation,
            1 + (2 * u[2] - 1) * j if j else 1.0,
            1 + (2 * u[3] - 1) * j if j else 1.0,
            1 + (2 * u[4] - 1) * j if j else 1.0,
            (2 * u[5] - 1) * cfg.hue,
        ],
        dtype=np.float32,
    )
    params[2:5] = np.maximum(params[2:5], 0.0)
    lo_s, hi_s = cfg.blur_sigma
    sigma = lo_s + (hi_s - lo_s) * u[7] if u[6] < cfg.blur_prob else 0.0
    q_lo, q_hi = cfg.jpeg_quality
    quality = int(rng.integers(q_lo, q_hi + 1)) if u[8] < cfg.jpeg_prob else 0
    return SampleAugment(params, float(sigma), quality)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an ``(H, W, 3)`` uint8 image; the kernel spans +-3 sigma."""
    k = 2 * math.ceil(3 * sigma) + 1
    return cv2.GaussianBlur(img, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


def jpeg_recompress(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode an ``(H, W, 3)`` RGB uint8 image as JPEG at ``quality`` and decode it again."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def degrade(img: np.ndarray, aug: SampleAugment) -> np.ndarray:
    """Worker-side part of an augmentation: blur, then JPEG re-compression."""
    if aug.blur_sigma > 0:
        img = gaussian_blur(img, aug.blur_sigma)
    if aug.jpeg_quality > 0:
        img = jpeg_recompress(img, aug.jpeg_quality)
    return img


# --------------------------------------------------------------------------------------------
# Batched, on the device
# --------------------------------------------------------------------------------------------


_GRAY = (0.2989, 0.587, 0.114)  # luma weights, as torchvision's rgb_to_grayscale
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)  # (B, 1, H, W)


def _geometry(x: torch.Tensor, flip: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Flip (where ``flip``), then rotate by ``angles`` (degrees, counter-clockwise) about the
    centre with bilinear sampling and zero fill, in one ``grid_sample``."""
    b, _, h, w = x.shape
    rad = angles.to(x.device, x.dtype) * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    mirror = 1 - 2 * flip.to(x.device, x.dtype)  # -1 flips: the input x coordinate is negated
    theta = torch.zeros(b, 2, 3, dtype=x.dtype, device=x.device)  # output -> input, normalised coords
    theta[:, 0, 0], theta[:, 0, 1] = mirror * cos, -mirror * sin * h / w
    theta[:, 1, 0], theta[:, 1, 1] = sin * w / h, cos
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def colour_transform(params: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-image linear colour map of brightness, contrast, saturation and hue, in that order.

    Each step is linear in the pixel (contrast adds an offset proportional to the image's mean
    luma), so the four compose into one ``3x3`` matrix ``M`` plus ``c_off`` times the mean
    luma of the input image. Hue rotates the chroma plane of YIQ by ``hue`` turns (a
    luma-preserving hue shift, as NVIDIA DALI's), rather than going through HSV.

    Args:
        params: ``(B, N_PARAMS)`` rows (columns ``PARAM_NAMES``).

    Returns:
        ``M`` ``(B, 3, 3)`` and ``c_off`` ``(B, 3)`` (float64): ``out = M @ rgb + c_off * mean_luma(in)``.
    """
    p = np.asarray(params, dtype=np.float64).reshape(-1, N_PARAMS)
    b, c, s, h = p[:, 2], p[:, 3], p[:, 4], p[:, 5]
    gray = np.asarray(_GRAY)
    sat = s[:, None, None] * np.eye(3) + (1 - s)[:, None, None] * gray[None, None, :]  # row i: s * e_i + (1 - s) * gray
    yiq = np.asarray(_RGB_TO_YIQ)
    ang = -2 * math.pi * h  # sign chosen so a positive hue turns red towards yellow/green, as in HSV
    rot = np.zeros((len(p), 3, 3))
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = np.cos(ang), -np.sin(ang), np.sin(ang), np.cos(ang)
    hs = np.linalg.inv(yiq) @ rot @ yiq @ sat  # (B, 3, 3)
    m = (c * b)[:, None, None] * hs
    c_off = ((1 - c) * b)[:, None] * hs.sum(-1)  # contrast pulls towards the mean luma (after brightness)
    return m, c_off


def _inverse_geometry(flip: float, angle: float, h: int, w: int) -> np.ndarray:
    """``2x3`` map from output to input pixel coordinates of a flip then a rotation about the centre."""
    rad = math.radians(angle)
    mirror = -1.0 if flip > 0 else 1.0
    a, b, c, d = mirror * math.cos(rad), -mirror * math.sin(rad), math.sin(rad), math.cos(rad)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    return np.array([[a, b, cx - a * cx - b * cy], [c, d, cy - c * cx - d * cy]])


def apply_image(img: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``apply_batch`` for one ``(H, W, 3)`` uint8 image, with OpenCV, in uint8.

    The same flip, rotation (bilinear, zero fill) and colour map as the batched version, up to
    uint8 rounding (after the geometry and after the colour map); used by the data workers when
    training on a CPU, where these SIMD uint8 kernels cost a fraction of float tensor ops.
    """
    flip, angle = float(params[0]), float(params[1])
    h, w = img.shape[:2]
    if angle != 0:
        inv = _inverse_geometry(flip, angle, h, w)
        img = cv2.warpAffine(
            img,
            inv,
            (w, h),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
    elif flip > 0:
        img = np.ascontiguousarray(img[:, ::-1])
    if np.any(np.asarray(params[2:6], dtype=np.float64) != (1.0, 1.0, 1.0, 0.0)):
        m, c_off = colour_transform(params)
        offset = c_off[0] * (np.asarray(cv2.mean(img)[:3]) @ np.asarray(_GRAY)) if params[3] != 1 else np.zeros(3)
        img = cv2.transform(img, np.hstack([m[0], offset[:, None]]))  # saturating: clamps to [0, 255]
    return img


def apply_batch(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Flip, rotate and colour-jitter a float ``(B, 3, H, W)`` batch in [0, 1], per image.

    Args:
        x: images, values in [0, 1].
        params: ``(B, N_PARAMS)`` rows from ``sample_augment`` (columns ``PARAM_NAMES``), on the
            CPU (the decisions about which steps to run are taken there, without a device sync).

    Returns:
        The augmented batch, values in [0, 1]. Geometry is one ``grid_sample``; the colour
        steps are one per-image affine map (``colour_transform``) clamped to [0, 1] once, so a
        brightness that saturates a pixel is not clamped before contrast as torchvision's
        sequential ``ColorJitter`` would. Steps that are the identity for the whole batch are skipped.
    """
    params = params.detach().cpu().float()
    flip, angle = params[:, 0], params[:, 1]
    if bool((angle != 0).any()):
        x = _geometry(x, flip, angle)
    elif bool((flip > 0).any()):
        x = torch.where((flip > 0).to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
    colour = params[:, 2:]
    if bool((colour != torch.tensor([1.0, 1.0, 1.0, 0.0])).any()):
        m, c_off = (torch.from_numpy(t).float().to(x.device) for t in colour_transform(params.numpy()))
        out = torch.einsum("bij,bjhw->bihw", m, x)  # (B, 3, H, W)
        if bool((params[:, 3] != 1).any()):
            luma = (x.mean(dim=(2, 3)) @ torch.tensor(_GRAY, device=x.device)).view(-1, 1)  # (B, 1)
            out = out + (c_off * luma).view(-1, 3, 1, 1)
        x = out.clamp_(0, 1)
    return x
