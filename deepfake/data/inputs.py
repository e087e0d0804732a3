"""The preprocessing contract: how a decoded image becomes the model's input, on every path.

Training crops faces once (the preprocess stage), stores the crops, and trains on them resized
to the network's input size. Scoring must do exactly the same, so every scoring path (the
validation pass of training, the evaluate stage, robustness, the cross-dataset stage, the
predictor and the widget) goes through the functions here:

1. ``deepfake.data.faces.crop_image`` (``crop_frames`` for a video's sampled frames, following one face): the
   crop the preprocess stage makes (face detection, landmarks, alignment and margin, or the
   centre square), at ``crop_size``;
2. ``resize_input``: to the network's ``input_size`` (antialiased bilinear, PIL; a no-op when
   the sizes agree);
3. ``to_model_tensor``: ``(B, H, W, 3)`` uint8 to a normalised ``(B, 3, H, W)`` float batch.

A checkpoint records its ``Preprocessing`` (``Preprocessing.to_dict``), so a predictor loading
it crops and normalises as training did, whatever the caller's defaults.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .detect import DETECTORS, MAX_UPSAMPLE, SHAPE_MODELS
from .media import read_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ``face``: detect the largest face and crop a square around it enlarged by ``margin``;
#: ``center``: the centre square of the image; ``none``: the whole image (resized, not cropped).
CROPS = ("face", "center", "none")
#: ``several_faces``: ``largest`` (crop the largest face) | ``skip`` (leave the image out).
SEVERAL_FACES = ("largest", "skip")
#: ``face_at_border``: ``keep`` | ``skip`` a face whose box touches the image's edge (cut off).
FACE_AT_BORDER = ("keep", "skip")
#: ``face_search``: ``full`` searches every photo and frame whole at the set upsampling (what
#: contracts written before the setting existed did); ``adaptive`` looks for large faces first and
#: follows a video's face in a window around its last box (``deepfake.data.faces``).
FACE_SEARCHES = ("full", "adaptive")
#: Name of the file beside a preprocess cache's manifest that records its contract.
CONTRACT_FILE = "preprocessing.json"


@dataclass(frozen=True)
class Preprocessing:
    """How a model's inputs are made from a decoded image (recorded in every checkpoint).

    Attributes:
        crop: ``face`` | ``center`` | ``none`` (see ``CROPS``).
        detector: the face detector of ``crop="face"`` (``deepfake.data.detect.DETECTORS``), also
            the one that finds the face for landmarks in centre crops.
        margin: crop side relative to the detected face box's longer side.
        no_face: with ``crop="face"``: ``skip`` (an image without a face is not scored) or
            ``keep_full`` (its centre square is used).
        crop_size: side of the stored crop in pixels (0 with ``crop="none"``).
        input_size: side of the network input in pixels.
        frames_per_video: evenly spaced frames sampled from a video (its score is their mean).
        mean, std: per-channel normalisation of ``[0, 1]`` RGB.
        upsample: detector upsampling of photos (each step doubles the searched side).
        video_upsample: detector upsampling of video frames (their faces are often small).
        landmarks: 0 (none), 5 or 68 landmarks located in each face (``deepfake.data.detect``).
        align: rotate and scale each face so its eyes and mouth (nose with 5 landmarks) sit at
            canonical positions before the margin crop (needs landmarks).
        several_faces: ``SEVERAL_FACES``; face_at_border: ``FACE_AT_BORDER``.
        min_side: an image (or frame) whose shorter side has fewer pixels is left out as
            ``too_small``: nothing can be told from it.
        face_search: how the detector is run (``FACE_SEARCHES``): ``full`` (every image and frame
            searched whole; the default, so contracts recorded before the setting existed crop as
            they did) or ``adaptive`` (large faces first, a video's face followed in a window
            around its last box; ``deepfake.data.faces``).
    """

    crop: str
    detector: str
    margin: float
    no_face: str
    crop_size: int
    input_size: int
    frames_per_video: int = 32
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    upsample: int = 0
    video_upsample: int = 0
    landmarks: int = 0
    align: bool = False
    several_faces: str = "largest"
    face_at_border: str = "keep"
    min_side: int = 32
    face_search: str = "full"

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"preprocessing crop must be one of {CROPS}, got {self.crop!r}")
        if self.crop != "none" and self.detector not in DETECTORS and (self.detect or self.landmarks):
            raise ValueError(f"preprocessing detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.landmarks not in (0, *SHAPE_MODELS):
            raise ValueError(f"preprocessing landmarks must be 0 (none), 5 or 68, got {self.landmarks!r}")
        if self.align and not (self.detect and self.landmarks):
            raise ValueError("preprocessing align needs face crops with landmarks (crop face, landmarks 5 or 68)")
        for name in ("upsample", "video_upsample"):
            if not 0 <= getattr(self, name) <= MAX_UPSAMPLE:
                raise ValueError(f"preprocessing {name} must be between 0 and {MAX_UPSAMPLE}")
        if self.several_faces not in SEVERAL_FACES or self.face_at_border not in FACE_AT_BORDER:
            raise ValueError(
                f"preprocessing several_faces must be one of {SEVERAL_FACES} and face_at_border one of "
                f"{FACE_AT_BORDER}, got {self.several_faces!r}, {self.face_at_border!r}"
            )
        if self.crop != "none" and self.crop_size < 1:
            raise ValueError(f"preprocessing crop_size must be positive with crop={self.crop!r}, got {self.crop_size}")
        if self.input_size < 1:
            raise ValueError(f"preprocessing input_size must be positive, got {self.input_size}")
        if self.face_search not in FACE_SEARCHES:
            raise ValueError(f"preprocessing face_search must be one of {FACE_SEARCHES}, got {self.face_search!r}")
        if self.min_side < 1:
            raise ValueError(f"preprocessing min_side must be at least 1 pixel, got {self.min_side}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @property
    def detect(self) -> bool:
        return self.crop == "face"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        """The contract a checkpoint or cache recorded (keys added since take their defaults: Haar
        contracts from before dlib scored without upsampling, landmarks or alignment; contracts from
        before ``face_search`` searched every image whole)."""
        if not isinstance(d, dict):
            raise ValueError(f"it is a {type(d).__name__} ({d!r:.80}), not a mapping of settings")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing keys {unknown} (written by a newer version of the package?)")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"it lacks {', '.join(missing)}")
        kwargs: dict[str, Any] = {k: (tuple(v) if k in ("mean", "std") else v) for k, v in d.items()}
        return cls(**kwargs)


def whole_image(input_size: int) -> Preprocessing:
    """The contract of data used as it is: no crop, the whole image resized to ``input_size``."""
    return Preprocessing(crop="none", detector="", margin=1.0, no_face="skip", crop_size=0, input_size=input_size)


def read_contract(cache_dir: str | os.PathLike, input_size: int) -> Preprocessing:
    """The contract of a dataset folder: its preprocess cache's (``CONTRACT_FILE``), else ``whole_image``."""
    import json

    f = Path(cache_dir) / CONTRACT_FILE
    if not f.is_file():
        return whole_image(input_size)
    try:
        d = json.loads(f.read_text())
        return Preprocessing.from_dict({**d, "input_size": input_size})
    except (ValueError, TypeError) as e:
        raise ValueError(f"{f} is not a preprocessing contract ({e}); run the preprocess stage again") from e


def resize_input(img: np.ndarray, size: int) -> np.ndarray:
    """An (H, W, 3) uint8 image at ``size`` x ``size``: antialiased bilinear (PIL); unchanged when it already is."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))


def load_input(path: str | os.PathLike, size: int, max_pixels: int | None = None) -> np.ndarray:
    """A stored crop (or an image used whole) read and resized to the network's ``size``: ``(size, size, 3)`` uint8."""
    rgb = read_image(path) if max_pixels is None else read_image(path, max_pixels)
    return np.array(resize_input(rgb, size))  # writable


def to_float(images: torch.Tensor) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 to ``(B, 3, H, W)`` float32 in [0, 1] (a channels-last view: no copy but the dtype's)."""
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected a (B, H, W, 3) image batch, got shape {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2).float().div_(255)  # (B, 3, H, W), channels-last strides


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` of a ``(B, 3, H, W)`` batch."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def to_model_tensor(
    images: torch.Tensor, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 model inputs to the normalised ``(B, 3, H, W)`` float batch the network takes."""
    return normalize(to_float(images), mean, std)
