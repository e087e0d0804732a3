"""Dataset ingestion: find every image and video of a dataset and read them robustly.

Three layouts are understood (``scan``):

* **Folders**: files below a folder named ``real`` or ``fake`` (at any depth of the dataset
  folder, files at any depth below it). With ``keep_splits`` an enclosing ``train/``,
  ``valid/`` (``val/``, ``validation/``) or ``test/`` folder assigns the file's split.
* **CSV manifest** ``path,label[,group][,split]`` (``file`` is accepted for ``path``): the
  folder's ``manifest.csv``, or any CSV passed instead of a folder. Paths are relative to the
  CSV's folder (absolute paths are allowed). Other columns (e.g. a manipulation type) are
  carried along as they are, except ``RESERVED_COLUMNS``.
* **Videos** (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ``.webm``) in either layout: the
  preprocess stage samples ``frames_per_video`` evenly spaced frames from each
  (``sample_frame_indices``, ``read_video_frames``); every frame keeps its video as its group.

``read_image`` decodes any common image into RGB uint8, applying EXIF rotation and converting
grayscale, CMYK, RGBA/LA (composited on white), palette and 16-bit images deliberately. A file
that is not a usable image raises ``BadInputError`` with a short ``reason`` code
(``REASONS``) so a long run can skip it and list it in a report instead of crashing.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from struct import error as struct_error  # raised by some damaged TIFF/BMP headers
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from .data import LABELS, MANIFEST_NAME, DatasetLayoutError, UnreadableImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
#: Folder names that assign a split when ``keep_splits`` is on, and the split they mean.
SPLIT_FOLDERS = {"train": "train", "training": "train", "valid": "val", "val": "val", "validation": "val", "test": "test", "testing": "test"}
#: Columns the pipeline itself writes; a source manifest's own columns of these names are not
#: carried into the cache manifest (its ``sha256`` is recomputed as ``source_sha256``).
RESERVED_COLUMNS = ("path", "file", "label", "target", "group", "split", "kind", "source", "source_sha256", "sha256", "phash",
                    "crop", "box", "video", "frame", "video_label")

#: Why an input was skipped: reason code -> explanation (reports and the notebook use these).
REASONS = {
    "empty_file": "the file has zero bytes",
    "not_an_image": "the content is not an image format (wrong extension, text, HTML...)",
    "corrupt": "an image header was found but the data cannot be decoded",
    "truncated": "the image data ends early (interrupted download or copy)",
    "too_large": "more pixels than max_megapixels allows (decompression-bomb guard)",
    "unsupported_mode": "a pixel format that cannot be converted to RGB",
    "unreadable": "the file cannot be opened (permissions, I/O error)",
    "video_unreadable": "OpenCV cannot open the video (corrupt, wrong extension or missing codec)",
    "video_no_frames": "the video opened but no frame could be decoded",
    "no_face": "no face was detected (no_face: skip)",
    "missing_file": "listed in the manifest but not on disk",
    "no_label_folder": "not below a real/ or fake/ folder",
    "no_split_folder": "keep_splits is on but the file is not below a train/valid/test folder",
    "unsupported_extension": "below real/ or fake/ but neither an image nor a video extension",
}

# FFmpeg (inside OpenCV) prints its own errors to stderr ("moov atom not found"); unreadable
# videos are reported here instead. Read when OpenCV first opens or writes a video.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

_MAGIC = (  # signatures of formats Pillow decodes: a file starting with one is an image, maybe corrupt
    b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
)


class BadInputError(UnreadableImageError):
    """An input file that cannot be used; ``reason`` is a key of ``REASONS``."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = "") -> None:
        self.path, self.reason, self.detail = str(path), reason, detail
        what = REASONS.get(reason, reason)
        super().__init__(f"{path}: {what}{f' ({detail})' if detail else ''} [{reason}]; remove or replace the file, it is skipped and listed in the report")


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def _looks_like_image(head: bytes) -> bool:
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


def decode_image(data: bytes, path: str | os.PathLike = "<bytes>", max_pixels: int = 64_000_000) -> np.ndarray:
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
                    raise BadInputError(path, "too_large", f"{w}x{h} = {w * h / 1e6:.0f} MP > {max_pixels / 1e6:.0f} MP")
                im.load()
                im = ImageOps.exif_transpose(im)
                rgb = _to_rgb(im, path)
    except BadInputError:
        raise
    except Image.DecompressionBombError as e:  # Pillow's own hard limit (2 x MAX_IMAGE_PIXELS)
        raise BadInputError(path, "too_large", str(e).split(" could be")[0]) from e
    except UnidentifiedImageError as e:
        raise BadInputError(path, "corrupt" if _looks_like_image(data[:16]) else "not_an_image") from e
    except OSError as e:
        reason = "truncated" if "truncated" in str(e).lower() else "corrupt"  # 'image file is truncated', 'Truncated File Read'
        raise BadInputError(path, reason, str(e)) from e
    except (SyntaxError, ValueError, TypeError, EOFError, IndexError, struct_error) as e:
        raise BadInputError(path, "corrupt", f"{type(e).__name__}: {e}") from e
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise BadInputError(path, "unsupported_mode", f"decoded shape {rgb.shape}")
    return np.ascontiguousarray(rgb)


def read_bytes(path: str | os.PathLike) -> bytes:
    """A file's bytes, raising ``BadInputError`` (``unreadable``/``missing_file``) on I/O errors."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as e:
        raise BadInputError(path, "missing_file") from e
    except OSError as e:
        raise BadInputError(path, "unreadable", f"{type(e).__name__}: {e.strerror or e}") from e


def read_image(path: str | os.PathLike, max_pixels: int = 64_000_000) -> np.ndarray:
    """Read an image file as upright (H, W, 3) uint8 RGB (see ``decode_image``)."""
    return decode_image(read_bytes(path), path, max_pixels)


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------------------------


def sample_frame_indices(n_frames: int, k: int) -> list[int]:
    """``k`` evenly spaced frame indices over ``n_frames`` (all of them when there are fewer)."""
    if n_frames <= 0 or k <= 0:
        return []
    if n_frames <= k:
        return list(range(n_frames))
    return sorted(set(np.linspace(0, n_frames - 1, k).round().astype(int).tolist()))


def read_video_frames(path: str | os.PathLike, k: int) -> list[tuple[int, np.ndarray]]:
    """``k`` evenly spaced frames of a video as ``(frame index, (H, W, 3) uint8 RGB)`` (see ``read_video``)."""
    return read_video(path, k)[0]


def read_video(path: str | os.PathLike, k: int) -> tuple[list[tuple[int, np.ndarray]], int]:
    """``k`` evenly spaced frames of a video as ``(frame index, (H, W, 3) uint8 RGB)``, and its frame count.

    Frames are read sequentially (seeking is inaccurate for many codecs). When the container
    does not report its frame count, every frame is decoded once and the sample is taken
    afterwards from a bounded reservoir of candidates. Raises ``BadInputError``
    (``video_unreadable`` or ``video_no_frames``).
    """
    path = str(path)
    if not Path(path).is_file():
        raise BadInputError(path, "missing_file")
    if Path(path).stat().st_size == 0:
        raise BadInputError(path, "empty_file")
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise BadInputError(path, "video_unreadable")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if n > 0:
            wanted = set(sample_frame_indices(n, k))
            frames, i = [], 0
            while wanted and i <= max(wanted):
                if not cap.grab():
                    break
                if i in wanted:
                    ok, bgr = cap.retrieve()
                    if ok and bgr is not None:
                        frames.append((i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
                i += 1
            if frames or i > 0:
                if not frames:
                    raise BadInputError(path, "video_no_frames", f"{i} frame(s) read, none decodable")
                return frames, n
        decoded = []  # unknown (or wrong) frame count: decode everything, then sample
        while True:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            decoded.append(bgr)
        if not decoded:
            raise BadInputError(path, "video_no_frames")
        return [(i, cv2.cvtColor(decoded[i], cv2.COLOR_BGR2RGB)) for i in sample_frame_indices(len(decoded), k)], len(decoded)
    finally:
        cap.release()


# --------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestConfig:
    """How a dataset's files are found and labelled.

    Attributes:
        real_dirs: comma-separated folder names whose files are real (case-insensitive).
        fake_dirs: comma-separated folder names whose files are fake.
        keep_splits: keep the dataset's own train/valid/test assignment (folders or a
            manifest ``split`` column) instead of letting the split stage draw one.
        group_by: ``file`` (each image its own group, each video one group) or ``folder``
            (the folder below the label folder, e.g. one folder per identity).
    """

    real_dirs: str = "real"
    fake_dirs: str = "fake"
    keep_splits: bool = False
    group_by: str = "file"

    def __post_init__(self) -> None:
        if self.group_by not in ("file", "folder"):
            raise ValueError(f"group_by must be 'file' or 'folder', got {self.group_by!r}")
        if not self.label_names("real") or not self.label_names("fake"):
            raise ValueError("real_dirs and fake_dirs need at least one folder name each")
        if set(self.label_names("real")) & set(self.label_names("fake")):
            raise ValueError(f"a folder name cannot be both real and fake: {self.real_dirs!r} / {self.fake_dirs!r}")

    def label_names(self, label: str) -> tuple[str, ...]:
        raw = self.real_dirs if label == "real" else self.fake_dirs
        return tuple(s.strip().lower() for s in raw.split(",") if s.strip())


@dataclass
class Source:
    """One input file: an image, or a video that will yield several frames."""

    path: Path  # absolute
    rel: str  # key: path relative to the dataset root (or absolute when outside it)
    label: str  # real | fake
    group: str
    kind: str  # image | video
    split: str = ""  # train | val | test when kept from the dataset, else ""
    extra: dict = field(default_factory=dict)


@dataclass
class Inventory:
    """What ``scan`` found: usable sources and the files skipped while listing."""

    root: Path
    layout: str  # folders | manifest
    sources: list[Source]
    skipped: list[dict]

    def counts(self) -> dict[str, int]:
        kinds = pd.Series([s.kind for s in self.sources], dtype=object)
        return {"images": int((kinds == "image").sum()), "videos": int((kinds == "video").sum()), "skipped": len(self.skipped)}


def kind_of(path: str | os.PathLike) -> str | None:
    """``image``, ``video`` or None, from the file extension."""
    ext = Path(path).suffix.lower()
    return "image" if ext in IMAGE_EXTENSIONS else "video" if ext in VIDEO_EXTENSIONS else None


def _skip(rel: str, reason: str, detail: str = "", label: str = "") -> dict:
    return {"source": rel, "frame": "", "label": label, "reason": reason, "detail": detail}


def _scan_folders(root: Path, cfg: IngestConfig) -> Inventory:
    names = {n: lab for lab in LABELS for n in cfg.label_names(lab)}
    sources, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            rel = p.relative_to(root)
            parts = [s.lower() for s in rel.parts[:-1]]
            kind = kind_of(p)
            idx = next((i for i, s in enumerate(parts) if s in names), None)
            if idx is None:
                if kind is not None:
                    skipped.append(_skip(rel.as_posix(), "no_label_folder"))
                continue
            label = names[parts[idx]]
            if kind is None:
                skipped.append(_skip(rel.as_posix(), "unsupported_extension", p.suffix or "no extension", label))
                continue
            split = ""
            if cfg.keep_splits:
                split = next((SPLIT_FOLDERS[s] for s in parts[:idx] if s in SPLIT_FOLDERS), "")
                if not split:
                    skipped.append(_skip(rel.as_posix(), "no_split_folder", label=label))
                    continue
            below = rel.parts[idx + 1:-1]
            group = "/".join(below) if cfg.group_by == "folder" and below else rel.as_posix()
            sources.append(Source(p, rel.as_posix(), label, group, kind, split))
    if not sources:
        raise DatasetLayoutError(
            f"no images or videos found below a folder named {sorted(names)} in {root}; "
            f"use real/ and fake/ sub-folders, a manifest.csv (path,label[,group][,split]), or set real_dirs/fake_dirs"
        )
    return Inventory(root, "folders", sources, skipped)


def _normalise_label(value: str) -> str | None:
    v = str(value).strip().lower()
    return {"real": "real", "fake": "fake", "0": "real", "1": "fake"}.get(v)


def read_manifest(csv: str | os.PathLike) -> pd.DataFrame:
    """Read a ``path,label[,group][,split]`` manifest (``file`` accepted for ``path``), validated.

    Labels may be ``real``/``fake`` (any case) or ``0``/``1`` (1 = fake). Raises
    ``DatasetLayoutError`` naming the rows at fault.
    """
    csv = Path(csv)
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if "path" not in df.columns and "file" in df.columns:
        df = df.rename(columns={"file": "path"})
    missing = {"path", "label"} - set(df.columns)
    if missing:
        raise DatasetLayoutError(f"{csv} lacks the column(s) {sorted(missing)}; a manifest needs path,label[,group][,split]")
    labels = df["label"].map(_normalise_label)
    bad = df.index[labels.isna()]
    if len(bad):
        rows = ", ".join(f"line {i + 2} ({df.at[i, 'label']!r})" for i in bad[:5])
        raise DatasetLayoutError(f"{csv}: {len(bad)} row(s) have a label other than real/fake/0/1: {rows}; fix them")
    df["label"] = labels
    if "split" in df.columns:
        norm = df["split"].str.strip().str.lower().map(lambda s: SPLIT_FOLDERS.get(s, "" if s == "" else None))
        bad = df.index[norm.isna()]
        if len(bad):
            raise DatasetLayoutError(f"{csv}: split values {sorted(set(df.loc[bad, 'split']))[:5]} are not train/valid/test (line {bad[0] + 2})")
        df["split"] = norm
    dup = df["path"][df["path"].duplicated()]
    if len(dup):
        raise DatasetLayoutError(f"{csv} lists {len(dup)} path(s) twice, e.g. {dup.iloc[0]}; one row per file")
    return df


def _scan_manifest(csv: Path, cfg: IngestConfig) -> Inventory:
    df = read_manifest(csv)
    root = csv.parent
    extra_cols = [c for c in df.columns if c not in RESERVED_COLUMNS]
    sources, skipped = [], []
    for row in df.to_dict("records"):
        rel = row["path"]
        p = Path(rel) if Path(rel).is_absolute() else root / rel
        kind = kind_of(p)
        if not p.is_file():
            skipped.append(_skip(rel, "missing_file", label=row["label"]))
            continue
        if kind is None:
            skipped.append(_skip(rel, "unsupported_extension", p.suffix or "no extension", row["label"]))
            continue
        split = row.get("split", "") if cfg.keep_splits else ""
        if cfg.keep_splits and not split:
            skipped.append(_skip(rel, "no_split_folder", "empty split column", row["label"]))
            continue
        group = str(row.get("group", "") or "").strip() or rel
        extra = {c: row[c] for c in extra_cols}
        sources.append(Source(p.resolve(), rel, row["label"], group, kind, split, extra))
    if not sources:
        raise DatasetLayoutError(f"none of the {len(df)} file(s) listed in {csv} exists; paths are relative to {root}")
    return Inventory(root, "manifest", sources, skipped)


def scan(dataset: str | os.PathLike, cfg: IngestConfig = IngestConfig()) -> Inventory:
    """List a dataset: a folder (``real/``/``fake/`` or its ``manifest.csv``) or a CSV manifest.

    Nothing is decoded here; files that cannot belong to the dataset (no label folder, missing,
    unknown extension) are returned in ``skipped`` with their reason.
    """
    path = Path(dataset)
    if path.is_file() and path.suffix.lower() == ".csv":
        inv = _scan_manifest(path, cfg)
    elif path.is_dir():
        inv = _scan_manifest(path / MANIFEST_NAME, cfg) if (path / MANIFEST_NAME).is_file() else _scan_folders(path, cfg)
    else:
        raise DatasetLayoutError(f"dataset {path} does not exist; point data.raw_dir at a folder with real/ and fake/ or at a CSV manifest")
    if cfg.keep_splits:
        splits = {s.split for s in inv.sources}
        if "train" not in splits or not splits & {"val", "test"}:
            raise DatasetLayoutError(f"keep_splits is on but {path} has splits {sorted(splits)}; it needs train and at least one of valid/test")
    return inv

