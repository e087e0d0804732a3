"""The dataset as a table, and its leakage-free train/val/test splits (stratified by label, grouped by identity).

``index_dataset`` lists a dataset folder for the split stage: normally the preprocess
stage's face cache, whose ``manifest.csv`` lists every crop with its label, group and origin;
a folder without a manifest is listed by ``deepfake.data.ingest.scan`` (the one indexer of the
package, images only). ``split_dataset`` assigns each row a split; ``read_split`` reads the split
stage's ``train``/``val``/``test`` tables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from ..core.config import section, setting
from .ingest import MANIFEST_NAME, DatasetLayoutError, IngestConfig, read_manifest, scan
from .media import sha256_file

SPLITS = ("train", "val", "test")


class LeakageError(RuntimeError):
    """A group or an identical file appears in more than one split."""


class LabelError(ValueError):
    """The labels cannot train a detector: one class only, or one file under both labels."""


@dataclass(frozen=True)
@section("split", base_keys=("seed",))
class SplitConfig:
    """Fractions of the data (by group) held out for validation and test.

    Attributes:
        val_frac: share of groups in the validation split.
        test_frac: share of groups in the test split.
        seed: seed of the shuffle that assigns groups.
        dedupe: drop the held-out copies of exact or near duplicates that cross splits
            (``deepfake.data.audit``) instead of failing.
        near_dup_bits: perceptual-hash distance (of 256 bits) at or below which two images are
            near duplicates; -1 checks exact duplicates only.
        min_val_images, min_val_groups: a validation split smaller than either is warned about
            (the epoch, threshold and calibration chosen on it are noisy).
    """

    val_frac: float = setting(gt=0, lt=0.5)
    test_frac: float = setting(gt=0, lt=0.5)
    seed: int = setting(min=0)
    dedupe: bool = setting()
    near_dup_bits: int = setting(min=-1, max=127)
    min_val_images: int = setting(min=0)
    min_val_groups: int = setting(min=0)


def conflicting_labels(frame: pd.DataFrame) -> list[str]:
    """Files with identical bytes found under both labels, each as ``"a (real) = b (fake)"``.

    Identical means the same source bytes (``source_sha256``, a preprocess cache) or, for a
    dataset used as it is, the same file bytes (``sha256``).
    """
    key = "source_sha256" if "source_sha256" in frame.columns else "sha256"
    name = "source" if "source" in frame.columns else "path"
    if key not in frame.columns or "label" not in frame.columns or not len(frame):
        return []
    rows = frame[frame[key].astype(str) != ""].drop_duplicates([key, name, "label"])
    labels = rows.groupby(key)["label"].nunique()
    out = []
    for h in labels[labels > 1].index:
        same = rows[rows[key] == h]
        out.append(" = ".join(f"{r[name]} ({r['label']})" for _, r in same.iterrows()))
    return sorted(out)


def label_problem(frame: pd.DataFrame, where: str = "the dataset") -> str:
    """Why the labels of ``frame`` cannot train a detector (one class only, or one file under both
    labels, naming the files), or ``""`` when they can."""
    counts = frame["label"].value_counts()
    if len(counts) < 2:
        only = counts.index[0] if len(counts) else "nothing"
        return (
            f"{where} holds only {only} images ({len(frame)}): a detector needs both real and fake ones; check "
            "preprocess.real_dirs / fake_dirs (the folder names) or the manifest's label column"
        )
    conflicts = conflicting_labels(frame)
    if conflicts:
        shown = "; ".join(conflicts[:5]) + (f"; and {len(conflicts) - 5} more" if len(conflicts) > 5 else "")
        return (
            f"{where} holds {len(conflicts)} file(s) under both labels (identical bytes): {shown}; keep each file "
            "under its right label only"
        )
    return ""


def check_labels(frame: pd.DataFrame, where: str = "the dataset") -> None:
    """Raise ``LabelError`` with ``label_problem`` when the labels of ``frame`` cannot train a detector."""
    problem = label_problem(frame, where)
    if problem:
        raise LabelError(problem)


def _holdout(frame: pd.DataFrame, frac: float, seed: int) -> np.ndarray:
    """Boolean mask of a stratified, group-disjoint hold-out of about ``frac`` of ``frame``."""
    n_splits = max(2, int(round(1 / frac)))
    n_groups = frame["group"].nunique()
    if n_groups < n_splits:
        raise ValueError(
            f"only {n_groups} groups: too few to hold out {frac:.0%} of them; add data or raise the fraction"
        )
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, held = next(cv.split(frame, frame["target"], frame["group"]))
    mask = np.zeros(len(frame), bool)
    mask[held] = True
    return mask


def split_dataset(frame: pd.DataFrame, cfg: SplitConfig | None = None) -> pd.DataFrame:
    """Assign each row of an indexed dataset to ``train``, ``val`` or ``test``.

    Groups (identities, videos) never cross splits; the label ratio is kept close to the
    whole set's in each split. Deterministic given ``cfg.seed``.

    Returns:
        A copy of ``frame`` with a ``split`` column.
    """
    cfg = cfg or SplitConfig()
    frame = frame.reset_index(drop=True).copy()
    test = _holdout(frame, cfg.test_frac, cfg.seed)
    rest = frame[~test]
    val_rest = _holdout(rest, cfg.val_frac / (1 - cfg.test_frac), cfg.seed + 1)
    split = np.full(len(frame), "train", dtype=object)
    split[test] = "test"
    split[np.flatnonzero(~test)[val_rest]] = "val"
    frame["split"] = split
    return frame


def has_given_split(frame: pd.DataFrame) -> bool:
    """Whether the index carries the dataset's own split (a non-empty ``split`` column)."""
    return "split" in frame.columns and bool(len(frame)) and bool((frame["split"].astype(str) != "").all())


def keep_given_split(frame: pd.DataFrame, cfg: SplitConfig | None = None) -> pd.DataFrame:
    """Use the dataset's own ``split`` column; a missing val or test split is held out of train by group.

    Returns:
        A copy of ``frame`` whose ``split`` is one of ``SPLITS`` on every row.
    """
    cfg = cfg or SplitConfig()
    frame = frame.reset_index(drop=True).copy()
    bad = sorted(set(frame["split"]) - set(SPLITS))
    if bad:
        raise ValueError(f"the dataset's split column has {bad}; only {SPLITS} are allowed")
    for name, frac, offset in (("test", cfg.test_frac, 0), ("val", cfg.val_frac, 1)):
        if not (frame["split"] == name).any():
            train = np.flatnonzero(frame["split"].to_numpy() == "train")
            held = _holdout(frame.iloc[train], frac, cfg.seed + offset)
            frame.loc[train[held], "split"] = name
    return frame


def leakage_report(frame: pd.DataFrame) -> dict:
    """Groups and identical files (by ``sha256``) found in more than one split."""
    groups = frame.groupby("group")["split"].nunique()
    shared_groups = sorted(groups[groups > 1].index)
    shared_files: list[str] = []
    if "sha256" in frame.columns:
        per_hash = frame.groupby("sha256")["split"].nunique()
        shared_files = sorted(per_hash[per_hash > 1].index)
    return {
        "groups_across_splits": shared_groups,
        "identical_files_across_splits": shared_files,
        "n_groups": int(frame["group"].nunique()),
        "n_images": int(len(frame)),
    }


def check_leakage(frame: pd.DataFrame) -> dict:
    """Return the leakage report, raising ``LeakageError`` when anything crosses splits."""
    rep = leakage_report(frame)
    g, f = rep["groups_across_splits"], rep["identical_files_across_splits"]
    if g or f:
        raise LeakageError(
            f"{len(g)} group(s) and {len(f)} identical file(s) appear in more than one split "
            f"(e.g. group {g[:3]}, sha256 {[h[:12] for h in f[:3]]}); fix the groups or remove the duplicates"
        )
    return rep


def balance_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Images per split and label, with groups per split and the fake share."""
    t = pd.crosstab(frame["split"], frame["label"]).reindex(index=list(SPLITS), columns=["real", "fake"], fill_value=0)
    t["total"] = t["real"] + t["fake"]
    t["groups"] = frame.groupby("split")["group"].nunique().reindex(list(SPLITS), fill_value=0)
    t["fake_share"] = (t["fake"] / t["total"].where(t["total"] > 0)).round(3)
    t.columns.name = None
    return t


def write_splits(frame: pd.DataFrame, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write one CSV manifest per split (``train.csv``, ``val.csv``, ``test.csv``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in SPLITS:
        p = out / f"{name}.csv"
        frame[frame["split"] == name].drop(columns="split").to_csv(p, index=False)
        paths[name] = p
    return paths


# --------------------------------------------------------------------------------------------
# The dataset as a table
# --------------------------------------------------------------------------------------------


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
