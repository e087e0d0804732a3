"""Video frames: evenly spaced frames sampled at a cost that grows with their number, not the video's length.

``sample_video(path, k)`` returns ``k`` evenly spaced frames (``sample_frame_indices``) as
``(frame index, (H, W, 3) uint8 RGB)`` and how they were read (``VideoSample``):

1. With PyAV (FFmpeg's own API), far-apart frames are reached by seeking to the keyframe before
   each one and decoding forward only from there; every decoded frame's index is computed from
   its timestamp, so each returned frame is verified to be the one asked for. On the way, frames
   that no other frame refers to (most B-frames of H.264) are skipped unless sampled
   (FFmpeg's ``skip_frame``): the sampled frames' pixels are the same, at about half the decoding
   of a long H.264 video. A video whose timestamps are off the frame grid (variable frame rate),
   or whose seek lands after its target, is read again in order.
2. Videos PyAV cannot open or that report no frame count or rate go to OpenCV, which seeks
   the same way less precisely (its seek decodes from 16 frames before the target) and checks
   the position it reports after each frame; on any doubt it reads the video in order.

A sampled frame that cannot be decoded even in order is listed (``VideoSample.missing``), not
silently dropped. ``read_video`` returns only the frames and the frame count. Faults raise
``deepfake.data.media.BadInputError`` (``video_unreadable``, ``video_no_frames``, ...).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import cv2
import numpy as np

from .media import MAX_FILE_BYTES, REASONS, BadInputError, check_regular_file

log = logging.getLogger(__name__)

#: Seek when at least this many frames lie between the decoder and the next sampled frame; decode
#: through shorter gaps. PyAV's seek lands on the keyframe before the target, so it pays once the
#: gap exceeds the keyframe interval's share still to decode. OpenCV's FFmpeg seek goes back to
#: the keyframe at or before 16 frames ahead
#: of the target and decodes forward from it, so one seek costs 17 to 16 + (keyframe interval)
#: decodes wherever the target lies. Measured on 640x360 clips (benchmarks/bench_video.py, a
#: 2-core Xeon; BENCHMARKS.md), seeking became cheaper than grabbing through from a gap of about 16
#: frames for MJPG (every frame a keyframe) and 24 for mp4v (a keyframe every 12 frames). With
#: sparser keyframes (H.264 often has one per second or more) a seek costs more, so gaps just above
#: this may be read a little slower than by grabbing; the large gaps of long videos stay far cheaper.
SEEK_MIN_GAP = 24

#: How ``sample_video`` read a video (``VideoSample.how``).
VideoReadMode = Literal["seek", "sequential", "sequential_after_bad_seek"]
#: Which library decoded it (``VideoSample.reader``).
VideoReader = Literal["pyav", "opencv"]
#: A frame's timestamp may be this far (in frames) from the frame grid before the video counts as
#: variable-frame-rate, whose frame indices timestamps cannot give.
GRID_TOLERANCE = 0.01


@dataclass(frozen=True)
class VideoSample:
    """Frames sampled from one video, and how they were read (``sample_video``).

    Attributes:
        frames: ``(frame index, (H, W, 3) uint8 RGB)`` in index order; each index is one of ``requested``.
        n_frames: the frame count the container reports, or the frames decoded when it reports none.
        requested: the sampled indices, ``sample_frame_indices(n_frames, k)``.
        missing: requested indices that could not be decoded even reading in order (the video ends
            before its header says, or a frame is damaged).
        how: ``seek`` (frames reached by seeking, every position checked), ``sequential`` (read in
            order from the first frame: no gap worth a seek, or no frame count) or
            ``sequential_after_bad_seek`` (a seek or a position check failed, so the video was read
            again in order).
        frames_decoded: frames decoded, every pass counted (with PyAV, not the non-reference frames
            skipped between sampled ones). With ``reader="opencv"`` the frames OpenCV decodes inside
            a seek are not visible (OpenCV 4: 17 or more for each of ``seeks``).
        seeks: the frame indices sought, in order (those before a fallback included).
        reader: ``pyav`` or ``opencv``: the library that decoded the returned frames.
    """

    frames: list[tuple[int, np.ndarray]]
    n_frames: int
    requested: tuple[int, ...]
    missing: tuple[int, ...]
    how: VideoReadMode
    frames_decoded: int
    seeks: tuple[int, ...] = ()
    reader: VideoReader = "opencv"


def sample_frame_indices(n_frames: int, k: int) -> list[int]:
    """``k`` evenly spaced frame indices over ``n_frames`` (all of them when there are fewer)."""
    if n_frames <= 0 or k <= 0:
        return []
    if n_frames <= k:
        return list(range(n_frames))
    return sorted(set(np.linspace(0, n_frames - 1, k).round().astype(int).tolist()))


def _open_capture(path: str) -> cv2.VideoCapture:
    """An OpenCV capture of ``path`` (the one place videos are opened)."""
    return cv2.VideoCapture(path)


class _BadSeek(Exception):
    """A seek landed on another frame, or a frame was not where the decoder should be."""


class _Cursor:
    """An open capture and the index of the next frame it decodes; counts decodes and seeks."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.decoded = 0
        self.seeks: list[int] = []
        self.cap = self._open()
        self.pos = 0

    def _open(self) -> cv2.VideoCapture:
        cap = _open_capture(self.path)
        if not cap.isOpened():
            cap.release()
            raise BadInputError(self.path, "video_unreadable")
        return cap

    def __enter__(self) -> _Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cap.release()

    def reopen(self) -> None:
        """Start again from the first frame (a fresh decoder: no state left from a bad seek)."""
        self.cap.release()
        self.cap, self.pos = self._open(), 0

    def frame_count(self) -> int:
        """The container's frame count, 0 when it reports none."""
        n = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        return int(n) if math.isfinite(n) and n > 0 else 0

    def fps(self) -> float:
        """Frames per second, 0 when unknown."""
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        return fps if math.isfinite(fps) and fps > 0 else 0.0

    def grab(self) -> bool:
        """Decode the next frame (kept in the decoder until ``rgb``); False at the end."""
        if not self.cap.grab():
            return False
        self.decoded += 1
        self.pos += 1
        return True

    def grab_through(self, index: int) -> bool:
        """Decode up to and including frame ``index``; False when the video ends first."""
        while self.pos <= index:
            if not self.grab():
                return False
        return True

    def rgb(self) -> np.ndarray | None:
        """The last grabbed frame as (H, W, 3) uint8 RGB, or None when it cannot be converted."""
        ok, bgr = self.cap.retrieve()
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok and bgr is not None else None

    def seek(self, index: int) -> None:
        """Make frame ``index`` the next one decoded; ``_BadSeek`` when the decoder reports another."""
        self.seeks.append(index)
        ok = self.cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        reported = self.cap.get(cv2.CAP_PROP_POS_FRAMES)
        if not ok or not abs(reported - index) < 0.5:  # NaN fails too
            raise _BadSeek(f"a seek to frame {index} landed on frame {reported:g}")
        self.pos = index

    def check_position(self, index: int, fps: float) -> None:
        """``_BadSeek`` unless the frame just grabbed is frame ``index``: by number and by timestamp."""
        number = self.cap.get(cv2.CAP_PROP_POS_FRAMES)  # the next frame's index
        msec = self.cap.get(cv2.CAP_PROP_POS_MSEC)  # the grabbed frame's timestamp
        expected = index * 1000.0 / fps
        if not (abs(number - (index + 1)) < 0.5 and abs(msec - expected) <= 500.0 / fps):  # within half a frame
            raise _BadSeek(
                f"frame {index} was expected at {expected:.0f} ms; the decoder reports frame {number - 1:g} "
                f"at {msec:.0f} ms"
            )

    def count_frames(self) -> int:
        """Decode every remaining frame; the index of the frame after the last."""
        while self.grab():
            pass
        return self.pos


def _seeking_pays(wanted: list[int]) -> bool:
    """True when some gap before a sampled frame (from the first frame on) is worth a seek."""
    return any(b - a - 1 >= SEEK_MIN_GAP for a, b in zip([-1, *wanted], wanted))


def _read_in_order(cur: _Cursor, wanted: list[int]) -> list[tuple[int, np.ndarray]]:
    """The ``wanted`` frames that decode, reading every frame from the decoder's position up to the last one."""
    frames = []
    for index in wanted:
        if not cur.grab_through(index):
            break  # the video ends early: this frame and the later ones are missing
        rgb = cur.rgb()
        if rgb is not None:
            frames.append((index, rgb))
    return frames


def _read_seeking(cur: _Cursor, wanted: list[int], fps: float) -> list[tuple[int, np.ndarray]]:
    """Every ``wanted`` frame, seeking across gaps of ``SEEK_MIN_GAP`` frames or more; ``_BadSeek`` on any doubt."""
    frames = []
    for index in wanted:
        if index - cur.pos >= SEEK_MIN_GAP:
            cur.seek(index)
        if not cur.grab_through(index):
            raise _BadSeek(f"frame {index} could not be decoded at position {cur.pos}")
        cur.check_position(index, fps)
        rgb = cur.rgb()
        if rgb is None:
            raise _BadSeek(f"frame {index} decoded but could not be converted to RGB")
        frames.append((index, rgb))
    return frames


def _import_av() -> Any:
    try:
        import av
    except ImportError:  # a dependency; without it every video goes to OpenCV
        return None
    return av


def _decode_sampled(container: Any, stream: Any, sampled: Callable[[Any], bool]) -> Iterator[Any]:
    """The frames of ``stream`` from the container's position, decoding a packet in full only when
    ``sampled(packet)`` is true or unknown: other frames are skipped when no frame refers to them
    (FFmpeg's ``skip_frame = NONREF``; reference frames are always decoded, so every frame that is
    decoded has exactly the pixels a full decode gives)."""
    codec = stream.codec_context
    for packet in container.demux(stream):
        codec.skip_frame = "DEFAULT" if sampled(packet) else "NONREF"
        yield from codec.decode(packet)


def _sample_with_av(path: str, k: int) -> tuple[list[tuple[int, np.ndarray]], int, list[int], int, list[int]] | None:
    """``(frames, n_frames, wanted, frames decoded, seeks)`` read with PyAV, seeking to keyframes.

    None when PyAV cannot read this video exactly (it does not open, reports no frame count or
    rate, or has no timestamps): OpenCV reads it instead. ``_BadSeek`` when a frame's timestamp
    is off the frame grid or a seek lands after its target (the caller reads in order instead).
    """
    av = _import_av()
    if av is None:
        return None
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        log.debug("%s: PyAV cannot open it (%s); OpenCV reads it", path, e)
        return None
    with container:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        n, rate, base = int(stream.frames or 0), stream.average_rate, stream.time_base
        if n <= 0 or not rate or not base:
            return None
        start = int(stream.start_time or 0)
        per_frame = 1 / (Fraction(rate) * Fraction(base))  # timestamp units per frame
        wanted = sample_frame_indices(n, k)
        targets = set(wanted)

        def sampled(packet: Any) -> bool:  # a packet of a sampled frame, or one without a timestamp
            return packet.pts is None or round((packet.pts - start) / per_frame) in targets

        frames: list[tuple[int, np.ndarray]] = []
        decoded, seeks, pos = 0, [], 0
        decoder = _decode_sampled(container, stream, sampled)
        to_rgb = av.video.reformatter.VideoReformatter()  # one for all frames: a new one per frame costs ~1 ms
        try:
            for index in wanted:
                if index - pos >= SEEK_MIN_GAP:
                    container.seek(start + round(index * per_frame), stream=stream, backward=True, any_frame=False)
                    decoder = _decode_sampled(container, stream, sampled)
                    seeks.append(index)
                found = None
                for frame in decoder:
                    decoded += 1
                    if frame.pts is None:
                        raise _BadSeek(f"frame {decoded} has no timestamp")
                    exact = float((frame.pts - start) / per_frame)
                    at = round(exact)
                    if abs(exact - at) > GRID_TOLERANCE:
                        raise _BadSeek(f"timestamp {frame.pts} is off the frame grid (variable frame rate?)")
                    pos = at + 1
                    if at == index:
                        found = frame
                        break
                    if at > index:
                        raise _BadSeek(f"frame {index} was asked for; the decoder went on to frame {at}")
                if found is None:
                    if seeks:  # a seek past the end, or past damage? reading in order tells
                        raise _BadSeek(f"frame {index} was not found after a seek")
                    break  # the video ends early: this frame and the later ones are missing
                frames.append((index, to_rgb.reformat(found, format="rgb24").to_ndarray()))
        except av.error.FFmpegError as e:
            raise _BadSeek(f"PyAV: {e}") from e
    return frames, n, wanted, decoded, seeks


def _listed(indices: tuple[int, ...], most: int = 8) -> str:
    return ", ".join(map(str, indices[:most])) + (f" and {len(indices) - most} more" if len(indices) > most else "")


def sample_video(
    path: str | os.PathLike, k: int, *, strict: bool = False, max_bytes: int | None = MAX_FILE_BYTES
) -> VideoSample:
    """``k`` evenly spaced frames of a video (``sample_frame_indices``) and how they were read.

    Frames far apart (``SEEK_MIN_GAP``) are reached by seeking, near ones by decoding through, so
    the cost grows with ``k``, not with the video's length. Seeking is inexact for many codecs:
    every frame's index is checked (from its timestamp with PyAV; from the frame number and
    timestamp OpenCV reports otherwise), and on any disagreement the video is read again in order
    from the start (logged). When the container reports no frame count, every frame is decoded
    once to count them, then the video is read again in order up to the last sampled frame; only
    the sampled frames are kept in memory. A sampled frame that does not decode even in order is
    listed in ``missing``.

    Args:
        path: the video file.
        k: how many frames to sample (all of them when the video has fewer).
        strict: raise ``frame_unreadable`` when a sampled frame is missing instead of listing it.
        max_bytes: larger files are refused before anything is read (``file_too_large``).

    Raises:
        BadInputError: ``empty_file``, ``video_unreadable``, ``video_no_frames`` (no sampled frame
            decodes), ``frame_unreadable`` (``strict`` only), or a ``check_regular_file`` reason.
        ValueError: ``k`` below 1.
    """
    if k < 1:
        raise ValueError(f"k = {k}: sample at least one frame")
    path = str(path)
    if check_regular_file(path, max_bytes) == 0:
        raise BadInputError(path, "empty_file")
    how: VideoReadMode = "sequential"
    reader: VideoReader = "pyav"
    try:
        read = _sample_with_av(path, k)
    except _BadSeek as e:
        log.info("%s: %s; reading the video in order instead", path, e)
        read, how = None, "sequential_after_bad_seek"
    if read is not None:
        frames, n, wanted, decoded, seeks = read
        if seeks:
            how = "seek"
        return _sampled(path, frames, n, wanted, how, decoded, seeks, reader, strict)
    reader = "opencv"
    with _Cursor(path) as cur:
        n = cur.frame_count()
        may_seek = n > 0 and how != "sequential_after_bad_seek"  # PyAV's seek failed: read in order
        if n == 0:  # no frame count: count by decoding, then read again
            n = cur.count_frames()
            cur.reopen()
        wanted = sample_frame_indices(n, k)
        fps = cur.fps() if may_seek else 0.0
        if fps and _seeking_pays(wanted):
            try:
                frames, how = _read_seeking(cur, wanted, fps), "seek"
            except _BadSeek as e:
                if cur.seeks:
                    how = "sequential_after_bad_seek"
                log.info("%s: %s; reading the video in order instead", path, e)
                cur.reopen()
                frames = _read_in_order(cur, wanted)
        else:
            frames = _read_in_order(cur, wanted)
    return _sampled(path, frames, n, wanted, how, cur.decoded, cur.seeks, reader, strict)


def _sampled(
    path: str,
    frames: list[tuple[int, np.ndarray]],
    n: int,
    wanted: list[int],
    how: VideoReadMode,
    decoded: int,
    seeks: list[int],
    reader: VideoReader,
    strict: bool,
) -> VideoSample:
    """The ``VideoSample``, after checking what is missing."""
    if not frames:
        raise BadInputError(path, "video_no_frames", f"none of {len(wanted)} sampled frames decodes ({n} listed)")
    found = {index for index, _ in frames}
    missing = tuple(index for index in wanted if index not in found)
    if missing:
        detail = f"frame(s) {_listed(missing)} of {n} listed; {len(frames)} of {len(wanted)} sampled frames decoded"
        if strict:
            raise BadInputError(path, "frame_unreadable", detail)
        log.warning("%s: %s (%s)", path, REASONS["frame_unreadable"], detail)
    return VideoSample(frames, n, tuple(wanted), missing, how, decoded, tuple(seeks), reader)


def read_video_frames(
    path: str | os.PathLike, k: int, max_bytes: int | None = MAX_FILE_BYTES
) -> list[tuple[int, np.ndarray]]:
    """``k`` evenly spaced frames of a video as ``(frame index, (H, W, 3) uint8 RGB)`` (see ``read_video``)."""
    return read_video(path, k, max_bytes)[0]


def read_video(
    path: str | os.PathLike, k: int, max_bytes: int | None = MAX_FILE_BYTES
) -> tuple[list[tuple[int, np.ndarray]], int]:
    """``k`` evenly spaced frames of a video as ``(frame index, (H, W, 3) uint8 RGB)``, and its frame count.

    ``sample_video`` without the details: a sampled frame that cannot be decoded is left out (and
    logged as a warning). Raises ``BadInputError`` (``video_unreadable``, ``video_no_frames``...).
    """
    sample = sample_video(path, k, max_bytes=max_bytes)
    return sample.frames, sample.n_frames
