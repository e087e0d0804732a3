"""Property-based fuzzing of the decoders (Hypothesis): every input is decoded or refused with a reason.

The property, for the image decoder (``decode_image``, ``read_image`` and the predictor's
``decode_input``), the video decoder (``sample_video``, ``read_video_frames``) and the preprocess
stage's ``process_source``: whatever the bytes (random, a valid file truncated at any offset, a
valid file with bytes overwritten, flipped, inserted or removed in its header or anywhere, a file
whose extension lies about its content), the result is a valid (H, W, 3) uint8 image (or such
frames), or ``BadInputError`` whose ``reason`` is a key of ``REASONS``. No other exception, and
no hang: each call runs under ``time_limit``.

The valid files (JPEG, PNG, WebP, GIF, BMP, TIFF in several pixel modes; MP4, AVI, MKV) are made
once per module from a seeded pattern. Exhaustive sweeps back the random search: every truncation,
and every bit flip and extreme 32-bit value in the first ``HEADER`` bytes, of every sample image.
The default run is deterministic and takes seconds (``derandomize=True``, no example database);
the ``slow`` variants run more examples. ``pytest --hypothesis-show-statistics`` lists the
outcomes each property reached (decoded, and each refusal's reason).
"""

from __future__ import annotations

import faulthandler
import hashlib
import io
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import currently_in_test_context, event, given, note, settings
from hypothesis import strategies as st
from PIL import Image

from deepfake.data.ingest import Source
from deepfake.data.media import (
    IMAGE_EXTENSIONS,
    REASONS,
    VIDEO_EXTENSIONS,
    BadInputError,
    decode_image,
    kind_of,
    read_image,
)
from deepfake.data.preprocess import PreprocessConfig, _init_worker, process_source
from deepfake.data.video import read_video_frames, sample_frame_indices, sample_video
from deepfake.inference.prediction import InputError, decode_input

LIMIT_S = 5.0  # one decode of a 32 px image or a few-frame clip takes milliseconds
HEADER = 64  # bytes counted as the header region for the header mutations
SIDE = 32  # side of the sample images and frames
N_FRAMES = 8  # frames of the short sample clips
K = 3  # frames sampled from each video
LOSSY = 10.0  # mean absolute difference allowed after lossy coding (a wrong rotation or channel order: ~100)
#: Pixel limit of the decoders here (the default is 64 MP): a damaged header claiming 8000 x 8000 px
#: is refused as too_large at once instead of costing ~2 s and ~1 GB to decode.
MAX_PIXELS = 4_000_000

#: The reasons each decoder may give (all keys of REASONS, checked below).
IMAGE_REASONS = {"empty_file", "not_an_image", "corrupt", "truncated", "too_large", "unsupported_mode"}
TRUNCATION_REASONS = {"empty_file", "not_an_image", "corrupt", "truncated"}
VIDEO_REASONS = {"empty_file", "video_unreadable", "video_no_frames"}
FILE_REASONS = {"missing_file", "not_regular_file", "file_too_large", "unreadable"}
#: Reasons the preprocess stage may record without face detection: decoding and file faults, a
#: missing video frame, an image below min_side, memory (never a face reason, never a listing one).
STAGE_REASONS = IMAGE_REASONS | VIDEO_REASONS | FILE_REASONS | {"frame_unreadable", "too_small", "out_of_memory"}

#: Starts of real formats, so random tails reach the format parsers, not only the "unknown format" path.
SIGNATURES = (
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    b"\xff\xd8\xff\xdb",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    b"GIF89a",
    b"GIF87a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x10\x00\x00WEBPVP8 ",
    b"RIFF\x00\x10\x00\x00WEBPVP8L",
    b"\x00\x00\x00\x18ftypmp42",
    b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00",
    b"RIFF\x00\x10\x00\x00AVI LIST",
    b"\x1aE\xdf\xa3",
)
#: The image signatures ``deepfake.data.media`` knows (and RIFF....WEBP).
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
#: 32-bit values that make size and count fields interesting (zero, one, huge, negative).
EXTREMES = (b"\x00\x00\x00\x00", b"\x00\x00\x00\x01", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\xff\xff\xff\xff")
EDITS = ("truncate", "overwrite_header", "overwrite", "extreme_header", "extreme", "flip", "insert", "delete")

#: Pillow warns about damaged TIFF metadata (and goes on); the outcome is what is tested here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")

FAST = settings(derandomize=True, database=None, deadline=None, max_examples=150)
SLOW = settings(derandomize=True, database=None, deadline=None, max_examples=1000)


def test_reason_sets_are_documented_reasons():
    assert STAGE_REASONS | TRUNCATION_REASONS <= set(REASONS)


# --------------------------------------------------------------------------------------------
# The time limit
# --------------------------------------------------------------------------------------------


class DecoderHang(AssertionError):
    """A decoder ran past its time limit on one input."""


@contextmanager
def time_limit(what: str | Callable[[], str], seconds: float = LIMIT_S) -> Iterator[None]:
    """Fail with ``DecoderHang`` naming ``what`` (the input) when the block runs longer than ``seconds``.

    SIGALRM interrupts Python code. A hang inside C code (FFmpeg, libjpeg...) never returns to the
    interpreter, so faulthandler ends the process after three times the limit, printing every
    thread's traceback: CI fails instead of hanging.
    """

    def on_alarm(signum: int, frame: object) -> None:
        raise DecoderHang(f"{what() if callable(what) else what} ran for more than {seconds:g} s (a hang)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    faulthandler.dump_traceback_later(3 * seconds, exit=True)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous)


def test_time_limit_fails_a_hang_naming_the_input():
    with pytest.raises(DecoderHang, match="decode_image on 7 bytes ran for more than 0.05 s"):
        with time_limit("decode_image on 7 bytes", 0.05):
            while True:
                pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # disarmed, the handler restored
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL


# --------------------------------------------------------------------------------------------
# Valid samples
# --------------------------------------------------------------------------------------------


def pattern(h: int = SIDE, w: int = SIDE, seed: int = 0) -> np.ndarray:
    """A seeded (h, w, 3) uint8 test image: a different gradient per channel plus noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) * 255 // (h + w - 2)], axis=-1)
    noise = np.random.default_rng(seed).integers(-8, 9, (h, w, 3))
    return np.clip(np.roll(base, 3 * seed, axis=1) + noise, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Sample:
    """A valid file and what decoding it must give."""

    data: bytes
    kind: str  # image | video
    expected: tuple[np.ndarray, ...]  # the image, or every frame of the video
    tol: float  # mean absolute difference allowed (0: lossless)

    def __repr__(self) -> str:
        return f"Sample({self.kind}, {len(self.data)} bytes)"

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # how Hypothesis prints a failing example's arguments
        printer.text(repr(self))


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def image_samples() -> dict[str, Sample]:
    rgb = pattern()
    pil = Image.fromarray(rgb)
    grey = rgb[:, :, 1]
    alpha = np.tile(np.linspace(0, 255, SIDE).round().astype(np.uint8), (SIDE, 1))  # (H, W), left transparent
    on_white = (rgb * (alpha[:, :, None] / 255.0) + 255.0 * (1 - alpha[:, :, None] / 255.0)).round().astype(np.uint8)
    wide = pattern(24, SIDE, seed=1)  # 32 wide, 24 high; EXIF orientation 6 shows it rotated clockwise
    exif = Image.Exif()
    exif[0x0112] = 6

    def image(data: bytes, expected: np.ndarray, tol: float) -> Sample:
        return Sample(data, "image", (expected,), tol)

    return {
        "photo.jpg": image(encode(pil, "JPEG", quality=90), rgb, LOSSY),
        "exif.jpg": image(encode(Image.fromarray(wide), "JPEG", quality=90, exif=exif), np.rot90(wide, k=-1), LOSSY),
        "cmyk.jpg": image(encode(pil.convert("CMYK"), "JPEG", quality=90), rgb, LOSSY),
        "photo.png": image(encode(pil, "PNG"), rgb, 0),
        "grey.png": image(encode(Image.fromarray(grey), "PNG"), np.repeat(grey[:, :, None], 3, axis=2), 0),
        "rgba.png": image(encode(Image.fromarray(np.dstack([rgb, alpha])), "PNG"), on_white, 0.5),
        "palette.png": image(encode(pil.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), rgb, LOSSY),
        "16bit.png": image(
            encode(Image.fromarray(grey.astype(np.uint16) * 257), "PNG"), np.repeat(grey[:, :, None], 3, axis=2), 0
        ),
        "photo.webp": image(encode(pil, "WEBP", quality=90), rgb, LOSSY),
        "lossless.webp": image(encode(pil, "WEBP", lossless=True), rgb, 0),
        "photo.gif": image(encode(pil, "GIF"), rgb, LOSSY),
        "photo.bmp": image(encode(pil, "BMP"), rgb, 0),
        "photo.tif": image(encode(pil, "TIFF"), rgb, 0),
    }


def write_video(path: Path, frames: list[np.ndarray], fourcc: str) -> bytes:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (SIDE, SIDE))
    assert writer.isOpened(), f"OpenCV cannot write {path.suffix} with {fourcc}"
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path.read_bytes()


def video_samples(folder: Path) -> dict[str, Sample]:
    short = tuple(pattern(seed=i) for i in range(N_FRAMES))
    long = tuple(pattern(seed=i) for i in range(50))  # K = 3 of 50 frames: gaps of 24, reached by seeking
    return {
        "clip.mp4": Sample(write_video(folder / "clip.mp4", list(short), "mp4v"), "video", short, LOSSY),  # PyAV
        "clip.avi": Sample(write_video(folder / "clip.avi", list(short), "MJPG"), "video", short, LOSSY),
        "clip.mkv": Sample(write_video(folder / "clip.mkv", list(short), "mp4v"), "video", short, LOSSY),  # no count
        "long.mp4": Sample(write_video(folder / "long.mp4", list(long), "mp4v"), "video", long, LOSSY),
    }


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, Sample]:
    """Every valid sample file by name, made once per module."""
    return {**image_samples(), **video_samples(tmp_path_factory.mktemp("fuzz-samples"))}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A folder for the file each example writes."""
    return tmp_path_factory.mktemp("fuzz")


def names(samples: dict[str, Sample], kind: str | None = None) -> list[str]:
    return sorted(n for n, s in samples.items() if kind is None or s.kind == kind)


def mean_difference(rgb: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(rgb.astype(float) - expected).mean()) if rgb.shape == expected.shape else float("inf")


# --------------------------------------------------------------------------------------------
# Inputs: random bytes and mutations of the samples
# --------------------------------------------------------------------------------------------

random_bytes = st.one_of(
    st.binary(max_size=512),
    st.tuples(st.sampled_from(SIGNATURES), st.binary(max_size=512)).map(b"".join),
)


def draw_mutant(data: st.DataObject, blob: bytes) -> bytes:
    """``blob`` after one to three drawn edits (each printed by Hypothesis when an example fails)."""
    out = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        if not out:
            break
        n, edit = len(out), data.draw(st.sampled_from(EDITS), label="edit")
        header = min(HEADER, n) - 1
        if edit == "truncate":
            del out[data.draw(st.integers(0, n - 1), label="truncate at") :]
        elif edit in ("overwrite_header", "overwrite", "extreme_header", "extreme"):
            at = data.draw(st.integers(0, header if edit.endswith("header") else n - 1), label="at")
            values = st.sampled_from(EXTREMES) if edit.startswith("extreme") else st.binary(min_size=1, max_size=16)
            new = data.draw(values, label="written")
            out[at : at + len(new)] = new[: n - at]
        elif edit == "flip":
            at = data.draw(st.integers(0, n - 1), label="at")
            out[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        elif edit == "insert":
            at = data.draw(st.integers(0, n), label="at")
            out[at:at] = data.draw(st.binary(min_size=1, max_size=32), label="inserted")
        else:  # delete
            at = data.draw(st.integers(0, n - 1), label="at")
            del out[at : at + data.draw(st.integers(1, 64), label="deleted")]
    return bytes(out)


def draw_input(data: st.DataObject, samples: dict[str, Sample], kind: str | None = None) -> tuple[str, bytes]:
    """``(description, bytes)``: random bytes, or a sample of ``kind`` (any: None) mutated or intact."""
    source = data.draw(st.sampled_from(["random", "mutant", "mutant", "mutant", "intact"]), label="input")
    if source == "random":
        blob = data.draw(random_bytes, label="bytes")
        return f"{len(blob)} random bytes", blob
    name = data.draw(st.sampled_from(names(samples, kind)), label="sample")
    blob = samples[name].data if source == "intact" else draw_mutant(data, samples[name].data)
    what = f"{len(blob)} bytes ({source} {name})"
    note(f"input: {what}, starting {blob[:HEADER].hex()}")
    return what, blob


# --------------------------------------------------------------------------------------------
# What every decoder must give
# --------------------------------------------------------------------------------------------


def check_rgb(rgb: object, what: str) -> np.ndarray:
    assert isinstance(rgb, np.ndarray), f"{what}: returned a {type(rgb).__name__}"
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3, f"{what}: {rgb.dtype} {rgb.shape}"
    assert rgb.shape[0] >= 1 and rgb.shape[1] >= 1, f"{what}: empty image {rgb.shape}"
    return rgb


def decode_or_reason(blob: bytes, what: str, allowed: set[str] = IMAGE_REASONS) -> np.ndarray | str:
    """``decode_image``'s (H, W, 3) uint8 image, or its refusal's reason (one of ``allowed``).

    Unguarded: the caller runs it under ``time_limit``.
    """
    try:
        rgb = decode_image(blob, max_pixels=MAX_PIXELS)
    except BadInputError as e:
        assert e.reason in allowed, f"decode_image on {what}: reason {e.reason!r} not in {sorted(allowed)}"
        return e.reason
    rgb = check_rgb(rgb, f"decode_image on {what}")
    assert rgb.flags.c_contiguous
    return rgb


def check_video(path: Path, what: str) -> object:
    """``sample_video``'s frames checked against its own bookkeeping, or its refusal's reason."""
    try:
        with time_limit(f"sample_video on {what}"):
            sample = sample_video(path, K)
    except BadInputError as e:
        assert e.reason in VIDEO_REASONS, f"sample_video on {what}: reason {e.reason!r} not in {sorted(VIDEO_REASONS)}"
        assert e.path == str(path)
        if currently_in_test_context():
            event(f"sample_video: {e.reason}")
        return e.reason
    indices = [i for i, _ in sample.frames]
    assert sample.frames, f"sample_video on {what}: no frame and no error"
    assert sample.requested == tuple(sample_frame_indices(sample.n_frames, K))
    assert indices == sorted(set(indices)) and set(indices) <= set(sample.requested), indices
    assert sample.missing == tuple(i for i in sample.requested if i not in indices)
    for i, rgb in sample.frames:
        check_rgb(rgb, f"sample_video on {what}, frame {i}")
    if currently_in_test_context():  # outcomes counted by --hypothesis-show-statistics
        event(f"sample_video: {len(sample.frames)} of {len(sample.requested)} frames, {sample.reader} {sample.how}")
    if sample.missing:  # strict refuses the same video with frame_unreadable
        with pytest.raises(BadInputError) as refused, time_limit(f"sample_video(strict=True) on {what}"):
            sample_video(path, K, strict=True)
        assert refused.value.reason == "frame_unreadable"
    return sample


# --------------------------------------------------------------------------------------------
# The samples themselves decode to their pixels (else the fuzzing starts from broken files)
# --------------------------------------------------------------------------------------------


def test_valid_images_decode_to_their_pixels(samples):
    for name in names(samples, "image"):
        s = samples[name]
        with time_limit(f"decode_image on {name}"):
            rgb = decode_or_reason(s.data, name, set())
        assert mean_difference(rgb, s.expected[0]) <= s.tol, f"{name}: {rgb.shape}"


def test_valid_videos_decode_to_their_frames(samples, scratch):
    how = {}
    for name in names(samples, "video"):
        s = samples[name]
        path = scratch / name
        path.write_bytes(s.data)
        sample = check_video(path, name)
        assert not isinstance(sample, str), f"{name}: {sample}"
        assert sample.n_frames == len(s.expected) and sample.missing == ()
        assert [i for i, _ in sample.frames] == sample_frame_indices(len(s.expected), K)
        for i, rgb in sample.frames:
            assert mean_difference(rgb, s.expected[i]) <= s.tol, f"{name} frame {i}"
        frames = read_video_frames(path, K)  # the same frames, to the pixel
        assert [i for i, _ in frames] == [i for i, _ in sample.frames]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(frames, sample.frames))
        how[name] = (sample.reader, sample.how)
    # every reader: PyAV in order and seeking, OpenCV (Matroska reports no frame count to PyAV)
    assert how == {
        "clip.avi": ("pyav", "sequential"),
        "clip.mkv": ("opencv", "sequential"),
        "clip.mp4": ("pyav", "sequential"),
        "long.mp4": ("pyav", "seek"),
    }


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def signature_length(blob: bytes) -> int:
    """How many leading bytes ``deepfake.data.media`` needs to recognise an image format (WebP: RIFF....WEBP)."""
    return 12 if blob.startswith(b"RIFF") else next(len(m) for m in IMAGE_MAGIC if blob.startswith(m))


def decode_variants(
    name: str, variants: Iterable[tuple[str, bytes]], allowed: set[str] = IMAGE_REASONS
) -> list[np.ndarray | str]:
    """``decode_or_reason`` of each ``(description, bytes)`` variant of sample ``name``, under one time
    limit whose message names the variant in work."""
    outcomes: list[np.ndarray | str] = []
    current = [""]
    with time_limit(lambda: f"decode_image on {name}, {current[0]}"):
        for what, blob in variants:
            current[0] = what
            outcomes.append(decode_or_reason(blob, f"{name}, {what}", allowed))
    return outcomes


def test_every_truncation_of_every_image_is_refused_with_a_reason(samples):
    for name in names(samples, "image"):
        s = samples[name]
        cuts = ((f"cut to {n} of {len(s.data)} bytes", s.data[:n]) for n in range(len(s.data)))
        for n, got in enumerate(decode_variants(name, cuts, TRUNCATION_REASONS)):
            if isinstance(got, np.ndarray):  # the end was not needed (PNG without IEND, GIF trailer)
                assert got.shape == s.expected[0].shape, f"{name} cut to {n} bytes: {got.shape}"
            elif n == 0:
                assert got == "empty_file"
            elif n >= signature_length(s.data):  # recognisably an image: damaged, not "not an image"
                assert got != "not_an_image", f"{name} cut to {n} bytes: {got}"


def header_variants(blob: bytes) -> Iterator[tuple[str, bytes]]:
    """``blob`` with every bit of each header byte flipped, and each of ``EXTREMES`` written at each header offset."""
    for at in range(min(HEADER, len(blob))):
        for bit in range(8):
            out = bytearray(blob)
            out[at] ^= 1 << bit
            yield f"bit {bit} of byte {at} flipped", bytes(out)
        for value in EXTREMES:
            out = bytearray(blob)
            out[at : at + 4] = value[: len(blob) - at]
            yield f"{value.hex()} written at {at}", bytes(out)


def test_every_header_edit_of_every_image_is_decoded_or_refused(samples):
    for name in names(samples, "image"):
        outcomes = decode_variants(name, header_variants(samples[name].data))
        refused = {o for o in outcomes if isinstance(o, str)}
        assert len(outcomes) == (8 + len(EXTREMES)) * HEADER and refused, refused  # all ran; damage was seen


def image_property(data: st.DataObject, samples: dict[str, Sample], scratch: Path) -> None:
    what, blob = draw_input(data, samples, "image")
    path = scratch / f"fuzz{data.draw(st.sampled_from(IMAGE_EXTENSIONS), label='extension')}"
    path.write_bytes(blob)
    with time_limit(f"decode_image, read_image and decode_input on {what}"):
        got = decode_or_reason(blob, what)
        try:  # the same answer from a file, and on the predictor's route
            from_file: np.ndarray | str = read_image(path, MAX_PIXELS)
        except BadInputError as e:
            from_file = e.reason
        try:
            scored: np.ndarray | str = decode_input(blob, "<bytes>", MAX_PIXELS)
        except InputError as e:
            assert isinstance(e.__cause__, BadInputError), f"decode_input on {what}: {e!r} without its cause"
            scored = e.__cause__.reason
    event(f"decode_image: {got if isinstance(got, str) else 'decoded'}")
    for other in (from_file, scored):
        assert type(other) is type(got) and (other == got if isinstance(got, str) else np.array_equal(other, got))


test_images_are_decoded_or_refused_with_a_reason = FAST(given(data=st.data())(image_property))
test_images_are_decoded_or_refused_with_a_reason_slow = pytest.mark.slow(SLOW(given(data=st.data())(image_property)))


@FAST
@given(blob=random_bytes)
def test_random_bytes_are_decoded_or_refused(blob):
    with time_limit(f"decode_image on {len(blob)} random bytes"):
        got = decode_or_reason(blob, f"{len(blob)} random bytes")
    event(f"decode_image: {got if isinstance(got, str) else 'decoded'}")
    if not blob:
        assert got == "empty_file"


# --------------------------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------------------------


def video_property(data: st.DataObject, samples: dict[str, Sample], scratch: Path) -> None:
    what, blob = draw_input(data, samples, "video")
    path = scratch / f"fuzz{data.draw(st.sampled_from(VIDEO_EXTENSIONS), label='extension')}"
    path.write_bytes(blob)
    got = check_video(path, what)
    if not blob:
        assert got == "empty_file"
    if not isinstance(got, str):  # read_video_frames gives the same frames (pixels: FFmpeg's concealment of
        with time_limit(f"read_video_frames on {what}"):  # damaged data varies from run to run)
            frames = read_video_frames(path, K)
        assert [(i, f.shape) for i, f in frames] == [(i, f.shape) for i, f in got.frames]


test_videos_are_decoded_or_refused_with_a_reason = FAST(given(data=st.data())(video_property))
test_videos_are_decoded_or_refused_with_a_reason_slow = pytest.mark.slow(SLOW(given(data=st.data())(video_property)))


# --------------------------------------------------------------------------------------------
# The preprocess stage: every input is used or reported, never an exception
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stage() -> PreprocessConfig:
    """The stage's settings without face detection: every decoded input gives a centre crop."""
    return PreprocessConfig(detect=False, size=SIDE, frames_per_video=K, workers=1, max_megapixels=MAX_PIXELS / 1e6)


def run_source(cfg: PreprocessConfig, path: Path, out: Path) -> dict:
    """``process_source`` on one file, as the stage's single-process path runs it."""
    _init_worker(cfg, str(out), single_thread=False)
    src = Source(path=path, rel=path.name, label="fake", group=path.name, kind=kind_of(path))
    key = f"{path.name}.frames" if src.kind == "video" else f"{path.stem}.png"
    with time_limit(f"process_source on {path.name}"):
        return process_source((src, key))


def check_record(rec: dict, blob: bytes, path: Path, out: Path) -> None:
    what = f"process_source on {len(blob)} bytes named {path.name}"
    products, skips = rec["products"], rec["skips"]
    assert products or skips, f"{what}: neither used nor reported"
    for skip in skips:
        assert skip["reason"] in STAGE_REASONS, f"{what}: skip reason {skip['reason']!r}"
    if kind_of(path) == "image":  # one crop, or one reason
        assert len(products) + len(skips) == 1, f"{what}: {products}, {skips}"
    else:  # up to K frames; a skip of the whole video only when no frame is used, else per unused frame
        used = [p["frame"] for p in products]
        assert len(used) <= K and used == sorted(set(used)), f"{what}: frames {used}"
        for skip in skips:
            whole = skip["frame"] in ("", "all")
            assert (whole and not products) or (not whole and skip["frame"] not in used), f"{what}: {skips}"
    assert rec["sha256"] == hashlib.sha256(blob).hexdigest()
    if currently_in_test_context():
        event(f"process_source ({kind_of(path)}): {skips[0]['reason'] if skips else 'used'}")
    for p in products:
        crop = np.asarray(Image.open(out / p["path"]))
        assert crop.shape == (SIDE, SIDE, 3) and crop.dtype == np.uint8, f"{what}: crop {crop.shape}"


def stage_property(data: st.DataObject, samples: dict[str, Sample], scratch: Path, stage: PreprocessConfig) -> None:
    _, blob = draw_input(data, samples)
    ext = data.draw(st.sampled_from(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS), label="extension")  # any content
    path = scratch / f"stage{ext}"
    path.write_bytes(blob)
    check_record(run_source(stage, path, scratch / "out"), blob, path, scratch / "out")


test_the_stage_uses_or_reports_every_input = FAST(given(data=st.data())(stage_property))
test_the_stage_uses_or_reports_every_input_slow = pytest.mark.slow(SLOW(given(data=st.data())(stage_property)))


@pytest.mark.parametrize(
    "sample, name, expected",
    [
        ("photo.jpg", "jpeg.png", [""]),  # images are recognised by content, whatever the extension: one crop
        ("photo.png", "png.webp", [""]),
        ("photo.webp", "webp.jpg", [""]),
        ("clip.mp4", "mp4.jpg", "not_an_image"),  # an image extension sends it to the image decoder
        ("clip.avi", "avi.png", "not_an_image"),
        ("clip.mp4", "mp4.avi", [0, 4, 7]),  # FFmpeg probes the container, whatever the extension
        ("clip.avi", "avi.mkv", [0, 4, 7]),
        ("photo.jpg", "jpeg.mp4", [0]),  # and reads an image as a video of one frame
        ("photo.png", "png.mp4", [0]),
        ("photo.gif", "gif.webm", [0]),
    ],
)
def test_extension_and_content_disagree(samples, scratch, stage, sample, name, expected):
    blob = samples[sample].data
    path = scratch / name
    path.write_bytes(blob)
    out = scratch / "mismatch"
    rec = run_source(stage, path, out)
    check_record(rec, blob, path, out)
    if isinstance(expected, str):  # refused for this reason
        assert not rec["products"] and [s["reason"] for s in rec["skips"]] == [expected]
    else:  # used: these frames ("" for an image)
        assert [p["frame"] for p in rec["products"]] == expected and not rec["skips"], rec["skips"]


def test_files_that_are_not_regular_are_refused_without_blocking(scratch, stage):
    fifo = scratch / "pipe.mp4"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    folder = scratch / "folder.jpg"
    folder.mkdir()
    gone = scratch / "gone.png"
    for path, reason in ((fifo, "not_regular_file"), (folder, "not_regular_file"), (gone, "missing_file")):
        for decode in (read_image, lambda p: sample_video(p, K)):
            with pytest.raises(BadInputError) as refused, time_limit(f"decoding {path.name}"):
                decode(path)
            assert refused.value.reason == reason
        rec = run_source(stage, path, scratch / "out")
        assert not rec["products"] and [s["reason"] for s in rec["skips"]] == [reason]
