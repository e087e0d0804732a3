"""The preprocessing contract: how a decoded image becomes the model's input, on every path.

Training crops faces once (the preprocess stage), stores the crops, and trains on them resized
to the network's input size. Scoring must do exactly the same, so every scoring path (the
validation pass of training, the evaluate stage, robustness, the cross-dataset stage, the
predictor and the widget) goes through the functions here:

1. ``crop_image``: the crop the preprocess stage makes (face detection and margin, or the
   centre square), at ``crop_size``;
2. ``resize_input``: to the network's ``input_size`` (antialiased bilinear, PIL; a no-op when
   the sizes agree);
3. ``to_model_tensor``: ``(B, H, W, 3)`` uint8 to a normalised ``(B, 3, H, W)`` float batch.

A checkpoint records its ``Preprocessing`` (``Preprocessing.to_dict``), so a predictor loading
it crops and normalises as training did, whatever the caller's defaults.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .faces import FaceBox, crop_face, get_detector
from .media import read_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ``face``: detect the largest face and crop a square around it enlarged by ``margin``;
#: ``center``: the centre square of the image; ``none``: the whole image (resized, not cropped).
CROPS = ("face", "center", "none")
#: Name of the file beside a preprocess cache's manifest that records its contract.
CONTRACT_FILE = "preprocessing.json"


@dataclass(frozen=True)
class Preprocessing:
    """How a model's inputs are made from a decoded image (recorded in every checkpoint).

    Attributes:
        crop: ``face`` | ``center`` | ``none`` (see ``CROPS``).
        detector: the face detector of ``crop="face"`` (``deepfake.faces.DETECTORS``).
        margin: crop side relative to the detected face box's longer side.
        no_face: with ``crop="face"``: ``skip`` (an image without a face is not scored) or
            ``keep_full`` (its centre square is used).
        crop_size: side of the stored crop in pixels (0 with ``crop="none"``).
        input_size: side of the network input in pixels.
        frames_per_video: evenly spaced frames sampled from a video (its score is their mean).
        mean, std: per-channel normalisation of ``[0, 1]`` RGB.
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

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"preprocessing crop must be one of {CROPS}, got {self.crop!r}")
        if self.crop != "none" and self.crop_size < 1:
            raise ValueError(f"preprocessing crop_size must be positive with crop={self.crop!r}, got {self.crop_size}")
        if self.input_size < 1:
            raise ValueError(f"preprocessing input_size must be positive, got {self.input_size}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @property
    def detect(self) -> bool:
        return self.crop == "face"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
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


def crop_image(rgb: np.ndarray, prep: Preprocessing) -> tuple[np.ndarray | None, str, FaceBox | None]:
    """The preprocess stage's crop of a decoded (H, W, 3) uint8 image.

    Returns:
        ``(crop or None, how, box)``: ``how`` is ``face`` (a face was found: ``box``),
        ``full`` (centre square or whole image) or ``none`` (no face and ``no_face="skip"``:
        the crop is None).
    """
    if prep.crop == "none":
        return rgb, "full", None
    if prep.crop == "center":
        return crop_face(rgb, None, prep.crop_size), "full", None
    box = get_detector(prep.detector).largest(rgb)
    if box is not None:
        return crop_face(rgb, box, prep.crop_size, prep.margin), "face", box
    if prep.no_face == "keep_full":
        return crop_face(rgb, None, prep.crop_size), "full", None
    return None, "none", None


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
