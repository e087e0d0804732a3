"""Inference: score images, folders and videos exactly as the model's evaluation scored its test split.

``Predictor`` loads a checkpoint once and applies the preprocessing contract it records
(``deepfake.data.inputs``): the same decoder, the same face detector and crop, the same resize and
normalisation as the preprocess stage and the evaluate stage, so a photo scored here gets the
probability the pipeline gives its crop. Logits become calibrated probabilities with the
temperature and threshold the evaluate stage saved (``reports/eval/calibration.json``).
``get_predictor`` caches one predictor per checkpoint, device and settings in the process.

Speed without changing the answer: folders and lists are decoded by a small thread pool (PIL
and OpenCV release the GIL) while the model scores the previous batch, and batches are built in
channels-last order. ``backend="jit"`` or ``"int8"`` (``deepfake.inference.backends``) trade exactness for
CPU speed, by the amounts ``benchmarks/bench_inference.py`` measures.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core import paths
from ..core.progress import progress as progress_bar
from ..core.utils import resolve_device
from ..data.detect import DETECTORS
from ..data.faces import Crop, crop_frames, crop_image
from ..data.ingest import LABELS
from ..data.inputs import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, resize_input, to_model_tensor
from ..data.media import BadInputError, looks_like_video
from ..data.video import read_video
from ..metrics.calibration import Calibration
from ..models.checkpoint import load_checkpoint, preprocessing_of
from ..training.scoring import forward_logits
from .backends import make_runtime
from .prediction import (
    DEFAULT_CALIBRATION,
    DEFAULT_CHECKPOINT,
    ImageInput,
    InputError,
    InputTooLargeError,
    InputTooSmallError,
    NoFaceError,
    PredictConfig,
    Prediction,
    PredictionError,
    Prepared,
    UnreadableInputError,
    VideoPrediction,
    decode_input,
    find_inputs,
    input_error,
    is_video_path,
    list_inputs,
    ms_since,
    source_name,
)

#: The predictor's public names (its settings, results and errors live in ``deepfake.inference.prediction``).
__all__ = [
    "DEFAULT_CALIBRATION",
    "DEFAULT_CHECKPOINT",
    "InputError",
    "InputTooLargeError",
    "InputTooSmallError",
    "NoFaceError",
    "PredictConfig",
    "Prediction",
    "PredictionError",
    "Predictor",
    "UnreadableInputError",
    "VideoPrediction",
    "clear_cache",
    "find_inputs",
    "get_predictor",
    "list_inputs",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# The predictor
# --------------------------------------------------------------------------------------------


class Predictor:
    """Scores images, lists, folders and videos with one trained checkpoint.

    Args:
        checkpoint: a checkpoint written by training (default ``models/best.pt``).
        device: ``auto`` | ``cpu`` | ``cuda``...
        cfg: crop override, speed options and calibration file.

    Use ``get_predictor`` to share one instance per checkpoint and device in a process.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike = DEFAULT_CHECKPOINT,
        device: str | torch.device = "auto",
        cfg: PredictConfig | None = None,
    ) -> None:
        self.cfg = cfg = cfg or PredictConfig()
        self.device = resolve_device(device) if isinstance(device, str) else device
        if cfg.backend != "eager" and self.device.type != "cpu":
            raise ValueError(f"backend={cfg.backend!r} runs on CPU only; use backend='eager' on {self.device}")
        self.checkpoint = paths.resolve(checkpoint)
        model, ckpt = load_checkpoint(self.checkpoint, self.device)
        self.model: nn.Module = model.to(memory_format=torch.channels_last)  # the exact fp32 model (Grad-CAM uses it)
        self.arch: str = ckpt["arch"]
        self.trained_preprocessing = preprocessing_of(ckpt, self.checkpoint)
        self.preprocessing = self._applied_preprocessing(self.trained_preprocessing)
        self.image_size: int = self.preprocessing.input_size
        self.meta = {
            k: ckpt.get(k) for k in ("arch", "image_size", "epoch", "val_auc", "weights_used", "package_version")
        }
        # refused when fitted for another checkpoint (its SHA-256 is recorded in the file)
        self.calibration = Calibration.from_file(
            paths.resolve(cfg.calibration_file) if cfg.calibration_file else None, checkpoint=self.checkpoint
        )
        self._lock = threading.Lock()  # one forward at a time: torch already uses every core
        example = torch.zeros(1, 3, self.image_size, self.image_size).contiguous(memory_format=torch.channels_last)
        # a backend that cannot compile this network falls back to the exact model, recorded in backend_note
        self.runtime = make_runtime(
            self.model, cfg.backend, example, self._calibration_batches, max_change=cfg.int8_max_change
        )
        self._runner: Callable[[torch.Tensor], torch.Tensor] = self.runtime.run

    def _applied_preprocessing(self, trained: Preprocessing) -> Preprocessing:
        """The checkpoint's contract with this predictor's overrides, each difference logged."""
        prep = trained
        if self.cfg.face == "detect" and not trained.detect:
            prep = replace(
                prep,
                crop="face",
                detector=prep.detector or DETECTORS[0],
                crop_size=prep.crop_size or prep.input_size,
            )
        elif self.cfg.face == "none" and trained.detect:
            prep = replace(prep, crop="center", align=False)
        if self.cfg.margin is not None and self.cfg.margin != trained.margin:
            prep = replace(prep, margin=self.cfg.margin)
        if prep != trained:
            log.warning(
                "%s was trained on %s crops (margin %g); scoring with %s crops (margin %g) as asked: scores will "
                "differ "
                "from the pipeline's",
                self.checkpoint,
                trained.crop,
                trained.margin,
                prep.crop,
                prep.margin,
            )
        return prep

    def _calibration_batches(self) -> Iterator[torch.Tensor]:
        files = [p for p in list_inputs(self.cfg.int8_calibration) if not is_video_path(p)]
        if not files:
            raise ValueError(f"int8_calibration {self.cfg.int8_calibration} holds no images")
        used = 0
        for i in range(0, len(files), self.cfg.batch_size):
            crops = []
            for f in files[i : i + self.cfg.batch_size]:
                try:
                    crops.append(self.prepare(f).crop)
                except InputError:
                    continue  # unreadable or faceless calibration images are simply not used
            if crops:
                used += len(crops)
                yield self.to_tensor(crops)
        if not used:
            raise ValueError(
                f"none of the {len(files)} int8_calibration images could be prepared (unreadable, or no face found)"
            )

    # -- preprocessing ---------------------------------------------------------------------

    def prepare(self, item: ImageInput, name: str | None = None, keep_image: bool = False) -> Prepared:
        """Decode ``item``, crop it as the checkpoint's training data was cropped, resize to the network size."""
        source = source_name(item, name)
        t0 = time.perf_counter()
        rgb = decode_input(item, source, self.cfg.max_pixels)
        t_decode = ms_since(t0)
        t1 = time.perf_counter()
        crop = crop_image(rgb, self.preprocessing)
        return self._prepared(crop, rgb, source, {"decode": t_decode, "face": ms_since(t1)}, keep_image)

    def _prepared(self, crop: Crop, rgb: np.ndarray, source: str, timing: dict, keep_image: bool) -> Prepared:
        """A ``Crop`` of ``rgb`` as the network's input, or ``NoFaceError`` saying why it was left out."""
        if crop.image is None and crop.reason == "too_small":
            raise self._too_small(f"{source} is", rgb)
        if crop.image is None:
            why = {
                "several_faces": f"{crop.n_faces} faces found in {source}, and the checkpoint skips such images",
                "face_at_border": f"the face in {source} touches the image's edge, and the checkpoint skips such faces",
            }.get(crop.reason, f"no face found in {source}")
            raise NoFaceError(f"{why}; pass face='none' to score it without face detection")
        box = crop.box.as_tuple() if crop.box is not None else None
        size = (rgb.shape[1], rgb.shape[0])
        return Prepared(
            source, resize_input(crop.image, self.image_size), box, size, rgb if keep_image else None, 1.0, timing
        )

    def _too_small(self, what: str, rgb: np.ndarray) -> InputTooSmallError:
        """``what`` (``"x.png is"``) is too small for the checkpoint's ``min_side``."""
        return InputTooSmallError(
            f"{what} {rgb.shape[1]}x{rgb.shape[0]} px, smaller than the {self.preprocessing.min_side} px the "
            "checkpoint's preprocessing needs on the shorter side (min_side): nothing can be told from it"
        )

    def to_tensor(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """Normalised (B, 3, S, S) float batch in channels-last memory, on the predictor's device."""
        x = torch.from_numpy(np.stack(crops)).to(self.device)  # (B, S, S, 3) uint8
        return to_model_tensor(x, self.preprocessing.mean, self.preprocessing.std)

    @torch.inference_mode()
    def logits(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Raw logits of a list of (S, S, 3) uint8 crops."""
        x = self.to_tensor(crops)
        with self._lock:
            z = forward_logits(self._runner, x, self.device, amp=self.device.type == "cuda")
        return z.cpu().numpy()

    # -- scoring ---------------------------------------------------------------------------

    def _verdicts(self, prepared: list[Prepared]) -> list[Prediction]:
        t0 = time.perf_counter()
        z = self.logits([p.crop for p in prepared])
        per_image = ms_since(t0) / max(len(prepared), 1)
        probs = self.calibration.probability(z)
        out = []
        for p, logit, prob in zip(prepared, z, probs):
            timing = {**p.timing_ms, "model": per_image}
            timing["total"] = sum(timing.values())
            out.append(
                Prediction(
                    p.source,
                    self.label(prob),
                    float(prob),
                    float(logit),
                    p.box,
                    p.image_size,
                    {k: round(v, 3) for k, v in timing.items()},
                    p.frame,
                )
            )
        return out

    def label(self, probability: float) -> str:
        """``fake`` at or above the decision threshold, else ``real``."""
        return LABELS[1] if probability >= self.calibration.threshold else LABELS[0]

    def predict_image(self, item: ImageInput, name: str | None = None) -> Prediction:
        """Score one image."""
        return self._verdicts([self.prepare(item, name)])[0]

    def predict_batch(
        self,
        items: Sequence[ImageInput],
        names: Sequence[str | None] | None = None,
        on_error: str = "raise",
        progress: bool = False,
    ) -> list[Prediction | PredictionError]:
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
                return PredictionError(source_name(items[i], names[i]), str(e), type(e).__name__)

        bar = progress_bar(total=len(items), unit="images", desc="predict", disable=not progress)
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

    def predict_video(
        self,
        item: str | os.PathLike | bytes | bytearray | memoryview,
        name: str | None = None,
        frames: int | None = None,
        keep_frames: bool = False,
    ) -> VideoPrediction:
        """Score evenly spaced frames (as many as training sampled, or ``frames``); the video score is their mean.

        Frames without a detectable face are skipped (listed in ``skipped``); a video with no
        scorable frame raises ``NoFaceError``. ``keep_frames`` keeps the sampled RGB frames in
        ``images`` (for display).
        """
        source = source_name(item, name)
        t0 = time.perf_counter()
        n = frames or self.cfg.video_frames or self.preprocessing.frames_per_video
        try:
            if isinstance(item, (bytes, bytearray, memoryview)):
                suffix = Path(name).suffix if name and is_video_path(name) else ".mp4"
                with tempfile.TemporaryDirectory(prefix="deepfake-video-") as tmp:
                    path = Path(tmp) / f"upload{suffix}"
                    path.write_bytes(bytes(item))
                    sampled, total = read_video(path, n)
            else:
                sampled, total = read_video(item, n)
        except BadInputError as e:
            raise input_error(e, source) from e
        t_read = ms_since(t0)
        prepared, skipped = [], {}
        t1 = time.perf_counter()
        crops = crop_frames([rgb for _, rgb in sampled], self.preprocessing)  # one face followed through the video
        per_frame = ms_since(t1) / max(1, len(sampled))
        for (idx, rgb), crop in zip(sampled, crops):
            try:
                p = self._prepared(crop, rgb, f"{source}#{idx}", {"decode": 0.0, "face": per_frame}, False)
            except (NoFaceError, InputTooSmallError):
                skipped[idx] = crop.reason.replace("_", " ") if crop.reason != "no_face" else "no face found"
                continue
            p.frame = idx
            prepared.append(p)
        if not prepared and sampled and set(skipped.values()) == {"too small"}:
            raise self._too_small(f"the frames of {source} are", sampled[0][1])
        if not prepared:
            raise NoFaceError(
                f"no face found in any of the {len(sampled)} frames sampled from {source}; "
                "pass face='none' to score whole frames"
            )
        preds = []
        for i in range(0, len(prepared), self.cfg.batch_size):
            preds += self._verdicts(prepared[i : i + self.cfg.batch_size])
        prob = float(np.mean([p.probability for p in preds]))
        timing = {"read_frames": round(t_read, 3), "total": round(ms_since(t0), 3)}
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
                return self.predict_folder(p, on_error=on_error, progress=progress)
            if is_video_path(p):
                return self.predict_video(p, name)
        elif isinstance(item, (bytes, bytearray, memoryview)) and looks_like_video(item):
            return self.predict_video(item, name)
        return self.predict_image(item, name)

    def predict_folder(self, folder: str | os.PathLike, on_error: str = "raise", progress: bool = False) -> list:
        """Every image and video below ``folder``, in sorted order; paths that cannot be scored
        (broken links, FIFOs, unreadable folders: ``find_inputs``) are ``PredictionError`` rows
        with ``on_error="collect"``, and raise ``UnreadableInputError`` otherwise."""
        found = find_inputs([folder])
        if found.problems and on_error == "raise":
            raise UnreadableInputError(found.problems[0].error)
        return found.merge(self.predict_many(found.files, on_error=on_error, progress=progress))

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
        """What this predictor runs: checkpoint, architecture, input size, preprocessing, calibration, backend."""
        return {
            "checkpoint": str(self.checkpoint),
            **self.meta,
            "device": str(self.device),
            "backend": self.runtime.backend,
            **({"backend_note": self.runtime.note} if self.runtime.note else {}),
            "face": self.preprocessing.crop,
            "preprocessing": self.preprocessing.to_dict(),
            "temperature": self.calibration.temperature,
            "threshold": self.calibration.threshold,
            "calibration_file": self.calibration.source,
        }

    def describe_preprocessing(self) -> str:
        """One line: how this predictor crops and sizes its inputs."""
        p = self.preprocessing
        crop = {
            "face": f"largest face ({p.detector}{', aligned' if p.align else ''}), margin {p.margin:g}, "
            f"{p.crop_size} px crop",
            "center": f"centre square, {p.crop_size} px crop",
            "none": "whole image",
        }[p.crop]
        norm = ""
        if (p.mean, p.std) != (IMAGENET_MEAN, IMAGENET_STD):  # the model's own (timm's pretrained_cfg)
            mean, std = (", ".join(f"{v:g}" for v in t) for t in (p.mean, p.std))
            norm = f", normalised with mean {mean} and std {std}"
        return f"{crop}, resized to {p.input_size} px{norm}"


def _ordered_map(fn: Callable[[int], Any], indices: Iterable[int], workers: int) -> Iterator[Any]:
    """``map(fn, indices)`` in order, computed up to ``2 * workers`` items ahead on threads."""
    indices = list(indices)
    if workers <= 0 or len(indices) <= 1:
        yield from map(fn, indices)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deepfake-decode") as pool:
        ahead = 4 * workers
        futures: list[Future[Any] | None] = [pool.submit(fn, i) for i in indices[:ahead]]
        nxt = len(futures)
        for k in range(len(indices)):
            fut = futures[k]
            assert fut is not None  # each future is consumed once, in order
            res = fut.result()
            futures[k] = None  # free memory of consumed results
            if nxt < len(indices):
                futures.append(pool.submit(fn, indices[nxt]))
                nxt += 1
            yield res


# --------------------------------------------------------------------------------------------
# One predictor per checkpoint, device and settings per process
# --------------------------------------------------------------------------------------------

_CACHE: dict[tuple, Predictor] = {}
_CACHE_LOCK = threading.Lock()


def get_predictor(
    checkpoint: str | os.PathLike | None = None,
    device: str = "auto",
    cfg: PredictConfig | None = None,
    **overrides: Any,
) -> Predictor:
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
