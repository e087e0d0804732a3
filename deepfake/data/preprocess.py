"""Preprocess stage: decode every input once, crop the face, write a compact lossless cache.

``preprocess(dataset, out_dir, cfg, layout=...)`` lists the dataset (``deepfake.data.layouts.scan_dataset``:
real/ and fake/ folders, a manifest, or a benchmark as its download lays it out), and for
each image (or each of ``frames_per_video`` frames of a video) decodes it, finds the largest
face (``deepfake.data.detect``), crops a square enlarged by ``margin`` and resized to ``size``, and
writes it as PNG: lossless, so the JPEG and blending traces detectors learn from are kept as
decoded, not re-compressed. Work runs in parallel over processes with a progress bar.

The output folder is itself a dataset root: ``manifest.csv`` (``path,label,target,group`` plus
``split`` when kept, ``source``, ``kind``, ``crop``, ``box``, ``phash``, ``video``, ``frame``,
``video_label`` and the source manifest's own columns) next to ``real/`` and ``fake/``.
The split and training stages read it like any dataset. ``skipped.csv`` lists every input not
used and why (``deepfake.data.media.REASONS``).

Re-running is cheap: a run records each source's size, modification time, permissions and
SHA-256 with what it produced. When the settings and every source are unchanged it returns at
once without writing; otherwise only new or changed sources are decoded again (a source whose
bytes hash the same is reused even if its time stamp moved), and outputs of sources that
disappeared are removed.

Faults of an input and faults of the machine are told apart. A bad input (corrupt, truncated,
too small, a FIFO, no face...) is listed in ``skipped.csv`` and remembered: it is tried again
when its content, its permissions or the settings change, or with ``retry_skipped``; files that
could not be opened (``unreadable``) or ran the machine out of memory are tried again on every
run. A write that fails (read-only folder, full disk: ``deepfake.core.utils.OutputError``) or a
machine out of file handles stops the stage with an error naming the path, marks no input bad,
and keeps what was done for the next run. The output folder is checked writable, and temporary
files of an interrupted run are removed, before any work starts; ``manifest.csv`` is written
last, and removed while the cache is being changed, so a stopped run never looks complete.

Shards: ``preprocess.shard: K/N`` (or ``python -m deepfake preprocess --shard K/N``) processes only
the sources whose relative path hashes (SHA-256) to share K of N, so several processes or machines
share one dataset and one cache folder; a source's share depends on its own path alone, not on the
other files. A shard writes its crops and its record, ``shards/K-of-N.json`` (written as it
finishes, and with ``"finished": false`` when it is stopped, so that running it again goes on from
there), and never the manifest, the other records or another shard's crops. A run without a shard is
the merge when it finds records of the current settings: it checks that every shard of the N has
finished for these settings and these inputs (``ShardsIncomplete`` names each one that has not:
missing, stopped, run with other settings or on another list of inputs), then writes the same files
a one-process run writes, byte for byte, reusing the shards' crops, and removes ``shards/``.
``merge_shards=N`` asks for that merge explicitly, refusing when no shard has run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np
import pandas as pd

from .. import __version__
from ..core import lifetime
from ..core.config import section, setting
from ..core.progress import progress as progress_bar
from ..core.utils import (
    EnvironmentFault,
    atomic_path,
    is_temporary,
    output_error,
    prepare_output_dir,
    write_if_changed,
)
from .audit import phash_hex
from .detect import DETECTORS, MAX_UPSAMPLE, FaceModelError, format_points
from .faces import Crop, crop_frames, crop_image
from .ingest import LABELS, MANIFEST_NAME, IngestConfig, Inventory, Source
from .inputs import CONTRACT_FILE, FACE_AT_BORDER, FACE_SEARCHES, SEVERAL_FACES, Preprocessing
from .layouts import LayoutConfig, scan_dataset
from .media import REASONS, BadInputError, check_regular_file, decode_image, read_bytes, sha256_file
from .split import conflicting_labels, label_problem
from .video import sample_video

log = logging.getLogger(__name__)

STATE_NAME = ".preprocess.json"  # what each source gave, by content: part of the cache (and of its DVC hash)
# sizes and modification times of the sources when they were processed, so that unchanged files
# are not hashed again; they differ between clones, so .dvcignore keeps them out of the cache's hash
STAT_NAME = ".source-stat.json"
SKIPPED_NAME = "skipped.csv"
SKIPPED_COLUMNS = ("source", "frame", "label", "reason", "detail")
SHARDS_DIR = "shards"  # the shards' records (K-of-N.json) until the merge, which removes them
_CODE = (
    "ingest.py",
    "layouts.py",
    "media.py",
    "video.py",
    "detect.py",
    "faces.py",
    "inputs.py",
    "preprocess.py",
    "audit.py",
)  # their text is part of the settings' fingerprint


@dataclass(frozen=True)
@section("preprocess")
class PreprocessConfig:
    """Face cropping and cache settings (``params.yaml``: ``preprocess``).

    Attributes:
        detect: find the face and crop around it; false for datasets that are already face
            crops (the image is centre-cropped to a square and resized instead).
        detector: ``dlib_hog`` | ``dlib_cnn`` | ``haar`` (``deepfake.data.detect``).
        upsample: detector upsampling of photos (0-2; each step doubles the searched side).
        video_upsample: detector upsampling of video frames, whose faces are often small.
        face_search: ``adaptive`` (large faces first, a video's face followed around its last box;
            the whole image when that finds none) or ``full`` (every image and frame searched whole):
            ``deepfake.data.faces``.
        landmarks: ``none``, 5 or 68 landmarks per crop, stored in the manifest in crop pixels.
        align: rotate and scale faces to canonical eye and mouth positions (needs landmarks).
        several_faces: ``largest`` (crop the largest face) or ``skip`` the image.
        face_at_border: ``keep`` or ``skip`` a face whose box touches the image's edge.
        no_face: ``skip`` (leave the image out, list it in the report) or ``keep_full``
            (use the centre square of the whole image) when no face is found.
        margin: side of the crop relative to the detected box's longer side.
        size: side of the square crops written, in pixels (the training size).
        frames_per_video: evenly spaced frames sampled from each video.
        workers: processes decoding in parallel (0: all cores).
        keep_splits: keep the dataset's own train/valid/test folders or ``split`` column.
        group_by: ``file`` or ``folder`` (one folder per identity below real/ and fake/).
        real_dirs: comma-separated folder names that mean real.
        fake_dirs: comma-separated folder names that mean fake.
        max_megapixels: larger images are refused unread (decompression-bomb guard).
        max_file_mb: larger files are refused unread (checked before reading: a link to
            ``/dev/zero`` or a stray disk image never fills memory).
        min_side: images (and video frames) whose shorter side has fewer pixels are skipped as
            ``too_small``; recorded in the contract, so the predictor refuses them too.
        retry_skipped: decode again every input an earlier run skipped, even unchanged ones
            (not part of the settings' fingerprint: the cache's other crops are reused).
        shard: ``""`` (the whole dataset, or the merge of finished shards) or ``K/N``: only share K
            (1 to N) of N, by a hash of each source's path (not part of the fingerprint: shards and
            their merge share one).
    """

    detect: bool = setting()
    detector: str = setting(choices=DETECTORS)
    upsample: int = setting(min=0, max=MAX_UPSAMPLE)
    video_upsample: int = setting(min=0, max=MAX_UPSAMPLE)
    face_search: str = setting(choices=FACE_SEARCHES)
    landmarks: int | str = setting(choices=("none", 5, 68))
    align: bool = setting()
    several_faces: str = setting(choices=SEVERAL_FACES)
    face_at_border: str = setting(choices=FACE_AT_BORDER)
    no_face: str = setting(choices=("skip", "keep_full"))
    margin: float = setting(min=1.0, max=4.0)
    size: int = setting(min=8, max=2048)
    frames_per_video: int = setting(min=1)
    workers: int = setting(min=0)
    keep_splits: bool = setting()
    group_by: str = setting(choices=("file", "folder"))
    real_dirs: str = setting()
    fake_dirs: str = setting()
    max_megapixels: float = setting(gt=0)
    max_file_mb: float = setting(gt=0)
    min_side: int = setting(min=1)
    retry_skipped: bool = setting()
    shard: str = setting()

    def __post_init__(self) -> None:
        _ = self.ingest  # validates real_dirs, fake_dirs, group_by
        Shard.parse(self.shard)  # "K/N" with 1 <= K <= N, or ""
        if self.align and (not self.detect or self.landmarks == "none"):
            raise ValueError(
                "preprocess.align = true needs detect: true and landmarks: 5 or 68 (alignment uses the eye and "
                "mouth landmarks of a detected face)"
            )

    @property
    def ingest(self) -> IngestConfig:
        return IngestConfig(
            real_dirs=self.real_dirs, fake_dirs=self.fake_dirs, keep_splits=self.keep_splits, group_by=self.group_by
        )

    def contract(self, input_size: int | None = None) -> Preprocessing:
        """The crops' part of the preprocessing contract (the network input size defaults to the crop size)."""
        return Preprocessing(
            crop="face" if self.detect else "center",
            detector=self.detector,
            margin=self.margin,
            no_face=self.no_face,
            crop_size=self.size,
            input_size=input_size or self.size,
            frames_per_video=self.frames_per_video,
            upsample=self.upsample,
            video_upsample=self.video_upsample,
            face_search=self.face_search,
            landmarks=0 if self.landmarks == "none" else int(self.landmarks),
            align=self.align,
            several_faces=self.several_faces,
            face_at_border=self.face_at_border,
            min_side=self.min_side,
        )

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1e6)

    @property
    def max_bytes(self) -> int:
        return int(self.max_file_mb * 2**20)


@dataclass(frozen=True)
class Shard:
    """Share ``index`` (1-based, as SLURM's ``--array=1-N``) of ``count``: the sources whose path hashes to it."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard | None:
        """``"K/N"`` as a shard, ``""`` as none.

        Raises:
            ValueError: anything else, or K outside 1..N (the message names ``preprocess.shard``).
        """
        text = text.strip()
        if not text:
            return None
        k, sep, n = text.partition("/")
        if not (sep and k.strip().isdigit() and n.strip().isdigit()):
            raise ValueError(
                f"preprocess.shard = {text!r} is not K/N; write e.g. 2/4 (share 2 of 4, numbered from 1) or '' for "
                "the whole dataset"
            )
        index, count = int(k), int(n)
        if count < 1 or not 1 <= index <= count:
            raise ValueError(
                f"preprocess.shard = {text!r}: K/N needs N >= 1 and 1 <= K <= N (shards are numbered 1 to N; "
                "Kubernetes' 0-based JOB_COMPLETION_INDEX needs + 1)"
            )
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def file_name(self) -> str:
        return f"{self.index}-of-{self.count}.json"

    def holds(self, rel: str) -> bool:
        return shard_of(rel, self.count) == self.index


def shard_of(rel: str, count: int) -> int:
    """The share (1 to ``count``) of a source's relative path: SHA-256, so the same on every machine and run."""
    return int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "big") % count + 1


class ShardsIncomplete(RuntimeError):
    """The merge found a shard that has not finished for the current settings and inputs."""


@dataclass
class PreprocessResult:
    """What a run produced (or found already up to date)."""

    out_dir: Path
    manifest: pd.DataFrame  # one row per crop written
    skipped: pd.DataFrame  # one row per input not used (SKIPPED_COLUMNS)
    summary: dict
    up_to_date: bool  # nothing had to be done


# --------------------------------------------------------------------------------------------
# One source -> crops (runs in worker processes)
# --------------------------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(cfg: PreprocessConfig, out_dir: str, single_thread: bool) -> None:
    if single_thread:
        lifetime.end_with_parent()  # a pool worker ends with the process that started it (and the forkserver)
        cv2.setNumThreads(1)  # one process per core already
    _WORKER.update(cfg=cfg, prep=cfg.contract(), out=Path(out_dir))


def encode_png(rgb: np.ndarray) -> bytes:
    """Lossless PNG bytes of an (H, W, 3) uint8 RGB image."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"OpenCV could not encode a {rgb.shape} image as PNG")
    return buf.tobytes()


def _write_png(rgb: np.ndarray, path: Path) -> None:
    data = encode_png(rgb)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _product(
    crop: Crop, shape: tuple[int, ...], out: Path, key: str, frame: int | None, rec: dict, detect: bool
) -> None:
    """Write one crop of an image or frame of ``shape`` and record the outcome in ``rec``."""
    rec["decoded"] += 1
    if crop.how == "face" or crop.box is not None:
        rec["faces"] += 1
    elif detect and crop.reason != "too_small":
        rec["no_face"] += 1
    if crop.image is None:
        detail = f"{shape[1]}x{shape[0]} px"
        if crop.box is not None:
            detail += f", {crop.n_faces} face(s), largest at {','.join(map(str, crop.box.as_tuple()))}"
        rec["skips"].append({"frame": "" if frame is None else frame, "reason": crop.reason, "detail": detail})
        return
    _write_png(crop.image, out / key)
    rec["products"].append(
        {
            "path": key,
            "frame": "" if frame is None else frame,
            "crop": crop.how,
            "box": "" if crop.box is None else ",".join(map(str, crop.box.as_tuple())),
            "n_faces": crop.n_faces,
            "at_border": crop.at_border,
            "landmarks": format_points(crop.landmarks),
            "phash": phash_hex(crop.image),
        }
    )


def process_source(job: tuple[Source, str]) -> dict:
    """Decode, crop and write one source; never raises for bad input (it is recorded instead).

    Returns:
        A record: ``sha256`` of the source bytes, ``products`` (crops written: path, frame,
        crop, box, phash), ``skips`` (frame, reason, detail) and counters.
    """
    src, key = job
    cfg, prep, out = _WORKER["cfg"], _WORKER["prep"], _WORKER["out"]
    rec: dict[str, Any] = {"sha256": "", "products": [], "skips": [], "decoded": 0, "faces": 0, "no_face": 0}
    try:
        if src.kind == "image":
            data = read_bytes(src.path, cfg.max_bytes)
            rec["sha256"] = hashlib.sha256(data).hexdigest()
            rgb = decode_image(data, src.path, cfg.max_pixels)
            _product(crop_image(rgb, prep), rgb.shape, out, key, None, rec, cfg.detect)
        else:
            check_regular_file(src.path, cfg.max_bytes)
            rec["sha256"] = sha256_file(src.path)
            sample = sample_video(src.path, cfg.frames_per_video, max_bytes=cfg.max_bytes)
            frames = sample.frames
            for index in sample.missing:  # listed, not dropped in silence
                rec["skips"].append({"frame": index, "reason": "frame_unreadable", "detail": ""})
            crops = crop_frames([rgb for _, rgb in frames], prep)
            for (index, rgb), crop in zip(frames, crops):
                _product(crop, rgb.shape, out, f"{key}/{index:06d}.png", index, rec, cfg.detect)
            reasons = {s["reason"] for s in rec["skips"]}
            if not rec["products"] and len(reasons) == 1:  # one line for a video left out for one reason
                reason = reasons.pop()
                rec["skips"] = [
                    {
                        "frame": "all",
                        "reason": reason,
                        "detail": f"{reason.replace('_', ' ')} in all {len(rec['skips'])} sampled frames",
                    }
                ]
    except BadInputError as e:
        rec["skips"].append({"frame": "", "reason": e.reason, "detail": e.detail})
    except MemoryError as e:
        rec["skips"].append({"frame": "", "reason": "out_of_memory", "detail": f"{e}"[:300]})
    except (FaceModelError, EnvironmentFault):
        raise  # the machine, not this input (a failed write, no file handles): stop the stage
    except (OSError, ValueError, cv2.error) as e:  # anything else about this one file: record, go on
        rec["skips"].append({"frame": "", "reason": "corrupt", "detail": f"{type(e).__name__}: {e}"[:300]})
    return rec


# --------------------------------------------------------------------------------------------
# Output names, fingerprints and state
# --------------------------------------------------------------------------------------------


def output_keys(sources: list[Source]) -> list[str]:
    """Cache path of each source: its relative path with a ``.png`` suffix (images) or a
    ``<name>.frames/`` folder (videos); sources outside the dataset folder go under ``_external/``.

    Two images whose names differ only by extension (``a.jpg``, ``a.png``) keep their
    extension in the name (``a.jpg.png``), so no output is ever overwritten by another source.
    """
    keys = []
    for s in sources:
        rel = PurePosixPath(s.rel)
        if rel.is_absolute() or ".." in rel.parts:
            rel = PurePosixPath("_external", hashlib.sha1(str(s.path).encode()).hexdigest()[:12], s.path.name)
        keys.append(f"{rel}.frames" if s.kind == "video" else str(rel.with_suffix(".png")))
    counts = pd.Series(keys).value_counts()
    clash = set(counts[counts > 1].index)
    keys = [
        f"{PurePosixPath(k).with_suffix('')}{Path(s.rel).suffix.lower()}.png" if k in clash else k
        for k, s in zip(keys, sources)
    ]
    if len(set(keys)) != len(keys):
        dup = pd.Series(keys)[pd.Series(keys).duplicated()].iloc[0]
        raise ValueError(f"two sources would be written to {dup}; rename one of them")
    return keys


#: Settings that change how a run goes, not what it writes: not in the fingerprint nor the state.
_RUN_ONLY = ("workers", "retry_skipped", "shard")
#: Skip reasons that say nothing lasting about the file: tried again on every run.
RETRIED = ("unreadable", "out_of_memory", "missing_file")


def recorded_settings(cfg: PreprocessConfig, layout: LayoutConfig | None = None) -> dict[str, Any]:
    """The settings a cache records (those that decide its content): the preprocess section's and,
    under ``data``, how the dataset was listed (its labels, groups and splits depend on it)."""
    out = {k: v for k, v in asdict(cfg).items() if k not in _RUN_ONLY}
    if layout is not None:
        out["data"] = asdict(layout)
    return out


def settings_key(cfg: PreprocessConfig, layout: LayoutConfig | None = None) -> str:
    """Fingerprint of everything besides the inputs that decides the output: settings and code."""
    h = hashlib.sha256(json.dumps(recorded_settings(cfg, layout), sort_keys=True).encode())
    h.update(__version__.encode())
    here = Path(__file__).parent
    for name in _CODE:
        h.update((here / name).read_bytes())
    h.update(cv2.__version__.encode())
    return h.hexdigest()


def _stat(p: Path) -> list[int]:
    """What tells a changed file without reading it: size, modification time, permissions and owner."""
    try:
        st = p.stat()
        return [st.st_size, st.st_mtime_ns, st.st_mode, st.st_uid, st.st_gid]
    except OSError:
        return [-1, -1, -1, -1, -1]


def _reusable(
    rec: dict, key: str, stat: list[int], old_stat: list[int] | None, src: Source, out: Path, retry_skipped: bool
) -> bool:
    """Whether an earlier run's record of ``src`` still holds: same key, its crops present, and the
    same file (by stat, or by content for a used file whose time stamp moved). A skipped input is
    tried again when its stat changed (content, permissions, owner), when its reason is one of
    ``RETRIED``, or with ``retry_skipped``."""
    if stat[0] < 0:
        return False
    if rec["skips"] and (retry_skipped or any(s["reason"] in RETRIED for s in rec["skips"])):
        return False
    if not all(p["path"] == key or p["path"].startswith(key + "/") for p in rec["products"]):
        return False
    if not all((out / p["path"]).is_file() for p in rec["products"]):
        return False
    if old_stat == stat:
        return True
    if rec["skips"]:
        return False
    try:
        check_regular_file(src.path, max_bytes=None)
        return sha256_file(src.path) == rec["sha256"]
    except (BadInputError, OSError):
        return False


def _load_state(out: Path) -> dict | None:
    try:
        return json.loads((out / STATE_NAME).read_text())
    except (OSError, ValueError):
        return None


def _load_stats(out: Path) -> dict[str, list[int]]:
    try:
        stats = json.loads((out / STAT_NAME).read_text())
        return stats if isinstance(stats, dict) else {}
    except (OSError, ValueError):
        return {}


def _shard_records(out: Path) -> dict[Shard, dict]:
    """The shard records in ``out/shards``; an unreadable one as ``{}`` (named by the merge, never ignored)."""
    found: dict[Shard, dict] = {}
    folder = out / SHARDS_DIR
    if not folder.is_dir():
        return found
    for f in sorted(folder.iterdir()):
        m = re.fullmatch(r"(\d+)-of-(\d+)\.json", f.name)
        if not m or not 1 <= int(m[1]) <= int(m[2]):
            continue
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            rec = {}
        found[Shard(int(m[1]), int(m[2]))] = rec if isinstance(rec, dict) else {}
    return found


def _write_shard_record(
    out: Path, shard: Shard, key: str, records: dict[str, dict], stats: dict[str, list[int]], finished: bool
) -> bool:
    """Write ``shards/K-of-N.json``: the settings' fingerprint, whether the shard finished, and what
    each of its sources gave (with its stat, so that a run again reuses it). True when written."""
    text = json.dumps({"shard": str(shard), "settings": key, "finished": finished, "sources": records, "stats": stats})
    return write_if_changed(out / SHARDS_DIR / shard.file_name, text)


def _shard_count(records: dict[Shard, dict], key: str, out: Path) -> int:
    """N of the shards whose records hold the current settings (0: none); more than one N is an error."""
    counts = sorted({s.count for s, rec in records.items() if rec.get("settings") == key})
    if len(counts) > 1:
        raise ShardsIncomplete(
            f"{out / SHARDS_DIR} holds records of {' and '.join(map(str, counts))} shards for the current settings; "
            "merge one set with python -m deepfake preprocess --merge N (the others' records are then removed)"
        )
    return counts[0] if counts else 0


def _check_shards(out: Path, records: dict[Shard, dict], count: int, key: str, sources: list[Source]) -> None:
    """Refuse to merge unless every shard of ``count`` finished with these settings on exactly its share.

    Raises:
        ShardsIncomplete: naming each shard that has not (no record, stopped, other settings or inputs).
    """
    shares: dict[int, set[str]] = {k: set() for k in range(1, count + 1)}
    for src in sources:
        shares[shard_of(src.rel, count)].add(src.rel)
    problems = []
    for k, want in shares.items():
        shard = Shard(k, count)
        rec = records.get(shard)
        if rec is None:
            problems.append(f"shard {shard} has not finished (no record {SHARDS_DIR}/{shard.file_name}: not run yet)")
        elif rec.get("settings") != key:
            problems.append(f"shard {shard} ran with other settings, code or versions (or its record is unreadable)")
        elif not rec.get("finished"):
            done = len(set(rec.get("sources", {})) & want)
            problems.append(
                f"shard {shard} has not finished ({done} of its {len(want)} input(s) done: stopped, failed or running)"
            )
        else:
            have = set(rec.get("sources", {}))
            new, gone = sorted(want - have), sorted(have - want)
            if new or gone:
                example = f", e.g. {(new or gone)[0]}"
                problems.append(
                    f"shard {shard} ran on another list of inputs ({len(new)} new since, {len(gone)} gone{example})"
                )
    if problems:
        raise ShardsIncomplete(
            f"cannot merge the {count} shards in {out}: {'; '.join(problems)}. No manifest.csv was written; run each "
            f"shard named again (python -m deepfake preprocess --shard K/{count}), then merge"
        )


def _remove_shard_records(out: Path) -> bool:
    folder = out / SHARDS_DIR
    if not folder.exists():
        return False
    try:
        shutil.rmtree(folder)
    except OSError as e:
        raise output_error(folder, e, "remove the merged shards' records") from e
    return True


def _check_out_dir(out: Path, inv: Inventory) -> None:
    """Refuse an output folder that is not ours, or that overlaps the dataset.

    The cache and the dataset folder may not contain one another (crops inside the dataset
    would be scanned as inputs next time; a dataset inside the cache would be cleaned away),
    nor may the cache hold any listed source.
    """
    out_r, root_r = out.resolve(), inv.root.resolve()
    holds_sources = any(out_r in s.path.resolve().parents for s in inv.sources)
    if out_r == root_r or out_r in root_r.parents or root_r in out_r.parents or holds_sources:
        raise ValueError(
            f"the cache folder {out} overlaps the dataset folder {inv.root}; choose a separate folder (e.g. "
            "cache/faces)"
        )
    if out.exists() and any(not is_temporary(p.name) for p in out.iterdir()) and not (out / STATE_NAME).is_file():
        raise FileExistsError(
            f"{out} is not empty and holds no {STATE_NAME}: it is not a preprocess cache; "
            f"choose an empty or new folder (its files would be replaced)"
        )


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------


def _rows(src: Source, rec: dict) -> tuple[list[dict], list[dict]]:
    base = {"label": src.label, "target": LABELS.index(src.label), "group": src.group}
    if src.split:
        base["split"] = src.split
    rows = []
    for p in rec["products"]:
        video = src.rel if src.kind == "video" else ""
        rows.append(
            {
                "path": p["path"],
                **base,
                "source": src.rel,
                "kind": src.kind,
                "crop": p["crop"],
                "box": p["box"],
                "n_faces": p["n_faces"],
                "at_border": p["at_border"],
                "landmarks": p["landmarks"],
                "phash": p["phash"],
                "video": video,
                "frame": p["frame"],
                "video_label": src.label if video else "",
                "source_sha256": rec["sha256"],
                **src.extra,
            }
        )
    skips = [
        {"source": src.rel, "frame": s["frame"], "label": src.label, "reason": s["reason"], "detail": s["detail"]}
        for s in rec["skips"]
    ]
    return rows, skips


def _tables(inv: Inventory, records: dict[str, dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, skips = [], [dict(s) for s in inv.skipped]
    for src in inv.sources:
        r, s = _rows(src, records[src.rel])
        rows += r
        skips += s
    manifest = pd.DataFrame(rows)
    if manifest.empty:
        manifest = pd.DataFrame(columns=["path", "label", "target", "group"])
    else:
        manifest = manifest.sort_values("path", kind="stable").reset_index(drop=True)
    skipped = (
        pd.DataFrame(skips, columns=list(SKIPPED_COLUMNS))
        .sort_values(["source", "frame"], key=lambda c: c.astype(str))
        .reset_index(drop=True)
    )
    return manifest, skipped


def _summary(
    inv: Inventory,
    records: dict[str, dict],
    manifest: pd.DataFrame,
    skipped: pd.DataFrame,
    cfg: PreprocessConfig,
    processed: int,
    seconds: float,
    decoded_now: int,
    workers: int,
) -> dict:
    counts = inv.counts()
    recs = [records[s.rel] for s in inv.sources]
    crops = manifest["crop"] if "crop" in manifest.columns else pd.Series(dtype=object)
    videos = [s for s in inv.sources if s.kind == "video"]
    return {
        "layout": inv.layout,
        "images": counts["images"],
        "videos": counts["videos"],
        "decoded": int(sum(r["decoded"] for r in recs)),  # images plus sampled video frames
        "faces_found": int(sum(r["faces"] for r in recs)),
        "no_face": int(sum(r["no_face"] for r in recs)),
        "kept_full": int((crops == "full").sum()) if cfg.detect else 0,
        "kept_with_several_faces": int((manifest["n_faces"] > 1).sum()) if "n_faces" in manifest.columns else 0,
        "kept_at_border": int(manifest["at_border"].astype(bool).sum()) if "at_border" in manifest.columns else 0,
        "with_landmarks": int((manifest["landmarks"].fillna("") != "").sum()) if "landmarks" in manifest.columns else 0,
        "written": int(len(manifest)),
        "skipped": int(len(skipped)),
        "skipped_by_reason": {k: int(v) for k, v in skipped["reason"].value_counts().sort_index().items()},
        "unsupported_by_extension": _by_extension(skipped),
        "labels": {lab: int((manifest["label"] == lab).sum()) if len(manifest) else 0 for lab in LABELS},
        "conflicting_labels": len(conflicting_labels(manifest)),
        "videos_with_frames": int(sum(bool(records[s.rel]["products"]) for s in videos)),
        "processed_now": processed,
        "reused": len(inv.sources) - processed,
        "detect": cfg.detect,
        "size": cfg.size,
        "workers": workers,
        "seconds": round(seconds, 3),
        "images_per_second": round(decoded_now / seconds, 2) if seconds > 0 and decoded_now else None,
    }


def _by_extension(skipped: pd.DataFrame) -> dict[str, int]:
    """Files of types that are neither images nor videos, counted by extension."""
    rows = skipped[skipped["reason"].isin(["unsupported_extension", "no_label_folder"]) & (skipped["detail"] != "")]
    return {str(k): int(v) for k, v in rows["detail"].value_counts().sort_index().items()}


def _remove_stale(out: Path, keep: set[str]) -> int:
    """Delete crops in ``out`` that the new manifest does not list (earlier runs, crashed runs)."""
    n = 0
    if not out.is_dir():
        return 0
    for p in sorted(out.rglob("*.png")):
        if p.relative_to(out).as_posix() not in keep:
            try:
                p.unlink()
            except OSError as e:
                raise output_error(p, e, "remove the stale crop") from e
            n += 1
    for d in sorted((d for d in out.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True):
        if not any(d.iterdir()):
            try:
                d.rmdir()
            except OSError as e:
                raise output_error(d, e, "remove the empty folder") from e
    return n


def resolve_workers(workers: int) -> int:
    """0 means every core this process may use."""
    if workers > 0:
        return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _pool_context() -> multiprocessing.context.BaseContext:
    # forkserver: children never inherit the caller's threads (torch, OpenCV pools), whose locks a
    # plain fork can copy in a held state and deadlock on
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])  # imported once by the server, not once per worker
        return ctx
    return multiprocessing.get_context("spawn")


def _run_jobs(
    jobs: list[tuple[Source, str]], cfg: PreprocessConfig, out: Path, workers: int, progress: bool, done: list[dict]
) -> None:
    """Process ``jobs`` in order, appending each record to ``done`` as it arrives (so that what was
    done survives an error or an interruption); on an error, jobs not started are cancelled."""
    bar = progress_bar(total=len(jobs), desc="preprocess", unit="files", disable=not (progress and jobs))
    try:
        if workers == 1 or len(jobs) < 2:
            _init_worker(cfg, str(out), single_thread=False)
            for job in jobs:
                done.append(process_source(job))
                bar.update()
        else:
            chunk = max(1, min(16, len(jobs) // (workers * 8)))
            ex = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=_pool_context(),
                initializer=_init_worker,
                initargs=(cfg, str(out), True),
            )
            try:
                for rec in ex.map(process_source, jobs, chunksize=chunk):
                    done.append(rec)
                    bar.update()
            finally:
                ex.shutdown(wait=True, cancel_futures=True)  # running jobs end; the rest never start
    finally:
        bar.close()


def _state_json(key: str, settings: dict[str, Any], records: dict) -> str:
    """The cache's record (``STATE_NAME``): its settings' fingerprint and settings, and what each source gave."""
    return json.dumps({"settings": key, "config": settings, "sources": records})


def _save_partial(out: Path, key: str, settings: dict[str, Any], records: dict, stats: dict) -> None:
    """Record what an interrupted or failed run finished, so the next run does not do it again
    (best effort: the disk may be what failed). No manifest is written: the cache is incomplete."""
    try:
        with atomic_path(out / STATE_NAME) as tmp:
            tmp.write_text(_state_json(key, settings, records))
        with atomic_path(out / STAT_NAME) as tmp:
            tmp.write_text(json.dumps(stats))
    except (EnvironmentFault, OSError) as e:
        log.warning(f"could not record the finished part of the run in {out}: {e}")


def preprocess(
    dataset: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: PreprocessConfig | None = None,
    progress: bool = True,
    layout: LayoutConfig | None = None,
    only_split: str = "",
    merge_shards: int = 0,
) -> PreprocessResult:
    """Build (or bring up to date) the face-crop cache of ``dataset`` in ``out_dir``, or one shard of it.

    Args:
        dataset: a folder (``real/``/``fake/``, ``manifest.csv``, or a benchmark's download) or a
            CSV manifest.
        out_dir: the cache folder; created, or one this function wrote before.
        cfg: detection, cropping and parallelism settings (``retry_skipped`` decodes every
            skipped input again).
        progress: show a progress bar.
        layout: how the dataset is listed (``params.yaml``'s ``data`` section by default:
            ``layout: auto`` recognises the folder); part of the cache's fingerprint.
        only_split: keep only the inputs of this split of the dataset's own (e.g. ``test``: a
            benchmark's official test set, for a cross-dataset test) when the dataset has one;
            the others are out of scope, neither decoded nor listed as skipped.
        merge_shards: N: merge the records of shards 1/N to N/N (refused unless each has finished
            for these settings and inputs). Without it, a run finding records of the current
            settings merges them as well; ``cfg.shard`` ``K/N`` runs one shard instead.

    Returns:
        The manifest and skip list (also written to ``out_dir``; a shard's: of its share, not
        written) and a summary with counts (faces found, skipped by reason) and throughput.

    Raises:
        deepfake.core.utils.OutputError: ``out_dir`` or a crop cannot be written (permissions,
            read-only or full disk); the work finished so far is kept for the next run.
        deepfake.core.utils.EnvironmentFault: the machine ran out of file handles or memory.
        deepfake.data.ingest.DatasetLayoutError: the dataset has no usable layout.
        ShardsIncomplete: a merge found a shard that has not finished (no manifest is written).
    """
    cfg = cfg or PreprocessConfig()
    layout = layout or LayoutConfig()
    shard = Shard.parse(cfg.shard)
    if shard is not None and merge_shards:
        raise ValueError(f"preprocess.shard = {cfg.shard!r} runs one shard; a merge of {merge_shards} runs without one")
    inv = scan_dataset(dataset, layout, cfg.ingest)
    if only_split and any(s.split == only_split for s in inv.sources):
        kept = [s for s in inv.sources if s.split == only_split]
        log.info(
            "%s: %d of %d input(s) are in its %s split; only those are used",
            inv.root,
            len(kept),
            len(inv.sources),
            only_split,
        )
        inv.sources = kept
    out = Path(out_dir)
    _check_out_dir(out, inv)
    key = settings_key(cfg, layout)
    settings = recorded_settings(cfg, layout)
    keys = output_keys(inv.sources)  # of the whole dataset: a crop's name never depends on the shards
    shard_records = _shard_records(out)
    merged = 0 if shard is not None else merge_shards or _shard_count(shard_records, key, out)
    if merged:  # before anything is touched: a merge refused changes nothing
        _check_shards(out, shard_records, merged, key, inv.sources)
    # writable? leftovers of a killed run removed; but not by a shard: other shards may be writing,
    # on other machines whose process ids this one cannot check (the merge removes them)
    prepare_output_dir(out, recursive=True, clean=shard is None)
    state = _load_state(out)
    old = state["sources"] if state and state.get("settings") == key else {}
    old_stats = _load_stats(out)
    if shard is not None:  # its share only; its own earlier (perhaps stopped) run is reused
        mine = [(s, k) for s, k in zip(inv.sources, keys) if shard.holds(s.rel)]
        own = shard_records.get(shard, {})
        if own.get("settings") == key:
            old, old_stats = {**old, **own.get("sources", {})}, {**old_stats, **own.get("stats", {})}
    else:
        mine = list(zip(inv.sources, keys))
        for index in range(1, merged + 1):
            finished = shard_records[Shard(index, merged)]
            old, old_stats = {**old, **finished.get("sources", {})}, {**old_stats, **finished.get("stats", {})}
        if merged:
            log.info("%s: merging the records of %d shards", out, merged)

    records: dict[str, dict] = {}
    stats: dict[str, list[int]] = {}
    todo: list[tuple[Source, str, list[int]]] = []
    for src, k in mine:
        rec, stat = old.get(src.rel), _stat(src.path)
        if rec is not None and _reusable(rec, k, stat, old_stats.get(src.rel), src, out, cfg.retry_skipped):
            records[src.rel], stats[src.rel] = rec, stat
        else:
            todo.append((src, k, stat))
    workers = resolve_workers(cfg.workers)
    seconds = 0.0
    if todo:
        if not (out / STATE_NAME).is_file():  # claim the folder before writing into it
            with atomic_path(out / STATE_NAME) as tmp:
                tmp.write_text(json.dumps({"settings": None, "sources": {}}))
        _remove_manifest(out)  # the cache is about to change: it must not look complete until done
        t0 = time.perf_counter()
        done: list[dict] = []
        try:
            _run_jobs([(s, k) for s, k, _ in todo], cfg, out, min(workers, len(todo)), progress, done)
        except BaseException:
            for (src, _, stat), rec in zip(todo, done):
                records[src.rel], stats[src.rel] = rec, stat
            if shard is None:
                _save_partial(out, key, settings, records, stats)
            else:
                _save_shard_partial(out, shard, key, records, stats)
            raise
        seconds = time.perf_counter() - t0
        for (src, _, stat), rec in zip(todo, done):
            records[src.rel], stats[src.rel] = rec, stat
    workers_used = workers if todo else 0
    if shard is not None:
        share = [s for s, _ in mine]
        return _finish_shard(out, shard, key, inv, share, records, stats, cfg, todo, seconds, workers_used)
    records = {s.rel: records[s.rel] for s in inv.sources}  # the dataset's order, however much was reused
    manifest, skipped = _tables(inv, records)
    problem = label_problem(manifest, "the cache") if len(manifest) else ""
    if problem:
        log.warning(f"{problem} (the split stage will refuse it)")
    # the manifest last: a run stopped before it leaves no manifest.csv, never a stale one
    changed = _remove_stale(out, set(manifest["path"])) > 0
    changed |= write_if_changed(out / SKIPPED_NAME, skipped.to_csv(index=False))
    changed |= write_if_changed(out / CONTRACT_FILE, json.dumps(cfg.contract().to_dict(), indent=2) + "\n")
    changed |= write_if_changed(out / STATE_NAME, _state_json(key, settings, records))
    write_if_changed(out / STAT_NAME, json.dumps({s.rel: stats[s.rel] for s in inv.sources}))
    changed |= write_if_changed(out / MANIFEST_NAME, manifest.to_csv(index=False))
    changed |= _remove_shard_records(out)  # merged (or of other settings): the cache's own record holds it all
    decoded_now = sum(records[s.rel]["decoded"] for s, _, _ in todo)
    summary = _summary(inv, records, manifest, skipped, cfg, len(todo), seconds, decoded_now, workers_used)
    summary["merged_shards"] = merged
    return PreprocessResult(out, manifest, skipped, summary, up_to_date=not (todo or changed))


def _save_shard_partial(out: Path, shard: Shard, key: str, records: dict, stats: dict) -> None:
    """A stopped shard's record, ``"finished": false`` (best effort, as ``_save_partial``)."""
    try:
        _write_shard_record(out, shard, key, records, stats, finished=False)
    except (EnvironmentFault, OSError) as e:
        log.warning(f"could not record the finished part of shard {shard} in {out}: {e}")


def _finish_shard(
    out: Path,
    shard: Shard,
    key: str,
    inv: Inventory,
    sources: list[Source],
    records: dict[str, dict],
    stats: dict[str, list[int]],
    cfg: PreprocessConfig,
    todo: list[tuple[Source, str, list[int]]],
    seconds: float,
    workers: int,
) -> PreprocessResult:
    """Write a shard's record, finished, and return its share's tables (not written: the merge writes them)."""
    own = {s.rel: records[s.rel] for s in sources}
    written = _write_shard_record(out, shard, key, own, {s.rel: stats[s.rel] for s in sources}, finished=True)
    share = replace(inv, sources=sources, skipped=[])  # the listing's own skips are the merge's
    manifest, skipped = _tables(share, own)
    decoded_now = sum(own[s.rel]["decoded"] for s, _, _ in todo)
    summary = _summary(share, own, manifest, skipped, cfg, len(todo), seconds, decoded_now, workers)
    summary["shard"] = str(shard)
    log.info("shard %s of %s: %d input(s), %d decoded now", shard, out, len(sources), len(todo))
    return PreprocessResult(out, manifest, skipped, summary, up_to_date=not (todo or written))


def _remove_manifest(out: Path) -> None:
    try:
        (out / MANIFEST_NAME).unlink(missing_ok=True)
    except OSError as e:
        raise output_error(out / MANIFEST_NAME, e, "remove") from e


def explain_reasons(skipped: pd.DataFrame) -> pd.DataFrame:
    """Skips per reason with the reason's explanation (for reports and notebooks)."""
    counts = skipped["reason"].value_counts().rename("count")
    table = counts.to_frame()
    table["meaning"] = [REASONS.get(r, "") for r in table.index]
    table.index.name = "reason"
    return table.sort_index()
