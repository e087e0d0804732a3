"""Shortcut audit: file properties that tell real from fake without looking at a face.

When the two classes of a dataset come from different sources, their files often differ in
ways a detector learns instead of the forgery: JPEG quality, progressive or baseline coding,
chroma subsampling, file size, pixel size, format; for videos the container, codec, resolution,
frame rate, bitrate and duration. On a public GAN-versus-photo face set, file size alone
separates the classes with ROC-AUC 1.0. ``audit_shortcuts`` reads each original file's header
(no pixel and no frame is decoded), tabulates these properties per class, and computes the
ROC-AUC each one reaches alone (direction-free: ``max(auc, 1 - auc)``; a categorical property
scores each value by its share of fakes). Any property reaching ``WARN_AUC`` is a warning: re-encode
both classes the same way (e.g. decode and save every image at one JPEG quality) before trusting
a detector's numbers. A property with no value in one of the classes (JPEG quality of a dataset
of videos) has no AUC.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, JpegImagePlugin, UnidentifiedImageError
from sklearn.metrics import roc_auc_score

from ..core import paths
from ..core.utils import EnvironmentFault
from .media import BadInputError, check_regular_file, kind_of, read_error

log = logging.getLogger(__name__)

#: A property whose ROC-AUC alone reaches this is reported as a shortcut.
WARN_AUC = 0.8
#: The properties audited: numeric ones by value, the others by category.
NUMERIC = ("jpeg_quality", "file_bytes", "pixels")
CATEGORICAL = ("format", "progressive", "subsampling")
#: Rows added when the files include videos, read from each video's container header
#: (``video_properties``): ``n/a`` or NaN for images; missing (shown as ``unreadable``, left out of
#: the AUC) for a video that cannot be opened.
VIDEO_CATEGORICAL = ("video_container", "video_codec", "video_resolution")
VIDEO_NUMERIC = ("video_fps", "video_bitrate", "video_duration")
UNREADABLE = "unreadable"
#: IJG's standard luminance quantisation table (quality 50), in zig-zag-free row order.
_IJG_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29,
     51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121,
     120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.float64,
)  # fmt: skip
_SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}


def _standard_tables() -> np.ndarray:
    """(100, 64): the IJG luminance table scaled to each quality 1-100, each sorted (order-free comparison)."""
    q = np.arange(1, 101, dtype=np.float64)[:, None]
    scale = np.where(q < 50, 5000 / q, 200 - 2 * q)
    return np.sort(np.clip(np.floor((_IJG_LUMA * scale + 50) / 100), 1, 255), axis=1)


_STANDARD_TABLES = _standard_tables()


def jpeg_quality(table: list[int] | np.ndarray) -> float:
    """The IJG quality (1-100) whose scaled standard table is closest to a luminance quantisation table."""
    q = np.sort(np.asarray(table, np.float64).reshape(-1)[:64])  # order-free: tables are stored zig-zag or not
    return float(np.argmin(np.abs(_STANDARD_TABLES - q).mean(axis=1)) + 1)


def file_properties(path: str | os.PathLike) -> dict:
    """Header properties of one file: format, pixels, bytes, and for JPEGs quality, progressive, subsampling.

    Only a regular file is opened (``check_regular_file``): a FIFO would block, a device never
    end; such a path keeps its format from the extension and no other property. Raises
    ``EnvironmentFault`` when the machine is out of file handles or memory.
    """
    p = Path(path)
    row: dict = {"format": p.suffix.lower().lstrip(".") or "none", "file_bytes": float("nan"), "pixels": float("nan")}
    row.update(jpeg_quality=float("nan"), progressive="n/a", subsampling="n/a")
    try:
        row["file_bytes"] = float(check_regular_file(p, max_bytes=None))
    except BadInputError:
        return row
    try:
        with Image.open(p) as im:
            row["format"] = (im.format or row["format"]).lower()
            row["pixels"] = float(im.size[0] * im.size[1])
            if isinstance(im, JpegImagePlugin.JpegImageFile):
                tables = getattr(im, "quantization", None) or {}
                if 0 in tables:
                    row["jpeg_quality"] = jpeg_quality(tables[0])
                row["progressive"] = (
                    "progressive" if im.info.get("progressive") or im.info.get("progression") else ("baseline")
                )
                row["subsampling"] = _SUBSAMPLING.get(JpegImagePlugin.get_sampling(im), "other")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        pass  # a video or an unreadable file: its format and size still count
    return row


def _not_a_video() -> dict:
    return {**{k: "n/a" for k in VIDEO_CATEGORICAL}, **{k: math.nan for k in VIDEO_NUMERIC}}


def video_properties(path: str | os.PathLike) -> tuple[dict, str]:
    """Header properties of one video, and why it could not be read (empty when it could).

    Read with PyAV from the container's header and its video stream's parameters (``av.open``,
    whose FFmpeg probe reads the first packets; no frame is decoded here): container format,
    codec, resolution (``WIDTHxHEIGHT``), average frame rate, bitrate (the video stream's, else
    the file's size * 8 / duration) and duration in seconds. Every property of a video that
    cannot be opened (or is not a regular file: a FIFO would block) is missing (None or NaN).
    Raises ``EnvironmentFault`` when the machine is out of file handles or memory.
    """
    import av

    p = Path(path)
    row: dict = {**{k: None for k in VIDEO_CATEGORICAL}, **{k: math.nan for k in VIDEO_NUMERIC}}
    try:
        size = check_regular_file(p, max_bytes=None)
        container = av.open(str(p), metadata_errors="replace")
    except BadInputError as e:
        return row, f"{e.reason}{f': {e.detail}' if e.detail else ''}"
    except OSError as e:
        fault = read_error(p, e)
        if isinstance(fault, EnvironmentFault):
            raise fault from e
        return row, f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}"
    except (av.error.FFmpegError, ValueError, UnicodeDecodeError) as e:
        return row, f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}"
    with container:
        row["video_container"] = container.format.long_name or container.format.name
        if not container.streams.video:
            row.update(video_codec="no video stream", video_resolution="no video stream")
            return row, ""
        stream = container.streams.video[0]
        cc = stream.codec_context  # None when this FFmpeg has no decoder for the codec
        row["video_codec"] = (cc.name if cc is not None else "") or "unknown"
        row["video_resolution"] = f"{cc.width}x{cc.height}" if cc is not None else "unknown"
        rate = stream.average_rate or stream.guessed_rate
        row["video_fps"] = float(rate) if rate else math.nan
        if stream.duration and stream.time_base:
            row["video_duration"] = float(stream.duration * stream.time_base)
        elif container.duration:
            row["video_duration"] = container.duration / av.time_base
        seconds = row["video_duration"]
        if cc is not None and cc.bit_rate:
            row["video_bitrate"] = float(cc.bit_rate)
        elif seconds > 0:  # NaN compares False
            row["video_bitrate"] = size * 8 / seconds
    return row, ""


def _auc(y: np.ndarray, x: np.ndarray) -> float | None:
    ok = ~pd.isna(x)
    if ok.sum() < 2 or len(set(y[ok])) < 2:
        return None
    if len(set(x[ok])) < 2:
        return 0.5  # one value for every file: no information
    a = roc_auc_score(y[ok], x[ok].astype(float))
    return float(max(a, 1 - a))


def property_auc(y: np.ndarray, values: pd.Series, categorical: bool) -> float | None:
    """The ROC-AUC one property reaches alone (direction-free; categories scored by their share of fakes).

    Missing values (an unreadable video's codec) are left out; None when fewer than two files of
    both classes together have a value, or all of them are of one class.
    """
    if categorical:
        known = values.astype(str).where(values.notna())
        share = pd.Series(y).groupby(known.to_numpy()).mean()
        return _auc(y, known.map(share).to_numpy())
    return _auc(y, pd.to_numeric(values, errors="coerce").to_numpy())


@dataclass
class ShortcutAudit:
    """Per-class property summary, each property's AUC alone, and the warnings."""

    table: pd.DataFrame  # one row per property: per-class summaries and auc
    warnings: list[str]
    files: int
    unreadable: list[str] = field(default_factory=list)  # videos whose header could not be read, and why

    def summary(self) -> dict:
        """Counts, each property's AUC (rounded; None for a property without one) and the warnings."""
        aucs = {r.property: (None if pd.isna(r.auc) else round(float(r.auc), 4)) for r in self.table.itertuples()}
        return {"files": self.files, "warn_auc": WARN_AUC, "auc": aucs, "warnings": self.warnings}

    def max_auc(self) -> float | None:
        """The strongest property's AUC (rounded as in ``summary``); None when no property has one.

        A property has no AUC when fewer than two of its files have a value or only one class
        does (JPEG quality of PNGs or videos, pixel count of videos): it is left out, never compared.
        """
        aucs = [a for a in self.summary()["auc"].values() if a is not None]
        return max(aucs) if aucs else None

    def shown(self) -> pd.DataFrame:
        """The table for reading: AUCs to 3 decimals, ``n/a`` for a property without one."""
        return self.table.assign(auc=[f"{a:.3f}" if pd.notna(a) else "n/a" for a in self.table["auc"]])


def _describe(values: pd.Series, categorical: bool) -> str:
    if categorical:
        counts = values.astype(str).where(values.notna(), UNREADABLE).value_counts()  # missing: an unreadable video
        return ", ".join(f"{k} {v}" for k, v in counts.head(4).items()) + (" ..." if len(counts) > 4 else "")
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return "n/a"
    return f"median {v.median():.4g} (IQR {v.quantile(0.25):.4g}-{v.quantile(0.75):.4g})"


def _video_table(files: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """``video_properties`` of the videos among ``files`` (``n/a``/NaN for the others), and the unreadable ones."""
    rows, unreadable = [], []
    for f in files:
        if kind_of(f) != "video":
            rows.append(_not_a_video())
            continue
        row, why = video_properties(f)
        rows.append(row)
        if why:
            unreadable.append(f"{paths.shown(f)} ({why})")
    return pd.DataFrame(rows, columns=[*VIDEO_CATEGORICAL, *VIDEO_NUMERIC]), unreadable


def _advice(name: str) -> str:
    if name in (*VIDEO_CATEGORICAL, *VIDEO_NUMERIC):
        return "re-encode both classes' videos the same way (e.g. one codec, frame rate, resolution and bitrate)"
    return "re-encode both classes the same way (e.g. one JPEG quality, one size)"


def audit_shortcuts(files: list[Path], labels: list[str]) -> ShortcutAudit:
    """Audit the originals ``files`` with labels ``real``/``fake`` (one entry per source file).

    Every file gets the image rows; when some files are videos, the video rows follow
    (``VIDEO_CATEGORICAL``, ``VIDEO_NUMERIC``), and videos that cannot be opened are counted as
    ``unreadable`` in them and named in a warning.
    """
    props = pd.DataFrame([file_properties(f) for f in files])
    names: tuple[str, ...] = (*NUMERIC, *CATEGORICAL)
    unreadable: list[str] = []
    if any(kind_of(f) == "video" for f in files):
        videos, unreadable = _video_table(files)
        props = pd.concat([props, videos], axis=1)
        names += (*VIDEO_CATEGORICAL, *VIDEO_NUMERIC)
    y = (np.asarray(labels) == "fake").astype(int)
    rows, warnings = [], []
    for name in names:
        categorical = name in CATEGORICAL or name in VIDEO_CATEGORICAL
        auc = property_auc(y, props[name], categorical) if len(props) else None
        rows.append(
            {
                "property": name,
                "real": _describe(props[name][y == 0], categorical),
                "fake": _describe(props[name][y == 1], categorical),
                "auc": np.nan if auc is None else auc,
            }
        )
        if auc is not None and auc >= WARN_AUC:
            warnings.append(
                f"{name} alone separates real from fake with ROC-AUC {auc:.3f} (real: {rows[-1]['real']}; fake: "
                f"{rows[-1]['fake']}): a detector can learn it instead of the forgery; {_advice(name)} before "
                "trusting its numbers"
            )
    if unreadable:
        warnings.append(
            f"{len(unreadable)} video(s) could not be opened to read their header ({'; '.join(unreadable[:3])}"
            f"{' ...' if len(unreadable) > 3 else ''}): listed as {UNREADABLE!r} in the video rows and left out "
            "of their AUCs; check them with ffprobe, or remove them"
        )
    for w in warnings:
        log.warning("shortcut: %s", w)
    return ShortcutAudit(pd.DataFrame(rows), warnings, len(props), unreadable)


def sources_of(frame: pd.DataFrame, sources_root: str | os.PathLike) -> tuple[list[Path], list[str]]:
    """The distinct original files of a cache manifest (``source`` column) and their labels."""
    root = Path(sources_root)
    if root.is_file():
        root = root.parent
    first = frame.drop_duplicates("source")
    files = [Path(s) if Path(s).is_absolute() else root / s for s in first["source"]]
    return files, first["label"].tolist()
