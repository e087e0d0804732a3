"""Video frame sampling (``deepfake.data.video.sample_video``): each returned frame is the one its index names.

The clips are written with OpenCV and every frame shows its own index in binary, one bit per
16 px black or white block, which survives mp4v and MJPG compression; a frame's index is read
back from its pixels and compared with the index the sampler reports. Both readers are tested:
PyAV (the default) and OpenCV (videos PyAV cannot read, and the fallback).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from deepfake.data import video
from deepfake.data.media import BadInputError
from deepfake.data.video import SEEK_MIN_GAP, read_video, sample_frame_indices, sample_video

W, H, BLOCK = 64, 48, 16
BITS = (W // BLOCK) * (H // BLOCK)  # 12 blocks: indices up to 4095
LONG = 320  # frames of the long clips: 8 samples lie about 45 frames apart, beyond SEEK_MIN_GAP
CODECS = {".mp4": "mp4v", ".avi": "MJPG"}


def index_frame(i: int) -> np.ndarray:
    """A (H, W, 3) uint8 RGB frame showing ``i`` in binary, bit b in block b (row-major), white for 1."""
    bits = np.array([(i >> b) & 1 for b in range(BITS)], np.uint8).reshape(H // BLOCK, W // BLOCK) * 255
    return np.repeat(np.repeat(bits, BLOCK, axis=0), BLOCK, axis=1)[:, :, None].repeat(3, axis=2)


def frame_index(rgb: np.ndarray) -> int:
    """The index ``index_frame`` drew, read from the centre of each block."""
    c = BLOCK // 4
    centres = rgb.reshape(H // BLOCK, BLOCK, W // BLOCK, BLOCK, 3)[:, c:-c, :, c:-c].mean(axis=(1, 3, 4))
    return sum(1 << b for b, v in enumerate(centres.reshape(-1)) if v > 127)


def write_clip(path, n: int, fps: float = 25.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*CODECS[path.suffix]), fps, (W, H))
    assert writer.isOpened(), f"OpenCV cannot write {path.suffix}"
    for i in range(n):
        writer.write(cv2.cvtColor(index_frame(i), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(params=["pyav", "opencv"])
def reader(request, monkeypatch):
    """Run a test with each reader: ``opencv`` makes PyAV unavailable."""
    if request.param == "opencv":
        monkeypatch.setattr(video, "_import_av", lambda: None)
    return request.param


@pytest.fixture
def opencv(monkeypatch):
    monkeypatch.setattr(video, "_import_av", lambda: None)


class FakeAv:
    """PyAV whose seeks land ``shift`` frames away from where they were asked to (inexact seeking)."""

    def __init__(self, shift: int) -> None:
        import av

        self.av, self.shift, self.error, self.video = av, shift, av.error, av.video

    def open(self, path):
        return SeekShifted(self.av.open(path), self.shift)


class SeekShifted:
    def __init__(self, container, shift: int) -> None:
        self.container, self.shift = container, shift

    def __getattr__(self, name):
        return getattr(self.container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.container.close()

    def seek(self, offset, stream, **kw):
        step = 1 / (stream.average_rate * stream.time_base)
        return self.container.seek(int(offset + self.shift * step), stream=stream, **kw)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """{(suffix, length): path}: a long and a short clip in each codec, written once."""
    root = tmp_path_factory.mktemp("clips")
    return {(ext, n): write_clip(root / f"clip{n}{ext}", n) for ext in CODECS for n in (LONG, 5)}


def assert_labelled(sample, shape=(H, W, 3)):
    for i, rgb in sample.frames:
        assert rgb.shape == shape and rgb.dtype == np.uint8
        assert frame_index(rgb) == i, f"frame reported as {i} shows {frame_index(rgb)}"


class Capture:
    """A real OpenCV capture; subclasses change what a seek does or what the decoder reports."""

    def __init__(self, path: str) -> None:
        self.cap = cv2.VideoCapture(path)

    def __getattr__(self, name):
        return getattr(self.cap, name)


class SeekLandsEarly(Capture):
    """Seeks land 5 frames before the target; the decoder says so (as with an inexact keyframe seek)."""

    caught_after = 0  # frames decoded after the seek before it is caught: none, the seek's report gives it away

    def set(self, prop, value):
        return self.cap.set(prop, max(0, value - 5) if prop == cv2.CAP_PROP_POS_FRAMES else value)


class SeekLandsLateAndHides(Capture):
    """Seeks land 3 frames late, but the frame number reads as if exact: only the timestamp tells."""

    shift = 0
    caught_after = 1  # the landing frame's timestamp gives it away

    def set(self, prop, value):
        if prop == cv2.CAP_PROP_POS_FRAMES:
            self.shift = -3
            return self.cap.set(prop, value + 3)
        return self.cap.set(prop, value)

    def get(self, prop):
        return self.cap.get(prop) + (self.shift if prop == cv2.CAP_PROP_POS_FRAMES else 0)


class NoFrameCount(Capture):
    def get(self, prop):
        return 0.0 if prop == cv2.CAP_PROP_FRAME_COUNT else self.cap.get(prop)


def test_index_code_survives_both_codecs(clips):
    for ext in CODECS:
        cap, seen = cv2.VideoCapture(str(clips[(ext, LONG)])), []
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            seen.append(frame_index(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
        cap.release()
        assert seen == list(range(LONG)), ext


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 33, 100, 301, 1500, 10_007])
@pytest.mark.parametrize("k", [1, 2, 8, 32])
def test_sample_frame_indices_are_even_sorted_unique_and_span_the_video(n, k):
    idx = sample_frame_indices(n, k)
    assert len(idx) == min(n, k) and idx == sorted(set(idx))
    assert idx[0] == 0 and all(0 <= i < n for i in idx)
    if len(idx) > 1:
        assert idx[-1] == n - 1
        steps = np.diff(idx)
        assert steps.max() - steps.min() <= 1 and abs(steps.mean() - (n - 1) / (len(idx) - 1)) < 1e-9


def test_sample_frame_indices_edge_cases():
    assert sample_frame_indices(0, 8) == [] and sample_frame_indices(10, 0) == []
    assert sample_frame_indices(5, 8) == [0, 1, 2, 3, 4]
    assert sample_frame_indices(1500, 1) == [0]


@pytest.mark.parametrize("ext", list(CODECS))
def test_long_clip_far_frames_are_reached_by_seeking(clips, ext, reader):
    s = sample_video(clips[(ext, LONG)], 8)
    want = sample_frame_indices(LONG, 8)
    assert s.n_frames == LONG and s.requested == tuple(want) and s.missing == ()
    assert [i for i, _ in s.frames] == want and s.reader == reader
    assert_labelled(s)
    assert s.how == "seek" and s.seeks == tuple(want[1:])  # frame 0 is decoded in place, every other sought
    if reader == "opencv":
        assert s.frames_decoded == len(want)  # the grabs; OpenCV's decodes inside its seeks are not visible
    else:  # from the keyframe before each target (mp4v: one every 12 frames; MJPG: every frame)
        assert len(want) <= s.frames_decoded <= len(want) * (12 if ext == ".mp4" else 1)


@pytest.mark.parametrize("ext", list(CODECS))
def test_close_frames_are_decoded_through_without_seeking(clips, ext, reader):
    s = sample_video(clips[(ext, LONG)], 32)  # about 10 frames apart, below SEEK_MIN_GAP
    assert max(np.diff(s.requested)) <= SEEK_MIN_GAP
    assert [i for i, _ in s.frames] == sample_frame_indices(LONG, 32) and s.missing == ()
    assert_labelled(s)
    assert s.how == "sequential" and s.seeks == () and s.frames_decoded == LONG


def test_h264_frames_no_frame_refers_to_are_skipped_unless_sampled(tmp_path):
    av = pytest.importorskip("av")
    try:
        av.codec.Codec("libx264", "w")
    except Exception:
        pytest.skip("this PyAV build has no H.264 encoder")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:  # x264's defaults: B-frames, most of which no frame refers to
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i in range(LONG):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(index_frame(i), format="rgb24")))
        out.mux(stream.encode())
    s = sample_video(path, 32)  # about 10 frames apart: read in order
    want = sample_frame_indices(LONG, 32)
    assert [i for i, _ in s.frames] == want and s.how == "sequential" and s.missing == ()
    assert_labelled(s)
    with av.open(str(path)) as c:  # every frame decoded: the sampled ones have the same pixels
        everything = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert all(np.array_equal(rgb, everything[i]) for i, rgb in s.frames)
    assert s.frames_decoded < 0.8 * (want[-1] + 1), s.frames_decoded  # the skipped frames were not decoded


@pytest.mark.parametrize("ext", list(CODECS))
def test_short_clip_returns_every_frame(clips, ext, reader):
    s = sample_video(clips[(ext, 5)], 8)
    assert [i for i, _ in s.frames] == [0, 1, 2, 3, 4] and s.n_frames == 5 and s.missing == ()
    assert_labelled(s)
    assert s.how == "sequential" and s.frames_decoded == 5


@pytest.mark.parametrize("ext", list(CODECS))
def test_one_frame_decodes_only_the_first(clips, ext, reader):
    s = sample_video(clips[(ext, LONG)], 1)
    assert [i for i, _ in s.frames] == [0] and s.frames_decoded == 1 and s.seeks == ()
    assert_labelled(s)


def test_no_frame_requested_is_an_error(clips):
    with pytest.raises(ValueError, match="at least one frame"):
        sample_video(clips[(".mp4", 5)], 0)


def test_read_video_returns_the_sample_frames_and_count(clips, reader):
    path = clips[(".mp4", LONG)]
    frames, n = read_video(path, 8)
    s = sample_video(path, 8)
    assert n == LONG and [i for i, _ in frames] == [i for i, _ in s.frames]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(frames, s.frames))


@pytest.mark.parametrize("capture", [SeekLandsEarly, SeekLandsLateAndHides])
@pytest.mark.parametrize("ext", list(CODECS))
def test_inexact_opencv_seek_falls_back_to_reading_in_order(clips, monkeypatch, caplog, ext, capture, opencv):
    monkeypatch.setattr(video, "_open_capture", capture)
    with caplog.at_level(logging.INFO, logger="deepfake.data.video"):
        s = sample_video(clips[(ext, LONG)], 8)
    want = sample_frame_indices(LONG, 8)
    assert s.how == "sequential_after_bad_seek" and s.seeks == (want[1],)  # the first seek is caught
    assert [i for i, _ in s.frames] == want and s.missing == ()
    assert_labelled(s)
    # frame 0, what was decoded after the bad seek, then every frame in order up to the last sampled
    assert s.frames_decoded == 1 + capture.caught_after + want[-1] + 1
    assert any("reading the video in order" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("shift", [-5, 3])
@pytest.mark.parametrize("ext", list(CODECS))
def test_inexact_pyav_seek_is_caught_and_the_video_read_in_order(clips, monkeypatch, caplog, ext, shift):
    monkeypatch.setattr(video, "_import_av", lambda: FakeAv(shift))
    with caplog.at_level(logging.INFO, logger="deepfake.data.video"):
        s = sample_video(clips[(ext, LONG)], 8)
    want = sample_frame_indices(LONG, 8)
    assert [i for i, _ in s.frames] == want and s.missing == ()
    assert_labelled(s)
    if shift > 0 and ext == ".avi":  # every frame a keyframe: landing late passes the target
        assert s.how == "sequential_after_bad_seek" and s.reader == "opencv"
        assert any("reading the video in order" in r.getMessage() for r in caplog.records)
    elif shift < 0:  # landing early costs decodes, not correctness: timestamps say where it is
        assert s.how == "seek" and s.reader == "pyav"


def test_unknown_frame_count_is_counted_then_read_again(clips, monkeypatch, opencv):
    monkeypatch.setattr(video, "_open_capture", NoFrameCount)
    s = sample_video(clips[(".mp4", LONG)], 8)
    want = sample_frame_indices(LONG, 8)
    assert s.n_frames == LONG and [i for i, _ in s.frames] == want and s.missing == ()
    assert_labelled(s)
    assert s.how == "sequential" and s.frames_decoded == LONG + want[-1] + 1


def test_unknown_frame_rate_reads_in_order(clips, monkeypatch, opencv):
    class NoFps(Capture):
        def get(self, prop):
            return 0.0 if prop == cv2.CAP_PROP_FPS else self.cap.get(prop)

    monkeypatch.setattr(video, "_open_capture", NoFps)
    s = sample_video(clips[(".avi", LONG)], 8)
    assert s.how == "sequential" and s.seeks == () and s.missing == ()
    assert_labelled(s)


def test_truncated_avi_reports_missing_frames_and_returns_only_right_ones(clips, tmp_path, caplog, reader):
    data = clips[(".avi", LONG)].read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) * 6 // 10])
    cap, decodable = cv2.VideoCapture(str(cut)), 0
    while cap.grab():
        decodable += 1
    cap.release()
    want = sample_frame_indices(LONG, 8)
    assert 0 < decodable < want[-1]  # the header still lists LONG frames

    with caplog.at_level(logging.WARNING, logger="deepfake.data.video"):
        s = sample_video(cut, 8)
    assert s.n_frames == LONG and s.requested == tuple(want)
    assert s.missing == tuple(i for i in want if i >= decodable) and s.missing
    assert [i for i, _ in s.frames] == [i for i in want if i < decodable]
    assert_labelled(s)
    assert s.how == "sequential_after_bad_seek"
    assert any("could not be decoded" in r.getMessage() for r in caplog.records)

    frames, n = read_video(cut, 8)  # the callers' view: the decodable frames, still correctly labelled
    assert n == LONG and [i for i, _ in frames] == [i for i, _ in s.frames]
    with pytest.raises(BadInputError) as e:
        sample_video(cut, 8, strict=True)
    assert e.value.reason == "frame_unreadable" and str(s.missing[0]) in e.value.detail


def test_avi_cut_before_its_first_frame_has_no_frames(clips, tmp_path, reader):
    data = clips[(".avi", LONG)].read_bytes()
    cut = tmp_path / "header_only.avi"
    cut.write_bytes(data[: data.index(b"movi") + 12])  # the header still lists LONG frames
    with pytest.raises(BadInputError) as e:
        sample_video(cut, 8)
    assert e.value.reason == "video_no_frames" and f"{LONG} listed" in e.value.detail


def test_truncated_mp4_is_refused(clips, tmp_path, reader):
    data = clips[(".mp4", LONG)].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])  # the index (moov) is written last: it is gone
    with pytest.raises(BadInputError) as e:
        sample_video(cut, 8)
    assert e.value.reason == "video_unreadable"
