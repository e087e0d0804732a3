"""Inference: score images, folders and videos exactly as the model saw its training data, fast.

``Predictor`` loads a checkpoint once, crops the face the way the data was cropped
(``deepfake.faces``), applies the evaluation transform of training (resize to the checkpoint's
image size, ImageNet normalisation), and turns logits into calibrated probabilities with the
temperature and threshold the evaluation stage saved (``reports/eval/calibration.json``).
``get_predictor`` caches one predictor per checkpoint, device and settings in the process.

Speed without changing the answer more than measured (``benchmarks/bench_inference.py``):

* ``fast_decode``: JPEGs are decoded at a reduced size (libjpeg DCT scaling, PIL ``draft``)
  that is still at least the network input size, instead of at full size.
* preprocessing is done on uint8 arrays and the batch is built in NHWC (channels-last)
  order, which is the memory format oneDNN convolutions prefer on CPU;
* folders and lists are decoded by a small thread pool (PIL and OpenCV release the GIL) while
  the model scores the previous batch;
* ``backend``: ``eager`` (the exact model), ``jit`` (TorchScript, frozen and optimised for
  inference: batch norm folded into convolutions, oneDNN kernels), ``int8`` (static
  post-training quantisation, calibrated on images you give it).
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, Union

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

from . import paths
from .calibration import read_calibration, sigmoid
from .data import IMAGE_EXTENSIONS, IMAGENET_MEAN, IMAGENET_STD, LABELS
from .faces import DEFAULT_MARGIN, FaceBox, crop_face, default_detector
from .utils import autocast, resolve_device

FACE_POLICIES = ("auto", "detect", "none")
BACKENDS = ("eager", "jit", "int8")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov")
DEFAULT_CHECKPOINT = paths.MODELS_DIR / "best.pt"
DEFAULT_CALIBRATION = paths.REPORTS_DIR / "eval" / "calibration.json"

#: What ``Predictor.predict`` accepts as one image.
ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]


class InputError(Exception):
    """An input could not be scored (the message names it and says what to do)."""


class UnreadableInputError(InputError, OSError):
    """A file or buffer is not a decodable image or video."""


class NoFaceError(InputError):
    """Face detection was required and found no face."""


class InputTooLargeError(InputError):
    """An image has more pixels than ``PredictConfig.max_pixels``."""


@dataclass(frozen=True)
class PredictConfig:
    """How inputs are turned into network inputs and scored.

    Attributes:
        face: ``auto`` (images larger than ``auto_crop_max_side`` are full photos: detect the
            face; smaller ones are already face crops, like the embedded dataset's), ``detect``
            (always detect; no face is an error) or ``none`` (use the whole image).
        margin: enlargement of the detected box before cropping (the data pipeline's margin).
        auto_crop_max_side: with ``face='auto'``, the longest side up to which an image is taken
            to be a face crop already.
        fast_decode: decode JPEGs at a reduced size that is still large enough for the crop.
        backend: ``eager`` | ``jit`` | ``int8`` (CPU only for the last two; see the module doc).
        int8_calibration: images (files or folders) the ``int8`` backend calibrates its
            activation ranges on; a few dozen from the training distribution.
        batch_size: images per forward pass for lists, folders and video frames.
        workers: threads decoding and cropping images ahead of the model (0: in the caller).
        video_frames: frames sampled evenly from each video.
        max_pixels: larger images are refused before decoding (decompression bombs).
        calibration_file: JSON with ``temperature`` and ``threshold`` (written by the evaluation
            stage); used when it exists, else temperature 1 and threshold 0.5. Empty: never.
    """

    face: str = "auto"
    margin: float = DEFAULT_MARGIN
    auto_crop_max_side: int = 256
    fast_decode: bool = True
    backend: str = "eager"
    int8_calibration: tuple[str, ...] = ()
    batch_size: int = 32
    workers: int = 2
    video_frames: int = 16
    max_pixels: int = 50_000_000
    calibration_file: str = str(DEFAULT_CALIBRATION)

    def __post_init__(self) -> None:
        if self.face not in FACE_POLICIES:
            raise ValueError(f"face must be one of {FACE_POLICIES}, got {self.face!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "int8" and not self.int8_calibration:
            raise ValueError("backend='int8' needs int8_calibration: a few dozen images (files or folders) to calibrate on")
        if self.margin < 1:
            raise ValueError(f"margin must be at least 1, got {self.margin}")
        if self.batch_size < 1 or self.video_frames < 1:
            raise ValueError("batch_size and video_frames must be at least 1")
        object.__setattr__(self, "int8_calibration", tuple(str(p) for p in self.int8_calibration))


@dataclass(frozen=True)
class Calibration:
    """Logit temperature and decision threshold on the calibrated probability."""

    temperature: float = 1.0
    threshold: float = 0.5
    source: str | None = None  # the file they came from; None for the defaults

    def probability(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated fake-probability of raw logits."""
        return sigmoid(np.asarray(logits, dtype=np.float64) / self.temperature)


def load_calibration(path: str | os.PathLike | None) -> Calibration:
    """Temperature and threshold from ``path`` when it exists, else the identity calibration."""
    if not path:
        return Calibration()
    path = paths.resolve(path)
    if not path.is_file():
        return Calibration()
    _, temperature, threshold = read_calibration(path)
    return Calibration(temperature, threshold, str(path))


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
    rgb: np.ndarray | None = None  # decoded image (possibly reduced), kept for display
    scale: float = 1.0  # input pixels per decoded pixel
    timing_ms: dict[str, float] = field(default_factory=dict)
    frame: int | None = None


# --------------------------------------------------------------------------------------------
# Reading inputs
# --------------------------------------------------------------------------------------------


def is_video_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def looks_like_video(data: bytes | memoryview) -> bool:
    """True for MP4/MOV (an ``ftyp`` box) and AVI (RIFF ... AVI) headers."""
    head = bytes(data[:12])
    return head[4:8] == b"ftyp" or (head[:4] == b"RIFF" and head[8:11] == b"AVI")


def list_inputs(sources: Iterable[str | os.PathLike]) -> list[Path]:
    """Files named directly, plus every image or video under the folders named (sorted)."""
    out: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            exts = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts and not f.name.startswith("."))
        else:
            out.append(p)
    return out


def _source_name(item: Any, name: str | None) -> str:
    if name:
        return name
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(item, Image.Image):
        return "<PIL image>"
    return "<array>"


def _open_pil(item: Any, source: str, max_pixels: int,
              min_side: Callable[[int, int], int | None]) -> tuple[np.ndarray, tuple[int, int], float]:
    """Decode a path or buffer to upright RGB.

    ``min_side(w, h)`` says how many pixels the shorter side needs; JPEGs are then decoded at
    the smallest DCT scale (1/2, 1/4, 1/8) that keeps it. Returns the array, the input's
    upright ``(width, height)`` and the input pixels per decoded pixel.
    """
    if isinstance(item, (str, os.PathLike)):
        if not Path(item).is_file():
            raise UnreadableInputError(f"{source} does not exist or is not a file")
        fp: Any = item
    else:
        if len(item) == 0:
            raise UnreadableInputError(f"{source} is empty (0 bytes); upload or pass an image file")
        fp = io.BytesIO(item)
    try:
        with Image.open(fp) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise InputTooLargeError(f"{source} has {w}x{h} = {w * h / 1e6:.0f} million pixels, more than the "
                                         f"{max_pixels / 1e6:.0f} million allowed; downscale it first")
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientation with a quarter turn
                w, h = h, w
            need = min_side(w, h)
            if need and need < min(w, h):
                k = need / min(w, h)
                im.draft("RGB", (int(np.ceil(im.size[0] * k)), int(np.ceil(im.size[1] * k))))
            im.load()
            rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except InputError:
        raise
    except UnidentifiedImageError as e:
        raise UnreadableInputError(f"{source} is not an image in a format Pillow reads (JPEG, PNG, WebP, BMP...); "
                                   "check the file or remove it") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UnreadableInputError(f"{source} is not a decodable image ({type(e).__name__}: {e}); "
                                   "check the file (truncated? corrupt?) or remove it") from e
    return rgb, (w, h), w / rgb.shape[1]


def _as_rgb_array(item: Image.Image | np.ndarray, source: str) -> np.ndarray:
    if isinstance(item, Image.Image):
        return np.asarray(item.convert("RGB"))
    a = np.asarray(item)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise UnreadableInputError(f"{source}: expected an (H, W, 3) RGB array, got shape {a.shape}")
    a = a[:, :, :3]
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and np.nanmax(a) <= 1.0:
            a = np.clip(np.nan_to_num(a) * 255.0 + 0.5, 0, 255)
        a = np.clip(a, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def read_video_frames(path: str | os.PathLike, n: int, source: str | None = None) -> tuple[list[tuple[int, np.ndarray]], int]:
    """``n`` evenly spaced frames as (index, RGB array) and the frame count of the video.

    The frames the preprocess stage samples for training (``deepfake.ingest.read_video``).
    """
    from .ingest import REASONS, BadInputError, read_video

    source = source or str(path)
    try:
        return read_video(path, n)
    except BadInputError as e:
        what = {"video_unreadable": "could not be opened as a video (OpenCV)",
                "video_no_frames": "contains no decodable frame"}.get(e.reason, REASONS.get(e.reason, e.reason))
        raise UnreadableInputError(f"{source}: {what}; check the file and its codec") from e


# --------------------------------------------------------------------------------------------
# The predictor
# --------------------------------------------------------------------------------------------


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class Predictor:
    """Scores images, lists, folders and videos with one trained checkpoint.

    Args:
        checkpoint: a checkpoint written by training (default ``models/best.pt``).
        device: ``auto`` | ``cpu`` | ``cuda``...
        cfg: crop policy, speed options and calibration file.

    Use ``get_predictor`` to share one instance per checkpoint and device in a process.
    """

    def __init__(self, checkpoint: str | os.PathLike = DEFAULT_CHECKPOINT, device: str | torch.device = "auto",
                 cfg: PredictConfig = PredictConfig()) -> None:
        from .evaluate import load_checkpoint

        self.cfg = cfg
        self.device = resolve_device(device) if isinstance(device, str) else device
        if cfg.backend != "eager" and self.device.type != "cpu":
            raise ValueError(f"backend={cfg.backend!r} runs on CPU only; use backend='eager' on {self.device}")
        self.checkpoint = paths.resolve(checkpoint)
        model, ckpt = load_checkpoint(self.checkpoint, self.device)
        self.model: nn.Module = model.to(memory_format=torch.channels_last)  # the exact fp32 model (Grad-CAM uses it)
        self.arch: str = ckpt["arch"]
        self.image_size: int = int(ckpt["image_size"])
        norm = ckpt.get("normalization") or {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        self.mean = torch.tensor(norm["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(norm["std"], dtype=torch.float32).view(1, 3, 1, 1)
        self.meta = {k: ckpt.get(k) for k in ("arch", "image_size", "epoch", "val_auc", "weights_used", "package_version")}
        self.calibration = load_calibration(cfg.calibration_file)
        self._lock = threading.Lock()  # one forward at a time: torch already uses every core
        self._runner: Callable[[torch.Tensor], torch.Tensor] = self._build_runner()

    # -- model backends --------------------------------------------------------------------

    def _build_runner(self) -> Callable[[torch.Tensor], torch.Tensor]:
        example = torch.zeros(1, 3, self.image_size, self.image_size).contiguous(memory_format=torch.channels_last)
        if self.cfg.backend == "eager":
            return self.model
        if self.cfg.backend == "jit":
            return _torchscript(self.model, example)
        return _quantize_int8(self.model, example, self._calibration_batches())

    def _calibration_batches(self) -> Iterator[torch.Tensor]:
        files = [p for p in list_inputs(self.cfg.int8_calibration) if not is_video_path(p)]
        if not files:
            raise ValueError(f"int8_calibration {self.cfg.int8_calibration} holds no images")
        used = 0
        for i in range(0, len(files), self.cfg.batch_size):
            crops = []
            for f in files[i:i + self.cfg.batch_size]:
                try:
                    crops.append(self.prepare(f).crop)
                except InputError:
                    continue  # unreadable or faceless calibration images are simply not used
            if crops:
                used += len(crops)
                yield self.to_tensor(crops)
        if not used:
            raise ValueError(f"none of the {len(files)} int8_calibration images could be prepared (unreadable, or no face found)")

    # -- preprocessing ---------------------------------------------------------------------

    def _wants_detection(self, w: int, h: int) -> bool:
        return self.cfg.face == "detect" or (self.cfg.face == "auto" and max(w, h) > self.cfg.auto_crop_max_side)

    def prepare(self, item: ImageInput, name: str | None = None, keep_image: bool = False) -> Prepared:
        """Decode ``item``, find and crop the face per the policy, resize to the network size."""
        source = _source_name(item, name)
        t0 = time.perf_counter()
        s = self.image_size
        if isinstance(item, (Image.Image, np.ndarray)):
            rgb = _as_rgb_array(item, source)
            size, scale = (rgb.shape[1], rgb.shape[0]), 1.0
        elif isinstance(item, (str, os.PathLike, bytes, bytearray, memoryview)):
            def min_side(w: int, h: int) -> int | None:
                # whole image: the network size suffices; a face to detect and crop gets twice
                # that, so a face filling half the photo is still cropped from at least S pixels
                if not self.cfg.fast_decode:
                    return None
                return 2 * s if self._wants_detection(w, h) else s

            rgb, size, scale = _open_pil(item, source, self.cfg.max_pixels, min_side)
        else:
            raise TypeError(f"cannot score a {type(item).__name__}; pass a path, bytes, a PIL image or an (H, W, 3) array")
        t_decode = _ms(t0)
        t1 = time.perf_counter()
        box = None
        if self._wants_detection(*size):
            found = default_detector().largest(rgb)
            if found is None:
                raise NoFaceError(f"no face found in {source}; pass face='none' to score the whole image")
            crop = crop_face(rgb, found, s, self.cfg.margin)
            box = tuple(int(round(v * scale)) for v in found.as_tuple())
        elif rgb.shape[0] == s and rgb.shape[1] == s:
            crop = rgb
        else:
            # the training transform: Resize((S, S)) of the whole image, PIL bilinear (antialiased)
            crop = np.asarray(Image.fromarray(rgb).resize((s, s), Image.BILINEAR))
        timing = {"decode": t_decode, "face": _ms(t1)}
        return Prepared(source, crop, box, size, rgb if keep_image else None, scale, timing)

    def to_tensor(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """Normalised (B, 3, S, S) float batch in channels-last memory, on the predictor's device."""
        x = torch.from_numpy(np.stack(crops)).to(self.device)  # (B, S, S, 3) uint8
        x = x.permute(0, 3, 1, 2).float().div_(255)  # (B, 3, S, S), NHWC strides: channels-last
        return x.sub_(self.mean.to(self.device)).div_(self.std.to(self.device))

    @torch.inference_mode()
    def logits(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Raw logits of a list of (S, S, 3) uint8 crops."""
        x = self.to_tensor(crops)
        with self._lock, autocast(self.device, self.device.type == "cuda"):
            out = self._runner(x)
        return out.float().reshape(len(crops), -1)[:, 0].cpu().numpy()

    # -- scoring ---------------------------------------------------------------------------

    def _verdicts(self, prepared: list[Prepared]) -> list[Prediction]:
        t0 = time.perf_counter()
        z = self.logits([p.crop for p in prepared])
        per_image = _ms(t0) / max(len(prepared), 1)
        probs = self.calibration.probability(z)
        out = []
        for p, logit, prob in zip(prepared, z, probs):
            timing = {**p.timing_ms, "model": per_image}
            timing["total"] = sum(timing.values())
            out.append(Prediction(p.source, self.label(prob), float(prob), float(logit), p.box, p.image_size,
                                  {k: round(v, 3) for k, v in timing.items()}, p.frame))
        return out

    def label(self, probability: float) -> str:
        """``fake`` at or above the decision threshold, else ``real``."""
        return LABELS[1] if probability >= self.calibration.threshold else LABELS[0]

    def predict_image(self, item: ImageInput, name: str | None = None) -> Prediction:
        """Score one image."""
        return self._verdicts([self.prepare(item, name)])[0]

    def predict_batch(self, items: Sequence[ImageInput], names: Sequence[str] | None = None, on_error: str = "raise",
                      progress: bool = False) -> list[Prediction | PredictionError]:
        """Score images in batches, decoding ahead of the model on ``cfg.workers`` threads.

        Args:
            on_error: ``raise`` the first input error, or ``collect`` it as a ``PredictionError``
                in that input's place.
            progress: show a progress bar.
        """
        if on_error not in ("raise", "collect"):
            raise ValueError(f"on_error must be 'raise' or 'collect', got {on_error!r}")
        names = list(names) if names is not None else [None] * len(items)
        results: list[Prediction | PredictionError | None] = [None] * len(items)

        def job(i: int) -> Prepared | PredictionError:
            try:
                return self.prepare(items[i], names[i])
            except InputError as e:
                if on_error == "raise":
                    raise
                return PredictionError(_source_name(items[i], names[i]), str(e), type(e).__name__)

        bar = _progress(len(items), progress)
        pending: list[tuple[int, Prepared]] = []

        def flush() -> None:
            for (i, _), pred in zip(pending, self._verdicts([p for _, p in pending])):
                results[i] = pred
            bar.update(len(pending))
            pending.clear()

        try:
            for i, prep in enumerate(_ordered_map(job, range(len(items)), self.cfg.workers)):
                if isinstance(prep, PredictionError):
                    results[i] = prep
                    bar.update(1)
                    continue
                pending.append((i, prep))
                if len(pending) == self.cfg.batch_size:
                    flush()
            if pending:
                flush()
        finally:
            bar.close()
        return results  # type: ignore[return-value]

    def predict_video(self, item: str | os.PathLike | bytes | memoryview, name: str | None = None, frames: int | None = None,
                      keep_frames: bool = False) -> VideoPrediction:
        """Score ``frames`` evenly spaced frames; the video probability is their mean.

        Frames without a detectable face are skipped (listed in ``skipped``); a video with no
        scorable frame raises ``NoFaceError``. ``keep_frames`` keeps the sampled RGB frames in
        ``images`` (for display).
        """
        source = _source_name(item, name)
        t0 = time.perf_counter()
        n = frames or self.cfg.video_frames
        if isinstance(item, (bytes, bytearray, memoryview)):
            suffix = Path(name).suffix if name and is_video_path(name) else ".mp4"
            with tempfile.TemporaryDirectory(prefix="deepfake-video-") as tmp:
                path = Path(tmp) / f"upload{suffix}"
                path.write_bytes(bytes(item))
                sampled, total = read_video_frames(path, n, source)
        else:
            if not Path(item).is_file():
                raise UnreadableInputError(f"{source} does not exist or is not a file")
            sampled, total = read_video_frames(item, n, source)
        t_read = _ms(t0)
        prepared, skipped = [], {}
        for idx, rgb in sampled:
            try:
                p = self.prepare(rgb, f"{source}#{idx}")
            except NoFaceError:
                skipped[idx] = "no face found"
                continue
            p.frame = idx
            prepared.append(p)
        if not prepared:
            raise NoFaceError(f"no face found in any of the {len(sampled)} frames sampled from {source}; "
                              "pass face='none' to score whole frames")
        preds = []
        for i in range(0, len(prepared), self.cfg.batch_size):
            preds += self._verdicts(prepared[i:i + self.cfg.batch_size])
        prob = float(np.mean([p.probability for p in preds]))
        timing = {"read_frames": round(t_read, 3), "total": round(_ms(t0), 3)}
        images = dict(sampled) if keep_frames else {}
        return VideoPrediction(source, self.label(prob), prob, preds, total, skipped, timing, images)

    def predict(self, item: Any, name: str | None = None, on_error: str = "raise", progress: bool = False):
        """Score whatever ``item`` is.

        A folder or a list gives a list of results (images batched, videos one result each); a
        video path (or video bytes) gives a ``VideoPrediction``; anything else one
        ``Prediction``.
        """
        if isinstance(item, (list, tuple)):
            return self.predict_many(item, on_error=on_error, progress=progress)
        if isinstance(item, (str, os.PathLike)):
            p = Path(item)
            if p.is_dir():
                return self.predict_many(list_inputs([p]), on_error=on_error, progress=progress)
            if is_video_path(p):
                return self.predict_video(p, name)
        elif isinstance(item, (bytes, bytearray, memoryview)) and looks_like_video(item):
            return self.predict_video(item, name)
        return self.predict_image(item, name)

    def predict_many(self, items: Sequence[Any], on_error: str = "raise", progress: bool = False) -> list:
        """Images (batched) and videos, in the order given."""
        results: list[Any] = [None] * len(items)
        images = [i for i, it in enumerate(items) if not (isinstance(it, (str, os.PathLike)) and is_video_path(it))]
        for i, r in zip(images, self.predict_batch([items[i] for i in images], on_error=on_error, progress=progress)):
            results[i] = r
        for i in sorted(set(range(len(items))) - set(images)):
            try:
                results[i] = self.predict_video(items[i])
            except InputError as e:
                if on_error == "raise":
                    raise
                results[i] = PredictionError(str(items[i]), str(e), type(e).__name__)
        return results

    def explain(self, item: ImageInput, name: str | None = None, target: str = "predicted"):
        """Score one image and compute its Grad-CAM; returns ``(Prediction, GradCam, Prepared)``.

        ``Prepared.rgb`` holds the decoded image for display and ``Prepared.scale`` maps the box
        onto it.
        """
        from .gradcam import grad_cam

        prep = self.prepare(item, name, keep_image=True)
        pred = self._verdicts([prep])[0]
        if target == "predicted":
            target = pred.label
        with self._lock:  # the hook on the shared model must see only this forward pass
            cam = grad_cam(self.model, self.to_tensor([prep.crop]), prep.crop, target=target, device=self.device)
        return pred, cam, prep

    def describe(self) -> dict[str, Any]:
        """What this predictor runs: checkpoint, architecture, input size, calibration, backend."""
        return {"checkpoint": str(self.checkpoint), **self.meta, "device": str(self.device), "backend": self.cfg.backend,
                "face": self.cfg.face, "temperature": self.calibration.temperature, "threshold": self.calibration.threshold,
                "calibration_file": self.calibration.source}


def _ordered_map(fn: Callable[[int], Any], indices: Iterable[int], workers: int) -> Iterator[Any]:
    """``map(fn, indices)`` in order, computed up to ``2 * workers`` items ahead on threads."""
    indices = list(indices)
    if workers <= 0 or len(indices) <= 1:
        yield from map(fn, indices)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deepfake-decode") as pool:
        ahead = 4 * workers
        futures = [pool.submit(fn, i) for i in indices[:ahead]]
        nxt = len(futures)
        for k in range(len(indices)):
            res = futures[k].result()
            futures[k] = None  # free memory of consumed results
            if nxt < len(indices):
                futures.append(pool.submit(fn, indices[nxt]))
                nxt += 1
            yield res


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc="predict")


def _torchscript(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Traced, frozen and inference-optimised copy of ``model`` (batch norm folded, oneDNN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is in maintenance mode; tracing still works
        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(model.eval(), example, check_trace=False)
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


def _quantize_int8(model: nn.Module, example: torch.Tensor, batches: Iterable[torch.Tensor]) -> torch.jit.ScriptModule:
    """Static post-training int8 quantisation (FX graph mode, x86 backend), calibrated on ``batches``.

    Convolutions run in int8 with per-channel weights; linear layers (the head) stay float.
    """
    import copy

    with warnings.catch_warnings():
        # torch.ao.quantization warns that it will move to torchao; its FX path still works
        warnings.simplefilter("ignore")
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        mapping = get_default_qconfig_mapping("x86")
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear):
                # the classifier head stays float: almost free, and it is where int8 rounding hurt
                # most (ResNet18 fc: logit error 0.6 -> 0.05 on the benchmark photos)
                mapping.set_module_name(name, None)
        with torch.inference_mode(False), torch.no_grad():
            prepared = prepare_fx(copy.deepcopy(model).cpu().eval(), mapping, (example,))
            for x in batches:
                prepared(x)
            quantized = convert_fx(prepared)
            return torch.jit.freeze(torch.jit.trace(quantized, example, check_trace=False))


# --------------------------------------------------------------------------------------------
# One predictor per checkpoint, device and settings per process
# --------------------------------------------------------------------------------------------

_CACHE: dict[tuple, Predictor] = {}
_CACHE_LOCK = threading.Lock()


def get_predictor(checkpoint: str | os.PathLike | None = None, device: str = "auto", cfg: PredictConfig | None = None,
                  **overrides: Any) -> Predictor:
    """The process-wide predictor for this checkpoint, device and settings (built on first use).

    A checkpoint file that changed on disk (new mtime or size) is loaded again.
    """
    cfg = replace(cfg or PredictConfig(), **overrides)
    path = paths.resolve(checkpoint or DEFAULT_CHECKPOINT)
    dev = resolve_device(device)
    try:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except FileNotFoundError:
        stamp = None
    key = (str(path), stamp, str(dev), cfg)
    with _CACHE_LOCK:
        if key not in _CACHE:
            for k in [k for k in _CACHE if k[0] == key[0] and k[2] == key[2] and k[3] == key[3]]:
                del _CACHE[k]  # the checkpoint changed: drop the stale model
            _CACHE[key] = Predictor(path, dev, cfg)
        return _CACHE[key]


def clear_cache() -> None:
    """Forget every cached predictor."""
    with _CACHE_LOCK:
        _CACHE.clear()


# --------------------------------------------------------------------------------------------
# Reports for the command line
# --------------------------------------------------------------------------------------------

CSV_COLUMNS = ("source", "label", "probability", "logit", "box_x", "box_y", "box_w", "box_h", "frames", "total_ms", "error")


def _row(r: Prediction | VideoPrediction | PredictionError) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(CSV_COLUMNS, "")
    row["source"] = r.source
    if isinstance(r, PredictionError):
        row["error"] = r.error
        return row
    row.update(label=r.label, probability=f"{r.probability:.6f}", total_ms=f"{r.timing_ms.get('total', 0):.1f}")
    if isinstance(r, Prediction):
        row["logit"] = f"{r.logit:.6f}"
        if r.box:
            row.update(zip(("box_x", "box_y", "box_w", "box_h"), r.box))
    else:
        row["frames"] = len(r.frames)
    return row


def predictions_csv(results: Sequence[Prediction | VideoPrediction | PredictionError]) -> str:
    """One CSV row per input (videos: the video verdict and the number of frames scored)."""
    import csv

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(_row(r) for r in results)
    return buf.getvalue()


def predictions_table(results: Sequence[Prediction | VideoPrediction | PredictionError], threshold: float) -> str:
    """Aligned plain-text table of verdicts, with a count per label."""
    rows = [_row(r) for r in results]
    width = max([len(r["source"]) for r in rows] + [6])
    lines = [f"{'source':<{width}}  label  p(fake)  face box"]
    for r in rows:
        if r["error"]:
            lines.append(f"{r['source']:<{width}}  ERROR  {r['error']}")
            continue
        box = f"{r['box_x']},{r['box_y']},{r['box_w']},{r['box_h']}" if r["box_w"] != "" else ("whole image" if not r["frames"] else f"video, {r['frames']} frames")
        lines.append(f"{r['source']:<{width}}  {r['label']:<5}  {float(r['probability']):.4f}   {box}")
    labels = [r["label"] for r in rows if not r["error"]]
    lines.append(f"{labels.count('fake')} fake, {labels.count('real')} real, {len(rows) - len(labels)} unreadable "
                 f"(threshold {threshold:.3f} on the fake probability)")
    return "\n".join(lines)


def health(checkpoint: str | os.PathLike = DEFAULT_CHECKPOINT, device: str = "auto",
           calibration_file: str | os.PathLike = DEFAULT_CALIBRATION) -> tuple[dict[str, Any], bool]:
    """Versions, device and whether a trained model is present and loads; ``ok`` when it does."""
    import platform
    from importlib import metadata

    from . import __version__

    import PIL
    import torchvision

    info: dict[str, Any] = {"deepfake": __version__, "python": platform.python_version(), "torch": torch.__version__,
                            "torchvision": torchvision.__version__, "opencv": cv2.__version__, "pillow": PIL.__version__,
                            "numpy": np.__version__}
    try:
        info["ipywidgets"] = metadata.version("ipywidgets")
    except metadata.PackageNotFoundError:
        info["ipywidgets"] = "not installed"
    try:
        dev = resolve_device(device)
        info["device"] = str(dev)
    except RuntimeError as e:
        dev, info["device"] = None, f"unavailable ({e})"
    info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"
    info["cpu_threads"] = torch.get_num_threads()
    path = paths.resolve(checkpoint)
    info["checkpoint"] = str(path)
    ok = False
    if not path.is_file():
        info["model"] = "absent: train one (dvc repro train) or pass --checkpoint"
    elif dev is None:
        info["model"] = "present, not loaded (no device)"
    else:
        try:
            p = Predictor(path, dev, PredictConfig(calibration_file=str(calibration_file)))
            z = p.logits([np.zeros((p.image_size, p.image_size, 3), np.uint8)])
            if not np.isfinite(z).all():
                raise ValueError("the model outputs non-finite logits")
            info["model"] = (f"loads: {p.arch}, {p.image_size}x{p.image_size} input, epoch {p.meta.get('epoch')}, "
                             f"val AUC {p.meta.get('val_auc')}")
            ok = True
        except Exception as e:  # report any failure to load as unhealthy, with its reason
            info["model"] = f"present but does not load: {type(e).__name__}: {e}"
    try:
        cal = load_calibration(calibration_file)
        info["calibration"] = (f"{cal.source}: temperature {cal.temperature:g}, threshold {cal.threshold:g}" if cal.source
                               else "none (temperature 1, threshold 0.5)")
    except ValueError as e:
        info["calibration"] = f"invalid: {e}"
        ok = False
    return info, ok
