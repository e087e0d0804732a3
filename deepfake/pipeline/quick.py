"""Quick-check inputs: the tiny datasets and runs behind the notebooks' defaults and the tests.

A notebook opened with ``quick=True`` (its default, which nbval runs) reads and writes under
``build/quick/`` with ``QUICK_OVERRIDES`` applied to ``params.yaml``; the stage module
(``deepfake.pipeline.stages.ensure_upstream``) builds whatever earlier stage's output such a run
lacks on the tiny datasets made here, so every notebook runs on a fresh clone. Imports no stage.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from ..core import paths
from ..data.synth import SynthConfig, generate

#: What a quick check changes in params.yaml: a tiny dataset, one epoch, few bootstrap draws.
QUICK_OVERRIDES: dict[str, dict[str, Any]] = {
    "base": {"device": "cpu"},
    "synth": {"n_identities": 32, "images_per_identity": 1, "image_size": 64, "seed": 0},
    "preprocess": {"size": 64, "workers": 1},
    "train": {"weights": "none", "epochs": 1, "batch_size": 16, "image_size": 64, "patience": 0},
    "evaluate": {"bootstrap": 200, "latency_images": 5},
}
#: A second tiny dataset (other seed and resolution) standing in for a cross-dataset test.
QUICK_CROSS = {"n_identities": 8, "images_per_identity": 2, "image_size": 48, "seed": 1}
QUICK_CROSS_NAME = "quick"


def merge_overrides(*layers: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Section-wise merge of override mappings, later ones winning."""
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for sec, values in (layer or {}).items():
            out.setdefault(sec, {}).update(values)
    return out


def quick_synth(**overrides: Any) -> SynthConfig:
    """The quick dataset's config (one rendering process)."""
    return SynthConfig(**{**QUICK_OVERRIDES["synth"], "workers": 1, **overrides})


def write_params(path: str | os.PathLike, overrides: dict[str, dict[str, Any]] | None = None) -> Path:
    """A complete params file at ``path``: the repository's ``params.yaml`` with ``overrides`` applied."""
    import yaml

    from ..core.config import read_yaml

    values = read_yaml(paths.PARAMS_FILE)
    for sec, changes in (overrides or {}).items():
        values[sec] = {**(values.get(sec) or {}), **changes}
    out = Path(path)
    out.write_text(yaml.safe_dump(values, sort_keys=False))
    return out


def ensure_quick_dataset(raw_dir: str | os.PathLike, cfg: SynthConfig | None = None) -> Path:
    """Create the tiny synthetic dataset at ``raw_dir`` unless a dataset is already there."""
    raw = paths.resolve(raw_dir)
    if not raw.exists():
        generate(raw, cfg or quick_synth(), progress=False)
    return raw


def ensure_quick_mixed_dataset(raw_dir: str | os.PathLike, cfg: SynthConfig | None = None) -> Path:
    """A quick dataset with the awkward inputs real collections have, created when missing.

    The tiny synthetic set plus, listed in its manifest: a zero-byte file, a text file named
    ``.jpg``, a truncated JPEG, a grayscale PNG and an RGBA PNG (both usable after conversion),
    a 12-frame video of (mirrored) fake faces, and a video file that cannot be opened.
    """
    import cv2
    import numpy as np
    from PIL import Image

    raw = paths.resolve(raw_dir)
    if raw.exists():
        return raw
    tmp = raw.with_name(raw.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)  # left by an interrupted run
    generate(tmp, cfg or quick_synth(), progress=False)
    manifest = pd.read_csv(tmp / "manifest.csv", dtype=str, keep_default_na=False)
    real = sorted((tmp / "real").glob("*.jpg"))
    fake = sorted((tmp / "fake").glob("*.jpg"))
    img = np.asarray(Image.open(real[0]).convert("RGB"))
    (tmp / "fake" / "empty.jpg").write_bytes(b"")
    (tmp / "real" / "notes.jpg").write_text("not a photo\n")
    (tmp / "real" / "cut.jpg").write_bytes(real[1].read_bytes()[: real[1].stat().st_size // 2])
    Image.fromarray(img).convert("L").save(tmp / "real" / "grey.png")
    Image.fromarray(img).convert("RGBA").save(tmp / "real" / "alpha.png")
    h, w = img.shape[:2]
    writer = cv2.VideoWriter(str(tmp / "fake" / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))  # type: ignore[attr-defined]
    for f in fake[:12]:  # mirrored: frames that are not copies of the dataset's images
        writer.write(cv2.cvtColor(np.asarray(Image.open(f).convert("RGB"))[:, ::-1], cv2.COLOR_RGB2BGR))
    writer.release()
    (tmp / "fake" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    files = [
        "fake/empty.jpg",
        "real/notes.jpg",
        "real/cut.jpg",
        "real/grey.png",
        "real/alpha.png",
        "fake/clip.avi",
        "fake/broken.mp4",
    ]
    labels = ["fake", "real", "real", "real", "real", "fake", "fake"]
    same = manifest.loc[manifest["file"] == real[0].relative_to(tmp).as_posix(), "group"].iloc[
        0
    ]  # grey/alpha: copies of real[0]
    groups = ["", "", "", same, same, "", ""]
    extra = pd.DataFrame({"file": files, "label": labels, "group": groups})
    pd.concat([manifest, extra], ignore_index=True).fillna("").to_csv(tmp / "manifest.csv", index=False)
    tmp.rename(raw)
    return raw


def ensure_quick_cross_dataset(data_dir: str | os.PathLike) -> Path:
    """A second tiny synthetic dataset (other seed, other image size) for the cross-dataset quick check."""
    return ensure_quick_dataset(data_dir, quick_synth(**QUICK_CROSS))


#: The shared real portraits (beside the repository), used by tests and benchmarks when present.
SHARED_PHOTOS = paths.ROOT.parent / "shared" / "real-faces" / "yonsei-rffd"


def face_image(index: int = 0) -> tuple[Any, str]:
    """A frontal face photo every detector finds, as (H, W, 3) uint8 RGB and where it came from:
    a shared real portrait when ``SHARED_PHOTOS`` is present, else a 256 px rendered face."""
    from ..data.media import decode_image, read_image
    from ..data.synth import make_image

    photos = sorted((SHARED_PHOTOS / "real").glob("*.jpg")) if SHARED_PHOTOS.is_dir() else []
    if photos:
        return read_image(photos[index % len(photos)]), str(photos[index % len(photos)])
    data, _ = make_image(SynthConfig(image_size=256), [0, 4, 6, 7][index % 4], 0, False)
    return decode_image(data), "rendered"


def pan_zoom_frames(
    photo: Any,
    n_frames: int,
    size: tuple[int, int] = (1280, 720),
    scales: tuple[float, float] = (0.3, 0.33),
    centres: tuple[tuple[float, float], tuple[float, float]] = ((0.4, 0.5), (0.55, 0.45)),
) -> list[Any]:
    """Video-like frames of a still photo: a slow pan and zoom over it, placed in a larger frame.

    The photo is scaled from ``scales[0]`` to ``scales[1]`` times its size while its centre moves
    from ``centres[0]`` to ``centres[1]`` (fractions of the frame's width and height), its edges
    feathered into a background made of its own left and right borders, widened and blurred (a
    wall, with no second face). Gives real faces at a chosen size in a ``size`` (width, height)
    frame: ``n_frames`` (H, W, 3) uint8 RGB frames.
    """
    import cv2
    import numpy as np

    w, h = size
    ph, pw = photo.shape[:2]
    strip = max(2, pw // 12)  # the photo's outer columns: background, hardly ever face
    wall = np.concatenate([photo[:, :strip], photo[:, pw - strip :]], axis=1)
    wall = cv2.GaussianBlur(cv2.resize(wall, (w, h), interpolation=cv2.INTER_LINEAR), (0, 0), 15)
    yy, xx = np.mgrid[0:ph, 0:pw].astype(np.float32)
    edge = np.minimum.reduce([xx, yy, pw - 1 - xx, ph - 1 - yy]) / (0.12 * min(ph, pw))
    alpha = np.clip(edge, 0, 1)  # 1 inside, fading to 0 over the outer 12 %
    frames = []
    for t in np.linspace(0.0, 1.0, n_frames):
        s = scales[0] + (scales[1] - scales[0]) * t
        cx = (centres[0][0] + (centres[1][0] - centres[0][0]) * t) * w
        cy = (centres[0][1] + (centres[1][1] - centres[0][1]) * t) * h
        size = (max(1, round(pw * s)), max(1, round(ph * s)))
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR  # shrunk without aliasing
        m = np.array([[1.0, 0.0, cx - size[0] / 2], [0.0, 1.0, cy - size[1] / 2]])  # then placed, to the sub-pixel
        img = cv2.warpAffine(cv2.resize(photo, size, interpolation=interp), m, (w, h), flags=cv2.INTER_LINEAR)
        a = cv2.warpAffine(cv2.resize(alpha, size, interpolation=interp), m, (w, h), flags=cv2.INTER_LINEAR)
        frames.append(cv2.blendLinear(img, wall, a, 1 - a))
    return frames
