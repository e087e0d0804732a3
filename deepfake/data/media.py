"""Image I/O: the one image decoder every path uses, the one list of file types, and the skip reasons.

``read_image`` / ``decode_image`` turn a file or bytes into upright (H, W, 3) uint8 RGB,
applying EXIF rotation and converting grayscale, CMYK, RGBA/LA (composited on white), palette
and 16-bit images deliberately. Guards run before any pixel is decoded: only regular files are
read (a FIFO or a device would block or never end), at most ``MAX_FILE_BYTES`` of them, and an
image larger than ``max_pixels`` is refused from its header (decompression bombs). A file that
is not a usable image or video raises ``BadInputError`` with a short ``reason`` code
(``REASONS``) so a long run can skip it and list it in a report instead of crashing.

Videos are read by ``deepfake.data.video``, which raises the same ``BadInputError``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import re
import stat
import warnings
from pathlib import Path
from struct import error as struct_error  # raised by some damaged TIFF/BMP headers

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..core.utils import MACHINE_ERRNOS, EnvironmentFault

log = logging.getLogger(__name__)

#: Every file type the package reads, in one place (ingestion, the predictor, the widget).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
#: Default pixel limit of one image (``preprocess.max_megapixels`` sets the pipeline's).
MAX_PIXELS = 64_000_000
#: Default byte cap of one input file, checked before it is read (``preprocess.max_file_mb`` sets
#: the pipeline's): far above any photo or clip, low enough that a link to ``/dev/zero`` or a
#: mislabelled disk image is refused instead of filling memory.
MAX_FILE_BYTES = 4 << 30


class UnreadableImageError(OSError):
    """A file could not be decoded as an image."""


def kind_of(path: str | os.PathLike) -> str | None:
    """``image``, ``video`` or None, from the file extension."""
    ext = Path(path).suffix.lower()
    return "image" if ext in IMAGE_EXTENSIONS else "video" if ext in VIDEO_EXTENSIONS else None


def looks_like_video(data: bytes | bytearray | memoryview) -> bool:
    """True for MP4/MOV (an ``ftyp`` box), AVI (RIFF ... AVI) and Matroska/WebM (EBML) headers."""
    head = bytes(data[:12])
    return head[4:8] == b"ftyp" or (head[:4] == b"RIFF" and head[8:11] == b"AVI") or head[:4] == b"\x1aE\xdf\xa3"


#: Why an input was skipped: reason code -> explanation (reports and the notebook use these).
REASONS = {
    "empty_file": "the file has zero bytes",
    "not_an_image": "the content is not an image format (wrong extension, text, HTML...)",
    "corrupt": "an image header was found but the data cannot be decoded",
    "truncated": "the image data ends early (interrupted download or copy)",
    "too_large": "a possible decompression bomb: more pixels than max_megapixels, or data that inflates too far",
    "unsupported_mode": "a pixel format that cannot be converted to RGB",
    "too_small": "smaller than min_side pixels on its shorter side: too small to hold a usable face",
    "out_of_memory": "the machine ran out of memory decoding it (tried again on the next run)",
    "unreadable": "the file cannot be opened (permissions, I/O error; tried again on the next run)",
    "not_regular_file": "not a regular file (a FIFO, device or socket): never read, it could block or never end",
    "file_too_large": "larger than max_file_mb (checked before reading)",
    "unreadable_folder": "a folder that cannot be listed (permissions, I/O error): the files in it are not seen",
    "broken_link": "a symbolic link whose target does not exist",
    "link_loop": "a symbolic link that leads back into itself or into a folder above it",
    "hidden": "a hidden file or folder (its name starts with '.'): not read, not descended into",
    "video_unreadable": "OpenCV cannot open the video (corrupt, wrong extension or missing codec)",
    "video_no_frames": "the video opened but no frame could be decoded",
    "frame_unreadable": "a sampled frame could not be decoded (the video ends early or the seek failed)",
    "no_face": "no face was detected (no_face: skip)",
    "several_faces": "more than one face was detected (several_faces: skip)",
    "face_at_border": "the face touches the image's edge, cut off (face_at_border: skip)",
    "missing_file": "listed in the manifest (or the dataset's own index) but not on disk",
    "not_in_index": "on disk but not in the dataset's own index or official split, so its label or split is unknown",
    "unexpected_name": "in a benchmark's video folder but not named as the dataset names its videos (identity unknown)",
    "no_label_folder": "not below a real/ or fake/ folder",
    "no_split_folder": "keep_splits is on but the file is not below a train/valid/test folder",
    "unsupported_extension": "below real/ or fake/ but neither an image nor a video extension",
}

# FFmpeg (inside OpenCV) prints its own errors to stderr ("moov atom not found"); unreadable
# videos are reported here instead. Read when OpenCV first opens or writes a video.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

_MAGIC = (  # signatures of formats Pillow decodes: a file starting with one is an image, maybe corrupt
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
)


class BadInputError(UnreadableImageError):
    """An input file that cannot be used; ``reason`` is a key of ``REASONS``."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = "") -> None:
        self.path, self.reason, self.detail = str(path), reason, detail
        what = REASONS.get(reason, reason)
        super().__init__(
            f"{path}: {what}{f' ({detail})' if detail else ''} [{reason}]; remove or replace the file, it is skipped "
            "and listed in the report"
        )


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def looks_like_image(head: bytes) -> bool:
    """Whether ``head`` (a file's first 16 bytes) starts like an image format Pillow decodes."""
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _to_rgb(im: Image.Image, path: str | os.PathLike) -> np.ndarray:
    """Convert any Pillow mode to (H, W, 3) uint8 RGB, explicitly per mode."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(im).astype(np.float64)  # 16/32-bit grayscale
        if mode == "F":
            a = a * 255.0 if a.size and np.nanmax(a) <= 1.0 else a
        elif mode.startswith("I;16") or (a.size and a.max() > 255):
            a = a / 257.0  # 0..65535 -> 0..255
        g = np.clip(np.nan_to_num(np.rint(a)), 0, 255).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    try:  # L, 1, P, CMYK, YCbCr, RGBX...: Pillow's own conversion
        return np.asarray(im.convert("RGB"))
    except (ValueError, OSError) as e:
        raise BadInputError(path, "unsupported_mode", f"mode {mode}") from e


def _pixels(n: int) -> str:
    return f"{n / 1e6:,.0f} MP" if n >= 10**6 else f"{n:,} pixels"


def decode_image(data: bytes, path: str | os.PathLike = "<bytes>", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to upright (H, W, 3) uint8 RGB.

    EXIF orientation is applied; the image size is checked against ``max_pixels`` from the
    header, before any pixel is decoded. Raises ``BadInputError`` with the reason.
    """
    if not data:
        raise BadInputError(path, "empty_file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels decides, below
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise BadInputError(path, "too_large", f"{w}x{h} = {_pixels(w * h)} > max {_pixels(max_pixels)}")
                im.load()
                im = ImageOps.exif_transpose(im)
                rgb = _to_rgb(im, path)
    except BadInputError:
        raise
    except Image.DecompressionBombError as e:  # Pillow's own hard limit (2 x MAX_IMAGE_PIXELS)
        sizes = re.findall(r"\d+", str(e))
        detail = f"{_pixels(int(sizes[0]))} > Pillow's limit of {_pixels(int(sizes[1]))}" if len(sizes) >= 2 else str(e)
        raise BadInputError(path, "too_large", detail) from e
    except UnidentifiedImageError as e:
        raise BadInputError(path, "corrupt" if looks_like_image(data[:16]) else "not_an_image") from e
    except OSError as e:
        reason = (
            "truncated" if "truncated" in str(e).lower() else "corrupt"
        )  # 'image file is truncated', 'Truncated File Read'
        raise BadInputError(path, reason, str(e)) from e
    except (SyntaxError, ValueError, TypeError, EOFError, IndexError, struct_error) as e:
        if "decompressed data too large" in str(e).lower():  # a text or ICC chunk that inflates without bound
            raise BadInputError(path, "too_large", f"a metadata chunk decompresses too large ({e})") from e
        raise BadInputError(path, "corrupt", f"{type(e).__name__}: {e}") from e
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise BadInputError(path, "unsupported_mode", f"decoded shape {rgb.shape}")
    return np.ascontiguousarray(rgb)


def link_target(path: str | os.PathLike) -> str:
    """``-> target`` of a symbolic link, for reports (empty when ``path`` is not a readable link)."""
    try:
        return f"-> {os.readlink(os.fspath(path))}"
    except OSError:
        return ""


def read_error(path: str | os.PathLike, e: OSError) -> BadInputError | EnvironmentFault:
    """What an ``OSError`` met opening, listing or reading ``path`` says: the machine is at fault
    (``EnvironmentFault``: out of file handles or memory), or the path (``BadInputError``:
    ``missing_file``, ``broken_link``, ``link_loop`` or ``unreadable``)."""
    if isinstance(e, FileNotFoundError):
        return (
            BadInputError(path, "broken_link", link_target(path))
            if os.path.islink(path)
            else BadInputError(path, "missing_file")
        )
    if e.errno in MACHINE_ERRNOS:
        return EnvironmentFault(f"cannot read {path}: {e.strerror or e}; the machine is out of file handles or memory")
    if e.errno == errno.ELOOP:
        return BadInputError(path, "link_loop", link_target(path))
    return BadInputError(path, "unreadable", f"{type(e).__name__}: {e.strerror or e}")


def file_type(mode: int) -> str:
    """What a ``stat`` mode is, in words (for reports of files that are not regular)."""
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_regular_file(path: str | os.PathLike, max_bytes: int | None = MAX_FILE_BYTES) -> int:
    """The size of ``path`` after checking that it is a regular file of at most ``max_bytes``.

    Raises ``BadInputError``: ``missing_file`` (or ``broken_link``), ``link_loop``,
    ``not_regular_file`` (FIFO, device, socket, folder), ``file_too_large`` or ``unreadable``;
    ``EnvironmentFault`` when the machine is out of file handles or memory. Links are followed.
    """
    try:
        st = os.stat(path)
    except OSError as e:
        raise read_error(path, e) from e
    if not stat.S_ISREG(st.st_mode):
        raise BadInputError(path, "not_regular_file", file_type(st.st_mode))
    if max_bytes is not None and st.st_size > max_bytes:
        raise BadInputError(path, "file_too_large", f"{st.st_size / 2**20:.0f} MiB > {max_bytes / 2**20:.0f} MiB")
    return st.st_size


def read_bytes(path: str | os.PathLike, max_bytes: int | None = MAX_FILE_BYTES) -> bytes:
    """A regular file's bytes (``check_regular_file``), raising ``BadInputError`` on I/O errors."""
    check_regular_file(path, max_bytes)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1) if max_bytes is not None else f.read()
    except OSError as e:
        raise read_error(path, e) from e
    if max_bytes is not None and len(data) > max_bytes:
        raise BadInputError(path, "file_too_large", f"more than {max_bytes / 2**20:.0f} MiB")
    return data


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as upright (H, W, 3) uint8 RGB (see ``decode_image``)."""
    return decode_image(read_bytes(path), path, max_pixels)


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_regular_file(path: str | os.PathLike, max_bytes: int | None = MAX_FILE_BYTES, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a regular file's bytes, read only once it is known to be one.

    The file is opened without blocking (``O_NONBLOCK``: opening a FIFO returns at once) and
    checked on the open handle, so a FIFO, device or socket put in its place after a listing is
    refused, never read. Raises ``BadInputError`` (``not_regular_file``, ``file_too_large``,
    ``missing_file``, ``broken_link``, ``link_loop``, ``unreadable``) or ``EnvironmentFault``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise read_error(path, e) from e
    with open(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadInputError(path, "not_regular_file", file_type(st.st_mode))
        if max_bytes is not None and st.st_size > max_bytes:
            raise BadInputError(path, "file_too_large", f"{st.st_size / 2**20:.0f} MiB > {max_bytes / 2**20:.0f} MiB")
        h = hashlib.sha256()
        try:
            while block := f.read(chunk):
                h.update(block)
        except OSError as e:
            raise read_error(path, e) from e
    return h.hexdigest()


def to_rgb_array(item: Image.Image | np.ndarray, source: str = "<array>") -> np.ndarray:
    """A PIL image or an array (grey, RGB, RGBA; uint8 or floats in [0, 1]) as (H, W, 3) uint8 RGB."""
    if isinstance(item, Image.Image):
        return _to_rgb(ImageOps.exif_transpose(item), source)
    a = np.asarray(item)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise BadInputError(source, "unsupported_mode", f"expected an (H, W, 3) RGB array, got shape {a.shape}")
    a = a[:, :, :3]
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and np.nanmax(a) <= 1.0:
            a = np.clip(np.nan_to_num(a) * 255.0 + 0.5, 0, 255)
        a = np.clip(a, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)
