"""Datasets as tables: the images a stage reads, with their labels, groups and hashes.

``index_dataset`` lists a dataset folder for the split stage: normally the preprocess
stage's face cache, whose ``manifest.csv`` lists every crop with its label, group and origin;
a folder without a manifest is listed by ``deepfake.ingest.scan`` (the one indexer of the
package, images only). ``read_split`` reads the split stage's ``train``/``val``/``test`` tables.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .ingest import MANIFEST_NAME, DatasetLayoutError, IngestConfig, read_manifest, scan
from .media import sha256_file

__all__ = ["DatasetLayoutError", "index_dataset", "read_split"]


def _from_manifest(root: Path) -> pd.DataFrame:
    df = read_manifest(root / MANIFEST_NAME)
    absent = [p for p in df["path"] if not (root / p).is_file()]
    if absent:
        raise DatasetLayoutError(
            f"{root / MANIFEST_NAME} lists {len(absent)} file(s) that do not exist under {root}, e.g. {absent[0]}"
        )
    return df


def _from_folders(root: Path) -> pd.DataFrame:
    inv = scan(root, IngestConfig())
    videos = [s.rel for s in inv.sources if s.kind == "video"]
    if videos:
        raise DatasetLayoutError(
            f"{root} holds videos (e.g. {videos[0]}); run the preprocess stage on it first, it samples their frames"
        )
    return pd.DataFrame(
        {
            "path": [s.rel for s in inv.sources],
            "label": [s.label for s in inv.sources],
            "group": [s.group for s in inv.sources],
        }
    )


def index_dataset(root: str | os.PathLike, hashes: bool = True) -> pd.DataFrame:
    """List the images of a dataset folder: its ``manifest.csv``, else its ``real/`` and ``fake/`` folders.

    Without a group, each file is its own group.

    Returns:
        One row per image: ``path`` (relative to root), ``label``, ``target`` (1 = fake),
        ``group``, the manifest's other columns and, when ``hashes``, the content ``sha256``;
        sorted by path.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(
            f"dataset folder {root} does not exist; create it (make data) or point data.raw_dir at yours"
        )
    df = _from_manifest(root) if (root / MANIFEST_NAME).is_file() else _from_folders(root)
    if "group" not in df.columns:
        df["group"] = ""
    df["group"] = [g if g else p for g, p in zip(df["group"], df["path"])]
    df["target"] = (df["label"] == "fake").astype(int)
    if hashes:
        df["sha256"] = [sha256_file(root / p) for p in df["path"]]
    cols = ["path", "label", "target", "group"] + (["sha256"] if hashes else [])
    extra = [c for c in df.columns if c not in cols]
    return df[cols + extra].sort_values("path").reset_index(drop=True)


def read_split(splits_dir: str | os.PathLike, name: str) -> pd.DataFrame:
    """Read one split manifest (``train``, ``val`` or ``test``) written by the split stage."""
    path = Path(splits_dir) / f"{name}.csv"
    if not path.exists():
        raise FileNotFoundError(f"split manifest {path} does not exist; run the split stage first (dvc repro split)")
    return pd.read_csv(path, dtype={"group": str, "path": str}, keep_default_na=False)
