"""Dataset ingestion: find every image and video of a dataset and read them robustly.

Three layouts are understood (``scan``):

* **Folders**: files below a folder named ``real`` or ``fake`` (at any depth of the dataset
  folder, files at any depth below it). With ``keep_splits`` an enclosing ``train/``,
  ``valid/`` (``val/``, ``validation/``) or ``test/`` folder assigns the file's split.
* **CSV manifest** ``path,label[,group][,split]`` (``file`` is accepted for ``path``): the
  folder's ``manifest.csv``, or any CSV passed instead of a folder. Paths are relative to the
  CSV's folder (absolute paths are allowed). Other columns (e.g. a manipulation type) are
  carried along as they are, except ``RESERVED_COLUMNS``.
* **Videos** (``deepfake.media.VIDEO_EXTENSIONS``) in either layout: the preprocess stage
  samples ``frames_per_video`` evenly spaced frames from each; every frame keeps its video as
  its group.

Nothing is decoded here (``deepfake.media`` does that); files that cannot belong to the
dataset are returned with their reason (``deepfake.media.REASONS``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .media import kind_of

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
    layout: str  # folders | manifest
    sources: list[Source]
    skipped: list[dict]

    def counts(self) -> dict[str, int]:
        kinds = pd.Series([s.kind for s in self.sources], dtype=object)
        return {
            "images": int((kinds == "image").sum()),
            "videos": int((kinds == "video").sum()),
            "skipped": len(self.skipped),
        }


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
