"""Dataset ingestion: find every image and video of a dataset and read them robustly.

Three layouts are understood (``scan``):

* **Folders**: files below a folder named ``real`` or ``fake`` (at any depth of the dataset
  folder, files at any depth below it). With ``keep_splits`` an enclosing ``train/``,
  ``valid/`` (``val/``, ``validation/``) or ``test/`` folder assigns the file's split.
* **CSV manifest** ``path,label[,group][,split]`` (``file`` is accepted for ``path``): the
  folder's ``manifest.csv``, or any CSV passed instead of a folder. Paths are relative to the
  CSV's folder (absolute paths are allowed). Other columns (e.g. a manipulation type) are
  carried along as they are, except ``RESERVED_COLUMNS``.
* **Videos** (``deepfake.data.media.VIDEO_EXTENSIONS``) in either layout: the preprocess stage
  samples ``frames_per_video`` evenly spaced frames from each; every frame keeps its video as
  its group.

Nothing is decoded here (``deepfake.data.media`` does that); files that cannot belong to the
dataset are returned with their reason (``deepfake.data.media.REASONS``). Every path the folder walk
(``walk``) passes is either used or listed: folders that cannot be read, broken and looping
links, FIFOs, devices and sockets, hidden entries, files outside a label folder and files of
other types.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..core.utils import EnvironmentFault
from .media import BadInputError, check_regular_file, file_type, kind_of, link_target, read_error

LABELS = ("real", "fake")  # target 0 = real, 1 = fake
MANIFEST_NAME = "manifest.csv"


class DatasetLayoutError(ValueError):
    """The dataset folder does not have the expected layout."""


#: Folder names that assign a split when ``keep_splits`` is on, and the split they mean.
SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "valid": "val",
    "val": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
#: Columns the pipeline itself writes; a source manifest's own columns of these names are not
#: carried into the cache manifest (its ``sha256`` is recomputed as ``source_sha256``).
RESERVED_COLUMNS = (
    "path",
    "file",
    "label",
    "target",
    "group",
    "split",
    "kind",
    "source",
    "source_sha256",
    "sha256",
    "phash",
    "crop",
    "box",
    "video",
    "frame",
    "video_label",
)

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
    layout: str  # folders | manifest, or a benchmark (deepfake.data.layouts): ffpp | celebdf | dfdc
    sources: list[Source]
    skipped: list[dict]

    def counts(self) -> dict[str, int]:
        kinds = pd.Series([s.kind for s in self.sources], dtype=object)
        return {
            "images": int((kinds == "image").sum()),
            "videos": int((kinds == "video").sum()),
            "skipped": len(self.skipped),
        }


def skip_row(rel: str, reason: str, detail: str = "", label: str = "") -> dict:
    """One row of an inventory's ``skipped`` list (``reason``: a key of ``deepfake.data.media.REASONS``)."""
    return {"source": rel, "frame": "", "label": label, "reason": reason, "detail": detail}


@dataclass(frozen=True)
class Entry:
    """One path met by ``walk``: a regular file (``problem`` empty) or why it cannot be used."""

    path: Path
    problem: str = ""  # a key of deepfake.data.media.REASONS
    detail: str = ""


def walk(root: str | os.PathLike) -> Iterator[Entry]:
    """Every path below ``root`` in sorted order: regular files, and each path that cannot be
    used with its reason (``deepfake.data.media.REASONS``), so that nothing is passed over in silence.

    Links to files and folders are followed, each folder once: a link back into a folder above
    it is a ``link_loop``, a second link to a folder already walked is ``link_loop`` too (its
    files are listed once). Folders that cannot be listed are ``unreadable_folder``; hidden
    entries (``.name``) are ``hidden`` and not descended into; FIFOs, devices and sockets are
    ``not_regular_file`` and never opened. Errors are told apart by ``deepfake.data.media.read_error``:
    a machine out of file handles or memory raises ``EnvironmentFault`` instead of listing paths.
    """
    root = Path(root)
    seen: set[tuple[int, int]] = set()
    try:
        st = os.stat(root)
        seen.add((st.st_dev, st.st_ino))
    except OSError as e:
        yield _unreadable_folder(root, e)
        return
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                names = sorted(e.name for e in it)
        except OSError as e:
            yield _unreadable_folder(folder, e)
            continue
        subfolders = []
        for name in names:
            p = folder / name
            if name.startswith("."):
                yield Entry(p, "hidden")
                continue
            try:
                st = os.stat(p)  # follows links
            except OSError as e:
                yield _problem(p, e)
                continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    yield Entry(p, "link_loop", link_target(p) + " (a folder already walked)")
                    continue
                seen.add(key)
                subfolders.append(p)
            elif stat.S_ISREG(st.st_mode):
                yield Entry(p)
            else:
                yield Entry(p, "not_regular_file", file_type(st.st_mode))
        stack.extend(reversed(subfolders))  # depth first, in sorted order


def _problem(path: Path, e: OSError) -> Entry:
    """The entry of a path ``os.stat`` failed on (``deepfake.data.media.read_error``), or raise a machine fault."""
    err = read_error(path, e)
    if isinstance(err, EnvironmentFault):
        raise err from e
    return Entry(path, err.reason, err.detail)


def _unreadable_folder(folder: Path, e: OSError) -> Entry:
    entry = _problem(folder, e)
    return Entry(folder, "unreadable_folder", entry.detail) if entry.problem == "unreadable" else entry


def _scan_folders(root: Path, cfg: IngestConfig) -> Inventory:
    names = {n: lab for lab in LABELS for n in cfg.label_names(lab)}
    sources, skipped = [], []
    for entry in walk(root):
        p = entry.path
        rel = p.relative_to(root)
        parts = [s.lower() for s in rel.parts[:-1]]
        idx = next((i for i, s in enumerate(parts) if s in names), None)
        label = names[parts[idx]] if idx is not None else ""
        if entry.problem:
            skipped.append(skip_row(rel.as_posix(), entry.problem, entry.detail, label))
            continue
        kind = kind_of(p)
        if idx is None:
            ext = "" if kind else (p.suffix.lower() or "no extension")
            skipped.append(skip_row(rel.as_posix(), "no_label_folder", ext))
            continue
        if kind is None:
            skipped.append(skip_row(rel.as_posix(), "unsupported_extension", p.suffix.lower() or "no extension", label))
            continue
        split = ""
        if cfg.keep_splits:
            split = next((SPLIT_FOLDERS[s] for s in parts[:idx] if s in SPLIT_FOLDERS), "")
            if not split:
                skipped.append(skip_row(rel.as_posix(), "no_split_folder", label=label))
                continue
        below = rel.parts[idx + 1 : -1]
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
        raise DatasetLayoutError(
            f"{csv} lacks the column(s) {sorted(missing)}; a manifest needs path,label[,group][,split]"
        )
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
            raise DatasetLayoutError(
                f"{csv}: split values {sorted(set(df.loc[bad, 'split']))[:5]} are not train/valid/test (line "
                f"{bad[0] + 2})"
            )
        df["split"] = norm
    _check_duplicates(csv, df, df["path"].str.strip())
    return df


def _check_duplicates(csv: Path, df: pd.DataFrame, keys: pd.Series, how: str = "") -> None:
    """Raise ``DatasetLayoutError`` when ``keys`` repeat, naming the lines and any conflicting labels."""
    dup = keys[keys.duplicated(keep=False)]
    if not len(dup):
        return
    conflicts: list[str] = []
    repeats: list[str] = []
    for key, idx in dup.groupby(dup, sort=False).groups.items():
        lines = ", ".join(f"line {i + 2} ({df.at[i, 'label']})" for i in idx)
        (conflicts if df.loc[idx, "label"].nunique() > 1 else repeats).append(f"{key}: {lines}")
    parts = []
    if conflicts:
        parts.append(f"{len(conflicts)} file(s) listed with conflicting labels{how}: " + "; ".join(conflicts[:5]))
    if repeats:
        parts.append(f"{len(repeats)} file(s) listed more than once{how}: " + "; ".join(repeats[:5]))
    raise DatasetLayoutError(f"{csv}: " + ". ".join(parts) + ". Keep one row per file, with its right label")


def _scan_manifest(csv: Path, cfg: IngestConfig) -> Inventory:
    df = read_manifest(csv)
    root = csv.parent
    paths = [Path(rel) if Path(rel).is_absolute() else root / rel for rel in df["path"]]
    # the same file under two spellings (./a.jpg and a.jpg, or through a link) is still one file
    _check_duplicates(csv, df, pd.Series([os.path.realpath(p) for p in paths], index=df.index), " (by its real path)")
    extra_cols = [c for c in df.columns if c not in RESERVED_COLUMNS]
    sources, skipped = [], []
    for row, p in zip(df.to_dict("records"), paths):
        rel = row["path"]
        kind = kind_of(p)
        try:
            check_regular_file(p, max_bytes=None)  # the byte cap is checked when the file is read
        except BadInputError as e:
            skipped.append(skip_row(rel, e.reason, e.detail, row["label"]))
            continue
        if kind is None:
            skipped.append(skip_row(rel, "unsupported_extension", p.suffix.lower() or "no extension", row["label"]))
            continue
        split = row.get("split", "") if cfg.keep_splits else ""
        if cfg.keep_splits and not split:
            skipped.append(skip_row(rel, "no_split_folder", "empty split column", row["label"]))
            continue
        group = str(row.get("group", "") or "").strip() or rel
        extra = {c: row[c] for c in extra_cols}
        sources.append(Source(p.resolve(), rel, row["label"], group, kind, split, extra))
    if not sources:
        reasons = pd.Series([s["reason"] for s in skipped]).value_counts().to_dict()
        raise DatasetLayoutError(
            f"none of the {len(df)} file(s) listed in {csv} can be used ({reasons}); paths are relative to {root}"
        )
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
        inv = (
            _scan_manifest(path / MANIFEST_NAME, cfg) if (path / MANIFEST_NAME).is_file() else _scan_folders(path, cfg)
        )
    else:
        raise DatasetLayoutError(
            f"dataset {path} does not exist; point data.raw_dir at a folder with real/ and fake/ or at a CSV manifest"
        )
    if cfg.keep_splits:
        splits = {s.split for s in inv.sources}
        if "train" not in splits or not splits & {"val", "test"}:
            raise DatasetLayoutError(
                f"keep_splits is on but {path} has splits {sorted(splits)}; it needs train and at least one of "
                "valid/test"
            )
    return inv
