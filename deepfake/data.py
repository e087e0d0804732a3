"""Dataset indexing, image loading, transforms and data loaders."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
LABELS = ("real", "fake")  # target 0 = real, 1 = fake
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MANIFEST_NAME = "manifest.csv"


class DatasetLayoutError(ValueError):
    """The dataset folder does not have the expected layout."""


class UnreadableImageError(OSError):
    """A file could not be decoded as an image."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _label_of(rel: Path) -> str | None:
    top = rel.parts[0].lower() if rel.parts else ""
    return top if top in LABELS else None


def index_dataset(root: str | os.PathLike, hashes: bool = True) -> pd.DataFrame:
    """List the images of a dataset folder.

    ``root`` holds ``real/`` and ``fake/`` sub-folders (any depth below them). When
    ``root/manifest.csv`` exists with ``path`` (or ``file``) and ``label`` columns (and
    optionally ``group``), it is used instead of scanning; files it lists must exist. Without a group,
    each file is its own group.

    Returns:
        One row per image: ``path`` (relative to root), ``label``, ``target`` (1 = fake),
        ``group`` and, when ``hashes``, the content ``sha256``; sorted by path.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset folder {root} does not exist; create it (make data) or point data.raw_dir at yours")
    manifest = root / MANIFEST_NAME
    if manifest.exists():
        df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
        if "path" not in df.columns:  # the synthetic set and many datasets name it 'file'
            df = df.rename(columns={"file": "path"})
        missing_cols = {"path", "label"} - set(df.columns)
        if missing_cols:
            raise DatasetLayoutError(f"{manifest} lacks the column(s) {sorted(missing_cols)}; it needs path (or file),label[,group]")
        bad = sorted(set(df["label"]) - set(LABELS))
        if bad:
            raise DatasetLayoutError(f"{manifest} has labels {bad}; only {LABELS} are allowed")
        absent = [p for p in df["path"] if not (root / p).is_file()]
        if absent:
            raise DatasetLayoutError(f"{manifest} lists {len(absent)} file(s) that do not exist under {root}, e.g. {absent[0]}")
    else:
        rows = []
        for label in LABELS:
            folders = [d for d in root.iterdir() if d.is_dir() and d.name.lower() == label]
            for folder in folders:
                for p in folder.rglob("*"):
                    if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
                        rows.append({"path": p.relative_to(root).as_posix(), "label": label})
        if not rows:
            raise DatasetLayoutError(f"no images found under {root}/real or {root}/fake (extensions {IMAGE_EXTENSIONS})")
        df = pd.DataFrame(rows)
    if "group" not in df.columns:
        df["group"] = ""
    df["group"] = [g if g else p for g, p in zip(df["group"], df["path"])]
    df["target"] = (df["label"] == "fake").astype(int)
    if hashes:
        df["sha256"] = [sha256_file(root / p) for p in df["path"]]
    cols = ["path", "label", "target", "group"] + (["sha256"] if hashes else [])
    extra = [c for c in df.columns if c not in cols]
    return df[cols + extra].sort_values("path").reset_index(drop=True)


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image as RGB, raising ``UnreadableImageError`` naming the file when it fails."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UnreadableImageError(f"{path} is not a decodable image ({e}); remove it or fix it") from e


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentations (all applied before normalisation).

    Attributes:
        hflip: probability of a horizontal flip.
        rotation: maximum rotation in degrees (0 disables).
        color_jitter: brightness/contrast/saturation jitter strength (0 disables); hue gets a quarter.
    """

    hflip: float = 0.5
    rotation: float = 10.0
    color_jitter: float = 0.2


def build_transforms(image_size: int, train: bool, augment: AugmentConfig | None = None) -> Callable:
    """PIL image to normalised (3, H, W) float tensor; augmented when ``train``."""
    ops: list = [T.Resize((image_size, image_size), antialias=True)]
    if train:
        aug = augment or AugmentConfig()
        if aug.hflip > 0:
            ops.append(T.RandomHorizontalFlip(aug.hflip))
        if aug.rotation > 0:
            ops.append(T.RandomRotation(aug.rotation))
        if aug.color_jitter > 0:
            j = aug.color_jitter
            ops.append(T.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(j / 4, 0.5)))
    ops += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(ops)


class FaceDataset(Dataset):
    """Images listed in a frame (``path`` relative to ``root``, ``target``)."""

    def __init__(self, frame: pd.DataFrame, root: str | os.PathLike, transform: Callable) -> None:
        self.paths = [Path(root) / p for p in frame["path"]]
        self.targets = torch.tensor(frame["target"].to_numpy(dtype="float32", copy=True))  # (N,)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(load_image(self.paths[i])), self.targets[i]


def make_loader(
    frame: pd.DataFrame,
    root: str | os.PathLike,
    transform: Callable,
    batch_size: int,
    shuffle: bool,
    num_workers: int = 0,
    generator: torch.Generator | None = None,
    pin_memory: bool = False,
    sampler: torch.utils.data.Sampler | None = None,
) -> DataLoader:
    """A DataLoader over ``frame``, seeded through ``generator`` for reproducible shuffles."""
    from .utils import worker_init_fn

    return DataLoader(
        FaceDataset(frame, root, transform),
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        generator=generator,
        worker_init_fn=worker_init_fn,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )


def read_split(splits_dir: str | os.PathLike, name: str) -> pd.DataFrame:
    """Read one split manifest (``train``, ``val`` or ``test``) written by the split stage."""
    path = Path(splits_dir) / f"{name}.csv"
    if not path.exists():
        raise FileNotFoundError(f"split manifest {path} does not exist; run the split stage first (dvc repro split)")
    return pd.read_csv(path, dtype={"group": str, "path": str}, keep_default_na=False)


def class_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Number of images per label."""
    return {lab: int((frame["label"] == lab).sum()) for lab in LABELS}


def ensure_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise a clear error when ``frame`` lacks any of ``columns``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DatasetLayoutError(f"{what} lacks the column(s) {missing}")
