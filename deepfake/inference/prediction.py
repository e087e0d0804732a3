"""What the predictor takes and gives: its settings, the decoding of inputs, results and errors."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..core import paths
from ..data.media import MAX_PIXELS, BadInputError, decode_image, kind_of, read_bytes, to_rgb_array
from .backends import BACKENDS

#: ``checkpoint``: crop as the checkpoint's training data was cropped (its preprocessing contract);
#: ``detect`` / ``none``: force face detection on or off (a warning says it differs from training).
FACE_POLICIES = ("checkpoint", "detect", "none")
DEFAULT_CHECKPOINT = paths.MODELS_DIR / "best.pt"
DEFAULT_CALIBRATION = paths.REPORTS_DIR / "eval" / "calibration.json"

#: What ``Predictor.predict`` accepts as one image.
ImageInput = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray


class InputError(Exception):
    """An input could not be scored (the message names it and says what to do)."""


class UnreadableInputError(InputError, OSError):
    """A file or buffer is not a decodable image or video."""


class NoFaceError(InputError):
    """Face detection was required and found no face."""


class InputTooLargeError(InputError):
    """An image has more pixels than ``PredictConfig.max_pixels``, or a file more bytes than the package reads."""


class InputTooSmallError(InputError):
    """An image is smaller than the checkpoint's ``min_side``: nothing can be told from it."""


@dataclass(frozen=True)
class PredictConfig:
    """How inputs are scored (the crop itself comes from the checkpoint).

    Attributes:
        face: ``checkpoint`` (as training cropped: the checkpoint's contract), ``detect``
            (always detect the face; no face is an error) or ``none`` (no detection: the
            centre square, or the whole image for a model trained on whole images). Anything
            but ``checkpoint`` that differs from training is logged as a warning.
        margin: crop margin overriding the checkpoint's (None: the checkpoint's).
        backend: ``eager`` | ``jit`` | ``int8`` (``deepfake.inference.backends``; CPU only for the last two).
        int8_calibration: images (files or folders) the ``int8`` backend calibrates its
            activation ranges on; a few dozen from the training distribution.
        int8_max_change: the ``int8`` backend is refused (the exact model runs, and ``describe``
            says why) when it moves the probability of a calibration image by more than this
            against the exact model. None: not checked.
        batch_size: images per forward pass for lists, folders and video frames.
        workers: threads decoding and cropping images ahead of the model (0: in the caller).
        video_frames: frames sampled evenly from each video (None: as many as training sampled).
        max_pixels: larger images are refused before decoding (decompression bombs).
        calibration_file: JSON with ``temperature`` and ``threshold`` (written by the evaluation
            stage); used when it exists, else temperature 1 and threshold 0.5. Empty: never.
    """

    face: str = "checkpoint"
    margin: float | None = None
    backend: str = "eager"
    int8_calibration: tuple[str, ...] = ()
    int8_max_change: float | None = 0.1
    batch_size: int = 32
    workers: int = 2
    video_frames: int | None = None
    max_pixels: int = MAX_PIXELS
    calibration_file: str = str(DEFAULT_CALIBRATION)

    def __post_init__(self) -> None:
        if self.face not in FACE_POLICIES:
            raise ValueError(f"face must be one of {FACE_POLICIES}, got {self.face!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "int8" and not self.int8_calibration:
            raise ValueError(
                "backend='int8' needs int8_calibration: a few dozen images (files or folders) to calibrate on"
            )
        if self.int8_max_change is not None and not 0 < self.int8_max_change <= 1:
            raise ValueError(f"int8_max_change must be in (0, 1] (a change of probability), got {self.int8_max_change}")
        if self.margin is not None and self.margin < 1:
            raise ValueError(f"margin must be at least 1, got {self.margin}")
        if self.batch_size < 1 or (self.video_frames is not None and self.video_frames < 1):
            raise ValueError("batch_size and video_frames must be at least 1")
        object.__setattr__(self, "int8_calibration", tuple(str(p) for p in self.int8_calibration))


@dataclass
class Prediction:
    """The verdict on one image (or one video frame).

    Attributes:
        source: file path, ``<bytes>``, ``<array>``... or ``video#frame`` for frames.
        label: ``fake`` or ``real`` (probability at or above the threshold is fake).
        probability: calibrated probability that the image is fake.
        logit: raw network output.
        box: face box ``(x, y, w, h)`` in pixels of the input image; None when the whole image
            was used.
        image_size: input ``(width, height)``.
        timing_ms: ``decode``, ``face`` (detection and crop), ``model`` (this image's share of
            its batch) and ``total`` milliseconds.
        frame: frame index for video frames.
    """

    source: str
    label: str
    probability: float
    logit: float
    box: tuple[int, int, int, int] | None
    image_size: tuple[int, int]
    timing_ms: dict[str, float] = field(default_factory=dict)
    frame: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VideoPrediction:
    """Per-frame verdicts on evenly spaced frames and the video verdict (mean frame probability)."""

    source: str
    label: str
    probability: float
    frames: list[Prediction]
    n_frames: int  # frames in the video (as the container reports it)
    skipped: dict[int, str] = field(default_factory=dict)  # frame index: why it was not scored
    timing_ms: dict[str, float] = field(default_factory=dict)
    images: dict[int, np.ndarray] = field(default_factory=dict, repr=False)  # sampled frames (keep_frames=True)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("images")
        return d


@dataclass
class PredictionError:
    """An input that could not be scored (``on_error='collect'``)."""

    source: str
    error: str
    kind: str  # exception class name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Prepared:
    """One input ready for the network, plus what is needed to report and explain it."""

    source: str
    crop: np.ndarray  # (S, S, 3) uint8 RGB: exactly what the model sees before normalisation
    box: tuple[int, int, int, int] | None
    image_size: tuple[int, int]
    rgb: np.ndarray | None = None  # decoded image, kept for display
    scale: float = 1.0  # input pixels per decoded pixel
    timing_ms: dict[str, float] = field(default_factory=dict)
    frame: int | None = None


# --------------------------------------------------------------------------------------------
# Reading inputs
# --------------------------------------------------------------------------------------------


def is_video_path(path: str | os.PathLike) -> bool:
    return kind_of(path) == "video"


@dataclass
class Inputs:
    """What ``find_inputs`` found: the files to score, the paths that cannot be scored, and the
    files passed over because they are not images or videos (counted by extension, or reason)."""

    items: list[Path | PredictionError]  # in the order found
    ignored: dict[str, int]

    @property
    def files(self) -> list[Path]:
        return [i for i in self.items if isinstance(i, Path)]

    @property
    def problems(self) -> list[PredictionError]:
        return [i for i in self.items if isinstance(i, PredictionError)]

    def merge(self, results: list[Any]) -> list[Any]:
        """``results`` of ``files`` (in their order) with the problems in their places: a row per path found."""
        scored = iter(results)
        return [next(scored) if isinstance(i, Path) else i for i in self.items]

    def ignored_note(self) -> str:
        """One line on the files passed over, e.g. ``3 files not scored: .txt 2, hidden 1``; empty when none."""
        if not self.ignored:
            return ""
        n = sum(self.ignored.values())
        return f"{n} file(s) not scored (not images or videos): " + ", ".join(
            f"{k} {v}" for k, v in sorted(self.ignored.items())
        )


#: Problems of a path found in a folder that matter even without an image or video extension.
_FOLDER_PROBLEMS = ("unreadable_folder", "link_loop")


def find_inputs(sources: Iterable[str | os.PathLike]) -> Inputs:
    """Files named directly, plus every image or video under the folders named (sorted by path).

    Nothing found in a folder is dropped in silence: broken or looping links, FIFOs, devices and
    unreadable files with an image or video extension, and folders that cannot be listed, are
    returned as ``problems`` (each a ``PredictionError`` row); other files, and hidden ones (``._x.jpg``
    metadata beside photos copied from a Mac), are counted in ``ignored``.
    """
    from ..data.ingest import walk

    items: list[Path | PredictionError] = []
    ignored: dict[str, int] = {}
    for src in sources:
        p = Path(src)
        if not p.is_dir():
            items.append(p)
            continue
        for entry in walk(p):
            media = kind_of(entry.path) is not None
            if not entry.problem and media:
                items.append(entry.path)
            elif entry.problem and entry.problem != "hidden" and (media or entry.problem in _FOLDER_PROBLEMS):
                e = input_error(BadInputError(entry.path, entry.problem, entry.detail), str(entry.path))
                items.append(PredictionError(str(entry.path), str(e), type(e).__name__))
            else:
                what = entry.problem.replace("_", " ") if entry.problem else entry.path.suffix.lower() or "no extension"
                ignored[what] = ignored.get(what, 0) + 1
    return Inputs(items, ignored)


def list_inputs(sources: Iterable[str | os.PathLike]) -> list[Path]:
    """The files ``find_inputs`` finds to score (its problems and ignored files left out)."""
    return find_inputs(sources).files


def source_name(item: Any, name: str | None) -> str:
    if name:
        return name
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(item, Image.Image):
        return "<PIL image>"
    return "<array>"


def input_error(e: BadInputError, source: str) -> InputError:
    """The predictor's error for a decoder's refusal, naming the input and what to do."""
    detail = f" ({e.detail})" if e.detail else ""
    if e.reason == "too_large":
        return InputTooLargeError(
            f"{source} has too many pixels{detail}: refused unread as a possible decompression bomb; downscale it "
            "first (or raise PredictConfig.max_pixels if you trust it)"
        )
    if e.reason == "file_too_large":
        return InputTooLargeError(f"{source} is too large to read{detail}; pass a smaller file")
    if e.reason == "empty_file":
        return UnreadableInputError(f"{source} is empty (0 bytes); pass an image or video file")
    what = {
        "missing_file": "does not exist",
        "broken_link": f"is a broken symbolic link{detail}: its target does not exist",
        "link_loop": f"is a symbolic link that loops{detail}",
        "not_regular_file": f"is not a regular file{detail}: not read (it could block or never end)",
        "unreadable": f"cannot be opened{detail}; check its permissions",
        "unreadable_folder": f"is a folder that cannot be listed{detail}; its files were not scored",
        "video_unreadable": "could not be opened as a video (OpenCV); check the file and its codec",
        "video_no_frames": "contains no decodable frame; check the file and its codec",
    }.get(e.reason)
    if what:
        return UnreadableInputError(f"{source} {what}")
    return UnreadableInputError(
        f"{source} is not a decodable image ({e.reason}{': ' + e.detail if e.detail else ''}); "
        "check the file (truncated? corrupt?) or remove it"
    )


def decode_input(item: ImageInput, source: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Any image input as upright (H, W, 3) uint8 RGB, by the package's one decoder (``deepfake.data.media``)."""
    try:
        if isinstance(item, (Image.Image, np.ndarray)):
            return to_rgb_array(item, source)
        if isinstance(item, (str, os.PathLike)):
            return decode_image(read_bytes(item), source, max_pixels)
        if isinstance(item, (bytes, bytearray, memoryview)):
            return decode_image(bytes(item), source, max_pixels)
    except BadInputError as e:
        raise input_error(e, source) from e
    raise TypeError(f"cannot score a {type(item).__name__}; pass a path, bytes, a PIL image or an (H, W, 3) array")


def ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
